//! Toxiproxy (Shopify's fault-injecting TCP proxy) for network-fault tests: a
//! `toxiproxy-server` of this test's own on a free loopback port, and a small client of its HTTP
//! API to put proxies between the poller and what it talks to, and faults ("toxics") on them.
//!
//! The server is stopped when [`Toxiproxy`] is dropped, and by a reaper ([`super::reaper`]) if
//! the test process dies without unwinding. Only loopback addresses are used.
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::control_plane::repo_root;

/// `IP:PORT` of a URL (`http://127.0.0.1:4566/...`), for a proxy's upstream.
pub fn socket_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .unwrap_or_else(|err| panic!("{url} has no IP:PORT: {err}"))
}

/// A running `toxiproxy-server`; killed when dropped.
pub struct Toxiproxy {
    server: Child,
    api: String,
    http: reqwest::Client,
    /// The server's log (stdout and stderr), shown when it does not start.
    log: tempfile::NamedTempFile,
}

/// The binary: `$ESM_TOXIPROXY` (hack/test.sh sets it), else what `hack/install-toxiproxy.sh`
/// builds or finds up to date in the cache.
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ESM_TOXIPROXY") {
        return path.into();
    }
    let output = Command::new(repo_root().join("hack/install-toxiproxy.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("hack/install-toxiproxy.sh runs");
    assert!(
        output.status.success(),
        "hack/install-toxiproxy.sh failed ({})",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .expect("hack/install-toxiproxy.sh prints the binary")
        .into()
}

impl Toxiproxy {
    /// Starts a server on a free loopback port. A start that loses the port to another process
    /// between choosing and binding it is tried again on another one.
    pub async fn start() -> Self {
        let binary = server_binary();
        for _ in 0..3 {
            if let Some(toxiproxy) = Self::try_start(&binary).await {
                return toxiproxy;
            }
        }
        panic!("{} did not start three times", binary.display());
    }

    async fn try_start(binary: &PathBuf) -> Option<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::Builder::new()
            .prefix("esm-toxiproxy-")
            .suffix(".log")
            .tempfile()
            .expect("a log file");
        let server = Command::new(binary)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            // It logs every connection at info level.
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("the log file"))
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let pid = server.id().to_string();
        // Only kills the pid while it is still a toxiproxy-server (pids are reused).
        super::reaper::after_exit(
            "grep -q toxiproxy-server \"/proc/$0/cmdline\" 2>/dev/null && kill \"$0\"",
            &[pid.as_ref()],
        );
        let mut toxiproxy = Toxiproxy {
            server,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = toxiproxy.server.try_wait() {
                eprintln!(
                    "toxiproxy-server on port {port} exited ({status}): {}",
                    toxiproxy.log_text()
                );
                return None;
            }
            let version = toxiproxy
                .http
                .get(format!("{}/version", toxiproxy.api))
                .send()
                .await;
            if version.is_ok_and(|answer| answer.status().is_success()) {
                return Some(toxiproxy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "toxiproxy-server did not answer on port {port} within 20 s: {}",
            toxiproxy.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A new proxy named `name` on a free loopback port, forwarding to `upstream`
    /// (`127.0.0.1:PORT`).
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> Proxy {
        assert!(
            upstream.ip().is_loopback(),
            "only loopback upstreams: {upstream}"
        );
        let created = call(
            self.http
                .post(format!("{}/proxies", self.api))
                .body(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(), "enabled": true}).to_string()),
            &format!("create proxy {name} to {upstream}"),
        )
        .await;
        let listen = created["listen"]
            .as_str()
            .and_then(|listen| listen.parse().ok())
            .unwrap_or_else(|| panic!("proxy {name} has no listen address: {created}"));
        Proxy {
            api: format!("{}/proxies/{name}", self.api),
            http: self.http.clone(),
            listen,
        }
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A proxy of a [`Toxiproxy`] server.
pub struct Proxy {
    api: String,
    http: reqwest::Client,
    listen: SocketAddr,
}

/// Which way a toxic acts: on what the client sends, or on what the upstream answers.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    Upstream,
    Downstream,
}

/// A fault, as Toxiproxy's toxic types.
#[derive(Clone, Copy, Debug)]
pub enum Toxic {
    /// Delays data by `latency` ± `jitter`.
    Latency { latency: Duration, jitter: Duration },
    /// Resets the connection (RST, unsent data discarded) `after` the first data arrives.
    ResetPeer { after: Duration },
    /// Drops all data (a blackhole); closes the connection after `close_after` when it is not
    /// zero.
    Timeout { close_after: Duration },
    /// At most `kilobytes_per_second`.
    Bandwidth { kilobytes_per_second: u64 },
    /// Closes the connection after `bytes` went through.
    LimitData { bytes: u64 },
}

impl Toxic {
    fn type_and_attributes(self) -> (&'static str, Value) {
        let millis = |duration: Duration| duration.as_millis() as u64;
        match self {
            Toxic::Latency { latency, jitter } => (
                "latency",
                json!({"latency": millis(latency), "jitter": millis(jitter)}),
            ),
            Toxic::ResetPeer { after } => ("reset_peer", json!({"timeout": millis(after)})),
            Toxic::Timeout { close_after } => ("timeout", json!({"timeout": millis(close_after)})),
            Toxic::Bandwidth {
                kilobytes_per_second,
            } => ("bandwidth", json!({"rate": kilobytes_per_second})),
            Toxic::LimitData { bytes } => ("limit_data", json!({"bytes": bytes})),
        }
    }
}

impl Proxy {
    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn address(&self) -> SocketAddr {
        self.listen
    }

    /// `url` (e.g. an emulator's endpoint) with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {url}"));
        let path = rest.find('/').map_or("", |slash| &rest[slash..]);
        format!("{scheme}://{}{path}", self.listen)
    }

    /// Adds `toxic` in `direction` to `toxicity` of the connections (0..=1); returns its name
    /// (for [`Proxy::remove`]).
    pub async fn add(&self, toxic: Toxic, direction: Direction, toxicity: f32) -> String {
        assert!(
            (0.0..=1.0).contains(&toxicity),
            "toxicity is a fraction: {toxicity}"
        );
        let (kind, attributes) = toxic.type_and_attributes();
        let stream = match direction {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        };
        let name = format!("{kind}_{stream}");
        call(
            self.http.post(format!("{}/toxics", self.api)).body(
                json!({"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes})
                    .to_string(),
            ),
            &format!("add toxic {toxic:?}"),
        )
        .await;
        name
    }

    /// Removes the toxic named `name`.
    pub async fn remove(&self, name: &str) {
        call(
            self.http.delete(format!("{}/toxics/{name}", self.api)),
            &format!("remove toxic {name}"),
        )
        .await;
    }

    /// Enables the proxy (it listens on its port again) or disables it (it stops listening
    /// and closes every connection: the upstream is unreachable).
    pub async fn set_enabled(&self, enabled: bool) {
        call(
            self.http
                .post(&self.api)
                .body(json!({"enabled": enabled}).to_string()),
            &format!("set proxy enabled: {enabled}"),
        )
        .await;
    }
}

/// Sends an API request; panics with the answer unless it succeeded. Returns the JSON answer
/// (`null` when empty).
async fn call(request: reqwest::RequestBuilder, what: &str) -> Value {
    let answer = request
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|err| panic!("toxiproxy: {what}: {err}"));
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    assert!(status.is_success(), "toxiproxy: {what}: {status} {body}");
    if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("toxiproxy: {what}: {err} in {body}"))
    }
}
