//! Prometheus metrics of the pollers, per mapping (labels `namespace`, `name`; never per
//! record). One [`PollerMetrics`] per registry; [`PollerMetrics::mapping`] binds the labels once
//! so the hot path only touches atomics.
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

const LABELS: &[&str] = &["namespace", "name"];

#[derive(Clone)]
pub struct PollerMetrics {
    polled: IntCounterVec,
    filtered_out: IntCounterVec,
    invoked: IntCounterVec,
    failed: IntCounterVec,
    deleted: IntCounterVec,
    delete_failures: IntCounterVec,
    oversized: IntCounterVec,
    source_errors: IntCounterVec,
    invocation_duration: HistogramVec,
    batch_size: HistogramVec,
    in_flight: IntGaugeVec,
}

impl PollerMetrics {
    /// Registers the poller metrics in `registry`; call once per registry.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let counter = IntCounterVec::new(Opts::new(name, help), LABELS)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), LABELS)?;
            registry.register(Box::new(histogram.clone()))?;
            prometheus::Result::Ok(histogram)
        };
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "esm_poller_in_flight_batches",
                "Batches sent to the target and not yet answered",
            ),
            LABELS,
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            polled: counter(
                "esm_poller_records_polled_total",
                "Records read from the source",
            )?,
            filtered_out: counter(
                "esm_poller_records_filtered_out_total",
                "Records no filter pattern matched (SQS: deleted without delivery)",
            )?,
            invoked: counter(
                "esm_poller_records_invoked_total",
                "Records sent to the target",
            )?,
            failed: counter(
                "esm_poller_records_failed_total",
                "Records the target did not process: failed calls and partial batch failures",
            )?,
            deleted: counter(
                "esm_poller_records_deleted_total",
                "SQS messages deleted after success or filtering",
            )?,
            delete_failures: counter(
                "esm_poller_delete_failures_total",
                "SQS messages whose deletion still failed after retries (they will be delivered again)",
            )?,
            oversized: counter(
                "esm_poller_records_oversized_total",
                "Records too large for a 6 MB event; not delivered, left in the source",
            )?,
            source_errors: counter(
                "esm_poller_source_errors_total",
                "Failed calls to the source (receive, delete, release)",
            )?,
            invocation_duration: histogram(
                "esm_poller_invocation_duration_seconds",
                "Time from sending a batch to the target's answer",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            )?,
            batch_size: histogram(
                "esm_poller_batch_size_records",
                "Records per batch sent to the target",
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
                ],
            )?,
            in_flight,
        })
    }

    /// The metrics of one mapping.
    pub fn mapping(&self, namespace: &str, name: &str) -> MappingMetrics {
        let labels = [namespace, name];
        MappingMetrics {
            polled: self.polled.with_label_values(&labels),
            filtered_out: self.filtered_out.with_label_values(&labels),
            invoked: self.invoked.with_label_values(&labels),
            failed: self.failed.with_label_values(&labels),
            deleted: self.deleted.with_label_values(&labels),
            delete_failures: self.delete_failures.with_label_values(&labels),
            oversized: self.oversized.with_label_values(&labels),
            source_errors: self.source_errors.with_label_values(&labels),
            invocation_duration: self.invocation_duration.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            in_flight: self.in_flight.with_label_values(&labels),
        }
    }
}

/// One mapping's metrics, labels bound.
#[derive(Clone)]
pub struct MappingMetrics {
    pub polled: IntCounter,
    pub filtered_out: IntCounter,
    pub invoked: IntCounter,
    pub failed: IntCounter,
    pub deleted: IntCounter,
    pub delete_failures: IntCounter,
    pub oversized: IntCounter,
    pub source_errors: IntCounter,
    pub invocation_duration: Histogram,
    pub batch_size: Histogram,
    pub in_flight: IntGauge,
}

impl MappingMetrics {
    /// Unregistered metrics, for tests of the engine.
    pub fn detached() -> Self {
        PollerMetrics::new(&Registry::new())
            .expect("a fresh registry takes every metric")
            .mapping("test", "test")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_labelled_per_mapping() {
        let registry = Registry::new();
        let metrics = PollerMetrics::new(&registry).unwrap();
        metrics.mapping("ns", "a").polled.inc_by(3);
        metrics.mapping("ns", "b").polled.inc();
        let families = registry.gather();
        let polled = families
            .iter()
            .find(|f| f.name() == "esm_poller_records_polled_total")
            .unwrap();
        assert_eq!(polled.get_metric().len(), 2);
        assert!(PollerMetrics::new(&registry).is_err(), "registered once");
    }
}
