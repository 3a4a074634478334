//! The event JSON the target receives: Lambda's shapes, so existing handlers parse it unchanged
//! (SPEC §5).
//!
//! Every source produces records that serialize to Lambda's record JSON for that source and
//! implement [`EventRecord`]. The engine sizes each record once ([`encoded_len`], no
//! allocation), assembles batches under [`MAX_PAYLOAD_BYTES`], and writes the envelope
//! `{"Records":[...]}` in one buffer ([`encode_event`]).
//!
//! Stream records ([`StreamEventRecord`]) are written straight from the source's
//! [`StreamRecord`] and the shard's [`StreamOrigin`]: no per-record copy of the event JSON.
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use base64::Engine as _;
use base64::display::Base64Display;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::sources::sharded::{
    DynamoDbRecord, KinesisEncryption, KinesisRecord, RecordPayload, StreamRecord,
};
use crate::trace::ProducerTrace;

/// Largest event (envelope included) sent to the target: Lambda's 6 MB synchronous payload.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// `eventSource` of SQS records.
pub const SQS_EVENT_SOURCE: &str = "aws:sqs";
/// `eventSource` of Kinesis records.
pub const KINESIS_EVENT_SOURCE: &str = "aws:kinesis";
/// `eventSource` of DynamoDB Streams records.
pub const DYNAMODB_EVENT_SOURCE: &str = "aws:dynamodb";

const ENVELOPE_OPEN: &[u8] = br#"{"Records":["#;
const ENVELOPE_CLOSE: &[u8] = b"]}";

/// A record of any source, in its Lambda event shape.
pub trait EventRecord: Serialize {
    /// What a partial batch response names this record by: `messageId` (SQS) or the sequence
    /// number (streams).
    fn item_identifier(&self) -> &str;

    /// The data field filters parse apart from the record's JSON (SPEC §7): the SQS `body`, the
    /// decoded Kinesis `data`. `None` when the data is an object of the record's JSON already
    /// (DynamoDB's `dynamodb`).
    fn filter_data(&self) -> Option<FilterData<'_>>;

    /// An object of the record's JSON whose fields filters see at the top level (Kinesis
    /// patterns name `partitionKey`, not `kinesis.partitionKey`).
    fn filter_flatten(&self) -> Option<&'static str> {
        None
    }

    /// The trace that produced the record, when it carries one (target calls continue it).
    fn producer_trace(&self) -> Option<ProducerTrace<'_>> {
        None
    }
}

/// A record's data field as filters see it: the JSON in `bytes` when they hold JSON, else
/// [`FilterData::plain`] (which JSON patterns never match).
pub struct FilterData<'a> {
    /// The field's name in filter patterns.
    pub key: &'static str,
    /// The data as the producer sent it.
    pub bytes: &'a [u8],
    plain: PlainData,
}

/// How data that is not JSON appears to filters.
enum PlainData {
    /// As its text (SQS bodies are text).
    Text,
    /// As base64 text, as the event carries it (Kinesis data is bytes).
    Base64,
}

impl FilterData<'_> {
    /// The data as a JSON string, for when it is not JSON.
    pub fn plain(&self) -> Value {
        Value::String(match self.plain {
            PlainData::Text => String::from_utf8_lossy(self.bytes).into_owned(),
            PlainData::Base64 => base64(self.bytes),
        })
    }
}

/// Bytes `record` takes in an event, without allocating.
pub fn encoded_len<R: Serialize>(record: &R) -> usize {
    let mut counter = ByteCounter(0);
    // Records are structs of strings and string-keyed maps: serializing them cannot fail.
    serde_json::to_writer(&mut counter, record).expect("event records always serialize");
    counter.0
}

/// Size of an event holding `count` records whose [`encoded_len`]s add up to `record_bytes`.
pub fn event_len(count: usize, record_bytes: usize) -> usize {
    ENVELOPE_OPEN.len() + record_bytes + count.saturating_sub(1) + ENVELOPE_CLOSE.len()
}

/// `{"Records":[...]}` around `records`, in a buffer of exactly `capacity` bytes when
/// `capacity` is their [`event_len`].
pub fn encode_event<'a, R: Serialize + 'a>(
    records: impl IntoIterator<Item = &'a R>,
    capacity: usize,
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(capacity);
    buffer.extend_from_slice(ENVELOPE_OPEN);
    for (index, record) in records.into_iter().enumerate() {
        if index > 0 {
            buffer.push(b',');
        }
        serde_json::to_writer(&mut buffer, record).expect("event records always serialize");
    }
    buffer.extend_from_slice(ENVELOPE_CLOSE);
    buffer
}

struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One SQS message as Lambda's SQS event carries it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// System attributes: ApproximateReceiveCount, SentTimestamp, SenderId,
    /// ApproximateFirstReceiveTimestamp, and for FIFO SequenceNumber, MessageGroupId,
    /// MessageDeduplicationId.
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, SqsMessageAttribute>,
    pub md5_of_body: String,
    /// `null` without message attributes, as Lambda writes it.
    pub md5_of_message_attributes: Option<String>,
    pub event_source: &'static str,
    /// Shared by every record of a queue.
    #[serde(rename = "eventSourceARN")]
    pub event_source_arn: Arc<str>,
    pub aws_region: Arc<str>,
}

impl SqsRecord {
    /// The FIFO message group, absent on standard queues.
    pub fn message_group_id(&self) -> Option<&str> {
        self.attributes.get("MessageGroupId").map(String::as_str)
    }
}

impl EventRecord for SqsRecord {
    fn item_identifier(&self) -> &str {
        &self.message_id
    }

    fn filter_data(&self) -> Option<FilterData<'_>> {
        Some(FilterData {
            key: "body",
            bytes: self.body.as_bytes(),
            plain: PlainData::Text,
        })
    }

    /// The `AWSTraceHeader` system attribute (X-Ray), else a `traceparent` message attribute.
    fn producer_trace(&self) -> Option<ProducerTrace<'_>> {
        self.attributes
            .get("AWSTraceHeader")
            .map(|header| ProducerTrace::XRay(header))
            .or_else(|| {
                let value = self
                    .message_attributes
                    .get("traceparent")?
                    .string_value
                    .as_deref()?;
                Some(ProducerTrace::W3c(value))
            })
    }
}

/// A message attribute as Lambda's SQS event carries it (binary values base64-encoded).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessageAttribute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
    pub string_list_values: Vec<String>,
    pub binary_list_values: Vec<String>,
    pub data_type: String,
}

/// What every record of one shard shares in its event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOrigin {
    pub event_source_arn: Arc<str>,
    /// The region in the stream ARN.
    pub aws_region: Arc<str>,
    pub shard_id: Arc<str>,
    /// Kinesis `invokeIdentityArn`: Lambda names the function's role there; here it names the
    /// mapping that made the call (see docs/streams.md).
    pub invoke_identity_arn: Arc<str>,
}

impl StreamOrigin {
    pub fn new(event_source_arn: &str, shard_id: &str, invoke_identity_arn: Arc<str>) -> Self {
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
        let region = event_source_arn.split(':').nth(3).unwrap_or_default();
        Self {
            event_source_arn: event_source_arn.into(),
            aws_region: region.into(),
            shard_id: shard_id.into(),
            invoke_identity_arn,
        }
    }
}

/// A Kinesis or DynamoDB Streams record as Lambda's event carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEventRecord {
    pub record: StreamRecord,
    pub origin: Arc<StreamOrigin>,
}

impl Serialize for StreamEventRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let origin = &*self.origin;
        match &self.record.payload {
            RecordPayload::Kinesis(kinesis) => {
                let mut record = serializer.serialize_struct("KinesisEventRecord", 8)?;
                record.serialize_field(
                    "kinesis",
                    &KinesisJson {
                        record: &self.record,
                        kinesis,
                    },
                )?;
                record.serialize_field("eventSource", KINESIS_EVENT_SOURCE)?;
                record.serialize_field("eventVersion", "1.0")?;
                record.serialize_field(
                    "eventID",
                    &Joined(&origin.shard_id, &self.record.sequence_number),
                )?;
                record.serialize_field("eventName", "aws:kinesis:record")?;
                record.serialize_field("invokeIdentityArn", &*origin.invoke_identity_arn)?;
                record.serialize_field("awsRegion", &*origin.aws_region)?;
                record.serialize_field("eventSourceARN", &*origin.event_source_arn)?;
                record.end()
            }
            RecordPayload::DynamoDb(change) => {
                let mut record = serializer.serialize_struct("DynamoDbEventRecord", 8)?;
                record.serialize_field("eventID", &change.event_id)?;
                record.serialize_field("eventName", change.event_name.as_str())?;
                record.serialize_field(
                    "eventVersion",
                    change.event_version.as_deref().unwrap_or("1.1"),
                )?;
                record.serialize_field("eventSource", DYNAMODB_EVENT_SOURCE)?;
                record.serialize_field("awsRegion", &*origin.aws_region)?;
                if let Some(identity) = &change.user_identity {
                    record.serialize_field("userIdentity", identity)?;
                }
                record.serialize_field(
                    "dynamodb",
                    &DynamoDbJson {
                        record: &self.record,
                        change,
                    },
                )?;
                record.serialize_field("eventSourceARN", &*origin.event_source_arn)?;
                record.end()
            }
        }
    }
}

/// `a:b` written without building the string.
struct Joined<'a>(&'a str, &'a str);

impl Serialize for Joined<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// Lambda's `kinesis` object of a record.
struct KinesisJson<'a> {
    record: &'a StreamRecord,
    kinesis: &'a KinesisRecord,
}

impl Serialize for KinesisJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = serializer.serialize_struct("KinesisRecord", 6)?;
        object.serialize_field("kinesisSchemaVersion", "1.0")?;
        object.serialize_field("partitionKey", &self.kinesis.partition_key)?;
        object.serialize_field("sequenceNumber", &self.record.sequence_number)?;
        object.serialize_field("data", &Base64Text(&self.kinesis.data))?;
        if let Some(arrival) = self.record.approximate_arrival {
            // Epoch seconds with millisecond decimals, as Kinesis and Lambda write them.
            object.serialize_field(
                "approximateArrivalTimestamp",
                &(arrival.as_millisecond() as f64 / 1000.0),
            )?;
        }
        // Lambda writes the field only for encrypted records.
        if self.kinesis.encryption != KinesisEncryption::None {
            object.serialize_field("encryptionType", self.kinesis.encryption.as_str())?;
        }
        object.end()
    }
}

/// Bytes as base64 text, encoded while written.
struct Base64Text<'a>(&'a [u8]);

impl Serialize for Base64Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

/// Lambda's `dynamodb` object of a record.
struct DynamoDbJson<'a> {
    record: &'a StreamRecord,
    change: &'a DynamoDbRecord,
}

impl Serialize for DynamoDbJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let change = self.change;
        let mut object = serializer.serialize_struct("StreamRecord", 7)?;
        if let Some(created) = self.record.approximate_arrival {
            // Epoch seconds as a number with a fraction (`1700000000.0`), as Lambda writes it;
            // sub-second precision is kept where the stream has it.
            object.serialize_field(
                "ApproximateCreationDateTime",
                &(created.as_microsecond() as f64 / 1e6),
            )?;
        }
        object.serialize_field("Keys", &change.keys)?;
        if let Some(image) = &change.new_image {
            object.serialize_field("NewImage", image)?;
        }
        if let Some(image) = &change.old_image {
            object.serialize_field("OldImage", image)?;
        }
        object.serialize_field("SequenceNumber", &self.record.sequence_number)?;
        if let Some(size) = change.size_bytes {
            object.serialize_field("SizeBytes", &size)?;
        }
        if let Some(view) = &change.stream_view_type {
            object.serialize_field("StreamViewType", view)?;
        }
        object.end()
    }
}

impl EventRecord for StreamEventRecord {
    fn item_identifier(&self) -> &str {
        &self.record.sequence_number
    }

    fn filter_data(&self) -> Option<FilterData<'_>> {
        match &self.record.payload {
            RecordPayload::Kinesis(kinesis) => Some(FilterData {
                key: "data",
                bytes: &kinesis.data,
                plain: PlainData::Base64,
            }),
            RecordPayload::DynamoDb(_) => None,
        }
    }

    fn filter_flatten(&self) -> Option<&'static str> {
        match self.record.payload {
            RecordPayload::Kinesis(_) => Some("kinesis"),
            RecordPayload::DynamoDb(_) => None,
        }
    }
}

/// Base64 as Lambda events use it for binary values.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsEvent;

    fn fifo_record(id: &str, body: &str) -> SqsRecord {
        SqsRecord {
            message_id: id.into(),
            receipt_handle: format!("handle-{id}"),
            body: body.into(),
            attributes: BTreeMap::from(
                [
                    ("ApproximateReceiveCount", "2"),
                    ("SentTimestamp", "1700000000000"),
                    ("SenderId", "AIDAEXAMPLE"),
                    ("ApproximateFirstReceiveTimestamp", "1700000000100"),
                    ("SequenceNumber", "18849496460467696128"),
                    ("MessageGroupId", "orders-7"),
                    ("MessageDeduplicationId", "dedup-1"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            message_attributes: BTreeMap::from([
                (
                    "kind".to_string(),
                    SqsMessageAttribute {
                        string_value: Some("order".into()),
                        binary_value: None,
                        string_list_values: vec![],
                        binary_list_values: vec![],
                        data_type: "String".into(),
                    },
                ),
                (
                    "blob".to_string(),
                    SqsMessageAttribute {
                        string_value: None,
                        binary_value: Some(base64(&[0, 1, 2, 255])),
                        string_list_values: vec![],
                        binary_list_values: vec![],
                        data_type: "Binary".into(),
                    },
                ),
            ]),
            md5_of_body: "0123456789abcdef0123456789abcdef".into(),
            md5_of_message_attributes: Some("fedcba9876543210fedcba9876543210".into()),
            event_source: SQS_EVENT_SOURCE,
            event_source_arn: "arn:aws:sqs:us-east-1:000000000000:orders.fifo".into(),
            aws_region: "us-east-1".into(),
        }
    }

    #[test]
    fn sqs_event_parses_with_the_published_lambda_types() {
        let records = [fifo_record("m1", r#"{"n":1}"#), fifo_record("m2", "plain")];
        let len = event_len(2, records.iter().map(encoded_len).sum());
        let payload = encode_event(&records, len);
        assert_eq!(payload.len(), len, "event_len is exact");

        let event: SqsEvent = serde_json::from_slice(&payload).expect("a Lambda SqsEvent");
        assert_eq!(event.records.len(), 2);
        let first = &event.records[0];
        assert_eq!(first.message_id.as_deref(), Some("m1"));
        assert_eq!(first.receipt_handle.as_deref(), Some("handle-m1"));
        assert_eq!(first.body.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(first.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            first.event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:000000000000:orders.fifo")
        );
        assert_eq!(first.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(
            first.md5_of_body.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        for (key, value) in [
            ("ApproximateReceiveCount", "2"),
            ("SentTimestamp", "1700000000000"),
            ("SenderId", "AIDAEXAMPLE"),
            ("ApproximateFirstReceiveTimestamp", "1700000000100"),
            ("SequenceNumber", "18849496460467696128"),
            ("MessageGroupId", "orders-7"),
            ("MessageDeduplicationId", "dedup-1"),
        ] {
            assert_eq!(first.attributes.get(key).map(String::as_str), Some(value));
        }
        let kind = &first.message_attributes["kind"];
        assert_eq!(kind.string_value.as_deref(), Some("order"));
        assert_eq!(kind.data_type.as_deref(), Some("String"));
        let blob = &first.message_attributes["blob"];
        assert_eq!(
            blob.binary_value.as_ref().map(|b| b.0.clone()),
            Some(vec![0, 1, 2, 255])
        );
        assert_eq!(event.records[1].body.as_deref(), Some("plain"));
    }

    /// Field forms strict parsers of Lambda's events rely on, as recorded on AWS.
    #[test]
    fn optional_fields_are_written_as_lambda_writes_them() {
        let to_json = |records: &[StreamEventRecord]| -> Value {
            let len = event_len(records.len(), records.iter().map(encoded_len).sum());
            serde_json::from_slice(&encode_event(records, len)).unwrap()
        };
        let mut sqs = fifo_record("m1", "x");
        sqs.md5_of_message_attributes = None;
        let len = event_len(1, encoded_len(&sqs));
        let event: Value = serde_json::from_slice(&encode_event([&sqs], len)).unwrap();
        assert!(
            event["Records"][0]
                .as_object()
                .unwrap()
                .get("md5OfMessageAttributes")
                .is_some_and(Value::is_null),
            "SQS: md5OfMessageAttributes is null, not absent"
        );

        let plain = kinesis_record("1", "k", b"x");
        let mut encrypted = kinesis_record("2", "k", b"x");
        if let RecordPayload::Kinesis(kinesis) = &mut encrypted.record.payload {
            kinesis.encryption = crate::sources::sharded::KinesisEncryption::Kms;
        }
        let event = to_json(&[plain, encrypted]);
        assert!(
            event["Records"][0]["kinesis"]
                .get("encryptionType")
                .is_none()
        );
        assert_eq!(event["Records"][1]["kinesis"]["encryptionType"], "KMS");

        let mut change = dynamodb_record(
            crate::sources::sharded::DynamoDbEventName::Insert,
            "1",
            None,
            None,
        );
        let event = to_json(std::slice::from_ref(&change));
        let created = &event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"];
        assert!(created.is_f64(), "a number with a fraction: {created}");
        assert_eq!(created.as_f64(), Some(1_700_000_000.0));
        change.record.approximate_arrival = Some("2023-11-14T22:13:20.25Z".parse().unwrap());
        let event = to_json(&[change]);
        assert_eq!(
            event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"].as_f64(),
            Some(1_700_000_000.25)
        );
    }

    #[test]
    fn empty_event_is_a_valid_envelope() {
        let payload = encode_event::<SqsRecord>([], event_len(0, 0));
        assert_eq!(payload, br#"{"Records":[]}"#);
    }

    #[test]
    fn filter_view_parses_json_bodies_only() {
        let json = crate::filter::full_view(&fifo_record("m1", r#"{"type":"order","n":2}"#));
        assert_eq!(json["body"]["type"], "order");
        assert_eq!(json["messageId"], "m1");
        assert_eq!(json["attributes"]["MessageGroupId"], "orders-7");
        assert_eq!(json["messageAttributes"]["kind"]["stringValue"], "order");

        let plain = crate::filter::full_view(&fifo_record("m2", "not {json"));
        assert_eq!(plain["body"], "not {json");
    }

    fn origin(arn: &str, shard: &str) -> Arc<StreamOrigin> {
        Arc::new(StreamOrigin::new(arn, shard, "esm:ns/mapping".into()))
    }

    fn kinesis_record(sequence: &str, key: &str, data: &[u8]) -> StreamEventRecord {
        use crate::sources::sharded::KinesisEncryption;
        StreamEventRecord {
            record: StreamRecord {
                sequence_number: sequence.into(),
                approximate_arrival: Some("2023-11-14T22:13:20.984Z".parse().unwrap()),
                payload: RecordPayload::Kinesis(KinesisRecord {
                    partition_key: key.into(),
                    data: data.to_vec(),
                    encryption: KinesisEncryption::None,
                }),
            },
            origin: origin(
                "arn:aws:kinesis:eu-west-1:000000000000:stream/orders",
                "shardId-000000000003",
            ),
        }
    }

    #[test]
    fn kinesis_event_parses_with_the_published_lambda_types() {
        use aws_lambda_events::event::kinesis::{KinesisEncryptionType, KinesisEvent};
        let records = [
            kinesis_record("4960001", "customer-7", br#"{"n":1}"#),
            kinesis_record("4960002", "customer-8", &[0, 159, 255]),
        ];
        let len = event_len(2, records.iter().map(encoded_len).sum());
        let payload = encode_event(&records, len);
        assert_eq!(payload.len(), len, "event_len is exact");

        let event: KinesisEvent = serde_json::from_slice(&payload).expect("a Lambda KinesisEvent");
        let first = &event.records[0];
        assert_eq!(
            first.event_id.as_deref(),
            Some("shardId-000000000003:4960001")
        );
        assert_eq!(first.event_name.as_deref(), Some("aws:kinesis:record"));
        assert_eq!(first.event_source.as_deref(), Some("aws:kinesis"));
        assert_eq!(first.event_version.as_deref(), Some("1.0"));
        assert_eq!(first.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(first.invoke_identity_arn.as_deref(), Some("esm:ns/mapping"));
        assert_eq!(
            first.event_source_arn.as_deref(),
            Some("arn:aws:kinesis:eu-west-1:000000000000:stream/orders")
        );
        assert_eq!(first.kinesis.partition_key, "customer-7");
        assert_eq!(first.kinesis.sequence_number, "4960001");
        assert_eq!(first.kinesis.kinesis_schema_version.as_deref(), Some("1.0"));
        assert_eq!(first.kinesis.data.0, br#"{"n":1}"#);
        assert_eq!(first.kinesis.encryption_type, KinesisEncryptionType::None);
        assert_eq!(
            first
                .kinesis
                .approximate_arrival_timestamp
                .0
                .timestamp_millis(),
            1_700_000_000_984
        );
        assert_eq!(event.records[1].kinesis.data.0, [0, 159, 255]);
    }

    #[test]
    fn kinesis_filter_view_has_the_record_fields_and_decoded_data() {
        let view = crate::filter::full_view(&kinesis_record(
            "4960001",
            "customer-7",
            br#"{"type":"order"}"#,
        ));
        assert_eq!(view["data"]["type"], "order");
        assert_eq!(view["partitionKey"], "customer-7");
        assert_eq!(view["eventSource"], "aws:kinesis");
        assert!(view.get("kinesis").is_none());
        let binary = crate::filter::full_view(&kinesis_record("4960002", "k", &[0, 159, 255]));
        assert_eq!(binary["data"], "AJ//", "non-JSON data stays base64 text");
    }

    fn dynamodb_record(
        name: crate::sources::sharded::DynamoDbEventName,
        sequence: &str,
        new: Option<Value>,
        old: Option<Value>,
    ) -> StreamEventRecord {
        use crate::sources::sharded::{DynamoDbEventName, DynamoDbUserIdentity};
        StreamEventRecord {
            record: StreamRecord {
                sequence_number: sequence.into(),
                approximate_arrival: Some("2023-11-14T22:13:20Z".parse().unwrap()),
                payload: RecordPayload::DynamoDb(Box::new(DynamoDbRecord {
                    event_id: format!("e-{sequence}"),
                    event_name: name,
                    event_version: Some("1.1".into()),
                    keys: serde_json::json!({"pk": {"S": "a"}}),
                    keys_text: r#"{"pk":{"S":"a"}}"#.into(),
                    new_image: new,
                    old_image: old,
                    size_bytes: Some(26),
                    stream_view_type: Some("NEW_AND_OLD_IMAGES".into()),
                    user_identity: (name == DynamoDbEventName::Remove).then(|| {
                        DynamoDbUserIdentity {
                            principal_id: Some("dynamodb.amazonaws.com".into()),
                            identity_type: Some("Service".into()),
                        }
                    }),
                })),
            },
            origin: origin(
                "arn:aws:dynamodb:ddblocal:000000000000:table/T/stream/2026-11-23T00:50:01.985",
                "shardId-00000001795395270441-729d3502",
            ),
        }
    }

    #[test]
    fn dynamodb_event_parses_with_the_published_lambda_types() {
        use crate::sources::sharded::DynamoDbEventName;
        use aws_lambda_events::event::dynamodb::Event;
        let v1 = serde_json::json!({"pk": {"S": "a"}, "v": {"N": "1"}});
        let v2 = serde_json::json!({"pk": {"S": "a"}, "v": {"N": "2"}});
        let records = [
            dynamodb_record(
                DynamoDbEventName::Insert,
                "000000000000000000001",
                Some(v1.clone()),
                None,
            ),
            dynamodb_record(
                DynamoDbEventName::Modify,
                "000000000000000000002",
                Some(v2.clone()),
                Some(v1),
            ),
            dynamodb_record(
                DynamoDbEventName::Remove,
                "000000000000000000003",
                None,
                Some(v2),
            ),
        ];
        let len = event_len(3, records.iter().map(encoded_len).sum());
        let payload = encode_event(&records, len);
        assert_eq!(payload.len(), len);
        let event: Event = serde_json::from_slice(&payload).expect("a Lambda DynamoDB event");
        let names: Vec<_> = event
            .records
            .iter()
            .map(|r| r.event_name.as_str())
            .collect();
        assert_eq!(names, ["INSERT", "MODIFY", "REMOVE"]);
        let modify = &event.records[1];
        assert_eq!(modify.event_id, "e-000000000000000000002");
        assert_eq!(modify.aws_region, "ddblocal");
        assert_eq!(modify.event_source.as_deref(), Some("aws:dynamodb"));
        assert_eq!(modify.event_version.as_deref(), Some("1.1"));
        assert_eq!(
            modify.change.sequence_number.as_deref(),
            Some("000000000000000000002")
        );
        assert_eq!(modify.change.size_bytes, 26);
        assert_eq!(
            modify.change.approximate_creation_date_time.timestamp(),
            1_700_000_000
        );
        assert!(modify.change.keys.get("pk").is_some());
        assert!(modify.change.new_image.get("v").is_some());
        assert!(modify.change.old_image.get("v").is_some());
        let remove = &event.records[2];
        assert!(remove.change.new_image.is_empty());
        assert_eq!(
            remove
                .user_identity
                .as_ref()
                .map(|u| u.principal_id.as_str()),
            Some("dynamodb.amazonaws.com")
        );
        assert_eq!(records[1].item_identifier(), "000000000000000000002");
        let view = crate::filter::full_view(&records[1]);
        assert_eq!(view["dynamodb"]["NewImage"]["v"]["N"], "2");
    }

    /// A set builds only the part of a record's view that its patterns name; matching on it
    /// must decide exactly as matching on the whole view does.
    #[test]
    fn filter_sets_decide_on_records_as_on_their_whole_view() {
        use crate::api::SourceKind;
        use crate::filter::{FilterSet, Pattern};
        use crate::sources::sharded::DynamoDbEventName;

        fn agree<R: EventRecord>(source: SourceKind, pattern: &str, record: &R) -> bool {
            let set = FilterSet::parse_for(source, [pattern]).unwrap();
            let whole = Pattern::parse_for(source, pattern)
                .unwrap()
                .matches(&crate::filter::full_view(record));
            assert_eq!(set.matches(record), whole, "{pattern}");
            whole
        }

        let sqs = SourceKind::Sqs;
        let order = fifo_record(
            "m1",
            r#"{"type":"order","n":2,"items":[{"sku":"a"},{"sku":"b"}]}"#,
        );
        let plain = fifo_record("m2", "not {json");
        for (pattern, json, text) in [
            (r#"{"body":{"type":["order"]}}"#, true, false),
            (r#"{"body":{"type":["refund"]}}"#, false, false),
            (r#"{"body":{"items":{"sku":["b"]}}}"#, true, false),
            (
                r#"{"body":{"n":[{"numeric":[">",1]}]},"attributes":{"MessageGroupId":["orders-7"]}}"#,
                true,
                false,
            ),
            (
                r#"{"messageAttributes":{"kind":{"stringValue":["order"]}}}"#,
                true,
                true,
            ),
            (r#"{"body":["not {json"]}"#, false, true),
            (r#"{"body":[{"prefix":"not"}]}"#, false, true),
            (r#"{"body":{"missing":[{"exists":false}]}}"#, true, false),
            (
                r#"{"$or":[{"body":{"type":["x"]}},{"messageId":["m1"]}]}"#,
                true,
                false,
            ),
        ] {
            assert_eq!(
                agree(sqs, pattern, &order),
                json,
                "{pattern} on a JSON body"
            );
            assert_eq!(
                agree(sqs, pattern, &plain),
                text,
                "{pattern} on a plain body"
            );
        }

        let kinesis = SourceKind::Kinesis;
        let json = kinesis_record("4960001", "customer-7", br#"{"type":"order"}"#);
        let binary = kinesis_record("4960002", "customer-8", &[0, 159, 255]);
        // Not UTF-8 in a field no pattern names: still not JSON.
        let broken = kinesis_record(
            "4960003",
            "customer-9",
            b"{\"a\":\"\xff\",\"type\":\"order\"}",
        );
        assert!(!agree(kinesis, r#"{"data":{"type":["order"]}}"#, &broken));
        for (pattern, on_json, on_binary) in [
            (r#"{"data":{"type":["order"]}}"#, true, false),
            (r#"{"partitionKey":[{"prefix":"customer-"}]}"#, true, true),
            (
                r#"{"partitionKey":["customer-7"],"data":{"type":["order"]}}"#,
                true,
                false,
            ),
            (
                r#"{"eventSource":["aws:kinesis"],"kinesis":[{"exists":false}]}"#,
                true,
                true,
            ),
        ] {
            assert_eq!(agree(kinesis, pattern, &json), on_json, "{pattern}");
            assert_eq!(agree(kinesis, pattern, &binary), on_binary, "{pattern}");
        }

        let dynamodb = SourceKind::DynamoDBStreams;
        let insert = dynamodb_record(
            DynamoDbEventName::Insert,
            "000000000000000000001",
            Some(serde_json::json!({"pk": {"S": "a"}, "v": {"N": "1"}})),
            None,
        );
        for (pattern, want) in [
            (r#"{"eventName":["INSERT"]}"#, true),
            (r#"{"dynamodb":{"NewImage":{"v":{"N":["1"]}}}}"#, true),
            (
                r#"{"eventName":["INSERT"],"dynamodb":{"OldImage":[{"exists":true}]}}"#,
                false,
            ),
        ] {
            assert_eq!(agree(dynamodb, pattern, &insert), want, "{pattern}");
        }
    }

    #[test]
    fn a_filter_view_holds_only_what_the_patterns_name() {
        use crate::filter::FilterSet;
        let record = fifo_record(
            "m1",
            r#"{"type":"order","n":2,"items":[{"sku":"a","q":1}]}"#,
        );
        let set = FilterSet::parse([
            r#"{"body":{"type":["order"],"items":{"sku":["a"]}}}"#,
            r#"{"$or":[{"messageId":["x"]},{"attributes":{"SenderId":["y"]}}]}"#,
        ])
        .unwrap();
        assert_eq!(
            set.view(&record),
            serde_json::json!({
                "body": {"type": "order", "items": [{"sku": "a"}]},
                "messageId": "m1",
                "attributes": {"SenderId": "AIDAEXAMPLE"},
            })
        );
        let kinesis = kinesis_record("4960001", "customer-7", br#"{"type":"order","n":1}"#);
        let set = FilterSet::parse([r#"{"partitionKey":["a"],"data":{"n":[1]}}"#]).unwrap();
        assert_eq!(
            set.view(&kinesis),
            serde_json::json!({"partitionKey": "customer-7", "data": {"n": 1}})
        );
    }
}
