//! The controller running inside a test, watching one namespace, stopped on demand.
use std::time::Duration;

use esm_operator::admin::Readiness;
use esm_operator::controller::{
    self, ControllerConfig, PollerConfig, PollerPlacement, ScalingSettings,
};
use esm_operator::metrics::ControllerMetrics;
use esm_operator::telemetry::LogFormat;
use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct RunningController {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    pub metrics: ControllerMetrics,
}

impl RunningController {
    /// Starts a controller (Deployment pollers) with `client`, watching `namespace` only.
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::start_scaling(client, namespace, ScalingSettings::default())
    }

    /// [`Self::start`] with other scaling settings.
    pub fn start_scaling(client: &Client, namespace: &str, scaling: ScalingSettings) -> Self {
        Self::start_with(
            client,
            namespace,
            PollerPlacement::Deployments(PollerConfig {
                image: "esm-operator:test".into(),
                image_pull_policy: Some("IfNotPresent".into()),
                default_resources: None,
                log_format: LogFormat::Json,
                otlp: None,
            }),
            scaling,
        )
    }

    /// Starts a controller that runs the pollers itself.
    pub fn start_in_process(client: &Client, namespace: &str) -> Self {
        Self::start_with(
            client,
            namespace,
            PollerPlacement::InProcess(Default::default()),
            ScalingSettings::default(),
        )
    }

    fn start_with(
        client: &Client,
        namespace: &str,
        pollers: PollerPlacement,
        scaling: ScalingSettings,
    ) -> Self {
        let metrics = ControllerMetrics::new();
        let config = ControllerConfig {
            pollers,
            watch_namespace: Some(namespace.into()),
            scaling,
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(controller::run(
            client.clone(),
            config,
            metrics.clone(),
            Readiness::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop,
            task,
            metrics,
        }
    }

    /// Ends the controller as a crash would: at once, wherever it is (between applying a
    /// Deployment and writing the status that explains it, say), without shutting down.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("controller stops on shutdown")
            .expect("controller task");
    }
}

/// Sets `spec.enabled` of mapping `name`.
pub async fn set_enabled(
    mappings: &kube::Api<esm_operator::api::EventSourceMapping>,
    name: &str,
    enabled: bool,
) {
    mappings
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"enabled": enabled}})),
        )
        .await
        .unwrap_or_else(|err| panic!("set {name} enabled={enabled}: {err}"));
}
