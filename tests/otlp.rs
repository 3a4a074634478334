//! OTLP export of a span per target call, end to end on loopback: the real engines over
//! in-memory sources call a real HTTP target, and the real OTLP/HTTP exporter posts to a
//! receiver that keeps every `POST /v1/traces` body. Each body is decoded as the collector
//! would decode it, and every call the target saw must have exactly one span, with the ids of
//! the `traceparent` it got and what the call was about.

mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use esm_operator::api::{EventSourceMappingSpec, SourceKind};
use esm_operator::destination::Destination;
use esm_operator::event::{SQS_EVENT_SOURCE, SqsRecord};
use esm_operator::otlp::{Exporter, OtlpConfig, SPAN_NAME};
use esm_operator::poller::checkpoint::Checkpoint;
use esm_operator::poller::checkpoint::memory::MemoryLeases;
use esm_operator::poller::metrics::MappingMetrics;
use esm_operator::poller::queue::{Activity, QueuePoller, QueueSettings};
use esm_operator::poller::status::ProcessingResults;
use esm_operator::poller::stream::{StreamIdentity, StreamPoller, StreamSettings};
use esm_operator::sources::sharded::memory::MemoryShard;
use esm_operator::sources::sharded::{
    KinesisEncryption, KinesisRecord, RecordPayload, StreamRecord,
};
use esm_operator::sources::sqs::{EntryFailure, Queue, QueueAttributes, Receipt, SqsError};
use esm_operator::target::HttpTarget;
use k8s_openapi::jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use support::target::EventTarget;
use support::wait;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);
const SHARD: &str = "shardId-000000000000";
const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:000000000000:orders";

/// The requests a receiver got: headers and body.
type Requests = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An OTLP/HTTP receiver on a free loopback port, keeping the bodies of `POST /v1/traces`.
struct Receiver {
    endpoint: String,
    requests: Requests,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        async fn keep(State(requests): State<Requests>, headers: HeaderMap, body: Bytes) {
            requests.lock().unwrap().push((headers, body));
        }
        let requests = Requests::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(keep))
            .with_state(Arc::clone(&requests));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            endpoint,
            requests,
            server,
        }
    }

    fn exporter(&self) -> Exporter {
        Exporter::start(Some(&OtlpConfig {
            endpoint: self.endpoint.clone(),
            service_name: "esm-test".into(),
        }))
        .expect("the exporter starts")
    }

    /// Runs an engine (`run`, given its stop signal) until `done`, stops it (the call in flight
    /// finishes), has `exporter` send the spans still queued, and returns every span received.
    async fn spans_after<E: Future<Output = ()> + Send + 'static>(
        &self,
        exporter: Exporter,
        run: impl FnOnce(watch::Receiver<bool>) -> E,
        what: &str,
        done: impl Fn() -> bool,
    ) -> HashMap<(String, String), Span> {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(stopped));
        wait::until(what, WAIT, || std::future::ready(done().then_some(()))).await;
        stop.send_replace(true);
        task.await.unwrap();
        exporter.shutdown().await;
        self.spans()
    }

    /// Every span received, by `(trace id, span id)` in hex; each request must be an OTLP
    /// protobuf export of service `esm-test`, and no span may come twice.
    fn spans(&self) -> HashMap<(String, String), Span> {
        let mut spans = HashMap::new();
        for (headers, body) in self.requests.lock().unwrap().iter() {
            assert_eq!(headers["content-type"], "application/x-protobuf");
            let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| text(a.value.as_ref()?.value.as_ref()?));
                assert_eq!(service.as_deref(), Some("esm-test"));
                for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                    let key = (hex(&span.trace_id), hex(&span.span_id));
                    assert!(spans.insert(key, span).is_none(), "a span sent twice");
                }
            }
        }
        spans
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

/// A span's attributes, strings and integers as text.
fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|a| {
            let value = match a.value.as_ref()?.value.as_ref()? {
                Value::IntValue(n) => n.to_string(),
                other => text(other)?,
            };
            Some((a.key.clone(), value))
        })
        .collect()
}

/// The span of the call that got `headers`: one with the trace id and span id of its
/// `traceparent`, a CLIENT span named `esm.invoke`.
fn span_of<'a>(spans: &'a HashMap<(String, String), Span>, headers: &HeaderMap) -> &'a Span {
    let traceparent = headers["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    let span = spans
        .get(&(parts[1].to_owned(), parts[2].to_owned()))
        .unwrap_or_else(|| panic!("no span for the call with traceparent {traceparent}"));
    assert_eq!(span.name, SPAN_NAME);
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    span
}

fn status(span: &Span) -> StatusCode {
    span.status.as_ref().map_or(StatusCode::Unset, |s| s.code())
}

fn spec(json: serde_json::Value) -> EventSourceMappingSpec {
    serde_json::from_value(json).expect("a valid spec")
}

/// Kinesis batches of 3; a batch holding `poison` fails with 500 until its one retry is used
/// up, the others succeed. Every call's span says which shard, how many records, which retry,
/// the status and the outcome; failed calls are errors.
#[tokio::test]
async fn each_stream_call_is_one_span_with_the_target_s_trace_ids() {
    let receiver = Receiver::start().await;
    let target = EventTarget::<KinesisEvent>::start(|_, event| {
        let poisoned = event.records.iter().any(|r| r.kinesis.data.0 == b"poison");
        if poisoned {
            (500, "cannot".into())
        } else {
            (200, String::new())
        }
    })
    .await;
    let data = ["a", "b", "c", "poison", "d", "e", "f", "g", "h"];
    let records: VecDeque<StreamRecord> = data
        .iter()
        .enumerate()
        .map(|(i, data)| StreamRecord {
            sequence_number: format!("{:056}", i + 1),
            approximate_arrival: Some(Timestamp::now()),
            payload: RecordPayload::Kinesis(KinesisRecord {
                partition_key: format!("key-{i}"),
                data: data.as_bytes().to_vec(),
                encryption: KinesisEncryption::None,
            }),
        })
        .collect();
    let last = Checkpoint::SequenceNumber(format!("{:056}", data.len()));
    let spec = spec(serde_json::json!({
        "source": {"kinesis": {"streamName": "clicks"}},
        "target": {"url": target.url},
        "startingPosition": "TRIM_HORIZON",
        "batchSize": 3,
        "maximumRetryAttempts": 1,
    }));
    let mut settings = StreamSettings::from_spec(&spec, Duration::from_secs(30));
    settings.busy_poll = Duration::ZERO;
    settings.idle_poll = Duration::from_millis(20);
    settings.retry_backoff = Duration::from_millis(10);
    let leases = Arc::new(MemoryLeases::default());
    let exporter = receiver.exporter();
    let poller = StreamPoller {
        stream: MemoryShard::new(STREAM_ARN, SHARD, records),
        leases: leases.store("replica-a", settings.lease_duration),
        target: HttpTarget::new(
            &esm_operator::target::TargetClient::new().unwrap(),
            &spec.target,
            "shop",
        )
        .unwrap(),
        // No destination: the poisoned records are dropped after their retry.
        destination: None::<Destination>,
        filters: Default::default(),
        settings,
        identity: StreamIdentity {
            mapping: "shop/clicks".into(),
            mapping_uid: "uid".into(),
            target_url: target.url.clone(),
            stream_arn: STREAM_ARN.into(),
            invoke_identity: "test".into(),
            kind: SourceKind::Kinesis,
        },
        metrics: MappingMetrics::detached(),
        results: ProcessingResults::default(),
        spans: exporter.mapping("shop/clicks", SourceKind::Kinesis, STREAM_ARN, &target.url),
    };
    let spans = receiver
        .spans_after(
            exporter,
            |stop| poller.run(stop),
            "every record checkpointed",
            || leases.lease(SHARD).and_then(|l| l.checkpoint).as_ref() == Some(&last),
        )
        .await;
    let calls = target.calls();
    assert_eq!(spans.len(), calls.len(), "one span per call, no other");
    let mut poison_retries = Vec::new();
    let mut outcomes = BTreeMap::<String, usize>::new();
    for call in &calls {
        let span = span_of(&spans, &call.headers);
        assert_eq!(span.parent_span_id, Vec::<u8>::new(), "a trace of its own");
        let attributes = attributes(span);
        let records = call.event.records.len().to_string();
        assert_eq!(attributes["esm.mapping"], "shop/clicks");
        assert_eq!(attributes["esm.source"], "Kinesis");
        assert_eq!(attributes["esm.source_arn"], STREAM_ARN);
        assert_eq!(attributes["esm.shard_id"], SHARD);
        assert_eq!(attributes["url.full"], target.url);
        assert_eq!(attributes["esm.batch.records"], records);
        let poisoned = call
            .event
            .records
            .iter()
            .any(|r| r.kinesis.data.0 == b"poison");
        if poisoned {
            poison_retries.push(attributes["esm.retries"].clone());
            assert_eq!(attributes["http.response.status_code"], "500");
            assert_eq!(attributes["esm.outcome"], "failure");
            assert_eq!(attributes["esm.failed_records"], records);
            assert_eq!(status(span), StatusCode::Error);
            let message = &span.status.as_ref().unwrap().message;
            assert!(message.contains("HTTP 500"), "{message}");
        } else {
            assert_eq!(attributes["http.response.status_code"], "200");
            assert_eq!(attributes["esm.outcome"], "success");
            assert_eq!(attributes["esm.failed_records"], "0");
            assert_eq!(status(span), StatusCode::Unset);
        }
        *outcomes
            .entry(attributes["esm.outcome"].clone())
            .or_default() += 1;
    }
    assert!(
        outcomes["success"] >= 1 && outcomes["failure"] >= 1,
        "{outcomes:?}"
    );
    assert_eq!(poison_retries, ["0", "1"], "the call and its one retry");
}

/// A queue handing out its messages once each (a failed message does not come back).
#[derive(Default)]
struct OnceQueue(Mutex<VecDeque<SqsRecord>>);

impl Queue for OnceQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsRecord>, SqsError> {
        let received: Vec<SqsRecord> = {
            let mut visible = self.0.lock().unwrap();
            let take = visible.len().min(max);
            visible.drain(..take).collect()
        };
        if received.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
        Ok(received)
    }

    async fn delete(&self, _: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        Ok(Vec::new())
    }

    async fn release(&self, _: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        Ok(Vec::new())
    }

    async fn attributes(&self) -> Result<QueueAttributes, SqsError> {
        unreachable!("the engine does not read the queue's attributes")
    }
}

fn message(id: &str, body: &str, xray: Option<&str>) -> SqsRecord {
    SqsRecord {
        message_id: id.into(),
        receipt_handle: format!("receipt-{id}"),
        body: body.into(),
        attributes: xray
            .map(|header| ("AWSTraceHeader".to_owned(), header.to_owned()))
            .into_iter()
            .collect(),
        message_attributes: BTreeMap::new(),
        md5_of_body: "md5".into(),
        md5_of_message_attributes: None,
        event_source: SQS_EVENT_SOURCE,
        event_source_arn: QUEUE_ARN.into(),
        aws_region: "us-east-1".into(),
    }
}

/// SQS batches of 5 with partial batch responses: a batch continuing a producer's X-Ray trace
/// reports one message failed, one batch fails whole (500), one succeeds. Every call's span
/// names the queue, counts its records and failures, and hangs under the producer's span when
/// the batch continues a producer's trace.
#[tokio::test]
async fn each_queue_call_is_one_span_under_the_producer_s_span() {
    let receiver = Receiver::start().await;
    let target = EventTarget::<SqsEvent>::start(|_, event| {
        let body = |r: &aws_lambda_events::event::sqs::SqsMessage| r.body.clone().unwrap();
        if event.records.iter().any(|r| body(r) == "fail-all") {
            return (500, "down".into());
        }
        let failures: Vec<serde_json::Value> = event
            .records
            .iter()
            .filter(|r| body(r) == "bad")
            .map(|r| serde_json::json!({"itemIdentifier": r.message_id}))
            .collect();
        (
            200,
            serde_json::json!({"batchItemFailures": failures}).to_string(),
        )
    })
    .await;
    let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let bodies = [
        "ok", "bad", "ok", "ok", "ok", // partial failure, the producer's trace
        "ok", "ok", "fail-all", "ok", "ok", // failure
        "ok", "ok", "ok", "ok", "ok", // success
    ];
    let queue = OnceQueue::default();
    queue.0.lock().unwrap().extend(
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| message(&format!("m{i}"), body, (i == 0).then_some(xray))),
    );
    let exporter = receiver.exporter();
    let spec = spec(serde_json::json!({
        "source": {"sqs": {"queueUrl": "http://localhost/000000000000/orders"}},
        "target": {"url": target.url},
        "batchSize": 5,
        "maximumBatchingWindowInSeconds": 1,
        "targetResponseTypes": ["ReportBatchItemFailures"],
    }));
    let poller = QueuePoller {
        queue,
        target: HttpTarget::new(
            &esm_operator::target::TargetClient::new().unwrap(),
            &spec.target,
            "shop",
        )
        .unwrap(),
        filters: Default::default(),
        settings: QueueSettings::from_spec(&spec),
        metrics: MappingMetrics::detached(),
        results: ProcessingResults::default(),
        activity: Activity::default(),
        spans: exporter.mapping("shop/orders", SourceKind::Sqs, QUEUE_ARN, &target.url),
    };
    let spans = receiver
        .spans_after(
            exporter,
            |stop| poller.run(stop),
            "every message sent",
            || {
                let sent: usize = target.calls().iter().map(|c| c.event.records.len()).sum();
                sent == bodies.len()
            },
        )
        .await;
    let calls = target.calls();
    assert_eq!(spans.len(), calls.len(), "one span per call, no other");
    let mut outcomes = BTreeMap::<String, usize>::new();
    for call in &calls {
        let span = span_of(&spans, &call.headers);
        let attributes = attributes(span);
        let bodies: Vec<String> = call
            .event
            .records
            .iter()
            .map(|r| r.body.clone().unwrap())
            .collect();
        assert_eq!(attributes["esm.mapping"], "shop/orders");
        assert_eq!(attributes["esm.source"], "SQS");
        assert_eq!(attributes["esm.source_arn"], QUEUE_ARN);
        assert!(!attributes.contains_key("esm.shard_id"));
        assert_eq!(attributes["esm.batch.records"], bodies.len().to_string());
        let bad = bodies.iter().filter(|b| *b == "bad").count();
        let (outcome, failed, code) = if bodies.iter().any(|b| b == "fail-all") {
            ("failure", bodies.len(), StatusCode::Error)
        } else if bad > 0 {
            ("partial_failure", bad, StatusCode::Unset)
        } else {
            ("success", 0, StatusCode::Unset)
        };
        assert_eq!(attributes["esm.outcome"], outcome, "{bodies:?}");
        assert_eq!(attributes["esm.failed_records"], failed.to_string());
        assert_eq!(status(span), code);
        let continues_producer = call
            .event
            .records
            .iter()
            .any(|r| r.message_id.as_deref() == Some("m0"));
        if continues_producer {
            assert_eq!(hex(&span.trace_id), "5759e988bd862e3fe1be46a994272793");
            assert_eq!(hex(&span.parent_span_id), "53995c3f42cd8ad8");
        } else {
            assert!(span.parent_span_id.is_empty(), "a trace of its own");
        }
        *outcomes.entry(outcome.to_owned()).or_default() += 1;
    }
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        ["failure", "partial_failure", "success"],
        "each kind of outcome at least once"
    );
}
