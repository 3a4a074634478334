//! The sharded-stream source: what the stream engine needs from Kinesis and DynamoDB Streams,
//! behind one narrow trait so the engine's logic can be driven without AWS.
//!
//! Records come out source-neutral: sequence number, arrival time and ordering key for the
//! engine, plus the source-specific fields the Lambda event JSON is built from.

use std::future::Future;

use aws_smithy_types::DateTime;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// A shard as the stream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub shard_id: String,
    /// Shards this one was split or merged from (Kinesis: parent and adjacent parent; DynamoDB:
    /// parent). A shard is read only after all of them are read to their end.
    pub parent_shard_ids: Vec<String>,
    /// False once the shard is closed (has an ending sequence number): it still holds records
    /// until its end is reached.
    pub open: bool,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardPosition {
    /// Only records added from now on.
    Latest,
    /// The oldest record still in the shard.
    TrimHorizon,
    /// The first record that arrived at or after this time (Kinesis only).
    AtTimestamp(Timestamp),
    /// The record with this sequence number.
    AtSequenceNumber(String),
    /// The record after this sequence number: resuming from a checkpoint.
    AfterSequenceNumber(String),
}

/// One GetRecords answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordPage {
    pub records: Vec<StreamRecord>,
    /// Where the next read continues; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
    /// How far the iterator is behind the newest record (Kinesis only).
    pub millis_behind_latest: Option<i64>,
}

/// A record of either stream, with what the engine needs at the top level.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub sequence_number: String,
    /// Kinesis: approximateArrivalTimestamp; DynamoDB: ApproximateCreationDateTime. Drives
    /// record age and iterator age.
    pub approximate_arrival: Option<Timestamp>,
    pub payload: RecordPayload,
}

/// The source-specific part of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordPayload {
    Kinesis(KinesisRecord),
    // Boxed: a DynamoDB record is several times the size of a Kinesis one.
    DynamoDb(Box<DynamoDbRecord>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisRecord {
    /// Empty when the producer gave none (streams with the AUTO record distribution).
    pub partition_key: String,
    pub data: Vec<u8>,
    pub encryption: KinesisEncryption,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KinesisEncryption {
    None,
    Kms,
}

impl KinesisEncryption {
    /// The value of Lambda's `encryptionType` field.
    pub fn as_str(self) -> &'static str {
        match self {
            KinesisEncryption::None => "NONE",
            KinesisEncryption::Kms => "KMS",
        }
    }
}

/// A DynamoDB stream record. Images are in DynamoDB JSON (`{"S": "..."}`), as Lambda sends them.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamoDbRecord {
    pub event_id: String,
    pub event_name: DynamoDbEventName,
    pub event_version: Option<String>,
    pub keys: Value,
    /// `keys` as compact JSON with sorted attribute names: the per-item ordering key.
    pub keys_text: String,
    pub new_image: Option<Value>,
    pub old_image: Option<Value>,
    pub size_bytes: Option<i64>,
    pub stream_view_type: Option<String>,
    /// Who made the change when it was not a user, e.g. TTL deletes by `dynamodb.amazonaws.com`.
    pub user_identity: Option<DynamoDbUserIdentity>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamoDbEventName {
    Insert,
    Modify,
    Remove,
}

impl DynamoDbEventName {
    pub fn as_str(self) -> &'static str {
        match self {
            DynamoDbEventName::Insert => "INSERT",
            DynamoDbEventName::Modify => "MODIFY",
            DynamoDbEventName::Remove => "REMOVE",
        }
    }
}

/// Who made a change (TTL deletions: the DynamoDB service), as Lambda's `userIdentity`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DynamoDbUserIdentity {
    #[serde(rename = "principalId")]
    pub principal_id: Option<String>,
    #[serde(rename = "type")]
    pub identity_type: Option<String>,
}

impl StreamRecord {
    /// Records with equal keys stay in order across parallelization lanes: the partition key
    /// (Kinesis) or the item's key attributes (DynamoDB).
    pub fn ordering_key(&self) -> &str {
        match &self.payload {
            RecordPayload::Kinesis(record) => &record.partition_key,
            RecordPayload::DynamoDb(record) => &record.keys_text,
        }
    }
}

/// Why a stream call failed, in the classes the engine reacts to differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The shard iterator is too old: get a new one from the checkpoint.
    #[error("shard iterator expired: {0}")]
    ExpiredIterator(String),
    /// Over the service's read budget: back off and retry the same call.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The stream or shard does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The requested position is past the retention period (DynamoDB
    /// TrimmedDataAccessException): the records there are gone.
    #[error("records trimmed: {0}")]
    Trimmed(String),
    /// Anything else: connection errors, timeouts, unexpected answers, malformed records.
    #[error("{0}")]
    Other(String),
}

impl StreamError {
    fn from_aws_code(code: Option<&str>, message: String) -> Self {
        match code {
            Some("ExpiredIteratorException") => StreamError::ExpiredIterator(message),
            Some(
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "ThrottlingException"
                | "KMSThrottlingException",
            ) => StreamError::Throttled(message),
            Some("ResourceNotFoundException") => StreamError::NotFound(message),
            Some("TrimmedDataAccessException") => StreamError::Trimmed(message),
            _ => StreamError::Other(message),
        }
    }

    /// Bounded label for error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StreamError::ExpiredIterator(_) => "expired_iterator",
            StreamError::Throttled(_) => "throttled",
            StreamError::NotFound(_) => "not_found",
            StreamError::Trimmed(_) => "trimmed",
            StreamError::Other(_) => "other",
        }
    }
}

/// A Kinesis data stream or a DynamoDB stream.
pub trait ShardedStream: Send + Sync {
    /// The stream's ARN, as Lambda events name it in `eventSourceARN`.
    fn stream_arn(&self) -> impl Future<Output = Result<String, StreamError>> + Send;

    /// Every shard the stream still has, open and closed, following all pages.
    fn list_shards(&self) -> impl Future<Output = Result<Vec<Shard>, StreamError>> + Send;

    /// An iterator reading `shard_id` from `position`.
    fn shard_iterator(
        &self,
        shard_id: &str,
        position: &ShardPosition,
    ) -> impl Future<Output = Result<String, StreamError>> + Send;

    /// Up to `limit` records from `iterator` (capped at the service's maximum).
    fn get_records(
        &self,
        iterator: &str,
        limit: u32,
    ) -> impl Future<Output = Result<RecordPage, StreamError>> + Send;
}

/// Classifies a failed AWS call (Kinesis and DynamoDB Streams name their exceptions alike).
pub mod memory;

pub(crate) fn classify<E: ProvideErrorMetadata + std::error::Error>(error: E) -> StreamError {
    StreamError::from_aws_code(error.code(), DisplayErrorContext(&error).to_string())
}

/// An AWS timestamp as a [`Timestamp`]; `None` outside jiff's range (years -9999..9999), which
/// no real record has.
pub(crate) fn timestamp(time: &DateTime) -> Option<Timestamp> {
    Timestamp::from_nanosecond(time.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_codes_map_to_the_classes_the_engine_handles() {
        let class = |code| StreamError::from_aws_code(code, String::new()).metric_label();
        assert_eq!(class(Some("ExpiredIteratorException")), "expired_iterator");
        assert_eq!(
            class(Some("ProvisionedThroughputExceededException")),
            "throttled"
        );
        assert_eq!(class(Some("LimitExceededException")), "throttled");
        assert_eq!(class(Some("ResourceNotFoundException")), "not_found");
        assert_eq!(class(Some("TrimmedDataAccessException")), "trimmed");
        assert_eq!(class(Some("InvalidArgumentException")), "other");
        assert_eq!(class(None), "other");
    }

    #[test]
    fn ordering_key_is_the_partition_key_or_the_item_keys() {
        let kinesis = StreamRecord {
            sequence_number: "1".into(),
            approximate_arrival: None,
            payload: RecordPayload::Kinesis(KinesisRecord {
                partition_key: "customer-7".into(),
                data: b"{}".to_vec(),
                encryption: KinesisEncryption::None,
            }),
        };
        assert_eq!(kinesis.ordering_key(), "customer-7");

        let dynamodb = StreamRecord {
            sequence_number: "2".into(),
            approximate_arrival: None,
            payload: RecordPayload::DynamoDb(Box::new(DynamoDbRecord {
                event_id: "e-2".into(),
                event_name: DynamoDbEventName::Modify,
                event_version: None,
                keys: serde_json::json!({"pk": {"S": "a"}, "sk": {"N": "1"}}),
                keys_text: r#"{"pk":{"S":"a"},"sk":{"N":"1"}}"#.into(),
                new_image: None,
                old_image: None,
                size_bytes: None,
                stream_view_type: None,
                user_identity: None,
            })),
        };
        assert_eq!(
            dynamodb.ordering_key(),
            r#"{"pk":{"S":"a"},"sk":{"N":"1"}}"#
        );
    }
}
