//! Kinesis and DynamoDB Streams mappings end to end: real pollers (`run_mapping`, and the
//! `esm-operator poller` binary for failover) against kinesis-mock and DynamoDB Local with the
//! real SDK clients, shard leases in a real kube-apiserver, and an HTTP target. Error handling
//! (retries, bisection, record age, destinations) is in `stream_errors.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event as DynamoDbEvent, EventRecord as ChangeRecord};
use aws_lambda_events::event::kinesis::KinesisEvent;
use esm_operator::poller::checkpoint::SHARD_END;
use serde_json::json;
use support::control_plane::ControlPlane;
use support::emulators::{dynamodb_table, shared};
use support::records::{
    assert_complete_and_ordered, assert_duplicates_from_failed_calls, first_deliveries,
    keyed_records,
};
use support::streams::*;
use support::target::EventTarget;
use support::wait;

/// What a shard with `lanes` lanes of `batch`-record batches can finish between two checkpoint
/// writes (a second: 5 busy reads a second, a batch per lane each) plus the batches in flight
/// and read ahead, doubled for room: what it delivers again when it stops without writing its
/// last checkpoint.
fn between_checkpoints(batch: u64, lanes: u64) -> u64 {
    2 * (5 + 3) * batch * lanes
}

async fn kinesis_every_record_in_key_order(factor: u32) {
    let fixture = fixture(&format!("kinesis-p{factor}")).await;
    let stream = create_stream(4).await;
    let target = EventTarget::<KinesisEvent>::start(|_, _| (200, String::new())).await;
    let records = keyed_records(5000, 50, 0);
    let last = stream.put(&records).await;
    assert_eq!(last.len(), 4, "records reach every shard");
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 100,
                "parallelizationFactor": factor,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    fixture.wait_for_checkpoints("orders", &last).await;
    let got = delivered(&target);
    assert_complete_and_ordered(&got, &records);
    let duplicates_before_restart = assert_duplicates_from_failed_calls(
        &got,
        poller.redeliveries_allowed(between_checkpoints(100, factor.into())),
    );
    for call in target.calls() {
        let record = &call.event.records[0];
        assert_eq!(record.event_source.as_deref(), Some("aws:kinesis"));
        assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(
            record.invoke_identity_arn.as_deref(),
            Some(
                format!(
                    "esm.dev/namespaces/{}/eventsourcemappings/orders",
                    fixture.ns()
                )
                .as_str()
            )
        );
        let shard = record
            .event_id
            .as_deref()
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        assert!(last.contains_key(shard), "eventID names the shard: {shard}");
        assert!(call.event.records.len() <= 100);
    }
    assert!(poller.counter("esm_poller_records_invoked_total") >= 5000);
    poller.stop().await;

    // A restart resumes at the checkpoints: only new records are delivered.
    let poller = fixture.start("orders", "replica-b");
    let more = keyed_records(100, 50, 100);
    let last = stream.put(&more).await;
    let mut expected = fixture
        .leases("orders")
        .await
        .into_iter()
        .filter_map(|(shard, (_, checkpoint))| Some((shard, checkpoint?)))
        .collect::<BTreeMap<_, _>>();
    expected.extend(last);
    fixture.wait_for_checkpoints("orders", &expected).await;
    // Every shard's checkpoint covered what the first replica delivered: the second starts after
    // it and repeats only what its own failed calls carried.
    let got = delivered(&target);
    let mut all = records.clone();
    all.extend(more);
    assert_complete_and_ordered(&got, &all);
    assert_duplicates_from_failed_calls(
        &got,
        duplicates_before_restart as u64
            + poller.redeliveries_allowed(between_checkpoints(100, factor.into())),
    );
    poller.stop().await;
}

#[tokio::test]
async fn kinesis_delivers_every_record_in_key_order() {
    kinesis_every_record_in_key_order(1).await;
}

#[tokio::test]
async fn kinesis_lanes_keep_key_order() {
    kinesis_every_record_in_key_order(4).await;
}

#[tokio::test]
async fn kinesis_starting_positions_apply_where_no_checkpoint_exists() {
    let fixture = fixture("kinesis-start").await;
    let stream = create_stream(1).await;
    let early: Vec<(String, String)> = (0..5).map(|i| ("k".into(), format!("k/{i}"))).collect();
    stream.put(&early).await;
    // startingPositionTimestamp is a Kubernetes Time, in whole seconds: put the two groups in
    // different seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late: Vec<(String, String)> = (5..10).map(|i| ("k".into(), format!("k/{i}"))).collect();
    stream.put(&late).await;
    let sdk = stream._emulator.sdk_config("kinesis");
    let reader = esm_operator::sources::kinesis::KinesisStream::new(
        &sdk,
        esm_operator::sources::kinesis::KinesisStreamId::Name(stream.name.clone()),
    );
    use esm_operator::sources::sharded::{ShardPosition, ShardedStream};
    let shard = reader.list_shards().await.unwrap()[0].shard_id.clone();
    let iterator = reader
        .shard_iterator(&shard, &ShardPosition::TrimHorizon)
        .await
        .unwrap();
    let page = reader.get_records(&iterator, 100).await.unwrap();
    assert_eq!(page.records.len(), 10);
    let at = page.records[5]
        .approximate_arrival
        .unwrap()
        .round(
            k8s_openapi::jiff::TimestampRound::new()
                .smallest(k8s_openapi::jiff::Unit::Second)
                .mode(k8s_openapi::jiff::RoundMode::Trunc),
        )
        .unwrap();
    assert!(at > page.records[4].approximate_arrival.unwrap());
    let from_at = reader
        .shard_iterator(&shard, &ShardPosition::AtTimestamp(at))
        .await
        .unwrap();
    let page = reader.get_records(&from_at, 100).await.unwrap();
    assert_eq!(
        page.records.len(),
        5,
        "kinesis-mock reads AT_TIMESTAMP {at}"
    );

    let mut targets = BTreeMap::new();
    for (name, position) in [
        ("latest", "LATEST"),
        ("trim", "TRIM_HORIZON"),
        ("at", "AT_TIMESTAMP"),
    ] {
        let target = EventTarget::<KinesisEvent>::start(|_, _| (200, String::new())).await;
        let mut spec = json!({
            "source": stream.source(),
            "target": {"url": target.url},
            "startingPosition": position,
        });
        if position == "AT_TIMESTAMP" {
            spec["startingPositionTimestamp"] = json!(at.to_string());
        }
        fixture.mapping(name, spec).await;
        targets.insert(name, (target, fixture.start(name, "replica")));
    }
    // LATEST starts wherever the stream is when the shard is first read: add records until
    // one arrives.
    let mut added: Vec<(String, String)> = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while delivered(&targets["latest"].0).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "LATEST never read a record"
        );
        let next = ("k".to_string(), format!("k/{}", 10 + added.len()));
        stream.put(std::slice::from_ref(&next)).await;
        added.push(next);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let all: Vec<String> = early
        .iter()
        .chain(&late)
        .chain(&added)
        .map(|(_, d)| d.clone())
        .collect();
    // Everything put is read by TRIM_HORIZON; AT_TIMESTAMP from the first late record.
    let last_put = added.last().unwrap().1.clone();
    for name in ["trim", "at", "latest"] {
        let (target, _) = &targets[name];
        wait::until(&format!("{name} to read the last record"), WAIT, || async {
            delivered(target).contains(&last_put).then_some(())
        })
        .await;
    }
    assert_eq!(first_deliveries(&delivered(&targets["trim"].0)), all);
    assert_eq!(first_deliveries(&delivered(&targets["at"].0)), all[5..]);
    let latest = delivered(&targets["latest"].0);
    assert!(
        latest
            .iter()
            .all(|data| added.iter().any(|(_, d)| d == data)),
        "LATEST read an old record: {latest:?}"
    );
    for (_, (_, poller)) in targets {
        poller.stop().await;
    }
}

/// Kills the poller process when dropped (a failed test leaves nothing running).
struct KillOnDrop(Arc<std::sync::Mutex<Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self.0.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `esm-operator poller` for mapping `name` as replica `holder`.
fn spawn_poller_process(fixture: &Fixture, name: &str, holder: &str) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_esm-operator"))
        .args(["poller", "--namespace", fixture.ns(), "--mapping", name])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &ControlPlane::shared().kubeconfig)
        .env("POD_NAME", holder)
        .env(
            "ESM_LEASE_DURATION_SECONDS",
            LEASE_DURATION.as_secs().to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start esm-operator poller");
    KillOnDrop(Arc::new(std::sync::Mutex::new(child)))
}

#[tokio::test]
async fn kinesis_failover_after_sigkill_resumes_from_checkpoints() {
    let fixture = fixture("kinesis-failover").await;
    let stream = create_stream(4).await;
    let records = keyed_records(4000, 40, 0);
    let (last, shard_of_key) = stream.put_tracked(&records).await;
    let victim: Arc<std::sync::Mutex<Option<KillOnDrop>>> = Arc::default();
    let killer = victim.clone();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trigger = armed.clone();
    // The process is killed (SIGKILL) while the target answers a call, from the 60th on, once
    // the process holds shards.
    let target = EventTarget::<KinesisEvent>::start(move |call, _| {
        if call >= 60
            && trigger.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(process) = killer.lock().unwrap().take()
        {
            drop(process);
        }
        (200, String::new())
    })
    .await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 10,
            }),
        )
        .await;
    let survivor = fixture.start("orders", "poller-b");
    *victim.lock().unwrap() = Some(spawn_poller_process(&fixture, "orders", "poller-a"));
    wait::until("the poller process holding shards", WAIT, || async {
        let leases = fixture.leases("orders").await;
        leases
            .values()
            .any(|(holder, _)| holder.as_deref() == Some("poller-a"))
            .then_some(())
    })
    .await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    wait::until("the kill", WAIT, || async {
        victim.lock().unwrap().is_none().then_some(())
    })
    .await;
    let held_by_victim: BTreeSet<String> = fixture
        .leases("orders")
        .await
        .into_iter()
        .filter(|(_, (holder, _))| holder.as_deref() == Some("poller-a"))
        .map(|(shard, _)| shard)
        .collect();
    assert!(
        !held_by_victim.is_empty(),
        "the killed poller held shards: nothing failed over otherwise"
    );
    fixture.wait_for_checkpoints("orders", &last).await;
    let leases = fixture.leases("orders").await;
    assert!(
        leases
            .values()
            .all(|(holder, _)| holder.as_deref() == Some("poller-b")),
        "the survivor holds every shard: {leases:?}"
    );
    assert_eq!(survivor.gauge("esm_poller_owned_shards"), 4);
    let got = delivered(&target);
    assert_complete_and_ordered(&got, &records);
    let mut seen = BTreeSet::new();
    let duplicates: Vec<&String> = got
        .iter()
        .filter(|data| !seen.insert(data.as_str()))
        .collect();
    eprintln!(
        "failover: {} deliveries, {} duplicates; the killed poller held {held_by_victim:?}",
        got.len(),
        duplicates.len()
    );
    for data in &duplicates {
        let key = data.split_once('/').unwrap().0;
        assert!(
            held_by_victim.contains(&shard_of_key[key]),
            "{data} was delivered twice but its shard was not the killed poller's"
        );
    }
    // Per shard of the killed poller: what it finished since its last checkpoint write (at
    // most a second: 5 reads of 2 batches of 10), plus the batches in flight and read ahead.
    assert!(
        duplicates.len() <= held_by_victim.len() * (5 * 2 * 10 + 3 * 10),
        "{} duplicates for {} shards",
        duplicates.len(),
        held_by_victim.len()
    );
    survivor.stop().await;
}

#[tokio::test]
async fn kinesis_split_and_merge_keep_key_order_and_lose_nothing() {
    let fixture = fixture("kinesis-reshard").await;
    let stream = create_stream(2).await;
    let target = EventTarget::<KinesisEvent>::start(|_, _| (200, String::new())).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 25,
                "parallelizationFactor": 2,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    let mut all = keyed_records(300, 20, 0);
    stream.put(&all).await;
    let parent = stream.shards().await[0].shard_id.clone();
    stream.split(&parent).await;
    let phase = keyed_records(300, 20, 15);
    stream.put(&phase).await;
    all.extend(phase);
    let children: Vec<String> = stream
        .shards()
        .await
        .into_iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some(parent.as_str()))
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(children.len(), 2);
    stream.merge(&children[0], &children[1]).await;
    let phase = keyed_records(300, 20, 30);
    let last = stream.put(&phase).await;
    all.extend(phase);
    let mut expected: BTreeMap<String, String> = last;
    for closed in [&parent, &children[0], &children[1]] {
        expected.insert(closed.clone(), SHARD_END.into());
    }
    fixture.wait_for_checkpoints("orders", &expected).await;
    let got = delivered(&target);
    assert_complete_and_ordered(&got, &all);
    assert_duplicates_from_failed_calls(
        &got,
        poller.redeliveries_allowed(between_checkpoints(25, 2)),
    );
    poller.stop().await;
}

// ------------------------------------------------------------------------ DynamoDB Streams ---

/// A change as the target saw it: eventName, `v` of NewImage, `v` of OldImage.
type Change = (String, Option<String>, Option<String>);

/// Attribute `v` (a number) of an image in DynamoDB JSON; `None` when the image is empty.
fn image_value(image: &impl serde::Serialize) -> Option<String> {
    let image = serde_json::to_value(image).unwrap();
    image["v"]["N"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn dynamodb_changes_arrive_in_order_per_key_with_images_and_survive_a_restart() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let fixture = fixture("dynamodb").await;
    let emulator = shared("dynamodb");
    let (dynamodb, table, stream_arn) = dynamodb_table(&emulator, false).await;
    let target = EventTarget::<DynamoDbEvent>::start(|_, _| (200, String::new())).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": dynamodb_source(&emulator, &stream_arn),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 7,
                "parallelizationFactor": 3,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    let put = |key: String, value: &'static str| {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(key))
            .item("v", AttributeValue::N(value.into()))
            .send()
    };
    for round in ["1", "2"] {
        for key in 0..10 {
            put(format!("item-{key}"), round).await.expect("PutItem");
        }
    }
    for key in 0..10 {
        dynamodb
            .delete_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(format!("item-{key}")))
            .send()
            .await
            .expect("DeleteItem");
    }
    let changes = |target: &EventTarget<DynamoDbEvent>| -> Vec<ChangeRecord> {
        target
            .calls()
            .into_iter()
            .flat_map(|call| call.event.records)
            .collect()
    };
    let sequences = |records: &[ChangeRecord]| -> Vec<String> {
        records
            .iter()
            .map(|r| r.change.sequence_number.clone().unwrap())
            .collect()
    };
    // Sequence numbers are decimal strings of growing length.
    let last_of = |sequences: Vec<String>| {
        sequences
            .into_iter()
            .max_by_key(|s| (s.len(), s.clone()))
            .unwrap()
    };
    // At least once: a change may come again after a failed call; each is checked once, at its
    // first delivery.
    let first_deliveries = |records: Vec<ChangeRecord>| {
        let mut seen = BTreeSet::new();
        records
            .into_iter()
            .filter(|r| seen.insert(r.change.sequence_number.clone()))
            .collect::<Vec<_>>()
    };
    wait::until("30 changes", WAIT, || async {
        (first_deliveries(changes(&target)).len() >= 30).then_some(())
    })
    .await;
    let all = changes(&target);
    let duplicates_before_restart = assert_duplicates_from_failed_calls(
        &sequences(&all),
        poller.redeliveries_allowed(between_checkpoints(7, 3)),
    );
    let records = first_deliveries(all);
    assert_eq!(records.len(), 30, "30 changes were made");
    let mut per_item: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for record in &records {
        assert_eq!(record.event_source.as_deref(), Some("aws:dynamodb"));
        assert_eq!(
            record.event_source_arn.as_deref(),
            Some(stream_arn.as_str())
        );
        let key = serde_json::to_value(&record.change.keys).unwrap()["pk"]["S"]
            .as_str()
            .unwrap()
            .to_owned();
        per_item.entry(key).or_default().push((
            record.event_name.clone(),
            image_value(&record.change.new_image),
            image_value(&record.change.old_image),
        ));
    }
    assert_eq!(per_item.len(), 10);
    for (key, changes) in &per_item {
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(
            changes,
            &[
                ("INSERT".to_owned(), some("1"), None),
                ("MODIFY".to_owned(), some("2"), some("1")),
                ("REMOVE".to_owned(), None, some("2")),
            ],
            "changes of {key}"
        );
    }
    let last_sequence = last_of(sequences(&records));
    let shard = fixture.leases("orders").await.into_keys().next().unwrap();
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard.clone(), last_sequence)]))
        .await;
    poller.stop().await;

    // A restart resumes after the checkpoint (the last record of the shard).
    let poller = fixture.start("orders", "replica-b");
    put("item-new".into(), "3").await.expect("PutItem");
    wait::until("the new change", WAIT, || async {
        (first_deliveries(changes(&target)).len() >= 31).then_some(())
    })
    .await;
    // Give a re-read of old records every chance to show up before checking.
    let last = last_of(sequences(&changes(&target)));
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard, last)]))
        .await;
    // The checkpoint covered every change the first replica delivered: the second repeats
    // only what its own failed calls carried.
    let all = changes(&target);
    assert_duplicates_from_failed_calls(
        &sequences(&all),
        duplicates_before_restart as u64 + poller.redeliveries_allowed(between_checkpoints(7, 3)),
    );
    let records = first_deliveries(all);
    assert_eq!(records.len(), 31, "one change was added");
    assert_eq!(records[30].event_name, "INSERT");
    poller.stop().await;
}
