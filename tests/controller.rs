//! The controller against a real kube-apiserver: children, status, lifecycle, restarts.
mod support;

use std::time::Duration;

use esm_operator::api::{EventSourceMapping, State};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use support::control_plane::ControlPlane;
use support::controller::{RunningController, set_enabled};
use support::wait;

const TIMEOUT: Duration = Duration::from_secs(60);

fn sqs_mapping(name: &str) -> EventSourceMapping {
    serde_json::from_value(json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "metadata": {"name": name},
        "spec": {
            "source": {"sqs": {"queueUrl": "http://127.0.0.1:1/000000000000/orders", "region": "us-east-1"}},
            "target": {"service": {"name": "handler", "port": 8080, "path": "/events"}},
        }
    }))
    .expect("valid mapping")
}

async fn status_of(api: &Api<EventSourceMapping>, name: &str) -> EventSourceMapping {
    api.get(name).await.expect("get mapping")
}

/// Waits until the mapping's status satisfies `check` for the current generation.
async fn wait_status(
    api: &Api<EventSourceMapping>,
    name: &str,
    what: &str,
    check: impl Fn(&EventSourceMapping) -> bool,
) -> EventSourceMapping {
    wait::until(what, TIMEOUT, || async {
        let mapping = status_of(api, name).await;
        let status = mapping.status.as_ref()?;
        (status.observed_generation == mapping.meta().generation && check(&mapping))
            .then_some(mapping)
    })
    .await
}

fn state(mapping: &EventSourceMapping) -> Option<State> {
    mapping.status.as_ref()?.state
}

fn ready_reason(mapping: &EventSourceMapping) -> Option<String> {
    let status = mapping.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.reason.clone())
}

#[tokio::test]
async fn mapping_lifecycle_creates_updates_disables_and_deletes_children() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "lifecycle").await;
    let controller = RunningController::start(&client, &ns.name);
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    mappings
        .create(&PostParams::default(), &sqs_mapping("orders"))
        .await
        .expect("create mapping");

    // Create: RBAC, Deployment and status appear.
    let deployment = wait::until("poller Deployment", TIMEOUT, || async {
        deployments.get_opt("esm-orders").await.expect("get")
    })
    .await;
    let spec = deployment.spec.clone().expect("deployment spec");
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("esm-operator:test"));
    assert_eq!(
        container.args.clone().unwrap_or_default(),
        [
            "poller",
            "--namespace",
            ns.name.as_str(),
            "--mapping",
            "orders"
        ]
    );
    let security = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(pod.service_account_name.as_deref(), Some("esm-orders"));
    let owner = &deployment.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("EventSourceMapping", "orders")
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("esm-orders")
        .await
        .expect("ServiceAccount");
    let role = Api::<Role>::namespaced(client.clone(), &ns.name)
        .get("esm-orders")
        .await
        .expect("Role");
    let rules = role.rules.expect("rules");
    assert!(
        rules
            .iter()
            .any(|r| r.resources.as_deref() == Some(&["leases".to_string()][..]))
    );
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .get("esm-orders")
        .await
        .expect("RoleBinding");
    let created = wait_status(&mappings, "orders", "status of a new mapping", |m| {
        state(m) == Some(State::Creating)
    })
    .await;
    let created_ready = ready_reason(&created);
    let status = created.status.expect("status");
    assert_eq!(status.replicas, Some(1));
    assert_eq!(
        status.last_processing_result.as_deref(),
        Some("No records processed")
    );
    assert_eq!(created_ready.as_deref(), Some("Progressing"));

    // Update: the Deployment follows, observedGeneration moves.
    let hash_before = spec_hash(&deployment);
    mappings
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"batchSize": 5, "target": {"timeoutSeconds": 45}}})),
        )
        .await
        .expect("update mapping");
    let updated = wait::until("Deployment rolled to the new spec", TIMEOUT, || async {
        let d = deployments.get("esm-orders").await.expect("get");
        (spec_hash(&d) != hash_before).then_some(d)
    })
    .await;
    let grace = updated
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .termination_grace_period_seconds;
    assert_eq!(grace, Some(60), "grace period follows the target timeout");
    wait_status(&mappings, "orders", "observedGeneration 2", |m| {
        m.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;

    // Disable: replicas 0, state Disabled.
    set_enabled(&mappings, "orders", false).await;
    wait_status(&mappings, "orders", "state Disabled", |m| {
        state(m) == Some(State::Disabled)
    })
    .await;
    let disabled = deployments.get("esm-orders").await.expect("get");
    assert_eq!(disabled.spec.unwrap().replicas, Some(0));
    let status = status_of(&mappings, "orders").await.status.unwrap();
    assert_eq!(status.replicas, Some(0));
    assert_eq!(
        ready_reason(&status_of(&mappings, "orders").await).as_deref(),
        Some("Disabled")
    );

    // Re-enable: back to one replica, Enabling while the pods start.
    set_enabled(&mappings, "orders", true).await;
    wait_status(&mappings, "orders", "state Enabling", |m| {
        state(m) == Some(State::Enabling)
    })
    .await;
    assert_eq!(
        deployments
            .get("esm-orders")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(1)
    );

    // Delete: the garbage collector removes every child.
    mappings
        .delete("orders", &DeleteParams::default())
        .await
        .expect("delete");
    wait::until("children garbage-collected", TIMEOUT, || async {
        let deployment = deployments.get_opt("esm-orders").await.expect("get");
        let role = Api::<Role>::namespaced(client.clone(), &ns.name)
            .get_opt("esm-orders")
            .await
            .expect("get");
        (deployment.is_none() && role.is_none()).then_some(())
    })
    .await;
    assert!(controller.metrics.reconciles() > 0);
    controller.stop().await;
}

fn spec_hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("esm.dev/spec-hash").cloned())
        .expect("spec hash annotation")
}

#[tokio::test]
async fn invalid_spec_gets_a_condition_naming_the_field() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "invalid").await;
    let controller = RunningController::start(&client, &ns.name);
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);

    let mut mapping = sqs_mapping("bad-filter");
    mapping.spec.filter_criteria = serde_json::from_value(json!({
        "filters": [{"pattern": "{\"body\": {\"kind\": \"not-an-array\"}}"}]
    }))
    .unwrap();
    mappings
        .create(&PostParams::default(), &mapping)
        .await
        .expect("schema accepts it");
    let reported = wait_status(&mappings, "bad-filter", "InvalidSpec condition", |m| {
        ready_reason(m).as_deref() == Some("InvalidSpec")
    })
    .await;
    let status = reported.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("filterCriteria.filters[0].pattern"),
        "{}",
        ready.message
    );
    assert!(ready.message.contains("body.kind"), "{}", ready.message);
    assert!(
        status
            .last_processing_result
            .as_deref()
            .is_some_and(|r| r.starts_with("PROBLEM: invalid spec")),
        "{status:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .get_opt("esm-bad-filter")
            .await
            .unwrap()
            .is_none(),
        "nothing runs an invalid mapping"
    );
    wait::until("a Warning event says why", TIMEOUT, || async {
        let events = plane.kubectl_ok(&["get", "events", "-n", &ns.name, "-o", "json"]);
        events.contains("InvalidSpec").then_some(())
    })
    .await;

    // Fixing the spec clears the problem.
    mappings
        .patch(
            "bad-filter",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"filterCriteria": {"filters": [{"pattern": "{\"body\": {\"kind\": [\"order\"]}}"}]}}})),
        )
        .await
        .unwrap();
    let fixed = wait_status(&mappings, "bad-filter", "Progressing after the fix", |m| {
        ready_reason(m).as_deref() == Some("Progressing")
    })
    .await;
    assert_eq!(
        fixed.status.unwrap().last_processing_result.as_deref(),
        Some("No records processed")
    );
    controller.stop().await;
}

#[tokio::test]
async fn restarted_controller_writes_nothing_for_unchanged_mappings() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "restart").await;
    let first = RunningController::start(&client, &ns.name);
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    for name in ["alpha", "beta"] {
        mappings
            .create(&PostParams::default(), &sqs_mapping(name))
            .await
            .unwrap();
    }
    let mut disabled = sqs_mapping("gamma");
    disabled.spec.enabled = false;
    mappings
        .create(&PostParams::default(), &disabled)
        .await
        .unwrap();

    let settled = settled_versions(&client, &ns.name).await;
    first.stop().await;

    let second = RunningController::start(&client, &ns.name);
    wait::until(
        "the new controller reconciles every mapping",
        TIMEOUT,
        || async { (second.metrics.reconciles() >= 3).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        resource_versions(&client, &ns.name).await,
        settled,
        "a restart wrote to unchanged objects"
    );
    second.stop().await;
}

/// Waits until no resourceVersion in the namespace has moved for 3 s, and returns them.
async fn settled_versions(client: &Client, namespace: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut previous = String::new();
    let mut stable_since = std::time::Instant::now();
    loop {
        let versions = resource_versions(client, namespace).await;
        if versions.contains("status=none") || previous != versions {
            previous = versions;
            stable_since = std::time::Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(3) {
            return versions;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "objects never settled:\n{previous}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// resourceVersions of every mapping and child in a namespace, as one comparable string.
async fn resource_versions(client: &Client, namespace: &str) -> String {
    let lp = Default::default();
    let mut out = Vec::new();
    for m in Api::<EventSourceMapping>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        let status = if m.status.is_some() { "some" } else { "none" };
        out.push(format!(
            "esm/{}={} status={status}",
            m.metadata.name.unwrap(),
            m.metadata.resource_version.unwrap()
        ));
    }
    macro_rules! versions {
        ($kind:ty) => {
            for o in Api::<$kind>::namespaced(client.clone(), namespace)
                .list(&lp)
                .await
                .unwrap()
            {
                if o.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("esm-"))
                {
                    out.push(format!(
                        "{}/{}={}",
                        stringify!($kind),
                        o.metadata.name.unwrap(),
                        o.metadata.resource_version.unwrap()
                    ));
                }
            }
        };
    }
    versions!(Deployment);
    versions!(ServiceAccount);
    versions!(Role);
    versions!(RoleBinding);
    out.sort();
    out.join("\n")
}

/// Two mappings with the same source and target would deliver every record twice: the newer
/// one is refused in status and runs no pollers, until the older one is gone.
#[tokio::test]
async fn a_duplicate_mapping_is_refused_naming_the_other_until_that_one_goes() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "duplicates").await;
    let controller = RunningController::start(&client, &ns.name);
    let mappings: Api<EventSourceMapping> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for name in ["a-orders", "b-copy"] {
        mappings
            .create(&PostParams::default(), &sqs_mapping(name))
            .await
            .expect("create mapping");
    }
    let copy = wait_status(&mappings, "b-copy", "the copy refused", |m| {
        ready_reason(m).as_deref() == Some("DuplicateMapping")
    })
    .await;
    let status = copy.status.expect("status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains(&format!("{}/a-orders", ns.name)),
        "names the other mapping: {}",
        ready.message
    );
    assert!(
        status
            .last_processing_result
            .as_deref()
            .is_some_and(|r| r.starts_with("PROBLEM: duplicate mapping")),
        "{status:?}"
    );
    assert_eq!(
        status.state_transition_reason.as_deref(),
        Some("USER_INITIATED")
    );
    let replicas_are = |name: &'static str, replicas: i32| {
        let deployments = deployments.clone();
        async move {
            wait::until(
                &format!("{name} at {replicas} replicas"),
                TIMEOUT,
                || async {
                    let deployment = deployments.get_opt(name).await.expect("get")?;
                    (deployment.spec?.replicas == Some(replicas)).then_some(())
                },
            )
            .await
        }
    };
    replicas_are("esm-b-copy", 0).await;
    let original = status_of(&mappings, "a-orders").await;
    assert_ne!(ready_reason(&original).as_deref(), Some("DuplicateMapping"));
    replicas_are("esm-a-orders", 1).await;

    mappings
        .delete("a-orders", &DeleteParams::default())
        .await
        .expect("delete the original");
    wait_status(&mappings, "b-copy", "the copy runs", |m| {
        ready_reason(m).as_deref() == Some("Progressing")
    })
    .await;
    replicas_are("esm-b-copy", 1).await;
    controller.stop().await;
}
