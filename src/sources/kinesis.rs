//! Kinesis Data Streams as a [`ShardedStream`] (aws-sdk-kinesis).

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{EncryptionType, Record, ShardIteratorType};
use aws_smithy_types::DateTime;
use aws_types::SdkConfig;
use k8s_openapi::jiff::Unit;

use super::aws::call_timeouts;
use super::sharded::{
    KinesisEncryption, KinesisRecord, RecordPage, RecordPayload, Shard, ShardPosition,
    ShardedStream, StreamError, StreamRecord, classify, timestamp,
};
use crate::api::KinesisSource;
use crate::error::Error;

/// GetRecords returns at most this many records per call.
const MAX_RECORDS_PER_CALL: u32 = 10_000;
/// ListShards returns at most this many shards per page.
const MAX_SHARDS_PER_PAGE: i32 = 10_000;

/// How a mapping names its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KinesisStreamId {
    Arn(String),
    Name(String),
}

impl KinesisStreamId {
    /// The stream a mapping's `source.kinesis` names; the error leaves naming that field to
    /// the caller.
    pub fn of(source: &KinesisSource) -> Result<Self, Error> {
        match (&source.stream_arn, &source.stream_name) {
            (Some(arn), None) => Ok(KinesisStreamId::Arn(arn.clone())),
            (None, Some(name)) => Ok(KinesisStreamId::Name(name.clone())),
            _ => Err(Error::Config(
                "exactly one of streamArn, streamName must be set".into(),
            )),
        }
    }
}

/// A Kinesis data stream read through the Kinesis API.
#[derive(Clone, Debug)]
pub struct KinesisStream {
    client: Client,
    stream: KinesisStreamId,
}

/// Sets the request's stream by ARN or by name (every Kinesis request builder has both setters).
macro_rules! for_stream {
    ($request:expr, $stream:expr) => {
        match $stream {
            KinesisStreamId::Arn(arn) => $request.stream_arn(arn),
            KinesisStreamId::Name(name) => $request.stream_name(name),
        }
    };
}

impl KinesisStream {
    pub fn new(sdk: &SdkConfig, stream: KinesisStreamId) -> Self {
        KinesisStream {
            client: Client::from_conf(
                aws_sdk_kinesis::config::Builder::from(sdk)
                    .timeout_config(call_timeouts(Duration::ZERO))
                    .build(),
            ),
            stream,
        }
    }
}

impl ShardedStream for KinesisStream {
    async fn stream_arn(&self) -> Result<String, StreamError> {
        if let KinesisStreamId::Arn(arn) = &self.stream {
            return Ok(arn.clone());
        }
        let summary = for_stream!(self.client.describe_stream_summary(), &self.stream)
            .send()
            .await
            .map_err(classify)?;
        summary
            .stream_description_summary
            .map(|summary| summary.stream_arn)
            .ok_or_else(|| {
                StreamError::Other("DescribeStreamSummary answered without a summary".into())
            })
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // A page token already names the stream: sending both is an error.
            let request = self.client.list_shards().max_results(MAX_SHARDS_PER_PAGE);
            let request = match next_token.take() {
                Some(token) => request.next_token(token),
                None => for_stream!(request, &self.stream),
            };
            let page = request.send().await.map_err(classify)?;
            shards.extend(page.shards.unwrap_or_default().into_iter().map(|shard| {
                Shard {
                    open: shard
                        .sequence_number_range
                        .is_none_or(|range| range.ending_sequence_number.is_none()),
                    parent_shard_ids: shard
                        .parent_shard_id
                        .into_iter()
                        .chain(shard.adjacent_parent_shard_id)
                        .collect(),
                    shard_id: shard.shard_id,
                }
            }));
            match page.next_token {
                Some(token) => next_token = Some(token),
                None => return Ok(shards),
            }
        }
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        position: &ShardPosition,
    ) -> Result<String, StreamError> {
        let request =
            for_stream!(self.client.get_shard_iterator(), &self.stream).shard_id(shard_id);
        let request = match position {
            ShardPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            ShardPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            ShardPosition::AtTimestamp(at) => {
                let at = DateTime::from_nanos(at.as_nanosecond()).map_err(|error| {
                    StreamError::Other(format!("AT_TIMESTAMP {at} is out of range: {error}"))
                })?;
                request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(at)
            }
            ShardPosition::AtSequenceNumber(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
            ShardPosition::AfterSequenceNumber(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
        };
        let answer = request.send().await.map_err(classify)?;
        answer.shard_iterator.ok_or_else(|| {
            StreamError::Other(format!(
                "GetShardIterator answered without an iterator for shard {shard_id}"
            ))
        })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordPage, StreamError> {
        let limit = limit.clamp(1, MAX_RECORDS_PER_CALL) as i32;
        let answer = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(classify)?;
        Ok(RecordPage {
            records: answer.records.into_iter().map(stream_record).collect(),
            next_iterator: answer.next_shard_iterator,
            millis_behind_latest: answer.millis_behind_latest,
        })
    }
}

/// The engine's form of an SDK record (GetRecords).
pub fn stream_record(record: Record) -> StreamRecord {
    StreamRecord {
        // Kinesis sends milliseconds as fractional epoch seconds; the SDK's float parse leaves
        // nanosecond noise (…21.983999967) that would put the time before the record's.
        approximate_arrival: record
            .approximate_arrival_timestamp
            .as_ref()
            .and_then(timestamp)
            .and_then(|arrival| arrival.round(Unit::Millisecond).ok()),
        sequence_number: record.sequence_number,
        payload: RecordPayload::Kinesis(KinesisRecord {
            partition_key: record.partition_key.unwrap_or_default(),
            data: record.data.into_inner(),
            encryption: match record.encryption_type {
                Some(EncryptionType::Kms) => KinesisEncryption::Kms,
                _ => KinesisEncryption::None,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn call_attempts_time_out_sqs_receives_after_their_wait_stream_calls_sooner() {
        let connection = crate::api::AwsConnection {
            region: Some("us-east-1".into()),
            endpoint_url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let sdk = super::super::aws::AwsBase::load()
            .await
            .connection(&connection);
        let timeouts = sdk.timeout_config().expect("timeouts");
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(crate::sources::sqs::MAX_WAIT + super::super::aws::CALL_TIMEOUT),
            "SQS receives may wait 20 s"
        );
        let stream = KinesisStream::new(&sdk, KinesisStreamId::Name("orders".into()));
        let timeouts = stream.client.config().timeout_config().expect("timeouts");
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(super::super::aws::CALL_TIMEOUT)
        );
        assert!(timeouts.connect_timeout().is_some());
    }

    #[test]
    fn stream_id_comes_from_exactly_one_of_arn_and_name() {
        let source = |arn: Option<&str>, name: Option<&str>| KinesisSource {
            stream_arn: arn.map(Into::into),
            stream_name: name.map(Into::into),
            aws: Default::default(),
        };
        assert_eq!(
            KinesisStreamId::of(&source(Some("arn:aws:kinesis:us-east-1:1:stream/s"), None))
                .unwrap(),
            KinesisStreamId::Arn("arn:aws:kinesis:us-east-1:1:stream/s".into())
        );
        assert_eq!(
            KinesisStreamId::of(&source(None, Some("s"))).unwrap(),
            KinesisStreamId::Name("s".into())
        );
        let error = KinesisStreamId::of(&source(None, None)).unwrap_err();
        assert!(error.to_string().contains("streamArn"), "{error}");
    }

    #[test]
    fn records_keep_key_data_arrival_and_encryption() {
        let record = Record::builder()
            .sequence_number("4960")
            .partition_key("customer-7")
            .data(aws_smithy_types::Blob::new(b"{\"a\":1}".to_vec()))
            .approximate_arrival_timestamp(DateTime::from_secs_f64(1_700_000_000.984))
            .encryption_type(EncryptionType::Kms)
            .build()
            .unwrap();
        let record = stream_record(record);
        assert_eq!(record.sequence_number, "4960");
        assert_eq!(record.ordering_key(), "customer-7");
        assert_eq!(
            record.approximate_arrival.unwrap().as_millisecond(),
            1_700_000_000_984
        );
        let RecordPayload::Kinesis(kinesis) = record.payload else {
            panic!("not a Kinesis record");
        };
        assert_eq!(kinesis.data, b"{\"a\":1}");
        assert_eq!(kinesis.encryption.as_str(), "KMS");
    }
}
