//! DynamoDB Streams as a [`ShardedStream`] (aws-sdk-dynamodbstreams).

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, ShardIteratorType};
use aws_types::SdkConfig;
use serde_json::{Map, Value};

use super::aws::call_timeouts;
use super::sharded::{
    DynamoDbEventName, DynamoDbRecord, DynamoDbUserIdentity, RecordPage, RecordPayload, Shard,
    ShardPosition, ShardedStream, StreamError, StreamRecord, classify, timestamp,
};

/// GetRecords returns at most this many records per call.
const MAX_RECORDS_PER_CALL: u32 = 1_000;
/// DescribeStream lists at most this many shards per page.
const MAX_SHARDS_PER_PAGE: i32 = 100;

/// A DynamoDB stream read through the DynamoDB Streams API.
#[derive(Clone, Debug)]
pub struct DynamoDbStream {
    client: Client,
    stream_arn: String,
}

impl DynamoDbStream {
    pub fn new(sdk: &SdkConfig, stream_arn: impl Into<String>) -> Self {
        DynamoDbStream {
            client: Client::from_conf(
                aws_sdk_dynamodbstreams::config::Builder::from(sdk)
                    .timeout_config(call_timeouts(std::time::Duration::ZERO))
                    .build(),
            ),
            stream_arn: stream_arn.into(),
        }
    }
}

impl ShardedStream for DynamoDbStream {
    async fn stream_arn(&self) -> Result<String, StreamError> {
        Ok(self.stream_arn.clone())
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        let mut shards = Vec::new();
        let mut after_shard: Option<String> = None;
        loop {
            let answer = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .limit(MAX_SHARDS_PER_PAGE)
                .set_exclusive_start_shard_id(after_shard.take())
                .send()
                .await
                .map_err(classify)?;
            let description = answer.stream_description.ok_or_else(|| {
                StreamError::Other("DescribeStream answered without a description".into())
            })?;
            for shard in description.shards.unwrap_or_default() {
                let Some(shard_id) = shard.shard_id else {
                    return Err(StreamError::Other(format!(
                        "DescribeStream of {} listed a shard without ShardId",
                        self.stream_arn
                    )));
                };
                shards.push(Shard {
                    shard_id,
                    parent_shard_ids: shard.parent_shard_id.into_iter().collect(),
                    open: shard
                        .sequence_number_range
                        .is_none_or(|range| range.ending_sequence_number.is_none()),
                });
            }
            match description.last_evaluated_shard_id {
                Some(last) => after_shard = Some(last),
                None => return Ok(shards),
            }
        }
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        position: &ShardPosition,
    ) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match position {
            ShardPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            ShardPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            ShardPosition::AtTimestamp(_) => {
                return Err(StreamError::Other(
                    "DynamoDB Streams has no AT_TIMESTAMP starting position".into(),
                ));
            }
            ShardPosition::AtSequenceNumber(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence),
            ShardPosition::AfterSequenceNumber(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
        };
        let answer = request.send().await.map_err(classify)?;
        answer.shard_iterator.ok_or_else(|| {
            StreamError::Other(format!(
                "GetShardIterator answered without an iterator for shard {shard_id}"
            ))
        })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordPage, StreamError> {
        let limit = limit.clamp(1, MAX_RECORDS_PER_CALL) as i32;
        let answer = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(classify)?;
        let records = answer
            .records
            .unwrap_or_default()
            .into_iter()
            .map(stream_record)
            .collect::<Result<_, _>>()?;
        Ok(RecordPage {
            records,
            next_iterator: answer.next_shard_iterator,
            millis_behind_latest: None,
        })
    }
}

/// Converts an SDK record; a record missing what the Lambda event needs is an error that names
/// the record and the field (the shard then waits rather than skipping it).
pub fn stream_record(record: Record) -> Result<StreamRecord, StreamError> {
    let event_id = record.event_id.unwrap_or_default();
    let malformed = |what: &str| {
        StreamError::Other(format!(
            "DynamoDB stream record {event_id:?}: {what}; the shard waits at this record"
        ))
    };
    let event_name = match record.event_name {
        Some(OperationType::Insert) => DynamoDbEventName::Insert,
        Some(OperationType::Modify) => DynamoDbEventName::Modify,
        Some(OperationType::Remove) => DynamoDbEventName::Remove,
        other => return Err(malformed(&format!("unknown eventName {other:?}"))),
    };
    let change = record
        .dynamodb
        .ok_or_else(|| malformed("no dynamodb field"))?;
    let sequence_number = change
        .sequence_number
        .ok_or_else(|| malformed("no dynamodb.SequenceNumber"))?;
    let image = |field: &str, image: HashMap<String, AttributeValue>| {
        item_json(image).map_err(|attribute| {
            malformed(&format!(
                "dynamodb.{field}.{attribute} has an attribute type this version cannot read"
            ))
        })
    };
    let keys = image("Keys", change.keys.unwrap_or_default())?;
    let new_image = change
        .new_image
        .map(|item| image("NewImage", item))
        .transpose()?;
    let old_image = change
        .old_image
        .map(|item| image("OldImage", item))
        .transpose()?;
    Ok(StreamRecord {
        approximate_arrival: change
            .approximate_creation_date_time
            .as_ref()
            .and_then(timestamp),
        sequence_number,
        payload: RecordPayload::DynamoDb(Box::new(DynamoDbRecord {
            keys_text: keys.to_string(),
            keys,
            new_image,
            old_image,
            event_id,
            event_name,
            event_version: record.event_version,
            size_bytes: change.size_bytes,
            stream_view_type: change.stream_view_type.map(|view| view.as_str().to_owned()),
            user_identity: record.user_identity.map(|identity| DynamoDbUserIdentity {
                principal_id: identity.principal_id,
                identity_type: identity.r#type,
            }),
        })),
    })
}

/// An item in DynamoDB JSON, attributes sorted by name so that equal keys give equal text
/// (the SDK hands out a HashMap). Err names the attribute of an unknown type.
fn item_json(item: HashMap<String, AttributeValue>) -> Result<Value, String> {
    let mut attributes: Vec<_> = item.into_iter().collect();
    attributes.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let mut object = Map::new();
    for (name, value) in attributes {
        let json = attribute_json(value).map_err(|inner| attribute_path(name.clone(), &inner))?;
        object.insert(name, json);
    }
    Ok(Value::Object(object))
}

/// One attribute value as `{"TYPE": value}`. Err holds the path below this value to an
/// attribute of an unknown type (empty: this value itself).
fn attribute_json(value: AttributeValue) -> Result<Value, String> {
    let strings =
        |values: Vec<String>| Value::Array(values.into_iter().map(Value::String).collect());
    let (type_tag, json) = match value {
        AttributeValue::S(text) => ("S", Value::String(text)),
        AttributeValue::N(number) => ("N", Value::String(number)),
        AttributeValue::B(bytes) => ("B", Value::String(crate::event::base64(bytes.as_ref()))),
        AttributeValue::Ss(texts) => ("SS", strings(texts)),
        AttributeValue::Ns(numbers) => ("NS", strings(numbers)),
        AttributeValue::Bs(blobs) => (
            "BS",
            blobs
                .iter()
                .map(|bytes| Value::String(crate::event::base64(bytes.as_ref())))
                .collect(),
        ),
        AttributeValue::M(item) => ("M", item_json(item)?),
        AttributeValue::L(values) => {
            let mut list = Vec::with_capacity(values.len());
            for (index, value) in values.into_iter().enumerate() {
                list.push(
                    attribute_json(value)
                        .map_err(|inner| attribute_path(format!("[{index}]"), &inner))?,
                );
            }
            ("L", Value::Array(list))
        }
        AttributeValue::Null(null) => ("NULL", Value::Bool(null)),
        AttributeValue::Bool(flag) => ("BOOL", Value::Bool(flag)),
        _ => return Err(String::new()),
    };
    let mut object = Map::with_capacity(1);
    object.insert(type_tag.to_owned(), json);
    Ok(Value::Object(object))
}

/// `head` followed by the path below it: `doc` + `[0].odd` = `doc[0].odd`.
fn attribute_path(mut head: String, below: &str) -> String {
    if !below.is_empty() && !below.starts_with('[') {
        head.push('.');
    }
    head.push_str(below);
    head
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::{StreamRecord as SdkStreamRecord, StreamViewType};
    use aws_smithy_types::Blob;
    use serde_json::json;

    use super::*;

    fn item(attributes: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        attributes
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn every_attribute_type_becomes_dynamodb_json() {
        let image = item(&[
            ("s", AttributeValue::S("text".into())),
            ("n", AttributeValue::N("1.5".into())),
            ("b", AttributeValue::B(Blob::new(b"hi".to_vec()))),
            ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into()])),
            ("bs", AttributeValue::Bs(vec![Blob::new(b"x".to_vec())])),
            ("null", AttributeValue::Null(true)),
            ("bool", AttributeValue::Bool(false)),
            (
                "m",
                AttributeValue::M(item(&[("inner", AttributeValue::S("v".into()))])),
            ),
            (
                "l",
                AttributeValue::L(vec![
                    AttributeValue::N("2".into()),
                    AttributeValue::Null(true),
                ]),
            ),
        ]);
        assert_eq!(
            item_json(image).unwrap(),
            json!({
                "s": {"S": "text"},
                "n": {"N": "1.5"},
                "b": {"B": "aGk="},
                "ss": {"SS": ["a", "b"]},
                "ns": {"NS": ["1"]},
                "bs": {"BS": ["eA=="]},
                "null": {"NULL": true},
                "bool": {"BOOL": false},
                "m": {"M": {"inner": {"S": "v"}}},
                "l": {"L": [{"N": "2"}, {"NULL": true}]},
            })
        );
    }

    #[test]
    fn equal_keys_give_equal_ordering_keys_whatever_the_map_order() {
        let keys = item(&[
            ("pk", AttributeValue::S("order-1".into())),
            ("sk", AttributeValue::N("7".into())),
            ("zz", AttributeValue::S("x".into())),
            ("aa", AttributeValue::S("y".into())),
        ]);
        let text = item_json(keys.clone()).unwrap().to_string();
        assert_eq!(
            text,
            r#"{"aa":{"S":"y"},"pk":{"S":"order-1"},"sk":{"N":"7"},"zz":{"S":"x"}}"#
        );
        for _ in 0..10 {
            let reordered: HashMap<_, _> = keys.clone().into_iter().collect();
            assert_eq!(item_json(reordered).unwrap().to_string(), text);
        }
    }

    fn sdk_record(change: SdkStreamRecord) -> Record {
        Record::builder()
            .event_id("e-1")
            .event_name(OperationType::Modify)
            .event_version("1.1")
            .dynamodb(change)
            .build()
    }

    #[test]
    fn records_keep_what_the_lambda_event_needs() {
        let change = SdkStreamRecord::builder()
            .sequence_number("000000000000000000042")
            .size_bytes(26)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .set_keys(Some(item(&[("pk", AttributeValue::S("a".into()))])))
            .set_new_image(Some(item(&[
                ("pk", AttributeValue::S("a".into())),
                ("v", AttributeValue::N("2".into())),
            ])))
            .set_old_image(Some(item(&[
                ("pk", AttributeValue::S("a".into())),
                ("v", AttributeValue::N("1".into())),
            ])))
            .approximate_creation_date_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .build();
        let record = stream_record(sdk_record(change)).unwrap();
        assert_eq!(record.sequence_number, "000000000000000000042");
        assert_eq!(record.ordering_key(), r#"{"pk":{"S":"a"}}"#);
        assert_eq!(
            record.approximate_arrival.unwrap().as_second(),
            1_700_000_000
        );
        let RecordPayload::DynamoDb(change) = record.payload else {
            panic!("not a DynamoDB record");
        };
        assert_eq!(change.event_id, "e-1");
        assert_eq!(change.event_name.as_str(), "MODIFY");
        assert_eq!(
            change.new_image,
            Some(json!({"pk": {"S": "a"}, "v": {"N": "2"}}))
        );
        assert_eq!(
            change.old_image,
            Some(json!({"pk": {"S": "a"}, "v": {"N": "1"}}))
        );
        assert_eq!(change.size_bytes, Some(26));
        assert_eq!(
            change.stream_view_type.as_deref(),
            Some("NEW_AND_OLD_IMAGES")
        );
    }

    #[test]
    fn a_record_without_sequence_number_is_an_error_naming_it() {
        let change = SdkStreamRecord::builder()
            .set_keys(Some(item(&[("pk", AttributeValue::S("a".into()))])))
            .build();
        let error = stream_record(sdk_record(change)).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("e-1") && text.contains("SequenceNumber"),
            "{text}"
        );
    }

    #[test]
    fn attribute_paths_read_like_document_paths() {
        // Unknown attribute types cannot be built outside the SDK, so the path is checked here.
        let below = attribute_path("[0]".into(), "odd");
        assert_eq!(below, "[0].odd");
        assert_eq!(attribute_path("doc".into(), &below), "doc[0].odd");
        assert_eq!(attribute_path("doc".into(), ""), "doc");
    }
}
