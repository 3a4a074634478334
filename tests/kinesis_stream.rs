//! The Kinesis source against kinesis-mock with the real SDK client.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use esm_operator::sources::kinesis::{KinesisStream, KinesisStreamId};
use esm_operator::sources::sharded::{
    RecordPayload, Shard, ShardPosition, ShardedStream, StreamError, StreamRecord,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use support::emulators::{Emulators, kinesis_stream, kinesis_stream_active, shared, unique_name};

struct TestStream {
    // Keeps the emulator running while the test uses it.
    _emulator: std::sync::Arc<Emulators>,
    admin: Client,
    name: String,
    source: KinesisStream,
}

async fn create_stream(shards: i32) -> TestStream {
    let emulator = shared("kinesis");
    let (admin, name) = kinesis_stream(&emulator, shards).await;
    TestStream {
        source: KinesisStream::new(
            &emulator.sdk_config("kinesis"),
            KinesisStreamId::Name(name.clone()),
        ),
        _emulator: emulator,
        admin,
        name,
    }
}

impl TestStream {
    /// Puts `data` under `key`; returns the shard and sequence number.
    async fn put(&self, key: &str, data: &str) -> (String, String) {
        let put = self
            .admin
            .put_record()
            .stream_name(&self.name)
            .partition_key(key)
            .data(Blob::new(data.as_bytes()))
            .send()
            .await
            .expect("PutRecord");
        (put.shard_id, put.sequence_number)
    }

    /// Every record from `position` until the shard is caught up or ends.
    async fn read(&self, shard_id: &str, position: ShardPosition) -> Vec<StreamRecord> {
        let mut iterator = Some(
            self.source
                .shard_iterator(shard_id, &position)
                .await
                .expect("shard iterator"),
        );
        let mut records = Vec::new();
        while let Some(current) = iterator {
            let page = self
                .source
                .get_records(&current, 2)
                .await
                .expect("GetRecords");
            assert!(
                page.millis_behind_latest.is_some(),
                "Kinesis reports MillisBehindLatest"
            );
            let caught_up = page.records.is_empty();
            records.extend(page.records);
            iterator = page.next_iterator;
            if caught_up {
                break;
            }
        }
        records
    }

    async fn shards(&self) -> BTreeMap<String, Shard> {
        let shards = self.source.list_shards().await.expect("ListShards");
        shards
            .into_iter()
            .map(|shard| (shard.shard_id.clone(), shard))
            .collect()
    }
}

fn data(record: &StreamRecord) -> String {
    let RecordPayload::Kinesis(kinesis) = &record.payload else {
        panic!("not a Kinesis record: {record:?}");
    };
    String::from_utf8(kinesis.data.clone()).unwrap()
}

#[tokio::test]
async fn four_shards_are_listed_and_read_from_every_starting_position() {
    let stream = create_stream(4).await;
    let shards = stream.shards().await;
    assert_eq!(shards.len(), 4);
    assert!(
        shards
            .values()
            .all(|shard| shard.open && shard.parent_shard_ids.is_empty())
    );
    let arn = stream.source.stream_arn().await.unwrap();
    assert!(
        arn.starts_with("arn:aws:kinesis:us-east-1:")
            && arn.ends_with(&format!(":stream/{}", stream.name)),
        "{arn}"
    );

    // Records of 40 keys spread over the shards; each key stays on one shard, in order.
    let mut written: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for round in 0..3 {
        for key in 0..40 {
            let key = format!("key-{key}");
            let (shard, sequence) = stream.put(&key, &format!("{key}/{round}")).await;
            written
                .entry(shard)
                .or_default()
                .push((sequence, format!("{key}/{round}")));
        }
    }
    assert_eq!(written.len(), 4, "40 keys reach every shard");
    for (shard_id, expected) in &written {
        let records = stream.read(shard_id, ShardPosition::TrimHorizon).await;
        let read: Vec<_> = records
            .iter()
            .map(|record| (record.sequence_number.clone(), data(record)))
            .collect();
        assert_eq!(&read, expected, "shard {shard_id} from TRIM_HORIZON");
        for record in &records {
            assert!(data(record).starts_with(&format!("{}/", record.ordering_key())));
            assert!(record.approximate_arrival.is_some());
        }

        let (first_sequence, _) = &expected[0];
        let at = stream
            .read(
                shard_id,
                ShardPosition::AtSequenceNumber(first_sequence.clone()),
            )
            .await;
        assert_eq!(
            at.len(),
            expected.len(),
            "AT_SEQUENCE_NUMBER includes the record"
        );
        let after = stream
            .read(
                shard_id,
                ShardPosition::AfterSequenceNumber(first_sequence.clone()),
            )
            .await;
        assert_eq!(
            after.len(),
            expected.len() - 1,
            "AFTER_SEQUENCE_NUMBER skips it"
        );
        assert_eq!(after[0].sequence_number, expected[1].0);
    }

    // LATEST skips what is there; AT_TIMESTAMP starts at the first record at or after the time.
    let (shard_id, _) = stream.put("late", "before").await;
    let before = stream.read(&shard_id, ShardPosition::TrimHorizon).await;
    let last_arrival = before
        .iter()
        .filter_map(|r| r.approximate_arrival)
        .max()
        .unwrap();
    let latest = stream
        .source
        .shard_iterator(&shard_id, &ShardPosition::Latest)
        .await
        .unwrap();
    // Arrival times must differ from the earlier records' for AT_TIMESTAMP to tell them apart.
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.put("late", "after-1").await;
    stream.put("late", "after-2").await;
    let page = stream.source.get_records(&latest, 100).await.unwrap();
    let from_latest: Vec<_> = page.records.iter().map(data).collect();
    assert_eq!(from_latest, ["after-1", "after-2"]);
    let from_time = stream
        .read(
            &shard_id,
            ShardPosition::AtTimestamp(last_arrival + SignedDuration::from_millis(1)),
        )
        .await;
    let from_time: Vec<_> = from_time.iter().map(data).collect();
    assert_eq!(from_time, ["after-1", "after-2"]);
    let from_epoch = stream
        .read(&shard_id, ShardPosition::AtTimestamp(Timestamp::UNIX_EPOCH))
        .await;
    assert_eq!(from_epoch.len(), before.len() + 2);
}

#[tokio::test]
async fn split_and_merge_close_parents_and_name_them_in_children() {
    let stream = create_stream(2).await;
    let (parent, _) = stream.put("k", "before-split").await;
    let hash_range = stream
        .admin
        .list_shards()
        .stream_name(&stream.name)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap()
        .into_iter()
        .find(|shard| shard.shard_id == parent)
        .unwrap()
        .hash_key_range
        .unwrap();
    let start: u128 = hash_range.starting_hash_key.parse().unwrap();
    let end: u128 = hash_range.ending_hash_key.parse().unwrap();
    stream
        .admin
        .split_shard()
        .stream_name(&stream.name)
        .shard_to_split(&parent)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    kinesis_stream_active(&stream.admin, &stream.name).await;

    let shards = stream.shards().await;
    assert!(!shards[&parent].open, "the split parent is closed");
    let children: Vec<_> = shards
        .values()
        .filter(|shard| shard.parent_shard_ids == [parent.clone()])
        .collect();
    assert_eq!(children.len(), 2, "{shards:?}");
    assert!(children.iter().all(|child| child.open));

    // The closed parent is read to its end: the iterator runs out.
    let mut iterator = stream
        .source
        .shard_iterator(&parent, &ShardPosition::TrimHorizon)
        .await
        .unwrap();
    let mut drained = Vec::new();
    loop {
        let page = stream.source.get_records(&iterator, 100).await.unwrap();
        drained.extend(page.records.iter().map(data));
        match page.next_iterator {
            Some(next) => iterator = next,
            None => break,
        }
    }
    assert_eq!(drained, ["before-split"]);

    let (first, second) = (children[0].shard_id.clone(), children[1].shard_id.clone());
    stream
        .admin
        .merge_shards()
        .stream_name(&stream.name)
        .shard_to_merge(&first)
        .adjacent_shard_to_merge(&second)
        .send()
        .await
        .expect("MergeShards");
    kinesis_stream_active(&stream.admin, &stream.name).await;
    let shards = stream.shards().await;
    assert!(!shards[&first].open && !shards[&second].open);
    let merged: Vec<_> = shards
        .values()
        .filter(|shard| shard.parent_shard_ids.contains(&first))
        .collect();
    assert_eq!(merged.len(), 1, "{shards:?}");
    let mut parents = merged[0].parent_shard_ids.clone();
    parents.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(parents, expected);
    assert!(merged[0].open);
}

#[tokio::test]
async fn errors_are_classified() {
    let stream = create_stream(1).await;
    let missing_shard = stream
        .source
        .shard_iterator("shardId-000000000099", &ShardPosition::TrimHorizon)
        .await
        .unwrap_err();
    assert!(
        matches!(missing_shard, StreamError::NotFound(_)),
        "{missing_shard:?}"
    );

    let sdk = stream._emulator.sdk_config("kinesis");
    let missing_stream = KinesisStream::new(&sdk, KinesisStreamId::Name(unique_name("missing")));
    let error = missing_stream.list_shards().await.unwrap_err();
    assert!(matches!(error, StreamError::NotFound(_)), "{error:?}");
    let error = missing_stream.stream_arn().await.unwrap_err();
    assert!(matches!(error, StreamError::NotFound(_)), "{error:?}");

    // AWS answers InvalidArgumentException, kinesis-mock HTTP 500: either way not a class the
    // engine could act on.
    let error = stream
        .source
        .get_records("not-an-iterator", 10)
        .await
        .unwrap_err();
    assert!(matches!(error, StreamError::Other(_)), "{error:?}");
}
