//! The chaos soak (issue #15): a Kinesis mapping resharded every few minutes and an SQS FIFO
//! mapping run for `ESM_SOAK_SECONDS` (default 30 minutes) while random faults hit them, one
//! every few seconds: network faults through Toxiproxy between the pollers and the emulators,
//! the target and the kube-apiserver (latency and jitter, resets, blackholes, bandwidth limits,
//! the API server unreachable for longer than a lease), restarts (kube-apiserver + etcd,
//! ElasticMQ, a poller replica killed) and a target that fails whole batches or lists failed
//! items. Then every fault is lifted and the ledger drawn once everything put was accepted:
//! records put, delivered, lost, duplicated, order violations per key (per message group).
//!
//! Not a CI test (`#[ignore]`): `hack/soak.sh [SECONDS] [SEED]` runs it and prints the ledger
//! lines docs/reliability.md quotes. What it asserts holds whatever the machine's speed: none
//! lost, no key out of order.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::json;
use support::control_plane::ControlPlane;
use support::emulators::Emulators;
use support::ledger::{self, Ledger};

use support::streams::{StreamProducer, TestStream, create_stream, fixture_on, kinesis_data};
use support::target::{EventTarget, batch_item_failures};
use support::toxiproxy::{Direction, Proxy, Toxic, Toxiproxy, socket_of};
use tokio::sync::watch;

const DEFAULT_SECONDS: u64 = 1800;
/// The target's call timeout: a blackhole on the target's path outlasts it.
const TARGET_TIMEOUT_SECONDS: u64 = 2;
/// SQS visibility timeout: 6 target timeouts and more, as the mapping's check advises.
const VISIBILITY_TIMEOUT_SECONDS: u64 = 15;
const RESHARD_EVERY: Duration = Duration::from_secs(180);
/// Kinesis keys and FIFO message groups the producers write to, one record each per round.
const KEYS: usize = 20;
const GROUPS: usize = 10;
/// After the last fault, how long everything put may take to be accepted.
const DRAIN: Duration = Duration::from_secs(600);
const STALLED: Duration = Duration::from_secs(90);

/// SplitMix64: a seeded generator, so a run's faults can be replayed with its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A whole number in `range`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.between(low, high))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

/// How the target answers, switched by the fault injector.
#[derive(Clone, Copy)]
#[repr(u8)]
enum TargetMode {
    Accept = 0,
    /// HTTP 500: the whole batch failed.
    Fail = 1,
    /// A partial batch response listing the batch's last record.
    ListLast = 2,
}

/// A target whose answers follow a shared [`TargetMode`], and the record data it accepted, in
/// order (what a successful answer covered: everything, or all but the listed last record).
struct SoakTarget<E> {
    target: EventTarget<E>,
    accepted: Arc<Mutex<Vec<String>>>,
    data: fn(&E) -> Vec<(String, String)>,
}

impl<E: serde::de::DeserializeOwned + Clone + Send + Sync + 'static> SoakTarget<E> {
    async fn start(mode: Arc<AtomicU8>, data: fn(&E) -> Vec<(String, String)>) -> SoakTarget<E> {
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = accepted.clone();
        let target = EventTarget::<E>::start(move |_, event| {
            let records = data(event);
            let mode = mode.load(Ordering::SeqCst);
            if mode == TargetMode::Fail as u8 || records.is_empty() {
                return (500, "injected failure".into());
            }
            let mut accepted = seen.lock().unwrap();
            if mode == TargetMode::ListLast as u8 {
                let (last_id, _) = records.last().unwrap();
                accepted.extend(records[..records.len() - 1].iter().map(|(_, d)| d.clone()));
                return (200, batch_item_failures([last_id.as_str()]));
            }
            accepted.extend(records.into_iter().map(|(_, d)| d));
            (200, String::new())
        })
        .await;
        SoakTarget {
            target,
            accepted,
            data,
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    /// The record data of every call, whatever the answer.
    fn called(&self) -> Vec<String> {
        self.target
            .calls()
            .iter()
            .flat_map(|call| (self.data)(&call.event))
            .map(|(_, data)| data)
            .collect()
    }
}

/// (item id for a partial batch response, data) of each record of a Kinesis event.
fn kinesis_records(event: &KinesisEvent) -> Vec<(String, String)> {
    event
        .records
        .iter()
        .map(|r| r.kinesis.sequence_number.clone())
        .zip(kinesis_data(event))
        .collect()
}

/// (message id, body) of each message of an SQS event.
fn sqs_records(event: &SqsEvent) -> Vec<(String, String)> {
    event
        .records
        .iter()
        .map(|r| (r.message_id.clone().unwrap(), r.body.clone().unwrap()))
        .collect()
}

/// The faults the injector chooses from, with their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Latency,
    ResetPeer,
    Blackhole,
    Bandwidth,
    TargetFails,
    TargetListsFailures,
    ApiServerUnreachable,
    ReplicaKilled,
    ElasticMqRestarted,
    ApiServerRestarted,
}

const FAULTS: &[(Fault, u64)] = &[
    (Fault::Latency, 6),
    (Fault::ResetPeer, 6),
    (Fault::Blackhole, 4),
    (Fault::Bandwidth, 4),
    (Fault::TargetFails, 3),
    (Fault::TargetListsFailures, 3),
    (Fault::ApiServerUnreachable, 1),
    (Fault::ReplicaKilled, 1),
    (Fault::ElasticMqRestarted, 1),
    (Fault::ApiServerRestarted, 1),
];

/// The faults to choose from: all, or those `ESM_SOAK_FAULTS` names (e.g. `Latency,ResetPeer`),
/// to find which fault a finding needs.
fn faults() -> Vec<(Fault, u64)> {
    let Ok(names) = std::env::var("ESM_SOAK_FAULTS") else {
        return FAULTS.to_vec();
    };
    let chosen: Vec<(Fault, u64)> = FAULTS
        .iter()
        .filter(|(fault, _)| {
            names
                .split(',')
                .any(|name| name.trim() == format!("{fault:?}"))
        })
        .copied()
        .collect();
    assert!(
        !chosen.is_empty(),
        "ESM_SOAK_FAULTS={names} names none of {:?}",
        FAULTS.iter().map(|(fault, _)| fault).collect::<Vec<_>>()
    );
    chosen
}

fn choose(random: &mut Random, faults: &[(Fault, u64)]) -> Fault {
    let total: u64 = faults.iter().map(|(_, weight)| weight).sum();
    let mut roll = random.next() % total;
    for (fault, weight) in faults {
        if roll < *weight {
            return *fault;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total weight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a 30-minute soak: hack/soak.sh runs it"]
async fn chaos_soak() {
    let seconds: u64 = std::env::var("ESM_SOAK_SECONDS")
        .map(|s| s.parse().expect("ESM_SOAK_SECONDS is a number of seconds"))
        .unwrap_or(DEFAULT_SECONDS);
    let seed: u64 = std::env::var("ESM_SOAK_SEED")
        .map(|s| s.parse().expect("ESM_SOAK_SEED is a number"))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    println!("SOAK seconds={seconds} seed={seed}");
    // The pollers' warnings show what each fault did (RUST_LOG overrides).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mut random = Random(seed);
    let faults = faults();

    // What can be restarted is this test's own: the control plane and ElasticMQ (persistent).
    let plane = ControlPlane::own();
    let fixture = fixture_on(&plane, "soak").await;
    let toxiproxy = Toxiproxy::start().await;
    let elasticmq = Emulators::start_persistent(&["elasticmq"]);
    let stream = create_stream(4).await;

    let kinesis_proxy = toxiproxy
        .proxy("kinesis", socket_of(&stream.endpoint))
        .await;
    let sqs_proxy = toxiproxy
        .proxy("elasticmq", socket_of(elasticmq.endpoint("elasticmq")))
        .await;
    let mode = Arc::new(AtomicU8::new(TargetMode::Accept as u8));
    let kinesis_target = SoakTarget::<KinesisEvent>::start(mode.clone(), kinesis_records).await;
    let sqs_target = SoakTarget::<SqsEvent>::start(mode.clone(), sqs_records).await;
    let kinesis_target_proxy = toxiproxy
        .proxy("kinesis-target", socket_of(&kinesis_target.target.url))
        .await;
    let sqs_target_proxy = toxiproxy
        .proxy("sqs-target", socket_of(&sqs_target.target.url))
        .await;
    let api_proxy = toxiproxy
        .proxy("kube-apiserver", plane.api_server_address())
        .await;
    let proxies: [(&str, &Proxy); 5] = [
        ("kinesis", &kinesis_proxy),
        ("elasticmq", &sqs_proxy),
        ("kinesis-target", &kinesis_target_proxy),
        ("sqs-target", &sqs_target_proxy),
        ("kube-apiserver", &api_proxy),
    ];

    let sqs = aws_sdk_sqs::Client::new(&elasticmq.sdk_config("elasticmq"));
    let queue_url = sqs
        .create_queue()
        .queue_name("soak.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT_SECONDS.to_string(),
        )
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .unwrap();

    let mut kinesis_source = stream.source();
    kinesis_source["kinesis"]["endpointUrl"] = json!(kinesis_proxy.url_for(&stream.endpoint));
    fixture
        .mapping(
            "clicks",
            json!({
                "source": kinesis_source,
                "target": {"url": kinesis_target_proxy.url_for(&kinesis_target.target.url),
                           "timeoutSeconds": TARGET_TIMEOUT_SECONDS},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 100,
                "targetResponseTypes": ["ReportBatchItemFailures"],
            }),
        )
        .await;
    fixture
        .mapping(
            "payments",
            json!({
                "source": {"sqs": {
                    "queueUrl": queue_url,
                    "region": "us-east-1",
                    "endpointUrl": sqs_proxy.url_for(elasticmq.endpoint("elasticmq")),
                    "credentialsSecretRef": {"name": "aws"},
                }},
                "target": {"url": sqs_target_proxy.url_for(&sqs_target.target.url),
                           "timeoutSeconds": TARGET_TIMEOUT_SECONDS},
                "batchSize": 10,
                "targetResponseTypes": ["ReportBatchItemFailures"],
            }),
        )
        .await;
    // Kinesis replica a and the SQS replica reach the API server through the proxy, Kinesis
    // replica b directly: when a is cut off, b must take its shards over.
    let through_proxy = plane.client_through(&api_proxy).await;
    let mut replica_a = fixture.start_with(through_proxy.clone(), "clicks", "replica-a");
    let replica_b = fixture.start("clicks", "replica-b");
    let sqs_replica = fixture.start_with(through_proxy.clone(), "payments", "replica-sqs");

    // Producers, straight to the emulators (the faults are on the pollers' side).
    let kinesis_producer = StreamProducer::start(&stream, KEYS, Duration::from_millis(500));
    let (stop_sqs, sqs_stopped) = watch::channel(false);
    let sqs_put: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sqs_producer = tokio::spawn(produce_sqs(
        sqs.clone(),
        queue_url.clone(),
        sqs_stopped,
        sqs_put.clone(),
    ));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut next_reshard = started + RESHARD_EVERY;
    let mut split_children: Option<(String, String)> = None;
    let mut reshards = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(random.millis(200, 800)).await;
        if Instant::now() >= next_reshard {
            split_children = reshard(&stream, split_children).await;
            reshards += 1;
            next_reshard = Instant::now() + RESHARD_EVERY;
        }
        let fault = choose(&mut random, &faults);
        *injected.entry(fault).or_default() += 1;
        match fault {
            Fault::Latency | Fault::ResetPeer | Fault::Blackhole | Fault::Bandwidth => {
                let (_, proxy) = *random.pick(&proxies);
                let (toxic, hold) = match fault {
                    Fault::Latency => (
                        Toxic::Latency {
                            latency: random.millis(100, 1500),
                            jitter: random.millis(0, 500),
                        },
                        random.millis(1000, 3000),
                    ),
                    Fault::ResetPeer => (
                        Toxic::ResetPeer {
                            after: random.millis(0, 500),
                        },
                        random.millis(500, 2000),
                    ),
                    // Longer than the target's call timeout.
                    Fault::Blackhole => (
                        Toxic::Timeout {
                            close_after: Duration::ZERO,
                        },
                        random.millis(TARGET_TIMEOUT_SECONDS * 1000 + 500, 5000),
                    ),
                    _ => (
                        Toxic::Bandwidth {
                            kilobytes_per_second: random.between(4, 64),
                        },
                        random.millis(1000, 3000),
                    ),
                };
                let direction = if random.next().is_multiple_of(2) {
                    Direction::Upstream
                } else {
                    Direction::Downstream
                };
                let name = proxy.add(toxic, direction, 1.0).await;
                tokio::time::sleep(hold).await;
                proxy.remove(&name).await;
            }
            Fault::TargetFails | Fault::TargetListsFailures => {
                let failing = if fault == Fault::TargetFails {
                    TargetMode::Fail
                } else {
                    TargetMode::ListLast
                };
                mode.store(failing as u8, Ordering::SeqCst);
                tokio::time::sleep(random.millis(500, 2000)).await;
                mode.store(TargetMode::Accept as u8, Ordering::SeqCst);
            }
            Fault::ApiServerUnreachable => {
                api_proxy.set_enabled(false).await;
                // Longer than a lease: replica a can no longer prove it holds its shards.
                tokio::time::sleep(support::streams::LEASE_DURATION + random.millis(1000, 4000))
                    .await;
                api_proxy.set_enabled(true).await;
            }
            Fault::ReplicaKilled => {
                replica_a.task.abort();
                let _ = (&mut replica_a.task).await;
                tokio::time::sleep(random.millis(500, 3000)).await;
                replica_a = fixture.start_with(through_proxy.clone(), "clicks", "replica-a");
            }
            Fault::ElasticMqRestarted => elasticmq.restart("elasticmq").await,
            Fault::ApiServerRestarted => {
                plane.stop_api_server_and_etcd().await;
                tokio::time::sleep(random.millis(1000, 5000)).await;
                plane.start_stopped().await;
            }
        }
    }
    let injected_count: usize = injected.values().sum();
    println!("SOAK faults={injected_count} reshards={reshards} {injected:?}");

    // Every fault lifted; the producers stop; everything put must be accepted.
    let _ = stop_sqs.send(true);
    let kinesis_put: Vec<(String, String)> = kinesis_producer
        .stop()
        .await
        .into_iter()
        .map(|put| (put.key, put.data))
        .collect();
    sqs_producer.await.unwrap();
    let faults_ended = Instant::now();
    let sqs_put = sqs_put.lock().unwrap().clone();
    let missing = |put: &[(String, String)], accepted: Vec<String>| {
        let accepted: std::collections::HashSet<String> = accepted.into_iter().collect();
        put.iter()
            .filter(|(_, data)| !accepted.contains(data))
            .count()
    };
    // Drained when nothing is missing; given up when nothing moved for STALLED (well past the
    // visibility timeout and a lease) or at DRAIN.
    let drain_deadline = Instant::now() + DRAIN;
    let mut last_progress = (usize::MAX, Instant::now());
    loop {
        let (kinesis_missing, sqs_missing) = (
            missing(&kinesis_put, kinesis_target.accepted()),
            missing(&sqs_put, sqs_target.accepted()),
        );
        let now = Instant::now();
        if kinesis_missing + sqs_missing != last_progress.0 {
            last_progress = (kinesis_missing + sqs_missing, now);
        }
        if kinesis_missing + sqs_missing == 0
            || now >= drain_deadline
            || now - last_progress.1 >= STALLED
        {
            break;
        }
        if (now - faults_ended).as_secs().is_multiple_of(10) {
            println!(
                "SOAK draining: {kinesis_missing} Kinesis records and {sqs_missing} SQS messages not accepted yet"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // When the drain did not finish, the ledger says what is missing (and lost > 0 fails below).
    let recovered = format!(
        "everything accepted {} after the last fault",
        ledger::seconds(faults_ended.elapsed())
    );

    // What was never accepted, and whether the target saw it at all (answered it with a
    // failure every time) or was never called with it.
    for (source, put, accepted, called) in [
        (
            "Kinesis",
            &kinesis_put,
            kinesis_target.accepted(),
            kinesis_target.called(),
        ),
        ("SQS", &sqs_put, sqs_target.accepted(), sqs_target.called()),
    ] {
        let accepted: std::collections::HashSet<String> = accepted.into_iter().collect();
        let called: std::collections::HashSet<String> = called.into_iter().collect();
        let missing: Vec<&String> = put
            .iter()
            .map(|(_, data)| data)
            .filter(|data| !accepted.contains(*data))
            .collect();
        if !missing.is_empty() {
            let seen = missing
                .iter()
                .filter(|data| called.contains(**data))
                .count();
            println!(
                "SOAK {source}: {} never accepted ({seen} of them sent to the target), e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
    }

    let ledgers = [
        Ledger::tally(
            "soak: Kinesis, 4 shards resharded",
            &kinesis_put,
            &kinesis_target.accepted(),
            true,
            recovered.clone(),
        ),
        Ledger::tally(
            "soak: SQS FIFO, 10 groups",
            &sqs_put,
            &sqs_target.accepted(),
            true,
            recovered.clone(),
        ),
    ];
    for ledger in &ledgers {
        ledger.print();
    }
    for poller in [replica_a, replica_b, sqs_replica] {
        poller.stop().await;
    }
    assert!(injected_count >= 1, "no fault was injected");
    for ledger in &ledgers {
        assert_eq!(ledger.lost, 0, "{ledger}");
        assert_eq!(ledger.order_violations, Some(0), "{ledger}");
    }
}

/// Sends one message per group per round, about 10 a second, until `stopped`. A batch that
/// fails (ElasticMQ restarting) is sent again with the same deduplication ids.
async fn produce_sqs(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    stopped: watch::Receiver<bool>,
    put: Arc<Mutex<Vec<(String, String)>>>,
) {
    let mut round = 0;
    while !*stopped.borrow() {
        let messages: Vec<(String, String)> = (0..GROUPS)
            .map(|group| (format!("g{group}"), format!("g{group}/{round}")))
            .collect();
        let entries: Vec<SendMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .map(|(index, (group, body))| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body)
                    .message_group_id(group)
                    .message_deduplication_id(body.replace('/', "-"))
                    .build()
                    .unwrap()
            })
            .collect();
        loop {
            let sent = sqs
                .send_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await;
            match sent {
                Ok(output) if output.failed.is_empty() => break,
                Ok(output) => eprintln!("SendMessageBatch failed entries: {:?}", output.failed),
                Err(err) => eprintln!("SendMessageBatch: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        put.lock().unwrap().extend(messages);
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Splits the first open shard, or merges the two children of the last split back: the
/// stream keeps 4 or 5 open shards. Returns the children to merge next time.
async fn reshard(stream: &TestStream, split: Option<(String, String)>) -> Option<(String, String)> {
    if let Some((first, second)) = split {
        stream.merge(&first, &second).await;
        return None;
    }
    let open: Vec<_> = stream
        .shards()
        .await
        .into_iter()
        .filter(|s| {
            s.sequence_number_range
                .as_ref()
                .is_some_and(|r| r.ending_sequence_number.is_none())
        })
        .collect();
    let parent = open[0].shard_id.clone();
    stream.split(&parent).await;
    let mut children: Vec<String> = stream
        .shards()
        .await
        .into_iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some(parent.as_str()))
        .map(|s| s.shard_id)
        .collect();
    children.sort();
    Some((children[0].clone(), children[1].clone()))
}
