//! The pollers of one mapping: the same engine whether the `poller` subcommand runs it (one
//! mapping per pod) or the controller runs it in-process.
//!
//! [`run_mapping`] watches the mapping, builds the source and target from its spec, runs the
//! engine while the mapping exists and is enabled, restarts it when the spec changes, and
//! reports `status.lastProcessingResult`. Setup errors (a queue that does not exist, a missing
//! Secret) are reported in status and retried with backoff; they never end the process.
//!
//! SQS mappings run the queue engine ([`queue`]); Kinesis and DynamoDB Streams mappings run the
//! stream engine ([`stream`]) with shard leases held under the context's holder identity.
pub mod batch;
pub mod checkpoint;
pub mod lanes;
pub mod metrics;
pub mod queue;
pub mod report;
pub mod retry;
pub mod status;
pub mod stream;
pub mod window;

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus::Registry;
use tokio::sync::watch;

use self::checkpoint::{KubeShardLeases, LeaseError};
use self::metrics::{MappingMetrics, PollerMetrics};
use self::queue::{Activity, QueuePoller, QueueSettings};
use self::status::ProcessingResults;
use self::stream::{StreamIdentity, StreamPoller, StreamSettings};
use crate::admin::{self, Readiness};
use crate::api::{EventSourceMapping, SourceKind};
use crate::destination::{
    Destination, DestinationError, S3Destination, SnsDestination, SqsDestination,
};
use crate::filter::{FilterError, FilterSet};
use crate::meta::spec_hash;
use crate::otlp::Exporter;
use crate::sources::aws::{AwsBase, CredentialsError, sdk_config};
use crate::sources::dynamodb_streams::DynamoDbStream;
use crate::sources::kinesis::{KinesisStream, KinesisStreamId};
use crate::sources::sharded::{ShardedStream, StreamError};
use crate::sources::sqs::{SqsError, SqsQueue, check_visibility_timeout};
use crate::target::{HttpTarget, TargetClient, TargetConfigError};

/// Time in-flight batches get after a stop, beyond the target timeout, before they are
/// abandoned (their messages come back after the visibility timeout).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Longest wait before setting up a mapping again after a failure.
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a mapping's pollers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Queue(#[from] SqsError),
    #[error(transparent)]
    Target(#[from] TargetConfigError),
    /// Names the pattern at fault (`spec.filterCriteria.filters[1].pattern: ...`).
    #[error("spec.{0}")]
    Filter(#[from] FilterError),
    #[error("{field}: cannot read the stream: {error}")]
    Stream {
        field: &'static str,
        error: StreamError,
    },
    #[error(transparent)]
    Leases(#[from] LeaseError),
    #[error("spec.source.kinesis: {0}")]
    KinesisSource(crate::error::Error),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("spec.source: {}", crate::api::ONE_SOURCE)]
    NoSource,
}

/// Everything a mapping's pollers share with the process that runs them.
#[derive(Clone)]
pub struct PollerContext {
    pub client: Client,
    pub metrics: PollerMetrics,
    /// This replica's identity in shard leases (the pod name).
    pub holder: String,
    /// How long a shard lease lasts without renewal.
    pub lease_duration: Duration,
    /// Where a span per target call goes (`--otlp-endpoint`), if anywhere.
    pub spans: Exporter,
    /// What every AWS client of the process shares.
    pub aws: AwsBase,
    /// The HTTP client of every target and HTTP destination of the process.
    pub targets: TargetClient,
}

/// Shard lease duration unless configured (`--lease-duration-seconds`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);

/// The holder identity of this process: `POD_NAME` when set (poller pods), else the host name
/// and process id.
pub fn default_holder() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "poller".into());
            format!("{host}-{}", std::process::id())
        })
}

/// What the process that runs a mapping's pollers can see of them.
#[derive(Clone, Default)]
pub struct PollerHandle {
    /// FIFO groups and busy loops seen recently, for scaling.
    pub activity: Activity,
    /// True while the engine is set up and polling: the pod's readiness, and what the
    /// in-process controller reports as a ready replica.
    pub running: Readiness,
    /// In-process: the receive loops to run, the mapping's whole concurrency as the controller
    /// decides it (which reads `activity` here). `None`: a replica of a Deployment, running its
    /// share of that concurrency as the mapping's status shows it
    /// ([`EventSourceMapping::replica_loops`]) and reporting its activity in a Lease.
    pub loops: Option<watch::Receiver<usize>>,
}

/// Runs the pollers of mapping `namespace/name` until `shutdown` turns true (or its sender is
/// dropped). Waits while the mapping is missing or disabled; on shutdown stops receiving, lets
/// in-flight batches finish within the target timeout plus a margin, hands gathered messages
/// back to the queue (streams: checkpoints and releases its shard leases), writes the last
/// status and returns.
pub async fn run_mapping(
    context: PollerContext,
    namespace: String,
    name: String,
    handle: PollerHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let PollerHandle {
        activity,
        running,
        loops,
    } = handle;
    let api: Api<EventSourceMapping> = Api::namespaced(context.client.clone(), &namespace);
    let results = ProcessingResults::default();
    let (mapping_tx, mut mapping) = watch::channel(None);
    // In-process, the controller reads the activity from the handle: no report Lease.
    let reports = loops.is_none();
    let loops = loops.unwrap_or_else(|| replica_loops(mapping.clone()));
    let watch_task = tokio::spawn(watch_mapping(api.clone(), name.clone(), mapping_tx));
    let status_task = tokio::spawn(status::write_results(
        api,
        name.clone(),
        results.clone(),
        shutdown.clone(),
    ));
    let mut setup_failures = 0u32;
    loop {
        let current = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            current = runnable(&mut mapping) => current,
        };
        let Some(current) = current else { break };
        let spec_key = spec_hash(&current);
        let engine = match setup(&context, &current, &results, &activity).await {
            Ok(engine) => {
                setup_failures = 0;
                engine
            }
            Err(err) => {
                setup_failures += 1;
                let delay = setup_backoff(setup_failures);
                tracing::warn!(%namespace, %name, error = %err, retry_in = ?delay, "cannot start pollers");
                results.problem(err.to_string());
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(delay) => {}
                    _ = changed(&mut mapping, &spec_key) => {}
                }
                continue;
            }
        };
        tracing::info!(%namespace, %name, "pollers started");
        running.set(true);
        let grace = current.spec.target.timeout() + STOP_MARGIN;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Queue pollers report their activity for scaling; stream replicas announce themselves
        // through the presence Lease their lease balancing keeps (same name: one or the other).
        let reporting = (reports && matches!(engine, Engine::Queue(_))).then(|| {
            tokio::spawn(report::report_activity(
                current.clone(),
                Api::namespaced(context.client.clone(), &namespace),
                context.holder.clone(),
                activity.clone(),
                stop_rx.clone(),
            ))
        });
        let mut run = pin!(engine.run(stop_rx, loops.clone()));
        let shutting_down = tokio::select! {
            _ = &mut run => false,
            _ = shutdown.wait_for(|s| *s) => true,
            _ = changed(&mut mapping, &spec_key) => false,
        };
        let _ = stop_tx.send(true);
        if tokio::time::timeout(grace, run).await.is_err() {
            tracing::warn!(%namespace, %name, ?grace, "in-flight batches did not finish in time; their messages return after the visibility timeout");
        }
        running.set(false);
        if let Some(reporting) = reporting {
            reporting.abort();
        }
        tracing::info!(%namespace, %name, "pollers stopped");
        if shutting_down {
            break;
        }
    }
    watch_task.abort();
    if let Err(err) = status_task.await {
        tracing::warn!(error = %err, "status writer failed");
    }
}

/// The receive loops of a Deployment replica, following the mapping's status (the controller's
/// concurrency and replicas); ends with the mapping watch.
fn replica_loops(
    mut mapping: watch::Receiver<Option<EventSourceMapping>>,
) -> watch::Receiver<usize> {
    let share = |mapping: &Option<EventSourceMapping>| {
        mapping
            .as_ref()
            .map_or(1, EventSourceMapping::replica_loops)
    };
    let (loops_tx, loops) = watch::channel(share(&mapping.borrow_and_update()));
    tokio::spawn(async move {
        while mapping.changed().await.is_ok() {
            let share = share(&mapping.borrow_and_update());
            loops_tx.send_if_modified(|loops| std::mem::replace(loops, share) != share);
        }
    });
    loops
}

/// The engine of one mapping, by source kind.
enum Engine {
    Queue(QueuePoller<SqsQueue, HttpTarget>),
    Kinesis(StreamPoller<KinesisStream, KubeShardLeases, HttpTarget, Destination>),
    DynamoDb(StreamPoller<DynamoDbStream, KubeShardLeases, HttpTarget, Destination>),
}

impl Engine {
    /// Runs until `stop`. A queue engine runs `loops` receive loops, following its changes.
    async fn run(self, stop: watch::Receiver<bool>, loops: watch::Receiver<usize>) {
        match self {
            Engine::Queue(poller) => poller.run_with_loops(stop, loops).await,
            Engine::Kinesis(poller) => poller.run(stop).await,
            Engine::DynamoDb(poller) => poller.run(stop).await,
        }
    }
}

/// Builds the engine for the mapping's source.
async fn setup(
    context: &PollerContext,
    mapping: &EventSourceMapping,
    results: &ProcessingResults,
    activity: &Activity,
) -> Result<Engine, SetupError> {
    let client = &context.client;
    let spec = &mapping.spec;
    let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
    let name = mapping.metadata.name.as_deref().unwrap_or_default();
    let kind = spec.source_kind().ok_or(SetupError::NoSource)?;
    let metrics = context.metrics.mapping(namespace, name, kind);
    let filters = FilterSet::parse_for(
        kind,
        spec.filter_criteria
            .iter()
            .flat_map(|c| c.filters.iter().map(|f| f.pattern.as_str())),
    )?;
    let target = HttpTarget::new(&context.targets, &spec.target, namespace)?;
    if let Some(sqs) = &spec.source.sqs {
        let config =
            sdk_config(&context.aws, client, namespace, &sqs.aws, "spec.source.sqs").await?;
        let (queue, attributes) = SqsQueue::connect(&config, &sqs.queue_url).await?;
        report_visibility_timeout(client, mapping, attributes.visibility_timeout).await;
        let spans = context.spans.mapping(
            &format!("{namespace}/{name}"),
            kind,
            &attributes.arn,
            target.url(),
        );
        return Ok(Engine::Queue(QueuePoller {
            queue,
            target,
            filters,
            settings: QueueSettings::from_spec(spec),
            metrics,
            results: results.clone(),
            activity: activity.clone(),
            spans,
        }));
    }
    let destination = match spec.destination_config.as_ref().map(|d| &d.on_failure) {
        Some(on_failure) => match (
            &on_failure.sqs,
            &on_failure.sns,
            &on_failure.s3,
            &on_failure.http,
        ) {
            (Some(sqs), ..) => {
                let field = "spec.destinationConfig.onFailure.sqs";
                let config = sdk_config(&context.aws, client, namespace, &sqs.aws, field).await?;
                Some(Destination::Sqs(SqsDestination::new(
                    &config,
                    &sqs.queue_url,
                )))
            }
            (None, Some(sns), ..) => {
                let field = "spec.destinationConfig.onFailure.sns";
                let config = sdk_config(&context.aws, client, namespace, &sns.aws, field).await?;
                Some(Destination::Sns(SnsDestination::new(
                    &config,
                    &sns.topic_arn,
                )))
            }
            (None, None, Some(s3), _) => {
                let field = "spec.destinationConfig.onFailure.s3";
                let config = sdk_config(&context.aws, client, namespace, &s3.aws, field).await?;
                Some(Destination::S3(S3Destination::new(&config, s3)))
            }
            (None, None, None, Some(http)) => {
                Some(Destination::http(&context.targets, http, namespace)?)
            }
            (None, None, None, None) => None,
        },
        None => None,
    };
    let leases = KubeShardLeases::new(
        client.clone(),
        mapping,
        context.holder.clone(),
        context.lease_duration,
    )?;
    let parts = StreamParts {
        leases,
        target,
        destination,
        filters,
        settings: StreamSettings::from_spec(spec, context.lease_duration),
        metrics,
        results: results.clone(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: mapping.metadata.uid.clone().unwrap_or_default(),
        kind,
        spans: context.spans.clone(),
    };
    if let Some(kinesis) = &spec.source.kinesis {
        let field = "spec.source.kinesis";
        let config = sdk_config(&context.aws, client, namespace, &kinesis.aws, field).await?;
        let id = KinesisStreamId::of(kinesis).map_err(SetupError::KinesisSource)?;
        let stream = KinesisStream::new(&config, id);
        return Ok(Engine::Kinesis(parts.build(stream, field).await?));
    }
    let Some(dynamodb) = &spec.source.dynamodb_streams else {
        return Err(SetupError::NoSource);
    };
    let field = "spec.source.dynamodbStreams";
    let config = sdk_config(&context.aws, client, namespace, &dynamodb.aws, field).await?;
    let stream = DynamoDbStream::new(&config, &dynamodb.stream_arn);
    Ok(Engine::DynamoDb(parts.build(stream, field).await?))
}

/// Everything of a stream engine but the stream.
struct StreamParts {
    leases: KubeShardLeases,
    target: HttpTarget,
    destination: Option<Destination>,
    filters: FilterSet,
    settings: StreamSettings,
    metrics: MappingMetrics,
    results: ProcessingResults,
    namespace: String,
    name: String,
    uid: String,
    kind: SourceKind,
    spans: Exporter,
}

impl StreamParts {
    /// The engine for `stream`, once it answers (its ARN names the records' source).
    async fn build<S: ShardedStream>(
        self,
        stream: S,
        field: &'static str,
    ) -> Result<StreamPoller<S, KubeShardLeases, HttpTarget, Destination>, SetupError> {
        let stream_arn = stream
            .stream_arn()
            .await
            .map_err(|error| SetupError::Stream { field, error })?;
        stream
            .list_shards()
            .await
            .map_err(|error| SetupError::Stream { field, error })?;
        let (namespace, name) = (&self.namespace, &self.name);
        let mapping = format!("{namespace}/{name}");
        let spans = self
            .spans
            .mapping(&mapping, self.kind, &stream_arn, self.target.url());
        let identity = StreamIdentity {
            invoke_identity: format!("esm.dev/namespaces/{namespace}/eventsourcemappings/{name}")
                .into(),
            mapping,
            mapping_uid: self.uid,
            target_url: self.target.url().to_owned(),
            stream_arn,
            kind: self.kind,
        };
        Ok(StreamPoller {
            stream,
            leases: self.leases,
            target: self.target,
            destination: self.destination,
            filters: self.filters,
            settings: self.settings,
            identity,
            metrics: self.metrics,
            results: self.results,
            spans,
        })
    }
}

/// Reports the SPEC §4.3 check as the mapping's `QueueVisibilityTimeout` condition, with the
/// numbers; a failed write is logged, it never stops the pollers.
async fn report_visibility_timeout(
    client: &Client,
    mapping: &EventSourceMapping,
    visibility_timeout: Duration,
) {
    let (status, reason, message) = match check_visibility_timeout(
        visibility_timeout,
        &mapping.spec,
    ) {
        Ok(()) => (
            "True",
            "Sufficient",
            format!(
                "the queue's visibility timeout is {}s, at least 6 x target timeout + batching window",
                visibility_timeout.as_secs()
            ),
        ),
        Err(too_short) => {
            tracing::warn!(mapping = %mapping.name_any(), "{too_short}");
            ("False", "TooShort", too_short.to_string())
        }
    };
    // Set on the mapping's current conditions so the transition time stays while the
    // outcome does not change (pollers restart on every spec change).
    let mut conditions = mapping
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    crate::meta::set_condition(
        &mut conditions,
        status::QUEUE_VISIBILITY_TIMEOUT,
        status,
        reason,
        &message,
        mapping.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let condition = conditions
        .into_iter()
        .find(|c| c.type_ == status::QUEUE_VISIBILITY_TIMEOUT)
        .expect("the condition was just set");
    let api: Api<EventSourceMapping> =
        Api::namespaced(client.clone(), &mapping.namespace().unwrap_or_default());
    if let Err(err) = status::report_check(&api, &mapping.name_any(), &condition).await {
        tracing::warn!(mapping = %mapping.name_any(), error = %err, "cannot report the visibility timeout check");
    }
}

/// Keeps `mapping` up to date with the API server: `None` while the mapping does not exist.
async fn watch_mapping(
    api: Api<EventSourceMapping>,
    name: String,
    mapping: watch::Sender<Option<EventSourceMapping>>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = pin!(watcher(api, config).default_backoff());
    let mut listed = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = None,
            Ok(watcher::Event::InitApply(object)) => listed = Some(object),
            Ok(watcher::Event::InitDone) => {
                mapping.send_replace(listed.take());
            }
            Ok(watcher::Event::Apply(object)) => {
                mapping.send_replace(Some(object));
            }
            Ok(watcher::Event::Delete(_)) => {
                mapping.send_replace(None);
            }
            Err(err) => {
                tracing::warn!(mapping = %name, error = %err, "watching the mapping failed; retrying")
            }
        }
    }
}

/// Should pollers run for this mapping?
fn is_runnable(mapping: &Option<EventSourceMapping>) -> bool {
    mapping
        .as_ref()
        .is_some_and(|m| m.spec.enabled && m.metadata.deletion_timestamp.is_none())
}

/// Waits until the mapping exists and is enabled; `None` when the watch ended.
async fn runnable(
    mapping: &mut watch::Receiver<Option<EventSourceMapping>>,
) -> Option<EventSourceMapping> {
    let current = mapping.wait_for(is_runnable).await.ok()?;
    current.clone()
}

/// Waits until the mapping stops being runnable or its spec changes from `spec_key`.
async fn changed(mapping: &mut watch::Receiver<Option<EventSourceMapping>>, spec_key: &str) {
    let _ = mapping
        .wait_for(|m| !is_runnable(m) || m.as_ref().is_some_and(|m| spec_hash(m) != spec_key))
        .await;
}

/// 1 s, 2 s, 4 s, ... up to [`SETUP_BACKOFF_MAX`].
fn setup_backoff(consecutive_failures: u32) -> Duration {
    retry::retry_delay(
        consecutive_failures,
        Duration::from_secs(1),
        SETUP_BACKOFF_MAX,
    )
}

/// The `poller` subcommand: runs one mapping's pollers with an admin server (`/metrics`,
/// `/healthz`, `/readyz`) until SIGTERM or SIGINT; their call spans go to `spans`.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    admin_addr: SocketAddr,
    holder: String,
    lease_duration: Duration,
    spans: Exporter,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let metrics = PollerMetrics::new(&registry)?;
    let handle = PollerHandle::default();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut admin_stop = shutdown.clone();
    let admin = tokio::spawn(admin::serve(
        admin_addr,
        registry,
        handle.running.clone(),
        async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        },
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping pollers");
        let _ = shutdown_tx.send(true);
    });
    let context = PollerContext {
        client,
        metrics,
        holder,
        lease_duration,
        spans,
        aws: AwsBase::load().await,
        targets: TargetClient::new()?,
    };
    run_mapping(context, namespace, name, handle, shutdown).await;
    admin.await??;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_backoff_doubles_to_a_minute() {
        assert_eq!(setup_backoff(1), Duration::from_secs(1));
        assert_eq!(setup_backoff(4), Duration::from_secs(8));
        assert_eq!(setup_backoff(50), SETUP_BACKOFF_MAX);
    }

    fn mapping(enabled: bool) -> EventSourceMapping {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "enabled": enabled,
                "source": {"sqs": {"queueUrl": "http://localhost/000000000000/q"}},
                "target": {"url": "http://target"},
            }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn waits_for_an_enabled_mapping_and_sees_changes() {
        let (tx, mut rx) = watch::channel(None);
        assert!(!is_runnable(&None));
        tx.send_replace(Some(mapping(false)));
        assert!(!is_runnable(&rx.borrow()));
        tx.send_replace(Some(mapping(true)));
        let current = runnable(&mut rx).await.unwrap();
        let key = spec_hash(&current);

        let mut batch_changed = mapping(true);
        batch_changed.spec.batch_size = Some(5);
        tx.send_replace(Some(batch_changed));
        changed(&mut rx, &key).await;

        tx.send_replace(Some(mapping(false)));
        changed(&mut rx, &key).await;
        tx.send_replace(None);
        changed(&mut rx, &key).await;
    }
}
