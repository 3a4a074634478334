//! Prometheus metrics of the pollers, per mapping (labels `namespace`, `name`; never per
//! record) and, for streams, per shard (`shard` too). One [`PollerMetrics`] per registry;
//! [`PollerMetrics::mapping`] and [`MappingMetrics::shard`] bind the labels once so the hot
//! path only touches atomics.
use crate::api::SourceKind;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

const LABELS: &[&str] = &["namespace", "name"];
const SHARD_LABELS: &[&str] = &["namespace", "name", "shard"];
const SHARD_RECORD_LABELS: &[&str] = &["namespace", "name", "shard", "event"];
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

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
    dropped: IntCounterVec,
    destination_delivered: IntCounterVec,
    destination_failures: IntCounterVec,
    owned_shards: IntGaugeVec,
    shard_interruptions: IntCounterVec,
    shard_records: IntCounterVec,
    shard_iterator_age: GaugeVec,
    shard_invocation_duration: HistogramVec,
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
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(gauge.clone()))?;
            prometheus::Result::Ok(gauge)
        };
        let in_flight = gauge(
            "esm_poller_in_flight_batches",
            "Batches sent to the target and not yet answered",
            LABELS,
        )?;
        let shard_records = IntCounterVec::new(
            Opts::new(
                "esm_poller_shard_records_total",
                "Stream records per shard and event: polled, filtered_out, invoked, failed, dropped, sent_to_destination",
            ),
            SHARD_RECORD_LABELS,
        )?;
        registry.register(Box::new(shard_records.clone()))?;
        let shard_invocation_duration = HistogramVec::new(
            HistogramOpts::new(
                "esm_poller_shard_invocation_duration_seconds",
                "Time from sending a stream batch to the target's answer, per shard",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            SHARD_LABELS,
        )?;
        registry.register(Box::new(shard_invocation_duration.clone()))?;
        let shard_iterator_age = GaugeVec::new(
            Opts::new(
                "esm_poller_iterator_age_seconds",
                "How far a shard's reader is behind the newest record (Kinesis MillisBehindLatest; DynamoDB: age of the last record read)",
            ),
            SHARD_LABELS,
        )?;
        registry.register(Box::new(shard_iterator_age.clone()))?;
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
                DURATION_BUCKETS.to_vec(),
            )?,
            batch_size: histogram(
                "esm_poller_batch_size_records",
                "Records per batch sent to the target",
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
                ],
            )?,
            in_flight,
            dropped: counter(
                "esm_poller_records_dropped_total",
                "Stream records given up on (retries or record age exhausted); described to the on-failure destination",
            )?,
            destination_delivered: counter(
                "esm_poller_destination_deliveries_total",
                "Invocation records delivered to the on-failure destination",
            )?,
            destination_failures: counter(
                "esm_poller_destination_failures_total",
                "Failed deliveries to the on-failure destination (each is retried)",
            )?,
            owned_shards: gauge(
                "esm_poller_owned_shards",
                "Stream shards whose lease this replica holds",
                LABELS,
            )?,
            shard_interruptions: counter(
                "esm_poller_shard_interruptions_total",
                "Shards stopped without writing their last checkpoint (lease taken, or not renewed within its duration); what they finished since their last checkpoint is delivered again",
            )?,
            shard_records,
            shard_iterator_age,
            shard_invocation_duration,
        })
    }

    /// The metrics of one mapping whose source is `kind`. Series that only another kind of
    /// source can move (SQS deletes; stream drops, destinations, shards) are not exported for
    /// it: its counters for them count nowhere.
    pub fn mapping(&self, namespace: &str, name: &str, kind: SourceKind) -> MappingMetrics {
        self.bind([namespace, name], Some(kind))
    }

    /// Removes every series of a mapping (it was deleted). Per-shard series go earlier, with
    /// their shard's [`ShardMetrics`].
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = [namespace, name];
        for counter in [
            &self.polled,
            &self.filtered_out,
            &self.invoked,
            &self.failed,
            &self.deleted,
            &self.delete_failures,
            &self.oversized,
            &self.source_errors,
            &self.dropped,
            &self.destination_delivered,
            &self.destination_failures,
            &self.shard_interruptions,
        ] {
            let _ = counter.remove_label_values(&labels);
        }
        for histogram in [&self.invocation_duration, &self.batch_size] {
            let _ = histogram.remove_label_values(&labels);
        }
        for gauge in [&self.in_flight, &self.owned_shards] {
            let _ = gauge.remove_label_values(&labels);
        }
    }

    /// Binds the series for a source of `kind`; `None` binds every series.
    fn bind(&self, labels: [&str; 2], kind: Option<SourceKind>) -> MappingMetrics {
        let [namespace, name] = labels;
        let queue = kind.is_none_or(|kind| !kind.is_stream());
        let stream = kind.is_none_or(SourceKind::is_stream);
        const UNEXPORTED: &str = "a series this source never moves";
        let counter = |family: &IntCounterVec, exported: bool| {
            if exported {
                family.with_label_values(&labels)
            } else {
                IntCounter::new("unexported", UNEXPORTED).expect("a valid metric name")
            }
        };
        MappingMetrics {
            polled: self.polled.with_label_values(&labels),
            filtered_out: self.filtered_out.with_label_values(&labels),
            invoked: self.invoked.with_label_values(&labels),
            failed: self.failed.with_label_values(&labels),
            deleted: counter(&self.deleted, queue),
            delete_failures: counter(&self.delete_failures, queue),
            oversized: counter(&self.oversized, queue),
            source_errors: self.source_errors.with_label_values(&labels),
            invocation_duration: self.invocation_duration.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            in_flight: self.in_flight.with_label_values(&labels),
            dropped: counter(&self.dropped, stream),
            destination_delivered: counter(&self.destination_delivered, stream),
            destination_failures: counter(&self.destination_failures, stream),
            shard_interruptions: counter(&self.shard_interruptions, stream),
            owned_shards: if stream {
                self.owned_shards.with_label_values(&labels)
            } else {
                IntGauge::new("unexported", UNEXPORTED).expect("a valid metric name")
            },
            per_shard: ShardFamilies {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                records: self.shard_records.clone(),
                iterator_age: self.shard_iterator_age.clone(),
                invocation_duration: self.shard_invocation_duration.clone(),
            },
        }
    }
}

/// The per-shard metric families, with the mapping's labels.
#[derive(Clone)]
pub struct ShardFamilies {
    namespace: String,
    name: String,
    records: IntCounterVec,
    iterator_age: GaugeVec,
    invocation_duration: HistogramVec,
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
    pub dropped: IntCounter,
    pub destination_delivered: IntCounter,
    pub destination_failures: IntCounter,
    pub owned_shards: IntGauge,
    pub shard_interruptions: IntCounter,
    per_shard: ShardFamilies,
}

impl MappingMetrics {
    /// The metrics of one shard of this mapping; its series go away when it is dropped (the
    /// shard was handed over, lost or finished).
    pub fn shard(&self, shard_id: &str) -> ShardMetrics {
        let families = &self.per_shard;
        let labels = [
            families.namespace.as_str(),
            families.name.as_str(),
            shard_id,
        ];
        let records = |event: &str| {
            families
                .records
                .with_label_values(&[labels[0], labels[1], shard_id, event])
        };
        ShardMetrics {
            mapping: self.clone(),
            shard_id: shard_id.to_owned(),
            polled: records("polled"),
            filtered_out: records("filtered_out"),
            invoked: records("invoked"),
            failed: records("failed"),
            dropped: records("dropped"),
            sent_to_destination: records("sent_to_destination"),
            iterator_age: IteratorAge(families.iterator_age.with_label_values(&labels)),
            invocation_duration: families.invocation_duration.with_label_values(&labels),
        }
    }

    /// Unregistered metrics, for tests of the engine.
    pub fn detached() -> Self {
        PollerMetrics::new(&Registry::new())
            .expect("a fresh registry takes every metric")
            .bind(["test", "test"], None)
    }
}

impl MappingMetrics {
    /// Counts a batch in flight until the guard is dropped (also when its task is aborted).
    pub fn start_in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }
}

pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One shard's metrics; each count also goes to the mapping's total.
pub struct ShardMetrics {
    pub mapping: MappingMetrics,
    shard_id: String,
    polled: IntCounter,
    filtered_out: IntCounter,
    invoked: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
    sent_to_destination: IntCounter,
    pub iterator_age: IteratorAge,
    invocation_duration: Histogram,
}

/// A shard's iterator age: set in milliseconds, as the sources tell it (Kinesis
/// MillisBehindLatest), exported in seconds, the base unit Prometheus wants.
pub struct IteratorAge(Gauge);

impl IteratorAge {
    pub fn set(&self, millis: i64) {
        self.0.set(millis as f64 / 1000.0);
    }
}

impl ShardMetrics {
    pub fn polled(&self, records: usize) {
        self.polled.inc_by(records as u64);
        self.mapping.polled.inc_by(records as u64);
    }

    pub fn filtered_out(&self, records: usize) {
        self.filtered_out.inc_by(records as u64);
        self.mapping.filtered_out.inc_by(records as u64);
    }

    /// A batch of `records` was sent.
    pub fn invoked(&self, records: usize) {
        self.invoked.inc_by(records as u64);
        self.mapping.invoked.inc_by(records as u64);
        self.mapping.batch_size.observe(records as f64);
    }

    pub fn failed(&self, records: usize) {
        self.failed.inc_by(records as u64);
        self.mapping.failed.inc_by(records as u64);
    }

    pub fn dropped(&self, records: usize) {
        self.dropped.inc_by(records as u64);
        self.mapping.dropped.inc_by(records as u64);
    }

    /// An invocation record about `records` reached the destination.
    pub fn sent_to_destination(&self, records: usize) {
        self.sent_to_destination.inc_by(records as u64);
        self.mapping.destination_delivered.inc();
    }

    pub fn observe_invocation(&self, seconds: f64) {
        self.invocation_duration.observe(seconds);
        self.mapping.invocation_duration.observe(seconds);
    }
}

impl Drop for ShardMetrics {
    fn drop(&mut self) {
        let families = &self.mapping.per_shard;
        let labels = [
            families.namespace.as_str(),
            families.name.as_str(),
            &self.shard_id,
        ];
        for event in [
            "polled",
            "filtered_out",
            "invoked",
            "failed",
            "dropped",
            "sent_to_destination",
        ] {
            let _ = families
                .records
                .remove_label_values(&[labels[0], labels[1], labels[2], event]);
        }
        let _ = families.iterator_age.remove_label_values(&labels);
        let _ = families.invocation_duration.remove_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_labelled_per_mapping() {
        let registry = Registry::new();
        let metrics = PollerMetrics::new(&registry).unwrap();
        metrics.mapping("ns", "a", SourceKind::Sqs).polled.inc_by(3);
        metrics.mapping("ns", "b", SourceKind::Sqs).polled.inc();
        let families = registry.gather();
        let polled = families
            .iter()
            .find(|f| f.name() == "esm_poller_records_polled_total")
            .unwrap();
        assert_eq!(polled.get_metric().len(), 2);
        assert!(PollerMetrics::new(&registry).is_err(), "registered once");
    }

    #[test]
    fn shard_counts_add_to_the_mapping_and_vanish_with_the_shard() {
        let registry = Registry::new();
        let metrics =
            PollerMetrics::new(&registry)
                .unwrap()
                .mapping("ns", "m", SourceKind::Kinesis);
        let shard = metrics.shard("shardId-1");
        shard.polled(5);
        shard.dropped(2);
        shard.sent_to_destination(2);
        shard.iterator_age.set(1500);
        assert_eq!(metrics.polled.get(), 5);
        assert_eq!(metrics.dropped.get(), 2);
        assert_eq!(metrics.destination_delivered.get(), 1);
        let series = |registry: &Registry| {
            registry
                .gather()
                .iter()
                .find(|f| f.name() == "esm_poller_shard_records_total")
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(series(&registry), 6);
        let age = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "esm_poller_iterator_age_seconds")
            .unwrap();
        assert_eq!(
            age.get_metric()[0].get_gauge().get_value(),
            1.5,
            "milliseconds in, seconds out"
        );
        drop(shard);
        assert_eq!(series(&registry), 0);
        assert_eq!(metrics.polled.get(), 5, "the mapping keeps its totals");
    }

    /// Names of the families with a series for mapping `ns/name`.
    fn exported(registry: &Registry, name: &str) -> Vec<String> {
        registry
            .gather()
            .iter()
            .filter(|family| {
                family.get_metric().iter().any(|metric| {
                    metric
                        .get_label()
                        .iter()
                        .any(|label| label.name() == "name" && label.value() == name)
                })
            })
            .map(|family| family.name().to_owned())
            .collect()
    }

    #[test]
    fn a_mapping_exports_only_what_its_source_can_move_and_nothing_once_forgotten() {
        let registry = Registry::new();
        let metrics = PollerMetrics::new(&registry).unwrap();
        let kinds = [
            ("standard", SourceKind::Sqs),
            ("fifo", SourceKind::SqsFifo),
            ("kinesis", SourceKind::Kinesis),
            ("dynamodb", SourceKind::DynamoDBStreams),
        ];
        for (name, kind) in kinds {
            let mapping = metrics.mapping("ns", name, kind);
            mapping.deleted.inc();
            mapping.dropped.inc();
            let series = exported(&registry, name);
            assert!(
                series.contains(&"esm_poller_records_polled_total".to_owned()),
                "{name}"
            );
            let queue_only: &[&str] = &["deleted", "delete_failures", "oversized"];
            let stream_only: &[&str] = &["dropped", "destination", "owned_shards", "interruptions"];
            let (present, absent) = if kind.is_stream() {
                (stream_only, queue_only)
            } else {
                (queue_only, stream_only)
            };
            for part in present {
                assert!(series.iter().any(|f| f.contains(part)), "{name}: {part}");
            }
            for part in absent {
                assert!(!series.iter().any(|f| f.contains(part)), "{name}: {part}");
            }
        }

        metrics.forget("ns", "standard");
        assert_eq!(exported(&registry, "standard"), Vec::<String>::new());
        assert!(
            !exported(&registry, "fifo").is_empty(),
            "other mappings stay"
        );
        for (name, _) in kinds {
            metrics.forget("ns", name);
            assert_eq!(exported(&registry, name), Vec::<String>::new(), "{name}");
        }
    }
}
