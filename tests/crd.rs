//! The CRD: committed copies match the generator, and the API server itself refuses invalid
//! mappings with messages that name the field.
mod support;

use std::fs;

use esm_operator::crd::{CRD_PATH, REFERENCE_PATH, crd_yaml, reference_markdown};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use support::control_plane::{ControlPlane, repo_root};

/// The chart renders the CRD from this copy (Helm cannot read files outside the chart).
const CHART_CRD_PATH: &str = "charts/esm-operator/files/esm.dev_eventsourcemappings.yaml";

#[test]
fn committed_crds_match_the_generator() {
    let generated = crd_yaml();
    for path in [CRD_PATH, CHART_CRD_PATH] {
        let committed = fs::read_to_string(repo_root().join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `cargo run -- crd > {CRD_PATH} && cp {CRD_PATH} {CHART_CRD_PATH}`"
        );
    }
}

#[test]
fn committed_field_reference_matches_the_crd() {
    let committed = fs::read_to_string(repo_root().join(REFERENCE_PATH)).unwrap_or_default();
    assert!(
        committed == reference_markdown(),
        "{REFERENCE_PATH} is out of date: run `cargo run -- crd --reference > {REFERENCE_PATH}`"
    );
}

fn fixtures(dir: &str) -> Vec<(String, String)> {
    let mut files: Vec<_> = fs::read_dir(repo_root().join("tests/fixtures").join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read fixture"))
        })
        .collect()
}

async fn dry_run_create(api: &Api<DynamicObject>, manifest: &str) -> Result<(), String> {
    let mut object: DynamicObject = serde_yaml::from_str(manifest).expect("fixture is YAML");
    object.metadata.namespace = None;
    object.metadata.uid = None;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

#[tokio::test]
async fn api_server_refuses_invalid_mappings_naming_the_field() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "crd").await;
    let resource = ApiResource::erase::<esm_operator::api::EventSourceMapping>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns.name, &resource);

    let invalid = fixtures("invalid");
    assert!(invalid.len() >= 15, "at least 15 invalid manifests");
    let mut failures = Vec::new();
    for (name, manifest) in &invalid {
        let expected = manifest
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <message part>`"));
        match dry_run_create(&api, manifest).await {
            Ok(()) => failures.push(format!("{name}: accepted, expected `{expected}`")),
            Err(message) if message.contains(expected) => {}
            Err(message) => failures.push(format!("{name}: expected `{expected}` in `{message}`")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    for (name, manifest) in fixtures("build") {
        if let Err(message) = dry_run_create(&api, &manifest).await {
            panic!("valid fixture {name} refused: {message}");
        }
    }
}

#[tokio::test]
async fn source_and_starting_position_are_immutable() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "immutable").await;
    let resource = ApiResource::erase::<esm_operator::api::EventSourceMapping>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns.name, &resource);
    let manifest =
        fs::read_to_string(repo_root().join("tests/fixtures/build/kinesis-full.yaml")).unwrap();
    let mut object: DynamicObject = serde_yaml::from_str(&manifest).unwrap();
    object.metadata.namespace = None;
    object.metadata.uid = None;
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");

    for (patch, expected) in [
        (
            serde_json::json!({"spec": {"source": {"kinesis": {"streamName": "other"}}}}),
            "source is immutable",
        ),
        (
            serde_json::json!({"spec": {"startingPosition": "LATEST"}}),
            "startingPosition is immutable",
        ),
    ] {
        let err = api
            .patch(
                "clicks",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect_err("immutable field changed");
        assert!(err.to_string().contains(expected), "{err}");
    }
}
