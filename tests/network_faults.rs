//! Network faults between the poller and what it talks to, injected by a real fault-injecting
//! proxy (Toxiproxy, `tests/support/toxiproxy.rs`) in front of the Kinesis, SQS and DynamoDB
//! emulators, the target and the kube-apiserver: latency and jitter, connections cut or reset
//! mid-response, blackholes longer than the call timeout, bandwidth limits, and a replica cut
//! off from the API server for longer than its leases last.
//!
//! Every scenario checks Lambda's semantics (nothing lost, order per key, duplicates bounded)
//! and prints a one-line ledger (`LEDGER | ...`) of what it measured, for
//! docs/reliability.md. Faults last a few seconds and record counts are small: the whole binary
//! runs in well under three minutes on a busy 2-core machine.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use esm_operator::sources::aws::CALL_TIMEOUT;
use serde_json::json;
use support::control_plane::ControlPlane;
use support::emulators::{dynamodb_table, shared, unique_name};
use support::ledger::Ledger;
use support::records::keyed_records;
use support::streams::*;
use support::target::EventTarget;
use support::toxiproxy::{Direction, Proxy, Toxic, Toxiproxy, socket_of};
use support::wait;

const SHARDS: i32 = 2;
const KEYS: usize = 10;
const BATCH: usize = 10;
/// How long a fault lasts, unless the scenario needs it longer than a timeout.
const FAULT: Duration = Duration::from_secs(5);
/// What one shard can deliver again after it stopped without writing its last checkpoint (as
/// in tests/stream_mappings.rs' failover): what it finished since its last checkpoint write (a
/// second: 5 reads of 2 batches) plus the batches in flight and read ahead.
const MAX_DUPLICATES_PER_SHARD: usize = 5 * 2 * BATCH + 3 * BATCH;

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn recovered_in(since: Instant) -> String {
    format!(
        "recovered {:.1} s after the fault ended",
        since.elapsed().as_secs_f64()
    )
}

// ------------------------------------------------------------------------------- Kinesis ---

/// Where the proxy stands.
enum Through {
    Kinesis,
    Target,
}

/// A Kinesis mapping read by one in-process poller, with a proxy between it and the emulator
/// or the target.
struct StreamRig {
    fixture: Fixture,
    stream: TestStream,
    target: EventTarget<KinesisEvent>,
    _toxiproxy: Toxiproxy,
    proxy: Proxy,
    poller: Poller,
    put: Vec<(String, String)>,
    last: BTreeMap<String, String>,
}

async fn stream_rig(prefix: &str, through: Through) -> StreamRig {
    let fixture = fixture(prefix).await;
    let stream = create_stream(SHARDS).await;
    let target = EventTarget::<KinesisEvent>::accepting().await;
    let toxiproxy = Toxiproxy::start().await;
    let mut source = stream.source();
    let (proxy, target_url, timeout_seconds) = match through {
        Through::Kinesis => {
            let proxy = toxiproxy
                .proxy("kinesis", socket_of(&stream.endpoint))
                .await;
            source["kinesis"]["endpointUrl"] = json!(proxy.url_for(&stream.endpoint));
            (proxy, target.url.clone(), 10)
        }
        // A short target timeout, so that a slow answer is a failed call.
        Through::Target => {
            let proxy = toxiproxy.proxy("target", socket_of(&target.url)).await;
            let url = proxy.url_for(&target.url);
            (proxy, url, 1)
        }
    };
    fixture
        .mapping(
            "orders",
            json!({
                "source": source,
                "target": {"url": target_url, "timeoutSeconds": timeout_seconds},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": BATCH,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    StreamRig {
        fixture,
        stream,
        target,
        _toxiproxy: toxiproxy,
        proxy,
        poller,
        put: Vec::new(),
        last: BTreeMap::new(),
    }
}

impl StreamRig {
    /// Puts `count` more records (a multiple of KEYS) over the keys.
    async fn put(&mut self, count: usize) {
        let records = keyed_records(count, KEYS, self.put.len() / KEYS);
        self.last.extend(self.stream.put(&records).await);
        self.put.extend(records);
    }

    /// Waits until every record put is checkpointed, stops the poller; the ledger, and the
    /// records of each call.
    async fn settle(self, fault: &str, recovery_from: Instant) -> (Ledger, Vec<Vec<String>>) {
        self.fixture
            .wait_for_checkpoints("orders", &self.last)
            .await;
        let recovered = recovered_in(recovery_from);
        let ledger = Ledger::tally(fault, &self.put, &delivered(&self.target), true, recovered);
        let calls = self
            .target
            .calls()
            .iter()
            .map(|call| kinesis_data(&call.event))
            .collect();
        self.poller.stop().await;
        (ledger, calls)
    }

    /// Puts records before and during `toxics`, which last `fault`; the ledger once everything
    /// is checkpointed.
    async fn through_fault(
        mut self,
        name: &str,
        toxics: &[(Toxic, Direction, f32)],
        fault: Duration,
    ) -> (Ledger, Vec<Vec<String>>) {
        self.put(100).await;
        let mut added = Vec::new();
        for (toxic, direction, toxicity) in toxics {
            added.push(self.proxy.add(*toxic, *direction, *toxicity).await);
        }
        self.put(100).await;
        tokio::time::sleep(fault).await;
        for toxic in &added {
            self.proxy.remove(toxic).await;
        }
        let ended = Instant::now();
        self.put(20).await;
        self.settle(name, ended).await
    }
}

/// Faults on the source connection: a failed read is read again from the same iterator, so
/// duplicates only come from a shard that stopped for want of lease renewals (its balancing
/// rounds list the shards through the same connection).
fn source_fault_bound() -> usize {
    SHARDS as usize * MAX_DUPLICATES_PER_SHARD
}

/// A failed call is sent again whole: every call that repeats a record repeats an earlier
/// call exactly.
fn assert_duplicates_are_resent_batches(calls: &[Vec<String>]) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (index, call) in calls.iter().enumerate() {
        if call.iter().any(|data| seen.contains(data.as_str())) {
            assert!(
                calls[..index].contains(call),
                "call {index} repeats records but is no earlier batch: {call:?}"
            );
        }
        seen.extend(call.iter().map(String::as_str));
    }
}

/// The Kinesis and target scenarios side by side: they mostly wait, and libtest runs only as
/// many tests at once as there are cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_and_target_faults() {
    tokio::join!(
        kinesis_latency_and_jitter(),
        kinesis_blackhole_longer_than_the_call_timeout(),
        kinesis_bandwidth_limit(),
        kinesis_connections_reset_mid_response(),
        target_answers_later_than_the_call_timeout(),
        target_connections_reset_mid_response(),
    );
}

async fn kinesis_latency_and_jitter() {
    let rig = stream_rig("nf-latency", Through::Kinesis).await;
    let latency = Toxic::Latency {
        latency: millis(300),
        jitter: millis(200),
    };
    let (ledger, _) = rig
        .through_fault(
            "Kinesis: latency 300 ms ± 200 ms on every answer",
            &[(latency, Direction::Downstream, 1.0)],
            FAULT,
        )
        .await;
    ledger.check(source_fault_bound());
}

async fn kinesis_blackhole_longer_than_the_call_timeout() {
    let rig = stream_rig("nf-blackhole", Through::Kinesis).await;
    let blackhole = Toxic::Timeout {
        close_after: Duration::ZERO,
    };
    let (ledger, _) = rig
        .through_fault(
            &format!(
                "Kinesis: blackhole for {} s (call timeout {} s)",
                (CALL_TIMEOUT + Duration::from_secs(2)).as_secs(),
                CALL_TIMEOUT.as_secs()
            ),
            &[(blackhole, Direction::Upstream, 1.0)],
            CALL_TIMEOUT + Duration::from_secs(2),
        )
        .await;
    ledger.check(source_fault_bound());
}

async fn kinesis_bandwidth_limit() {
    let mut rig = stream_rig("nf-bandwidth", Through::Kinesis).await;
    let started = Instant::now();
    rig.proxy
        .add(
            Toxic::Bandwidth {
                kilobytes_per_second: 16,
            },
            Direction::Downstream,
            1.0,
        )
        .await;
    rig.put(200).await;
    // The limit stays: "recovered" is when everything was read through it.
    let (ledger, _) = rig
        .settle("Kinesis: answers limited to 16 KB/s throughout", started)
        .await;
    ledger.check(source_fault_bound());
}

async fn kinesis_connections_reset_mid_response() {
    let rig = stream_rig("nf-reset", Through::Kinesis).await;
    let (ledger, _) = rig
        .through_fault(
            "Kinesis: half the connections reset as the answer starts",
            &[(
                Toxic::ResetPeer { after: millis(0) },
                Direction::Downstream,
                0.5,
            )],
            FAULT,
        )
        .await;
    ledger.check(source_fault_bound());
}

async fn target_answers_later_than_the_call_timeout() {
    let rig = stream_rig("nf-target-slow", Through::Target).await;
    let late = Toxic::Latency {
        latency: millis(1500),
        jitter: millis(200),
    };
    let (ledger, calls) = rig
        .through_fault(
            "target: answers 1.5 s late (timeout 1 s)",
            &[(late, Direction::Downstream, 1.0)],
            FAULT,
        )
        .await;
    // What bounds the repeats here is their shape, checked above (each is one earlier batch
    // sent again after its call failed), not a count.
    assert_duplicates_are_resent_batches(&calls);
    ledger.check(ledger.delivered);
}

async fn target_connections_reset_mid_response() {
    let rig = stream_rig("nf-target-reset", Through::Target).await;
    let (ledger, calls) = rig
        .through_fault(
            "target: connections reset before the answer",
            &[(
                Toxic::ResetPeer { after: millis(0) },
                Direction::Downstream,
                1.0,
            )],
            FAULT,
        )
        .await;
    // What bounds the repeats here is their shape, checked above (each is one earlier batch
    // sent again after its call failed), not a count.
    assert_duplicates_are_resent_batches(&calls);
    ledger.check(ledger.delivered);
}

// ---------------------------------------------------------------------- DynamoDB Streams ---

#[tokio::test]
async fn dynamodb_streams_connections_reset() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let fixture = fixture("nf-dynamodb").await;
    let emulator = shared("dynamodb");
    let (dynamodb, table, stream_arn) = dynamodb_table(&emulator, false).await;
    let target = EventTarget::<DynamoDbEvent>::accepting().await;
    let toxiproxy = Toxiproxy::start().await;
    let endpoint = emulator.endpoint("dynamodb");
    let proxy = toxiproxy.proxy("dynamodb", socket_of(endpoint)).await;
    let mut source = dynamodb_source(&emulator, &stream_arn);
    source["dynamodbStreams"]["endpointUrl"] = json!(proxy.url_for(endpoint));
    fixture
        .mapping(
            "orders",
            json!({
                "source": source,
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": BATCH,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    // Each key's item is written again and again: its changes must arrive in order.
    let records = keyed_records(60, 6, 0);
    let put = |records: &[(String, String)]| {
        let (dynamodb, table) = (dynamodb.clone(), table.clone());
        let records = records.to_vec();
        async move {
            for (key, data) in records {
                let n = data.split_once('/').unwrap().1.to_owned();
                dynamodb
                    .put_item()
                    .table_name(&table)
                    .item("pk", AttributeValue::S(key))
                    .item("v", AttributeValue::N(n))
                    .send()
                    .await
                    .expect("PutItem");
            }
        }
    };
    put(&records[..30]).await;
    let reset = proxy
        .add(
            Toxic::ResetPeer { after: millis(0) },
            Direction::Downstream,
            1.0,
        )
        .await;
    put(&records[30..]).await;
    tokio::time::sleep(FAULT).await;
    proxy.remove(&reset).await;
    let ended = Instant::now();
    let changes = |target: &EventTarget<DynamoDbEvent>| -> Vec<String> {
        target
            .calls()
            .into_iter()
            .flat_map(|call| call.event.records)
            .map(|record| {
                let keys = serde_json::to_value(&record.change.keys).unwrap();
                let image = serde_json::to_value(&record.change.new_image).unwrap();
                format!(
                    "{}/{}",
                    keys["pk"]["S"].as_str().unwrap(),
                    image["v"]["N"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expected: BTreeSet<String> = records.iter().map(|(_, data)| data.clone()).collect();
    wait::until("every change delivered", WAIT, || async {
        let got: BTreeSet<String> = changes(&target).into_iter().collect();
        expected.is_subset(&got).then_some(())
    })
    .await;
    let ledger = Ledger::tally(
        "DynamoDB Streams: connections reset before the answer",
        &records,
        &changes(&target),
        true,
        recovered_in(ended),
    );
    ledger.check(MAX_DUPLICATES_PER_SHARD);
    poller.stop().await;
}

// ------------------------------------------------------------------------------------ SQS ---

#[tokio::test]
async fn sqs_connections_reset_then_blackholed() {
    use aws_sdk_sqs::types::QueueAttributeName;

    let fixture = fixture("nf-sqs").await;
    let emulator = shared("elasticmq");
    let sqs = aws_sdk_sqs::Client::new(&emulator.sdk_config("elasticmq"));
    // A short visibility timeout: a message whose receive or delete was cut comes back soon.
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("orders"))
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    let target = EventTarget::<SqsEvent>::accepting().await;
    let toxiproxy = Toxiproxy::start().await;
    let endpoint = emulator.endpoint("elasticmq");
    let proxy = toxiproxy.proxy("elasticmq", socket_of(endpoint)).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": {"sqs": {
                    "queueUrl": queue_url,
                    "region": "us-east-1",
                    "endpointUrl": proxy.url_for(endpoint),
                    "credentialsSecretRef": {"name": "aws"},
                }},
                "target": {"url": target.url},
                "batchSize": BATCH,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    let bodies: Vec<(String, String)> = keyed_records(200, KEYS, 0);
    let send = |bodies: &[(String, String)]| {
        let (sqs, queue_url) = (sqs.clone(), queue_url.clone());
        let bodies = bodies.to_vec();
        async move {
            for chunk in bodies.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, (_, body))| {
                        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(body)
                            .build()
                            .unwrap()
                    })
                    .collect();
                let sent = sqs
                    .send_message_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("SendMessageBatch");
                assert!(sent.failed.is_empty(), "{:?}", sent.failed);
            }
        }
    };
    send(&bodies[..100]).await;
    let reset = proxy
        .add(
            Toxic::ResetPeer { after: millis(0) },
            Direction::Downstream,
            1.0,
        )
        .await;
    send(&bodies[100..150]).await;
    tokio::time::sleep(FAULT).await;
    proxy.remove(&reset).await;
    let blackhole = proxy
        .add(
            Toxic::Timeout {
                close_after: Duration::ZERO,
            },
            Direction::Upstream,
            1.0,
        )
        .await;
    send(&bodies[150..]).await;
    tokio::time::sleep(FAULT).await;
    proxy.remove(&blackhole).await;
    let ended = Instant::now();
    let bodies_delivered = |target: &EventTarget<SqsEvent>| -> Vec<String> {
        target
            .calls()
            .into_iter()
            .flat_map(|call| call.event.records)
            .map(|message| message.body.unwrap_or_default())
            .collect()
    };
    let expected: BTreeSet<&str> = bodies.iter().map(|(_, body)| body.as_str()).collect();
    // Every message delivered and deleted: the queue is empty, in flight included.
    wait::until("every message delivered and deleted", WAIT, || async {
        let got = bodies_delivered(&target);
        let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        if !expected.is_subset(&got) {
            return None;
        }
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .ok()?
            .attributes
            .unwrap_or_default();
        let count = |name| {
            attributes
                .get(&name)
                .map_or(0, |v: &String| v.parse::<u64>().unwrap_or(u64::MAX))
        };
        (count(QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0)
            .then_some(())
    })
    .await;
    let delivered = bodies_delivered(&target);
    let ledger = Ledger::tally(
        format!(
            "SQS: connections reset for {} s, then a blackhole for {} s (receive timeout {} s)",
            FAULT.as_secs(),
            FAULT.as_secs(),
            (esm_operator::sources::sqs::MAX_WAIT + CALL_TIMEOUT).as_secs()
        ),
        &bodies,
        &delivered,
        false,
        recovered_in(ended),
    );
    // A message comes back when its receive or delete was cut: at least once, and no message
    // more than twice on average.
    ledger.check(bodies.len());
    poller.stop().await;
}

// -------------------------------------------------------------------------- kube-apiserver ---

/// A client of the test control plane that reaches the kube-apiserver through `proxy` (TLS
/// passes through: the serving certificate is for 127.0.0.1, whatever the port).
#[tokio::test]
async fn a_replica_cut_off_from_the_apiserver_stops_and_another_takes_over() {
    let fixture = fixture("nf-apiserver").await;
    let stream = create_stream(SHARDS).await;
    let target = EventTarget::<KinesisEvent>::accepting().await;
    let toxiproxy = Toxiproxy::start().await;
    let proxy = toxiproxy
        .proxy(
            "kube-apiserver",
            ControlPlane::shared().api_server_address(),
        )
        .await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": BATCH,
            }),
        )
        .await;
    let cut_off = fixture.start_with(
        ControlPlane::shared().client_through(&proxy).await,
        "orders",
        "replica-a",
    );
    let mut put = keyed_records(100, KEYS, 0);
    let mut last = stream.put(&put).await;
    fixture.wait_for_checkpoints("orders", &last).await;
    let holders = |leases: BTreeMap<String, (Option<String>, Option<String>)>| -> BTreeSet<String> {
        leases
            .into_values()
            .filter_map(|(holder, _)| holder)
            .collect()
    };
    assert_eq!(
        holders(fixture.leases("orders").await),
        BTreeSet::from(["replica-a".to_string()])
    );

    // Replica A's connections to the API server go silent (a partition: nothing answers,
    // nothing is refused); replica B starts with a direct connection, and records keep coming.
    let blackhole = proxy
        .add(
            Toxic::Timeout {
                close_after: Duration::ZERO,
            },
            Direction::Upstream,
            1.0,
        )
        .await;
    let cut_at = Instant::now();
    let invoked = |poller: &Poller| poller.counter("esm_poller_records_invoked_total") as usize;
    let invoked_at_cut = invoked(&cut_off);
    let other = fixture.start("orders", "replica-b");
    for _ in 0..6 {
        let more = keyed_records(20, KEYS, put.len() / KEYS);
        last.extend(stream.put(&more).await);
        put.extend(more);
        tokio::time::sleep(millis(500)).await;
    }
    // B takes every shard once A's leases expired; by then A has stopped reading them itself.
    wait::until("replica-b holding every shard", WAIT, || async {
        let leases = fixture.leases("orders").await;
        (leases.len() == SHARDS as usize
            && holders(leases) == BTreeSet::from(["replica-b".to_string()]))
        .then_some(())
    })
    .await;
    let takeover = cut_at.elapsed();
    let invoked_at_takeover = invoked(&cut_off);
    let more = keyed_records(40, KEYS, put.len() / KEYS);
    last.extend(stream.put(&more).await);
    put.extend(more);
    fixture.wait_for_checkpoints("orders", &last).await;
    assert_eq!(
        invoked(&cut_off),
        invoked_at_takeover,
        "the cut-off replica called the target for shards it no longer held"
    );
    wait::until("replica-a owning no shard", WAIT, || async {
        (cut_off.gauge("esm_poller_owned_shards") == 0).then_some(())
    })
    .await;

    // The connection comes back: A rejoins and takes its share from B, which hands it over.
    proxy.remove(&blackhole).await;
    let healed = Instant::now();
    wait::until("replica-a holding a shard again", WAIT, || async {
        holders(fixture.leases("orders").await)
            .contains("replica-a")
            .then_some(())
    })
    .await;
    let rejoined = healed.elapsed();
    let more = keyed_records(40, KEYS, put.len() / KEYS);
    last.extend(stream.put(&more).await);
    put.extend(more);
    fixture.wait_for_checkpoints("orders", &last).await;

    let ledger = Ledger::tally(
        format!(
            "kube-apiserver blackholed for replica-a past its lease ({} s), replica-b direct",
            LEASE_DURATION.as_secs()
        ),
        &put,
        &delivered(&target),
        true,
        format!(
            "replica-b held every shard {:.1} s after the cut; replica-a sent {} records after the cut; rejoined {:.1} s after the heal",
            takeover.as_secs_f64(),
            invoked_at_takeover - invoked_at_cut,
            rejoined.as_secs_f64()
        ),
    );
    // Delivered by both replicas: only what A sent after its last checkpoint reached the API
    // server, which is after the cut (everything before was checkpointed).
    ledger.check(invoked_at_takeover - invoked_at_cut);
    other.stop().await;
    cut_off.stop().await;
}
