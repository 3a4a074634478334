//! The event JSON the target receives: Lambda's shapes, so existing handlers parse it unchanged
//! (SPEC §5).
//!
//! Every source produces records that serialize to Lambda's record JSON for that source and
//! implement [`EventRecord`]. The engine sizes each record once ([`encoded_len`], no
//! allocation), assembles batches under [`MAX_PAYLOAD_BYTES`], and writes the envelope
//! `{"Records":[...]}` in one buffer ([`encode_event`]).
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

/// Largest event (envelope included) sent to the target: Lambda's 6 MB synchronous payload.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// `eventSource` of SQS records.
pub const SQS_EVENT_SOURCE: &str = "aws:sqs";

const ENVELOPE_OPEN: &[u8] = br#"{"Records":["#;
const ENVELOPE_CLOSE: &[u8] = b"]}";

/// A record of any source, in its Lambda event shape.
pub trait EventRecord: Serialize {
    /// What a partial batch response names this record by: `messageId` (SQS) or the sequence
    /// number (streams).
    fn item_identifier(&self) -> &str;

    /// The JSON view filters match (SPEC §7): the record with its data field (`body`, `data`,
    /// `dynamodb`) parsed when it is JSON, else kept as a string.
    fn filter_view(&self) -> Value;
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

/// Parses a record's data field for filtering: JSON when it parses, else the text as a JSON
/// string (a plain body, which JSON patterns never match).
pub fn data_view(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
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
    #[serde(skip_serializing_if = "Option::is_none")]
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

    fn filter_view(&self) -> Value {
        let mut view = serde_json::to_value(self).expect("event records always serialize");
        view["body"] = data_view(&self.body);
        view
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

    #[test]
    fn empty_event_is_a_valid_envelope() {
        let payload = encode_event::<SqsRecord>([], event_len(0, 0));
        assert_eq!(payload, br#"{"Records":[]}"#);
    }

    #[test]
    fn filter_view_parses_json_bodies_only() {
        let json = fifo_record("m1", r#"{"type":"order","n":2}"#).filter_view();
        assert_eq!(json["body"]["type"], "order");
        assert_eq!(json["messageId"], "m1");
        assert_eq!(json["attributes"]["MessageGroupId"], "orders-7");
        assert_eq!(json["messageAttributes"]["kind"]["stringValue"], "order");

        let plain = fifo_record("m2", "not {json").filter_view();
        assert_eq!(plain["body"], "not {json");
    }
}
