//! End-to-end, scale and controller benchmarks on loopback (docs/benchmarks.md, parts 2-4):
//! the real `esm-operator` binary against the emulators, a real kube-apiserver and a sink that
//! answers 200 at once. Prints one table row per figure; asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench loopback -- sqs sqs-fauxqs kinesis scale-kinesis scale-sqs idle-scale controller
//! ```
//! Sizes come from the environment: `BENCH_SQS_MESSAGES_MOTO` (default 1500),
//! `BENCH_SQS_MESSAGES_FAUXQS` (10000), `BENCH_KINESIS_RECORDS` (20000) put at
//! `BENCH_KINESIS_RATE` records/s (2000), `BENCH_IDLE_SECONDS` (30), `BENCH_SCALE_SHARDS` (64),
//! `BENCH_SCALE_MAPPINGS` (50), `BENCH_SCALE_MESSAGES` (2000), `BENCH_IDLE_SCALE_MAPPINGS` (1000,
//! the largest step of 1, 10, 100, 1000), `BENCH_CONTROLLER_MAPPINGS` (100).
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client as KinesisClient;
use aws_sdk_kinesis::types::StreamStatus;
use aws_sdk_sqs::Client as SqsClient;
use common::{
    Operator, READY_TIMEOUT, Report, Sink, create_mapping, create_queue, env_or, put_kinesis,
    send_sqs, stamped_body,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use support::control_plane::{ControlPlane, crd_path};
use support::emulators::Emulators;

/// SQS backlog kept at most this deep: moto slows with the square of queue depth.
const SQS_MAX_BACKLOG: u64 = 100;

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
        create_mapping(&self.client, &self.namespace, name, spec).await;
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

/// Part 3 (idle cost at scale): the in-process controller with 1, 10, 100 and 1,000 idle SQS
/// mappings (fauxqs), so how idle cost grows with the number of mappings is a measured line.
/// Each step adds mappings, waits until every new one has delivered a message (its pollers
/// run), lets the first long polls end, then measures CPU and RSS over the idle period.
async fn idle_scale(bench: &Bench, report: &mut Report) {
    let largest = env_or("BENCH_IDLE_SCALE_MAPPINGS", 1000) as usize;
    let seconds = env_or("BENCH_IDLE_SECONDS", 30);
    let fauxqs = Emulators::start(&["fauxqs"]);
    let sqs = SqsClient::new(&fauxqs.sdk_config("fauxqs"));
    let controller = bench.controller(&["--pollers", "in-process"], "controller-idle-scale.log");
    controller.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // CPU (% of a core) and RSS (MiB) over the idle period.
    let measure = || {
        let controller = &controller;
        async move {
            let before = controller.usage();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let after = controller.usage();
            let cpu = (after.cpu_seconds - before.cpu_seconds) / seconds as f64 * 100.0;
            (cpu, after.rss_mib)
        }
    };
    let (empty_cpu, empty_rss) = measure().await;
    report.row(
        "in-process controller, idle SQS mappings (fauxqs)",
        "no mapping: CPU, RSS",
        format!("{empty_cpu:.3}% of a core, {empty_rss:.1} MiB"),
    );
    let mut queues: Vec<String> = Vec::new();
    for size in [1usize, 10, 100, 1000]
        .into_iter()
        .filter(|s| *s <= largest)
    {
        let mut added = Vec::new();
        for index in queues.len()..size {
            let queue = create_queue(&sqs, &format!("idle-{index}")).await;
            bench
                .mapping(
                    &format!("idle-{index}"),
                    bench.sqs_spec(&queue, fauxqs.endpoint("fauxqs"), 10),
                )
                .await;
            added.push(queue);
        }
        let base = bench.sink.delivered();
        send_sqs_one_each(&sqs, &added).await;
        bench
            .sink
            .wait_for(base + added.len() as u64, READY_TIMEOUT * 5)
            .await;
        queues.extend(added);
        // The receive loops' first long polls (20 s) end empty: from then on the steady state.
        tokio::time::sleep(Duration::from_secs(25)).await;
        let (cpu, rss) = measure().await;
        let per = size as f64;
        report.row(
            "in-process controller, idle SQS mappings (fauxqs)",
            &format!("{size} idle mapping(s): CPU total / per mapping, RSS total / per mapping"),
            format!(
                "{cpu:.3}% / {:.4}% of a core, {rss:.1} MiB / {:.3} MiB",
                (cpu - empty_cpu).max(0.0) / per,
                (rss - empty_rss).max(0.0) / per
            ),
        );
    }
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

const SCENARIOS: [&str; 7] = [
    "sqs",
    "sqs-fauxqs",
    "kinesis",
    "scale-kinesis",
    "scale-sqs",
    "idle-scale",
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
        let mut report = Report::default();
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
                "idle-scale" => idle_scale(&bench, &mut report).await,
                _ => controller_latency(&bench, &mut report).await,
            }
        }
        eprintln!("{} figures", report.rows.len());
    });
}
