//! The controller: watches mappings and reconciles each into its poller workload.
pub mod build;
mod duplicates;
mod in_process;
mod reconcile;
pub mod scaling;
pub mod signals;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

pub use self::build::PollerConfig;
use self::in_process::InProcessPollers;
pub use self::reconcile::FIELD_MANAGER;
pub use self::scaling::ScalingSettings;
use self::signals::{ActivityReader, SignalCache, SignalReader, SourceSignals};
use crate::admin::Readiness;
use crate::api::EventSourceMapping;
use crate::error::Error;
use crate::metrics::ControllerMetrics;
use crate::otlp::Exporter;
use crate::poller::metrics::PollerMetrics;
use crate::poller::{self, PollerContext};
use crate::sources::aws::AwsBase;
use crate::target::TargetClient;

/// How often the series and in-process pollers of deleted mappings are removed.
const DELETED_SWEEP: Duration = Duration::from_secs(5);
/// First delay after a failed reconciliation; doubles per consecutive failure of that object.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where the pollers of the mappings run.
#[derive(Clone, Debug)]
pub enum PollerPlacement {
    /// One Deployment per mapping, running `esm-operator poller`.
    Deployments(PollerConfig),
    /// Tasks inside the controller process, exporting their call spans to the exporter.
    InProcess(Exporter),
}

/// How the controller runs; from flags and the Helm chart.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub pollers: PollerPlacement,
    /// Watch only this namespace instead of the whole cluster.
    pub watch_namespace: Option<String>,
    pub scaling: ScalingSettings,
}

/// The pollers as the reconciler drives them.
enum Pollers {
    Deployments(PollerConfig),
    InProcess(Arc<InProcessPollers>),
}

/// Shared by every reconciliation.
pub struct Context {
    pub client: Client,
    pollers: Pollers,
    pub metrics: ControllerMetrics,
    recorder: Recorder,
    scaling: ScalingSettings,
    signals: SignalCache,
    /// Every watched mapping, for finding duplicates.
    mappings: Store<DynamicObject>,
    /// Consecutive failures per object, for per-object exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    fn new(
        client: Client,
        pollers: Pollers,
        metrics: ControllerMetrics,
        scaling: ScalingSettings,
        signals: Box<dyn SignalReader>,
        mappings: Store<DynamicObject>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            pollers,
            metrics,
            signals: SignalCache::new(signals, scaling.interval),
            scaling,
            mappings,
            failures: Mutex::default(),
        }
    }

    /// The older mapping `object` duplicates (`NAMESPACE/NAME`), if any.
    fn older_duplicate(
        &self,
        object: &DynamicObject,
        mapping: &EventSourceMapping,
    ) -> Option<String> {
        let all = self.mappings.state();
        duplicates::older_duplicate(object, &mapping.spec, all.iter().map(|m| &**m))
    }

    /// Publishes an event; a failure to do so is logged, never fails the reconciliation.
    async fn publish(&self, event: &Event, reference: &ObjectReference) {
        if let Err(err) = self.recorder.publish(event, reference).await {
            tracing::warn!(error = %err, reason = %event.reason, "could not publish event");
        }
    }

    fn succeeded(&self, mapping: &EventSourceMapping) {
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&object_key(mapping.namespace(), &mapping.name_any()));
    }

    /// The next delay for an object that failed again.
    fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }
}

fn object_key(namespace: Option<String>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// Exponential backoff: 2 s, 4 s, 8 s, ... capped at 5 minutes.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    crate::poller::retry::retry_delay(consecutive_failures, BACKOFF_BASE, BACKOFF_MAX)
}

fn error_policy(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let delay = ctx.backoff(object_key(object.namespace(), &object.name_any()));
    tracing::warn!(
        namespace = object.namespace().unwrap_or_default(),
        name = %object.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The mapping resource, watched untyped so one malformed object is reported instead of
/// breaking the whole watch.
pub(crate) fn mapping_resource() -> ApiResource {
    ApiResource::erase::<EventSourceMapping>(&())
}

/// Runs the controller until `shutdown` resolves; readiness turns true once mappings can be
/// listed (the CRD is installed and RBAC allows it).
pub async fn run(
    client: Client,
    config: ControllerConfig,
    metrics: ControllerMetrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resource = mapping_resource();
    let (mappings, deployments) = match &config.watch_namespace {
        Some(ns) => (
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            Api::<Deployment>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all_with(client.clone(), &resource),
            Api::all(client.clone()),
        ),
    };
    wait_for_crd(&mappings).await;
    let aws = AwsBase::load().await;
    let pollers = match config.pollers {
        PollerPlacement::Deployments(poller) => Pollers::Deployments(poller),
        PollerPlacement::InProcess(spans) => {
            let poller_metrics = match PollerMetrics::new(&metrics.registry) {
                Ok(m) => m,
                Err(err) => {
                    tracing::error!(error = %err, "cannot register poller metrics");
                    return;
                }
            };
            let targets = match TargetClient::new() {
                Ok(client) => client,
                Err(err) => {
                    tracing::error!(error = %err, "cannot create the HTTP client of the targets");
                    return;
                }
            };
            Pollers::InProcess(Arc::new(InProcessPollers::new(PollerContext {
                client: client.clone(),
                metrics: poller_metrics,
                holder: poller::default_holder(),
                lease_duration: poller::DEFAULT_LEASE_DURATION,
                spans,
                aws: aws.clone(),
                targets,
            })))
        }
    };
    readiness.set(true);
    let signals = Box::new(SourceSignals {
        client: client.clone(),
        aws,
        activity: match &pollers {
            Pollers::InProcess(pollers) => ActivityReader::InProcess(pollers.clone()),
            Pollers::Deployments(_) => ActivityReader::Leases,
        },
    });
    // Children carry the mapping label; watching only those keeps the cache small.
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        crate::meta::MANAGED_BY
    ));
    let controller = Controller::new_with(mappings, watcher::Config::default(), resource.clone())
        .owns(deployments, children)
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    let ctx = Arc::new(Context::new(
        client,
        pollers,
        metrics,
        config.scaling,
        signals,
        store.clone(),
    ));
    let reconciling = controller
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "reconcile stream"),
            }
        });
    // Deleted mappings are not reconciled (no finalizer): sweep their metric series and
    // in-process pollers away, once the store has listed the mappings.
    let sweeping = async {
        let _ = store.wait_until_ready().await;
        loop {
            tokio::time::sleep(DELETED_SWEEP).await;
            let exists = |namespace: &str, name: &str| {
                store
                    .get(&ObjectRef::new_with(name, resource.clone()).within(namespace))
                    .is_some()
            };
            ctx.metrics.retain(exists);
            if let Pollers::InProcess(pollers) = &ctx.pollers {
                pollers.retain(exists).await;
            }
        }
    };
    tokio::select! {
        _ = reconciling => {}
        _ = sweeping => {}
    }
    if let Pollers::InProcess(pollers) = &ctx.pollers {
        pollers.shutdown().await;
    }
    tracing::info!("controller stopped");
}

/// Waits until the CRD is served, saying what is missing meanwhile.
async fn wait_for_crd(api: &Api<DynamicObject>) {
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(err) => {
                tracing::error!(error = %err, "cannot list EventSourceMappings; is the CRD installed (crds/esm.dev_eventsourcemappings.yaml)?");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(9), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }
}
