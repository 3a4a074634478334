//! What the loopback and peer benchmarks share: the sink that counts deliveries, the operator
//! process with its CPU and memory from /proc, the table rows, and putting records.
#![allow(dead_code)] // each benchmark uses a different part
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::Client as KinesisClient;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_sqs::Client as SqsClient;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use base64::Engine as _;
use serde::Deserialize;

/// The operator binary built with the benchmark, or `ESM_BENCH_OPERATOR` (another build, to
/// compare two versions with the same benchmark).
fn operator() -> String {
    std::env::var("ESM_BENCH_OPERATOR")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_esm-operator").to_owned())
}
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A record body: the put time in Unix nanoseconds, then padding to `len` bytes.
pub fn stamped_body(len: usize) -> String {
    let mut body = unix_nanos().to_string();
    body.push(' ');
    while body.len() < len {
        body.push('x');
    }
    body
}

// ---------------------------------------------------------------------------------------------
// The sink

/// Counts delivered records and their put-to-target latency; answers 200 with no body.
#[derive(Clone, Default)]
pub struct Sink {
    delivered: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

/// What a call from the operator carries: a Lambda event.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Records")]
    records: Vec<EventRecord>,
}

#[derive(Deserialize)]
struct EventRecord {
    /// SQS.
    body: Option<String>,
    kinesis: Option<KinesisData>,
}

#[derive(Deserialize)]
struct KinesisData {
    /// Base64.
    data: String,
}

impl EventRecord {
    /// When the record was put, from the stamp at the start of its body or data.
    fn put_nanos(&self) -> Option<u64> {
        let decoded;
        let text = match (&self.body, &self.kinesis) {
            (Some(body), _) => body.as_str(),
            (None, Some(kinesis)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&kinesis.data)
                    .ok()?;
                decoded = String::from_utf8(bytes).ok()?;
                decoded.as_str()
            }
            (None, None) => return None,
        };
        stamp_of(text)
    }
}

/// The put time at the start of a record's text ([`stamped_body`]).
fn stamp_of(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

impl Sink {
    pub async fn start() -> (Self, String) {
        let sink = Sink::default();
        let app = Router::new()
            .route("/", post(receive))
            .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a loopback port");
        let url = format!("http://{}/", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (sink, url)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Latency percentiles since the last call, and forgets them.
    pub fn take_latencies(&self) -> Latencies {
        let mut all = std::mem::take(&mut *self.latencies_us.lock().expect("sink lock"));
        all.sort_unstable();
        let at = |q: f64| {
            all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        Latencies {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }

    pub async fn wait_for(&self, count: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.delivered() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} records delivered within {timeout:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct Latencies {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

async fn receive(State(sink): State<Sink>, body: Bytes) -> &'static str {
    let now = unix_nanos();
    // The operator sends a Lambda event; the peer a batch of bodies (or data), one per line
    // (its `archive: lines`).
    let stamps: Vec<Option<u64>> = match serde_json::from_slice::<Event>(&body) {
        Ok(event) => event.records.iter().map(EventRecord::put_nanos).collect(),
        Err(_) => String::from_utf8_lossy(&body)
            .lines()
            .map(stamp_of)
            .collect(),
    };
    let mut latencies = sink.latencies_us.lock().expect("sink lock");
    latencies.extend(
        stamps
            .iter()
            .flatten()
            .map(|put| now.saturating_sub(*put) / 1000),
    );
    sink.delivered
        .fetch_add(stamps.len() as u64, Ordering::Relaxed);
    ""
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process of the operator binary, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    admin: SocketAddr,
}

impl Operator {
    pub fn start(args: &[&str], kubeconfig: &Path, log: PathBuf) -> Self {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(operator())
            .args(args)
            .args(["--admin-addr", &admin.to_string(), "--log-format", "json"])
            .env("KUBECONFIG", kubeconfig)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("POD_NAME", "bench-poller-0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start esm-operator");
        Self { child, admin }
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "{url} not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn usage(&self) -> Usage {
        Usage::of(self.child.id())
    }

    /// Records and batches sent so far, from the poller metrics.
    pub async fn batches(&self) -> Batches {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics text");
        let total = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Batches {
            records: total("esm_poller_batch_size_records_sum"),
            batches: total("esm_poller_batch_size_records_count"),
        }
    }
}

#[derive(Clone, Copy)]
pub struct Batches {
    pub records: f64,
    pub batches: f64,
}

impl Batches {
    /// Mean records per batch since `earlier`.
    pub fn mean_since(self, earlier: Batches) -> f64 {
        (self.records - earlier.records) / (self.batches - earlier.batches).max(1.0)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a benchmarked process: SIGTERM, then SIGKILL after 40 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// CPU time and memory of a process, from /proc.
#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Usage {
    pub fn of(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
        // Fields after "(comm) ": state is field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .expect("stat format")
            .1
            .split(' ')
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
                .expect("a memory figure")
        };
        Usage {
            cpu_seconds: ticks as f64 / clock_ticks_per_second(),
            rss_mib: kib("VmRSS:") / 1024.0,
            peak_rss_mib: kib("VmHWM:") / 1024.0,
        }
    }
}

pub fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[derive(Default)]
pub struct Report {
    pub rows: Vec<(String, String, String)>,
}

impl Report {
    pub fn row(&mut self, scenario: &str, figure: &str, value: String) {
        println!("| {scenario} | {figure} | {value} |");
        let _ = std::io::stdout().flush();
        self.rows
            .push((scenario.to_owned(), figure.to_owned(), value));
    }
}
pub async fn create_queue(sqs: &SqsClient, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "120")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("a queue URL")
}

/// Sends `count` stamped messages to `queues` (round robin, batches of 10), keeping at most
/// `max_backlog` sent but not delivered.
pub async fn send_sqs(
    sqs: &SqsClient,
    queues: &[String],
    count: u64,
    sink: &Sink,
    max_backlog: u64,
) {
    let start = sink.delivered();
    let mut sent = 0u64;
    let mut next_queue = 0;
    while sent < count {
        let mut waiting = Instant::now();
        while sent.saturating_sub(sink.delivered() - start) >= max_backlog {
            if waiting.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "sent {sent}, delivered {}: waiting for the backlog to drain",
                    sink.delivered() - start
                );
                waiting = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let batch = (count - sent).min(10);
        let entries = (0..batch)
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(stamped_body(200))
                    .build()
                    .expect("an entry")
            })
            .collect();
        let output = sqs
            .send_message_batch()
            .queue_url(&queues[next_queue % queues.len()])
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send messages");
        assert!(output.failed.is_empty(), "{:?}", output.failed);
        next_queue += 1;
        sent += batch;
    }
}

/// Puts `count` stamped records with random partition keys, 100 per PutRecords, at about
/// `rate` records per second.
pub async fn put_kinesis(client: &KinesisClient, stream: &str, count: u64, rate: u64) {
    let start = Instant::now();
    let mut put = 0u64;
    while put < count {
        let due = start + Duration::from_secs_f64(put as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let batch = (count - put).min(100);
        put_stamped(client, stream, put..put + batch, |_| None).await;
        put += batch;
    }
}

/// One PutRecords of stamped records `numbers` (partition key `key-N`), each with the explicit
/// hash key `hash_key(N)` gives, if any.
pub async fn put_stamped(
    client: &KinesisClient,
    stream: &str,
    numbers: std::ops::Range<u64>,
    hash_key: impl Fn(u64) -> Option<String>,
) {
    let entries = numbers
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .set_explicit_hash_key(hash_key(i))
                .data(Blob::new(stamped_body(200)))
                .build()
                .expect("an entry")
        })
        .collect();
    let output = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(output.failed_record_count, Some(0), "PutRecords failures");
}

/// Creates mapping `namespace/name` with `spec`.
pub async fn create_mapping(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let mapping: esm_operator::api::EventSourceMapping =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a valid mapping");
    kube::Api::<esm_operator::api::EventSourceMapping>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &mapping)
        .await
        .expect("create the mapping");
}
