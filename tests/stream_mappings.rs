//! Kinesis and DynamoDB Streams mappings end to end: real pollers (`run_mapping`, and the
//! `esm-operator poller` binary for failover) against kinesis-mock and DynamoDB Local with the
//! real SDK clients, shard leases in a real kube-apiserver, and an HTTP target.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_kinesis::Client as Kinesis;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use esm_operator::api::{EventSourceMapping, SourceKind};
use esm_operator::poller::checkpoint::{CHECKPOINT_ANNOTATION, SHARD_END, SHARD_ID_ANNOTATION};
use esm_operator::poller::metrics::PollerMetrics;
use esm_operator::poller::{PollerContext, PollerHandle, run_mapping};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use prometheus::Registry;
use serde_json::{Value, json};
use support::control_plane::{ControlPlane, TestNamespace};
use support::emulators::{
    Emulators, dynamodb_table, kinesis_stream, kinesis_stream_active, shared, unique_name,
};
use support::target::EventTarget;
use support::wait;
use tokio::sync::watch;

/// Short leases, so that a dead poller's shards move on quickly.
const LEASE_DURATION: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(180);

/// A namespace with the AWS test credentials in Secret `aws`.
struct Fixture {
    client: Client,
    namespace: TestNamespace,
}

async fn fixture(prefix: &str) -> Fixture {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let namespace = plane.namespace(&client, prefix).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws"},
        "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &namespace.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret");
    Fixture { client, namespace }
}

/// A running `run_mapping`.
struct Poller {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    registry: Registry,
}

impl Fixture {
    fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Creates mapping `name` with `spec` (source connection filled in by the caller).
    async fn mapping(&self, name: &str, spec: Value) -> EventSourceMapping {
        let mapping: EventSourceMapping = serde_json::from_value(json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name, "namespace": self.ns()},
            "spec": spec,
        }))
        .expect("a valid mapping");
        Api::<EventSourceMapping>::namespaced(self.client.clone(), self.ns())
            .create(&PostParams::default(), &mapping)
            .await
            .expect("create the mapping")
    }

    /// Runs the pollers of mapping `name` in this process as replica `holder`.
    fn start(&self, name: &str, holder: &str) -> Poller {
        let registry = Registry::new();
        let context = PollerContext {
            client: self.client.clone(),
            metrics: PollerMetrics::new(&registry).unwrap(),
            holder: holder.into(),
            lease_duration: LEASE_DURATION,
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_mapping(
            context,
            self.ns().into(),
            name.into(),
            PollerHandle::default(),
            stopped,
        ));
        Poller {
            stop,
            task,
            registry,
        }
    }

    /// Shard id -> (holder, checkpoint) of mapping `name`'s shard leases.
    async fn leases(&self, name: &str) -> BTreeMap<String, (Option<String>, Option<String>)> {
        let selector = format!("esm.dev/mapping={name},esm.dev/lease=shard");
        Api::<Lease>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|lease| {
                let annotations = lease.annotations();
                (
                    annotations[SHARD_ID_ANNOTATION].clone(),
                    (
                        lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
                        annotations.get(CHECKPOINT_ANNOTATION).cloned(),
                    ),
                )
            })
            .collect()
    }

    /// Waits until mapping `name`'s checkpoints are `expected` (shard id -> checkpoint).
    async fn wait_for_checkpoints(&self, name: &str, expected: &BTreeMap<String, String>) {
        wait::until("the checkpoints", WAIT, || async {
            let checkpoints: BTreeMap<String, String> = self
                .leases(name)
                .await
                .into_iter()
                .filter_map(|(shard, (_, checkpoint))| Some((shard, checkpoint?)))
                .filter(|(shard, _)| expected.contains_key(shard))
                .collect();
            (&checkpoints == expected).then_some(())
        })
        .await;
    }
}

impl Poller {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the poller stops")
            .unwrap();
    }

    /// A gauge of this poller's registry, summed over labels.
    fn gauge(&self, name: &str) -> i64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_gauge().get_value() as i64)
            .sum()
    }

    /// A counter of this poller's registry, summed over labels.
    fn counter(&self, name: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }
}

// ------------------------------------------------------------------------------- Kinesis ---

struct TestStream {
    _emulator: Arc<Emulators>,
    admin: Kinesis,
    name: String,
    endpoint: String,
}

async fn create_stream(shards: i32) -> TestStream {
    let emulator = shared("kinesis");
    let (admin, name) = kinesis_stream(&emulator, shards).await;
    TestStream {
        endpoint: emulator.endpoint("kinesis").to_owned(),
        _emulator: emulator,
        admin,
        name,
    }
}

impl TestStream {
    /// The mapping source for this stream.
    fn source(&self) -> Value {
        json!({"kinesis": {
            "streamName": self.name,
            "region": "us-east-1",
            "endpointUrl": self.endpoint,
            "credentialsSecretRef": {"name": "aws"},
        }})
    }

    /// Puts `(key, data)` records, 500 per PutRecords; returns shard id -> last sequence.
    async fn put(&self, records: &[(String, String)]) -> BTreeMap<String, String> {
        self.put_tracked(records).await.0
    }

    /// Like [`TestStream::put`], also returning each key's shard.
    async fn put_tracked(
        &self,
        records: &[(String, String)],
    ) -> (BTreeMap<String, String>, HashMap<String, String>) {
        let mut shard_of_key = HashMap::new();
        // Sequence numbers are decimal strings longer than any integer type: compare by length,
        // then text.
        let mut last: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for chunk in records.chunks(500) {
            let entries = chunk
                .iter()
                .map(|(key, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data.as_bytes()))
                        .build()
                        .unwrap()
                })
                .collect();
            let output = self
                .admin
                .put_records()
                .stream_name(&self.name)
                .set_records(Some(entries))
                .send()
                .await
                .expect("PutRecords");
            assert_eq!(output.failed_record_count, Some(0));
            for (entry, (key, _)) in output.records.into_iter().zip(chunk) {
                let (shard, sequence) = (entry.shard_id.unwrap(), entry.sequence_number.unwrap());
                shard_of_key.insert(key.clone(), shard.clone());
                let slot = last.entry(shard).or_insert((0, String::new()));
                if (sequence.len(), &sequence) > (slot.0, &slot.1) {
                    *slot = (sequence.len(), sequence);
                }
            }
        }
        let last = last
            .into_iter()
            .map(|(shard, (_, seq))| (shard, seq))
            .collect();
        (last, shard_of_key)
    }

    async fn shards(&self) -> Vec<aws_sdk_kinesis::types::Shard> {
        self.admin
            .list_shards()
            .stream_name(&self.name)
            .send()
            .await
            .expect("ListShards")
            .shards
            .unwrap_or_default()
    }

    /// Splits `shard` in the middle of its hash key range.
    async fn split(&self, shard: &str) {
        let range = self
            .shards()
            .await
            .into_iter()
            .find(|s| s.shard_id == shard)
            .unwrap()
            .hash_key_range
            .unwrap();
        let start: u128 = range.starting_hash_key.parse().unwrap();
        let end: u128 = range.ending_hash_key.parse().unwrap();
        self.admin
            .split_shard()
            .stream_name(&self.name)
            .shard_to_split(shard)
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await
            .expect("SplitShard");
        kinesis_stream_active(&self.admin, &self.name).await;
    }

    async fn merge(&self, first: &str, second: &str) {
        self.admin
            .merge_shards()
            .stream_name(&self.name)
            .shard_to_merge(first)
            .adjacent_shard_to_merge(second)
            .send()
            .await
            .expect("MergeShards");
        kinesis_stream_active(&self.admin, &self.name).await;
    }
}

/// `count` records over `keys` keys: key `k{n}`, data `k{n}/{i}` with `i` counting from
/// `first` per key.
fn keyed_records(count: usize, keys: usize, first: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let key = format!("k{}", i % keys);
            let data = format!("{key}/{}", first + i / keys);
            (key, data)
        })
        .collect()
}

fn kinesis_data(event: &KinesisEvent) -> Vec<String> {
    event
        .records
        .iter()
        .map(|record| String::from_utf8(record.kinesis.data.0.clone()).unwrap())
        .collect()
}

fn delivered(target: &EventTarget<KinesisEvent>) -> Vec<String> {
    target
        .calls()
        .iter()
        .flat_map(|call| kinesis_data(&call.event))
        .collect()
}

/// Per key, the record numbers in delivery order.
fn per_key(delivered: &[String]) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for data in delivered {
        let (key, n) = data.split_once('/').unwrap();
        keys.entry(key.into()).or_default().push(n.parse().unwrap());
    }
    keys
}

/// Every record arrived, and every key's records first arrived in order (a redelivered batch
/// may repeat records already delivered).
fn assert_complete_and_ordered(delivered: &[String], expected: &[(String, String)]) {
    let got: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(|(_, data)| data.as_str())
        .filter(|data| !got.contains(data))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (key, numbers) in per_key(delivered) {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let deduped: Vec<usize> = numbers.iter().copied().fold(Vec::new(), |mut acc, n| {
            if acc.last().is_none_or(|last| n > *last) {
                acc.push(n);
            }
            acc
        });
        assert_eq!(deduped, sorted, "key {key} out of order: {numbers:?}");
    }
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
    assert_eq!(got.len(), 5000, "each record once");
    assert_complete_and_ordered(&got, &records);
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
    assert_eq!(poller.counter("esm_poller_records_invoked_total"), 5000);
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
    let got = delivered(&target);
    assert_eq!(got.len(), 5100, "nothing delivered twice after the restart");
    let mut all = records.clone();
    all.extend(more);
    assert_complete_and_ordered(&got, &all);
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
    assert_eq!(delivered(&targets["trim"].0), all);
    assert_eq!(delivered(&targets["at"].0), all[5..]);
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
    assert_eq!(got.len(), 900, "each record once");
    assert_complete_and_ordered(&got, &all);
    poller.stop().await;
}

/// A stream with one shard and 60 records over 4 keys; record 25 is `poison`. Returns the
/// stream, the records and their sequence numbers.
async fn poisoned_stream() -> (TestStream, Vec<(String, String)>, Vec<String>) {
    let stream = create_stream(1).await;
    let mut records = keyed_records(60, 4, 0);
    records[25].1 = format!("{}/poison", records[25].0);
    let mut sequences = Vec::new();
    for chunk in records.chunks(1) {
        let put = stream
            .admin
            .put_record()
            .stream_name(&stream.name)
            .partition_key(&chunk[0].0)
            .data(Blob::new(chunk[0].1.as_bytes()))
            .send()
            .await
            .unwrap();
        sequences.push(put.sequence_number);
    }
    (stream, records, sequences)
}

fn poisoned(event: &KinesisEvent) -> bool {
    kinesis_data(event)
        .iter()
        .any(|data| data.ends_with("/poison"))
}

fn fail_poison(_: usize, event: &KinesisEvent) -> (u16, String) {
    if poisoned(event) {
        (500, "cannot digest this".into())
    } else {
        (200, String::new())
    }
}

#[tokio::test]
async fn kinesis_poison_record_alone_goes_to_an_sqs_destination() {
    let fixture = fixture("kinesis-poison").await;
    let (stream, records, sequences) = poisoned_stream().await;
    let sqs_emulator = shared("fauxqs");
    let sqs = aws_sdk_sqs::Client::new(&sqs_emulator.sdk_config("fauxqs"));
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("failures"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 10,
                "maximumRetryAttempts": 2,
                "bisectBatchOnTargetError": true,
                "destinationConfig": {"onFailure": {"sqs": {
                    "queueUrl": queue_url,
                    "region": "us-east-1",
                    "endpointUrl": sqs_emulator.endpoint("fauxqs"),
                    "credentialsSecretRef": {"name": "aws"},
                }}},
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints(
            "orders",
            &BTreeMap::from([(shard.clone(), sequences[59].clone())]),
        )
        .await;
    let accepted: Vec<String> = target
        .calls()
        .iter()
        .filter(|call| !poisoned(&call.event))
        .flat_map(|call| kinesis_data(&call.event))
        .collect();
    let expected: Vec<(String, String)> = records
        .iter()
        .filter(|(_, d)| !d.ends_with("poison"))
        .cloned()
        .collect();
    assert_complete_and_ordered(&accepted, &expected);
    let alone = target
        .calls()
        .iter()
        .filter(|call| call.event.records.len() == 1 && poisoned(&call.event))
        .count();
    assert_eq!(alone, 3, "the poison record alone: one call, two retries");

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1, "one invocation record: {received:?}");
    let record: Value = serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
    let context = &record["requestContext"];
    assert_eq!(context["condition"], "RetryAttemptsExhausted");
    assert_eq!(context["approximateInvokeCount"], 3);
    assert_eq!(context["mapping"], format!("{}/orders", fixture.ns()));
    assert_eq!(record["responseContext"]["statusCode"], 500);
    assert_eq!(record["version"], "1.0");
    let info = &record["KinesisBatchInfo"];
    assert_eq!(info["shardId"], shard.as_str());
    assert_eq!(info["startSequenceNumber"], sequences[25].as_str());
    assert_eq!(info["endSequenceNumber"], sequences[25].as_str());
    assert_eq!(info["batchSize"], 1);
    assert!(
        info["streamArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("stream/{}", stream.name))
    );
    assert!(info["approximateArrivalOfFirstRecord"].is_string());
    assert_eq!(poller.counter("esm_poller_records_dropped_total"), 1);
    assert_eq!(poller.counter("esm_poller_destination_deliveries_total"), 1);
    poller.stop().await;
}

async fn only_shard(stream: &TestStream) -> String {
    stream.shards().await[0].shard_id.clone()
}

#[tokio::test]
async fn kinesis_poison_record_holds_the_shard_by_default() {
    let fixture = fixture("kinesis-wait").await;
    let (stream, records, sequences) = poisoned_stream().await;
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
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
    let poller = fixture.start("orders", "replica-a");
    wait::until("three attempts at the poisoned batch", WAIT, || async {
        (target
            .calls()
            .iter()
            .filter(|call| poisoned(&call.event))
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let accepted: Vec<String> = target
        .calls()
        .iter()
        .filter(|call| !poisoned(&call.event))
        .flat_map(|call| kinesis_data(&call.event))
        .collect();
    let before: Vec<String> = records[..20].iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(accepted, before, "nothing after the failing batch");
    for call in target.calls().iter().filter(|call| poisoned(&call.event)) {
        assert_eq!(call.event.records.len(), 10, "the whole batch is retried");
    }
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard, sequences[19].clone())]))
        .await;
    poller.stop().await;
}

#[tokio::test]
async fn kinesis_records_past_their_age_are_dropped_counted_and_described() {
    use esm_operator::destination::Destination;
    use esm_operator::poller::checkpoint::KubeShardLeases;
    use esm_operator::poller::metrics::PollerMetrics;
    use esm_operator::poller::status::ProcessingResults;
    use esm_operator::poller::stream::{StreamIdentity, StreamPoller, StreamSettings};
    use esm_operator::sources::kinesis::{KinesisStream, KinesisStreamId};

    let fixture = fixture("kinesis-age").await;
    let stream = create_stream(1).await;
    let records = keyed_records(20, 2, 0);
    let last = stream.put(&records).await;
    let target = EventTarget::<KinesisEvent>::start(|_, _| (503, "down".into())).await;
    let destination = EventTarget::<Value>::start(|_, _| (200, String::new())).await;
    // maximumRecordAgeInSeconds is at least 60 in a mapping; the engine is built here with
    // 2 s so the test does not wait a minute.
    let mapping = fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
            }),
        )
        .await;
    let mut settings = StreamSettings::from_spec(&mapping.spec, LEASE_DURATION);
    settings.retry.max_record_age = Some(Duration::from_secs(2));
    let registry = Registry::new();
    let metrics =
        PollerMetrics::new(&registry)
            .unwrap()
            .mapping(fixture.ns(), "orders", SourceKind::Kinesis);
    let http = esm_operator::target::HttpTarget::new(&mapping.spec.target, fixture.ns()).unwrap();
    let poller = StreamPoller {
        stream: KinesisStream::new(
            &stream._emulator.sdk_config("kinesis"),
            KinesisStreamId::Name(stream.name.clone()),
        ),
        leases: KubeShardLeases::new(
            fixture.client.clone(),
            &mapping,
            "replica-a",
            LEASE_DURATION,
        )
        .unwrap(),
        target: http,
        destination: Some(
            Destination::http(
                &serde_json::from_value(json!({"url": destination.url})).unwrap(),
                fixture.ns(),
            )
            .unwrap(),
        ),
        filters: Default::default(),
        settings,
        identity: StreamIdentity {
            mapping: format!("{}/orders", fixture.ns()),
            target_url: target.url.clone(),
            stream_arn: format!(
                "arn:aws:kinesis:us-east-1:000000000000:stream/{}",
                stream.name
            ),
            invoke_identity: "test".into(),
            kind: esm_operator::api::SourceKind::Kinesis,
        },
        metrics: metrics.clone(),
        results: ProcessingResults::default(),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(poller.run(stopped));
    fixture.wait_for_checkpoints("orders", &last).await;
    assert_eq!(
        metrics.dropped.get(),
        20,
        "every record expired while the target failed"
    );
    let described: Vec<Value> = destination
        .calls()
        .into_iter()
        .map(|call| call.event)
        .collect();
    assert!(!described.is_empty());
    let mut sizes = 0;
    for record in &described {
        assert_eq!(record["requestContext"]["condition"], "RecordAgeExceeded");
        sizes += record["KinesisBatchInfo"]["batchSize"].as_u64().unwrap();
    }
    assert_eq!(sizes, 20);
    stop.send(true).unwrap();
    task.await.unwrap();
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
                "source": {"dynamodbStreams": {
                    "streamArn": stream_arn,
                    "region": "us-east-1",
                    "endpointUrl": emulator.endpoint("dynamodb"),
                    "credentialsSecretRef": {"name": "aws"},
                }},
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
    let changes = |target: &EventTarget<DynamoDbEvent>| -> Vec<aws_lambda_events::event::dynamodb::EventRecord> {
        target.calls().into_iter().flat_map(|call| call.event.records).collect()
    };
    wait::until("30 changes", WAIT, || async {
        (changes(&target).len() >= 30).then_some(())
    })
    .await;
    let records = changes(&target);
    assert_eq!(records.len(), 30);
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
    let last_sequence = records
        .iter()
        .filter_map(|r| r.change.sequence_number.clone())
        .max()
        .unwrap();
    let shard = fixture.leases("orders").await.into_keys().next().unwrap();
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard.clone(), last_sequence)]))
        .await;
    poller.stop().await;

    // A restart resumes after the checkpoint (the last record of the shard).
    let poller = fixture.start("orders", "replica-b");
    put("item-new".into(), "3").await.expect("PutItem");
    wait::until("the new change", WAIT, || async {
        (changes(&target).len() >= 31).then_some(())
    })
    .await;
    // Give a re-read of old records every chance to show up before checking.
    let last = changes(&target)
        .last()
        .unwrap()
        .change
        .sequence_number
        .clone()
        .unwrap();
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard, last)]))
        .await;
    let records = changes(&target);
    assert_eq!(records.len(), 31, "nothing delivered twice");
    assert_eq!(records[30].event_name, "INSERT");
    poller.stop().await;
}
