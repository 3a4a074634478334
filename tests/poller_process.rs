//! The `esm-operator poller` process, as a poller Deployment runs it: it delivers, reports
//! ready while polling, and on SIGTERM stops receiving, finishes its batch and exits cleanly.
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use esm_operator::api::EventSourceMapping;
use kube::api::{Api, PostParams};
use support::control_plane::ControlPlane;
use support::emulators::{moto_queue, shared};
use support::target::TestTarget;
use support::wait;

const TIMEOUT: Duration = Duration::from_secs(60);
const MESSAGES: usize = 30;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn poller_process_delivers_is_ready_and_stops_on_sigterm() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "poller-process").await;
    let moto = shared("moto");
    let (sqs, queue_url) = moto_queue(&moto, "process").await;
    let target = TestTarget::accepting().await;
    let mapping: EventSourceMapping = serde_json::from_value(serde_json::json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "metadata": {"name": "process"},
        "spec": {
            "source": {"sqs": {"queueUrl": queue_url, "region": "us-east-1", "endpointUrl": moto.endpoint("moto")}},
            "target": {"url": target.url, "timeoutSeconds": 10},
            "batchSize": 1,
        }
    }))
    .unwrap();
    Api::<EventSourceMapping>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &mapping)
        .await
        .unwrap();
    for i in 0..MESSAGES {
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(format!("m{i}"))
            .send()
            .await
            .unwrap();
    }

    let admin_port = free_port();
    let mut poller = Command::new(env!("CARGO_BIN_EXE_esm-operator"))
        .args(["poller", "--namespace", &ns.name, "--mapping", "process"])
        .args([
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", &plane.kubeconfig)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("POD_NAME", "poller-process-0")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the poller process");

    let http = reqwest::Client::new();
    wait::until("the poller is ready", TIMEOUT, || async {
        let response = http
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    wait::until("some messages delivered", TIMEOUT, || async {
        (!target.calls().is_empty()).then_some(())
    })
    .await;
    let delivered_before: usize = target.calls().iter().map(|c| c.event.records.len()).sum();
    assert!(delivered_before > 0);
    let metrics = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("esm_poller_records_invoked_total"),
        "{metrics}"
    );
    // Records are counted before they are sent: at least those seen so far.
    let invoked: u64 = metrics
        .lines()
        .find(|line| line.starts_with("esm_poller_records_invoked_total{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .expect("a sample of esm_poller_records_invoked_total");
    assert!(
        invoked >= delivered_before as u64,
        "{invoked} < {delivered_before}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &poller.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || poller.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a clean exit after SIGTERM: {status}");

    // Every message is delivered or still in the queue, none lost.
    let delivered: std::collections::BTreeSet<String> = target
        .calls()
        .iter()
        .flat_map(|c| c.event.records.iter().filter_map(|r| r.body.clone()))
        .collect();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let waiting: usize = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
    ]
    .iter()
    .map(|name| {
        attributes[&aws_sdk_sqs::types::QueueAttributeName::from(*name)]
            .parse::<usize>()
            .unwrap()
    })
    .sum();
    assert_eq!(
        delivered.len() + waiting,
        MESSAGES,
        "delivered {delivered:?}, waiting {waiting}"
    );
}
