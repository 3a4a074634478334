//! The DynamoDB Streams source against DynamoDB Local with the real SDK clients.

mod support;

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client as DynamoDb;
use aws_sdk_dynamodb::types::AttributeValue;
use esm_operator::sources::dynamodb_streams::DynamoDbStream;
use esm_operator::sources::sharded::{
    DynamoDbRecord, RecordPayload, ShardPosition, ShardedStream, StreamError, StreamRecord,
};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use support::emulators::{Emulators, dynamodb_table, shared, unique_name};

struct TestTable {
    emulator: std::sync::Arc<Emulators>,
    dynamodb: DynamoDb,
    name: String,
    source: DynamoDbStream,
}

/// A table keyed by `pk` (string) and `sk` (number) with a NEW_AND_OLD_IMAGES stream.
async fn create_table() -> TestTable {
    let emulator = shared("dynamodb");
    let (dynamodb, name, stream_arn) = dynamodb_table(&emulator, true).await;
    TestTable {
        source: DynamoDbStream::new(&emulator.sdk_config("dynamodb"), stream_arn),
        emulator,
        dynamodb,
        name,
    }
}

impl TestTable {
    async fn put(&self, pk: &str, sk: u32, value: &str) {
        self.dynamodb
            .put_item()
            .table_name(&self.name)
            .item("pk", AttributeValue::S(pk.into()))
            .item("sk", AttributeValue::N(sk.to_string()))
            .item("value", AttributeValue::S(value.into()))
            .send()
            .await
            .expect("PutItem");
    }

    async fn delete(&self, pk: &str, sk: u32) {
        self.dynamodb
            .delete_item()
            .table_name(&self.name)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::N(sk.to_string()))
            .send()
            .await
            .expect("DeleteItem");
    }

    /// Records from `position` until a page comes back empty (an open shard never ends).
    async fn read(&self, shard_id: &str, position: ShardPosition) -> Vec<StreamRecord> {
        let mut iterator = self
            .source
            .shard_iterator(shard_id, &position)
            .await
            .expect("shard iterator");
        let mut records = Vec::new();
        loop {
            let page = self
                .source
                .get_records(&iterator, 2)
                .await
                .expect("GetRecords");
            assert_eq!(page.millis_behind_latest, None);
            if page.records.is_empty() {
                return records;
            }
            records.extend(page.records);
            iterator = page.next_iterator.expect("an open shard goes on");
        }
    }

    async fn only_shard(&self) -> String {
        let shards = self.source.list_shards().await.expect("DescribeStream");
        assert_eq!(shards.len(), 1, "{shards:?}");
        assert!(shards[0].open && shards[0].parent_shard_ids.is_empty());
        shards[0].shard_id.clone()
    }
}

fn change(record: &StreamRecord) -> &DynamoDbRecord {
    let RecordPayload::DynamoDb(change) = &record.payload else {
        panic!("not a DynamoDB record: {record:?}");
    };
    change
}

#[tokio::test]
async fn inserts_updates_and_deletes_arrive_in_order_per_key_with_images() {
    let table = create_table().await;
    let shard_id = table.only_shard().await;

    table.put("a", 1, "a1").await;
    table.put("b", 1, "b1").await;
    table.put("a", 1, "a2").await;
    table.delete("b", 1).await;
    table.put("a", 2, "other item").await;
    table.delete("a", 1).await;

    let records = table.read(&shard_id, ShardPosition::TrimHorizon).await;
    assert_eq!(records.len(), 6);
    let mut per_key: BTreeMap<&str, Vec<&DynamoDbRecord>> = BTreeMap::new();
    for record in &records {
        let change = change(record);
        assert_eq!(record.ordering_key(), change.keys.to_string());
        assert_eq!(
            change.stream_view_type.as_deref(),
            Some("NEW_AND_OLD_IMAGES")
        );
        assert!(change.size_bytes.is_some_and(|size| size > 0));
        assert!(!change.event_id.is_empty());
        assert!(record.approximate_arrival.is_some());
        per_key
            .entry(record.ordering_key())
            .or_default()
            .push(change);
    }
    let a1 = r#"{"pk":{"S":"a"},"sk":{"N":"1"}}"#;
    let b1 = r#"{"pk":{"S":"b"},"sk":{"N":"1"}}"#;
    let a2 = r#"{"pk":{"S":"a"},"sk":{"N":"2"}}"#;
    let names = |key: &str| -> Vec<&str> {
        per_key[key]
            .iter()
            .map(|change| change.event_name.as_str())
            .collect()
    };
    assert_eq!(names(a1), ["INSERT", "MODIFY", "REMOVE"]);
    assert_eq!(names(b1), ["INSERT", "REMOVE"]);
    assert_eq!(names(a2), ["INSERT"]);

    let item = |value: &str| json!({"pk": {"S": "a"}, "sk": {"N": "1"}, "value": {"S": value}});
    let [insert, modify, remove] = per_key[a1][..] else {
        unreachable!()
    };
    assert_eq!(
        (&insert.new_image, &insert.old_image),
        (&Some(item("a1")), &None)
    );
    assert_eq!(
        (&modify.new_image, &modify.old_image),
        (&Some(item("a2")), &Some(item("a1")))
    );
    assert_eq!(
        (&remove.new_image, &remove.old_image),
        (&None, &Some(item("a2")))
    );

    let sequence_numbers: Vec<_> = records.iter().map(|r| r.sequence_number.clone()).collect();
    let mut sorted = sequence_numbers.clone();
    sorted.sort_by_key(|sequence| (sequence.len(), sequence.clone()));
    assert_eq!(sequence_numbers, sorted, "the shard is in sequence order");

    // Resuming from a checkpoint, and the positions around it.
    let after = table
        .read(
            &shard_id,
            ShardPosition::AfterSequenceNumber(sequence_numbers[2].clone()),
        )
        .await;
    assert_eq!(after.len(), 3);
    assert_eq!(after[0].sequence_number, sequence_numbers[3]);
    let at = table
        .read(
            &shard_id,
            ShardPosition::AtSequenceNumber(sequence_numbers[2].clone()),
        )
        .await;
    assert_eq!(at.len(), 4);

    let latest = table
        .source
        .shard_iterator(&shard_id, &ShardPosition::Latest)
        .await
        .unwrap();
    table.put("c", 1, "c1").await;
    let page = table.source.get_records(&latest, 100).await.unwrap();
    let names: Vec<_> = page
        .records
        .iter()
        .map(|r| change(r).event_name.as_str())
        .collect();
    assert_eq!(names, ["INSERT"], "LATEST skips the earlier changes");
    assert_eq!(
        page.records[0].ordering_key(),
        r#"{"pk":{"S":"c"},"sk":{"N":"1"}}"#
    );
}

#[tokio::test]
async fn errors_are_classified() {
    let table = create_table().await;
    let shard_id = table.only_shard().await;

    let error = table
        .source
        .shard_iterator(
            &shard_id,
            &ShardPosition::AtTimestamp(Timestamp::UNIX_EPOCH),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StreamError::Other(message) if message.contains("AT_TIMESTAMP")),
        "{error:?}"
    );

    // The same form with another last digit.
    let last = if shard_id.ends_with('0') { '1' } else { '0' };
    let missing_shard = format!("{}{last}", &shard_id[..shard_id.len() - 1]);
    let error = table
        .source
        .shard_iterator(&missing_shard, &ShardPosition::TrimHorizon)
        .await
        .unwrap_err();
    assert!(matches!(error, StreamError::NotFound(_)), "{error:?}");

    let arn = table.source.stream_arn().await.unwrap();
    let missing_stream = DynamoDbStream::new(
        &table.emulator.sdk_config("dynamodb"),
        arn.replace(&table.name, &unique_name("missing")),
    );
    let error = missing_stream.list_shards().await.unwrap_err();
    assert!(matches!(error, StreamError::NotFound(_)), "{error:?}");

    let error = table
        .source
        .get_records("not-an-iterator", 10)
        .await
        .unwrap_err();
    assert!(matches!(error, StreamError::Other(_)), "{error:?}");
}
