//! Through the controller: `kubectl apply` an SQS mapping, the in-process pollers deliver its
//! messages to the target; disabling stops delivery, re-enabling resumes it; status says so.
mod support;

use std::time::Duration;

use aws_sdk_sqs::Client as SqsClient;
use esm_operator::api::{EventSourceMapping, State};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use support::control_plane::ControlPlane;
use support::controller::{RunningController, set_enabled};
use support::emulators::{moto_queue, shared};
use support::target::TestTarget;
use support::wait;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn send(sqs: &SqsClient, queue_url: &str, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
}

fn delivered(target: &TestTarget) -> Vec<String> {
    let mut bodies: Vec<String> = target
        .calls()
        .iter()
        .flat_map(|c| c.event.records.iter().filter_map(|r| r.body.clone()))
        .collect();
    bodies.sort();
    bodies.dedup();
    bodies
}

fn condition(mapping: &EventSourceMapping, type_: &str) -> Option<(String, String, String)> {
    let c = mapping
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn sqs_mapping_applied_with_kubectl_delivers_and_follows_enabled() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "in-process").await;
    let moto = shared("moto");
    let (sqs, queue_url) = moto_queue(&moto, "orders").await;
    let target = TestTarget::accepting().await;
    send(&sqs, &queue_url, (0..20).map(|i| format!("before-{i:02}"))).await;

    let controller = RunningController::start_in_process(&client, &ns.name);
    plane.kubectl_apply(
        &ns.name,
        &format!(
            r#"
apiVersion: v1
kind: Secret
metadata:
  name: aws
stringData:
  AWS_ACCESS_KEY_ID: test
  AWS_SECRET_ACCESS_KEY: test
---
apiVersion: esm.dev/v1alpha1
kind: EventSourceMapping
metadata:
  name: orders
spec:
  source:
    sqs:
      queueUrl: {queue_url}
      region: us-east-1
      endpointUrl: {endpoint}
      credentialsSecretRef: {{name: aws}}
  target:
    url: {target}
    timeoutSeconds: 10
"#,
            endpoint = moto.endpoint("moto"),
            target = target.url,
        ),
    );
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);

    wait::until("20 messages delivered", TIMEOUT, || async {
        (delivered(&target).len() == 20).then_some(())
    })
    .await;
    let enabled = wait::until("state Enabled, Ready and OK", TIMEOUT, || async {
        let m = mappings.get("orders").await.unwrap();
        let status = m.status.as_ref()?;
        (status.state == Some(State::Enabled)
            && status.last_processing_result.as_deref() == Some("OK")
            && condition(&m, "Ready").is_some_and(|(s, _, _)| s == "True"))
        .then_some(m)
    })
    .await;
    // moto's default visibility timeout (30 s) is below 6 x 10 s.
    let (status, reason, message) =
        condition(&enabled, "QueueVisibilityTimeout").expect("the check is reported");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "TooShort"));
    assert!(
        message.contains("30s") && message.contains("60s"),
        "{message}"
    );

    // Scaling: the in-process pollers start at the initial concurrency of a standard queue
    // (and grew while the 20 messages waited); the controller reads their activity from them
    // directly, so they write no report Lease.
    let scaling = enabled.status.as_ref().unwrap().scaling.clone().unwrap();
    assert!(scaling.concurrency >= 5, "{scaling:?}");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let reports = leases
        .list(&ListParams::default().labels("esm.dev/mapping=orders,esm.dev/lease=poller"))
        .await
        .unwrap();
    assert!(
        reports.items.is_empty(),
        "in-process pollers write no report"
    );
    // What they saw reaches the scaling signals all the same (a minute's busy loops).
    wait::until("busy batches in the scaling signals", TIMEOUT, || async {
        let m = mappings.get("orders").await.unwrap();
        let busy = m.status?.scaling?.signals.busy_batches?;
        (busy > 0).then_some(())
    })
    .await;

    // Disable: nothing more is delivered, the messages wait in the queue.
    set_enabled(&mappings, "orders", false).await;
    wait::until("state Disabled", TIMEOUT, || async {
        let m = mappings.get("orders").await.unwrap();
        (m.status?.state == Some(State::Disabled)).then_some(())
    })
    .await;
    send(
        &sqs,
        &queue_url,
        (0..5).map(|i| format!("while-disabled-{i}")),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        delivered(&target).len(),
        20,
        "a disabled mapping delivers nothing"
    );

    // Re-enable: the waiting messages arrive.
    set_enabled(&mappings, "orders", true).await;
    wait::until(
        "messages sent while disabled delivered",
        TIMEOUT,
        || async { (delivered(&target).len() == 25).then_some(()) },
    )
    .await;
    wait::until("state Enabled again", TIMEOUT, || async {
        let m = mappings.get("orders").await.unwrap();
        (m.status?.state == Some(State::Enabled)).then_some(())
    })
    .await;

    // Metrics: the mapping's series are what an SQS mapping can move, and go with the mapping.
    let series = poller_series(&controller.metrics.registry, "orders");
    assert!(
        series.contains(&"esm_poller_records_deleted_total".to_owned()),
        "{series:?}"
    );
    assert!(
        !series.contains(&"esm_poller_records_dropped_total".to_owned()),
        "{series:?}"
    );
    let controller_series = || {
        prometheus::TextEncoder::new()
            .encode_to_string(&controller.metrics.registry.gather())
            .unwrap()
            .lines()
            .filter(|line| line.contains(r#"mapping="orders""#))
            .count()
    };
    assert!(
        controller_series() > 0,
        "the controller's series of the mapping"
    );
    mappings
        .delete("orders", &Default::default())
        .await
        .unwrap();
    wait::until("the mapping's metric series removed", TIMEOUT, || async {
        (poller_series(&controller.metrics.registry, "orders").is_empty()
            && controller_series() == 0)
            .then_some(())
    })
    .await;
    controller.stop().await;
}

/// The poller series of mapping `name` as a scrape shows them: `family{labels}` per line.
fn poller_series(registry: &prometheus::Registry, name: &str) -> Vec<String> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let label = format!("name=\"{name}\"");
    text.lines()
        .filter(|line| line.starts_with("esm_poller_") && line.contains(&label))
        .filter_map(|line| line.split_once('{').map(|(family, _)| family.to_owned()))
        .collect()
}
