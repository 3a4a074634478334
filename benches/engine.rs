//! Engine micro-benchmark (docs/benchmarks.md, part 1): records per second through the real
//! engines on one thread, with in-memory sources and a target that answers 200 at once.
//! Queue engine: receive loop, filter, batcher, event encoding, target outcome, deletes. Stream
//! engine (one Kinesis shard): shard reader, watermark, filter, lane, batcher, event encoding,
//! target outcome, checkpoints (in-memory lease store).
//!
//! One criterion iteration is one batch; throughput is reported in records. The records are
//! built before the clock starts (the SDK's parsing is the source's cost, not the engine's);
//! dropping them after their delete is the engine's and is timed. The clock is the thread's CPU
//! time, not the wall clock: the figure is per core, and stays meaningful on a shared machine.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use esm_operator::api::{EventSourceMappingSpec, SourceKind};
use esm_operator::destination::{Deliver, FailedBatch};
use esm_operator::event::{SQS_EVENT_SOURCE, SqsRecord};
use esm_operator::filter::FilterSet;
use esm_operator::poller::checkpoint::Checkpoint;
use esm_operator::poller::checkpoint::memory::MemoryLeases;
use esm_operator::poller::metrics::MappingMetrics;
use esm_operator::poller::queue::{Activity, QueuePoller, QueueSettings};
use esm_operator::poller::status::ProcessingResults;
use esm_operator::poller::stream::{StreamIdentity, StreamPoller, StreamSettings};
use esm_operator::sources::sharded::memory::MemoryShard;
use esm_operator::sources::sharded::{
    KinesisEncryption, KinesisRecord, RecordPayload, StreamRecord,
};
use esm_operator::sources::sqs::{EntryFailure, Queue, QueueAttributes, Receipt, SqsError};
use esm_operator::target::{CallError, Invoke, TargetResponse};
use esm_operator::trace::TraceContext;
use k8s_openapi::jiff::Timestamp;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::watch;

/// Counts allocations, for the per-record allocation figures printed after the timings.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
/// Match every benchmark record, so filtered runs deliver as many records as unfiltered ones.
const SQS_FILTER: &str = r#"{"body":{"type":["order"],"amount":[{"numeric":[">",0]}]}}"#;
const KINESIS_FILTER: &str = r#"{"data":{"type":["order"],"amount":[{"numeric":[">",0]}]}}"#;
const SHARD_ID: &str = "shardId-000000000000";

/// The same ~150-byte JSON document in every SQS body and Kinesis data.
fn order(index: usize) -> String {
    format!(
        r#"{{"type":"order","id":{index},"amount":12.5,"currency":"EUR","customer":{{"id":"c-{index}","tier":"gold"}},"items":["sku-1","sku-2"]}}"#
    )
}

/// A typical SQS message as ReceiveMessage returns it: a ~150-byte JSON body, the four system
/// attributes Lambda asks for, a receipt handle of the usual length.
fn message(index: usize) -> SqsRecord {
    let attributes = [
        ("ApproximateReceiveCount", "1".to_owned()),
        ("SentTimestamp", "1700000000000".to_owned()),
        ("SenderId", "AIDAIENQZJOLO23YVJ4VO".to_owned()),
        (
            "ApproximateFirstReceiveTimestamp",
            "1700000000050".to_owned(),
        ),
    ];
    SqsRecord {
        message_id: format!("059f36b4-87a3-44ab-83d2-{index:012}"),
        receipt_handle: format!(
            "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a7QHnpAaDh4dLVmdoYnD47Gqqj8Cgf6ejvZAV8pZ6WxRRGfzhEC6GP8\
             eLaR1BcQdXqN8v1mw6KBnjbpzvg4ofUH8XkzCHuUq5y4cLkb0a0qTBgUd0Lm6ZpU9R8qR1gSsIRmE{index:012}"
        ),
        body: order(index),
        attributes: attributes
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
        message_attributes: BTreeMap::new(),
        md5_of_body: "e4e68fb7bd0e697a0ae8f1bb342846b3".to_owned(),
        md5_of_message_attributes: None,
        event_source: SQS_EVENT_SOURCE,
        event_source_arn: "arn:aws:sqs:us-east-1:000000000000:orders".into(),
        aws_region: "us-east-1".into(),
    }
}

/// A queue holding prepared messages; turns `done` true once all of them are deleted.
struct MemoryQueue {
    state: Mutex<QueueState>,
    done: watch::Sender<bool>,
}

struct QueueState {
    visible: VecDeque<SqsRecord>,
    undeleted: usize,
}

impl Queue for MemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsRecord>, SqsError> {
        let records: Vec<SqsRecord> = {
            let mut state = self.state.lock().expect("queue lock");
            let count = max.min(state.visible.len());
            state.visible.drain(..count).collect()
        };
        if records.is_empty() {
            tokio::time::sleep(wait).await;
        }
        Ok(records)
    }

    async fn delete(&self, receipts: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        let mut state = self.state.lock().expect("queue lock");
        state.undeleted -= receipts.len();
        if state.undeleted == 0 {
            self.done.send_replace(true);
        }
        Ok(Vec::new())
    }

    async fn release(&self, _: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        Ok(Vec::new())
    }

    async fn attributes(&self) -> Result<QueueAttributes, SqsError> {
        unreachable!("the engine does not read attributes")
    }
}

/// Answers every call with 200 and an empty partial batch response.
struct NoopTarget;

impl Invoke for NoopTarget {
    async fn invoke(
        &self,
        _payload: Vec<u8>,
        _trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        Ok(TargetResponse {
            status: 200,
            body: Vec::new(),
            truncated: false,
            location: None,
        })
    }
}

/// Runs one receive loop over `records` until every one is deleted; the time it took.
fn run_queue_engine(
    runtime: &tokio::runtime::Runtime,
    records: VecDeque<SqsRecord>,
    batch_size: usize,
    filters: &FilterSet,
) -> Duration {
    let (done, stop) = watch::channel(false);
    let poller = QueuePoller {
        queue: MemoryQueue {
            state: Mutex::new(QueueState {
                undeleted: records.len(),
                visible: records,
            }),
            done,
        },
        target: NoopTarget,
        filters: filters.clone(),
        settings: QueueSettings {
            batch_size,
            // Long enough that every batch fills up: the in-memory queue never runs dry mid-batch.
            window: Duration::from_secs(1),
            loops: 1,
            report_batch_item_failures: true,
            one_long_poll_when_quiet: true,
        },
        metrics: MappingMetrics::detached(),
        results: ProcessingResults::default(),
        activity: Activity::default(),
        spans: Default::default(),
    };
    let start = thread_cpu_time();
    runtime.block_on(poller.run(stop));
    thread_cpu_time() - start
}

/// CPU time of the calling thread (the current-thread runtime runs the whole engine on it), in
/// nanoseconds from the scheduler's accounting.
fn thread_cpu_time() -> Duration {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat");
    let nanos = schedstat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the run time in ns");
    Duration::from_nanos(nanos)
}

/// A Kinesis record as GetRecords returns it: a 56-digit sequence number, a partition key and
/// the JSON document as data.
fn kinesis_record(index: usize) -> StreamRecord {
    StreamRecord {
        sequence_number: format!("49590338271490256608559692538361571095921575989{index:09}"),
        approximate_arrival: Some(Timestamp::now()),
        payload: RecordPayload::Kinesis(KinesisRecord {
            partition_key: format!("customer-{index}"),
            data: order(index).into_bytes(),
            encryption: KinesisEncryption::None,
        }),
    }
}

/// Never called: every batch succeeds.
struct NoDestination;

impl Deliver for NoDestination {
    async fn deliver(&self, _: FailedBatch<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Reads one shard of `records` until every one is sent and checkpointed; the CPU time it took.
fn run_stream_engine(
    runtime: &tokio::runtime::Runtime,
    records: VecDeque<StreamRecord>,
    batch_size: usize,
    filters: &FilterSet,
) -> Duration {
    let last = Checkpoint::SequenceNumber(
        records
            .back()
            .expect("at least one record")
            .sequence_number
            .clone(),
    );
    let spec: EventSourceMappingSpec = serde_json::from_value(serde_json::json!({
        "source": {"kinesis": {"streamName": "bench"}},
        "target": {"url": "http://target/"},
        "startingPosition": "TRIM_HORIZON",
        "batchSize": batch_size,
        "maximumBatchingWindowInSeconds": 1,
        "targetResponseTypes": ["ReportBatchItemFailures"],
    }))
    .expect("a valid spec");
    let mut settings = StreamSettings::from_spec(&spec, Duration::from_secs(30));
    // Read again at once: the in-memory shard has no GetRecords budget to respect.
    settings.busy_poll = Duration::ZERO;
    settings.idle_poll = Duration::from_millis(1);
    let leases = Arc::new(MemoryLeases::default());
    let metrics = MappingMetrics::detached();
    let count = records.len() as u64;
    let poller = StreamPoller {
        stream: MemoryShard::new(
            "arn:aws:kinesis:us-east-1:000000000000:stream/bench",
            SHARD_ID,
            records,
        ),
        leases: leases.store("bench-0", settings.lease_duration),
        target: NoopTarget,
        destination: None::<NoDestination>,
        filters: filters.clone(),
        settings,
        identity: StreamIdentity {
            mapping: "bench/bench".into(),
            mapping_uid: "bench-uid".into(),
            target_url: "http://target/".into(),
            stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/bench".into(),
            invoke_identity: "esm.dev/namespaces/bench/eventsourcemappings/bench".into(),
            kind: SourceKind::Kinesis,
        },
        metrics: metrics.clone(),
        results: ProcessingResults::default(),
        spans: Default::default(),
    };
    let (stop, stopped) = watch::channel(false);
    let start = thread_cpu_time();
    runtime.block_on(async {
        let run = tokio::spawn(poller.run(stopped));
        // Once every record was sent, stopping finishes the last call and writes the last
        // checkpoint (while running, checkpoints are written at most once a second).
        while metrics.invoked.get() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send_replace(true);
        run.await.expect("the stream engine ran");
    });
    let elapsed = thread_cpu_time() - start;
    assert_eq!(
        leases.lease(SHARD_ID).and_then(|l| l.checkpoint),
        Some(last),
        "the checkpoint reached the last record"
    );
    elapsed
}

/// Times `run` over records made by `make` (before the clock starts) per batch size, with and
/// without a filter.
fn engine_group<R>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn(usize) -> R,
    filter: &str,
    run: impl Fn(&tokio::runtime::Runtime, VecDeque<R>, usize, &FilterSet) -> Duration,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let no_filter = FilterSet::default();
    let filter = FilterSet::parse([filter]).expect("a valid pattern");
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for batch_size in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch_size as u64));
        for (name, filters) in [("no_filter", &no_filter), ("filter", &filter)] {
            group.bench_with_input(
                BenchmarkId::new(name, batch_size),
                &batch_size,
                |b, &batch_size| {
                    b.iter_custom(|batches| {
                        let count = batches as usize * batch_size;
                        let records = (0..count).map(&make).collect();
                        run(&runtime, records, batch_size, filters)
                    })
                },
            );
        }
    }
    group.finish();
}

fn engines(c: &mut Criterion) {
    engine_group(c, "sqs_engine", message, SQS_FILTER, run_queue_engine);
    engine_group(
        c,
        "kinesis_engine",
        kinesis_record,
        KINESIS_FILTER,
        run_stream_engine,
    );
}

/// Heap allocations an engine makes per batch and per record, counted over 100 batches after
/// one warm-up run (so one-time setup is not counted). The records' own strings are made
/// before counting starts.
fn allocations<R>(
    name: &str,
    make: impl Fn(usize) -> R,
    filter: &str,
    run: impl Fn(&tokio::runtime::Runtime, VecDeque<R>, usize, &FilterSet) -> Duration,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let no_filter = FilterSet::default();
    let filter = FilterSet::parse([filter]).expect("a valid pattern");
    println!("\n{name}: heap allocations");
    println!(
        "| filter | batch size | allocations per batch | per record | bytes allocated per record |"
    );
    println!("|---|---|---|---|---|");
    for (label, filters) in [("none", &no_filter), ("1 pattern", &filter)] {
        for batch_size in BATCH_SIZES {
            let batches = 100;
            let records = || {
                (0..batch_size * batches)
                    .map(&make)
                    .collect::<VecDeque<_>>()
            };
            run(&runtime, records(), batch_size, filters);
            let records = records();
            let region = Region::new(ALLOCATOR);
            run(&runtime, records, batch_size, filters);
            let stats = region.change();
            let allocations = (stats.allocations + stats.reallocations) as f64;
            let count = (batch_size * batches) as f64;
            println!(
                "| {label} | {batch_size} | {:.1} | {:.2} | {:.0} |",
                allocations / batches as f64,
                allocations / count,
                stats.bytes_allocated as f64 / count,
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    engines(&mut criterion);
    criterion.final_summary();
    allocations("sqs_engine", message, SQS_FILTER, run_queue_engine);
    allocations(
        "kinesis_engine",
        kinesis_record,
        KINESIS_FILTER,
        run_stream_engine,
    );
}
