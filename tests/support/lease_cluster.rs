//! A real control plane (etcd, kube-apiserver, kube-controller-manager with its garbage
//! collector) for the shard lease tests: started by `hack/start-control-plane.sh` into a temp
//! dir with the EventSourceMapping CRD installed, stopped when the last test using it drops
//! it, also when that test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use esm_operator::api::EventSourceMapping;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

pub struct LeaseCluster {
    state: tempfile::TempDir,
    kubeconfig: PathBuf,
    ready: OnceCell<()>,
}

fn hack(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hack")
        .join(script)
}

/// The control plane of this test binary, started on first use.
pub fn shared() -> Arc<LeaseCluster> {
    static RUNNING: Mutex<Weak<LeaseCluster>> = Mutex::new(Weak::new());
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cluster) = running.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(LeaseCluster::start());
    *running = Arc::downgrade(&cluster);
    cluster
}

impl LeaseCluster {
    fn start() -> LeaseCluster {
        let state = tempfile::Builder::new()
            .prefix("esm-leases-")
            .tempdir()
            .expect("temp dir for the control plane");
        let output = Command::new(hack("start-control-plane.sh"))
            .arg(state.path())
            .output()
            .expect("run hack/start-control-plane.sh");
        // Built before the check so that a failed start still stops what it started.
        let cluster = LeaseCluster {
            kubeconfig: state.path().join("kubeconfig"),
            state,
            ready: OnceCell::new(),
        };
        assert!(
            output.status.success(),
            "hack/start-control-plane.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        cluster
    }

    /// A client of the cluster, once the CRD is installed.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        self.ready.get_or_init(|| install_crd(client.clone())).await;
        client
    }
}

async fn install_crd(client: Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/esm.dev_eventsourcemappings.yaml");
    let yaml = std::fs::read_to_string(&path).expect("read the CRD");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse the CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create the CRD");
    // Established is not enough for the first create: wait until the API serves the kind.
    let mappings: Api<EventSourceMapping> = Api::default_namespaced(client);
    for _ in 0..300 {
        if mappings.list(&Default::default()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the EventSourceMapping CRD was not served after 30 s");
}

impl Drop for LeaseCluster {
    fn drop(&mut self) {
        let stopped = Command::new(hack("stop-control-plane.sh"))
            .arg(self.state.path())
            .status();
        if !matches!(stopped, Ok(status) if status.success()) {
            eprintln!("hack/stop-control-plane.sh failed: {stopped:?}");
        }
    }
}

/// Creates a Kinesis mapping named `name` in the default namespace: the owner of its leases.
pub async fn create_mapping(client: &Client, name: &str) -> EventSourceMapping {
    let mapping: EventSourceMapping = serde_json::from_value(serde_json::json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "source": {"kinesis": {"streamName": "orders"}},
            "target": {"url": "http://127.0.0.1:9/"},
            "startingPosition": "TRIM_HORIZON",
        },
    }))
    .expect("a valid mapping");
    Api::<EventSourceMapping>::default_namespaced(client.clone())
        .create(&PostParams::default(), &mapping)
        .await
        .expect("create the mapping")
}
