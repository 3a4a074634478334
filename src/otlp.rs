//! Optional OTLP/HTTP export of one span per target call (`--otlp-endpoint`).
//!
//! The span has the trace id and span id of the call's `traceparent` ([`TraceContext`]), so the
//! spans a target records for the request are its children, and its parent is the producer's
//! span when the batch continues a producer's trace. The span is assembled whole once the
//! call's outcome is known and handed to the SDK's batch span processor, which sends it to
//! `<endpoint>/v1/traces` from a thread of its own. The SDK's tracer is not used: it always
//! draws a span id of its own, and the span must carry the one the target already got.
//!
//! Off (no endpoint), [`CallSpans::record`] is one branch: nothing is built or allocated.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};
use tokio::time::Instant;

use crate::api::SourceKind;
use crate::target::{CallError, Outcome, TargetResponse};
use crate::trace::TraceContext;

/// Name of every exported span.
pub const SPAN_NAME: &str = "esm.invoke";
/// `service.name` of the spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "esm-operator";

/// Where spans go: the operator's flags, and what poller pods get from the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. `http://collector:4318`.
    pub endpoint: String,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME`).
    pub service_name: String,
}

impl OtlpConfig {
    /// The traces URL of the base endpoint, as the OTLP specification derives it from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// An exporter that cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp-endpoint {endpoint:?}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// The span export of a process: off, or one batch span processor every mapping shares.
#[derive(Clone, Debug, Default)]
pub struct Exporter(Option<Arc<Shared>>);

#[derive(Debug)]
struct Shared {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Starts exporting to `config` (`None`: off).
    pub fn start(config: Option<&OtlpConfig>) -> Result<Self, OtlpError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url())
            .build()
            .map_err(|error| OtlpError::Exporter {
                endpoint: config.endpoint.clone(),
                reason: error.to_string(),
            })?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        // The builder still reads OTEL_RESOURCE_ATTRIBUTES; the name is ours to choose.
        processor.set_resource(
            &Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let scope = InstrumentationScope::builder("esm-operator")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        tracing::info!(endpoint = %config.traces_url(), "exporting a span per target call");
        Ok(Self(Some(Arc::new(Shared { processor, scope }))))
    }

    /// The spans of one mapping's calls, with what every call of it shares: the mapping
    /// (`NAMESPACE/NAME`), its source and the target's URL.
    pub fn mapping(
        &self,
        mapping: &str,
        kind: SourceKind,
        source_arn: &str,
        target_url: &str,
    ) -> CallSpans {
        let Some(shared) = &self.0 else {
            return CallSpans::default();
        };
        let text = |value: &str| opentelemetry::Value::from(Arc::<str>::from(value));
        let attributes = [
            KeyValue::new("esm.mapping", text(mapping)),
            KeyValue::new("esm.source", text(&kind.to_string())),
            KeyValue::new("esm.source_arn", text(source_arn)),
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.full", text(target_url)),
        ];
        CallSpans(Some(Arc::new(MappingSpans {
            shared: shared.clone(),
            attributes: attributes.into(),
        })))
    }

    /// Sends the spans still queued and stops the export thread; waits at most the SDK's
    /// shutdown timeout (5 s) for the endpoint.
    pub async fn shutdown(self) {
        let Some(shared) = self.0 else { return };
        // The processor blocks until its thread exported; keep that off the runtime's threads
        // (a poller runs on one).
        let flushed = tokio::task::spawn_blocking(move || shared.processor.shutdown())
            .await
            .map_err(|error| error.to_string())
            .and_then(|done| done.map_err(|error| error.to_string()));
        if let Err(error) = flushed {
            tracing::warn!(%error, "cannot flush the last spans");
        }
    }
}

/// The spans of one mapping's target calls; the default records nothing.
#[derive(Clone, Debug, Default)]
pub struct CallSpans(Option<Arc<MappingSpans>>);

#[derive(Debug)]
struct MappingSpans {
    shared: Arc<Shared>,
    /// Shared by every call of the mapping; cloning a value only counts a reference.
    attributes: Box<[KeyValue]>,
}

/// One target call, as the engine saw it.
pub struct Call<'a> {
    /// The stream shard the records came from; `None` for queues.
    pub shard: Option<&'a str>,
    /// Records in the call's event.
    pub records: usize,
    /// Earlier calls with these records (streams count them; SQS does not, each message
    /// carries its own `ApproximateReceiveCount`).
    pub retries: Option<u32>,
    pub result: &'a Result<TargetResponse, CallError>,
    pub outcome: &'a Outcome,
}

impl CallSpans {
    /// Records the span of a call that started at `started`, carried `trace` and ended with
    /// `call`; the span ends now. Unsampled traces (the producer's choice) are not recorded.
    #[inline]
    pub fn record(&self, trace: &TraceContext, started: Instant, call: Call<'_>) {
        if let Some(spans) = &self.0 {
            spans.record(trace, started.elapsed(), call);
        }
    }
}

impl MappingSpans {
    fn record(&self, trace: &TraceContext, took: Duration, call: Call<'_>) {
        if !trace.sampled() {
            return;
        }
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(trace.trace_id()),
            SpanId::from_hex(trace.span_id()),
        ) else {
            return;
        };
        let end_time = SystemTime::now();
        let (outcome, failed, status) = match call.outcome {
            // Unset, not Ok: Ok is an application's verdict, an instrumentation sets Error only.
            Outcome::Success => ("success", 0, Status::Unset),
            Outcome::PartialFailure(failed) => ("partial_failure", failed.len(), Status::Unset),
            Outcome::Failure(reason) => ("failure", call.records, Status::error(reason.clone())),
        };
        let mut attributes = Vec::with_capacity(self.attributes.len() + 6);
        attributes.extend_from_slice(&self.attributes);
        if let Some(shard) = call.shard {
            attributes.push(KeyValue::new("esm.shard_id", shard.to_owned()));
        }
        attributes.push(KeyValue::new("esm.batch.records", call.records as i64));
        if let Some(retries) = call.retries {
            attributes.push(KeyValue::new("esm.retries", i64::from(retries)));
        }
        if let Ok(response) = call.result {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(response.status),
            ));
        }
        attributes.push(KeyValue::new("esm.outcome", outcome));
        attributes.push(KeyValue::new("esm.failed_records", failed as i64));
        let parent = trace
            .parent_span_id
            .map(|id| SpanId::from_bytes(id.to_be_bytes()));
        self.shared.processor.on_end(SpanData {
            span_context: SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: parent.is_some(),
            span_kind: SpanKind::Client,
            name: SPAN_NAME.into(),
            start_time: end_time.checked_sub(took).unwrap_or(end_time),
            end_time,
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: self.shared.scope.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_the_traces_path_of_the_base_endpoint() {
        for endpoint in ["http://collector:4318", "http://collector:4318/"] {
            let config = OtlpConfig {
                endpoint: endpoint.into(),
                service_name: DEFAULT_SERVICE_NAME.into(),
            };
            assert_eq!(config.traces_url(), "http://collector:4318/v1/traces");
        }
    }
}
