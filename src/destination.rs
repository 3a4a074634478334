//! The on-failure destination (SPEC §6): when a stream batch is discarded, an invocation record
//! describing it goes to an SQS queue, an SNS topic or an HTTP endpoint; an S3 bucket gets the
//! record with the records themselves, so the batch can be replayed (`esm-operator replay`).
//!
//! [`InvocationRecord`] is the JSON, shaped like Lambda's on-failure record for Kinesis and
//! DynamoDB Streams; [`Deliver`] sends it, [`Destination`] is the configured kind.
use std::future::Future;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::{HttpEndpoint, Target};
use crate::poller::retry::DiscardCondition;
use crate::target::{
    CallError, HttpTarget, Invoke, TargetClient, TargetConfigError, TargetResponse,
};
use crate::trace::TraceContext;

/// What the destination is told about a discarded batch: Lambda's on-failure record for Kinesis
/// and DynamoDB Streams, key for key and type for type, so tools that read Lambda's records read
/// these unchanged. What Lambda has no key for is under [`EXTENSION_KEY`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvocationRecord {
    #[serde(rename = "requestContext")]
    pub request_context: RequestContext,
    /// Absent for records given up on for their age, as Lambda writes them.
    #[serde(rename = "responseContext", skip_serializing_if = "Option::is_none")]
    pub response_context: Option<ResponseContext>,
    pub version: &'static str,
    #[serde(serialize_with = "milliseconds")]
    pub timestamp: Timestamp,
    /// `KinesisBatchInfo` or `DDBStreamBatchInfo`, as Lambda names it.
    #[serde(flatten)]
    pub batch: BatchInfo,
    #[serde(rename = "esmOperator")]
    pub extension: Extension,
}

/// The one key of an invocation record that Lambda does not write.
pub const EXTENSION_KEY: &str = "esmOperator";

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// A UUID, new for each record.
    pub request_id: String,
    /// The target's URL: how a mapping names what it calls (`http://NAME.NAMESPACE.svc:PORT/PATH`
    /// for a Service); it changes only with the mapping's target.
    pub function_arn: String,
    pub condition: DiscardCondition,
    /// Calls made with these records since the checkpoint last moved (at least 1).
    pub approximate_invoke_count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    /// The target's HTTP status; 504 when it did not answer in time and 502 when it could
    /// not be reached, as a gateway in front of it would say.
    pub status_code: u16,
    /// Always `$LATEST`: a target has no versions.
    pub executed_version: &'static str,
    /// `Unhandled` when the call failed; `null` when the target answered 2xx with a partial
    /// batch response (usable or not).
    pub function_error: Option<&'static str>,
}

impl ResponseContext {
    /// Of a call that failed the batch or answered with a partial batch response.
    pub fn of(result: &Result<TargetResponse, CallError>) -> Self {
        let (status_code, answered_2xx) = match result {
            Ok(response) => (response.status, (200..300).contains(&response.status)),
            Err(CallError::Timeout(_)) => (504, false),
            Err(CallError::Connect(_) | CallError::Request(_)) => (502, false),
        };
        Self {
            status_code,
            executed_version: "$LATEST",
            function_error: (!answered_2xx).then_some("Unhandled"),
        }
    }

    /// Of a record too large to send: Lambda's Invoke answers such a payload 413.
    pub fn payload_too_large() -> Self {
        Self {
            status_code: 413,
            executed_version: "$LATEST",
            function_error: None,
        }
    }
}

/// What only esm-operator knows about the discarded batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// The mapping, `NAMESPACE/NAME`.
    pub mapping: String,
    /// The target's HTTP status of the last call; absent when it never answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why the last call failed, or why the records were given up on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The discarded records, by shard and sequence numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum BatchInfo {
    /// Arrival times in milliseconds.
    #[serde(rename = "KinesisBatchInfo")]
    Kinesis(ShardBatchInfo<LambdaTime<Milliseconds>>),
    /// Arrival times in whole seconds: DynamoDB Streams has no finer ones.
    #[serde(rename = "DDBStreamBatchInfo")]
    DynamoDb(ShardBatchInfo<LambdaTime<Seconds>>),
}

/// `T`: how arrival times are written.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardBatchInfo<T = Timestamp> {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_first_record: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_last_record: Option<T>,
    pub batch_size: usize,
    pub stream_arn: String,
}

impl<P> From<ShardBatchInfo> for ShardBatchInfo<LambdaTime<P>> {
    fn from(info: ShardBatchInfo) -> Self {
        Self {
            shard_id: info.shard_id,
            start_sequence_number: info.start_sequence_number,
            end_sequence_number: info.end_sequence_number,
            approximate_arrival_of_first_record: info
                .approximate_arrival_of_first_record
                .map(Into::into),
            approximate_arrival_of_last_record: info
                .approximate_arrival_of_last_record
                .map(Into::into),
            batch_size: info.batch_size,
            stream_arn: info.stream_arn,
        }
    }
}

/// How many fractional digits Lambda writes in a time.
pub trait TimePrecision: Clone + std::fmt::Debug + PartialEq {
    const FORMAT: &'static str;
}

#[derive(Clone, Debug, PartialEq)]
pub struct Milliseconds;
impl TimePrecision for Milliseconds {
    const FORMAT: &'static str = "%Y-%m-%dT%H:%M:%S%.3fZ";
}

#[derive(Clone, Debug, PartialEq)]
pub struct Seconds;
impl TimePrecision for Seconds {
    const FORMAT: &'static str = "%Y-%m-%dT%H:%M:%SZ";
}

/// A UTC time written with exactly the digits Lambda writes (`2022-07-13T13:48:01.000Z`).
#[derive(Clone, Debug, PartialEq)]
pub struct LambdaTime<P>(pub Timestamp, std::marker::PhantomData<P>);

impl<P> From<Timestamp> for LambdaTime<P> {
    fn from(time: Timestamp) -> Self {
        Self(time, std::marker::PhantomData)
    }
}

impl<P: TimePrecision> Serialize for LambdaTime<P> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.strftime(P::FORMAT))
    }
}

fn milliseconds<S: serde::Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    LambdaTime::<Milliseconds>::from(*time).serialize(serializer)
}

impl InvocationRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("invocation records always serialize")
    }
}

/// A discarded batch, as a destination gets it.
#[derive(Clone, Copy, Debug)]
pub struct FailedBatch<'a> {
    /// The invocation record (JSON).
    pub record: &'a str,
    /// The event the target was sent (`{"Records":[...]}`), for the destination that keeps the
    /// records (S3).
    pub payload: &'a [u8],
    /// The mapping's UID and the shard, for the S3 key.
    pub mapping_uid: &'a str,
    pub shard_id: &'a str,
    pub timestamp: Timestamp,
}

/// Sends invocation records somewhere.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers one batch's record; `Err` says why it did not arrive.
    fn deliver(&self, failed: FailedBatch<'_>) -> impl Future<Output = Result<(), String>> + Send;
}

/// A configured on-failure destination.
#[derive(Clone, Debug)]
pub enum Destination {
    Sqs(SqsDestination),
    Sns(SnsDestination),
    S3(S3Destination),
    Http(HttpTarget),
}

/// Why an HTTP destination cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("spec.destinationConfig.onFailure.http: exactly one of service, url must be set")]
    NoEndpoint,
    #[error("spec.destinationConfig.onFailure.http.url: {url:?} is not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot create the HTTP client of the on-failure destination: {0}")]
    Client(String),
}

impl Destination {
    /// An HTTP endpoint receiving records by POST (`spec.destinationConfig.onFailure.http`).
    pub fn http(
        client: &TargetClient,
        endpoint: &HttpEndpoint,
        namespace: &str,
    ) -> Result<Self, DestinationError> {
        let target = Target {
            endpoint: endpoint.clone(),
            timeout_seconds: None,
        };
        HttpTarget::new(client, &target, namespace)
            .map(Destination::Http)
            .map_err(|error| match error {
                TargetConfigError::NoEndpoint => DestinationError::NoEndpoint,
                TargetConfigError::BadUrl { url, reason } => {
                    DestinationError::BadUrl { url, reason }
                }
                TargetConfigError::Client(reason) => DestinationError::Client(reason),
            })
    }
}

impl Deliver for Destination {
    async fn deliver(&self, failed: FailedBatch<'_>) -> Result<(), String> {
        match self {
            Destination::Sqs(queue) => queue.deliver(failed.record).await,
            Destination::Sns(topic) => topic.deliver(failed.record).await,
            Destination::S3(bucket) => bucket.deliver(failed).await,
            Destination::Http(http) => match http
                .invoke(
                    failed.record.as_bytes().to_vec(),
                    &TraceContext::new_trace(),
                )
                .await
            {
                Ok(response) if (200..300).contains(&response.status) => Ok(()),
                Ok(response) => Err(format!(
                    "destination {} answered HTTP {}",
                    http.url(),
                    response.status
                )),
                Err(error) => Err(format!("destination {}: {error}", http.url())),
            },
        }
    }
}

/// An SNS topic receiving each invocation record as a message (Publish).
#[derive(Clone, Debug)]
pub struct SnsDestination {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsDestination {
    pub fn new(sdk: &aws_types::SdkConfig, topic_arn: &str) -> Self {
        Self {
            client: aws_sdk_sns::Client::new(sdk),
            topic_arn: topic_arn.to_owned(),
        }
    }

    async fn deliver(&self, record: &str) -> Result<(), String> {
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(record)
            .send()
            .await
            .map(drop)
            .map_err(|error| {
                format!(
                    "SNS Publish to {}: {}",
                    self.topic_arn,
                    aws_sdk_sns::error::DisplayErrorContext(&error)
                )
            })
    }
}

/// An S3 bucket receiving one object per discarded batch: the invocation record with the
/// records under `payload`, at Lambda's key layout.
#[derive(Clone, Debug)]
pub struct S3Destination {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Destination {
    pub fn new(sdk: &aws_types::SdkConfig, destination: &crate::api::S3Destination) -> Self {
        Self {
            client: s3_client(sdk, destination.aws.endpoint_url.is_some()),
            bucket: destination.bucket().to_owned(),
            prefix: destination.prefix.clone().unwrap_or_default(),
        }
    }

    async fn deliver(&self, failed: FailedBatch<'_>) -> Result<(), String> {
        let key = s3_key(
            &self.prefix,
            failed.mapping_uid,
            failed.shard_id,
            failed.timestamp,
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(
                with_payload(failed.record, failed.payload)
                    .into_bytes()
                    .into(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|error| {
                format!(
                    "S3 PutObject s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&error)
                )
            })
    }
}

/// An S3 client; with an endpoint override (an emulator, a gateway) buckets are addressed by
/// path, as such endpoints expect, while AWS itself gets virtual-hosted addressing.
pub fn s3_client(sdk: &aws_types::SdkConfig, endpoint_overridden: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(endpoint_overridden)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Lambda's key of an S3 on-failure object:
/// `aws/lambda/<mapping-uid>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`, after `prefix`.
pub fn s3_key(prefix: &str, mapping_uid: &str, shard_id: &str, at: Timestamp) -> String {
    format!(
        "{prefix}aws/lambda/{mapping_uid}/{shard_id}/{}-{}",
        at.strftime("%Y/%m/%d/%Y-%m-%dT%H.%M.%S"),
        uuid::Uuid::new_v4()
    )
}

/// The invocation record (a JSON object) with `payload` (JSON) added as its last key.
fn with_payload(record: &str, payload: &[u8]) -> String {
    let record = record.trim_end();
    let body = record
        .strip_suffix('}')
        .expect("an invocation record is a JSON object");
    format!("{body},\"payload\":{}}}", String::from_utf8_lossy(payload))
}

/// An SQS queue receiving invocation records (SendMessage).
#[derive(Clone, Debug)]
pub struct SqsDestination {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDestination {
    pub fn new(sdk: &aws_types::SdkConfig, queue_url: &str) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(sdk),
            queue_url: queue_url.to_owned(),
        }
    }

    async fn deliver(&self, record: &str) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(record)
            .send()
            .await
            .map(drop)
            .map_err(|error| {
                format!(
                    "SQS SendMessage to {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&error)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_http_destination_names_its_field() {
        let endpoint = HttpEndpoint {
            service: None,
            url: Some("not a url".into()),
        };
        let error = Destination::http(&TargetClient::new().unwrap(), &endpoint, "ns").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("spec.destinationConfig.onFailure.http.url: \"not a url\""),
            "{error}"
        );
    }

    fn info() -> ShardBatchInfo {
        ShardBatchInfo {
            shard_id: "shardId-1".into(),
            start_sequence_number: "49".into(),
            end_sequence_number: "51".into(),
            approximate_arrival_of_first_record: Some("2025-12-31T23:59:00.5Z".parse().unwrap()),
            approximate_arrival_of_last_record: Some("2025-12-31T23:59:01Z".parse().unwrap()),
            batch_size: 2,
            stream_arn: "arn:aws:kinesis:us-east-1:0:stream/s".into(),
        }
    }

    fn record(response: Option<ResponseContext>, batch: BatchInfo) -> serde_json::Value {
        let record = InvocationRecord {
            request_context: RequestContext {
                request_id: "c9b8fa9f-5a7f-4b2c-af9c-0c604cde93a5".into(),
                function_arn: "http://orders.shop.svc:8080/".into(),
                condition: DiscardCondition::RetryAttemptsExhausted,
                approximate_invoke_count: 3,
            },
            response_context: response,
            version: "1.0",
            timestamp: "2026-01-01T00:00:00Z".parse().unwrap(),
            batch,
            extension: Extension {
                mapping: "shop/orders".into(),
                http_status: Some(500),
                error: Some("target answered HTTP 500".into()),
            },
        };
        serde_json::from_str(&record.to_json()).unwrap()
    }

    fn answered(status: u16) -> Result<TargetResponse, CallError> {
        Ok(TargetResponse {
            status,
            body: Vec::new(),
            truncated: false,
            location: None,
        })
    }

    #[test]
    fn record_has_lambdas_keys_and_types() {
        let json = record(
            Some(ResponseContext::of(&answered(500))),
            BatchInfo::Kinesis(info().into()),
        );
        assert_eq!(
            json,
            serde_json::json!({
                "requestContext": {
                    "requestId": "c9b8fa9f-5a7f-4b2c-af9c-0c604cde93a5",
                    "functionArn": "http://orders.shop.svc:8080/",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "responseContext": {
                    "statusCode": 500,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "version": "1.0",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "KinesisBatchInfo": {
                    "shardId": "shardId-1",
                    "startSequenceNumber": "49",
                    "endSequenceNumber": "51",
                    "approximateArrivalOfFirstRecord": "2025-12-31T23:59:00.500Z",
                    "approximateArrivalOfLastRecord": "2025-12-31T23:59:01.000Z",
                    "batchSize": 2,
                    "streamArn": "arn:aws:kinesis:us-east-1:0:stream/s",
                },
                "esmOperator": {
                    "mapping": "shop/orders",
                    "httpStatus": 500,
                    "error": "target answered HTTP 500",
                },
            })
        );
        assert_eq!(EXTENSION_KEY, "esmOperator");
    }

    #[test]
    fn dynamodb_arrivals_are_whole_seconds() {
        let json = record(None, BatchInfo::DynamoDb(info().into()));
        let batch = &json["DDBStreamBatchInfo"];
        assert_eq!(
            batch["approximateArrivalOfFirstRecord"],
            "2025-12-31T23:59:00Z"
        );
        assert_eq!(
            batch["approximateArrivalOfLastRecord"],
            "2025-12-31T23:59:01Z"
        );
        assert!(
            json.get("responseContext").is_none(),
            "record age: no response"
        );
    }

    #[test]
    fn response_context_says_whether_the_target_failed() {
        let of = |result| serde_json::to_value(ResponseContext::of(&result)).unwrap();
        let partial = of(answered(200));
        assert_eq!(partial["statusCode"], 200);
        assert!(
            partial["functionError"].is_null(),
            "a 2xx partial response: null"
        );
        assert_eq!(
            of(Err(CallError::Timeout(std::time::Duration::from_secs(3))))["statusCode"],
            504
        );
        let refused = of(Err(CallError::Connect("refused".into())));
        assert_eq!(
            (
                refused["statusCode"].as_u64(),
                refused["functionError"].as_str()
            ),
            (Some(502), Some("Unhandled"))
        );
    }

    #[test]
    fn s3_objects_use_lambdas_key_layout_and_keep_the_records() {
        let at: Timestamp = "2022-07-13T13:48:01.250Z".parse().unwrap();
        let key = s3_key("failed/", "uid-1", "shardId-0", at);
        let (head, uuid) =
            key.split_at("failed/aws/lambda/uid-1/shardId-0/2022/07/13/2022-07-13T13.48.01-".len());
        assert_eq!(
            head,
            "failed/aws/lambda/uid-1/shardId-0/2022/07/13/2022-07-13T13.48.01-"
        );
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{key}");
        let object: serde_json::Value = serde_json::from_str(&with_payload(
            r#"{"version":"1.0"}"#,
            br#"{"Records":[{"n":1}]}"#,
        ))
        .unwrap();
        assert_eq!(
            object,
            serde_json::json!({"version": "1.0", "payload": {"Records": [{"n": 1}]}})
        );
    }

    #[test]
    fn timestamps_have_exactly_three_fraction_digits() {
        let time: Timestamp = "2022-07-13T13:48:01.123456789Z".parse().unwrap();
        assert_eq!(
            serde_json::to_value(LambdaTime::<Milliseconds>::from(time)).unwrap(),
            "2022-07-13T13:48:01.123Z"
        );
        assert_eq!(
            serde_json::to_value(LambdaTime::<Seconds>::from(time)).unwrap(),
            "2022-07-13T13:48:01Z"
        );
    }
}
