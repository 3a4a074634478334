//! Reads the scaling signals of a mapping (SPEC §8): queue depth from SQS, shards from the
//! stream, and what the pollers report through their presence Leases
//! ([`crate::poller::report`]). Behind [`SignalReader`] so the reconciler can run without AWS.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use super::in_process::InProcessPollers;
use super::scaling::Signals;
use crate::api::{AwsConnection, EventSourceMapping, SourceKind};
use crate::poller::checkpoint::{KubeShardLeases, ShardLeaseStore, eligible_shards};
use crate::poller::report::read_activity;
use crate::sources::aws::{AwsBase, sdk_config};
use crate::sources::dynamodb_streams::DynamoDbStream;
use crate::sources::kinesis::{KinesisStream, KinesisStreamId};
use crate::sources::sharded::ShardedStream;
use crate::sources::sqs::SqsQueue;

/// Longest a read may take; the previous decision stays when it does not finish.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Lease holder name the controller reads shard leases as (it never writes them).
const READER: &str = "esm-operator-controller";

/// Signals, or what could not be read.
pub type Reading = Result<Signals, String>;

/// Reads a mapping's signals; the error says what could not be read.
pub trait SignalReader: Send + Sync {
    fn read<'a>(&'a self, mapping: &'a EventSourceMapping) -> BoxFuture<'a, Reading>;
}

/// Most characters of a signal error kept for status.
const MAX_ERROR_CHARS: usize = 300;

/// An error for status: without the SDK's debug dump (`message (DispatchFailure(...))`, which
/// carries response dates and would change the status at every read), bounded.
fn concise(error: &str) -> String {
    let message = error
        .match_indices(" (")
        .find(|(at, _)| {
            error[at + 2..].starts_with(|c: char| c.is_ascii_uppercase()) && error.ends_with(')')
        })
        .map_or(error, |(at, _)| &error[..at]);
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message.to_owned(),
    }
}

/// Signals from AWS (with the mapping's connection) and from the Kubernetes API.
pub struct SourceSignals {
    pub client: Client,
    pub aws: AwsBase,
    pub activity: ActivityReader,
}

/// Where the queue pollers' activity comes from: their replicas' report Leases, or, when the
/// controller runs them itself, the pollers' own counters (no Lease written or listed: a list
/// per mapping per scaling interval is most of an idle in-process mapping's API traffic).
pub enum ActivityReader {
    Leases,
    InProcess(Arc<InProcessPollers>),
}

impl SignalReader for SourceSignals {
    fn read<'a>(&'a self, mapping: &'a EventSourceMapping) -> BoxFuture<'a, Reading> {
        Box::pin(async move {
            match tokio::time::timeout(READ_TIMEOUT, self.read_now(mapping)).await {
                Ok(result) => result.map_err(|error| concise(&error)),
                Err(_) => Err(format!(
                    "reading the signals took over {}s",
                    READ_TIMEOUT.as_secs()
                )),
            }
        })
    }
}

impl SourceSignals {
    async fn read_now(&self, mapping: &EventSourceMapping) -> Result<Signals, String> {
        let namespace = mapping.namespace().unwrap_or_default();
        let spec = &mapping.spec;
        let source = &spec.source;
        match spec.source_kind() {
            Some(kind @ (SourceKind::Sqs | SourceKind::SqsFifo)) => {
                let sqs = source.sqs.as_ref().expect("an SQS kind has source.sqs");
                let config = self.aws(&namespace, &sqs.aws, "spec.source.sqs").await?;
                let (_, attributes) = SqsQueue::connect(&config, &sqs.queue_url)
                    .await
                    .map_err(|e| e.to_string())?;
                let activity = match &self.activity {
                    ActivityReader::InProcess(pollers) => pollers.activity(mapping),
                    ActivityReader::Leases => {
                        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &namespace);
                        read_activity(&leases, mapping, Timestamp::now())
                            .await
                            .map_err(|e| format!("cannot read the pollers' reports: {e}"))?
                    }
                };
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                Ok(if kind == SourceKind::SqsFifo {
                    Signals::FifoQueue {
                        active_groups: count(activity.active_groups),
                        visible: attributes.visible_messages,
                        in_flight: attributes.in_flight_messages,
                    }
                } else {
                    Signals::StandardQueue {
                        visible: attributes.visible_messages,
                        in_flight: attributes.in_flight_messages,
                        busy_batches: count(activity.busy_loops),
                    }
                })
            }
            Some(SourceKind::Kinesis) => {
                let kinesis = source
                    .kinesis
                    .as_ref()
                    .expect("a Kinesis kind has source.kinesis");
                let config = self
                    .aws(&namespace, &kinesis.aws, "spec.source.kinesis")
                    .await?;
                let stream = KinesisStreamId::of(kinesis)
                    .map_err(|e| format!("spec.source.kinesis: {e}"))?;
                self.stream(mapping, &KinesisStream::new(&config, stream))
                    .await
            }
            Some(SourceKind::DynamoDBStreams) => {
                let dynamodb = source
                    .dynamodb_streams
                    .as_ref()
                    .expect("a DynamoDB Streams kind has source.dynamodbStreams");
                let config = self
                    .aws(&namespace, &dynamodb.aws, "spec.source.dynamodbStreams")
                    .await?;
                self.stream(mapping, &DynamoDbStream::new(&config, &dynamodb.stream_arn))
                    .await
            }
            None => Err(format!("spec.source: {}", crate::api::ONE_SOURCE)),
        }
    }

    /// The connection's SDK settings without retries: the next evaluation is the retry.
    async fn aws(
        &self,
        namespace: &str,
        connection: &AwsConnection,
        field: &str,
    ) -> Result<SdkConfig, String> {
        let config = sdk_config(&self.aws, &self.client, namespace, connection, field)
            .await
            .map_err(|e| e.to_string())?;
        Ok(config
            .into_builder()
            .retry_config(RetryConfig::disabled())
            .build())
    }

    /// Open shards from the stream; readable ones from it and the shard Leases' checkpoints.
    async fn stream(
        &self,
        mapping: &EventSourceMapping,
        stream: &impl ShardedStream,
    ) -> Result<Signals, String> {
        let shards = stream
            .list_shards()
            .await
            .map_err(|e| format!("cannot list the stream's shards: {e}"))?;
        let leases = KubeShardLeases::new(self.client.clone(), mapping, READER, Duration::ZERO)
            .map_err(|e| e.to_string())?
            .list()
            .await
            .map_err(|e| e.to_string())?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Signals::Stream {
            open_shards: count(shards.iter().filter(|s| s.open).count()),
            readable_shards: count(eligible_shards(&shards, &leases.shards).len()),
        })
    }
}

/// The last signals of each mapping, read at most once per interval: reconciliations caused by
/// the controller's own writes reuse them instead of calling AWS again.
pub struct SignalCache {
    reader: Box<dyn SignalReader>,
    interval: Duration,
    /// By mapping uid: when the signals were read, and what came back.
    last: Mutex<HashMap<String, (Instant, Reading)>>,
}

impl SignalCache {
    pub fn new(reader: Box<dyn SignalReader>, interval: Duration) -> Self {
        Self {
            reader,
            interval,
            last: Mutex::default(),
        }
    }

    /// The mapping's signals, read again when the last read is an interval old.
    pub async fn get(&self, mapping: &EventSourceMapping) -> Reading {
        let key = mapping.uid().unwrap_or_default();
        let fresh = |at: &Instant| at.elapsed() < self.interval;
        if let Some((_, cached)) = self
            .last
            .lock()
            .expect("signals lock")
            .get(&key)
            .filter(|(at, _)| fresh(at))
        {
            return cached.clone();
        }
        let read = self.reader.read(mapping).await;
        let mut last = self.last.lock().expect("signals lock");
        // Mappings deleted meanwhile are not read again: forget them after a while.
        last.retain(|_, (at, _)| at.elapsed() < self.interval * 10);
        last.insert(key, (Instant::now(), read.clone()));
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_the_sdk_debug_dump() {
        let error = "SQS GetQueueAttributes on http://q: dispatch failure: io error: Connection refused (DispatchFailure(DispatchFailure { date: \"Mon, 23 Nov 2026 01:48:31 GMT\" }))";
        assert_eq!(
            concise(error),
            "SQS GetQueueAttributes on http://q: dispatch failure: io error: Connection refused"
        );
        assert_eq!(
            concise("stream (clicks) not found"),
            "stream (clicks) not found"
        );
        assert_eq!(concise(&"x".repeat(1000)).len(), MAX_ERROR_CHARS + 3);
    }
}
