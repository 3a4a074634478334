//! The lane of a shard with tumbling windows (Lambda's stateful stream processing).
//!
//! Records go to the window of their arrival time; a batch never spans two windows. Each call
//! carries the open window's state and the answer's `state` replaces it. A window closes with
//! a final call (`isFinalInvokeForWindow`, no records) when a record of a later window is read,
//! when the shard ends, or when the reader has been caught up past the window's end plus a
//! grace time; that call is retried until it succeeds, and nothing of the next window is sent
//! before it did (Lambda "suspends further processing until a successful invocation"). A state
//! above [`MAX_STATE_BYTES`] closes the window early (`isWindowTerminatedEarly`) and the same
//! window goes on with a fresh state.
//!
//! The state is kept with the checkpoint it is valid for ([`ShardLeaseStore::save_window`]),
//! written at most every [`CHECKPOINT_INTERVAL`] while it changes, after each window closes and
//! when the shard stops; a restart resumes from it.
use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    CHECKPOINT_INTERVAL, LANE_IDLE_WAIT, LaneClosed, Pending, RETRY_BACKOFF_MAX, SOURCE_BACKOFF,
    SOURCE_BACKOFF_MAX, ShardExit, ShardRun, StreamIdentity, StreamPoller, receive,
};
use crate::destination::Deliver;
use crate::event::encode_event;
use crate::poller::batch::Batcher;
use crate::poller::checkpoint::{LeaseError, ShardLeaseStore};
use crate::poller::retry::retry_delay;
use crate::poller::window::{
    MAX_STATE_BYTES, Placement, StoredWindow, TumblingWindows, Window, WindowCall,
    add_window_fields, empty_state,
};
use crate::sources::sharded::ShardedStream;
use crate::target::{Invoke, Outcome};

/// The shard's window as the lane carries it.
#[derive(Debug)]
pub(super) struct OpenWindow {
    window: Option<Window>,
    state: Box<RawValue>,
    /// Changed since it was last saved...
    unsaved: bool,
    /// ...or the checkpoint moved past this one, the last saved (at the start, the stored
    /// one: until the lane finishes records of its own a save keeps it, never going back).
    saved_checkpoint: Option<String>,
}

/// Which call of a window an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WindowCallKind {
    /// Records of the window, to aggregate.
    Aggregate,
    /// The window's last call (`isFinalInvokeForWindow`).
    Final,
    /// The state outgrew its limit: a last call for it (both flags), then the same window
    /// goes on with a fresh state.
    TerminatedEarly,
}

impl OpenWindow {
    fn resume(stored: Option<StoredWindow>) -> Self {
        match stored {
            Some(stored) => Self {
                window: stored.window,
                state: stored.state,
                saved_checkpoint: stored.checkpoint,
                unsaved: false,
            },
            None => Self {
                window: None,
                state: empty_state(),
                unsaved: false,
                saved_checkpoint: None,
            },
        }
    }

    /// The event of a call in the open window.
    pub(super) fn add_fields(
        &self,
        event: Vec<u8>,
        shard: &ShardRun,
        identity: &StreamIdentity,
        kind: WindowCallKind,
    ) -> Vec<u8> {
        let window = self
            .window
            .expect("a windowed call is made in an open window");
        add_window_fields(
            event,
            &WindowCall {
                window,
                state: &self.state,
                shard_id: &shard.origin.shard_id,
                event_source_arn: &identity.stream_arn,
                is_final: kind != WindowCallKind::Aggregate,
                terminated_early: kind == WindowCallKind::TerminatedEarly,
            },
        )
    }

    /// Takes the state a target answered; true when it is above the limit (the window ends
    /// early).
    pub(super) fn replace_state(&mut self, state: Box<RawValue>) -> bool {
        self.state = state;
        self.unsaved = true;
        self.state.get().len() > MAX_STATE_BYTES
    }

    fn open(&mut self, window: Window) {
        self.window = Some(window);
        self.state = empty_state();
        self.unsaved = true;
    }

    fn stored(&self, shard: &ShardRun) -> StoredWindow {
        StoredWindow {
            checkpoint: shard
                .watermark()
                .finished()
                .map(str::to_owned)
                .or_else(|| self.saved_checkpoint.clone()),
            window: self.window,
            state: self.state.clone(),
        }
    }
}

impl<S, L, T, D> StreamPoller<S, L, T, D>
where
    S: ShardedStream + 'static,
    L: ShardLeaseStore + 'static,
    T: Invoke,
    D: Deliver,
{
    /// The shard's stored window state, retrying errors until it is read or the shard is
    /// drained. An unreadable object is reported and left as it is: the shard waits for it to
    /// be fixed or deleted rather than lose the aggregate.
    pub(super) async fn load_window(
        &self,
        shard: &ShardRun,
    ) -> Result<Option<StoredWindow>, ShardExit> {
        let shard_id = &*shard.origin.shard_id;
        let mut failures = 0u32;
        loop {
            let error = match self.leases.load_window(shard_id).await {
                Ok(stored) => return Ok(stored),
                Err(error) => error,
            };
            failures += 1;
            let problem = format!("shard {shard_id}: {error}");
            tracing::warn!("{problem}");
            self.results.problem(problem);
            if !shard
                .pause(retry_delay(failures, SOURCE_BACKOFF, SOURCE_BACKOFF_MAX))
                .await
            {
                return Err(ShardExit::Stopped);
            }
        }
    }

    /// A shard's lane with tumbling windows: until its channel closes (the reader stopped)
    /// and its last window closed, or the shard is drained or lost.
    pub(super) async fn run_window_lane(
        self: Arc<Self>,
        shard: Arc<ShardRun>,
        mut receiver: mpsc::UnboundedReceiver<Vec<Pending>>,
        windows: TumblingWindows,
        stored: Option<StoredWindow>,
    ) {
        let mut open = OpenWindow::resume(stored);
        let mut batcher = Batcher::new(self.batch_limits());
        // Read records not yet in a batch, in shard order.
        let mut waiting: VecDeque<Pending> = VecDeque::new();
        let mut reader_gone = false;
        let mut last_save = Instant::now();
        loop {
            // Read before receiving: every record read by then is in the channel.
            let caught_up = *shard.caught_up.borrow();
            if !reader_gone && waiting.is_empty() {
                let now = Instant::now();
                let wait = batcher
                    .deadline()
                    .map_or(LANE_IDLE_WAIT, |deadline| {
                        deadline.saturating_duration_since(now)
                    })
                    .min(LANE_IDLE_WAIT);
                tokio::select! {
                    _ = shard.drained() => {}
                    received = receive(&mut receiver, wait) => match received {
                        Ok(records) => waiting.extend(records),
                        Err(LaneClosed) => reader_gone = true,
                    },
                }
            }
            if shard.draining() {
                self.save_window(&shard, &mut open).await;
                return;
            }
            let boundary = self.fill_window(&mut batcher, &mut waiting, &mut open, windows);
            if !self.discard_oversized(&shard, &mut batcher).await {
                self.save_window(&shard, &mut open).await;
                return;
            }
            let now = Instant::now();
            if batcher.is_ready(now) || ((boundary || reader_gone) && !batcher.is_empty()) {
                let batch = batcher.take();
                batcher.open_next(now);
                if !self.process(&shard, batch, Some(&mut open)).await {
                    self.save_window(&shard, &mut open).await;
                    return;
                }
            } else if boundary || (batcher.is_empty() && waiting.is_empty()) {
                let closes = open.window.is_some_and(|window| {
                    boundary || reader_gone || windows.may_close(window, caught_up)
                });
                if closes {
                    let closed = self
                        .close_window(&shard, &mut open, WindowCallKind::Final)
                        .await;
                    self.save_window(&shard, &mut open).await;
                    if !closed {
                        return;
                    }
                    last_save = Instant::now();
                    continue;
                }
                if reader_gone && waiting.is_empty() && batcher.is_empty() {
                    self.save_window(&shard, &mut open).await;
                    return;
                }
            }
            if open.unsaved && last_save.elapsed() >= CHECKPOINT_INTERVAL {
                self.save_window(&shard, &mut open).await;
                last_save = Instant::now();
            }
            if *shard.lost.borrow() {
                return;
            }
        }
    }

    /// Moves waiting records of the open window (opening one when none is) into the batch.
    /// True when the next waiting record belongs to a later window: the open one ends.
    fn fill_window(
        &self,
        batcher: &mut Batcher<Pending>,
        waiting: &mut VecDeque<Pending>,
        open: &mut OpenWindow,
        windows: TumblingWindows,
    ) -> bool {
        let now = Instant::now();
        let stamp = k8s_openapi::jiff::Timestamp::now();
        while let Some(next) = waiting.front() {
            let arrival = next.record.record.approximate_arrival.unwrap_or(stamp);
            match windows.place(open.window, arrival) {
                Placement::Open => {}
                Placement::Opens(window) if open.window.is_none() => open.open(window),
                Placement::Opens(_) => return true,
            }
            if batcher.room() == 0 {
                return false;
            }
            let record = waiting.pop_front().expect("the front was just seen");
            batcher.push(record, now);
        }
        false
    }

    /// The last call of the open window (`kind` Final or TerminatedEarly), with its state and
    /// no records, retried until the target takes it (with a state). False when the shard was
    /// drained first: the window stays open for the next holder.
    pub(super) async fn close_window(
        &self,
        shard: &ShardRun,
        open: &mut OpenWindow,
        kind: WindowCallKind,
    ) -> bool {
        let shard_id = &*shard.origin.shard_id;
        let mut failures = 0u32;
        loop {
            let event = encode_event::<serde_json::Value>([], 0);
            let event = open.add_fields(event, shard, &self.identity, kind);
            let answer = self.call_target(shard, event, 0, failures, None).await;
            let outcome = answer.outcome;
            let failure = match outcome {
                Outcome::Failure(reason) => Some(reason),
                Outcome::Success | Outcome::PartialFailure(_) => None,
            };
            let Some(reason) = failure else {
                self.results.ok();
                // After an early end the same window goes on, with a fresh state.
                open.state = empty_state();
                open.unsaved = true;
                if kind == WindowCallKind::Final {
                    open.window = None;
                }
                return true;
            };
            failures += 1;
            let problem = format!(
                "shard {shard_id}: the last call of the window starting {} failed (attempt {failures}); the shard waits for it: {reason}",
                open.window.map(|w| w.start.to_string()).unwrap_or_default()
            );
            tracing::warn!("{problem}");
            self.results.problem(problem);
            let delay = retry_delay(failures, self.settings.retry_backoff, RETRY_BACKOFF_MAX);
            if !shard.pause(delay).await {
                return false;
            }
        }
    }

    /// Writes the window state with the checkpoint it is valid for. A write that fails is
    /// retried at the next save (the state stays unsaved); one that finds the shard taken by
    /// another replica stops the shard.
    async fn save_window(&self, shard: &ShardRun, open: &mut OpenWindow) {
        let stored = open.stored(shard);
        if !open.unsaved && stored.checkpoint == open.saved_checkpoint {
            return;
        }
        match self
            .leases
            .save_window(&shard.origin.shard_id, &stored)
            .await
        {
            Ok(()) => {
                open.unsaved = false;
                open.saved_checkpoint = stored.checkpoint;
            }
            Err(LeaseError::Lost { .. }) => {
                tracing::warn!(shard = %shard.origin.shard_id, "the shard's window state was written by another replica; shard stopped");
                shard.lost.send_replace(true);
            }
            Err(error) => {
                tracing::warn!(shard = %shard.origin.shard_id, %error, "cannot write the window state; retrying at the next save");
                open.unsaved = true;
            }
        }
    }
}
