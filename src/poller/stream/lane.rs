//! A shard's lane: assembles batches ([`crate::poller::batch`]), calls the target and works
//! failures through the [`RetryPolicy`](crate::poller::retry::RetryPolicy): retries while the
//! lane waits, bisection, partial batch responses, record age, and the discard of what is
//! given up on to the on-failure destination. With a tumbling window, each call carries the
//! window's state ([`super::windowed`]).
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    LANE_IDLE_WAIT, OpenWindow, Pending, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX, ShardRun,
    StreamPoller, WindowCallKind,
};
use crate::api::SourceKind;
use crate::destination::{
    BatchInfo, Deliver, Extension, FailedBatch, InvocationRecord, RequestContext, ResponseContext,
    ShardBatchInfo,
};
use crate::event::{EventRecord, MAX_PAYLOAD_BYTES, encode_event, event_len};
use crate::otlp::Call;
use crate::poller::batch::{BatchLimits, Batcher, fill};
use crate::poller::checkpoint::ShardLeaseStore;
use crate::poller::retry::{DiscardCondition, RETRY_BACKOFF_MAX, Segment, retry_delay};
use crate::poller::window::{MAX_STATE_BYTES, WINDOW_FIELDS_BYTES, returned_state};
use crate::sources::sharded::ShardedStream;
use crate::target::{CallError, Invoke, Outcome, TargetResponse, classify};
use crate::trace::TraceContext;

impl<S, L, T, D> StreamPoller<S, L, T, D>
where
    S: ShardedStream + 'static,
    L: ShardLeaseStore + 'static,
    T: Invoke,
    D: Deliver,
{
    /// A lane: batches its records and sends them, one batch at a time, until its channel
    /// closes and is empty, or the shard is drained.
    pub(super) async fn run_lane(
        self: Arc<Self>,
        shard: Arc<ShardRun>,
        receiver: mpsc::UnboundedReceiver<Vec<Pending>>,
    ) {
        let receiver = tokio::sync::Mutex::new(receiver);
        let mut batcher = Batcher::new(self.batch_limits());
        let mut drained = shard.drain.clone();
        loop {
            let filled = tokio::select! {
                _ = drained.wait_for(|d| *d) => return,
                filled = fill(&mut batcher, LANE_IDLE_WAIT, |_, wait, _| {
                    let receiver = &receiver;
                    async move { receive(&mut *receiver.lock().await, wait).await }
                }) => filled,
            };
            if !self.discard_oversized(&shard, &mut batcher).await {
                return;
            }
            let batch = batcher.take();
            if batch.is_empty() {
                if filled.is_err() {
                    return;
                }
                continue;
            }
            if !self.process(&shard, batch, None).await {
                return;
            }
        }
    }

    /// Discards the records too large for any event, each alone. False when the shard was
    /// drained first.
    pub(super) async fn discard_oversized(
        &self,
        shard: &ShardRun,
        batcher: &mut Batcher<Pending>,
    ) -> bool {
        for oversized in batcher.take_oversized() {
            let reason = format!(
                "record needs a {}-byte event, more than the {}-byte limit",
                oversized.event_bytes,
                self.payload_limit()
            );
            let mut single = vec![oversized.record];
            if !self
                .discard(
                    shard,
                    &mut single,
                    0..1,
                    DiscardCondition::RetryAttemptsExhausted,
                    0,
                    &LastResponse {
                        context: Some(ResponseContext::payload_too_large()),
                        http_status: None,
                        error: Some(reason),
                    },
                )
                .await
            {
                return false;
            }
        }
        true
    }

    /// Most bytes of a batch's event: Lambda's limit, less room for the largest window state
    /// when the mapping has tumbling windows.
    fn payload_limit(&self) -> usize {
        match self.settings.tumbling {
            Some(_) => MAX_PAYLOAD_BYTES - MAX_STATE_BYTES - WINDOW_FIELDS_BYTES,
            None => MAX_PAYLOAD_BYTES,
        }
    }

    pub(super) fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_payload_bytes: self.payload_limit(),
            ..BatchLimits::new(self.settings.batch_size, self.settings.window)
        }
    }

    /// One call of the target for a shard: the in-flight gauge, the call's duration, its
    /// outcome and its span. With tumbling windows the answer must carry a state: it is
    /// returned, and an answer without one is a failure.
    pub(super) async fn call_target(
        &self,
        shard: &ShardRun,
        payload: Vec<u8>,
        records: usize,
        retries: u32,
        item_ids: Option<&[&str]>,
    ) -> Answer {
        let started = Instant::now();
        // Stream records carry no trace: each call starts one.
        let trace = TraceContext::new_trace();
        let result = {
            let _in_flight = self.metrics.start_in_flight();
            self.target.invoke(payload, &trace).await
        };
        shard
            .metrics
            .observe_invocation(started.elapsed().as_secs_f64());
        let mut outcome = classify(&result, item_ids);
        let mut state = None;
        if self.settings.tumbling.is_some()
            && let (Outcome::Success | Outcome::PartialFailure(_), Ok(response)) =
                (&outcome, &result)
        {
            match returned_state(&response.body) {
                Ok(returned) => state = Some(returned),
                Err(reason) => outcome = Outcome::Failure(reason),
            }
        }
        self.spans.record(
            &trace,
            started,
            Call {
                shard: Some(&shard.origin.shard_id),
                records,
                retries: Some(retries),
                result: &result,
                outcome: &outcome,
            },
        );
        Answer {
            result,
            outcome,
            state,
        }
    }

    /// Sends a batch until every record is done or discarded. Returns false when the shard
    /// was drained first (the unfinished records are read again by the next holder). With a
    /// tumbling window, each call carries the window's state and the answer's state replaces
    /// it.
    pub(super) async fn process(
        &self,
        shard: &ShardRun,
        mut batch: Vec<Pending>,
        mut window: Option<&mut OpenWindow>,
    ) -> bool {
        let mut segments = VecDeque::from([Segment::whole(batch.len())]);
        let mut last = LastResponse::default();
        while let Some(mut segment) = segments.pop_front() {
            let expired = self.settings.retry.expired_prefix(
                batch[segment.range.clone()]
                    .iter()
                    .map(|p| p.record.record.approximate_arrival),
                Timestamp::now(),
            );
            if expired > 0 {
                let range = segment.range.start..segment.range.start + expired;
                if !self
                    .discard(
                        shard,
                        &mut batch,
                        range,
                        DiscardCondition::RecordAgeExceeded,
                        // The attempt that found them expired counts, as Lambda counts it.
                        segment.retries + 1,
                        &last,
                    )
                    .await
                {
                    return false;
                }
                segment.range.start += expired;
                if segment.range.is_empty() {
                    continue;
                }
            }
            if shard.draining() {
                return false;
            }
            let records = &batch[segment.range.clone()];
            let count = records.len();
            let bytes = records.iter().map(|p| p.encoded_len).sum();
            let mut payload =
                encode_event(records.iter().map(|p| &p.record), event_len(count, bytes));
            if let Some(open) = window.as_deref() {
                payload =
                    open.add_fields(payload, shard, &self.identity, WindowCallKind::Aggregate);
            }
            shard.metrics.invoked(count);
            let ids: Option<Vec<&str>> = self
                .settings
                .report_batch_item_failures
                .then(|| records.iter().map(|p| p.record.item_identifier()).collect());
            let answer = self
                .call_target(shard, payload, count, segment.retries, ids.as_deref())
                .await;
            drop(ids);
            let (result, outcome) = (answer.result, answer.outcome);
            let state_over_limit = match (window.as_deref_mut(), answer.state) {
                (Some(open), Some(state)) => open.replace_state(state),
                _ => false,
            };
            last = LastResponse {
                context: Some(ResponseContext::of(&result)),
                http_status: result.as_ref().ok().map(|r| r.status),
                error: match &outcome {
                    Outcome::Failure(reason) => Some(reason.clone()),
                    Outcome::PartialFailure(failed) => {
                        Some(format!("{} record(s) reported failed", failed.len()))
                    }
                    Outcome::Success => None,
                },
            };
            let step = self.settings.retry.next(&segment, &outcome);
            shard.metrics.failed(count - step.done.len());
            match &outcome {
                Outcome::Failure(reason) => {
                    tracing::warn!(shard = %shard.origin.shard_id, records = count, retries = segment.retries, %reason, "batch failed");
                    self.results.problem(reason.clone());
                }
                _ => self.results.ok(),
            }
            shard.finish(&mut batch[step.done.clone()]);
            if let Some(range) = step.discard
                && !self
                    .discard(
                        shard,
                        &mut batch,
                        range,
                        DiscardCondition::RetryAttemptsExhausted,
                        segment.retries + 1,
                        &last,
                    )
                    .await
            {
                return false;
            }
            if step.backoff
                && let Some(next) = step.send.first()
            {
                let delay =
                    retry_delay(next.retries, self.settings.retry_backoff, RETRY_BACKOFF_MAX);
                if !shard.pause(delay).await {
                    return false;
                }
            }
            for next in step.send.into_iter().rev() {
                segments.push_front(next);
            }
            if state_over_limit
                && let Some(open) = window.as_deref_mut()
                && !self
                    .close_window(shard, open, WindowCallKind::TerminatedEarly)
                    .await
            {
                return false;
            }
        }
        true
    }

    /// Gives up on `batch[range]`: counts it dropped, describes it to the on-failure
    /// destination (retrying until delivered) and finishes it. False when the shard was
    /// drained before the destination took it (the records are read again).
    async fn discard(
        &self,
        shard: &ShardRun,
        batch: &mut [Pending],
        range: std::ops::Range<usize>,
        condition: DiscardCondition,
        invocations: u32,
        last: &LastResponse,
    ) -> bool {
        let records = &batch[range.clone()];
        let (first, final_record) = (
            &records[0].record.record,
            &records[records.len() - 1].record.record,
        );
        let shard_id = &*shard.origin.shard_id;
        let mut problem = format!(
            "shard {shard_id}: {} record(s) {}..{} discarded: {}",
            records.len(),
            first.sequence_number,
            final_record.sequence_number,
            condition.as_str()
        );
        // The discard is the last problem of its interval: without the failure it ends,
        // status would not say what went wrong.
        if let Some(error) = &last.error {
            problem.push_str(&format!(", last failure: {error}"));
        }
        tracing::error!("{problem}");
        self.results.problem(problem);
        if let Some(destination) = &self.destination {
            let info = ShardBatchInfo {
                shard_id: shard_id.to_owned(),
                start_sequence_number: first.sequence_number.clone(),
                end_sequence_number: final_record.sequence_number.clone(),
                approximate_arrival_of_first_record: first.approximate_arrival,
                approximate_arrival_of_last_record: final_record.approximate_arrival,
                batch_size: records.len(),
                stream_arn: self.identity.stream_arn.clone(),
            };
            let record = InvocationRecord {
                request_context: RequestContext {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    function_arn: self.identity.target_url.clone(),
                    condition,
                    approximate_invoke_count: invocations,
                },
                response_context: match condition {
                    DiscardCondition::RecordAgeExceeded => None,
                    DiscardCondition::RetryAttemptsExhausted => last.context.clone(),
                },
                version: "1.0",
                timestamp: Timestamp::now(),
                batch: match self.identity.kind {
                    SourceKind::DynamoDBStreams => BatchInfo::DynamoDb(info.into()),
                    _ => BatchInfo::Kinesis(info.into()),
                },
                extension: Extension {
                    mapping: self.identity.mapping.clone(),
                    http_status: last.http_status,
                    error: last.error.clone(),
                },
            }
            .to_json();
            let bytes = records.iter().map(|p| p.encoded_len).sum();
            let payload = encode_event(
                records.iter().map(|p| &p.record),
                event_len(records.len(), bytes),
            );
            let failed = FailedBatch {
                record: &record,
                payload: &payload,
                mapping_uid: &self.identity.mapping_uid,
                shard_id,
                timestamp: Timestamp::now(),
            };
            let mut failures = 0u32;
            loop {
                match destination.deliver(failed).await {
                    Ok(()) => {
                        shard.metrics.sent_to_destination(records.len());
                        break;
                    }
                    Err(error) => {
                        failures += 1;
                        self.metrics.destination_failures.inc();
                        let problem = format!(
                            "cannot deliver to the on-failure destination (attempt {failures}): {error}"
                        );
                        tracing::error!(shard = %shard_id, "{problem}");
                        self.results.problem(problem);
                        if !shard
                            .pause(retry_delay(failures, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX))
                            .await
                        {
                            return false;
                        }
                    }
                }
            }
        } else {
            tracing::warn!(shard = %shard_id, "no on-failure destination: the discarded records are only counted");
        }
        shard.metrics.dropped(range.len());
        shard.finish(&mut batch[range]);
        true
    }
}

/// A target call as [`StreamPoller::call_target`] saw it.
pub(super) struct Answer {
    pub(super) result: Result<TargetResponse, CallError>,
    pub(super) outcome: Outcome,
    /// The answer's window state (tumbling windows).
    pub(super) state: Option<Box<RawValue>>,
}

/// The target's last answer to a batch, for the invocation record.
#[derive(Clone, Debug, Default)]
struct LastResponse {
    context: Option<ResponseContext>,
    http_status: Option<u16>,
    error: Option<String>,
}

/// Up to one channel read's worth of chunks for a lane: waits up to `wait` for the first,
/// then takes what is already there. `Err` once the reader is gone and the channel empty.
pub(super) async fn receive(
    receiver: &mut mpsc::UnboundedReceiver<Vec<Pending>>,
    wait: Duration,
) -> Result<Vec<Pending>, LaneClosed> {
    let mut records = match tokio::time::timeout(wait, receiver.recv()).await {
        Err(_) => return Ok(Vec::new()),
        Ok(None) => return Err(LaneClosed),
        Ok(Some(records)) => records,
    };
    while let Ok(more) = receiver.try_recv() {
        records.extend(more);
    }
    Ok(records)
}

/// The shard's reader stopped and the lane has nothing left.
#[derive(Debug)]
pub(super) struct LaneClosed;
