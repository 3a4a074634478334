//! Scaling through the controller (SPEC §8): a Kinesis stream split in kinesis-mock, and a
//! standard queue's backlog in moto, move the mapping's concurrency and its Deployment's
//! replicas. No kubelet runs the pollers, so the sources change only as the tests change them.
mod support;

use std::time::{Duration, Instant};

use esm_operator::api::{EventSourceMapping, ScalingStatus};
use esm_operator::controller::ScalingSettings;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use support::control_plane::ControlPlane;
use support::controller::RunningController;
use support::emulators::{kinesis_stream, moto_queue, shared};
use support::wait;

const TIMEOUT: Duration = Duration::from_secs(90);

const CREDENTIALS: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: aws
stringData:
  AWS_ACCESS_KEY_ID: test
  AWS_SECRET_ACCESS_KEY: test
"#;

async fn scaling(mappings: &Api<EventSourceMapping>, name: &str) -> Option<ScalingStatus> {
    mappings.get(name).await.unwrap().status?.scaling
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> Option<i32> {
    deployments.get_opt(name).await.unwrap()?.spec?.replicas
}

fn events(plane: &ControlPlane, namespace: &str, reason: &str) -> Vec<String> {
    let out = plane.kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "-n",
        namespace,
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "jsonpath={range .items[*]}{.note}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_owned).collect()
}

fn fast_settings() -> ScalingSettings {
    ScalingSettings {
        initial_concurrency: 2,
        ramp_per_minute: 30,
        max_concurrency: 1000,
        scale_down_window: Duration::from_secs(4),
        interval: Duration::from_secs(1),
        idle_interval: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn kinesis_split_from_2_to_3_shards_moves_concurrency_from_4_to_6() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "scaling-kinesis").await;
    let emulator = shared("kinesis");
    let (kinesis, stream) = kinesis_stream(&emulator, 2).await;

    let controller = RunningController::start_scaling(&client, &ns.name, fast_settings());
    plane.kubectl_apply(
        &ns.name,
        &format!(
            r#"{CREDENTIALS}
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata:
  name: clicks
spec:
  source:
    kinesis:
      streamName: {stream}
      region: us-east-1
      endpointUrl: {endpoint}
      credentialsSecretRef: {{name: aws}}
  startingPosition: LATEST
  parallelizationFactor: 2
  poller:
    batchesPerReplica: 2
  target:
    url: http://127.0.0.1:9/events
"#,
            endpoint = emulator.endpoint("kinesis"),
        ),
    );
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let before = wait::until("concurrency 4 from 2 shards", TIMEOUT, || async {
        scaling(&mappings, "clicks")
            .await
            .filter(|s| s.concurrency == 4)
    })
    .await;
    assert_eq!(before.signals.open_shards, Some(2));
    assert_eq!(
        before.desired_replicas, 2,
        "one shard's 2 lanes per replica"
    );
    wait::until("2 replicas", TIMEOUT, || async {
        (replicas(&deployments, "esm-clicks").await == Some(2)).then_some(())
    })
    .await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap();
    let range = shards[0].hash_key_range.clone().unwrap();
    let start: u128 = range.starting_hash_key.parse().unwrap();
    let end: u128 = range.ending_hash_key.parse().unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&shards[0].shard_id)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("SplitShard");

    let after = wait::until("concurrency 6 after the split", TIMEOUT, || async {
        scaling(&mappings, "clicks")
            .await
            .filter(|s| s.concurrency != 4)
    })
    .await;
    assert_eq!(after.concurrency, 6);
    assert_eq!(after.signals.open_shards, Some(3));
    // Nobody reads the closed parent to its end here: it and its sibling are readable, the
    // children wait; the open shards decide.
    assert_eq!(after.signals.readable_shards, Some(2));
    assert_eq!(after.desired_replicas, 3);
    wait::until("3 replicas", TIMEOUT, || async {
        (replicas(&deployments, "esm-clicks").await == Some(3)).then_some(())
    })
    .await;
    let steps = wait::until("a ScaledUp event", TIMEOUT, || async {
        let notes = events(plane, &ns.name, "ScaledUp");
        notes
            .iter()
            .any(|n| n.starts_with("concurrency 4 -> 6"))
            .then_some(notes)
    })
    .await;
    assert!(
        steps.iter().any(|n| n.contains("3 open shards")),
        "{steps:?}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn standard_queue_backlog_ramps_replicas_up_and_drained_queue_scales_down() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "scaling-sqs").await;
    let moto = shared("moto");
    let (sqs, queue_url) = moto_queue(&moto, "backlog").await;
    for batch in 0..5 {
        let entries = (0..10).map(|i| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(format!("message {batch}-{i}"))
                .build()
                .unwrap()
        });
        sqs.send_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .expect("SendMessageBatch");
    }

    let settings = fast_settings();
    let controller = RunningController::start_scaling(&client, &ns.name, settings.clone());
    plane.kubectl_apply(
        &ns.name,
        &format!(
            r#"{CREDENTIALS}
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata:
  name: backlog
spec:
  source:
    sqs:
      queueUrl: {queue_url}
      region: us-east-1
      endpointUrl: {endpoint}
      credentialsSecretRef: {{name: aws}}
  scalingConfig:
    maximumConcurrency: 6
  poller:
    batchesPerReplica: 1
  target:
    url: http://127.0.0.1:9/events
"#,
            endpoint = moto.endpoint("moto"),
        ),
    );
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // Every status seen on the way up, and the Deployment's replicas.
    let mut seen: Vec<ScalingStatus> = Vec::new();
    let mut replica_steps: Vec<i32> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while replica_steps.last() != Some(&6) {
        assert!(
            Instant::now() < deadline,
            "the ramp never reached 6: {replica_steps:?} {seen:?}"
        );
        if let Some(status) = scaling(&mappings, "backlog").await
            && seen.last() != Some(&status)
        {
            seen.push(status);
        }
        if let Some(r) = replicas(&deployments, "esm-backlog").await
            && replica_steps.last() != Some(&r)
        {
            replica_steps.push(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Deployment is applied before the status that explains it is written: wait for that.
    let at_cap = wait::until("the status at the cap", TIMEOUT, || async {
        scaling(&mappings, "backlog")
            .await
            .filter(|s| s.concurrency == 6)
    })
    .await;
    if seen.last() != Some(&at_cap) {
        seen.push(at_cap);
    }
    assert_eq!(replica_steps.first(), Some(&2), "{replica_steps:?}");
    assert!(
        replica_steps.windows(2).all(|w| w[0] < w[1]) && replica_steps.len() >= 3,
        "replicas grow step by step: {replica_steps:?}"
    );
    // Below the cap, the ramp's clock has advanced by exactly 2 s (30 a minute) per step.
    let ramping: Vec<&ScalingStatus> = seen.iter().filter(|s| s.concurrency < 6).collect();
    assert!(ramping.len() >= 2, "{seen:?}");
    let origins: Vec<_> = ramping
        .iter()
        .map(|s| {
            s.ramp_time
                .as_ref()
                .expect("a ramp clock while messages wait")
                .0
                - SignedDuration::from_secs(2 * i64::from(s.concurrency - 2))
        })
        .collect();
    assert!(origins.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let top = seen.last().unwrap();
    assert_eq!(top.signals.visible_messages, Some(50));
    assert!(
        top.last_scale_reason
            .as_deref()
            .is_some_and(|r| r.contains("maximumConcurrency 6")),
        "{top:?}"
    );

    // Drained: the concurrency holds for the window, then drops to the initial 2 at once.
    sqs.purge_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
    let mut waiting_since = None;
    let mut replica_steps: Vec<i32> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let down = loop {
        assert!(
            Instant::now() < deadline,
            "never scaled down: {replica_steps:?}"
        );
        let status = scaling(&mappings, "backlog").await.expect("scaling status");
        if let Some(since) = &status.scale_down_since {
            waiting_since = Some(since.0);
        }
        if let Some(r) = replicas(&deployments, "esm-backlog").await
            && replica_steps.last() != Some(&r)
        {
            replica_steps.push(r);
        }
        if status.concurrency == 2 && replica_steps.last() == Some(&2) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replica_steps, [6, 2], "straight down, no steps between");
    let since = waiting_since.expect("the scale-down window was shown in status");
    let scaled = down.last_scale_time.clone().expect("scale time").0;
    assert!(
        scaled.duration_since(since) >= SignedDuration::from_secs(4),
        "scaled down at {scaled} after waiting from {since}"
    );
    assert!(
        down.last_scale_reason
            .as_deref()
            .is_some_and(|r| r.contains("queue drained")),
        "{down:?}"
    );
    assert_eq!(down.signals.visible_messages, Some(0));
    let notes = events(plane, &ns.name, "ScaledDown");
    assert!(
        notes.iter().any(|n| n.starts_with("concurrency 6 -> 2")),
        "{notes:?}"
    );
    controller.stop().await;
}

/// `provisionedPollerConfig` keeps its minimum running on an empty queue and shows the bounds
/// in status; the wide printer columns show them too.
#[tokio::test]
async fn provisioned_pollers_keep_their_minimum_on_an_empty_queue() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "scaling-provisioned").await;
    let moto = shared("moto");
    let (_, queue_url) = moto_queue(&moto, "provisioned").await;
    let controller = RunningController::start_scaling(&client, &ns.name, fast_settings());
    plane.kubectl_apply(
        &ns.name,
        &format!(
            r#"{CREDENTIALS}
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata:
  name: provisioned
spec:
  source:
    sqs:
      queueUrl: {queue_url}
      region: us-east-1
      endpointUrl: {endpoint}
      credentialsSecretRef: {{name: aws}}
  provisionedPollerConfig:
    minimumPollers: 4
    maximumPollers: 8
  poller:
    batchesPerReplica: 2
  target:
    url: http://127.0.0.1:9/events
"#,
            endpoint = moto.endpoint("moto"),
        ),
    );
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let status = wait::until("the provisioned minimum", TIMEOUT, || async {
        scaling(&mappings, "provisioned")
            .await
            .filter(|s| s.concurrency == 4 && s.signals.visible_messages.is_some())
    })
    .await;
    let bounds = status.provisioned_pollers.expect("bounds in status");
    assert_eq!((bounds.minimum, bounds.maximum), (4, 8));
    wait::until("2 replicas of 2 batches", TIMEOUT, || async {
        (replicas(&deployments, "esm-provisioned").await == Some(2)).then_some(())
    })
    .await;
    // Empty for longer than the scale-down window: still the minimum.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        scaling(&mappings, "provisioned").await.unwrap().concurrency,
        4
    );
    let wide = plane.kubectl_ok(&["get", "esm", "provisioned", "-n", &ns.name, "-o", "wide"]);
    assert!(
        wide.contains("MIN POLLERS") && wide.contains("MAX POLLERS"),
        "{wide}"
    );
    controller.stop().await;
}
