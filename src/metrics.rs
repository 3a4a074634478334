//! Prometheus metrics of the controller.
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::error::Error;

#[derive(Clone)]
pub struct ControllerMetrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    concurrency: IntGaugeVec,
    replicas: IntGaugeVec,
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("esm_controller_reconciles_total", "Reconciliations run"),
            &["namespace"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "esm_controller_reconcile_errors_total",
                "Reconciliations that failed, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "esm_controller_reconcile_duration_seconds",
                "Time a reconciliation took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let concurrency = IntGaugeVec::new(
            Opts::new(
                "esm_mapping_desired_concurrency",
                "Concurrent batches the scaling decided for a mapping",
            ),
            &["namespace", "mapping"],
        )
        .expect("valid metric");
        let replicas = IntGaugeVec::new(
            Opts::new(
                "esm_mapping_desired_replicas",
                "Poller replicas the scaling decided for a mapping",
            ),
            &["namespace", "mapping"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(concurrency.clone()),
            Box::new(replicas.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            concurrency,
            replicas,
        }
    }

    /// Publishes a mapping's scaling decision.
    pub fn scaled(&self, namespace: &str, mapping: &str, concurrency: u32, replicas: i32) {
        self.concurrency
            .with_label_values(&[namespace, mapping])
            .set(i64::from(concurrency));
        self.replicas
            .with_label_values(&[namespace, mapping])
            .set(i64::from(replicas));
    }

    /// Drops the series of a mapping that is going away.
    pub fn forget(&self, namespace: &str, mapping: &str) {
        let _ = self.concurrency.remove_label_values(&[namespace, mapping]);
        let _ = self.replicas.remove_label_values(&[namespace, mapping]);
    }

    /// Counts a reconciliation and times it until the returned guard drops.
    pub fn reconcile_started(&self, namespace: &str) -> prometheus::HistogramTimer {
        self.reconciles.with_label_values(&[namespace]).inc();
        self.duration.start_timer()
    }

    /// Reconciliations run so far (all namespaces).
    pub fn reconciles(&self) -> u64 {
        self.reconciles
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.errors.with_label_values(&[error.metric_label()]).inc();
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
