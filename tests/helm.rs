//! The Helm chart: lint, schema, server-side dry run, install/uninstall, and the operator's
//! least-privilege RBAC proven by running the controller as the chart's ServiceAccount.
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use esm_operator::api::EventSourceMapping;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use support::control_plane::{ControlPlane, repo_root};
use support::controller::RunningController;
use support::wait;

const CHART: &str = "charts/esm-operator";
/// Every monitoring object the chart can render.
const MONITORING: &str = "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,\
    metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true";
/// Stand-ins for the Prometheus Operator CRDs those objects need.
const MONITORING_CRDS: &str = "tests/fixtures/prometheus/monitoring-crds.yaml";

fn run(mut cmd: Command) -> (bool, String) {
    let output = cmd.current_dir(repo_root()).output().expect("run command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn helm(plane: &ControlPlane, args: &[&str]) -> (bool, String) {
    let mut cmd = plane.helm();
    cmd.args(args);
    run(cmd)
}

#[test]
fn chart_lints_and_its_schema_refuses_bad_values() {
    let plane = ControlPlane::shared();
    let (ok, out) = helm(plane, &["lint", "--strict", CHART]);
    assert!(ok, "helm lint: {out}");
    let (ok, out) = helm(
        plane,
        &[
            "lint",
            "--strict",
            CHART,
            "--set",
            &format!(
                "{MONITORING},pollers.mode=in-process,crds.install=false,serviceAccount.create=false"
            ),
        ],
    );
    assert!(ok, "helm lint with toggles: {out}");
    for (value, field) in [
        ("pollers.mode=sideways", "pollers"),
        ("replicaCount=many", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("tracing.otlpEndpoint=collector:4318", "otlpEndpoint"),
        ("metrics.prometheusRule.failedRecords.ratio=many", "ratio"),
        ("metrics.prometheusRule.iteratorAge.for=ten", "for"),
    ] {
        let (ok, out) = helm(plane, &["template", "esm", CHART, "--set", value]);
        assert!(!ok, "{value} accepted");
        assert!(
            out.contains("values don't meet the specifications of the schema")
                && out.contains(field),
            "{value}: {out}"
        );
    }
}

#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let plane = ControlPlane::shared();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "dry-run").await;
    let crds = repo_root().join(MONITORING_CRDS);
    let crds = crds.to_str().unwrap();
    plane.kubectl_ok(&["apply", "--server-side", "-f", crds]);
    plane.kubectl_ok(&["wait", "--for=condition=Established", "-f", crds]);
    for extra in [
        &[][..],
        &["--set", "pollers.mode=in-process,crds.keep=false"][..],
        &["--set", MONITORING][..],
    ] {
        let mut args = vec!["template", "esm", CHART, "--namespace", &ns.name];
        args.extend_from_slice(extra);
        let (ok, manifest) = helm(plane, &args);
        assert!(ok, "helm template: {manifest}");
        assert!(manifest.contains("kind: CustomResourceDefinition"));
        let mut kubectl = plane.kubectl();
        kubectl
            .args(["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = kubectl.spawn().expect("kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "server-side dry run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A client that acts as the chart's ServiceAccount, so the test sees exactly what its RBAC allows.
async fn impersonating_client(plane: &ControlPlane, user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn install_run_as_the_chart_service_account_and_uninstall() {
    let plane = ControlPlane::shared();
    let admin = plane.client().await;
    let release_ns = plane.namespace(&admin, "esm-system").await;
    let (ok, out) = helm(
        plane,
        &[
            "install",
            "esm",
            CHART,
            "--namespace",
            &release_ns.name,
            "--wait=false",
            "--set",
            "image.tag=test",
        ],
    );
    assert!(ok, "helm install: {out}");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &release_ns.name);
    let mut operators = deployments.list(&Default::default()).await.unwrap().items;
    assert_eq!(operators.len(), 1, "one operator Deployment");
    let operator = operators.remove(0);
    let container = &operator.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(container.image.as_deref().unwrap().ends_with(":test"));
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let account = operator_service_account(plane, &release_ns.name);

    // The controller, acting as that ServiceAccount, can do its whole job.
    let operator_client = impersonating_client(
        plane,
        &format!("system:serviceaccount:{}:{account}", release_ns.name),
    )
    .await;
    let apps_ns = plane.namespace(&admin, "rbac").await;
    let controller = RunningController::start(&operator_client, &apps_ns.name);
    let mappings: Api<EventSourceMapping> = Api::namespaced(admin.clone(), &apps_ns.name);
    let mut mapping: EventSourceMapping = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/build/kinesis-full.yaml"))
            .unwrap(),
    )
    .unwrap();
    mapping.metadata.namespace = None;
    mapping.metadata.uid = None;
    mappings
        .create(&PostParams::default(), &mapping)
        .await
        .unwrap();
    wait::until(
        "children created under the chart's RBAC",
        Duration::from_secs(60),
        || async {
            let deployment = Api::<Deployment>::namespaced(admin.clone(), &apps_ns.name)
                .get_opt("esm-clicks")
                .await
                .unwrap();
            let status = mappings.get("clicks").await.unwrap().status;
            (deployment.is_some() && status.is_some_and(|s| s.state.is_some())).then_some(())
        },
    )
    .await;
    let role = Api::<Role>::namespaced(admin.clone(), &apps_ns.name)
        .get("esm-clicks")
        .await
        .unwrap();
    assert!(role.rules.unwrap().iter().any(|r| {
        r.resources
            .as_ref()
            .unwrap()
            .contains(&"secrets".to_string())
    }));
    controller.stop().await;

    let (ok, out) = helm(
        plane,
        &[
            "uninstall",
            "esm",
            "--namespace",
            &release_ns.name,
            "--wait",
        ],
    );
    assert!(ok, "helm uninstall: {out}");
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The CRD stays (helm.sh/resource-policy: keep), so users' mappings survive an uninstall.
    assert!(mappings.get("clicks").await.is_ok());
}

fn operator_service_account(plane: &ControlPlane, namespace: &str) -> String {
    let out = plane.kubectl_ok(&["get", "serviceaccounts", "-n", namespace, "-o", "name"]);
    out.lines()
        .map(|l| l.trim_start_matches("serviceaccount/"))
        .find(|n| *n != "default")
        .expect("the chart's ServiceAccount")
        .to_string()
}
