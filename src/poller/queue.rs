//! The queue engine (SPEC §4): `loops` receive loops, each assembling a batch, calling the
//! target and deleting what succeeded.
//!
//! A loop: receive (long poll) -> filter (filtered-out messages are deleted and counted) ->
//! batch ([`super::batch`]) -> invoke -> outcome -> DeleteMessageBatch of the messages that
//! succeeded. Messages that failed are left alone: SQS makes them visible again after the
//! visibility timeout, and its redrive policy moves them to a dead-letter queue. FIFO: when a
//! message fails, it and every later message of its group in the batch stay in the queue, so
//! the group's order holds. While the queue is empty only one loop long-polls ([`quiet`]).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::batch::{BatchLimits, Batcher, Measured, Oversized, fill};
use super::metrics::MappingMetrics;
use super::retry::retry_delay;
use super::status::ProcessingResults;
use crate::api::EventSourceMappingSpec;
use crate::event::{
    EventRecord, MAX_PAYLOAD_BYTES, SqsRecord, encode_event, encoded_len, event_len,
};
use crate::filter::FilterSet;
use crate::otlp::{Call, CallSpans};
use crate::sources::sqs::{MAX_MESSAGES_PER_CALL, MAX_WAIT, Queue, Receipt, SqsError};
use crate::target::{Invoke, Outcome, classify};
use crate::trace::TraceContext;
use quiet::QuietQueue;

mod quiet;

/// Attempts of a DeleteMessageBatch entry before it is counted as a delete failure.
const DELETE_ATTEMPTS: u32 = 4;
/// First pause before retrying a failed delete; doubles per attempt.
const DELETE_RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest pause of a loop after consecutive receive errors.
const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a mapping's queue is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    pub batch_size: usize,
    pub window: Duration,
    /// Receive loops of this replica (`poller.batchesPerReplica`).
    pub loops: usize,
    pub report_batch_item_failures: bool,
    /// One long poll per replica while the queue is empty ([`quiet`]). Off for FIFO queues:
    /// waking every loop at once when messages come puts their receives side by side, and an
    /// emulator whose FIFO group lock is not atomic (moto) then hands out a group's later
    /// message to one loop while another holds the earlier one (seen once in tests/pods.rs).
    pub one_long_poll_when_quiet: bool,
}

impl QueueSettings {
    pub fn from_spec(spec: &EventSourceMappingSpec) -> Self {
        Self {
            batch_size: spec.effective_batch_size() as usize,
            window: spec.batching_window(),
            loops: spec.batches_per_replica().max(1) as usize,
            report_batch_item_failures: spec.reports_batch_item_failures(),
            one_long_poll_when_quiet: spec.source_kind() != Some(crate::api::SourceKind::SqsFifo),
        }
    }
}

/// What the pollers of a replica saw recently, for scaling (SPEC §8): FIFO message groups
/// that had messages, and loops that had batches. Cheap to update: one lock per batch.
#[derive(Clone, Default)]
pub struct Activity(Arc<Mutex<ActivityState>>);

#[derive(Default)]
struct ActivityState {
    groups: HashMap<String, Instant>,
    busy_loops: HashMap<usize, Instant>,
    /// Group count at which old groups are pruned next; grows with the live set.
    prune_at: usize,
}

/// A summary of [`Activity`] over a recent period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivitySnapshot {
    /// FIFO message groups with messages in that period.
    pub active_groups: usize,
    /// Receive loops that sent at least one batch in that period.
    pub busy_loops: usize,
}

/// Groups unseen for this long are forgotten.
const ACTIVITY_RETENTION: Duration = Duration::from_secs(600);
const MIN_PRUNE_AT: usize = 1024;

impl Activity {
    fn record<'a>(&self, loop_index: usize, groups: impl Iterator<Item = &'a str>, now: Instant) {
        let mut state = self.0.lock().expect("activity lock");
        state.busy_loops.insert(loop_index, now);
        for group in groups {
            match state.groups.get_mut(group) {
                Some(seen) => *seen = now,
                None => {
                    state.groups.insert(group.to_owned(), now);
                }
            }
        }
        if state.groups.len() >= state.prune_at.max(MIN_PRUNE_AT) {
            state
                .groups
                .retain(|_, seen| now.duration_since(*seen) < ACTIVITY_RETENTION);
            state.prune_at = state.groups.len() * 2;
        }
    }

    /// Groups and loops seen within `period` (at most 10 minutes) before now.
    pub fn snapshot(&self, period: Duration) -> ActivitySnapshot {
        let now = Instant::now();
        let state = self.0.lock().expect("activity lock");
        let recent = |seen: &Instant| now.duration_since(*seen) <= period;
        ActivitySnapshot {
            active_groups: state.groups.values().filter(|s| recent(s)).count(),
            busy_loops: state.busy_loops.values().filter(|s| recent(s)).count(),
        }
    }
}

/// A received message waiting in a batch, with its size in the event.
#[derive(Debug)]
struct Pending {
    record: SqsRecord,
    encoded_len: usize,
}

impl Measured for Pending {
    fn encoded_len(&self) -> usize {
        self.encoded_len
    }
}

/// Which messages of a batch stay in the queue (not deleted) after `outcome`. `groups` are the
/// messages' FIFO groups in batch order (`None` on standard queues).
pub fn messages_to_keep(outcome: &Outcome, groups: &[Option<&str>]) -> Vec<bool> {
    match outcome {
        Outcome::Success => vec![false; groups.len()],
        Outcome::Failure(_) => vec![true; groups.len()],
        Outcome::PartialFailure(failed) => {
            let mut keep = vec![false; groups.len()];
            let mut failed_groups: HashSet<&str> = HashSet::new();
            let mut failed = failed.iter().copied().peekable();
            for (position, group) in groups.iter().enumerate() {
                let listed = failed.next_if_eq(&position).is_some();
                let behind_a_failure = group.is_some_and(|g| failed_groups.contains(g));
                if listed || behind_a_failure {
                    keep[position] = true;
                    if let Some(group) = group {
                        failed_groups.insert(group);
                    }
                }
            }
            keep
        }
    }
}

/// Polls one queue and calls one target.
pub struct QueuePoller<Q, T> {
    pub queue: Q,
    pub target: T,
    pub filters: FilterSet,
    pub settings: QueueSettings,
    pub metrics: MappingMetrics,
    pub results: ProcessingResults,
    pub activity: Activity,
    pub spans: CallSpans,
}

impl<Q: Queue, T: Invoke> QueuePoller<Q, T> {
    /// Runs `settings.loops` receive loops until `stop` turns true (or its sender goes away).
    /// Then each loop stops receiving, finishes the batch it is calling the target with, and
    /// hands messages gathered but not sent back to the queue. The caller bounds how long that
    /// may take by dropping this future (aborting the loops).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let (_fixed, loops) = watch::channel(self.settings.loops);
        self.run_with_loops(stop, loops).await;
    }

    /// [`Self::run`] with as many loops as `loops` says (at least one), following its changes:
    /// loops above a lowered count finish their batch and end, a raised count starts new ones.
    pub async fn run_with_loops(
        self,
        stop: watch::Receiver<bool>,
        mut loops: watch::Receiver<usize>,
    ) {
        let poller = Arc::new(self);
        let quiet = Arc::new(QuietQueue::default());
        let mut tasks = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut resizable = true;
        loop {
            if !*stop.borrow() {
                let target = (*loops.borrow_and_update()).max(1);
                let alive: HashSet<usize> = running.values().copied().collect();
                for index in (0..target).filter(|index| !alive.contains(index)) {
                    let task = poller.clone().receive_loop(
                        index,
                        stop.clone(),
                        loops.clone(),
                        quiet.clone(),
                    );
                    running.insert(tasks.spawn(task).id(), index);
                }
            }
            tokio::select! {
                changed = loops.changed(), if resizable => resizable = changed.is_ok(),
                joined = tasks.join_next_with_id() => match joined {
                    None => break,
                    Some(Ok((id, ()))) => {
                        running.remove(&id);
                    }
                    Some(Err(err)) => {
                        running.remove(&err.id());
                        if err.is_panic() {
                            tracing::error!(error = %err, "a receive loop panicked");
                            poller.results.problem(format!("internal error: {err}"));
                        }
                    }
                },
            }
        }
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits::new(self.settings.batch_size, self.settings.window)
    }

    /// Loop `index` runs until `stop`, or until `loops` drops to `index` or below.
    async fn receive_loop(
        self: Arc<Self>,
        index: usize,
        mut stop: watch::Receiver<bool>,
        mut loops: watch::Receiver<usize>,
        quiet: Arc<QuietQueue>,
    ) {
        let mut batcher = Batcher::new(self.limits());
        let mut receive_failures = 0u32;
        loop {
            if *stop.borrow() || *loops.borrow() <= index {
                break;
            }
            let filled = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = retired(&mut loops, index) => break,
                filled = fill(&mut batcher, MAX_WAIT, |max, wait, idle| {
                    self.receive(max, wait, idle, &quiet)
                }) => filled,
            };
            for oversized in batcher.take_oversized() {
                self.refuse_oversized(&mut batcher, oversized);
            }
            if let Err(err) = filled {
                receive_failures += 1;
                let delay = receive_backoff(receive_failures);
                self.metrics.source_errors.inc();
                self.results.problem(err.to_string());
                tracing::warn!(error = %err, retry_in = ?delay, "cannot receive messages");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
            receive_failures = 0;
            let batch = batcher.take();
            let kept_groups = self.process(index, batch).await;
            if !kept_groups.is_empty() {
                // Later messages of those groups received meanwhile must not overtake them:
                // leave them to come back after the visibility timeout too.
                batcher.remove(|p| {
                    p.record
                        .message_group_id()
                        .is_some_and(|g| kept_groups.contains(g))
                });
            }
        }
        self.release(batcher.drain()).await;
    }

    /// One receive: counts what arrived, deletes what the filters drop, passes the rest on.
    /// With nothing gathered (`idle`) it waits for its turn while the queue is quiet.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        idle: bool,
        quiet: &QuietQueue,
    ) -> Result<Vec<Pending>, SqsError> {
        let idle = idle && self.settings.one_long_poll_when_quiet;
        let _turn = if idle { quiet.turn().await } else { None };
        let records = self
            .queue
            .receive(max.min(MAX_MESSAGES_PER_CALL), wait)
            .await?;
        quiet.received(records.len(), idle);
        self.metrics.polled.inc_by(records.len() as u64);
        let mut pass = Vec::with_capacity(records.len());
        let mut dropped = Vec::new();
        for record in records {
            if self.filters.matches(&record) {
                pass.push(Pending {
                    encoded_len: encoded_len(&record),
                    record,
                });
            } else {
                dropped.push(record);
            }
        }
        if !dropped.is_empty() {
            self.metrics.filtered_out.inc_by(dropped.len() as u64);
            self.delete(dropped.iter()).await;
        }
        Ok(pass)
    }

    /// A message that cannot fit any event is not sent and not deleted: it comes back after
    /// the visibility timeout and, with a redrive policy, ends in the dead-letter queue. On a
    /// FIFO queue the rest of its group waits with it.
    fn refuse_oversized(&self, batcher: &mut Batcher<Pending>, oversized: Oversized<Pending>) {
        let record = &oversized.record.record;
        self.metrics.oversized.inc();
        let problem = format!(
            "message {} needs a {}-byte event, more than the {MAX_PAYLOAD_BYTES}-byte limit; it is left in the queue",
            record.message_id, oversized.event_bytes
        );
        tracing::error!(message_id = %record.message_id, bytes = oversized.event_bytes, "{problem}");
        self.results.problem(problem);
        if let Some(group) = record.message_group_id() {
            batcher.remove(|p| p.record.message_group_id() == Some(group));
        }
    }

    /// Sends a batch and deletes what succeeded. Returns the FIFO groups with messages left in
    /// the queue.
    async fn process(&self, loop_index: usize, batch: Vec<Pending>) -> HashSet<String> {
        let count = batch.len();
        let groups: Vec<Option<&str>> = batch.iter().map(|p| p.record.message_group_id()).collect();
        self.activity
            .record(loop_index, groups.iter().flatten().copied(), Instant::now());
        self.metrics.batch_size.observe(count as f64);
        self.metrics.invoked.inc_by(count as u64);
        let bytes = batch.iter().map(|p| p.encoded_len).sum();
        let payload = encode_event(batch.iter().map(|p| &p.record), event_len(count, bytes));
        let trace = TraceContext::continuing(batch.iter().find_map(|p| p.record.producer_trace()));

        let started = Instant::now();
        let result = {
            let _in_flight = self.metrics.start_in_flight();
            let _timer = self.metrics.invocation_duration.start_timer();
            self.target.invoke(payload, &trace).await
        };
        let ids: Option<Vec<&str>> = self
            .settings
            .report_batch_item_failures
            .then(|| batch.iter().map(|p| p.record.item_identifier()).collect());
        let outcome = classify(&result, ids.as_deref());
        self.spans.record(
            &trace,
            started,
            Call {
                shard: None,
                records: count,
                retries: None,
                result: &result,
                outcome: &outcome,
            },
        );
        let keep = messages_to_keep(&outcome, &groups);
        let failed = keep.iter().filter(|k| **k).count();
        self.metrics.failed.inc_by(failed as u64);
        match &outcome {
            Outcome::Failure(reason) => {
                tracing::warn!(records = count, %reason, "batch failed; its messages stay in the queue");
                self.results.problem(reason.clone());
            }
            Outcome::PartialFailure(_) => {
                tracing::debug!(records = count, failed, "partial batch failure");
                self.results.ok();
            }
            Outcome::Success => self.results.ok(),
        }
        self.delete(
            batch
                .iter()
                .zip(&keep)
                .filter(|(_, keep)| !**keep)
                .map(|(p, _)| &p.record),
        )
        .await;
        groups
            .iter()
            .zip(&keep)
            .filter_map(|(group, keep)| group.filter(|_| *keep).map(str::to_owned))
            .collect()
    }

    /// Deletes messages, 10 per request. Entries that fail are retried; those that still fail
    /// are counted, logged and reported: SQS will deliver them again (a duplicate, not a loss).
    async fn delete<'a>(&self, records: impl Iterator<Item = &'a SqsRecord>) {
        let records: Vec<&SqsRecord> = records.collect();
        for chunk in records.chunks(MAX_MESSAGES_PER_CALL) {
            let mut receipts: Vec<Receipt<'_>> = chunk.iter().map(|r| Receipt::from(*r)).collect();
            let mut last_error = String::new();
            for attempt in 1..=DELETE_ATTEMPTS {
                match self.queue.delete(&receipts).await {
                    Ok(failures) => {
                        self.metrics
                            .deleted
                            .inc_by((receipts.len() - failures.len()) as u64);
                        let mut retry = Vec::with_capacity(failures.len());
                        for failure in failures {
                            let receipt = receipts[failure.index];
                            last_error = format!("{}: {}", failure.code, failure.message);
                            if failure.sender_fault {
                                self.delete_failed(1, receipt.message_id, &last_error);
                            } else {
                                retry.push(receipt);
                            }
                        }
                        receipts = retry;
                    }
                    Err(err) => {
                        self.metrics.source_errors.inc();
                        last_error = err.to_string();
                    }
                }
                if receipts.is_empty() {
                    break;
                }
                if attempt < DELETE_ATTEMPTS {
                    tokio::time::sleep(retry_delay(attempt, DELETE_RETRY_BASE, Duration::MAX))
                        .await;
                }
            }
            if let Some(first) = receipts.first() {
                self.delete_failed(receipts.len(), first.message_id, &last_error);
            }
        }
    }

    fn delete_failed(&self, count: usize, message_id: &str, error: &str) {
        self.metrics.delete_failures.inc_by(count as u64);
        let problem = format!(
            "could not delete {count} message(s) (first {message_id}); they will be delivered again: {error}"
        );
        tracing::error!("{problem}");
        self.results.problem(problem);
    }

    /// Hands messages back to the queue at once (visibility timeout 0). A failure only delays
    /// them until their visibility timeout ends.
    async fn release(&self, records: Vec<Pending>) {
        for chunk in records.chunks(MAX_MESSAGES_PER_CALL) {
            let receipts: Vec<Receipt<'_>> =
                chunk.iter().map(|p| Receipt::from(&p.record)).collect();
            match self.queue.release(&receipts).await {
                Ok(failures) if failures.is_empty() => {}
                Ok(failures) => tracing::warn!(
                    count = failures.len(),
                    first = %receipts[failures[0].index].message_id,
                    "could not hand messages back; they return after the visibility timeout"
                ),
                Err(err) => {
                    self.metrics.source_errors.inc();
                    tracing::warn!(error = %err, "could not hand messages back; they return after the visibility timeout");
                }
            }
        }
    }
}

/// Resolves once `loops` drops to `index` or below; never when its sender is gone.
async fn retired(loops: &mut watch::Receiver<usize>, index: usize) {
    if loops.wait_for(|count| *count <= index).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// 1 s, 2 s, 4 s, ... up to [`RECEIVE_BACKOFF_MAX`].
fn receive_backoff(consecutive_failures: u32) -> Duration {
    retry_delay(
        consecutive_failures,
        Duration::from_secs(1),
        RECEIVE_BACKOFF_MAX,
    )
}

#[cfg(test)]
mod tests;
