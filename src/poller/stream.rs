//! The stream engine (SPEC §3): Kinesis and DynamoDB Streams, one reader per owned shard.
//!
//! A coordinator balances shard leases ([`super::checkpoint::balance`]) every third of the
//! lease duration and runs one task per shard this replica holds. A shard task reads its shard
//! in the poll rhythm (GetRecords, within the read budget), gives every record a position in
//! the shard's [`Watermark`], drops what the filters reject (finished at once), and hands the
//! rest to `parallelizationFactor` lanes by ordering key. Each lane (`lane`) assembles batches
//! ([`super::batch`]), calls the target, and works failures through the [`RetryPolicy`]
//! (retry while the lane waits, bisection, partial batch responses, record age, discard to
//! the on-failure destination). The checkpoint follows the watermark: it only passes records
//! every lane has finished. A closed shard is read to its end and checkpointed `SHARD_END`,
//! which makes its children eligible.
//!
//! Stopping a shard (handed over, or the poller stops) finishes the call in flight, writes the
//! checkpoint and releases the lease; losing a lease stops the shard at once, without writing.
//! So does reaching the end of the lease's duration since the last write that renewed it
//! ([`LeaseHold`]): from then on another replica may hold the shard, and this one cannot tell
//! (the API server may be unreachable), so it stops without waiting to be told.
//!
//! With tumbling windows ([`super::window`]) a shard has one lane of its own kind
//! (`windowed`): it carries the target's state from call to call, closes each window with a
//! final call, and keeps the state with the shard's checkpoint.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::batch::Measured;
use super::checkpoint::{Checkpoint, LeaseError, ShardLease, ShardLeaseStore, balance};
use super::lanes::{Watermark, lane_of};
use super::metrics::{MappingMetrics, ShardMetrics};
use super::retry::{RETRY_BACKOFF, RETRY_BACKOFF_MAX, RetryPolicy, retry_delay};
use super::status::ProcessingResults;
use super::window::{StoredWindow, TumblingWindows};
use crate::api::{EventSourceMappingSpec, SourceKind, StartingPosition};
use crate::destination::Deliver;
use crate::event::{StreamEventRecord, StreamOrigin, encoded_len};
use crate::filter::FilterSet;
use crate::otlp::CallSpans;
use crate::sources::sharded::{
    RecordPage, ShardPosition, ShardedStream, StreamError, StreamRecord,
};
use crate::target::Invoke;

/// Lambda polls a Kinesis shard about once a second when it is caught up...
const KINESIS_IDLE_POLL: Duration = Duration::from_secs(1);
/// ...and at most 5 times a second (the shard's GetRecords budget) while it is behind.
const KINESIS_BUSY_POLL: Duration = Duration::from_millis(200);
/// Lambda polls a DynamoDB stream shard about 4 times a second.
const DYNAMODB_POLL: Duration = Duration::from_millis(250);
/// Most records read ahead of the checkpoint per shard (never less than one batch).
const MAX_READ_AHEAD: usize = 10_000;
/// First pause after a throttled or failed source call; doubles up to the max.
const SOURCE_BACKOFF: Duration = Duration::from_millis(500);
const SOURCE_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long an empty lane waits for records before looking again.
const LANE_IDLE_WAIT: Duration = Duration::from_secs(1);
/// Least time between two checkpoint writes of a shard while it runs: batches finishing within
/// it share one Lease write (a write per batch cost more CPU than the batch itself, and loads
/// the API server with every shard). Stopping a shard still writes its last checkpoint.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How a mapping's stream is read and its batches handled.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSettings {
    pub batch_size: usize,
    pub window: Duration,
    /// `parallelizationFactor`: lanes per shard.
    pub lanes: usize,
    /// Where a shard without checkpoint and without parents starts.
    pub starting_position: ShardPosition,
    pub retry: RetryPolicy,
    pub report_batch_item_failures: bool,
    /// Pause between reads of a caught-up shard, and of a shard that is behind.
    pub idle_poll: Duration,
    pub busy_poll: Duration,
    /// How long a shard lease lasts without renewal; leases are balanced every third of it.
    pub lease_duration: Duration,
    /// First pause before a counted retry (doubles, up to a minute).
    pub retry_backoff: Duration,
    /// `tumblingWindowInSeconds` above 0.
    pub tumbling: Option<TumblingWindows>,
}

impl StreamSettings {
    pub fn from_spec(spec: &EventSourceMappingSpec, lease_duration: Duration) -> Self {
        let (idle_poll, busy_poll) = match spec.source_kind() {
            Some(SourceKind::DynamoDBStreams) => (DYNAMODB_POLL, DYNAMODB_POLL),
            _ => (KINESIS_IDLE_POLL, KINESIS_BUSY_POLL),
        };
        let starting_position = match spec.starting_position {
            Some(StartingPosition::TrimHorizon) => ShardPosition::TrimHorizon,
            Some(StartingPosition::AtTimestamp) => spec
                .starting_position_timestamp
                .as_ref()
                .map_or(ShardPosition::Latest, |at| ShardPosition::AtTimestamp(at.0)),
            Some(StartingPosition::Latest) | None => ShardPosition::Latest,
        };
        Self {
            batch_size: spec.effective_batch_size() as usize,
            window: spec.batching_window(),
            lanes: spec.effective_parallelization_factor() as usize,
            starting_position,
            retry: RetryPolicy::from_spec(spec),
            report_batch_item_failures: spec.reports_batch_item_failures(),
            idle_poll,
            busy_poll,
            lease_duration,
            retry_backoff: RETRY_BACKOFF,
            tumbling: spec
                .tumbling_window_in_seconds
                .filter(|seconds| *seconds > 0)
                .map(TumblingWindows::new),
        }
    }

    fn read_ahead(&self) -> usize {
        (self.batch_size * self.lanes * 2)
            .min(MAX_READ_AHEAD)
            .max(self.batch_size)
    }
}

/// Who is calling, for the records the target and the destination see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamIdentity {
    /// The mapping, `NAMESPACE/NAME`.
    pub mapping: String,
    /// The mapping's UID (S3 destination keys).
    pub mapping_uid: String,
    /// The target's URL.
    pub target_url: String,
    /// The stream's ARN (`eventSourceARN`).
    pub stream_arn: String,
    /// `invokeIdentityArn` of Kinesis records.
    pub invoke_identity: Arc<str>,
    pub kind: SourceKind,
}

/// Reads one stream for one mapping as one replica.
pub struct StreamPoller<S, L, T, D> {
    pub stream: S,
    pub leases: L,
    pub target: T,
    pub destination: Option<D>,
    pub filters: FilterSet,
    pub settings: StreamSettings,
    pub identity: StreamIdentity,
    pub metrics: MappingMetrics,
    pub results: ProcessingResults,
    pub spans: CallSpans,
}

/// How a shard task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ShardExit {
    /// Read to its end and checkpointed `SHARD_END`.
    Finished,
    /// Stopped on request, checkpointed and released.
    Stopped,
    /// Another replica holds the lease now.
    Lost,
    /// No write renewed the lease within its duration: another replica may hold it now.
    Expired,
    /// The stream no longer has the shard.
    Gone,
}

struct RunningShard {
    drain: watch::Sender<bool>,
    abort: AbortHandle,
    hold: LeaseHold,
}

impl<S, L, T, D> StreamPoller<S, L, T, D>
where
    S: ShardedStream + 'static,
    L: ShardLeaseStore + 'static,
    T: Invoke,
    D: Deliver,
{
    /// Balances leases and reads the shards this replica holds until `stop` turns true; then
    /// each shard finishes the call in flight, checkpoints and releases its lease. The caller
    /// bounds how long that may take by dropping this future.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let engine = Arc::new(self);
        let mut running: HashMap<String, RunningShard> = HashMap::new();
        let mut tasks: JoinSet<(String, ShardExit)> = JoinSet::new();
        let mut ticker = tokio::time::interval(engine.settings.lease_duration / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            // Ended shards first: a round must not count (in owned_shards) or keep what stopped.
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                Some(joined) = tasks.join_next_with_id() => {
                    // A task aborted (lease lost) may have been replaced by a new one for the
                    // same shard: only forget the task that ended.
                    let id = match &joined {
                        Ok((id, _)) => *id,
                        Err(error) => error.id(),
                    };
                    running.retain(|_, shard| shard.abort.id() != id);
                    engine.metrics.owned_shards.set(running.len() as i64);
                    match joined {
                        Ok((_, (shard_id, exit))) => {
                            tracing::info!(shard = %shard_id, ?exit, "shard stopped");
                            if exit != ShardExit::Finished {
                                continue;
                            }
                            // Its children may start now.
                        }
                        Err(error) => {
                            if error.is_panic() {
                                tracing::error!(%error, "a shard task panicked");
                                engine.results.problem(format!("internal error: {error}"));
                            }
                            continue;
                        }
                    }
                }
                _ = ticker.tick() => {}
            }
            // A round that outlasts the lease renews nothing that still counts (every shard it
            // would renew stopped at its LeaseHold meanwhile); an API server that accepted the
            // connection and never answers must not stall the rounds for good.
            let round = tokio::time::timeout(
                engine.settings.lease_duration,
                engine.balance_round(&mut running, &mut tasks),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "balancing shard leases took longer than the lease duration ({:?}); abandoned",
                    engine.settings.lease_duration
                ))
            });
            match round {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    engine.metrics.source_errors.inc();
                    engine.results.problem(error.clone());
                    tracing::warn!(%error, "cannot balance shard leases");
                    let delay = retry_delay(failures, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX);
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            engine.metrics.owned_shards.set(running.len() as i64);
        }
        for shard in running.values() {
            let _ = shard.drain.send(true);
        }
        while tasks.join_next().await.is_some() {}
        engine.metrics.owned_shards.set(0);
    }

    /// One round: list shards, balance leases, start the shards newly held, stop the ones to
    /// hand over or lost.
    async fn balance_round(
        self: &Arc<Self>,
        running: &mut HashMap<String, RunningShard>,
        tasks: &mut JoinSet<(String, ShardExit)>,
    ) -> Result<(), String> {
        let shards = self.stream.list_shards().await.map_err(|error| {
            format!(
                "cannot list the shards of {}: {error}",
                self.identity.stream_arn
            )
        })?;
        // Before the renewTime is read: the LeaseHolds end no later than others see the leases
        // expire.
        let renewal_started = Instant::now();
        let assignment = balance(&self.leases, &shards, Timestamp::now())
            .await
            .map_err(|error| error.to_string())?;
        let held: HashSet<&str> = assignment
            .held
            .iter()
            .map(|lease| lease.shard_id.as_str())
            .collect();
        running.retain(|shard_id, shard| {
            let keep = held.contains(shard_id.as_str()) || assignment.give_up.contains(shard_id);
            if !keep {
                tracing::warn!(shard = %shard_id, "shard lease lost; shard stopped");
                shard.abort.abort();
            }
            keep
        });
        for shard_id in &assignment.give_up {
            match running.get(shard_id) {
                Some(shard) => {
                    let _ = shard.drain.send(true);
                }
                None => {
                    if let Err(error) = self.leases.release(shard_id).await {
                        tracing::warn!(shard = %shard_id, %error, "cannot release shard lease");
                    }
                }
            }
        }
        for lease in assignment.held {
            if let Some(shard) = running.get(&lease.shard_id) {
                shard.hold.renewed(renewal_started, &lease);
                continue;
            }
            if lease.is_finished() {
                continue;
            }
            let (drain, drained) = watch::channel(false);
            let shard_id = lease.shard_id.clone();
            let hold = LeaseHold::new(renewal_started, &lease);
            let abort = tasks.spawn(self.clone().run_shard(lease, drained, hold.clone()));
            running.insert(shard_id, RunningShard { drain, abort, hold });
        }
        Ok(())
    }

    /// Reads one shard until it ends, is stopped or lost, or its `hold` ends.
    async fn run_shard(
        self: Arc<Self>,
        lease: ShardLease,
        drain: watch::Receiver<bool>,
        hold: LeaseHold,
    ) -> (String, ShardExit) {
        let shard_id = lease.shard_id.clone();
        tracing::info!(shard = %shard_id, checkpoint = ?lease.checkpoint, "shard started");
        let shard = Arc::new(ShardRun {
            origin: Arc::new(StreamOrigin::new(
                &self.identity.stream_arn,
                &shard_id,
                self.identity.invoke_identity.clone(),
            )),
            metrics: self.metrics.shard(&shard_id),
            watermark: Mutex::new(Watermark::default()),
            finished: watch::channel(0).0,
            caught_up: watch::channel(None).0,
            lost: watch::channel(false).0,
            drain,
            hold,
        });
        // Everything the shard does, its last writes included, ends with its hold.
        let exit = tokio::select! {
            exit = self.clone().load_and_process(lease, &shard) => exit,
            _ = shard.hold.expired() => ShardExit::Expired,
        };
        let exit = tokio::select! {
            exit = self.close_shard(&shard, exit) => exit,
            _ = shard.hold.expired() => ShardExit::Expired,
        };
        if exit == ShardExit::Expired {
            tracing::warn!(shard = %shard_id, "no lease renewal within the lease duration; shard stopped");
        }
        if matches!(exit, ShardExit::Lost | ShardExit::Expired) {
            self.metrics.shard_interruptions.inc();
        }
        (shard_id, exit)
    }

    /// Loads the shard's window state (with tumbling windows), then reads and processes it.
    async fn load_and_process(
        self: Arc<Self>,
        mut lease: ShardLease,
        shard: &Arc<ShardRun>,
    ) -> ShardExit {
        let stored = match self.settings.tumbling {
            None => None,
            Some(_) => match self.load_window(shard).await {
                Ok(stored) => stored,
                Err(exit) => return exit,
            },
        };
        // The window state is valid up to its own checkpoint: resume there.
        if let Some(checkpoint) = stored.as_ref().and_then(|s| s.checkpoint.clone()) {
            lease.checkpoint = Some(Checkpoint::SequenceNumber(checkpoint));
        }
        self.read_and_process(&lease, shard, stored).await
    }

    /// After a shard's reader and lanes stopped: writes the last checkpoint, then marks a shard
    /// read to its end `SHARD_END` (the next round hands it over and starts its children) or
    /// releases the lease. A lost or expired lease is left alone.
    async fn close_shard(&self, shard: &ShardRun, exit: ShardExit) -> ShardExit {
        let shard_id = &*shard.origin.shard_id;
        if matches!(exit, ShardExit::Lost | ShardExit::Expired) {
            return exit;
        }
        match self.write_checkpoint(shard).await {
            Ok(()) => {}
            Err(LeaseError::Lost { .. }) => return ShardExit::Lost,
            Err(error) => {
                tracing::warn!(shard = %shard_id, %error, "cannot write the last checkpoint; the next holder repeats some records");
            }
        }
        if exit == ShardExit::Finished && shard.is_complete() {
            match self
                .leases
                .checkpoint(shard_id, &Checkpoint::ShardEnd, Timestamp::now())
                .await
            {
                Ok(_) => {
                    // Its last window was closed; children start windows of their own.
                    if self.settings.tumbling.is_some()
                        && let Err(error) = self.leases.remove_window(shard_id).await
                    {
                        tracing::warn!(shard = %shard_id, %error, "cannot delete the window state of a finished shard; it goes with the mapping");
                    }
                    return ShardExit::Finished;
                }
                Err(LeaseError::Lost { .. }) => return ShardExit::Lost,
                Err(error) => {
                    tracing::warn!(shard = %shard_id, %error, "cannot checkpoint the shard end; its end is read again");
                }
            }
        }
        self.release(shard_id).await;
        if exit == ShardExit::Gone {
            ShardExit::Gone
        } else {
            ShardExit::Stopped
        }
    }

    async fn release(&self, shard_id: &str) {
        if let Err(error) = self.leases.release(shard_id).await {
            tracing::warn!(shard = %shard_id, %error, "cannot release shard lease; it expires instead");
        }
    }

    /// Writes the watermark when it moved; it stays pending until a write succeeds.
    async fn write_checkpoint(&self, shard: &ShardRun) -> Result<(), LeaseError> {
        let Some(sequence) = shard.watermark().checkpoint() else {
            return Ok(());
        };
        let checkpoint = Checkpoint::SequenceNumber(sequence);
        let renewal_started = Instant::now();
        let written = self
            .leases
            .checkpoint(&shard.origin.shard_id, &checkpoint, Timestamp::now())
            .await?;
        shard.hold.renewed(renewal_started, &written);
        if let Checkpoint::SequenceNumber(sequence) = &checkpoint {
            shard.watermark().written(sequence);
        }
        Ok(())
    }

    /// Runs the reader, the lanes and the checkpointer of a shard; returns when the reader and
    /// lanes are done (shard end or drain), or at once when the lease is lost.
    async fn read_and_process(
        self: Arc<Self>,
        lease: &ShardLease,
        shard: &Arc<ShardRun>,
        stored: Option<StoredWindow>,
    ) -> ShardExit {
        let mut lanes = JoinSet::new();
        let mut senders = Vec::with_capacity(self.settings.lanes);
        match self.settings.tumbling {
            // One lane: the state is the shard's (validation refuses parallelizationFactor).
            Some(windows) => {
                let (sender, receiver) = mpsc::unbounded_channel();
                senders.push(sender);
                lanes.spawn(
                    self.clone()
                        .run_window_lane(shard.clone(), receiver, windows, stored),
                );
            }
            None => {
                for _ in 0..self.settings.lanes {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    senders.push(sender);
                    lanes.spawn(self.clone().run_lane(shard.clone(), receiver));
                }
            }
        }
        let work = async {
            let end = self.read_shard(lease, shard, senders).await;
            while lanes.join_next().await.is_some() {}
            end
        };
        tokio::select! {
            end = work => end,
            lost = self.checkpoint_loop(shard) => lost,
            _ = shard.lost() => ShardExit::Lost,
        }
    }

    /// Checkpoints whenever records finish; returns only when the lease is lost. A write that
    /// fails is tried again until it succeeds, whether or not more records finish meanwhile
    /// (a quiet shard would otherwise keep an old checkpoint, and repeat records after a
    /// handover).
    async fn checkpoint_loop(&self, shard: &ShardRun) -> ShardExit {
        let mut finished = shard.finished.subscribe();
        loop {
            if finished.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let mut failures = 0u32;
            loop {
                match self.write_checkpoint(shard).await {
                    Ok(()) => break,
                    Err(LeaseError::Lost { .. }) => {
                        tracing::warn!(shard = %shard.origin.shard_id, "shard lease lost while checkpointing; shard stopped");
                        return ShardExit::Lost;
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(shard = %shard.origin.shard_id, %error, "cannot write checkpoint; retrying");
                        tokio::time::sleep(retry_delay(
                            failures,
                            SOURCE_BACKOFF,
                            SOURCE_BACKOFF_MAX,
                        ))
                        .await;
                    }
                }
            }
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        }
    }

    /// Where reading starts: after the checkpoint, else a child shard at its beginning (its
    /// parents were read to their end), else the mapping's starting position.
    fn start_position(&self, lease: &ShardLease) -> ShardPosition {
        match &lease.checkpoint {
            Some(Checkpoint::SequenceNumber(sequence)) => {
                ShardPosition::AfterSequenceNumber(sequence.clone())
            }
            _ if !lease.parent_shard_ids.is_empty() => ShardPosition::TrimHorizon,
            _ => self.settings.starting_position.clone(),
        }
    }

    /// An iterator at `position`, retrying throttling and errors with backoff. Returns the
    /// iterator and a sequence number to skip (see below), or the shard's exit.
    async fn iterator(
        &self,
        shard: &ShardRun,
        position: &ShardPosition,
    ) -> Result<(String, Option<String>), ShardExit> {
        let shard_id = &*shard.origin.shard_id;
        let mut position = position.clone();
        let mut failures = 0u32;
        loop {
            if shard.draining() {
                return Err(ShardExit::Stopped);
            }
            let error = match self.stream.shard_iterator(shard_id, &position).await {
                Ok(iterator) => {
                    let skip = match &position {
                        ShardPosition::AtSequenceNumber(sequence) => Some(sequence.clone()),
                        _ => None,
                    };
                    return Ok((iterator, skip));
                }
                Err(error) => error,
            };
            failures += 1;
            match (&error, &position) {
                (StreamError::NotFound(_), _) => return Err(ShardExit::Gone),
                (StreamError::Trimmed(_), _) => {
                    self.trimmed(shard, &error);
                    position = ShardPosition::TrimHorizon;
                    continue;
                }
                // DynamoDB Local fails AFTER_SEQUENCE_NUMBER at the last record of a shard:
                // start at the record itself and skip it.
                (StreamError::Other(_), ShardPosition::AfterSequenceNumber(sequence)) => {
                    position = ShardPosition::AtSequenceNumber(sequence.clone());
                }
                _ => {}
            }
            self.source_error(shard, "GetShardIterator", &error);
            let delay = retry_delay(failures, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX);
            if !shard.pause(delay).await {
                return Err(ShardExit::Stopped);
            }
        }
    }

    fn trimmed(&self, shard: &ShardRun, error: &StreamError) {
        self.metrics.source_errors.inc();
        let problem = format!(
            "shard {}: records were trimmed before they were read ({error}); reading resumes at the oldest record",
            shard.origin.shard_id
        );
        tracing::error!("{problem}");
        self.results.problem(problem);
    }

    fn source_error(&self, shard: &ShardRun, operation: &str, error: &StreamError) {
        self.metrics.source_errors.inc();
        if !matches!(error, StreamError::Throttled(_)) {
            self.results.problem(format!(
                "{operation} on shard {}: {error}",
                shard.origin.shard_id
            ));
        }
        tracing::warn!(shard = %shard.origin.shard_id, %error, kind = error.metric_label(), "{operation} failed; retrying");
    }

    /// Reads the shard in the poll rhythm and feeds the lanes, until the shard ends or the
    /// shard is drained. Dropping `lanes` tells the lanes no more records come.
    async fn read_shard(
        &self,
        lease: &ShardLease,
        shard: &ShardRun,
        lanes: Vec<mpsc::UnboundedSender<Vec<Pending>>>,
    ) -> ShardExit {
        let read_ahead = self.settings.read_ahead();
        let mut finished = shard.finished.subscribe();
        let (mut iterator, mut skip) = match self.iterator(shard, &self.start_position(lease)).await
        {
            Ok(start) => start,
            Err(exit) => return exit,
        };
        let mut last_read: Option<String> = None;
        let mut failures = 0u32;
        let mut next_poll = Instant::now();
        loop {
            if !shard.pause_until(next_poll).await {
                return ShardExit::Stopped;
            }
            // Read ahead of the checkpoint by a bounded number of records.
            loop {
                let outstanding = shard.outstanding();
                if outstanding < read_ahead {
                    break;
                }
                tokio::select! {
                    _ = finished.changed() => {}
                    _ = shard.drained() => return ShardExit::Stopped,
                }
            }
            let room = read_ahead - shard.outstanding();
            let limit = u32::try_from(room).unwrap_or(u32::MAX);
            let page = match self.stream.get_records(&iterator, limit).await {
                Ok(page) => page,
                Err(error) => {
                    failures += 1;
                    // Where to read again from with a fresh iterator, when one helps.
                    let restart = match &error {
                        StreamError::ExpiredIterator(_) => {
                            tracing::debug!(shard = %shard.origin.shard_id, "shard iterator expired; renewing");
                            match &last_read {
                                Some(sequence) => {
                                    ShardPosition::AfterSequenceNumber(sequence.clone())
                                }
                                None => self.start_position(lease),
                            }
                        }
                        StreamError::NotFound(_) => return ShardExit::Gone,
                        StreamError::Trimmed(_) => {
                            self.trimmed(shard, &error);
                            ShardPosition::TrimHorizon
                        }
                        StreamError::Throttled(_) | StreamError::Other(_) => {
                            self.source_error(shard, "GetRecords", &error);
                            next_poll = Instant::now()
                                + retry_delay(failures, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX);
                            continue;
                        }
                    };
                    match self.iterator(shard, &restart).await {
                        Ok((fresh, fresh_skip)) => {
                            iterator = fresh;
                            skip = fresh_skip;
                            continue;
                        }
                        Err(exit) => return exit,
                    }
                }
            };
            failures = 0;
            let busy =
                page.records.len() >= room || page.millis_behind_latest.is_some_and(|ms| ms > 0);
            if let Some(sequence) = page.records.last().map(|r| r.sequence_number.clone()) {
                last_read = Some(sequence);
            }
            let RecordPage {
                records,
                next_iterator,
                millis_behind_latest,
            } = page;
            shard.metrics.iterator_age.set(iterator_age(
                millis_behind_latest,
                records.last(),
                Timestamp::now(),
            ));
            // The record to skip is the first one an AT_SEQUENCE_NUMBER iterator returns.
            let had_records = !records.is_empty();
            self.dispatch(shard, records, skip.as_deref(), &lanes);
            if had_records {
                skip = None;
            }
            if !busy {
                // After the dispatch: a lane that sees this time has every record read by it.
                shard.caught_up.send_replace(Some(Timestamp::now()));
            }
            match next_iterator {
                Some(next) => iterator = next,
                None => return ShardExit::Finished,
            }
            next_poll = Instant::now()
                + if busy {
                    self.settings.busy_poll
                } else {
                    self.settings.idle_poll
                };
        }
    }

    /// Positions, filters and lanes the records of one page.
    fn dispatch(
        &self,
        shard: &ShardRun,
        records: Vec<StreamRecord>,
        skip: Option<&str>,
        lanes: &[mpsc::UnboundedSender<Vec<Pending>>],
    ) {
        shard.metrics.polled(records.len());
        let mut by_lane: Vec<Vec<Pending>> = (0..lanes.len()).map(|_| Vec::new()).collect();
        let mut filtered = 0;
        // One lock for the page: every record takes a position, filtered ones finish at once.
        let mut watermark = shard.watermark();
        for record in records {
            if skip == Some(record.sequence_number.as_str()) {
                continue;
            }
            let position = watermark.push();
            let record = StreamEventRecord {
                record,
                origin: shard.origin.clone(),
            };
            if !self.filters.matches(&record) {
                filtered += 1;
                watermark.finish(position, record.record.sequence_number);
                continue;
            }
            let lane = lane_of(record.record.ordering_key(), lanes.len());
            by_lane[lane].push(Pending {
                position,
                encoded_len: encoded_len(&record),
                record,
            });
        }
        drop(watermark);
        shard.notify_finished(filtered);
        shard.metrics.filtered_out(filtered);
        for (lane, records) in lanes.iter().zip(by_lane) {
            if !records.is_empty() {
                // A lane only goes away when the shard stops; its records are read again.
                let _ = lane.send(records);
            }
        }
    }
}

/// Milliseconds the reader is behind: MillisBehindLatest when the source says (Kinesis), else
/// the age of the last record read, 0 when the page was empty (caught up).
fn iterator_age(
    millis_behind_latest: Option<i64>,
    last: Option<&StreamRecord>,
    now: Timestamp,
) -> i64 {
    if let Some(millis) = millis_behind_latest {
        return millis;
    }
    last.and_then(|record| record.approximate_arrival)
        .map_or(0, |arrival| {
            now.duration_since(arrival).as_millis().max(0) as i64
        })
}

/// A record waiting in a lane.
#[derive(Debug)]
struct Pending {
    position: u64,
    record: StreamEventRecord,
    encoded_len: usize,
}

impl Measured for Pending {
    fn encoded_len(&self) -> usize {
        self.encoded_len
    }
}

/// What the reader, lanes and checkpointer of one shard share.
struct ShardRun {
    origin: Arc<StreamOrigin>,
    metrics: ShardMetrics,
    watermark: Mutex<Watermark>,
    /// Bumped whenever records finish: wakes the checkpointer and a reader waiting for room.
    finished: watch::Sender<u64>,
    /// When the reader last read everything the shard had (tumbling windows close on it).
    caught_up: watch::Sender<Option<Timestamp>>,
    /// Set when a write found another replica holding the shard: it stops at once.
    lost: watch::Sender<bool>,
    drain: watch::Receiver<bool>,
    hold: LeaseHold,
}

/// Until when this replica may act on a shard: the lease's duration (as written) after the
/// start of the last write that renewed it, a balancing round or a checkpoint. The renewTime
/// of that write is read from the clock after this start, so another replica (whose clock
/// agrees) cannot see the lease expire before the hold ends; once it ends, the shard stops
/// without waiting for the API server to say whether the lease was taken: it may be
/// unreachable, or answer too late.
#[derive(Clone)]
struct LeaseHold(Arc<Mutex<Instant>>);

impl LeaseHold {
    fn new(renewal_started: Instant, lease: &ShardLease) -> Self {
        Self(Arc::new(Mutex::new(renewal_started + lease.duration)))
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A write that started at `renewal_started` renewed `lease`.
    fn renewed(&self, renewal_started: Instant, lease: &ShardLease) {
        let mut until = self.until();
        *until = (*until).max(renewal_started + lease.duration);
    }

    /// Returns once the hold has ended (renewals only move it later).
    async fn expired(&self) {
        loop {
            let until = *self.until();
            if until <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

impl ShardRun {
    fn watermark(&self) -> std::sync::MutexGuard<'_, Watermark> {
        self.watermark
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks these records finished (their sequence numbers are taken), under one lock.
    fn finish(&self, records: &mut [Pending]) {
        let mut watermark = self.watermark();
        for pending in records.iter_mut() {
            watermark.finish(
                pending.position,
                std::mem::take(&mut pending.record.record.sequence_number),
            );
        }
        drop(watermark);
        self.notify_finished(records.len());
    }

    /// Wakes the checkpointer and a reader waiting for room when `count` records finished.
    fn notify_finished(&self, count: usize) {
        if count > 0 {
            self.finished
                .send_modify(|finished| *finished += count as u64);
        }
    }

    fn outstanding(&self) -> usize {
        self.watermark().outstanding()
    }

    fn is_complete(&self) -> bool {
        self.watermark().is_complete()
    }

    fn draining(&self) -> bool {
        *self.drain.borrow()
    }

    async fn lost(&self) {
        let mut lost = self.lost.subscribe();
        let _ = lost.wait_for(|l| *l).await;
    }

    async fn drained(&self) {
        let mut drain = self.drain.clone();
        let _ = drain.wait_for(|d| *d).await;
    }

    /// Sleeps `delay`; false when the shard is drained first.
    async fn pause(&self, delay: Duration) -> bool {
        self.pause_until(Instant::now() + delay).await
    }

    async fn pause_until(&self, deadline: Instant) -> bool {
        tokio::select! {
            _ = self.drained() => false,
            _ = tokio::time::sleep_until(deadline) => !self.draining(),
        }
    }
}

mod lane;
mod windowed;
use lane::{LaneClosed, receive};
use windowed::{OpenWindow, WindowCallKind};

#[cfg(test)]
mod tests;
