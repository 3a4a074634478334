//! The on-failure destination (SPEC §6): when a stream batch is discarded, an invocation record
//! describing it (not its records) goes to an SQS queue or an HTTP endpoint.
//!
//! [`InvocationRecord`] is the JSON, shaped like Lambda's on-failure record for Kinesis and
//! DynamoDB Streams; [`Deliver`] sends it, [`Destination`] is the configured kind.
use std::future::Future;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::{HttpEndpoint, Target};
use crate::poller::retry::DiscardCondition;
use crate::target::{HttpTarget, Invoke, TargetConfigError};

/// What the destination is told about a discarded batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvocationRecord {
    #[serde(rename = "requestContext")]
    pub request_context: RequestContext,
    #[serde(rename = "responseContext")]
    pub response_context: ResponseContext,
    pub version: &'static str,
    pub timestamp: Timestamp,
    /// `KinesisBatchInfo` or `DDBStreamBatchInfo`, as Lambda names it.
    #[serde(flatten)]
    pub batch: BatchInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// Unique per record: `SHARD:FIRST-SEQUENCE:ATTEMPTS`.
    pub request_id: String,
    /// The mapping, `NAMESPACE/NAME` (Lambda: `functionArn`).
    pub mapping: String,
    /// The target's URL.
    pub target: String,
    pub condition: DiscardCondition,
    /// Calls made with these records.
    pub approximate_invoke_count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    /// The target's last HTTP status; absent when it never answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why the last call failed; absent for records that expired before they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The discarded records, by shard and sequence numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum BatchInfo {
    #[serde(rename = "KinesisBatchInfo")]
    Kinesis(ShardBatchInfo),
    #[serde(rename = "DDBStreamBatchInfo")]
    DynamoDb(ShardBatchInfo),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardBatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_first_record: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_of_last_record: Option<Timestamp>,
    pub batch_size: usize,
    pub stream_arn: String,
}

impl InvocationRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("invocation records always serialize")
    }
}

/// Sends invocation records somewhere.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers one record (JSON); `Err` says why it did not arrive.
    fn deliver(&self, record: String) -> impl Future<Output = Result<(), String>> + Send;
}

/// A configured on-failure destination.
#[derive(Clone, Debug)]
pub enum Destination {
    Sqs(SqsDestination),
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
    pub fn http(endpoint: &HttpEndpoint, namespace: &str) -> Result<Self, DestinationError> {
        let target = Target {
            endpoint: endpoint.clone(),
            timeout_seconds: None,
        };
        HttpTarget::new(&target, namespace)
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
    async fn deliver(&self, record: String) -> Result<(), String> {
        match self {
            Destination::Sqs(queue) => queue.deliver(record).await,
            Destination::Http(http) => match http.invoke(record.into_bytes()).await {
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

    async fn deliver(&self, record: String) -> Result<(), String> {
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
        let error = Destination::http(&endpoint, "ns").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("spec.destinationConfig.onFailure.http.url: \"not a url\""),
            "{error}"
        );
    }

    #[test]
    fn record_has_lambdas_shape() {
        let record = InvocationRecord {
            request_context: RequestContext {
                request_id: "shardId-1:49:3".into(),
                mapping: "shop/orders".into(),
                target: "http://orders.shop.svc:8080/".into(),
                condition: DiscardCondition::RetryAttemptsExhausted,
                approximate_invoke_count: 3,
            },
            response_context: ResponseContext {
                status_code: Some(500),
                error: Some("target answered HTTP 500".into()),
            },
            version: "1.0",
            timestamp: "2026-01-01T00:00:00Z".parse().unwrap(),
            batch: BatchInfo::Kinesis(ShardBatchInfo {
                shard_id: "shardId-1".into(),
                start_sequence_number: "49".into(),
                end_sequence_number: "51".into(),
                approximate_arrival_of_first_record: Some(
                    "2025-12-31T23:59:00.5Z".parse().unwrap(),
                ),
                approximate_arrival_of_last_record: None,
                batch_size: 2,
                stream_arn: "arn:aws:kinesis:us-east-1:0:stream/s".into(),
            }),
        };
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "requestContext": {
                    "requestId": "shardId-1:49:3",
                    "mapping": "shop/orders",
                    "target": "http://orders.shop.svc:8080/",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "responseContext": {"statusCode": 500, "error": "target answered HTTP 500"},
                "version": "1.0",
                "timestamp": "2026-01-01T00:00:00Z",
                "KinesisBatchInfo": {
                    "shardId": "shardId-1",
                    "startSequenceNumber": "49",
                    "endSequenceNumber": "51",
                    "approximateArrivalOfFirstRecord": "2025-12-31T23:59:00.5Z",
                    "batchSize": 2,
                    "streamArn": "arn:aws:kinesis:us-east-1:0:stream/s",
                },
            })
        );
    }
}
