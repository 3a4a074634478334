//! The `EventSourceMapping` API (`esm.dev/v1alpha1`).
//!
//! Field names follow Lambda's `CreateEventSourceMapping` parameters in camelCase, with
//! "Function" spelled "Target". Everything the API server can check is in the schema (ranges)
//! or in CEL rules (`x-kubernetes-validations`); the rest is checked by
//! [`crate::controller::validate`] and reported in status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lambda's default batch size for queues.
pub const DEFAULT_SQS_BATCH_SIZE: u32 = 10;
/// Lambda's default batch size for streams.
pub const DEFAULT_STREAM_BATCH_SIZE: u32 = 100;
/// Default per-call target timeout.
pub const DEFAULT_TARGET_TIMEOUT_SECONDS: u32 = 30;
/// Default number of concurrent batches one poller replica runs.
pub const DEFAULT_BATCHES_PER_REPLICA: u32 = 10;

/// Poll an SQS queue, Kinesis stream or DynamoDB stream and call an HTTP target with batches of
/// records, the way an AWS Lambda event source mapping calls a function.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "esm.dev",
    version = "v1alpha1",
    kind = "EventSourceMapping",
    namespaced,
    shortname = "esm",
    category = "all",
    status = "EventSourceMappingStatus",
    doc = "Polls an SQS queue, Kinesis stream or DynamoDB stream and calls an HTTP target synchronously with batches of records, like an AWS Lambda event source mapping.",
    printcolumn(name = "Source", type_ = "string", json_path = ".status.sourceKind"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Concurrency", type_ = "integer", json_path = ".status.scaling.concurrency"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Min Pollers", type_ = "integer", json_path = ".status.scaling.provisionedPollers.minimum", priority = 1),
    printcolumn(name = "Max Pollers", type_ = "integer", json_path = ".status.scaling.provisionedPollers.maximum", priority = 1),
    printcolumn(name = "Last Result", type_ = "string", json_path = ".status.lastProcessingResult"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name must be at most 52 characters: it names the poller workload (esm-NAME)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.source.sqs) || has(self.startingPosition)").message("startingPosition is required for Kinesis and DynamoDB Streams sources").field_path(".startingPosition").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.source.sqs) || !has(self.startingPosition)").message("startingPosition is not allowed for SQS sources").field_path(".startingPosition").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.startingPosition) || self.startingPosition != 'AT_TIMESTAMP' || has(self.startingPositionTimestamp)").message("startingPositionTimestamp is required when startingPosition is AT_TIMESTAMP").field_path(".startingPositionTimestamp").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.startingPositionTimestamp) || (has(self.startingPosition) && self.startingPosition == 'AT_TIMESTAMP')").message("startingPositionTimestamp is only allowed with startingPosition AT_TIMESTAMP").field_path(".startingPositionTimestamp").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.startingPosition) || self.startingPosition != 'AT_TIMESTAMP' || has(self.source.kinesis)").message("startingPosition AT_TIMESTAMP is only supported for Kinesis sources").field_path(".startingPosition"),
    validation = Rule::new("!has(self.source.sqs) || !self.source.sqs.queueUrl.endsWith('.fifo') || !has(self.batchSize) || self.batchSize <= 10").message("batchSize must be at most 10 for a FIFO queue").field_path(".batchSize"),
    validation = Rule::new("!has(self.source.sqs) || !self.source.sqs.queueUrl.endsWith('.fifo') || !has(self.maximumBatchingWindowInSeconds) || self.maximumBatchingWindowInSeconds == 0").message("maximumBatchingWindowInSeconds is not supported for a FIFO queue").field_path(".maximumBatchingWindowInSeconds").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.batchSize) || self.batchSize <= 10 || (has(self.maximumBatchingWindowInSeconds) && self.maximumBatchingWindowInSeconds >= 1)").message("an SQS batchSize above 10 needs maximumBatchingWindowInSeconds of at least 1").field_path(".maximumBatchingWindowInSeconds").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.source.sqs) || !has(self.parallelizationFactor)").message("parallelizationFactor is only supported for Kinesis and DynamoDB Streams sources").field_path(".parallelizationFactor").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.maximumRetryAttempts)").message("maximumRetryAttempts is only supported for Kinesis and DynamoDB Streams sources (SQS retries through the queue's visibility timeout and redrive policy)").field_path(".maximumRetryAttempts").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.maximumRecordAgeInSeconds)").message("maximumRecordAgeInSeconds is only supported for Kinesis and DynamoDB Streams sources").field_path(".maximumRecordAgeInSeconds").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.bisectBatchOnTargetError)").message("bisectBatchOnTargetError is only supported for Kinesis and DynamoDB Streams sources").field_path(".bisectBatchOnTargetError").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.tumblingWindowInSeconds)").message("tumblingWindowInSeconds is only supported for Kinesis and DynamoDB Streams sources").field_path(".tumblingWindowInSeconds").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.tumblingWindowInSeconds) || self.tumblingWindowInSeconds == 0 || !has(self.bisectBatchOnTargetError) || !self.bisectBatchOnTargetError").message("bisectBatchOnTargetError cannot be used with tumblingWindowInSeconds: a window's calls carry its state in shard order").field_path(".bisectBatchOnTargetError").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.tumblingWindowInSeconds) || self.tumblingWindowInSeconds == 0 || !has(self.parallelizationFactor) || self.parallelizationFactor == 1").message("parallelizationFactor must be 1 with tumblingWindowInSeconds: a window's state is one per shard").field_path(".parallelizationFactor").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.source.sqs) || !has(self.destinationConfig)").message("destinationConfig is only supported for Kinesis and DynamoDB Streams sources (an SQS mapping never gives up on a message: configure a dead-letter queue in the queue's redrive policy)").field_path(".destinationConfig").reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.source.sqs) || !has(self.provisionedPollerConfig)").message("provisionedPollerConfig is only supported for SQS sources here (streams scale with their shards)").field_path(".provisionedPollerConfig").reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.source.sqs) || !has(self.scalingConfig)").message("scalingConfig is only supported for SQS sources (streams scale with their shards)").field_path(".scalingConfig").reason(Reason::FieldValueForbidden),
)]
pub struct EventSourceMappingSpec {
    /// Where records come from: exactly one of `sqs`, `kinesis`, `dynamodbStreams`.
    /// Immutable: create a new mapping to read another source.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable; create a new mapping to read another source"))]
    pub source: Source,

    /// The HTTP service called with each batch.
    pub target: Target,

    /// When false the pollers stop; checkpoints and queue contents are kept. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Maximum records per batch (1..10000). Default 10 for SQS, 100 for streams; FIFO queues at
    /// most 10; an SQS value above 10 needs `maximumBatchingWindowInSeconds` >= 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: Option<u32>,

    /// Seconds to gather records before calling the target (0..300). Default 0: call as soon as
    /// records arrive. Not supported for FIFO queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 300))]
    pub maximum_batching_window_in_seconds: Option<u32>,

    /// Where a stream starts reading when no checkpoint exists: LATEST, TRIM_HORIZON, or
    /// AT_TIMESTAMP (Kinesis only). Required for streams, not allowed for SQS. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("startingPosition is immutable"))]
    pub starting_position: Option<StartingPosition>,

    /// RFC 3339 time to start from with AT_TIMESTAMP; not in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_position_timestamp: Option<Time>,

    /// Streams: batches of one shard in flight at once (1..10). Records with the same partition
    /// key (Kinesis) or item key (DynamoDB) stay in order. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub parallelization_factor: Option<u32>,

    /// Streams: retries of a failed batch before it is discarded to the on-failure destination
    /// (-1 = retry until the records expire (default), 0..10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 10000))]
    pub maximum_retry_attempts: Option<i32>,

    /// Streams: records older than this are discarded instead of sent (-1 = never (default), or
    /// 60..604800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 604800))]
    #[x_kube(validation = Rule::new("self == -1 || self >= 60").message("maximumRecordAgeInSeconds must be -1 or between 60 and 604800"))]
    pub maximum_record_age_in_seconds: Option<i32>,

    /// Streams: split a failed batch in two and retry each half. Splits do not count against
    /// `maximumRetryAttempts`. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bisect_batch_on_target_error: Option<bool>,

    /// Response types the target may use. `ReportBatchItemFailures` lets a 2xx answer list the
    /// records that failed: `{"batchItemFailures":[{"itemIdentifier":"..."}]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub target_response_types: Vec<TargetResponseType>,

    /// Where a record of a discarded batch is described (streams: after retries or record age
    /// run out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_config: Option<DestinationConfig>,

    /// Only records matching one of these patterns are sent; others are dropped (SQS: deleted;
    /// streams: checkpointed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<FilterCriteria>,

    /// Streams: seconds of a tumbling window (0..900; default 0: off). The target gets the
    /// window and the state it returned last for the shard with every batch, answers
    /// `{"state": {...}}`, and gets a last call with `isFinalInvokeForWindow: true` when the
    /// window closes. Not with `bisectBatchOnTargetError`, nor a `parallelizationFactor` above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 900))]
    pub tumbling_window_in_seconds: Option<u32>,

    /// SQS: limits on how far the pollers scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_config: Option<ScalingConfig>,

    /// SQS: provisioned mode, a floor and a ceiling on the concurrent batches (pollers) the
    /// standard-queue ramp and FIFO group scaling may choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_poller_config: Option<ProvisionedPollerConfig>,

    /// Settings of the poller workload (Deployment) that runs this mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poller: Option<PollerSettings>,
}

fn default_true() -> bool {
    true
}

/// The event source: set exactly one field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.sqs), has(self.kinesis), has(self.dynamodbStreams)].filter(x, x).size() == 1").message("exactly one of source.sqs, source.kinesis, source.dynamodbStreams must be set"))]
pub struct Source {
    /// An SQS standard or FIFO queue (FIFO when the URL ends in `.fifo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsSource>,
    /// A Kinesis data stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinesis: Option<KinesisSource>,
    /// A DynamoDB stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb_streams: Option<DynamoDbStreamsSource>,
}

/// An SQS queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsSource {
    /// Queue URL, e.g. `https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("queueUrl must be an http(s) URL"))]
    pub queue_url: String,
    /// AWS connection.
    #[serde(flatten)]
    pub aws: AwsConnection,
}

/// A Kinesis data stream, by ARN or by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.streamArn) != has(self.streamName)").message("exactly one of streamArn, streamName must be set"))]
pub struct KinesisSource {
    /// Stream ARN, `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('arn:')").message("streamArn must be an ARN (arn:aws:kinesis:...)"))]
    pub stream_arn: Option<String>,
    /// Stream name in the connection's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub stream_name: Option<String>,
    /// AWS connection.
    #[serde(flatten)]
    pub aws: AwsConnection,
}

/// A DynamoDB stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDbStreamsSource {
    /// Stream ARN, `arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('arn:')").message("streamArn must be an ARN (arn:aws:dynamodb:...)"))]
    pub stream_arn: String,
    /// AWS connection.
    #[serde(flatten)]
    pub aws: AwsConnection,
}

/// How to reach AWS: region, optional endpoint override, optional credentials Secret. Without a
/// Secret the default AWS chain is used (env, web identity / IRSA, EKS pod identity).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwsConnection {
    /// AWS region, e.g. `us-east-1`. Default: from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// Endpoint override, e.g. a local emulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpointUrl must be an http(s) URL"))]
    pub endpoint_url: Option<String>,
    /// A Secret in the mapping's namespace holding static credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

/// A Secret with AWS credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name (same namespace as the mapping).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id. Default `AWS_ACCESS_KEY_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_key: Option<String>,
    /// Key holding the secret access key. Default `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_key: Option<String>,
    /// Key holding an optional session token. Default `AWS_SESSION_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

/// An HTTP endpoint: an in-cluster Service or a URL (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.service) != has(self.url)").message("exactly one of service, url must be set"))]
pub struct HttpEndpoint {
    /// A Service, called as `http://NAME.NAMESPACE.svc:PORT/PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReference>,
    /// A full http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must be an http(s) URL"))]
    pub url: Option<String>,
}

/// The target called with each batch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Where to POST batches.
    #[serde(flatten)]
    pub endpoint: HttpEndpoint,
    /// Per-call timeout in seconds (1..900). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 900))]
    pub timeout_seconds: Option<u32>,
}

impl Target {
    /// `timeoutSeconds`, or its default.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.timeout_seconds
                .unwrap_or(DEFAULT_TARGET_TIMEOUT_SECONDS),
        ))
    }
}

/// A Service in the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    /// Service name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Namespace of the Service. Default: the mapping's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Service port (1..65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Request path. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with /"))]
    pub path: Option<String>,
}

/// Where reading starts when a shard has no checkpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    /// Only records added after the mapping starts.
    Latest,
    /// The oldest record still in the shard.
    TrimHorizon,
    /// The first record at or after `startingPositionTimestamp` (Kinesis only).
    AtTimestamp,
}

/// Optional behaviours of the target's answer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetResponseType {
    /// A 2xx answer may list failed records in `batchItemFailures`.
    ReportBatchItemFailures,
}

/// Destinations for records the mapping gives up on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationConfig {
    /// Receives an invocation record for each discarded batch.
    pub on_failure: OnFailureDestination,
}

/// An SQS queue, an SNS topic, an S3 bucket or an HTTP endpoint (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.sqs) ? 1 : 0) + (has(self.sns) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.http) ? 1 : 0) == 1").message("exactly one of onFailure.sqs, onFailure.sns, onFailure.s3, onFailure.http must be set"))]
pub struct OnFailureDestination {
    /// An SQS queue that receives the invocation records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsSource>,
    /// An SNS topic that receives each invocation record as a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsDestination>,
    /// An S3 bucket that receives one object per discarded batch: the invocation record with the
    /// records themselves under `payload`, so the batch can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// An HTTP endpoint that receives the invocation records by POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEndpoint>,
}

/// An SNS topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnsDestination {
    /// Topic ARN, e.g. `arn:aws:sns:us-east-1:123456789012:failures`.
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\\\\.fifo)?$')").message("topicArn must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"))]
    pub topic_arn: String,
    /// AWS connection.
    #[serde(flatten)]
    pub aws: AwsConnection,
}

/// An S3 bucket, with an optional key prefix.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Bucket ARN, e.g. `arn:aws:s3:::failed-batches`.
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("bucketArn must be an S3 bucket ARN (arn:aws:s3:::BUCKET)"))]
    pub bucket_arn: String,
    /// Put before each object key (`aws/lambda/MAPPING-UID/SHARD/YYYY/MM/DD/...`) as given:
    /// end it with `/` for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// AWS connection.
    #[serde(flatten)]
    pub aws: AwsConnection,
}

impl S3Destination {
    /// The bucket's name, from its ARN.
    pub fn bucket(&self) -> &str {
        self.bucket_arn
            .rsplit_once(":::")
            .map_or(self.bucket_arn.as_str(), |(_, bucket)| bucket)
    }
}

/// EventBridge-style filter patterns, ORed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilterCriteria {
    /// Up to 5 filters; a record is sent when any of them matches.
    #[schemars(length(max = 5))]
    pub filters: Vec<Filter>,
}

/// One filter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// A JSON pattern, e.g. `{"body":{"type":["order"]}}`.
    #[schemars(length(min = 2, max = 4096))]
    pub pattern: String,
}

/// Scaling limits for SQS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingConfig {
    /// Most batches in flight at once across all replicas (2..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000))]
    pub maximum_concurrency: Option<u32>,
}

/// Lambda's provisioned mode for SQS: the pollers kept ready and the most the mapping scales
/// to. A poller here is one batch in flight (a unit of `status.scaling.concurrency`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minimumPollers) || !has(self.maximumPollers) || self.minimumPollers <= self.maximumPollers").message("minimumPollers must not be above maximumPollers").field_path(".minimumPollers"))]
pub struct ProvisionedPollerConfig {
    /// Concurrent batches kept even when the queue is empty (2..10000). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 10000))]
    pub minimum_pollers: Option<u32>,
    /// Most concurrent batches (2..10000); above the operator's own maximum if set so. Default
    /// the operator's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 10000))]
    pub maximum_pollers: Option<u32>,
}

/// Lambda's default `MinimumPollers`.
pub const DEFAULT_MINIMUM_POLLERS: u32 = 2;

/// The floor and ceiling a provisioned mapping's scaling used.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollerBounds {
    pub minimum: u32,
    pub maximum: u32,
}

/// The poller workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PollerSettings {
    /// Concurrent batches one replica runs (1..100). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub batches_per_replica: Option<u32>,
    /// Container resources. Default: the operator's configured poller resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Poller image. Default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// ServiceAccount the pollers run as (e.g. one annotated for IRSA). Default: one the operator
    /// creates for this mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Node selector for the poller pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for the poller pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Lifecycle states, as Lambda shows them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Creating,
    Enabling,
    Enabled,
    Disabling,
    Disabled,
    Updating,
    Deleting,
}

/// Which kind of source a mapping reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    #[serde(rename = "SQS")]
    Sqs,
    #[serde(rename = "SQS-FIFO")]
    SqsFifo,
    Kinesis,
    DynamoDBStreams,
}

/// Observed state of a mapping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventSourceMappingStatus {
    /// Lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Why the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_transition_reason: Option<String>,
    /// Outcome of the latest processing: "OK", "No records processed" or "PROBLEM: ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_processing_result: Option<String>,
    /// The source kind, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<SourceKind>,
    /// Desired poller replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Poller replicas that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How the controller sized the pollers, and from which signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// Ready (from the controller) and source checks such as QueueVisibilityTimeout (from the
    /// pollers). A map keyed by type, so each writer owns its own conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The controller's scaling decision (SPEC §8) and what it remembers between evaluations, so
/// that a restarted controller continues where it was.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Concurrent batches the mapping runs, across all its replicas.
    pub concurrency: u32,
    /// Poller replicas that concurrency needs (0 while disabled).
    pub desired_replicas: i32,
    /// What the source looked like at the last evaluation.
    #[serde(default)]
    pub signals: ScalingSignals,
    /// When the concurrency last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the concurrency last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// Standard queues, while messages wait: the time up to which the ramp has added
    /// concurrency; growth since then is still owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_time: Option<MicroTime>,
    /// Since when the source has needed less than `concurrency`; after the scale-down window
    /// the concurrency drops to `scaleDownTo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_since: Option<Time>,
    /// The most the source needed since `scaleDownSince`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_to: Option<u32>,
    /// Why the signals could not be read at the last evaluation (the previous decision stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_error: Option<String>,
    /// With `provisionedPollerConfig`: the floor and ceiling the decision kept to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_pollers: Option<PollerBounds>,
}

/// The source signals a scaling decision used; each source fills its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSignals {
    /// Streams: open shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_shards: Option<u32>,
    /// Streams: shards that can be read now (not read to their end, parents done), closed
    /// parents still draining included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readable_shards: Option<u32>,
    /// FIFO queues: message groups the pollers saw messages of in the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_message_groups: Option<u32>,
    /// Queues: ApproximateNumberOfMessages (waiting to be received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_messages: Option<u64>,
    /// Queues: ApproximateNumberOfMessagesNotVisible (received, not yet deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_messages: Option<u64>,
    /// Queues: receive loops of all pollers that sent a batch in the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_batches: Option<u32>,
}

/// What is wrong with `spec.source` when [`EventSourceMappingSpec::source_kind`] is `None`.
pub const ONE_SOURCE: &str = "exactly one of sqs, kinesis, dynamodbStreams must be set";

impl EventSourceMappingSpec {
    /// The kind of source, from the one source field that is set.
    pub fn source_kind(&self) -> Option<SourceKind> {
        let source = &self.source;
        match (&source.sqs, &source.kinesis, &source.dynamodb_streams) {
            (Some(sqs), None, None) if sqs.queue_url.ends_with(".fifo") => {
                Some(SourceKind::SqsFifo)
            }
            (Some(_), None, None) => Some(SourceKind::Sqs),
            (None, Some(_), None) => Some(SourceKind::Kinesis),
            (None, None, Some(_)) => Some(SourceKind::DynamoDBStreams),
            _ => None,
        }
    }

    /// Batch size with Lambda's source-dependent default.
    pub fn effective_batch_size(&self) -> u32 {
        self.batch_size.unwrap_or(if self.source.sqs.is_some() {
            DEFAULT_SQS_BATCH_SIZE
        } else {
            DEFAULT_STREAM_BATCH_SIZE
        })
    }

    /// `maximumBatchingWindowInSeconds`, 0 when unset.
    pub fn batching_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.maximum_batching_window_in_seconds.unwrap_or(0),
        ))
    }

    /// Concurrent batches per shard (`parallelizationFactor`), 1 when unset.
    /// `scalingConfig.maximumConcurrency`, when set.
    pub fn maximum_concurrency(&self) -> Option<u32> {
        self.scaling_config.as_ref()?.maximum_concurrency
    }

    pub fn effective_parallelization_factor(&self) -> u32 {
        self.parallelization_factor.unwrap_or(1).max(1)
    }

    pub fn batches_per_replica(&self) -> u32 {
        self.poller
            .as_ref()
            .and_then(|p| p.batches_per_replica)
            .unwrap_or(DEFAULT_BATCHES_PER_REPLICA)
    }

    pub fn reports_batch_item_failures(&self) -> bool {
        self.target_response_types
            .contains(&TargetResponseType::ReportBatchItemFailures)
    }
}

impl SourceKind {
    pub fn is_stream(self) -> bool {
        matches!(self, SourceKind::Kinesis | SourceKind::DynamoDBStreams)
    }

    /// The record key that holds the source's data, as filters see it.
    pub fn data_key(self) -> &'static str {
        match self {
            SourceKind::Sqs | SourceKind::SqsFifo => "body",
            SourceKind::Kinesis => "data",
            SourceKind::DynamoDBStreams => "dynamodb",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Sqs => "SQS",
            SourceKind::SqsFifo => "SQS FIFO",
            SourceKind::Kinesis => "Kinesis",
            SourceKind::DynamoDBStreams => "DynamoDB Streams",
        })
    }
}

impl EventSourceMapping {
    /// Receive loops of one poller replica in deployments mode: its share of the mapping's
    /// concurrency (status), so that the sum over the replicas never exceeds it: SPEC §8's
    /// `scalingConfig.maximumConcurrency` caps the sum over all replicas, not each one. The share
    /// divides by the larger of the desired and the ready replicas, so while a scale-up starts pods
    /// the running ones already hold less; rounded down, at most `poller.batchesPerReplica`, at
    /// least 1. Without a decision in status (a poller started by hand, or before the controller's
    /// first decision) a replica runs `batchesPerReplica` loops, at most `maximumConcurrency`.
    pub fn replica_loops(&self) -> usize {
        let per_replica = self.spec.batches_per_replica().max(1);
        let status = self.status.as_ref();
        let Some(scaling) = status.and_then(|s| s.scaling.as_ref()) else {
            return self
                .spec
                .maximum_concurrency()
                .map_or(per_replica, |cap| cap.clamp(1, per_replica)) as usize;
        };
        let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
        let replicas = scaling.desired_replicas.max(ready).max(1).unsigned_abs();
        (scaling.concurrency / replicas).clamp(1, per_replica) as usize
    }
}
