//! A kubelet-less control plane (etcd + kube-apiserver + kube-controller-manager) started by
//! `hack/start-control-plane.sh` on free loopback ports.
//!
//! One control plane serves every test of a test binary; each test works in its own namespace.
//! A test that restarts the control plane starts one of its own ([`ControlPlane::own`]).
//! A reaper process stops the control plane when the test binary exits, however it exits.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub struct ControlPlane {
    state: PathBuf,
    pub kubeconfig: PathBuf,
    /// Directory with kube-apiserver, etcd, kubectl, kube-controller-manager, helm.
    pub assets: PathBuf,
    /// A test's own control plane stops when the test drops it; the shared one and a cluster
    /// started elsewhere do not.
    stop_on_drop: bool,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static CRD_INSTALLED: OnceLock<()> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(ControlPlane::start)
    }

    /// The shared control plane with the EventSourceMapping CRD from `crds/` installed.
    pub fn with_crd() -> &'static ControlPlane {
        let plane = Self::shared();
        CRD_INSTALLED.get_or_init(|| plane.install_crd());
        plane
    }

    /// A control plane for one test alone, with the CRD installed: a test that stops and
    /// starts it disturbs no other. Stopped when dropped.
    pub fn own() -> ControlPlane {
        let mut plane = Self::start();
        plane.stop_on_drop = true;
        plane.install_crd();
        plane
    }

    fn install_crd(&self) {
        self.kubectl_ok(&["apply", "--server-side", "-f", &crd_path()]);
        // kubectl wait fails (instead of waiting) on a CRD whose status is not written yet.
        for attempt in 1.. {
            let waited = self
                .kubectl()
                .args([
                    "wait",
                    "--for=condition=Established",
                    "crd/eventsourcemappings.esm.dev",
                    "--timeout=60s",
                ])
                .output()
                .expect("run kubectl");
            if waited.status.success() {
                break;
            }
            assert!(
                attempt < 10,
                "kubectl wait for the CRD failed: {}",
                String::from_utf8_lossy(&waited.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// Stops kube-apiserver and etcd, keeping their data: every request fails until
    /// [`ControlPlane::start_stopped`]. The kube-controller-manager keeps running.
    pub async fn stop_api_server_and_etcd(&self) {
        let mut stop = Command::new(repo_root().join("hack/stop-control-plane.sh"));
        stop.arg(&self.state).args(["kube-apiserver", "etcd"]);
        run_script(stop).await;
    }

    /// Starts what [`ControlPlane::stop_api_server_and_etcd`] stopped, on the same ports with
    /// the same data, and returns once the API server is ready.
    pub async fn start_stopped(&self) {
        let mut start = Command::new(repo_root().join("hack/start-control-plane.sh"));
        start
            .arg(&self.state)
            .env("KUBEBUILDER_ASSETS", &self.assets)
            .stdout(Stdio::null());
        run_script(start).await;
    }

    /// A cluster started elsewhere (`hack/start-cluster.sh` for the e2e tests): its admin
    /// kubeconfig, the directory of kubectl and helm, and its state directory (logs).
    pub fn of_cluster(kubeconfig: PathBuf, assets: PathBuf, state: PathBuf) -> ControlPlane {
        ControlPlane {
            state,
            kubeconfig,
            assets,
            stop_on_drop: false,
        }
    }

    fn start() -> ControlPlane {
        // A start can lose a race for a free port with another process on a busy machine (the
        // script stops what it started when it fails): one more try in a fresh directory.
        let (state, output) = Self::try_start().or_else(|_| Self::try_start()).expect(
            "hack/start-control-plane.sh failed twice (run hack/install-control-plane.sh first?)",
        );
        spawn_reaper(&state);
        let exports = String::from_utf8_lossy(&output.stdout);
        let export = |name: &str| -> PathBuf {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("start-control-plane.sh printed no {name}"))
                .into()
        };
        ControlPlane {
            kubeconfig: export("KUBECONFIG"),
            assets: export("KUBEBUILDER_ASSETS"),
            state,
            stop_on_drop: false,
        }
    }

    /// Runs `hack/start-control-plane.sh` in a new state directory.
    fn try_start() -> Result<(PathBuf, std::process::Output), std::process::ExitStatus> {
        let state = tempfile::Builder::new()
            .prefix("esm-test-control-plane.")
            .tempdir()
            .expect("temp dir")
            .keep();
        let output = Command::new(repo_root().join("hack/start-control-plane.sh"))
            .arg(&state)
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/start-control-plane.sh");
        if output.status.success() {
            Ok((state, output))
        } else {
            Err(output.status)
        }
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is valid");
        Client::try_from(config).expect("client")
    }

    /// A client of this control plane that connects to `proxy` (a TCP proxy in front of the
    /// API server: TLS passes through, and the serving certificate names 127.0.0.1).
    pub async fn client_through(&self, proxy: &super::toxiproxy::Proxy) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is valid");
        config.cluster_url = format!("https://{}", proxy.address())
            .parse()
            .expect("a URL");
        Client::try_from(config).expect("client")
    }

    /// The API server's `127.0.0.1:PORT`.
    pub fn api_server_address(&self) -> std::net::SocketAddr {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let server = kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.server.clone())
            .expect("a server URL");
        super::toxiproxy::socket_of(&server)
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.assets.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs kubectl and returns stdout; panics with stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl().args(args).output().expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl apply -n NAMESPACE -f -` of `manifest`; panics when kubectl fails.
    pub fn kubectl_apply(&self, namespace: &str, manifest: &str) {
        let mut child = self
            .kubectl()
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("kubectl stdin")
            .write_all(manifest.as_bytes())
            .expect("write the manifest");
        assert!(
            child.wait().expect("kubectl exits").success(),
            "kubectl apply failed"
        );
    }

    /// `helm` with this control plane's kubeconfig.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.assets.join("helm"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// A fresh namespace for one test; deleted (in the background) when dropped.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> TestNamespace {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace { name, namespaces }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state.join("logs")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = Command::new(repo_root().join("hack/stop-control-plane.sh"))
                .arg(&self.state)
                .arg("--clean")
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub struct TestNamespace {
    pub name: String,
    namespaces: Api<Namespace>,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let namespaces = self.namespaces.clone();
        let name = self.name.clone();
        // Best effort and asynchronous: the control plane goes away with the test binary anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = namespaces.delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// Runs a hack script off the async runtime (the test's tasks keep running meanwhile); panics
/// when it fails.
pub async fn run_script(mut command: Command) {
    let shown = format!("{command:?}");
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .expect("the script's thread")
        .unwrap_or_else(|err| panic!("run {shown}: {err}"));
    assert!(status.success(), "{shown} failed ({status})");
}

pub fn crd_path() -> String {
    repo_root()
        .join(esm_operator::crd::CRD_PATH)
        .to_string_lossy()
        .into_owned()
}

/// Stops the control plane once this test process is gone, whether it exited, panicked or was
/// killed: a detached shell polls our pid.
#[allow(
    clippy::zombie_processes,
    reason = "the reaper must outlive this process"
)]
fn spawn_reaper(state: &Path) {
    let stop = repo_root().join("hack/stop-control-plane.sh");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec '{stop}' '{state}' --clean",
        pid = std::process::id(),
        stop = stop.display(),
        state = state.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn control plane reaper");
}
