//! Filter patterns and the records they are matched against (src/filter/): pattern text comes
//! from mapping specs, record data from whoever writes to the queue or stream.
//!
//! The main property is the pruned view's promise: a [`FilterSet`] builds only the part of a
//! record's view that its patterns name, and must decide as it would on the whole view. Adding
//! to a set a pattern that never matches but names every top-level field of the record (so that
//! the set's view is the whole record) must not change the set's answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use esm_operator::api::SourceKind;
use esm_operator::event::{
    EventRecord, SQS_EVENT_SOURCE, SqsMessageAttribute, SqsRecord, StreamEventRecord, StreamOrigin,
};
use esm_operator::filter::{FilterSet, MAX_FILTERS, Pattern};
use esm_operator::sources::sharded::{
    DynamoDbEventName, DynamoDbRecord, KinesisEncryption, KinesisRecord, RecordPayload,
    StreamRecord,
};
use serde_json::Value;

/// Patterns of the docs and tests, one or more per operator, that records are matched against.
const PATTERNS: &[&str] = &[
    r#"{"body": {"type": ["order"], "amount": [{"numeric": [">", 10]}]}}"#,
    r#"{"body": ["text"]}"#,
    r#"{"body": [{"prefix": "not"}]}"#,
    r#"{"body": {"items": {"sku": ["b"]}, "n": [2, 2.0, 0.10000000000000001]}}"#,
    r#"{"body": {"missing": [{"exists": false}], "type": [{"exists": true}]}}"#,
    r#"{"body": {"a.b": [{"anything-but": {"prefix": ["x", "y"]}}]}}"#,
    r#"{"body": {"ip": [{"cidr": "10.0.0.0/8"}, {"cidr": "2001:db8::/32"}]}}"#,
    r#"{"body": {"name": [{"wildcard": "*stra\\*e*"}, {"equals-ignore-case": "STRAßE"}]}}"#,
    r#"{"body": {"v": [{"suffix": {"equals-ignore-case": "Ing"}}, {"exactly": ""}, null]}}"#,
    r#"{"$or": [{"body": {"type": ["x"]}}, {"messageId": ["m1"]}, {"body": {"n": [{"numeric": [">=", 0, "<", 5]}]}}]}"#,
    r#"{"messageAttributes": {"channel": {"stringValue": ["web"]}}}"#,
    r#"{"data": {"type": ["purchase"]}, "partitionKey": [{"prefix": "customer-"}]}"#,
    r#"{"data": {"n": [{"numeric": ["=", 1]}], "b": [true, false]}}"#,
    r#"{"data": [{"prefix": "AJ"}]}"#,
    r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}"#,
    r#"{"dynamodb": {"NewImage": {"v": {"N": [{"anything-but": ["1", "2"]}]}}, "OldImage": [{"exists": false}]}}"#,
];

/// `filter_pattern`: the bytes are a pattern's text. Parsing is deterministic and agrees with
/// parsing in a set, and a pattern that parses decides sample records, and records made of the
/// pattern itself, the same way on pruned and whole views, every time.
pub fn pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Pattern::parse(text);
    assert_eq!(parsed, Pattern::parse(text), "parsing is deterministic");
    for source in [
        SourceKind::Sqs,
        SourceKind::Kinesis,
        SourceKind::DynamoDBStreams,
    ] {
        assert_eq!(
            Pattern::parse_for(source, text).is_ok(),
            FilterSet::parse_for(source, [text]).is_ok(),
            "a pattern parses for {source:?} alone as in a set"
        );
    }
    let Ok(pattern) = parsed else {
        assert!(
            FilterSet::parse([text]).is_err(),
            "a set refuses what a pattern refuses"
        );
        return;
    };
    assert_eq!(pattern.matches_json(text), pattern.matches_json(text));
    // Records that have the paths the pattern names, so that matching goes past the first key:
    // the pattern's text as an SQS body and Kinesis data, matched by the pattern moved under
    // `body` (arrays are flattened, so `{"body": {"a": ["x"]}}` matches the body `{"a": ["x"]}`),
    // and the pattern's own `body` as a body.
    let under_body = format!(r#"{{"body": {text}}}"#);
    let mut patterns = vec![text];
    if Pattern::parse(&under_body).is_ok() {
        patterns.push(&under_body);
    }
    let own_body = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| value.get("body").map(Value::to_string));
    for body in SAMPLE_BODIES
        .iter()
        .copied()
        .chain([text])
        .chain(own_body.as_deref())
    {
        decides_as_on_the_whole_view(&patterns, &sqs_record(body));
    }
    for data in [
        br#"{"type":"purchase","n":1}"#.as_slice(),
        &[0, 159, 255],
        data,
    ] {
        decides_as_on_the_whole_view(&patterns, &kinesis_record(data));
    }
    decides_as_on_the_whole_view(&patterns, &dynamodb_record(sample_image()));
}

/// `filter_record`: the bytes are a record's data: an SQS body (when UTF-8, as SQS bodies are),
/// Kinesis data, and a DynamoDB new image (when a JSON object). The docs' and tests' patterns
/// decide it the same way on pruned and whole views, and a set of several decides as their OR.
pub fn record(data: &[u8]) {
    if let Ok(body) = std::str::from_utf8(data) {
        decides_as_on_the_whole_view(PATTERNS, &sqs_record(body));
    }
    decides_as_on_the_whole_view(PATTERNS, &kinesis_record(data));
    if let Ok(image @ Value::Object(_)) = serde_json::from_slice::<Value>(data) {
        decides_as_on_the_whole_view(PATTERNS, &dynamodb_record(image));
    }
}

/// Each pattern (a set of one) decides `record` as it does with every field of the record in
/// its view, every time; sets of up to [`MAX_FILTERS`] of the patterns decide as their OR.
fn decides_as_on_the_whole_view<R: EventRecord>(patterns: &[&str], record: &R) {
    let whole_view = whole_view_pattern(record);
    let mut decisions = Vec::with_capacity(patterns.len());
    for text in patterns {
        let set = FilterSet::parse([*text]).unwrap_or_else(|e| panic!("{text}: {e}"));
        let decision = set.matches(record);
        assert_eq!(decision, set.matches(record), "matching is deterministic");
        let widened = FilterSet::parse([*text, whole_view.as_str()])
            .expect("a pattern and the whole-view pattern form a set");
        assert_eq!(
            widened.matches(record),
            decision,
            "the pruned view decides as the whole view does: {text} on {}",
            String::from_utf8_lossy(&serde_json::to_vec(record).unwrap_or_default()),
        );
        decisions.push(decision);
    }
    for (texts, decisions) in patterns
        .chunks(MAX_FILTERS)
        .zip(decisions.chunks(MAX_FILTERS))
    {
        let set = FilterSet::parse(texts.iter().copied())
            .expect("patterns that parse alone parse together");
        assert_eq!(
            set.matches(record),
            decisions.contains(&true),
            "a set matches when one of its patterns does: {texts:?}"
        );
    }
}

/// A pattern that never matches `record` (its `eventSource` is another) and names every
/// top-level field of its view as a leaf, so that a set holding it views the whole record.
fn whole_view_pattern<R: EventRecord>(record: &R) -> String {
    let mut json = serde_json::to_value(record).expect("event records serialize");
    let mut fields = std::mem::take(json.as_object_mut().expect("records are objects"));
    if let Some(Value::Object(flattened)) = record.filter_flatten().and_then(|k| fields.remove(k)) {
        fields.extend(flattened);
    }
    let mut pattern: serde_json::Map<String, Value> = fields
        .keys()
        .map(|key| (key.clone(), serde_json::json!([{"exists": true}])))
        .collect();
    pattern.insert(
        "eventSource".into(),
        serde_json::json!(["not the record's eventSource"]),
    );
    Value::Object(pattern).to_string()
}

/// SQS bodies the pattern of `filter_pattern` is matched against.
const SAMPLE_BODIES: &[&str] = &[
    r#"{"type":"order","amount":12,"n":2,"items":[{"sku":"a"},{"sku":"b"}]}"#,
    r#"{"ip":"10.1.2.3","name":"Straße","v":"ping","a":{"b":"z"}}"#,
    "not {json",
    "text",
];

/// An SQS record with this body, with attributes of each kind.
fn sqs_record(body: &str) -> SqsRecord {
    SqsRecord {
        message_id: "m1".into(),
        receipt_handle: "handle-m1".into(),
        body: body.into(),
        attributes: BTreeMap::from(
            [
                ("ApproximateReceiveCount", "1"),
                ("SentTimestamp", "1700000000000"),
                ("MessageGroupId", "orders-7"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
        message_attributes: BTreeMap::from([(
            "channel".to_owned(),
            SqsMessageAttribute {
                string_value: Some("web".into()),
                binary_value: None,
                string_list_values: vec![],
                binary_list_values: vec![],
                data_type: "String".into(),
            },
        )]),
        md5_of_body: "0123456789abcdef0123456789abcdef".into(),
        md5_of_message_attributes: None,
        event_source: SQS_EVENT_SOURCE,
        event_source_arn: "arn:aws:sqs:us-east-1:000000000000:orders".into(),
        aws_region: "us-east-1".into(),
    }
}

fn kinesis_record(data: &[u8]) -> StreamEventRecord {
    StreamEventRecord {
        record: StreamRecord {
            sequence_number: "49600000000000000000000000000000000000000000000000000001".into(),
            approximate_arrival: Some("2023-11-14T22:13:20.984Z".parse().expect("a time")),
            payload: RecordPayload::Kinesis(KinesisRecord {
                partition_key: "customer-7".into(),
                data: data.to_vec(),
                encryption: KinesisEncryption::None,
            }),
        },
        origin: Arc::new(StreamOrigin::new(
            "arn:aws:kinesis:eu-west-1:000000000000:stream/orders",
            "shardId-000000000003",
            "esm:ns/mapping".into(),
        )),
    }
}

fn sample_image() -> Value {
    serde_json::json!({"pk": {"S": "a"}, "status": {"S": "paid"}, "v": {"N": "3"}})
}

fn dynamodb_record(new_image: Value) -> StreamEventRecord {
    StreamEventRecord {
        record: StreamRecord {
            sequence_number: "000000000000000000001".into(),
            approximate_arrival: Some("2023-11-14T22:13:20Z".parse().expect("a time")),
            payload: RecordPayload::DynamoDb(Box::new(DynamoDbRecord {
                event_id: "e-1".into(),
                event_name: DynamoDbEventName::Insert,
                event_version: Some("1.1".into()),
                keys: serde_json::json!({"pk": {"S": "a"}}),
                keys_text: r#"{"pk":{"S":"a"}}"#.into(),
                new_image: Some(new_image),
                old_image: None,
                size_bytes: Some(26),
                stream_view_type: Some("NEW_AND_OLD_IMAGES".into()),
                user_identity: None,
            })),
        },
        origin: Arc::new(StreamOrigin::new(
            "arn:aws:dynamodb:us-east-1:000000000000:table/T/stream/2026-11-23T00:50:01.985",
            "shardId-00000001795395270441-729d3502",
            "esm:ns/mapping".into(),
        )),
    }
}
