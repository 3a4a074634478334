//! Restarts under load (issue #15): kube-apiserver and etcd restarted under running Kinesis
//! pollers, ElasticMQ restarted with SQS messages in flight, and the controller killed while it
//! scales a queue's pollers up. Each test checks Lambda's semantics (every record delivered at
//! least once, per-key order on streams, duplicates only where the restart allows them, no
//! operator action) and prints a `LEDGER` line for docs/reliability.md.
//!
//! libtest runs as many tests at once as there are cores, in name order: on two cores the
//! controller test, named to sort last, starts when the shorter ElasticMQ one ends.
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use esm_operator::api::{EventSourceMapping, ScalingStatus};
use esm_operator::controller::ScalingSettings;
use esm_operator::poller::status::OK;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::SignedDuration;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::controller::RunningController;
use support::emulators::{Emulators, shared, unique_name};
use support::ledger::{Ledger, seconds};
use support::records::{assert_complete_and_ordered, keyed_records};
use support::streams::{
    Fixture, LEASE_DURATION, Poller, Put, StreamProducer, WAIT, at_or_past, create_stream,
    delivered, fixture, fixture_on, last_sequences,
};
use support::target::{EventTarget, TestTarget};
use support::wait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Keys of the records put: one record of each per round.
const KEYS: usize = 20;
/// Time between two rounds of records.
const ROUND: Duration = Duration::from_millis(250);

// ------------------------------------------------------- kube-apiserver + etcd restart ---

/// Waits until every shard of `past` is checkpointed at or past its sequence number.
async fn wait_until_checkpointed(fixture: &Fixture, name: &str, past: &BTreeMap<String, String>) {
    wait::until("checkpoints past the records put", WAIT, || async {
        let leases = fixture.leases(name).await;
        past.iter()
            .all(|(shard, sequence)| {
                leases
                    .get(shard)
                    .and_then(|(_, checkpoint)| checkpoint.as_deref())
                    .is_some_and(|checkpoint| at_or_past(checkpoint, sequence))
            })
            .then_some(())
    })
    .await;
}

/// Waits until the API server answers this test's client again (its pooled connections died
/// with the old server).
async fn answers(client: &Client, namespace: &str) {
    wait::until("the API server to answer", WAIT, || async {
        Api::<Lease>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().limit(1))
            .await
            .ok()
    })
    .await;
}

async fn last_processing_result(fixture: &Fixture, name: &str) -> Option<String> {
    Api::<EventSourceMapping>::namespaced(fixture.client.clone(), fixture.ns())
        .get(name)
        .await
        .ok()?
        .status?
        .last_processing_result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_pollers_ride_out_a_kube_apiserver_and_etcd_restart() {
    let plane = ControlPlane::own();
    let fixture = fixture_on(&plane, "restart-apiserver").await;
    let stream = create_stream(4).await;
    let target = EventTarget::<KinesisEvent>::accepting().await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 50,
            }),
        )
        .await;
    let producer = StreamProducer::start(&stream, KEYS, ROUND);
    let pollers = [
        fixture.start("orders", "replica-a"),
        fixture.start("orders", "replica-b"),
    ];
    wait::until("a checkpoint on every shard", WAIT, || async {
        let leases = fixture.leases("orders").await;
        (leases.len() == 4 && leases.values().all(|(_, c)| c.is_some())).then_some(())
    })
    .await;

    let before = fixture.leases("orders").await;
    plane.stop_api_server_and_etcd().await;
    // Longer than a lease: the pollers cannot renew theirs and stop reading, as they must.
    tokio::time::sleep(2 * LEASE_DURATION).await;
    plane.start_stopped().await;
    let restarted = Instant::now();
    let put_while_down = producer.last_sequences();
    answers(&fixture.client, fixture.ns()).await;

    // The leases and their checkpoints survived: the same shards, none behind where it was.
    let after = fixture.leases("orders").await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (shard, (_, checkpoint)) in &before {
        let checkpoint = checkpoint.as_deref().unwrap();
        let now = after[shard].1.as_deref().expect("the checkpoint survived");
        assert!(
            at_or_past(now, checkpoint),
            "{shard}: checkpoint {now} is behind {checkpoint}, where it was before the restart"
        );
    }
    // The pollers reconnect by themselves and catch up with what was put meanwhile.
    wait_until_checkpointed(&fixture, "orders", &put_while_down).await;
    let recovered_in = restarted.elapsed();

    let puts = producer.stop().await;
    fixture
        .wait_for_checkpoints("orders", &last_sequences(&puts))
        .await;
    let holders = fixture.leases("orders").await;
    assert!(
        holders
            .values()
            .all(|(holder, _)| matches!(holder.as_deref(), Some("replica-a" | "replica-b"))),
        "every shard is held again: {holders:?}"
    );
    // The pollers' status writes came back too (a problem shows for one interval, then OK).
    wait::until("lastProcessingResult OK again", WAIT, || async {
        (last_processing_result(&fixture, "orders").await.as_deref() == Some(OK)).then_some(())
    })
    .await;
    for poller in pollers {
        poller.stop().await;
    }

    let got = delivered(&target);
    let records: Vec<(String, String)> = puts
        .iter()
        .map(|put| (put.key.clone(), put.data.clone()))
        .collect();
    Ledger::tally(
        "kinesis, kube-apiserver + etcd restarted",
        &records,
        &got,
        true,
        seconds(recovered_in),
    )
    .print();
    assert_complete_and_ordered(&got, &records);
    // Delivered again only from the last checkpoint: every repeat lies past the checkpoint its
    // shard had when the API server went away.
    let put_of: HashMap<&str, &Put> = puts.iter().map(|put| (put.data.as_str(), put)).collect();
    let mut deliveries: HashMap<&str, usize> = HashMap::new();
    for data in &got {
        *deliveries.entry(data.as_str()).or_default() += 1;
    }
    for (data, count) in deliveries.into_iter().filter(|(_, count)| *count > 1) {
        let put = put_of[data];
        let checkpoint = before[&put.shard].1.as_deref().unwrap();
        assert!(
            !at_or_past(checkpoint, &put.sequence),
            "{data} ({} {}) delivered {count} times, though checkpointed at {checkpoint} before the restart",
            put.shard,
            put.sequence
        );
    }
}

// --------------------------------------------------------------------- SQS queues ---

async fn create_queue(sqs: &aws_sdk_sqs::Client, visibility_timeout: Duration) -> String {
    sqs.create_queue()
        .queue_name(unique_name("restarts"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.as_secs().to_string(),
        )
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL")
}

/// Sends the records' data as message bodies, 10 per SendMessageBatch.
async fn send(sqs: &aws_sdk_sqs::Client, queue_url: &str, records: &[(String, String)]) {
    for chunk in records.chunks(10) {
        let entries = chunk.iter().enumerate().map(|(i, (_, body))| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(body)
                .build()
                .unwrap()
        });
        let sent = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("SendMessageBatch");
        assert!(sent.failed.is_empty(), "{:?}", sent.failed);
    }
}

/// Messages in the queue: visible, in flight (received, not deleted) and delayed.
async fn queued(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> (u64, u64, u64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default();
    let number = |name: QueueAttributeName| -> u64 {
        attributes
            .get(&name)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (
        number(QueueAttributeName::ApproximateNumberOfMessages),
        number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        number(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    )
}

fn bodies(target: &TestTarget) -> Vec<String> {
    target
        .calls()
        .iter()
        .flat_map(|call| call.event.records.iter())
        .map(|record| record.body.clone().expect("a body"))
        .collect()
}

/// Waits until every record was delivered and the queue holds nothing: each message deleted.
async fn wait_until_drained(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    target: &TestTarget,
    records: &[(String, String)],
) {
    wait::until("every message delivered and deleted", WAIT, || async {
        let got: HashSet<String> = bodies(target).into_iter().collect();
        let all = records.iter().all(|(_, body)| got.contains(body));
        (all && queued(sqs, queue_url).await == (0, 0, 0)).then_some(())
    })
    .await;
}

fn sqs_source(emulators: &Emulators, queue_url: &str) -> Value {
    json!({"sqs": {
        "queueUrl": queue_url,
        "region": "us-east-1",
        "endpointUrl": emulators.endpoint("elasticmq"),
        "credentialsSecretRef": {"name": "aws"},
    }})
}

// ------------------------------------------------------------------ ElasticMQ restart ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticmq_restarted_with_sqs_messages_in_flight_loses_none() {
    // ElasticMQ keeps queues and messages in H2 here, visibility and receipt handles included.
    let elasticmq = Emulators::start_persistent(&["elasticmq"]);
    let sqs = aws_sdk_sqs::Client::new(&elasticmq.sdk_config("elasticmq"));
    // Longer than the restart takes (ElasticMQ holds its long polls open past the 10 s a stop
    // waits, then starts anew): what is in flight then must wait it out.
    let visibility_timeout = Duration::from_secs(30);
    let queue_url = create_queue(&sqs, visibility_timeout).await;
    let records = keyed_records(400, KEYS, 0);
    send(&sqs, &queue_url, &records).await;
    let fixture = fixture("restart-elasticmq").await;
    // Batches stay at the target a while: some are always in flight.
    let target = TestTarget::accepting_after(Duration::from_millis(250)).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": sqs_source(&elasticmq, &queue_url),
                "target": {"url": target.url, "timeoutSeconds": 1},
                "batchSize": 10,
                "poller": {"batchesPerReplica": 4},
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    wait::until("a quarter of the messages delivered", WAIT, || async {
        (bodies(&target).len() >= records.len() / 4).then_some(())
    })
    .await;

    let (_, in_flight, _) = queued(&sqs, &queue_url).await;
    elasticmq.restart("elasticmq").await;
    let restarted = Instant::now();
    let before_restart: HashSet<String> = bodies(&target).into_iter().collect();
    let (_, still_in_flight, _) = queued(&sqs, &queue_url).await;
    eprintln!(
        "in flight before the restart: {in_flight}; after it: {still_in_flight}; \
         delivered before it: {}",
        before_restart.len()
    );
    // The poller recovers by itself: its receive loops back off and poll again.
    wait::until("a message delivered after the restart", WAIT, || async {
        bodies(&target)
            .iter()
            .any(|body| !before_restart.contains(body))
            .then_some(())
    })
    .await;
    let recovered_in = restarted.elapsed();
    wait_until_drained(&sqs, &queue_url, &target, &records).await;
    let delete_failures = poller.counter("esm_poller_delete_failures_total");
    poller.stop().await;

    let calls = target.calls();
    let got = bodies(&target);
    let ledger = Ledger::tally(
        "sqs, ElasticMQ restarted with messages in flight",
        &records,
        &got,
        false,
        seconds(recovered_in),
    );
    ledger.print();
    eprintln!("deletes that failed while ElasticMQ was down: {delete_failures}");
    assert_eq!(ledger.lost, 0, "messages lost");
    // Only messages received before the restart can come twice: their deletes failed while
    // ElasticMQ was down, or their batch was at the target then.
    let mut seen = HashSet::new();
    let repeated: HashSet<&String> = got.iter().filter(|body| !seen.insert(*body)).collect();
    let unexpected: Vec<_> = repeated
        .iter()
        .filter(|body| !before_restart.contains(**body))
        .collect();
    assert!(
        unexpected.is_empty(),
        "received after the restart, yet delivered twice: {unexpected:?}"
    );
    // They came back only after their visibility timeout: ElasticMQ kept it across the
    // restart.
    assert_repeats_only_after_visibility_timeout(&calls, visibility_timeout);
}

/// Every repeat of a message came at least its visibility timeout after its first call (less
/// 5 s for the time between the receive and the call): SQS handed it out again once it was due,
/// nothing else (a restart) brought it back early. A call that outlives the timeout on a busy
/// machine makes such a repeat: at least once allows it.
fn assert_repeats_only_after_visibility_timeout(
    calls: &[support::target::Call],
    visibility_timeout: Duration,
) {
    let mut first_call: HashMap<&str, Instant> = HashMap::new();
    for call in calls {
        for record in &call.event.records {
            let body = record.body.as_deref().unwrap();
            match first_call.get(body) {
                None => {
                    first_call.insert(body, call.arrived);
                }
                Some(first) => {
                    let gap = call.arrived - *first;
                    assert!(
                        gap >= visibility_timeout - Duration::from_secs(5),
                        "{body} came back {gap:?} after its first call, before its visibility timeout"
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------------ controller restart ---

/// The queue's cap: the ramp climbs from 2 to it in 8 s at 30 a minute.
const CAP: u32 = 6;

/// Sends a round of 10 messages every second until stopped.
struct QueueProducer {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<(String, String)>>,
}

impl QueueProducer {
    fn start(sqs: &aws_sdk_sqs::Client, queue_url: &str, first_round: usize) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (sqs, queue_url) = (sqs.clone(), queue_url.to_owned());
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            for round in first_round.. {
                let records = keyed_records(10, 10, round);
                send(&sqs, &queue_url, &records).await;
                sent.extend(records);
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            sent
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<(String, String)> {
        let _ = self.stop.send(true);
        self.task.await.expect("the producer")
    }
}

/// Stands in for the kubelet this control plane lacks: runs as many poller replicas (pollers
/// in this process, named like pods) as the mapping's Deployment asks for.
struct PollerPods<'a> {
    fixture: &'a Fixture,
    mapping: &'a str,
    running: Vec<Poller>,
}

impl PollerPods<'_> {
    async fn follow(&mut self, replicas: i32) {
        let replicas = usize::try_from(replicas).unwrap_or(0);
        while self.running.len() < replicas {
            let pod = format!("esm-{}-{}", self.mapping, self.running.len());
            self.running.push(self.fixture.start(self.mapping, &pod));
        }
        while self.running.len() > replicas {
            self.running.pop().unwrap().stop().await;
        }
    }

    async fn stop(self) {
        for poller in self.running {
            poller.stop().await;
        }
    }
}

/// What the test watches while the controller scales: every status and Deployment size seen.
struct ScaleUp<'a> {
    mappings: Api<EventSourceMapping>,
    deployments: Api<Deployment>,
    pods: PollerPods<'a>,
    statuses: Vec<ScalingStatus>,
    replica_steps: Vec<i32>,
}

impl ScaleUp<'_> {
    /// One look at the mapping's scaling status and its Deployment; brings the pods in step.
    async fn look(&mut self) -> Option<ScalingStatus> {
        let status = self
            .mappings
            .get("backlog")
            .await
            .unwrap()
            .status
            .and_then(|s| s.scaling);
        if let Some(status) = &status
            && self.statuses.last() != Some(status)
        {
            self.statuses.push(status.clone());
        }
        let replicas = self
            .deployments
            .get_opt("esm-backlog")
            .await
            .unwrap()
            .and_then(|d| d.spec?.replicas);
        if let Some(replicas) = replicas {
            if self.replica_steps.last() != Some(&replicas) {
                self.replica_steps.push(replicas);
            }
            self.pods.follow(replicas).await;
        }
        status
    }

    /// Looks every 100 ms until `done` holds for the latest status and the pods; returns the
    /// status.
    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&ScalingStatus, usize) -> bool,
    ) -> ScalingStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: replicas {:?}",
                self.replica_steps
            );
            if let Some(status) = self.look().await
                && done(&status, self.pods.running.len())
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many objects of kind `K` labelled for mapping `name` the namespace holds.
async fn count<K>(client: &Client, namespace: &str, name: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let selector = ListParams::default().labels(&format!("esm.dev/mapping={name}"));
    Api::<K>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await
        .unwrap()
        .items
        .len()
}

/// How many objects of each kind the controller makes (and the Deployment's ReplicaSets)
/// mapping `name` has.
async fn children(client: &Client, namespace: &str, name: &str) -> [usize; 5] {
    [
        count::<Deployment>(client, namespace, name).await,
        count::<ReplicaSet>(client, namespace, name).await,
        count::<ServiceAccount>(client, namespace, name).await,
        count::<Role>(client, namespace, name).await,
        count::<RoleBinding>(client, namespace, name).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_controller_resumes_a_scale_up_its_killed_predecessor_began() {
    let fixture = fixture("restart-controller").await;
    let elasticmq = shared("elasticmq");
    let sqs = aws_sdk_sqs::Client::new(&elasticmq.sdk_config("elasticmq"));
    // Far longer than any call: nothing comes back unless a poller dies with it.
    let visibility_timeout = Duration::from_secs(30);
    let queue_url = create_queue(&sqs, visibility_timeout).await;
    // A backlog from the start, growing faster than even CAP batches of one message a second
    // take it: messages wait at every evaluation, so the ramp climbs all the way.
    let backlog = keyed_records(20, 10, 0);
    send(&sqs, &queue_url, &backlog).await;
    let producer = QueueProducer::start(&sqs, &queue_url, 2);
    let target = TestTarget::accepting_after(Duration::from_secs(1)).await;
    fixture
        .mapping(
            "backlog",
            json!({
                "source": sqs_source(&elasticmq, &queue_url),
                "target": {"url": target.url, "timeoutSeconds": 5},
                "batchSize": 1,
                "scalingConfig": {"maximumConcurrency": CAP},
                "poller": {"batchesPerReplica": 1},
            }),
        )
        .await;
    let settings = ScalingSettings {
        initial_concurrency: 2,
        ramp_per_minute: 30,
        max_concurrency: 1000,
        scale_down_window: Duration::from_secs(4),
        interval: Duration::from_secs(1),
        idle_interval: Duration::from_secs(1),
    };
    let controller =
        RunningController::start_scaling(&fixture.client, fixture.ns(), settings.clone());
    let mut scale_up = ScaleUp {
        mappings: Api::namespaced(fixture.client.clone(), fixture.ns()),
        deployments: Api::namespaced(fixture.client.clone(), fixture.ns()),
        pods: PollerPods {
            fixture: &fixture,
            mapping: "backlog",
            running: Vec::new(),
        },
        statuses: Vec::new(),
        replica_steps: Vec::new(),
    };

    let at_kill = scale_up
        .until("the ramp half way", |s, _| {
            s.concurrency > 2 && s.concurrency < CAP - 1
        })
        .await;
    controller.kill().await;
    // Down for longer than a ramp step (2 s): the next controller owes growth at once. The
    // pods run on meanwhile.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        scale_up.look().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let controller = RunningController::start_scaling(&fixture.client, fixture.ns(), settings);
    let restarted = Instant::now();
    scale_up
        .until("the next controller's first step", |s, _| {
            s.concurrency > at_kill.concurrency
        })
        .await;
    let recovered_in = restarted.elapsed();
    let top = scale_up
        .until("the cap, every pod of it running", |s, pods| {
            s.concurrency == CAP && pods == CAP as usize
        })
        .await;
    let ScaleUp {
        mappings,
        deployments,
        pods,
        statuses,
        replica_steps,
    } = scale_up;

    // Resumed, not restarted: the concurrency never fell back, the Deployment only grew, and
    // the ramp kept its clock (below the cap, each step of 2 s moves it by exactly 2 s).
    assert!(
        statuses
            .windows(2)
            .all(|w| w[0].concurrency <= w[1].concurrency),
        "{statuses:?}"
    );
    assert_eq!(replica_steps.first(), Some(&2), "{replica_steps:?}");
    assert!(
        replica_steps.windows(2).all(|w| w[0] < w[1]),
        "replicas only grow: {replica_steps:?}"
    );
    assert_eq!(
        replica_steps.last(),
        Some(&(CAP as i32)),
        "{replica_steps:?}"
    );
    // (A first status without signals has no clock yet.)
    let origins: Vec<_> = statuses
        .iter()
        .filter(|s| s.concurrency < CAP)
        .filter_map(|s| {
            Some(
                s.ramp_time.as_ref()?.0
                    - SignedDuration::from_secs(2 * i64::from(s.concurrency - 2)),
            )
        })
        .collect();
    assert!(
        origins.len() >= 2 && origins.windows(2).all(|w| w[0] == w[1]),
        "one ramp clock across the restart: {statuses:?}"
    );
    // Consistent: what status says is what the Deployment runs; the mapping's children exist
    // once each, and the next controller built the same pod template (one ReplicaSet).
    assert_eq!((top.desired_replicas, top.concurrency), (CAP as i32, CAP));
    let deployment = deployments.get("esm-backlog").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(CAP as i32));
    let mapping = mappings.get("backlog").await.unwrap();
    assert_eq!(
        mapping.status.unwrap().observed_generation,
        mapping.metadata.generation
    );
    assert_eq!(
        children(&fixture.client, fixture.ns(), "backlog").await,
        [1; 5],
        "Deployment, ReplicaSet, ServiceAccount, Role, RoleBinding"
    );

    let mut sent = producer.stop().await;
    let mut records = backlog;
    records.append(&mut sent);
    wait_until_drained(&sqs, &queue_url, &target, &records).await;
    pods.stop().await;
    controller.stop().await;

    let got = bodies(&target);
    let ledger = Ledger::tally(
        "sqs, controller killed mid-scale-up",
        &records,
        &got,
        false,
        seconds(recovered_in),
    );
    ledger.print();
    assert_eq!(ledger.lost, 0, "messages lost");
    // No poller stopped with a batch: the restart brought nothing back early, a message comes
    // again only after a call outlived its visibility timeout.
    assert_repeats_only_after_visibility_timeout(&target.calls(), visibility_timeout);
}
