//! SQS queues: the narrow [`Queue`] trait the engine needs, and [`SqsQueue`], its aws-sdk-sqs
//! implementation.
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};

use crate::api::EventSourceMappingSpec;
use crate::event::{SQS_EVENT_SOURCE, SqsMessageAttribute, SqsRecord, base64};

/// Most messages one ReceiveMessage returns and one batch request takes.
pub const MAX_MESSAGES_PER_CALL: usize = 10;
/// Longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A message to delete or hand back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt<'a> {
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
}

impl<'a> From<&'a SqsRecord> for Receipt<'a> {
    fn from(record: &'a SqsRecord) -> Self {
        Receipt {
            message_id: &record.message_id,
            receipt_handle: &record.receipt_handle,
        }
    }
}

/// One entry of a batch request that SQS refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryFailure {
    /// Position of the entry in the request.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// The request was wrong (e.g. an expired receipt handle): repeating it cannot help.
    pub sender_fault: bool,
}

/// What the engine and the controller read of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueAttributes {
    pub arn: String,
    pub visibility_timeout: Duration,
    /// ApproximateNumberOfMessages: waiting to be received.
    pub visible_messages: u64,
    /// ApproximateNumberOfMessagesNotVisible: received, not yet deleted.
    pub in_flight_messages: u64,
}

/// A call to SQS that failed, with the operation and queue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SQS {operation} on {queue_url}: {message}")]
pub struct SqsError {
    pub operation: &'static str,
    pub queue_url: String,
    pub message: String,
}

/// The operations a queue poller uses.
pub trait Queue: Send + Sync + 'static {
    /// Up to `max` (at most 10) messages, waiting up to `wait` (at most 20 s) for the first.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<SqsRecord>, SqsError>> + Send;

    /// Deletes up to 10 messages; returns the entries that failed.
    fn delete(
        &self,
        receipts: &[Receipt<'_>],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, SqsError>> + Send;

    /// Makes up to 10 messages visible again at once (visibility timeout 0); returns the
    /// entries that failed.
    fn release(
        &self,
        receipts: &[Receipt<'_>],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, SqsError>> + Send;

    fn attributes(&self) -> impl Future<Output = Result<QueueAttributes, SqsError>> + Send;
}

/// An SQS queue through aws-sdk-sqs.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
    arn: Arc<str>,
    region: Arc<str>,
}

impl SqsQueue {
    /// Opens the queue at `url`, checking that it exists (GetQueueAttributes) and learning its
    /// ARN for the records' `eventSourceARN`.
    pub async fn connect(
        config: &SdkConfig,
        url: &str,
    ) -> Result<(Self, QueueAttributes), SqsError> {
        let client = Client::new(config);
        let attributes = fetch_attributes(&client, url).await?;
        // arn:aws:sqs:REGION:ACCOUNT:NAME
        let region = attributes
            .arn
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or_else(|| config.region().map(|r| r.to_string()))
            .unwrap_or_default();
        let queue = Self {
            client,
            url: url.to_owned(),
            arn: attributes.arn.as_str().into(),
            region: region.into(),
        };
        Ok((queue, attributes))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn error<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> SqsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        sdk_error(operation, &self.url, err)
    }

    fn record(&self, message: Message) -> Option<SqsRecord> {
        sqs_record(message, &self.arn, &self.region)
            .inspect_err(|unnamed| {
                // Without both it can be neither named nor deleted; SQS will hand it out again.
                tracing::warn!(queue = %self.url, message_id = ?unnamed.message_id, "SQS returned a message without id or receipt handle; skipped");
            })
            .ok()
    }
}

/// A message SQS returned without its id or its receipt handle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SQS message {message_id:?} has no id or no receipt handle")]
pub struct UnnamedMessage {
    pub message_id: Option<String>,
}

/// The Lambda-shaped record of a received message (ReceiveMessage), for a queue of ARN
/// `event_source_arn` in `aws_region`.
pub fn sqs_record(
    message: Message,
    event_source_arn: &Arc<str>,
    aws_region: &Arc<str>,
) -> Result<SqsRecord, UnnamedMessage> {
    let Message {
        message_id,
        receipt_handle,
        md5_of_body,
        body,
        attributes,
        md5_of_message_attributes,
        message_attributes,
        ..
    } = message;
    let (message_id, receipt_handle) = match (message_id, receipt_handle) {
        (Some(id), Some(handle)) => (id, handle),
        (message_id, _) => return Err(UnnamedMessage { message_id }),
    };
    Ok(SqsRecord {
        message_id,
        receipt_handle,
        body: body.unwrap_or_default(),
        attributes: attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.as_str().to_owned(), value))
            .collect(),
        message_attributes: message_attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, message_attribute(value)))
            .collect::<BTreeMap<_, _>>(),
        md5_of_body: md5_of_body.unwrap_or_default(),
        md5_of_message_attributes,
        event_source: SQS_EVENT_SOURCE,
        event_source_arn: event_source_arn.clone(),
        aws_region: aws_region.clone(),
    })
}

fn message_attribute(value: MessageAttributeValue) -> SqsMessageAttribute {
    SqsMessageAttribute {
        string_value: value.string_value,
        binary_value: value.binary_value.map(|blob| base64(blob.as_ref())),
        string_list_values: value.string_list_values.unwrap_or_default(),
        binary_list_values: value
            .binary_list_values
            .unwrap_or_default()
            .iter()
            .map(|blob| base64(blob.as_ref()))
            .collect(),
        data_type: value.data_type,
    }
}

fn sdk_error<E, R>(operation: &'static str, queue_url: &str, err: SdkError<E, R>) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = match err.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => DisplayErrorContext(&err).to_string(),
        },
        None => DisplayErrorContext(&err).to_string(),
    };
    SqsError {
        operation,
        queue_url: queue_url.to_owned(),
        message,
    }
}

async fn fetch_attributes(client: &Client, url: &str) -> Result<QueueAttributes, SqsError> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|err| sdk_error("GetQueueAttributes", url, err))?;
    let attributes = output.attributes.unwrap_or_default();
    let number = |name: QueueAttributeName| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(QueueAttributes {
        arn: attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default(),
        visibility_timeout: Duration::from_secs(number(QueueAttributeName::VisibilityTimeout)),
        visible_messages: number(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight_messages: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    })
}

/// Entry ids of batch requests are positions in the request (message ids need not be valid
/// entry ids, and one message may be in a request twice with two receipt handles).
fn failures(
    receipts: &[Receipt<'_>],
    failed: Vec<aws_sdk_sqs::types::BatchResultErrorEntry>,
) -> Vec<EntryFailure> {
    failed
        .into_iter()
        .filter_map(|entry| {
            let index = entry.id.parse::<usize>().ok().filter(|i| *i < receipts.len());
            if index.is_none() {
                tracing::warn!(id = %entry.id, code = %entry.code, "SQS reported a failure for an entry it was not sent");
            }
            Some(EntryFailure {
                index: index?,
                code: entry.code,
                message: entry.message.unwrap_or_default(),
                sender_fault: entry.sender_fault,
            })
        })
        .collect()
}

impl Queue for SqsQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsRecord>, SqsError> {
        let max = max.clamp(1, MAX_MESSAGES_PER_CALL) as i32;
        let wait = wait.min(MAX_WAIT).as_secs() as i32;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| self.error("ReceiveMessage", err))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| self.record(message))
            .collect())
    }

    async fn delete(&self, receipts: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.receipt_handle)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| self.error("DeleteMessageBatch", err))?;
        Ok(failures(receipts, output.failed))
    }

    async fn release(&self, receipts: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.receipt_handle)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| self.error("ChangeMessageVisibilityBatch", err))?;
        Ok(failures(receipts, output.failed))
    }

    async fn attributes(&self) -> Result<QueueAttributes, SqsError> {
        fetch_attributes(&self.client, &self.url).await
    }
}

/// The queue's visibility timeout is below what SPEC §4.3 advises (Lambda's advice): 6 x the
/// target timeout + the batching window. A message still being processed may otherwise
/// become visible and be delivered again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the queue's visibility timeout is {visibility_timeout_seconds}s, below the advised {advised_seconds}s (6 x target timeout {target_timeout_seconds}s + batching window {window_seconds}s): messages still being processed may be delivered again"
)]
pub struct VisibilityTimeoutTooShort {
    pub visibility_timeout_seconds: u64,
    pub target_timeout_seconds: u64,
    pub window_seconds: u64,
    pub advised_seconds: u64,
}

/// Checks a queue's visibility timeout against the mapping (SPEC §4.3).
pub fn check_visibility_timeout(
    visibility_timeout: Duration,
    spec: &EventSourceMappingSpec,
) -> Result<(), VisibilityTimeoutTooShort> {
    let target_timeout_seconds = spec.target.timeout().as_secs();
    let window_seconds = spec.batching_window().as_secs();
    let advised_seconds = 6 * target_timeout_seconds + window_seconds;
    let visibility_timeout_seconds = visibility_timeout.as_secs();
    if visibility_timeout_seconds >= advised_seconds {
        return Ok(());
    }
    Err(VisibilityTimeoutTooShort {
        visibility_timeout_seconds,
        target_timeout_seconds,
        window_seconds,
        advised_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EventSourceMapping;

    fn spec(timeout: Option<u32>, window: Option<u32>) -> EventSourceMappingSpec {
        let mut mapping: EventSourceMapping = serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "source": {"sqs": {"queueUrl": "http://localhost/000000000000/q"}},
                "target": {"url": "http://target"},
            }
        }))
        .unwrap();
        mapping.spec.target.timeout_seconds = timeout;
        mapping.spec.maximum_batching_window_in_seconds = window;
        mapping.spec
    }

    #[test]
    fn visibility_timeout_needs_six_target_timeouts_plus_window() {
        let spec = spec(Some(10), Some(5));
        assert!(check_visibility_timeout(Duration::from_secs(65), &spec).is_ok());
        let err = check_visibility_timeout(Duration::from_secs(64), &spec).unwrap_err();
        assert_eq!(err.advised_seconds, 65);
        assert_eq!(
            err.to_string(),
            "the queue's visibility timeout is 64s, below the advised 65s (6 x target timeout 10s + batching window 5s): messages still being processed may be delivered again"
        );
    }

    #[test]
    fn visibility_timeout_default_target_timeout() {
        // Default target timeout 30 s: SQS's default 30 s visibility timeout is too short.
        let err = check_visibility_timeout(Duration::from_secs(30), &spec(None, None)).unwrap_err();
        assert_eq!(err.advised_seconds, 180);
    }

    #[test]
    fn batch_failures_map_entry_ids_back_to_messages() {
        let receipts = [
            Receipt {
                message_id: "m-a",
                receipt_handle: "h-a",
            },
            Receipt {
                message_id: "m-b",
                receipt_handle: "h-b",
            },
        ];
        let failed = vec![
            aws_sdk_sqs::types::BatchResultErrorEntry::builder()
                .id("1")
                .code("ReceiptHandleIsInvalid")
                .message("expired")
                .sender_fault(true)
                .build()
                .unwrap(),
        ];
        assert_eq!(
            failures(&receipts, failed),
            [EntryFailure {
                index: 1,
                code: "ReceiptHandleIsInvalid".into(),
                message: "expired".into(),
                sender_fault: true,
            }]
        );
    }
}
