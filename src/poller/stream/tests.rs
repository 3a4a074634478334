//! The stream engine against an in-memory stream, lease store, target and destination, on a
//! paused clock.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::*;
use crate::destination::{Deliver, FailedBatch};
use crate::poller::checkpoint::memory::{MemoryLeaseStore, MemoryLeases};
use crate::sources::sharded::{KinesisEncryption, KinesisRecord, RecordPayload, Shard};
use crate::target::{CallError, TargetResponse};
use crate::trace::TraceContext;

const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/test";

/// A Kinesis-like stream in memory. Iterators are `SHARD|INDEX`.
#[derive(Clone, Default)]
struct FakeStream(Arc<Mutex<FakeState>>);

#[derive(Default)]
struct FakeState {
    shards: Vec<(Shard, Vec<StreamRecord>)>,
    /// GetRecords calls per shard.
    reads: HashMap<String, usize>,
    /// Every `throttle_every`-th GetRecords is throttled, every `expire_every`-th finds its
    /// iterator expired.
    throttle_every: usize,
    expire_every: usize,
    calls: usize,
    /// Like DynamoDB Local: AFTER_SEQUENCE_NUMBER at a shard's last record fails.
    after_last_fails: bool,
}

fn record(sequence: usize, key: &str, data: &str) -> StreamRecord {
    StreamRecord {
        sequence_number: format!("{sequence:06}"),
        approximate_arrival: Some(Timestamp::now()),
        payload: RecordPayload::Kinesis(KinesisRecord {
            partition_key: key.into(),
            data: data.as_bytes().to_vec(),
            encryption: KinesisEncryption::None,
        }),
    }
}

impl FakeStream {
    fn add_shard(&self, id: &str, parents: &[&str], open: bool, records: Vec<StreamRecord>) {
        let shard = Shard {
            shard_id: id.into(),
            parent_shard_ids: parents.iter().map(|p| p.to_string()).collect(),
            open,
        };
        self.0.lock().unwrap().shards.push((shard, records));
    }

    /// `count` records over `keys` keys, data `KEY/N`, sequence numbers from `first`.
    fn records(first: usize, count: usize, keys: usize) -> Vec<StreamRecord> {
        let mut per_key = vec![0; keys];
        (0..count)
            .map(|i| {
                let key = i % keys;
                per_key[key] += 1;
                record(
                    first + i,
                    &format!("k{key}"),
                    &format!("k{key}/{}", per_key[key]),
                )
            })
            .collect()
    }

    fn reads(&self, shard: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .reads
            .get(shard)
            .copied()
            .unwrap_or(0)
    }
}

impl ShardedStream for FakeStream {
    async fn stream_arn(&self) -> Result<String, StreamError> {
        Ok(ARN.into())
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .shards
            .iter()
            .map(|(s, _)| s.clone())
            .collect())
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        position: &ShardPosition,
    ) -> Result<String, StreamError> {
        let state = self.0.lock().unwrap();
        let after_last_fails = state.after_last_fails;
        let (_, records) = state
            .shards
            .iter()
            .find(|(s, _)| s.shard_id == shard_id)
            .ok_or_else(|| StreamError::NotFound(shard_id.into()))?;
        let index_of = |sequence: &str| {
            records
                .iter()
                .position(|r| r.sequence_number == sequence)
                .expect("a known sequence number")
        };
        let index = match position {
            ShardPosition::TrimHorizon => 0,
            ShardPosition::Latest => records.len(),
            ShardPosition::AtSequenceNumber(s) => index_of(s),
            ShardPosition::AfterSequenceNumber(s) => {
                if after_last_fails && index_of(s) + 1 == records.len() {
                    return Err(StreamError::Other("InternalFailure (HTTP 500)".into()));
                }
                index_of(s) + 1
            }
            ShardPosition::AtTimestamp(_) => unreachable!("not used"),
        };
        Ok(format!("{shard_id}|{index}"))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordPage, StreamError> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        let calls = state.calls;
        if state.throttle_every > 0 && calls.is_multiple_of(state.throttle_every) {
            return Err(StreamError::Throttled("slow down".into()));
        }
        if state.expire_every > 0 && calls.is_multiple_of(state.expire_every) {
            return Err(StreamError::ExpiredIterator("too old".into()));
        }
        let (shard_id, index) = iterator.split_once('|').unwrap();
        let index: usize = index.parse().unwrap();
        *state.reads.entry(shard_id.into()).or_default() += 1;
        let (shard, records) = state
            .shards
            .iter()
            .find(|(s, _)| s.shard_id == shard_id)
            .unwrap();
        let end = (index + limit as usize).min(records.len());
        let page = records[index..end].to_vec();
        let next_iterator =
            (shard.open || end < records.len()).then(|| format!("{shard_id}|{end}"));
        Ok(RecordPage {
            records: page,
            next_iterator,
            millis_behind_latest: Some(0),
        })
    }
}

type Behaviour = dyn Fn(&[Value]) -> TargetResponse + Send + Sync;

/// Records every event; answers as `behaviour` says.
#[derive(Clone)]
struct FakeTarget {
    calls: Arc<Mutex<Vec<Vec<Value>>>>,
    behaviour: Arc<Behaviour>,
}

impl FakeTarget {
    fn new(behaviour: impl Fn(&[Value]) -> TargetResponse + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::default(),
            behaviour: Arc::new(behaviour),
        }
    }

    fn accepting() -> Self {
        Self::new(|_| answer(200, ""))
    }

    fn calls(&self) -> Vec<Vec<Value>> {
        self.calls.lock().unwrap().clone()
    }

    /// Data of every record delivered in a call the target accepted.
    fn delivered(&self) -> Vec<String> {
        let calls = self.calls();
        calls
            .iter()
            .filter(|records| (self.behaviour)(records).status == 200)
            .flatten()
            .map(data)
            .collect()
    }
}

fn answer(status: u16, body: &str) -> TargetResponse {
    TargetResponse {
        status,
        body: body.as_bytes().to_vec(),
        truncated: false,
        location: None,
    }
}

fn data(record: &Value) -> String {
    use base64::Engine as _;
    let encoded = record["kinesis"]["data"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

impl Invoke for FakeTarget {
    async fn invoke(
        &self,
        payload: Vec<u8>,
        _trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        let event: Value = serde_json::from_slice(&payload).unwrap();
        let records = event["Records"].as_array().unwrap().clone();
        // Lanes answer at different speeds, so they finish out of order.
        let delay = records.len() as u64 % 7;
        tokio::time::sleep(Duration::from_millis(10 * delay)).await;
        let answer = (self.behaviour)(&records);
        self.calls.lock().unwrap().push(records);
        Ok(answer)
    }
}

#[derive(Clone, Default)]
struct FakeDestination {
    records: Arc<Mutex<Vec<Value>>>,
    failures_left: Arc<AtomicUsize>,
}

impl Deliver for FakeDestination {
    async fn deliver(&self, failed: FailedBatch<'_>) -> Result<(), String> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("destination unavailable".into());
        }
        self.records
            .lock()
            .unwrap()
            .push(serde_json::from_str(failed.record).unwrap());
        Ok(())
    }
}

fn settings(lanes: usize) -> StreamSettings {
    StreamSettings {
        batch_size: 10,
        window: Duration::ZERO,
        lanes,
        starting_position: ShardPosition::TrimHorizon,
        retry: RetryPolicy {
            max_retries: None,
            max_record_age: None,
            bisect_on_error: false,
        },
        report_batch_item_failures: false,
        idle_poll: KINESIS_IDLE_POLL,
        busy_poll: KINESIS_BUSY_POLL,
        lease_duration: Duration::from_secs(30),
        retry_backoff: Duration::from_secs(1),
        tumbling: None,
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: MappingMetrics,
}

fn start<T: Invoke + Clone>(
    stream: &FakeStream,
    leases: &Arc<MemoryLeases>,
    target: &T,
    destination: Option<&FakeDestination>,
    settings: StreamSettings,
) -> Running {
    start_replica("replica-1", stream, leases, target, destination, settings)
}

/// [`start`] as replica `holder`.
fn start_replica<T: Invoke + Clone>(
    holder: &str,
    stream: &FakeStream,
    leases: &Arc<MemoryLeases>,
    target: &T,
    destination: Option<&FakeDestination>,
    settings: StreamSettings,
) -> Running {
    let metrics = MappingMetrics::detached();
    let poller: StreamPoller<FakeStream, MemoryLeaseStore, T, FakeDestination> = StreamPoller {
        stream: stream.clone(),
        leases: leases.store(holder, settings.lease_duration),
        target: target.clone(),
        destination: destination.cloned(),
        filters: FilterSet::default(),
        settings,
        identity: StreamIdentity {
            mapping: "ns/m".into(),
            mapping_uid: "uid-1".into(),
            target_url: "http://target/".into(),
            stream_arn: ARN.into(),
            invoke_identity: "esm.dev/namespaces/ns/eventsourcemappings/m".into(),
            kind: SourceKind::Kinesis,
        },
        metrics: metrics.clone(),
        results: ProcessingResults::default(),
        spans: Default::default(),
    };
    let (stop, stopped) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(poller.run(stopped)),
        metrics,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

/// Waits (on the paused clock) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

fn checkpoint(leases: &MemoryLeases, shard: &str) -> Option<Checkpoint> {
    leases.lease(shard).and_then(|lease| lease.checkpoint)
}

/// Per key, the record numbers in delivery order.
fn per_key(delivered: &[String]) -> BTreeMap<String, Vec<u32>> {
    let mut keys: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for data in delivered {
        let (key, n) = data.split_once('/').unwrap();
        keys.entry(key.into()).or_default().push(n.parse().unwrap());
    }
    keys
}

fn assert_in_key_order(delivered: &[String]) {
    for (key, numbers) in per_key(delivered) {
        let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
        assert_eq!(numbers, expected, "order of key {key}");
    }
}

#[tokio::test(start_paused = true)]
async fn lanes_keep_key_order_and_the_closed_shard_ends_checkpointed() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], false, FakeStream::records(0, 400, 13));
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let running = start(&stream, &leases, &target, None, settings(4));
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    let delivered = target.delivered();
    assert_eq!(delivered.len(), 400, "every record exactly once");
    assert_in_key_order(&delivered);
    let calls = target.calls();
    assert!(calls.iter().all(|c| c.len() <= 10), "batch size respected");
    assert_eq!(running.metrics.invoked.get(), 400);
    running.stop().await;
    assert_eq!(leases.lease("shard-0").unwrap().holder, None, "released");
}

#[tokio::test(start_paused = true)]
async fn throttling_and_expired_iterators_skip_nothing() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], false, FakeStream::records(0, 250, 5));
    {
        let mut state = stream.0.lock().unwrap();
        state.throttle_every = 3;
        state.expire_every = 5;
    }
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let mut settings = settings(1);
    // Small reads, so that many of them are throttled or expired.
    settings.batch_size = 7;
    let running = start(&stream, &leases, &target, None, settings);
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    let delivered = target.delivered();
    assert_eq!(delivered.len(), 250);
    assert_in_key_order(&delivered);
    assert!(running.metrics.source_errors.get() > 5);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn kinesis_shards_are_polled_about_once_a_second_and_dynamodb_four_times() {
    for (idle_poll, expected) in [(KINESIS_IDLE_POLL, 10), (DYNAMODB_POLL, 40)] {
        let stream = FakeStream::default();
        stream.add_shard("shard-0", &[], true, Vec::new());
        let leases = Arc::new(MemoryLeases::default());
        let target = FakeTarget::accepting();
        let mut settings = settings(1);
        settings.idle_poll = idle_poll;
        let running = start(&stream, &leases, &target, None, settings);
        until("the first read", || stream.reads("shard-0") > 0).await;
        let before = stream.reads("shard-0");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let reads = stream.reads("shard-0") - before;
        assert!(
            (expected - 1..=expected + 1).contains(&reads),
            "{reads} reads in 10 s with {idle_poll:?}"
        );
        running.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_child_shard_starts_only_after_its_parent_ended() {
    let stream = FakeStream::default();
    stream.add_shard("parent", &[], false, FakeStream::records(0, 60, 3));
    // The child continues the keys: k0/21.. follow k0/1..20.
    let child: Vec<StreamRecord> = FakeStream::records(0, 30, 3)
        .into_iter()
        .enumerate()
        .map(|(i, _)| {
            let key = i % 3;
            record(
                100 + i,
                &format!("k{key}"),
                &format!("k{key}/{}", 21 + i / 3),
            )
        })
        .collect();
    stream.add_shard("child", &["parent"], true, child);
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let running = start(&stream, &leases, &target, None, settings(2));
    until("all records", || target.delivered().len() == 90).await;
    assert_eq!(checkpoint(&leases, "parent"), Some(Checkpoint::ShardEnd));
    let delivered = target.delivered();
    assert_in_key_order(&delivered);
    until("the child's checkpoint", || {
        checkpoint(&leases, "child") == Some(Checkpoint::SequenceNumber("000129".into()))
    })
    .await;
    running.stop().await;
}

fn contains_poison(records: &[Value]) -> bool {
    records.iter().any(|r| data(r).ends_with("/poison"))
}

fn with_poison(count: usize, at: usize) -> Vec<StreamRecord> {
    let mut records = FakeStream::records(0, count, 4);
    let key = at % 4;
    records[at] = record(at, &format!("k{key}"), &format!("k{key}/poison"));
    records
}

#[tokio::test(start_paused = true)]
async fn a_poison_record_alone_goes_to_the_destination_with_retries_and_bisection() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], false, with_poison(40, 17));
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::new(|records| {
        if contains_poison(records) {
            answer(500, "poisoned")
        } else {
            answer(200, "")
        }
    });
    let destination = FakeDestination::default();
    destination.failures_left.store(2, Ordering::SeqCst);
    let mut settings = settings(1);
    settings.retry = RetryPolicy {
        max_retries: Some(2),
        max_record_age: None,
        bisect_on_error: true,
    };
    let running = start(&stream, &leases, &target, Some(&destination), settings);
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    let delivered = target.delivered();
    assert_eq!(delivered.len(), 39, "everything but the poison record");
    let sent = destination.records.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let record = &sent[0];
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["responseContext"]["statusCode"], 500);
    let info = &record["KinesisBatchInfo"];
    assert_eq!(info["shardId"], "shard-0");
    assert_eq!(info["startSequenceNumber"], "000017");
    assert_eq!(info["endSequenceNumber"], "000017");
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["streamArn"], ARN);
    let poison_calls = target
        .calls()
        .iter()
        .filter(|c| c.len() == 1 && contains_poison(c))
        .count();
    assert_eq!(
        poison_calls, 3,
        "the record alone: one call and two retries"
    );
    assert_eq!(running.metrics.dropped.get(), 1);
    assert_eq!(running.metrics.destination_delivered.get(), 1);
    assert_eq!(
        running.metrics.destination_failures.get(),
        2,
        "failed deliveries are retried and counted"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn by_default_a_failing_batch_holds_its_shard() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], false, with_poison(40, 17));
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::new(|records| {
        if contains_poison(records) {
            answer(500, "")
        } else {
            answer(200, "")
        }
    });
    let running = start(&stream, &leases, &target, None, settings(1));
    until("ten attempts", || {
        target.calls().iter().filter(|c| contains_poison(c)).count() >= 10
    })
    .await;
    let delivered = target.delivered();
    assert_eq!(delivered.len(), 10, "only the batch before the poison one");
    assert_eq!(
        checkpoint(&leases, "shard-0"),
        Some(Checkpoint::SequenceNumber("000009".into()))
    );
    let attempts: Vec<usize> = target
        .calls()
        .iter()
        .filter(|c| contains_poison(c))
        .map(Vec::len)
        .collect();
    assert!(
        attempts.iter().all(|n| *n == 10),
        "the whole batch each time: {attempts:?}"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn partial_failures_checkpoint_before_the_failed_record_and_resume_there() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], false, FakeStream::records(0, 10, 1));
    let leases = Arc::new(MemoryLeases::default());
    // The first call reports record 000004 failed; later calls succeed.
    let first = Arc::new(AtomicUsize::new(0));
    let target = FakeTarget::new(move |records| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            let id = records[4]["kinesis"]["sequenceNumber"].as_str().unwrap();
            answer(
                200,
                &format!(r#"{{"batchItemFailures":[{{"itemIdentifier":"{id}"}}]}}"#),
            )
        } else {
            answer(200, "")
        }
    });
    let mut settings = settings(1);
    settings.report_batch_item_failures = true;
    let running = start(&stream, &leases, &target, None, settings);
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    let calls = target.calls();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 6], "the retry starts at the failed record");
    assert_eq!(calls[1][0]["kinesis"]["sequenceNumber"], "000004");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn filtered_records_are_skipped_and_checkpointed() {
    let stream = FakeStream::default();
    let mut records = Vec::new();
    for i in 0..20 {
        let kind = if i % 2 == 0 { "order" } else { "noise" };
        records.push(record(i, "k", &format!(r#"{{"type":"{kind}","n":{i}}}"#)));
    }
    stream.add_shard("shard-0", &[], true, records);
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let metrics = MappingMetrics::detached();
    let (stop, stopped) = watch::channel(false);
    let poller = StreamPoller {
        stream: stream.clone(),
        leases: leases.store("replica-1", Duration::from_secs(30)),
        target: target.clone(),
        destination: None::<FakeDestination>,
        filters: FilterSet::parse_for(SourceKind::Kinesis, [r#"{"data":{"type":["order"]}}"#])
            .unwrap(),
        settings: settings(1),
        identity: StreamIdentity {
            mapping: "ns/m".into(),
            mapping_uid: "uid-1".into(),
            target_url: "http://target/".into(),
            stream_arn: ARN.into(),
            invoke_identity: "esm".into(),
            kind: SourceKind::Kinesis,
        },
        metrics: metrics.clone(),
        results: ProcessingResults::default(),
        spans: Default::default(),
    };
    let task = tokio::spawn(poller.run(stopped));
    // The last record is filtered out: the checkpoint still reaches it.
    until("the checkpoint at the last record", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::SequenceNumber("000019".into()))
    })
    .await;
    assert_eq!(target.calls().concat().len(), 10);
    assert_eq!(metrics.filtered_out.get(), 10);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn checkpoints_of_a_running_shard_are_written_at_most_once_a_second() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], true, FakeStream::records(0, 100, 4));
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let mut settings = settings(1);
    // One record per batch, two per read, a read every 200 ms: 100 batches over ~10 s.
    settings.batch_size = 1;
    let running = start(&stream, &leases, &target, None, settings);
    until("the checkpoint at the last record", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::SequenceNumber("000099".into()))
    })
    .await;
    assert_eq!(target.calls().len(), 100);
    let writes = leases.checkpoint_writes();
    assert!(
        (5..=13).contains(&writes),
        "100 batches over ~10 s share {writes} checkpoint writes"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_checkpoint_write_is_retried_on_a_quiet_shard() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], true, FakeStream::records(0, 10, 2));
    let leases = Arc::new(MemoryLeases::default());
    // The API server is away for the first writes; then the shard gets no more records.
    leases.fail_checkpoints(3);
    let target = FakeTarget::accepting();
    let running = start(&stream, &leases, &target, None, settings(1));
    until("10 records", || target.delivered().len() == 10).await;
    until("the checkpoint at the last record", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::SequenceNumber("000009".into()))
    })
    .await;
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_after_the_checkpoint() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], true, FakeStream::records(0, 30, 2));
    stream.0.lock().unwrap().after_last_fails = true;
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let running = start(&stream, &leases, &target, None, settings(1));
    until("30 records", || target.delivered().len() == 30).await;
    until("the checkpoint", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::SequenceNumber("000029".into()))
    })
    .await;
    running.stop().await;
    stream.0.lock().unwrap().shards[0]
        .1
        .extend(FakeStream::records(30, 5, 1));
    let running = start(&stream, &leases, &target, None, settings(1));
    until("35 records", || target.delivered().len() == 35).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(target.delivered().len(), 35, "nothing delivered twice");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_shard_without_checkpointing() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], true, FakeStream::records(0, 20, 2));
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let running = start(&stream, &leases, &target, None, settings(1));
    until("the checkpoint", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::SequenceNumber("000019".into()))
    })
    .await;
    assert_eq!(running.metrics.owned_shards.get(), 1);
    // Another replica takes the lease, as if this one had not renewed in time.
    let thief = leases.store("replica-2", Duration::from_secs(30));
    let shard = Shard {
        shard_id: "shard-0".into(),
        parent_shard_ids: Vec::new(),
        open: true,
    };
    let observed = leases.lease("shard-0").unwrap();
    let later = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
    thief
        .try_acquire(&shard, Some(&observed), later)
        .await
        .unwrap();
    // Within one balancing round the shard is stopped and never read again.
    tokio::time::sleep(settings(1).lease_duration / 3 * 2).await;
    assert_eq!(running.metrics.owned_shards.get(), 0);
    let reads = stream.reads("shard-0");
    stream.0.lock().unwrap().shards[0]
        .1
        .extend(FakeStream::records(20, 5, 1));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(stream.reads("shard-0"), reads, "the lost shard is not read");
    assert_eq!(target.delivered().len(), 20);
    let lease = leases.lease("shard-0").unwrap();
    assert_eq!(lease.holder.as_deref(), Some("replica-2"));
    assert_eq!(
        lease.checkpoint,
        Some(Checkpoint::SequenceNumber("000019".into())),
        "the checkpoint is the new holder's to move"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replica_cut_off_from_its_leases_stops_within_the_lease_duration() {
    let stream = FakeStream::default();
    stream.add_shard("shard-0", &[], true, FakeStream::records(0, 20, 2));
    // Ten more records of key `key`, sequence numbers from `first`.
    let more = |first: usize, key: &str| {
        let records = (1..=10).map(|n| record(first + n - 1, key, &format!("{key}/{n}")));
        stream.0.lock().unwrap().shards[0].1.extend(records);
    };
    let leases = Arc::new(MemoryLeases::default());
    let target = FakeTarget::accepting();
    let lease_duration = settings(1).lease_duration;
    let running = start(&stream, &leases, &target, None, settings(1));
    let checkpointed = Some(Checkpoint::SequenceNumber("000019".into()));
    until("the checkpoint", || {
        checkpoint(&leases, "shard-0") == checkpointed
    })
    .await;
    // Its lease calls never return from now on (an API server that accepted the connections
    // and went silent); the stream still answers it, and it goes on delivering until its hold
    // ends.
    leases.set_cut_off("replica-1", true);
    let cut_at = Instant::now();
    more(20, "k2");
    // Its last renewal began before the cut: one lease duration after the cut the shard has
    // stopped, although no call told it so, and it reads and calls nothing more.
    tokio::time::sleep_until(cut_at + lease_duration).await;
    let calls = target.calls().len();
    more(30, "k3");
    tokio::time::sleep(lease_duration * 2).await;
    assert_eq!(target.calls().len(), calls, "the cut-off replica stopped");
    assert!(
        !target
            .delivered()
            .iter()
            .any(|data| data.starts_with("k3/"))
    );
    assert_eq!(running.metrics.owned_shards.get(), 0);
    assert_eq!(checkpoint(&leases, "shard-0"), checkpointed);
    // Another replica takes the expired lease. Let back in, the cut-off one finds the shard
    // held, stays idle, and writes nothing it had pending.
    let other = leases.store("replica-2", lease_duration);
    let shard = Shard {
        shard_id: "shard-0".into(),
        parent_shard_ids: Vec::new(),
        open: true,
    };
    let observed = leases.lease("shard-0").unwrap();
    let later = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
    other
        .try_acquire(&shard, Some(&observed), later)
        .await
        .unwrap();
    leases.set_cut_off("replica-1", false);
    tokio::time::sleep(lease_duration).await;
    assert_eq!(running.metrics.owned_shards.get(), 0);
    let lease = leases.lease("shard-0").unwrap();
    assert!(lease.is_held_by("replica-2"));
    assert_eq!(lease.checkpoint, checkpointed);
    assert_eq!(target.calls().len(), calls);
    running.stop().await;
}

#[test]
fn settings_follow_the_spec_and_the_source() {
    let spec: EventSourceMappingSpec = serde_json::from_value(serde_json::json!({
        "source": {"dynamodbStreams": {"streamArn": "arn:aws:dynamodb:us-east-1:0:table/t/stream/s"}},
        "target": {"url": "http://t"},
        "startingPosition": "TRIM_HORIZON",
        "parallelizationFactor": 3,
        "maximumBatchingWindowInSeconds": 2,
        "targetResponseTypes": ["ReportBatchItemFailures"],
    }))
    .unwrap();
    let settings = StreamSettings::from_spec(&spec, Duration::from_secs(9));
    assert_eq!(settings.batch_size, 100);
    assert_eq!(settings.lanes, 3);
    assert_eq!(settings.window, Duration::from_secs(2));
    assert_eq!(settings.starting_position, ShardPosition::TrimHorizon);
    assert_eq!(
        (settings.idle_poll, settings.busy_poll),
        (DYNAMODB_POLL, DYNAMODB_POLL)
    );
    assert!(settings.report_batch_item_failures);
    assert_eq!(settings.lease_duration, Duration::from_secs(9));
    assert_eq!(settings.read_ahead(), 600);

    let spec: EventSourceMappingSpec = serde_json::from_value(serde_json::json!({
        "source": {"kinesis": {"streamName": "s"}},
        "target": {"url": "http://t"},
        "startingPosition": "AT_TIMESTAMP",
        "startingPositionTimestamp": "2026-01-01T00:00:00Z",
        "batchSize": 10000,
    }))
    .unwrap();
    let settings = StreamSettings::from_spec(&spec, Duration::from_secs(30));
    assert_eq!(
        settings.starting_position,
        ShardPosition::AtTimestamp("2026-01-01T00:00:00Z".parse().unwrap())
    );
    assert_eq!(
        (settings.idle_poll, settings.busy_poll),
        (KINESIS_IDLE_POLL, KINESIS_BUSY_POLL)
    );
    assert_eq!(
        settings.read_ahead(),
        10_000,
        "one batch even above the read-ahead cap"
    );
}

mod windows;
