//! End-to-end, scale and controller benchmarks on loopback (docs/benchmarks.md, parts 2-4):
//! the real `esm-operator` binary against the emulators, a real kube-apiserver and a sink that
//! answers 200 at once. Prints one table row per figure; asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench loopback -- sqs sqs-fauxqs kinesis scale-kinesis scale-sqs controller
//! ```
//! Sizes come from the environment: `BENCH_SQS_MESSAGES_MOTO` (default 1500),
//! `BENCH_SQS_MESSAGES_FAUXQS` (10000), `BENCH_KINESIS_RECORDS` (20000) put at
//! `BENCH_KINESIS_RATE` records/s (2000), `BENCH_IDLE_SECONDS` (30), `BENCH_SCALE_SHARDS` (64),
//! `BENCH_SCALE_MAPPINGS` (50), `BENCH_SCALE_MESSAGES` (2000), `BENCH_CONTROLLER_MAPPINGS` (100).
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::Client as KinesisClient;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_sdk_sqs::Client as SqsClient;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use base64::Engine as _;
use esm_operator::api::EventSourceMapping;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use support::control_plane::{ControlPlane, crd_path};
use support::emulators::Emulators;

const OPERATOR: &str = env!("CARGO_BIN_EXE_esm-operator");
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SQS backlog kept at most this deep: moto slows with the square of queue depth.
const SQS_MAX_BACKLOG: u64 = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A record body: the put time in Unix nanoseconds, then padding to `len` bytes.
fn stamped_body(len: usize) -> String {
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
struct Sink {
    delivered: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

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
        text.split(' ').next()?.parse().ok()
    }
}

impl Sink {
    async fn start() -> (Self, String) {
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

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Latency percentiles since the last call, and forgets them.
    fn take_latencies(&self) -> Latencies {
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

    async fn wait_for(&self, count: u64, timeout: Duration) {
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

struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
}

async fn receive(State(sink): State<Sink>, body: Bytes) -> &'static str {
    let now = unix_nanos();
    let event: Event = serde_json::from_slice(&body).expect("a Lambda event");
    let mut latencies = sink.latencies_us.lock().expect("sink lock");
    for record in &event.records {
        if let Some(put) = record.put_nanos() {
            latencies.push(now.saturating_sub(put) / 1000);
        }
    }
    sink.delivered
        .fetch_add(event.records.len() as u64, Ordering::Relaxed);
    ""
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process of the operator binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct Operator {
    child: Child,
    admin: SocketAddr,
}

impl Operator {
    fn start(args: &[&str], kubeconfig: &Path, log: PathBuf) -> Self {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(OPERATOR)
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

    async fn wait_ready(&self) {
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

    fn usage(&self) -> Usage {
        Usage::of(self.child.id())
    }

    /// Records and batches sent so far, from the poller metrics.
    async fn batches(&self) -> Batches {
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
struct Batches {
    records: f64,
    batches: f64,
}

impl Batches {
    /// Mean records per batch since `earlier`.
    fn mean_since(self, earlier: Batches) -> f64 {
        (self.records - earlier.records) / (self.batches - earlier.batches).max(1.0)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// CPU time and memory of a process, from /proc.
#[derive(Clone, Copy)]
struct Usage {
    cpu_seconds: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

impl Usage {
    fn of(pid: u32) -> Self {
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

fn clock_ticks_per_second() -> f64 {
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

struct Report {
    rows: Vec<(String, String, String)>,
}

impl Report {
    fn row(&mut self, scenario: &str, figure: &str, value: String) {
        println!("| {scenario} | {figure} | {value} |");
        let _ = std::io::stdout().flush();
        self.rows
            .push((scenario.to_owned(), figure.to_owned(), value));
    }
}

// ---------------------------------------------------------------------------------------------
// Setup shared by the scenarios

struct Bench {
    plane: &'static ControlPlane,
    client: kube::Client,
    namespace: String,
    logs: PathBuf,
    sink: Sink,
    sink_url: String,
}

impl Bench {
    async fn mapping(&self, name: &str, spec: serde_json::Value) {
        let mapping: EventSourceMapping = serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("a valid mapping");
        Api::<EventSourceMapping>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &mapping)
            .await
            .expect("create the mapping");
    }

    fn sqs_spec(&self, queue_url: &str, endpoint: &str, batch_size: u32) -> serde_json::Value {
        serde_json::json!({
            "source": {"sqs": {"queueUrl": queue_url, "region": "us-east-1", "endpointUrl": endpoint}},
            "target": {"url": self.sink_url, "timeoutSeconds": 10},
            "batchSize": batch_size,
        })
    }

    fn poller(&self, mapping: &str) -> Operator {
        Operator::start(
            &[
                "poller",
                "--namespace",
                &self.namespace,
                "--mapping",
                mapping,
            ],
            &self.plane.kubeconfig,
            self.logs.join(format!("poller-{mapping}.log")),
        )
    }

    fn controller(&self, extra: &[&str], log: &str) -> Operator {
        let mut args = vec!["controller", "--watch-namespace", &self.namespace];
        args.extend_from_slice(extra);
        Operator::start(&args, &self.plane.kubeconfig, self.logs.join(log))
    }
}

async fn create_queue(sqs: &SqsClient, name: &str) -> String {
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
async fn send_sqs(sqs: &SqsClient, queues: &[String], count: u64, sink: &Sink, max_backlog: u64) {
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

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Part 2 (SQS): one poller process, batch 10, against `emulator` (moto or fauxqs). Then idle
/// with long polling.
async fn sqs_end_to_end(bench: &Bench, report: &mut Report, emulator: &str) {
    let emulators = Emulators::start(&[emulator]);
    let sqs = SqsClient::new(&emulators.sdk_config(emulator));
    let queue = create_queue(&sqs, "bench-sqs").await;
    bench
        .mapping(
            "sqs",
            bench.sqs_spec(&queue, emulators.endpoint(emulator), 10),
        )
        .await;
    let poller = bench.poller("sqs");
    poller.wait_ready().await;
    // Warm up: connections and the first batches, outside the figures.
    send_sqs(
        &sqs,
        std::slice::from_ref(&queue),
        50,
        &bench.sink,
        SQS_MAX_BACKLOG,
    )
    .await;
    bench.sink.wait_for(50, READY_TIMEOUT).await;
    bench.sink.take_latencies();
    let messages = env_or(
        &format!("BENCH_SQS_MESSAGES_{}", emulator.to_uppercase()),
        if emulator == "moto" { 1500 } else { 10_000 },
    );
    let base = bench.sink.delivered();
    let before = poller.usage();
    let batches = poller.batches().await;
    let start = Instant::now();
    send_sqs(
        &sqs,
        std::slice::from_ref(&queue),
        messages,
        &bench.sink,
        SQS_MAX_BACKLOG,
    )
    .await;
    bench.sink.wait_for(base + messages, READY_TIMEOUT).await;
    let elapsed = start.elapsed().as_secs_f64();
    let after = poller.usage();
    let latencies = bench.sink.take_latencies();
    let scenario = &format!("SQS ({emulator}), batch 10, 1 poller");
    let cpu = after.cpu_seconds - before.cpu_seconds;
    report.row(
        scenario,
        "messages, mean batch",
        format!(
            "{messages}, {:.1}",
            poller.batches().await.mean_since(batches)
        ),
    );
    report.row(
        scenario,
        "delivered/s",
        format!("{:.0}", messages as f64 / elapsed),
    );
    report.row(
        scenario,
        "latency put->target p50 / p99",
        format!("{:.1} ms / {:.1} ms", latencies.p50_ms, latencies.p99_ms),
    );
    report.row(
        scenario,
        "poller CPU per 1000 messages",
        format!(
            "{:.3} s ({:.0} µs/message)",
            cpu / messages as f64 * 1000.0,
            cpu / messages as f64 * 1e6
        ),
    );
    report.row(
        scenario,
        "poller peak RSS",
        format!("{:.1} MiB", after.peak_rss_mib),
    );
    let seconds = env_or("BENCH_IDLE_SECONDS", 30);
    let before = poller.usage();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = poller.usage();
    report.row(
        scenario,
        "idle, long polling (10 receive loops): CPU, RSS",
        format!(
            "{:.3}% of a core over {seconds} s, {:.1} MiB",
            (after.cpu_seconds - before.cpu_seconds) / seconds as f64 * 100.0,
            after.rss_mib
        ),
    );
}

/// Parts 2 and 3 (Kinesis): one poller process holding every shard of a `shards`-shard stream
/// (kinesis-local), batch 100: idle with every shard polled, then records put at a steady rate.
async fn kinesis_end_to_end(bench: &Bench, report: &mut Report, shards: i32) {
    let kinesis = Emulators::start(&["kinesis"]);
    let client = KinesisClient::new(&kinesis.sdk_config("kinesis"));
    let stream = format!("bench-{shards}");
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .expect("DescribeStreamSummary");
        if summary.stream_description_summary.map(|s| s.stream_status) == Some(StreamStatus::Active)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = format!("kinesis-{shards}");
    bench
        .mapping(
            &name,
            serde_json::json!({
                "source": {"kinesis": {"streamName": stream, "region": "us-east-1", "endpointUrl": kinesis.endpoint("kinesis")}},
                "target": {"url": bench.sink_url, "timeoutSeconds": 10},
                "batchSize": 100,
                "startingPosition": "TRIM_HORIZON",
            }),
        )
        .await;
    let poller = bench.poller(&name);
    poller.wait_ready().await;
    // Warm up until every shard is held and delivering: ~30 records per shard.
    let warm_up = shards as u64 * 30;
    let base = bench.sink.delivered();
    put_kinesis(&client, &stream, warm_up, 5000).await;
    bench.sink.wait_for(base + warm_up, READY_TIMEOUT).await;
    bench.sink.take_latencies();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scenario = format!("Kinesis (kinesis-local), {shards} shards, batch 100, 1 poller");
    let seconds = env_or("BENCH_IDLE_SECONDS", 30);
    let before = poller.usage();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = poller.usage();
    let idle_cpu = (idle.cpu_seconds - before.cpu_seconds) / seconds as f64 * 100.0;
    report.row(
        &scenario,
        "idle (every shard polled each second): CPU, RSS",
        format!(
            "{idle_cpu:.2}% of a core ({:.3}% per shard), {:.1} MiB ({:.2} MiB per shard)",
            idle_cpu / f64::from(shards),
            idle.rss_mib,
            idle.rss_mib / f64::from(shards)
        ),
    );
    let records = env_or("BENCH_KINESIS_RECORDS", 20_000);
    let rate = env_or("BENCH_KINESIS_RATE", 2000);
    let base = bench.sink.delivered();
    let batches = poller.batches().await;
    let start = Instant::now();
    put_kinesis(&client, &stream, records, rate).await;
    bench.sink.wait_for(base + records, READY_TIMEOUT).await;
    let elapsed = start.elapsed().as_secs_f64();
    let loaded = poller.usage();
    let latencies = bench.sink.take_latencies();
    let cpu = loaded.cpu_seconds - idle.cpu_seconds;
    report.row(
        &scenario,
        "records, put rate, delivered/s, mean batch",
        format!(
            "{records}, {rate}/s, {:.0}/s, {:.1}",
            records as f64 / elapsed,
            poller.batches().await.mean_since(batches)
        ),
    );
    report.row(
        &scenario,
        "latency put->target p50 / p99",
        format!("{:.1} ms / {:.1} ms", latencies.p50_ms, latencies.p99_ms),
    );
    report.row(
        &scenario,
        "poller CPU per 1000 records",
        format!(
            "{:.3} s ({:.1} µs/record)",
            cpu / records as f64 * 1000.0,
            cpu / records as f64 * 1e6
        ),
    );
    report.row(
        &scenario,
        "poller peak RSS",
        format!("{:.1} MiB", loaded.peak_rss_mib),
    );
}

/// Puts `count` stamped records with random partition keys, 100 per PutRecords, at about
/// `rate` records per second.
async fn put_kinesis(client: &KinesisClient, stream: &str, count: u64, rate: u64) {
    let start = Instant::now();
    let mut put = 0u64;
    while put < count {
        let due = start + Duration::from_secs_f64(put as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let batch = (count - put).min(100);
        let entries = (0..batch)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", put + i))
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
        put += batch;
    }
}

/// Part 3 (SQS): the in-process controller running N SQS mappings (fauxqs), idle and loaded.
async fn sqs_scale(bench: &Bench, report: &mut Report) {
    let mappings = env_or("BENCH_SCALE_MAPPINGS", 50) as usize;
    let fauxqs = Emulators::start(&["fauxqs"]);
    let sqs = SqsClient::new(&fauxqs.sdk_config("fauxqs"));
    let controller = bench.controller(&["--pollers", "in-process"], "controller-scale.log");
    controller.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let empty = controller.usage();
    let mut queues = Vec::with_capacity(mappings);
    for index in 0..mappings {
        let queue = create_queue(&sqs, &format!("scale-{index}")).await;
        bench
            .mapping(
                &format!("scale-{index}"),
                bench.sqs_spec(&queue, fauxqs.endpoint("fauxqs"), 10),
            )
            .await;
        queues.push(queue);
    }
    // One message per queue: every mapping's pollers are running once all are delivered.
    let base = bench.sink.delivered();
    send_sqs_one_each(&sqs, &queues).await;
    bench
        .sink
        .wait_for(base + mappings as u64, READY_TIMEOUT)
        .await;
    bench.sink.take_latencies();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scenario = format!("in-process controller, {mappings} SQS mappings (fauxqs)");
    let seconds = env_or("BENCH_IDLE_SECONDS", 30);
    let before = controller.usage();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = controller.usage();
    let per = mappings as f64;
    report.row(
        &scenario,
        "idle RSS: total / per mapping",
        format!(
            "{:.1} MiB / {:.2} MiB (controller alone {:.1} MiB)",
            idle.rss_mib,
            (idle.rss_mib - empty.rss_mib) / per,
            empty.rss_mib
        ),
    );
    report.row(
        &scenario,
        "idle CPU: total / per mapping",
        format!(
            "{:.2}% / {:.3}% of a core",
            (idle.cpu_seconds - before.cpu_seconds) / seconds as f64 * 100.0,
            (idle.cpu_seconds - before.cpu_seconds) / seconds as f64 * 100.0 / per
        ),
    );
    let messages = env_or("BENCH_SCALE_MESSAGES", 2000);
    let base = bench.sink.delivered();
    let start = Instant::now();
    send_sqs(&sqs, &queues, messages, &bench.sink, 500).await;
    bench.sink.wait_for(base + messages, READY_TIMEOUT).await;
    let elapsed = start.elapsed().as_secs_f64();
    let loaded = controller.usage();
    let latencies = bench.sink.take_latencies();
    let cpu = loaded.cpu_seconds - idle.cpu_seconds;
    report.row(
        &scenario,
        "under load: delivered/s, latency p50 / p99",
        format!(
            "{messages} messages, {:.0}/s, {:.1} ms / {:.1} ms",
            messages as f64 / elapsed,
            latencies.p50_ms,
            latencies.p99_ms
        ),
    );
    report.row(
        &scenario,
        "under load: CPU per 1000 messages, peak RSS",
        format!(
            "{:.3} s ({:.0} µs/message), {:.1} MiB",
            cpu / messages as f64 * 1000.0,
            cpu / messages as f64 * 1e6,
            loaded.peak_rss_mib
        ),
    );
    drop(controller);
}

async fn send_sqs_one_each(sqs: &SqsClient, queues: &[String]) {
    for queue in queues {
        sqs.send_message()
            .queue_url(queue)
            .message_body(stamped_body(200))
            .send()
            .await
            .expect("send");
    }
}

/// Part 4: reconcile latency from applying a mapping to its poller Deployment existing.
async fn controller_latency(bench: &Bench, report: &mut Report) {
    let mappings = env_or("BENCH_CONTROLLER_MAPPINGS", 100) as usize;
    let controller = bench.controller(&[], "controller-latency.log");
    controller.wait_ready().await;
    let seen: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let deployments: Api<Deployment> = Api::namespaced(bench.client.clone(), &bench.namespace);
    let watch = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = std::pin::pin!(
                watcher(deployments, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(Ok(deployment)) = events.next().await {
                let owner = deployment
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "EventSourceMapping")
                    .map(|o| o.name.clone());
                if let Some(owner) = owner {
                    seen.lock()
                        .expect("seen lock")
                        .entry(owner)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    let kubectl = bench.plane.assets.join("kubectl");
    let mut applied = Vec::with_capacity(mappings);
    for index in 0..mappings {
        let name = format!("reconcile-{index}");
        let manifest = format!(
            "apiVersion: esm.dev/v1alpha1\nkind: EventSourceMapping\nmetadata: {{name: {name}}}\n\
             spec:\n  source: {{sqs: {{queueUrl: 'http://127.0.0.1:9/000000000000/q', region: us-east-1}}}}\n  \
             target: {{url: '{}'}}\n",
            bench.sink_url
        );
        let start = Instant::now();
        let mut child = Command::new(&kubectl)
            .args(["--kubeconfig"])
            .arg(&bench.plane.kubeconfig)
            .args(["apply", "--server-side", "-n", &bench.namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("manifest");
        assert!(child.wait().expect("kubectl").success(), "kubectl apply");
        applied.push((name, start, Instant::now()));
        // One at a time, as a person or a CI job applies them: latency, not throughput.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while seen.lock().expect("seen lock").len() < mappings {
        assert!(Instant::now() < deadline, "not every Deployment appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let seen = seen.lock().expect("seen lock");
    let mut from_start: Vec<f64> = Vec::new();
    let mut from_stored: Vec<f64> = Vec::new();
    for (name, start, done) in &applied {
        let at = seen[name];
        from_start.push((at - *start).as_secs_f64() * 1000.0);
        from_stored.push(at.saturating_duration_since(*done).as_secs_f64() * 1000.0);
    }
    let percentiles = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() as f64 * q) as usize).min(values.len() - 1)];
        format!("{:.0} ms / {:.0} ms", at(0.5), at(0.99))
    };
    let scenario = format!("controller, {mappings} mappings applied one at a time");
    report.row(
        &scenario,
        "kubectl apply started -> Deployment present, p50 / p99",
        percentiles(&mut from_start),
    );
    report.row(
        &scenario,
        "kubectl apply returned -> Deployment present, p50 / p99",
        percentiles(&mut from_stored),
    );
    let usage = controller.usage();
    report.row(
        &scenario,
        "controller CPU, peak RSS",
        format!("{:.2} s, {:.1} MiB", usage.cpu_seconds, usage.peak_rss_mib),
    );
}

const SCENARIOS: [&str; 6] = [
    "sqs",
    "sqs-fauxqs",
    "kinesis",
    "scale-kinesis",
    "scale-sqs",
    "controller",
];

fn main() {
    let selected: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let plane = ControlPlane::with_crd();
        plane.kubectl_ok(&["apply", "--server-side", "-f", &crd_path()]);
        let client = plane.client().await;
        let logs = tempfile::Builder::new()
            .prefix("esm-bench-")
            .tempdir()
            .expect("a log directory")
            .keep();
        eprintln!("logs in {}", logs.display());
        let (sink, sink_url) = Sink::start().await;
        let mut report = Report { rows: Vec::new() };
        println!("| scenario | figure | value |\n|---|---|---|");
        for scenario in SCENARIOS {
            if !wants(scenario) {
                continue;
            }
            // A namespace per scenario, so controllers and pollers see only their mappings.
            let namespace = plane.namespace(&client, scenario).await;
            let bench = Bench {
                plane,
                client: client.clone(),
                namespace: namespace.name.clone(),
                logs: logs.clone(),
                sink: sink.clone(),
                sink_url: sink_url.clone(),
            };
            match scenario {
                "sqs" => sqs_end_to_end(&bench, &mut report, "moto").await,
                "sqs-fauxqs" => sqs_end_to_end(&bench, &mut report, "fauxqs").await,
                "kinesis" => kinesis_end_to_end(&bench, &mut report, 4).await,
                "scale-kinesis" => {
                    let shards = env_or("BENCH_SCALE_SHARDS", 64) as i32;
                    kinesis_end_to_end(&bench, &mut report, shards).await
                }
                "scale-sqs" => sqs_scale(&bench, &mut report).await,
                _ => controller_latency(&bench, &mut report).await,
            }
        }
        eprintln!("{} figures", report.rows.len());
    });
}
