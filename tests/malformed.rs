//! A stored mapping that does not fit the API types (written under an older or looser CRD) is
//! reported on its own status and never stops the controller from serving the others.
//! Own test binary: it installs a deliberately loose CRD in its own control plane.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::json;
use support::control_plane::ControlPlane;
use support::controller::RunningController;
use support::wait;

/// The real CRD with its spec schema loosened to accept anything.
fn loose_crd() -> String {
    let mut crd: serde_json::Value = serde_yaml::from_str(&esm_operator::crd::crd_yaml()).unwrap();
    let version = &mut crd["spec"]["versions"][0];
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    version["schema"]["openAPIV3Schema"]
        .as_object_mut()
        .unwrap()
        .remove("x-kubernetes-validations");
    serde_json::to_string(&crd).unwrap()
}

#[tokio::test]
async fn malformed_mapping_is_reported_and_others_still_reconcile() {
    let plane = ControlPlane::shared();
    let path = std::env::temp_dir().join(format!("esm-loose-crd-{}.json", std::process::id()));
    std::fs::write(&path, loose_crd()).unwrap();
    plane.kubectl_ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/eventsourcemappings.esm.dev",
        "--timeout=60s",
    ]);
    let client = plane.client().await;
    let ns = plane.namespace(&client, "malformed").await;
    let resource = ApiResource::erase::<esm_operator::api::EventSourceMapping>(&());
    let mappings: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let mapping = |name: &str, batch_size: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name},
            "spec": {
                "source": {"sqs": {"queueUrl": "http://127.0.0.1:1/000000000000/q"}},
                "target": {"service": {"name": "t", "port": 8080}},
                "batchSize": batch_size,
            }
        }))
        .unwrap()
    };
    mappings
        .create(&PostParams::default(), &mapping("broken", json!("lots")))
        .await
        .unwrap();
    mappings
        .create(&PostParams::default(), &mapping("fine", json!(5)))
        .await
        .unwrap();

    let controller = RunningController::start(&client, &ns.name);

    let timeout = Duration::from_secs(60);
    wait::until("the valid mapping's Deployment", timeout, || async {
        Api::<Deployment>::namespaced(client.clone(), &ns.name)
            .get_opt("esm-fine")
            .await
            .unwrap()
    })
    .await;
    let message = wait::until("the malformed mapping's condition", timeout, || async {
        let broken = mappings.get("broken").await.unwrap();
        let conditions = broken
            .data
            .pointer("/status/conditions")?
            .as_array()?
            .clone();
        conditions
            .iter()
            .find(|c| c["reason"] == "MalformedSpec")
            .map(|c| c["message"].as_str().unwrap().to_string())
    })
    .await;
    assert!(
        message.starts_with("spec.batchSize:"),
        "names the field: {message}"
    );
    wait::until(
        "a Warning event MalformedSpec",
        Duration::from_secs(30),
        || async {
            let events = plane.kubectl_ok(&["get", "events", "-n", &ns.name, "-o", "json"]);
            events.contains("MalformedSpec").then_some(())
        },
    )
    .await;
    controller.stop().await;
}
