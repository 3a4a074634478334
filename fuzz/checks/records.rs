//! Records as the SDKs hand them over (src/sources/), converted to Lambda's event records and
//! serialized (src/event.rs): bodies, data, attributes and images are whatever producers wrote.
//!
//! Inputs are in the AWS APIs' JSON shapes, so that seeds read as real records: an SQS message
//! (ReceiveMessage) or a Kinesis record (GetRecords) as one JSON line followed by the raw body or
//! data, a DynamoDB Streams record (GetRecords) as JSON. Each check converts through the
//! source's own conversion, writes the event, and reads it back: the event is exactly as long
//! as [`encoded_len`] said, parses with the published Lambda event types, and holds what the
//! SDK record held.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::{
    AttributeValue, Identity, OperationType, StreamRecord as SdkChange, StreamViewType,
};
use aws_sdk_kinesis::types::EncryptionType;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use aws_smithy_types::{Blob, DateTime};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use esm_operator::event::{
    EventRecord, StreamEventRecord, StreamOrigin, encode_event, encoded_len, event_len,
};
use esm_operator::sources::sharded::RecordPayload;
use esm_operator::sources::{dynamodb_streams, kinesis, sqs};
use serde::Deserialize;
use serde_json::Value;

/// Arrival times the published Lambda types are asked to read: 1970 to 2100, the times of
/// records (their timestamp types refuse some far-off times that no record has, and require
/// the time, which the streams always send).
const LAMBDA_TYPES_TIMES: std::ops::Range<f64> = 0.0..4_102_444_800.0;

/// An SQS message in the ReceiveMessage JSON shape, without its body.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct SqsMessage {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: Option<String>,
    #[serde(rename = "MD5OfMessageAttributes")]
    md5_of_message_attributes: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
    message_attributes: Option<BTreeMap<String, SqsAttribute>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct SqsAttribute {
    data_type: String,
    string_value: Option<String>,
    /// Base64, as the JSON protocol carries binary values.
    binary_value: Option<String>,
    string_list_values: Option<Vec<String>>,
    binary_list_values: Option<Vec<String>>,
}

/// `sqs_record`: a message's JSON line, then its body (UTF-8, as SQS bodies are).
pub fn sqs(data: &[u8]) {
    let Some((head, body)) = split_line(data) else {
        return;
    };
    let (Ok(message), Ok(body)) = (
        serde_json::from_slice::<SqsMessage>(head),
        std::str::from_utf8(body),
    ) else {
        return;
    };
    let Some(attributes) = convert_present(message.message_attributes.clone(), |attributes| {
        attributes
            .into_iter()
            .map(|(name, value)| Some((name, sdk_message_attribute(value)?)))
            .collect::<Option<HashMap<_, _>>>()
    }) else {
        return;
    };
    let sdk = Message::builder()
        .set_message_id(message.message_id.clone())
        .set_receipt_handle(message.receipt_handle.clone())
        .set_md5_of_body(message.md5_of_body.clone())
        .set_md5_of_message_attributes(message.md5_of_message_attributes.clone())
        .body(body)
        .set_attributes(message.attributes.clone().map(|attributes| {
            attributes
                .into_iter()
                .map(|(name, value)| (MessageSystemAttributeName::from(name.as_str()), value))
                .collect()
        }))
        .set_message_attributes(attributes)
        .build();
    let arn: Arc<str> = "arn:aws:sqs:us-east-1:000000000000:orders".into();
    let region: Arc<str> = "us-east-1".into();
    let record = match sqs::sqs_record(sdk, &arn, &region) {
        Ok(record) => record,
        Err(unnamed) => {
            assert!(
                message.message_id.is_none() || message.receipt_handle.is_none(),
                "only a message without id or receipt handle is skipped"
            );
            assert_eq!(unnamed.message_id, message.message_id);
            return;
        }
    };
    assert_eq!(
        record.item_identifier(),
        message.message_id.as_deref().unwrap_or_default()
    );
    let payload = encode_checked(&record);
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_slice(&payload).expect("the event parses as Lambda's SqsEvent");
    let [read] = &event.records[..] else {
        panic!("one record in, one out");
    };
    assert_eq!(read.message_id, message.message_id);
    assert_eq!(read.receipt_handle, message.receipt_handle);
    assert_eq!(read.body.as_deref(), Some(body));
    assert_eq!(
        read.md5_of_body.as_deref(),
        Some(message.md5_of_body.as_deref().unwrap_or_default())
    );
    assert_eq!(
        read.md5_of_message_attributes,
        message.md5_of_message_attributes
    );
    assert_eq!(
        read.attributes
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        message.attributes.unwrap_or_default()
    );
    let sent = message.message_attributes.unwrap_or_default();
    assert_eq!(read.message_attributes.len(), sent.len());
    for (name, sent) in sent {
        let read = &read.message_attributes[&name];
        assert_eq!(read.data_type.as_deref(), Some(sent.data_type.as_str()));
        assert_eq!(read.string_value, sent.string_value);
        assert_eq!(
            read.string_list_values,
            sent.string_list_values.unwrap_or_default()
        );
        assert_eq!(
            read.binary_value.as_ref().map(|b| b.0.clone()),
            sent.binary_value
                .map(|b| BASE64.decode(b).expect("checked above"))
        );
        let lists: Vec<Vec<u8>> = read
            .binary_list_values
            .iter()
            .map(|b| b.0.clone())
            .collect();
        let sent_lists: Vec<Vec<u8>> = sent
            .binary_list_values
            .unwrap_or_default()
            .iter()
            .map(|b| BASE64.decode(b).expect("checked above"))
            .collect();
        assert_eq!(lists, sent_lists);
    }
}

/// The SDK's attribute value; `None` when a binary value is not base64 (the SDK would not have
/// parsed the response).
fn sdk_message_attribute(value: SqsAttribute) -> Option<MessageAttributeValue> {
    let blobs = |values: Option<Vec<String>>| {
        convert_present(values, |values| values.iter().map(|v| blob(v)).collect())
    };
    MessageAttributeValue::builder()
        .data_type(value.data_type)
        .set_string_value(value.string_value)
        .set_binary_value(convert_present(value.binary_value.as_deref(), blob)?)
        .set_string_list_values(value.string_list_values)
        .set_binary_list_values(blobs(value.binary_list_values)?)
        .build()
        .ok()
}

/// A Kinesis record in the GetRecords JSON shape, without its data.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KinesisRecordHead {
    sequence_number: String,
    partition_key: String,
    /// Epoch seconds, as Kinesis writes them.
    approximate_arrival_timestamp: Option<f64>,
    encryption_type: Option<String>,
}

/// `kinesis_record`: a record's JSON line, then its data (any bytes).
pub fn kinesis(data: &[u8]) {
    let Some((head, bytes)) = split_line(data) else {
        return;
    };
    let Ok(head) = serde_json::from_slice::<KinesisRecordHead>(head) else {
        return;
    };
    let sdk = aws_sdk_kinesis::types::Record::builder()
        .sequence_number(&head.sequence_number)
        .partition_key(&head.partition_key)
        .data(Blob::new(bytes))
        .set_approximate_arrival_timestamp(
            head.approximate_arrival_timestamp
                .map(DateTime::from_secs_f64),
        )
        .set_encryption_type(head.encryption_type.as_deref().map(EncryptionType::from))
        .build()
        .expect("sequence number, partition key and data are set");
    let record = stream_event(
        kinesis::stream_record(sdk),
        "arn:aws:kinesis:eu-west-1:000000000000:stream/orders",
    );
    assert_eq!(record.item_identifier(), head.sequence_number);
    assert_eq!(record.record.ordering_key(), head.partition_key);
    let payload = encode_checked(&record);
    let json: Value = serde_json::from_slice(&payload).expect("the event is JSON");
    let written = &json["Records"][0];
    assert_eq!(
        written["eventID"],
        format!("shardId-000000000003:{}", head.sequence_number)
    );
    let kinesis = &written["kinesis"];
    assert_eq!(kinesis["partitionKey"], head.partition_key.as_str());
    assert_eq!(kinesis["sequenceNumber"], head.sequence_number.as_str());
    assert_eq!(
        kinesis["data"].as_str().map(|data| BASE64.decode(data)),
        Some(Ok(bytes.to_vec())),
        "the data round trips"
    );
    let encrypted = head.encryption_type.as_deref() == Some("KMS");
    assert_eq!(kinesis.get("encryptionType").is_some(), encrypted);
    match (
        record.record.approximate_arrival,
        kinesis.get("approximateArrivalTimestamp"),
    ) {
        (Some(arrival), Some(written)) => {
            let seconds = written.as_f64().expect("epoch seconds");
            assert_eq!((seconds * 1000.0).round() as i64, arrival.as_millisecond());
        }
        (None, None) => {}
        (arrival, written) => panic!("arrival {arrival:?} written as {written:?}"),
    }
    // Lambda's type requires the arrival time, which Kinesis always sends: only a record that
    // has one (in the range of real records) is read with it.
    let arrived = head
        .approximate_arrival_timestamp
        .is_some_and(|t| LAMBDA_TYPES_TIMES.contains(&t));
    if arrived {
        let event: aws_lambda_events::event::kinesis::KinesisEvent =
            serde_json::from_slice(&payload).expect("the event parses as Lambda's KinesisEvent");
        assert_eq!(event.records[0].kinesis.data.0, bytes);
    }
}

/// A DynamoDB Streams record in the GetRecords JSON shape.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DynamoDbRecordJson {
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    event_name: Option<String>,
    event_version: Option<String>,
    dynamodb: Option<DynamoDbChangeJson>,
    user_identity: Option<IdentityJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DynamoDbChangeJson {
    approximate_creation_date_time: Option<f64>,
    keys: Option<serde_json::Map<String, Value>>,
    new_image: Option<serde_json::Map<String, Value>>,
    old_image: Option<serde_json::Map<String, Value>>,
    sequence_number: Option<String>,
    size_bytes: Option<i64>,
    stream_view_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct IdentityJson {
    principal_id: Option<String>,
    #[serde(rename = "type")]
    identity_type: Option<String>,
}

/// `dynamodb_record`: a record as JSON. A record the conversion refuses lacks what the event
/// needs; one it accepts has its keys and images round trip through the event, and its
/// ordering key is the keys' sorted compact JSON.
pub fn dynamodb(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<DynamoDbRecordJson>(data) else {
        return;
    };
    let change = match &json.dynamodb {
        None => None,
        Some(change) => {
            let (Some(keys), Some(new_image), Some(old_image)) = (
                convert_present(change.keys.as_ref(), sdk_item),
                convert_present(change.new_image.as_ref(), sdk_item),
                convert_present(change.old_image.as_ref(), sdk_item),
            ) else {
                return;
            };
            Some((change, keys, new_image, old_image))
        }
    };
    let sdk = aws_sdk_dynamodbstreams::types::Record::builder()
        .set_event_id(json.event_id.clone())
        .set_event_name(json.event_name.as_deref().map(OperationType::from))
        .set_event_version(json.event_version.clone())
        .set_dynamodb(change.as_ref().map(|(change, keys, new_image, old_image)| {
            SdkChange::builder()
                .set_approximate_creation_date_time(
                    change
                        .approximate_creation_date_time
                        .map(DateTime::from_secs_f64),
                )
                .set_keys(keys.clone())
                .set_new_image(new_image.clone())
                .set_old_image(old_image.clone())
                .set_sequence_number(change.sequence_number.clone())
                .set_size_bytes(change.size_bytes)
                .set_stream_view_type(change.stream_view_type.as_deref().map(StreamViewType::from))
                .build()
        }))
        .set_user_identity(json.user_identity.as_ref().map(|identity| {
            Identity::builder()
                .set_principal_id(identity.principal_id.clone())
                .set_type(identity.identity_type.clone())
                .build()
        }))
        .build();
    let known_name = matches!(
        json.event_name.as_deref(),
        Some("INSERT" | "MODIFY" | "REMOVE")
    );
    let sequence = change
        .as_ref()
        .and_then(|(c, ..)| c.sequence_number.clone());
    let converted = dynamodb_streams::stream_record(sdk);
    let Ok(record) = converted else {
        assert!(
            !known_name || sequence.is_none(),
            "a record with a known eventName and a SequenceNumber converts: {converted:?}"
        );
        return;
    };
    let (Some((change, keys, new_image, old_image)), true) = (change, known_name) else {
        panic!("converted without an eventName or dynamodb field: {record:?}");
    };
    let record = stream_event(
        record,
        "arn:aws:dynamodb:us-east-1:000000000000:table/T/stream/2026-11-23T00:50:01.985",
    );
    assert_eq!(
        Some(record.item_identifier()),
        change.sequence_number.as_deref()
    );
    let payload = encode_checked(&record);
    let event: Value = serde_json::from_slice(&payload).expect("the event is JSON");
    let written = &event["Records"][0];
    assert_eq!(written["eventName"].as_str(), json.event_name.as_deref());
    assert_eq!(
        written["eventID"],
        json.event_id.unwrap_or_default().as_str()
    );
    let images = &written["dynamodb"];
    assert_eq!(
        images["SequenceNumber"].as_str(),
        change.sequence_number.as_deref()
    );
    assert_eq!(images["SizeBytes"].as_i64(), change.size_bytes);
    let read_back = |field: &str| {
        images.get(field).map(|item| {
            sdk_item(item.as_object().expect("an image is an object"))
                .expect("a written image is DynamoDB JSON")
        })
    };
    assert_eq!(
        read_back("Keys"),
        Some(keys.unwrap_or_default()),
        "the keys round trip"
    );
    assert_eq!(
        read_back("NewImage"),
        new_image,
        "the new image round trips"
    );
    assert_eq!(
        read_back("OldImage"),
        old_image,
        "the old image round trips"
    );
    assert_eq!(
        record.record.ordering_key(),
        images["Keys"].to_string(),
        "the ordering key is the keys' sorted compact JSON"
    );
    let arrived = change
        .approximate_creation_date_time
        .is_some_and(|t| LAMBDA_TYPES_TIMES.contains(&t));
    // The SDK keeps a view type it does not know (a later API's), as the event does; Lambda's
    // type knows today's four.
    let known_view = matches!(
        change.stream_view_type.as_deref(),
        None | Some("NEW_IMAGE" | "OLD_IMAGE" | "NEW_AND_OLD_IMAGES" | "KEYS_ONLY")
    );
    // Lambda's type also requires SizeBytes, which DynamoDB Streams always sends.
    if arrived && known_view && change.size_bytes.is_some() {
        serde_json::from_slice::<aws_lambda_events::event::dynamodb::Event>(&payload)
            .expect("the event parses as Lambda's DynamoDB event");
    }
}

/// An item in DynamoDB JSON as the SDK holds it; `None` for what is not DynamoDB JSON.
fn sdk_item(item: &serde_json::Map<String, Value>) -> Option<HashMap<String, AttributeValue>> {
    item.iter()
        .map(|(name, value)| Some((name.clone(), sdk_attribute(value)?)))
        .collect()
}

fn sdk_attribute(value: &Value) -> Option<AttributeValue> {
    let object = value.as_object()?;
    let [(tag, value)] = object.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let text = || value.as_str().map(str::to_owned);
    let texts = || {
        value
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    };
    Some(match tag.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(blob(value.as_str()?)?),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(texts()?.iter().map(|b| blob(b)).collect::<Option<_>>()?),
        "M" => AttributeValue::M(sdk_item(value.as_object()?)?),
        "L" => AttributeValue::L(
            value
                .as_array()?
                .iter()
                .map(sdk_attribute)
                .collect::<Option<_>>()?,
        ),
        "NULL" => AttributeValue::Null(value.as_bool()?),
        "BOOL" => AttributeValue::Bool(value.as_bool()?),
        _ => return None,
    })
}

/// `convert` applied to a value that may be absent: `None` when it refuses the value,
/// `Some(None)` when there is none.
fn convert_present<T, U>(
    value: Option<T>,
    convert: impl FnOnce(T) -> Option<U>,
) -> Option<Option<U>> {
    match value {
        None => Some(None),
        Some(value) => convert(value).map(Some),
    }
}

fn blob(base64: &str) -> Option<Blob> {
    BASE64.decode(base64).ok().map(Blob::new)
}

/// The first line and the rest.
fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|&b| b == b'\n')?;
    Some((&data[..end], &data[end + 1..]))
}

fn stream_event(
    record: esm_operator::sources::sharded::StreamRecord,
    arn: &str,
) -> StreamEventRecord {
    let shard = match record.payload {
        RecordPayload::Kinesis(_) => "shardId-000000000003",
        RecordPayload::DynamoDb(_) => "shardId-00000001795395270441-729d3502",
    };
    StreamEventRecord {
        record,
        origin: Arc::new(StreamOrigin::new(arn, shard, "esm:ns/mapping".into())),
    }
}

/// The event of `record` alone, checked to be exactly as long as the sizes said.
fn encode_checked<R: EventRecord>(record: &R) -> Vec<u8> {
    let len = encoded_len(record);
    assert_eq!(
        len,
        serde_json::to_vec(record).expect("records serialize").len()
    );
    let capacity = event_len(1, len);
    let payload = encode_event([record], capacity);
    assert_eq!(payload.len(), capacity, "event_len is exact");
    payload
}
