use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use esm_operator::admin::{self, Readiness};
use esm_operator::controller::{
    self, ControllerConfig, PollerConfig, PollerPlacement, ScalingSettings,
};
use esm_operator::metrics::ControllerMetrics;
use esm_operator::otlp::{self, Exporter, OtlpConfig};
use esm_operator::poller;
use esm_operator::telemetry::{self, LogFormat};
use k8s_openapi::api::core::v1::ResourceRequirements;

/// Lambda-style event source mappings for Kubernetes: poll SQS, Kinesis and DynamoDB Streams and
/// call in-cluster HTTP services with batches.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ESM_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    log_format: LogFormat,
    /// Threads that run the process's tasks. Default: one for `poller` (every poller of a
    /// mapping on one thread costs the least CPU per record; throughput grows with replicas),
    /// one per core for `controller`.
    #[arg(long, global = true, env = "ESM_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch EventSourceMappings and run their pollers.
    Controller(ControllerArgs),
    /// Run the pollers of one mapping (the container of a mapping's poller Deployment).
    Poller(PollerArgs),
    /// Send the records an S3 on-failure destination kept (an object's `payload`) to a target
    /// again.
    Replay(ReplayArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd {
        /// Print the Markdown field reference instead.
        #[arg(long)]
        reference: bool,
    },
}

#[derive(clap::Args)]
struct PollerArgs {
    /// Namespace of the mapping.
    #[arg(long)]
    namespace: String,
    /// Name of the mapping.
    #[arg(long)]
    mapping: String,
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "ESM_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// This replica's identity in shard leases. Default: POD_NAME, else host name and pid.
    #[arg(long, env = "POD_NAME")]
    holder_identity: Option<String>,
    /// Seconds a shard lease lasts without renewal (streams); another replica takes over
    /// a dead replica's shards after it.
    #[arg(long, env = "ESM_LEASE_DURATION_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_duration_seconds: u64,
    #[command(flatten)]
    otlp: OtlpArgs,
}

/// Span export of the target calls; the standard OpenTelemetry variables set it too.
#[derive(clap::Args)]
struct OtlpArgs {
    /// OTLP/HTTP endpoint (base URL, e.g. `http://collector:4318`) that receives a span per
    /// target call; spans go to its `/v1/traces`. Default: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = otlp::DEFAULT_SERVICE_NAME)]
    otlp_service_name: String,
}

impl OtlpArgs {
    /// `None` without an endpoint; an empty one (a variable set to "") is none as well.
    fn config(self) -> Option<OtlpConfig> {
        let endpoint = self.otlp_endpoint.filter(|e| !e.trim().is_empty())?;
        Some(OtlpConfig {
            endpoint,
            service_name: self.otlp_service_name,
        })
    }
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The object: `s3://BUCKET/KEY`, or the path of a downloaded object.
    object: esm_operator::replay::ObjectSource,
    /// Where the records go (POST), e.g. `http://orders.shop.svc:8080/events`.
    #[arg(long)]
    target_url: String,
    /// Per-call timeout.
    #[arg(long, default_value_t = esm_operator::api::DEFAULT_TARGET_TIMEOUT_SECONDS)]
    timeout_seconds: u32,
    /// AWS region of the bucket (default: the AWS chain's).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// S3 endpoint override (an emulator or a gateway; buckets are then addressed by path).
    #[arg(long)]
    endpoint_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PollerMode {
    /// One Deployment of pollers per mapping.
    Deployments,
    /// Every mapping's pollers as tasks of the controller process.
    InProcess,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Where pollers run.
    #[arg(long, env = "ESM_POLLERS", value_enum, default_value = "deployments")]
    pollers: PollerMode,
    /// Image of the poller Deployments (normally the operator's own image).
    #[arg(
        long,
        env = "ESM_POLLER_IMAGE",
        default_value = "ghcr.io/esm-operator/esm-operator:0.1.0"
    )]
    poller_image: String,
    /// imagePullPolicy of the poller containers.
    #[arg(long, env = "ESM_POLLER_IMAGE_PULL_POLICY")]
    poller_image_pull_policy: Option<String>,
    /// Default resources of a poller container, as core/v1 ResourceRequirements JSON.
    #[arg(long, env = "ESM_POLLER_RESOURCES", value_parser = parse_resources)]
    poller_resources: Option<ResourceRequirements>,
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "ESM_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Watch mappings of this namespace only (default: all namespaces).
    #[arg(long, env = "ESM_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Standard queues: concurrent batches of a new mapping, and the least while enabled.
    #[arg(long, env = "ESM_SCALING_INITIAL_CONCURRENCY", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    scaling_initial_concurrency: u32,
    /// Standard queues: most concurrent batches added per minute while messages wait.
    #[arg(long, env = "ESM_SCALING_RAMP_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    scaling_ramp_per_minute: u32,
    /// Queues: most concurrent batches of a mapping (scalingConfig.maximumConcurrency may set less).
    #[arg(long, env = "ESM_SCALING_MAX_CONCURRENCY", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    scaling_max_concurrency: u32,
    /// Seconds a source must need less before its concurrency drops (for a standard queue: how
    /// long it stays drained).
    #[arg(
        long,
        env = "ESM_SCALING_SCALE_DOWN_WINDOW_SECONDS",
        default_value_t = 300
    )]
    scaling_scale_down_window_seconds: u64,
    /// Seconds between two reads of a mapping's scaling signals (queue depth, shards, reports).
    #[arg(long, env = "ESM_SCALING_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    scaling_interval_seconds: u64,
    /// Seconds between two reads for a queue with nothing waiting, in flight or being sent:
    /// its pollers receive what arrives at once; only scaling up waits for the next read.
    #[arg(long, env = "ESM_SCALING_IDLE_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    scaling_idle_interval_seconds: u64,
    /// In-process pollers export their spans themselves; Deployment pollers get the endpoint
    /// and service name as OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME.
    #[command(flatten)]
    otlp: OtlpArgs,
}

fn parse_resources(json: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(json).map_err(|e| format!("not a ResourceRequirements JSON object: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = cli
        .worker_threads
        .map(usize::from)
        .unwrap_or_else(|| match cli.command {
            Command::Poller(_) | Command::Crd { .. } | Command::Replay(_) => 1,
            Command::Controller(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        });
    // One thread: a current-thread runtime. Work-stealing threads wake each other for every
    // response, which cost a poller half again as much CPU per message on loopback
    // (docs/benchmarks.md).
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd { reference } => {
            if reference {
                print!("{}", esm_operator::crd::reference_markdown());
            } else {
                print!("{}", esm_operator::crd::crd_yaml());
            }
            Ok(())
        }
        Command::Replay(args) => {
            let connection = esm_operator::api::AwsConnection {
                region: args.region,
                endpoint_url: args.endpoint_url,
                credentials_secret_ref: None,
            };
            let replayed = esm_operator::replay::replay(
                &args.object,
                &connection,
                &args.target_url,
                args.timeout_seconds,
            )
            .await?;
            println!(
                "replayed {} record(s) to {}: HTTP {}{}",
                replayed.records,
                args.target_url,
                replayed.status,
                if replayed.body.trim().is_empty() {
                    String::new()
                } else {
                    format!(", answer: {}", replayed.body.trim())
                }
            );
            Ok(())
        }
        Command::Poller(args) => {
            telemetry::init(cli.log_format);
            let client = kube::Client::try_default().await?;
            let spans = Exporter::start(args.otlp.config().as_ref())?;
            let ran = poller::run(
                client,
                args.namespace,
                args.mapping,
                args.admin_addr,
                args.holder_identity
                    .filter(|holder| !holder.is_empty())
                    .unwrap_or_else(poller::default_holder),
                std::time::Duration::from_secs(args.lease_duration_seconds),
                spans.clone(),
            )
            .await;
            spans.shutdown().await;
            ran
        }
        Command::Controller(args) => {
            telemetry::init(cli.log_format);
            let client = kube::Client::try_default().await?;
            let otlp = args.otlp.config();
            // Only in-process pollers call targets in this process.
            let spans = match args.pollers {
                PollerMode::InProcess => Exporter::start(otlp.as_ref())?,
                PollerMode::Deployments => Exporter::default(),
            };
            let poller = PollerConfig {
                image: args.poller_image,
                image_pull_policy: args.poller_image_pull_policy,
                default_resources: args.poller_resources,
                log_format: cli.log_format,
                otlp,
            };
            let metrics = ControllerMetrics::new();
            let readiness = Readiness::default();
            let admin = tokio::spawn(admin::serve(
                args.admin_addr,
                metrics.registry.clone(),
                readiness.clone(),
                shutdown_signal(),
            ));
            let config = ControllerConfig {
                pollers: match args.pollers {
                    PollerMode::Deployments => PollerPlacement::Deployments(poller),
                    PollerMode::InProcess => PollerPlacement::InProcess(spans.clone()),
                },
                watch_namespace: args.watch_namespace,
                scaling: ScalingSettings {
                    initial_concurrency: args.scaling_initial_concurrency,
                    ramp_per_minute: args.scaling_ramp_per_minute,
                    max_concurrency: args.scaling_max_concurrency,
                    scale_down_window: Duration::from_secs(args.scaling_scale_down_window_seconds),
                    interval: Duration::from_secs(args.scaling_interval_seconds),
                    idle_interval: Duration::from_secs(args.scaling_idle_interval_seconds),
                },
            };
            controller::run(client, config, metrics, readiness, shutdown_signal()).await;
            spans.shutdown().await;
            admin.await??;
            Ok(())
        }
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}
