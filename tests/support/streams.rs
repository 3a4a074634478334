//! Stream mappings in tests: a namespace with credentials, mappings, pollers run in the test
//! process (`run_mapping`), Kinesis streams on kinesis-mock, and what was delivered.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_kinesis::Client as Kinesis;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use esm_operator::api::EventSourceMapping;
use esm_operator::poller::checkpoint::{CHECKPOINT_ANNOTATION, SHARD_ID_ANNOTATION};
use esm_operator::poller::metrics::PollerMetrics;
use esm_operator::poller::{PollerContext, PollerHandle, run_mapping};
use esm_operator::sources::aws::AwsBase;
use esm_operator::target::TargetClient;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::control_plane::{ControlPlane, TestNamespace};
use super::emulators::{Emulators, kinesis_stream, kinesis_stream_active, shared};
use super::records::keyed_records;
use super::target::EventTarget;
use super::wait;

/// Short leases, so that a dead poller's shards move on quickly.
pub const LEASE_DURATION: Duration = Duration::from_secs(4);
pub const WAIT: Duration = Duration::from_secs(180);

/// A namespace with the AWS test credentials in Secret `aws`.
pub struct Fixture {
    pub client: Client,
    pub namespace: TestNamespace,
}

pub async fn fixture(prefix: &str) -> Fixture {
    fixture_on(ControlPlane::with_crd(), prefix).await
}

/// [`fixture`] on control plane `plane` (one with the CRD installed).
pub async fn fixture_on(plane: &ControlPlane, prefix: &str) -> Fixture {
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
pub struct Poller {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub registry: Registry,
}

impl Fixture {
    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Creates mapping `name` with `spec` (source connection filled in by the caller).
    pub async fn mapping(&self, name: &str, spec: Value) -> EventSourceMapping {
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
    pub fn start(&self, name: &str, holder: &str) -> Poller {
        self.start_with(self.client.clone(), name, holder)
    }

    /// [`Fixture::start`] with its own `client` (e.g. one reaching the API server through a
    /// proxy).
    pub fn start_with(&self, client: Client, name: &str, holder: &str) -> Poller {
        let registry = Registry::new();
        let metrics = PollerMetrics::new(&registry).unwrap();
        let holder = holder.to_owned();
        let (stop, stopped) = watch::channel(false);
        let (namespace, name) = (self.ns().to_owned(), name.to_owned());
        let task = tokio::spawn(async move {
            let context = PollerContext {
                client,
                metrics,
                holder,
                lease_duration: LEASE_DURATION,
                spans: Default::default(),
                aws: AwsBase::load().await,
                targets: TargetClient::new().unwrap(),
            };
            run_mapping(context, namespace, name, PollerHandle::default(), stopped).await
        });
        Poller {
            stop,
            task,
            registry,
        }
    }

    /// Shard id -> (holder, checkpoint) of mapping `name`'s shard leases.
    pub async fn leases(&self, name: &str) -> BTreeMap<String, (Option<String>, Option<String>)> {
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
    pub async fn wait_for_checkpoints(&self, name: &str, expected: &BTreeMap<String, String>) {
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
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the poller stops")
            .unwrap();
    }

    /// A gauge of this poller's registry, summed over labels.
    pub fn gauge(&self, name: &str) -> i64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_gauge().get_value() as i64)
            .sum()
    }

    /// A counter of this poller's registry, summed over labels.
    /// The duplicates at-least-once allows so far: the records of failed calls, and for each
    /// shard stopped without writing its last checkpoint (`esm_poller_shard_interruptions_total`:
    /// a lease not renewed in time on a busy machine is one) `per_interruption` records, what it
    /// can finish between two checkpoint writes.
    pub fn redeliveries_allowed(&self, per_interruption: u64) -> u64 {
        self.counter("esm_poller_records_failed_total")
            + self.counter("esm_poller_shard_interruptions_total") * per_interruption
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }
}

/// The mapping source for DynamoDB stream `stream_arn` on the `dynamodb` emulator.
pub fn dynamodb_source(emulators: &Emulators, stream_arn: &str) -> Value {
    json!({"dynamodbStreams": {
        "streamArn": stream_arn,
        "region": "us-east-1",
        "endpointUrl": emulators.endpoint("dynamodb"),
        "credentialsSecretRef": {"name": "aws"},
    }})
}

// ------------------------------------------------------------------------------- Kinesis ---

pub struct TestStream {
    pub _emulator: Arc<Emulators>,
    pub admin: Kinesis,
    pub name: String,
    pub endpoint: String,
}

pub async fn create_stream(shards: i32) -> TestStream {
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
    pub fn source(&self) -> Value {
        json!({"kinesis": {
            "streamName": self.name,
            "region": "us-east-1",
            "endpointUrl": self.endpoint,
            "credentialsSecretRef": {"name": "aws"},
        }})
    }

    /// Puts `(key, data)` records, 500 per PutRecords; returns shard id -> last sequence.
    pub async fn put(&self, records: &[(String, String)]) -> BTreeMap<String, String> {
        self.put_tracked(records).await.0
    }

    /// Like [`TestStream::put`], also returning each key's shard.
    pub async fn put_tracked(
        &self,
        records: &[(String, String)],
    ) -> (BTreeMap<String, String>, HashMap<String, String>) {
        let mut shard_of_key = HashMap::new();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for (shard, sequence, key) in put_kinesis(&self.admin, &self.name, records).await {
            shard_of_key.insert(key.to_owned(), shard.clone());
            let slot = last.entry(shard).or_default();
            if at_or_past(&sequence, slot) {
                *slot = sequence;
            }
        }
        (last, shard_of_key)
    }

    pub async fn shards(&self) -> Vec<aws_sdk_kinesis::types::Shard> {
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
    pub async fn split(&self, shard: &str) {
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

    pub async fn merge(&self, first: &str, second: &str) {
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

/// A record put on the stream, with where it went.
pub struct Put {
    pub key: String,
    pub data: String,
    pub shard: String,
    pub sequence: String,
}

/// Puts a round of records (one per key, [`keyed_records`]) on a stream every `round` until
/// stopped.
pub struct StreamProducer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    put: Arc<Mutex<Vec<Put>>>,
}

impl StreamProducer {
    pub fn start(stream: &TestStream, keys: usize, round: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let put: Arc<Mutex<Vec<Put>>> = Arc::default();
        let (admin, name, log) = (stream.admin.clone(), stream.name.clone(), put.clone());
        let task = tokio::spawn(async move {
            for number in 0.. {
                let records = keyed_records(keys, keys, number);
                let written = put_kinesis(&admin, &name, &records).await;
                log.lock()
                    .unwrap()
                    .extend(written.into_iter().zip(&records).map(
                        |((shard, sequence, _), (key, data))| Put {
                            key: key.clone(),
                            data: data.clone(),
                            shard,
                            sequence,
                        },
                    ));
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(round) => {}
                }
            }
        });
        Self { stop, task, put }
    }

    /// Shard id -> sequence number of the last record put so far.
    pub fn last_sequences(&self) -> BTreeMap<String, String> {
        last_sequences(&self.put.lock().unwrap())
    }

    /// Stops putting; returns everything put.
    pub async fn stop(self) -> Vec<Put> {
        let _ = self.stop.send(true);
        self.task.await.expect("the producer");
        Arc::try_unwrap(self.put)
            .ok()
            .expect("the producer is done")
            .into_inner()
            .unwrap()
    }
}

/// Shard id -> sequence number of the last of `puts` on it.
pub fn last_sequences(puts: &[Put]) -> BTreeMap<String, String> {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for put in puts {
        let slot = last.entry(put.shard.clone()).or_default();
        if at_or_past(&put.sequence, slot) {
            slot.clone_from(&put.sequence);
        }
    }
    last
}

/// Kinesis sequence numbers are decimal strings longer than any integer type: by length, then
/// text.
pub fn at_or_past(sequence: &str, other: &str) -> bool {
    (sequence.len(), sequence) >= (other.len(), other)
}

pub fn kinesis_data(event: &KinesisEvent) -> Vec<String> {
    event
        .records
        .iter()
        .map(|record| String::from_utf8(record.kinesis.data.0.clone()).unwrap())
        .collect()
}

pub fn delivered(target: &EventTarget<KinesisEvent>) -> Vec<String> {
    target
        .calls()
        .iter()
        .flat_map(|call| kinesis_data(&call.event))
        .collect()
}

/// Puts `(key, data)` records on `stream`, 500 per PutRecords; returns each record's shard and
/// sequence number, with its key.
pub async fn put_kinesis<'a>(
    kinesis: &Kinesis,
    stream: &str,
    records: &'a [(String, String)],
) -> Vec<(String, String, &'a str)> {
    let mut written = Vec::with_capacity(records.len());
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
        let output = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(output.failed_record_count, Some(0));
        for (entry, (key, _)) in output.records.into_iter().zip(chunk) {
            written.push((
                entry.shard_id.unwrap(),
                entry.sequence_number.unwrap(),
                key.as_str(),
            ));
        }
    }
    written
}

/// A stream with one shard and 60 records over 4 keys; record 25 is `poison`. Returns the
/// stream, the records and their sequence numbers.
pub async fn poisoned_stream() -> (TestStream, Vec<(String, String)>, Vec<String>) {
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

pub fn poisoned(event: &KinesisEvent) -> bool {
    kinesis_data(event)
        .iter()
        .any(|data| data.ends_with("/poison"))
}

pub fn fail_poison(_: usize, event: &KinesisEvent) -> (u16, String) {
    if poisoned(event) {
        (500, "cannot digest this".into())
    } else {
        (200, String::new())
    }
}

pub async fn only_shard(stream: &TestStream) -> String {
    stream.shards().await[0].shard_id.clone()
}
