//! Prometheus metrics of the controller: its reconciliations, and per mapping (labels
//! `namespace`, `mapping`) what its status and its scaling decision say, so that dashboards
//! and alerts (charts/esm-operator) need no status scraping.
use std::collections::BTreeSet;

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::api::{EventSourceMappingStatus, ScalingStatus};
use crate::error::Error;
use crate::meta::READY;
use crate::poller::status::{OK, PROBLEM_PREFIX};

const MAPPING_LABELS: &[&str] = &["namespace", "mapping"];
/// The `result` label values of `esm_mapping_last_processing_result`: bounded, unlike the
/// text of a problem.
const PROCESSING_RESULTS: [&str; 3] = ["ok", "no_records", "problem"];

#[derive(Clone)]
pub struct ControllerMetrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    concurrency: IntGaugeVec,
    max_concurrency: IntGaugeVec,
    replicas: IntGaugeVec,
    ready_replicas: IntGaugeVec,
    queue_visible: IntGaugeVec,
    queue_in_flight: IntGaugeVec,
    ready: IntGaugeVec,
    processing_result: IntGaugeVec,
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
        for reason in Error::METRIC_LABELS {
            errors.with_label_values(&[reason]);
        }
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
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let concurrency = gauge(
            "esm_mapping_desired_concurrency",
            "Concurrent batches the scaling decided for a mapping",
            MAPPING_LABELS,
        );
        let max_concurrency = gauge(
            "esm_mapping_max_concurrency",
            "Most concurrent batches a queue mapping may run (the operator's maximum or the mapping's maximumConcurrency)",
            MAPPING_LABELS,
        );
        let replicas = gauge(
            "esm_mapping_desired_replicas",
            "Poller replicas the scaling decided for a mapping",
            MAPPING_LABELS,
        );
        let ready_replicas = gauge(
            "esm_mapping_ready_replicas",
            "Poller replicas of a mapping that are ready (status.readyReplicas)",
            MAPPING_LABELS,
        );
        let queue_visible = gauge(
            "esm_mapping_queue_visible_messages",
            "Messages waiting in a mapping's SQS queue (ApproximateNumberOfMessages), as the scaling last read it",
            MAPPING_LABELS,
        );
        let queue_in_flight = gauge(
            "esm_mapping_queue_in_flight_messages",
            "Messages of a mapping's SQS queue received and not yet deleted (ApproximateNumberOfMessagesNotVisible)",
            MAPPING_LABELS,
        );
        let ready = gauge(
            "esm_mapping_ready",
            "1 while a mapping's Ready condition is True, else 0",
            MAPPING_LABELS,
        );
        let processing_result = gauge(
            "esm_mapping_last_processing_result",
            "1 for the kind of a mapping's lastProcessingResult (result: ok, no_records, problem), 0 for the others",
            &["namespace", "mapping", "result"],
        );
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(concurrency.clone()),
            Box::new(max_concurrency.clone()),
            Box::new(replicas.clone()),
            Box::new(ready_replicas.clone()),
            Box::new(queue_visible.clone()),
            Box::new(queue_in_flight.clone()),
            Box::new(ready.clone()),
            Box::new(processing_result.clone()),
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
            max_concurrency,
            replicas,
            ready_replicas,
            queue_visible,
            queue_in_flight,
            ready,
            processing_result,
        }
    }

    /// Publishes a mapping's scaling decision, and for queues their cap (`max_concurrency`)
    /// and the queue depth it was decided on.
    pub fn scaled(
        &self,
        namespace: &str,
        mapping: &str,
        scaling: &ScalingStatus,
        max_concurrency: Option<u32>,
    ) {
        let labels = [namespace, mapping];
        self.concurrency
            .with_label_values(&labels)
            .set(i64::from(scaling.concurrency));
        self.replicas
            .with_label_values(&labels)
            .set(i64::from(scaling.desired_replicas));
        set_or_remove(
            &self.max_concurrency,
            &labels,
            max_concurrency.map(i64::from),
        );
        let signals = &scaling.signals;
        set_or_remove(&self.queue_visible, &labels, signals.visible_messages);
        set_or_remove(&self.queue_in_flight, &labels, signals.in_flight_messages);
    }

    /// Publishes what a mapping's stored status says (`None`: it has none yet).
    pub fn status(
        &self,
        namespace: &str,
        mapping: &str,
        status: Option<&EventSourceMappingStatus>,
    ) {
        let labels = [namespace, mapping];
        let ready = status.is_some_and(|status| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
        });
        self.ready.with_label_values(&labels).set(i64::from(ready));
        set_or_remove(
            &self.ready_replicas,
            &labels,
            status.and_then(|s| s.ready_replicas),
        );
        let kind = status
            .and_then(|s| s.last_processing_result.as_deref())
            .map(processing_result_kind);
        for result in PROCESSING_RESULTS {
            self.processing_result
                .with_label_values(&[namespace, mapping, result])
                .set(i64::from(kind == Some(result)));
        }
    }

    /// Drops the series of a mapping that is going away.
    pub fn forget(&self, namespace: &str, mapping: &str) {
        for gauge in self.labelled_namespace_mapping() {
            let _ = gauge.remove_label_values(&[namespace, mapping]);
        }
        for result in PROCESSING_RESULTS {
            let _ = self
                .processing_result
                .remove_label_values(&[namespace, mapping, result]);
        }
    }

    /// Drops the series of every mapping for which `exists(namespace, mapping)` is false:
    /// a deleted mapping is not reconciled again, so nothing else would.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        let mut mappings = BTreeSet::new();
        let families = self
            .labelled_namespace_mapping()
            .into_iter()
            .chain([&self.processing_result])
            .flat_map(|gauge| gauge.collect());
        for family in families {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|label| label.name() == name)
                        .map(|label| label.value().to_owned())
                };
                if let (Some(namespace), Some(mapping)) = (label("namespace"), label("mapping")) {
                    mappings.insert((namespace, mapping));
                }
            }
        }
        for (namespace, mapping) in mappings {
            if !exists(&namespace, &mapping) {
                self.forget(&namespace, &mapping);
            }
        }
    }

    /// The per-mapping families labelled `namespace`, `mapping` only.
    fn labelled_namespace_mapping(&self) -> [&IntGaugeVec; 7] {
        [
            &self.concurrency,
            &self.max_concurrency,
            &self.replicas,
            &self.ready_replicas,
            &self.queue_visible,
            &self.queue_in_flight,
            &self.ready,
        ]
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

/// A gauge that exists only while there is a value: an unknown value exports no series
/// rather than a stale or made-up one.
fn set_or_remove<T: TryInto<i64>>(family: &IntGaugeVec, labels: &[&str], value: Option<T>) {
    match value {
        Some(value) => family
            .with_label_values(labels)
            .set(value.try_into().unwrap_or(i64::MAX)),
        None => {
            let _ = family.remove_label_values(labels);
        }
    }
}

/// `ok` for "OK", `problem` for "PROBLEM: ...", `no_records` for the rest ("No records
/// processed", the only other value SPEC §9 names).
fn processing_result_kind(result: &str) -> &'static str {
    if result == OK {
        "ok"
    } else if result.starts_with(PROBLEM_PREFIX) {
        "problem"
    } else {
        "no_records"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ScalingSignals;
    use crate::meta::set_condition;
    use k8s_openapi::jiff::Timestamp;
    use prometheus::Encoder;

    /// What a scrape of `metrics` returns.
    fn scrape(metrics: &ControllerMetrics) -> String {
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut text)
            .unwrap();
        String::from_utf8(text).unwrap()
    }

    /// The samples of `family`, labels and value, as a scrape shows them.
    fn samples(metrics: &ControllerMetrics, family: &str) -> Vec<String> {
        scrape(metrics)
            .lines()
            .filter(|line| line.starts_with(&format!("{family}{{")))
            .map(|line| line[family.len()..].to_owned())
            .collect()
    }

    fn status(ready: &str, result: &str) -> EventSourceMappingStatus {
        let mut status = EventSourceMappingStatus {
            last_processing_result: Some(result.into()),
            ready_replicas: Some(2),
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            READY,
            ready,
            "PollersRunning",
            "",
            None,
            Timestamp::UNIX_EPOCH,
        );
        status
    }

    #[test]
    fn status_sets_ready_and_one_result_kind() {
        let metrics = ControllerMetrics::new();
        metrics.status(
            "ns",
            "m",
            Some(&status("True", "PROBLEM: target timed out")),
        );
        assert_eq!(
            samples(&metrics, "esm_mapping_ready"),
            [r#"{mapping="m",namespace="ns"} 1"#]
        );
        assert_eq!(
            samples(&metrics, "esm_mapping_last_processing_result"),
            [
                r#"{mapping="m",namespace="ns",result="no_records"} 0"#,
                r#"{mapping="m",namespace="ns",result="ok"} 0"#,
                r#"{mapping="m",namespace="ns",result="problem"} 1"#,
            ]
        );
        metrics.status("ns", "m", Some(&status("False", "OK")));
        assert_eq!(
            samples(&metrics, "esm_mapping_ready"),
            [r#"{mapping="m",namespace="ns"} 0"#]
        );
        assert!(
            samples(&metrics, "esm_mapping_last_processing_result")
                .contains(&r#"{mapping="m",namespace="ns",result="ok"} 1"#.to_owned())
        );
        metrics.status("ns", "new", None);
        assert_eq!(
            samples(&metrics, "esm_mapping_ready_replicas"),
            [r#"{mapping="m",namespace="ns"} 2"#],
            "no series without a value"
        );
    }

    #[test]
    fn queue_series_follow_the_signals_and_go_with_a_deleted_mapping() {
        let metrics = ControllerMetrics::new();
        let queue = ScalingStatus {
            concurrency: 5,
            desired_replicas: 1,
            signals: ScalingSignals {
                visible_messages: Some(40),
                in_flight_messages: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        metrics.scaled("ns", "queue", &queue, Some(5));
        metrics.scaled("ns", "stream", &ScalingStatus::default(), None);
        assert_eq!(
            samples(&metrics, "esm_mapping_queue_visible_messages"),
            [r#"{mapping="queue",namespace="ns"} 40"#]
        );
        assert_eq!(
            samples(&metrics, "esm_mapping_max_concurrency"),
            [r#"{mapping="queue",namespace="ns"} 5"#]
        );
        metrics.status("ns", "queue", Some(&status("True", "OK")));
        metrics.retain(|_, mapping| mapping != "queue");
        let text = scrape(&metrics);
        assert!(!text.contains(r#"mapping="queue""#), "{text}");
        assert!(text.contains(r#"mapping="stream""#), "{text}");
    }

    #[test]
    fn error_series_exist_before_the_first_error() {
        assert_eq!(
            samples(
                &ControllerMetrics::new(),
                "esm_controller_reconcile_errors_total"
            )
            .len(),
            Error::METRIC_LABELS.len()
        );
    }
}
