//! The peer benchmark (docs/benchmarks.md, part 6): the `esm-operator poller` and the pipeline a
//! user would otherwise run, Benthos v4.27.0 (`aws_sqs` / `aws_kinesis` input ->
//! `http_client` output), side by side on the same emulators and the same sink. Runs alternate
//! (esm-operator, Benthos, esm-operator, ...) so a change in the machine's load hits both; CPU
//! is each process's `utime + stime` and memory its `VmHWM` (/proc). Asserts nothing about time.
//!
//! ```sh
//! hack/bench.sh peer      # builds Benthos first (hack/install-benthos.sh), then this
//! ```
//! Environment: `BENTHOS` (the binary; required), `BENCH_PEER_ROUNDS` (3),
//! `BENCH_PEER_MESSAGES` (20000), `BENCH_PEER_RECORDS` (20000), `BENCH_PEER_IDLE_SECONDS` (60).
//!
//! What both get, and why it is fair:
//! - SQS: one fauxqs queue per run, preloaded; batches of 10 (the poller's `batchSize: 10`;
//!   Benthos' output batches of 10 folded into one JSON array, one POST each); ten batches in
//!   flight (the poller's default ten receive loops; Benthos `max_in_flight: 10`); 20 s long
//!   polls and deletes after the sink's 200 on both.
//! - Kinesis: one kinesis-local stream of 4 shards per run, preloaded evenly (each shard's
//!   records a multiple of 100, since Benthos 4.27's input batching only flushes full batches);
//!   batches of 100 per shard from the oldest record; one batch in flight per shard on both.
//!   Checkpoints: the poller's Kubernetes Leases (at most one write a second per shard, its
//!   design), Benthos' DynamoDB Local table (its `commit_period`, 5 s by default). Benthos
//!   takes one endpoint for Kinesis and DynamoDB, so its calls go through a router in this
//!   process that sends each to its emulator by `X-Amz-Target` (the router's CPU is this
//!   process's, counted for neither).
//! - What each sends differs in the poller's disfavour: the poller builds the full Lambda event
//!   (ids, attributes, receipt handles, base64 data, JSON-escaped), Benthos the bodies joined
//!   by newlines (`archive: lines`, its cheapest way to send a batch as one request).
//! - Both log at warn level and keep their Prometheus metrics.
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client as KinesisClient;
use aws_sdk_sqs::Client as SqsClient;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{
    Operator, READY_TIMEOUT, Sink, Usage, create_mapping, create_queue, env_or, free_port,
    put_stamped, send_sqs, stop,
};
use support::control_plane::{ControlPlane, crd_path};
use support::emulators::{Emulators, kinesis_stream_active};

const SHARDS: i32 = 4;
/// Records delivered before the measured part of a run starts (connections, shard leases).
const WARM_UP: u64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Poller,
    Benthos,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Poller => "esm-operator poller",
            Contender::Benthos => "Benthos v4.27.0",
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
struct Run {
    cpu_per_record_us: f64,
    records_per_second: f64,
    peak_rss_mib: f64,
    idle_cpu_percent: f64,
}

/// A contender's process: the operator's poller or Benthos; stopped when dropped.
enum Running {
    Poller(Operator),
    Benthos(Child),
}

impl Running {
    fn usage(&self) -> Usage {
        match self {
            Running::Poller(operator) => operator.usage(),
            Running::Benthos(child) => Usage::of(child.id()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Benthos(child) = self {
            stop(child);
        }
    }
}

struct Peer {
    plane: &'static ControlPlane,
    client: kube::Client,
    namespace: String,
    benthos: PathBuf,
    logs: PathBuf,
    sink: Sink,
    sink_url: String,
    emulators: Emulators,
    /// Kinesis and DynamoDB behind one endpoint, for Benthos.
    router_url: String,
    idle: Duration,
}

impl Peer {
    async fn mapping(&self, name: &str, spec: serde_json::Value) {
        create_mapping(&self.client, &self.namespace, name, spec).await;
    }

    async fn poller(&self, name: &str, spec: serde_json::Value) -> Running {
        self.mapping(name, spec).await;
        let poller = Operator::start(
            &["poller", "--namespace", &self.namespace, "--mapping", name],
            &self.plane.kubeconfig,
            self.logs.join(format!("{name}.log")),
        );
        poller.wait_ready().await;
        Running::Poller(poller)
    }

    fn benthos(&self, name: &str, config: &str) -> Running {
        let path = self.logs.join(format!("{name}.yaml"));
        std::fs::write(&path, config).expect("write the Benthos config");
        let log = std::fs::File::create(self.logs.join(format!("{name}.log"))).expect("a log");
        let child = Command::new(&self.benthos)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start Benthos");
        Running::Benthos(child)
    }

    /// Measures a started contender: CPU and time from the warm-up to the last of `total`
    /// records (counted from `base`), then CPU over the idle period.
    async fn measure(&self, running: Running, base: u64, total: u64) -> Run {
        self.sink.wait_for(base + WARM_UP, READY_TIMEOUT).await;
        let (start, warm, counted) = (Instant::now(), running.usage(), self.sink.delivered());
        self.sink.wait_for(base + total, READY_TIMEOUT * 10).await;
        let (elapsed, loaded) = (start.elapsed().as_secs_f64(), running.usage());
        let records = (self.sink.delivered() - counted) as f64;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let quiet = running.usage();
        tokio::time::sleep(self.idle).await;
        let idle = running.usage();
        drop(running);
        self.sink.take_latencies();
        Run {
            cpu_per_record_us: (loaded.cpu_seconds - warm.cpu_seconds) / records * 1e6,
            records_per_second: records / elapsed,
            peak_rss_mib: loaded.peak_rss_mib,
            idle_cpu_percent: (idle.cpu_seconds - quiet.cpu_seconds) / self.idle.as_secs_f64()
                * 100.0,
        }
    }

    async fn sqs_run(&self, contender: Contender, run: usize, messages: u64) -> Run {
        let sqs = SqsClient::new(&self.emulators.sdk_config("fauxqs"));
        let name = format!("sqs-{run}-{}", tag(contender));
        let queue = create_queue(&sqs, &name).await;
        let base = self.sink.delivered();
        send_sqs(
            &sqs,
            std::slice::from_ref(&queue),
            messages,
            &self.sink,
            u64::MAX,
        )
        .await;
        let endpoint = self.emulators.endpoint("fauxqs");
        let running = match contender {
            Contender::Poller => {
                let spec = serde_json::json!({
                    "source": {"sqs": {"queueUrl": queue, "region": "us-east-1", "endpointUrl": endpoint}},
                    "target": {"url": self.sink_url, "timeoutSeconds": 10},
                    "batchSize": 10,
                });
                self.poller(&name, spec).await
            }
            Contender::Benthos => self.benthos(
                &name,
                &format!(
                    r#"http: {{ address: "127.0.0.1:{port}" }}
logger: {{ level: WARN }}
input:
  aws_sqs:
    url: "{queue}"
    endpoint: "{endpoint}"
    region: us-east-1
    credentials: {{ id: test, secret: test }}
    max_number_of_messages: 10
    wait_time_seconds: 20
output:
  http_client:
    url: "{sink}"
    verb: POST
    max_in_flight: 10
    batching:
      count: 10
      period: 1s
      processors:
        - archive: {{ format: lines }}
"#,
                    port = free_port(),
                    sink = self.sink_url,
                ),
            ),
        };
        self.measure(running, base, messages).await
    }

    async fn kinesis_run(&self, contender: Contender, run: usize, records: u64) -> Run {
        let kinesis = KinesisClient::new(&self.emulators.sdk_config("kinesis"));
        let name = format!("kinesis-{run}-{}", tag(contender));
        kinesis
            .create_stream()
            .stream_name(&name)
            .shard_count(SHARDS)
            .send()
            .await
            .expect("CreateStream");
        kinesis_stream_active(&kinesis, &name).await;
        let base = self.sink.delivered();
        put_evenly(&kinesis, &name, records).await;
        let running = match contender {
            Contender::Poller => {
                let spec = serde_json::json!({
                    "source": {"kinesis": {"streamName": name, "region": "us-east-1",
                                           "endpointUrl": self.emulators.endpoint("kinesis")}},
                    "target": {"url": self.sink_url, "timeoutSeconds": 10},
                    "batchSize": 100,
                    "startingPosition": "TRIM_HORIZON",
                });
                self.poller(&name, spec).await
            }
            Contender::Benthos => self.benthos(
                &name,
                &format!(
                    r#"http: {{ address: "127.0.0.1:{port}" }}
logger: {{ level: WARN }}
input:
  aws_kinesis:
    streams: [ "{name}" ]
    dynamodb: {{ table: "{name}", create: true }}
    start_from_oldest: true
    endpoint: "{router}"
    region: us-east-1
    credentials: {{ id: test, secret: test }}
    batching:
      count: 100
      processors:
        - archive: {{ format: lines }}
output:
  http_client:
    url: "{sink}"
    verb: POST
    max_in_flight: {SHARDS}
"#,
                    port = free_port(),
                    router = self.router_url,
                    sink = self.sink_url,
                ),
            ),
        };
        self.measure(running, base, records).await
    }
}

fn tag(contender: Contender) -> &'static str {
    match contender {
        Contender::Poller => "esm",
        Contender::Benthos => "benthos",
    }
}

/// Puts `count` stamped records, the same number on every shard (explicit hash keys at each
/// shard's start), 500 per PutRecords.
async fn put_evenly(client: &KinesisClient, stream: &str, count: u64) {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("ListShards")
        .shards
        .unwrap_or_default();
    let keys: Vec<String> = shards
        .iter()
        .map(|s| {
            s.hash_key_range
                .as_ref()
                .expect("a hash key range")
                .starting_hash_key
                .clone()
        })
        .collect();
    assert_eq!(keys.len(), SHARDS as usize, "{stream} has {SHARDS} shards");
    let mut put = 0u64;
    while put < count {
        let batch = (count - put).min(500);
        let hash_key = |i: u64| Some(keys[i as usize % keys.len()].clone());
        put_stamped(client, stream, put..put + batch, hash_key).await;
        put += batch;
    }
}

/// Forwards AWS JSON-protocol calls to Kinesis or DynamoDB by their `X-Amz-Target`.
#[derive(Clone)]
struct AwsRouter {
    http: reqwest::Client,
    kinesis: String,
    dynamodb: String,
}

async fn route(
    State(router): State<AwsRouter>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let url = if target.starts_with("DynamoDB") {
        &router.dynamodb
    } else {
        &router.kinesis
    };
    let mut forwarded = headers.clone();
    forwarded.remove("host");
    forwarded.remove("content-length");
    let response = router
        .http
        .post(url)
        .headers(forwarded)
        .body(body)
        .send()
        .await
        .expect("the emulator answers");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
    let mut back = response.headers().clone();
    back.remove("content-length");
    back.remove("transfer-encoding");
    let body = response.bytes().await.expect("a response body");
    (status, back, body)
}

async fn start_router(emulators: &Emulators) -> String {
    let router = AwsRouter {
        http: reqwest::Client::new(),
        kinesis: emulators.endpoint("kinesis").to_owned(),
        dynamodb: emulators.endpoint("dynamodb").to_owned(),
    };
    let app = Router::new().route("/", post(route)).with_state(router);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a loopback port");
    let url = format!("http://{}/", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A table row: its name, the runs, the unit, the figure of a run, its decimals.
type Row<'a> = (
    &'a str,
    &'a [(Contender, Run)],
    &'a str,
    fn(&Run) -> f64,
    usize,
);

/// "min-max" of a figure over runs, with `digits` decimals.
fn spread(runs: &[Run], figure: impl Fn(&Run) -> f64, digits: usize) -> String {
    let values: Vec<f64> = runs.iter().map(figure).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if format!("{min:.digits$}") == format!("{max:.digits$}") {
        format!("{min:.digits$}")
    } else {
        format!("{min:.digits$}-{max:.digits$}")
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let benthos = PathBuf::from(
        std::env::var("BENTHOS").expect("BENTHOS names the Benthos binary (hack/bench.sh peer)"),
    );
    assert!(
        Path::new(&benthos).is_file(),
        "{} is not a file",
        benthos.display()
    );
    let rounds = env_or("BENCH_PEER_ROUNDS", 3) as usize;
    let messages = env_or("BENCH_PEER_MESSAGES", 20_000);
    let records = env_or("BENCH_PEER_RECORDS", 20_000);
    assert!(
        records.is_multiple_of(100 * SHARDS as u64),
        "BENCH_PEER_RECORDS must be a multiple of {}: Benthos only sends full batches",
        100 * SHARDS
    );
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let plane = ControlPlane::with_crd();
        plane.kubectl_ok(&["apply", "--server-side", "-f", &crd_path()]);
        let client = plane.client().await;
        let namespace = plane.namespace(&client, "peer").await;
        let logs = tempfile::Builder::new()
            .prefix("esm-bench-peer-")
            .tempdir()
            .expect("a log directory")
            .keep();
        eprintln!("logs in {}", logs.display());
        let emulators = Emulators::start(&["fauxqs", "kinesis", "dynamodb"]);
        let router_url = start_router(&emulators).await;
        let (sink, sink_url) = Sink::start().await;
        let peer = Peer {
            plane,
            client,
            namespace: namespace.name.clone(),
            benthos,
            logs,
            sink,
            sink_url,
            emulators,
            router_url,
            idle: Duration::from_secs(env_or("BENCH_PEER_IDLE_SECONDS", 60)),
        };
        let load_before = load_average();
        let mut sqs: Vec<(Contender, Run)> = Vec::new();
        let mut kinesis: Vec<(Contender, Run)> = Vec::new();
        for round in 0..rounds {
            for contender in [Contender::Poller, Contender::Benthos] {
                let run = peer.sqs_run(contender, round, messages).await;
                eprintln!("SQS round {round}, {}: {run:?}", contender.name());
                sqs.push((contender, run));
                let run = peer.kinesis_run(contender, round, records).await;
                eprintln!("Kinesis round {round}, {}: {run:?}", contender.name());
                kinesis.push((contender, run));
            }
        }
        let of = |all: &[(Contender, Run)], who: Contender| -> Vec<Run> {
            all.iter().filter(|(c, _)| *c == who).map(|(_, r)| *r).collect()
        };
        let mut table = format!(
            "\n{rounds} alternating rounds; load average before {load_before}, after {}\n\n| | {} | {} |\n|---|---|---|\n",
            load_average(),
            Contender::Poller.name(),
            Contender::Benthos.name()
        );
        let rows: [Row; 8] = [
            ("SQS CPU per message", &sqs, " µs", |r| r.cpu_per_record_us, 0),
            ("SQS messages/s", &sqs, "", |r| r.records_per_second, 0),
            ("SQS peak RSS", &sqs, " MiB", |r| r.peak_rss_mib, 0),
            ("idle CPU, empty queue", &sqs, " % of a core", |r| r.idle_cpu_percent, 2),
            ("Kinesis CPU per record (4 shards, batch 100)", &kinesis, " µs", |r| r.cpu_per_record_us, 1),
            ("Kinesis records/s (kinesis-local bound)", &kinesis, "", |r| r.records_per_second, 0),
            ("Kinesis peak RSS", &kinesis, " MiB", |r| r.peak_rss_mib, 0),
            ("idle CPU, quiet stream", &kinesis, " % of a core", |r| r.idle_cpu_percent, 2),
        ];
        for (figure, runs, unit, value, digits) in rows {
            let _ = writeln!(
                table,
                "| {figure} | {}{unit} | {}{unit} |",
                spread(&of(runs, Contender::Poller), value, digits),
                spread(&of(runs, Contender::Benthos), value, digits),
            );
        }
        println!("{table}");
    });
}
