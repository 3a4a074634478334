//! Batch assembly (SPEC §3.4, §4.1): a batch is sent when it holds `batchSize` records, when
//! its batching window has passed, or when the next record would take the event past the 6 MB
//! payload limit. Pure apart from [`fill`], which drives a receive function and the clock.
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::{MAX_PAYLOAD_BYTES, event_len};

/// A record with its encoded size in the event ([`crate::event::encoded_len`]).
pub trait Measured {
    fn encoded_len(&self) -> usize;
}

/// When a batch is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records per batch (`batchSize`).
    pub max_records: usize,
    /// How long the first record of a batch waits for more (`maximumBatchingWindowInSeconds`).
    pub window: Duration,
    /// Most bytes of the event, envelope included.
    pub max_payload_bytes: usize,
}

impl BatchLimits {
    /// Limits with Lambda's 6 MB payload cap.
    pub fn new(max_records: usize, window: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            window,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
        }
    }
}

/// A record that does not fit an event even alone; it is handed back, never dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized<T> {
    pub record: T,
    /// The event it would need.
    pub event_bytes: usize,
}

/// The batch being assembled, plus records that arrived once it was full: those start the next
/// batch, in arrival order.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    records: Vec<T>,
    record_bytes: usize,
    deadline: Option<Instant>,
    /// The open batch cannot take the next record (count or payload).
    sealed: bool,
    carried: VecDeque<T>,
    oversized: Vec<Oversized<T>>,
}

impl<T: Measured> Batcher<T> {
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            records: Vec::new(),
            record_bytes: 0,
            deadline: None,
            sealed: false,
            carried: VecDeque::new(),
            oversized: Vec::new(),
        }
    }

    /// Records the open batch still takes; what the next receive should ask for.
    pub fn room(&self) -> usize {
        if self.sealed {
            0
        } else {
            self.limits.max_records - self.records.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When the open batch's window ends; `None` while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The open batch should be sent at `now`: it is full, or its window has passed.
    pub fn is_ready(&self, now: Instant) -> bool {
        !self.records.is_empty() && (self.room() == 0 || self.deadline.is_some_and(|d| now >= d))
    }

    /// Adds a record that arrived at `now`: to the open batch when it fits, else to the next.
    /// A record too large for any event goes to [`Batcher::take_oversized`].
    pub fn push(&mut self, record: T, now: Instant) {
        let len = record.encoded_len();
        let alone = event_len(1, len);
        if alone > self.limits.max_payload_bytes {
            self.oversized.push(Oversized {
                record,
                event_bytes: alone,
            });
            return;
        }
        // Behind records already carried over, to keep arrival order.
        if self.sealed || !self.carried.is_empty() || !self.fits(len) {
            self.sealed = true;
            self.carried.push_back(record);
            return;
        }
        self.add(record, len, now);
    }

    fn fits(&self, len: usize) -> bool {
        self.records.len() < self.limits.max_records
            && event_len(self.records.len() + 1, self.record_bytes + len)
                <= self.limits.max_payload_bytes
    }

    fn add(&mut self, record: T, len: usize, now: Instant) {
        if self.records.is_empty() {
            self.deadline = Some(now + self.limits.window);
        }
        self.record_bytes += len;
        self.records.push(record);
        if self.records.len() == self.limits.max_records {
            self.sealed = true;
        }
    }

    /// Size of the open batch's event.
    #[cfg(test)]
    fn event_len(&self) -> usize {
        event_len(self.records.len(), self.record_bytes)
    }

    /// Takes the open batch. Records carried over stay until [`Batcher::open_next`].
    pub fn take(&mut self) -> Vec<T> {
        self.record_bytes = 0;
        self.deadline = None;
        self.sealed = false;
        std::mem::take(&mut self.records)
    }

    /// Moves carried records into the open batch, as if they arrived at `now`.
    pub fn open_next(&mut self, now: Instant) {
        while let Some(record) = self.carried.pop_front() {
            let len = record.encoded_len();
            if self.sealed || !self.fits(len) {
                self.sealed = true;
                self.carried.push_front(record);
                break;
            }
            self.add(record, len, now);
        }
    }

    /// Removes the records `drop` selects, from the open batch and the carried ones, and
    /// returns them in arrival order (FIFO: messages that must not overtake a message of their
    /// group that failed or could not be sent).
    pub fn remove(&mut self, mut drop: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.records.len());
        for record in self.records.drain(..) {
            if drop(&record) {
                removed.push(record);
            } else {
                kept.push(record);
            }
        }
        self.records = kept;
        self.record_bytes = self.records.iter().map(Measured::encoded_len).sum();
        if self.records.is_empty() {
            self.deadline = None;
        }
        self.sealed = self.records.len() == self.limits.max_records;
        let mut carried = VecDeque::with_capacity(self.carried.len());
        for record in self.carried.drain(..) {
            if drop(&record) {
                removed.push(record);
            } else {
                carried.push_back(record);
            }
        }
        self.carried = carried;
        removed
    }

    /// Records too large for any event, since the last call.
    pub fn take_oversized(&mut self) -> Vec<Oversized<T>> {
        std::mem::take(&mut self.oversized)
    }

    /// Everything held, open batch first (shutdown: these are handed back to the source).
    pub fn drain(&mut self) -> Vec<T> {
        let mut all = std::mem::take(&mut self.records);
        all.extend(self.carried.drain(..));
        all.extend(self.oversized.drain(..).map(|o| o.record));
        self.record_bytes = 0;
        self.deadline = None;
        self.sealed = false;
        all
    }
}

/// Receives until the open batch (started with the records carried over) is ready.
/// `receive(max, wait, idle)` asks the source for up to `max` records, waiting up to `wait` for
/// the first (a long poll). With an empty batch (`idle`: nothing gathered) the wait is
/// `long_poll`; once a batch is open, the time left in its window (rounded up to whole seconds,
/// as SQS counts WaitTimeSeconds), so a batch is sent with the first receive that returns after
/// its window. An error leaves the records gathered so far in the batcher.
pub async fn fill<T, E, F, Fut>(
    batcher: &mut Batcher<T>,
    long_poll: Duration,
    mut receive: F,
) -> Result<(), E>
where
    T: Measured,
    F: FnMut(usize, Duration, bool) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    batcher.open_next(Instant::now());
    loop {
        let now = Instant::now();
        if batcher.is_ready(now) {
            return Ok(());
        }
        let (wait, idle) = match batcher.deadline() {
            None => (long_poll, true),
            Some(deadline) => (ceil_seconds(deadline - now).min(long_poll), false),
        };
        let records = receive(batcher.room(), wait, idle).await?;
        let now = Instant::now();
        for record in records {
            batcher.push(record, now);
        }
    }
}

fn ceil_seconds(duration: Duration) -> Duration {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    Duration::from_secs(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rec {
        id: u32,
        len: usize,
    }

    impl Measured for Rec {
        fn encoded_len(&self) -> usize {
            self.len
        }
    }

    fn rec(id: u32) -> Rec {
        Rec { id, len: 100 }
    }

    fn ids(records: &[Rec]) -> Vec<u32> {
        records.iter().map(|r| r.id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_is_sent_at_once() {
        let mut batcher = Batcher::new(BatchLimits::new(3, Duration::from_secs(60)));
        let now = Instant::now();
        for id in 0..5 {
            batcher.push(rec(id), now);
        }
        assert!(batcher.is_ready(now));
        assert_eq!(ids(&batcher.take()), [0, 1, 2]);
        // The two extra records open the next batch, with its own window.
        batcher.open_next(now);
        assert_eq!(batcher.room(), 1);
        assert!(!batcher.is_ready(now));
        assert_eq!(batcher.deadline(), Some(now + Duration::from_secs(60)));
        assert_eq!(ids(&batcher.take()), [3, 4]);
        batcher.open_next(now);
        assert!(batcher.is_empty());
        assert_eq!(batcher.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn payload_cap_splits_batches_and_never_passes_it() {
        let limits = BatchLimits {
            max_records: 100,
            window: Duration::from_secs(1),
            max_payload_bytes: 1000,
        };
        let mut batcher = Batcher::new(limits);
        let now = Instant::now();
        for id in 0..25 {
            batcher.push(Rec { id, len: 150 }, now);
        }
        let mut sent = Vec::new();
        while !batcher.is_empty() {
            assert!(batcher.event_len() <= 1000, "{}", batcher.event_len());
            sent.push(ids(&batcher.take()));
            batcher.open_next(now);
        }
        // 6 records: 14 + 6*150 + 5 = 919 bytes; a 7th would make 1070.
        assert_eq!(sent.len(), 5);
        assert!(sent.iter().take(4).all(|b| b.len() == 6), "{sent:?}");
        assert_eq!(sent.concat(), (0..25).collect::<Vec<_>>(), "order kept");
    }

    #[tokio::test(start_paused = true)]
    async fn record_too_large_alone_is_handed_back() {
        let limits = BatchLimits {
            max_records: 10,
            window: Duration::ZERO,
            max_payload_bytes: 1000,
        };
        let mut batcher = Batcher::new(limits);
        let now = Instant::now();
        batcher.push(rec(1), now);
        batcher.push(Rec { id: 2, len: 990 }, now);
        batcher.push(rec(3), now);
        let oversized = batcher.take_oversized();
        assert_eq!(oversized.len(), 1);
        assert_eq!(oversized[0].record.id, 2);
        assert_eq!(oversized[0].event_bytes, 1004);
        assert_eq!(ids(&batcher.take()), [1, 3]);
        assert!(batcher.take_oversized().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn window_gathers_several_receives() {
        let limits = BatchLimits::new(100, Duration::from_secs(5));
        let mut batcher = Batcher::new(limits);
        let start = Instant::now();
        let waits = RefCell::new(Vec::new());
        let next_id = RefCell::new(0);
        // A source that has 3 records per second.
        fill(&mut batcher, Duration::from_secs(20), |max, wait, _| {
            waits.borrow_mut().push((max, wait));
            let next_id = &next_id;
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut id = next_id.borrow_mut();
                let records: Vec<Rec> = (*id..*id + 3).map(rec).collect();
                *id += 3;
                Ok::<_, ()>(records)
            }
        })
        .await
        .unwrap();
        // The first records arrived at 1 s; the window closes 5 s later.
        assert_eq!(Instant::now() - start, Duration::from_secs(6));
        assert_eq!(batcher.take().len(), 18);
        let waits = waits.into_inner();
        assert_eq!(waits[0], (100, Duration::from_secs(20)));
        assert_eq!(waits[1], (97, Duration::from_secs(5)));
        assert_eq!(waits[5], (85, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_sends_what_the_first_receive_brings() {
        let mut batcher = Batcher::new(BatchLimits::new(10, Duration::ZERO));
        let calls = RefCell::new(0);
        fill(&mut batcher, Duration::from_secs(20), |_, _, _| {
            *calls.borrow_mut() += 1;
            let first = *calls.borrow() == 1;
            async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    Ok::<_, ()>(vec![])
                } else {
                    Ok(vec![rec(1), rec(2)])
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(*calls.borrow(), 2, "an empty long poll is repeated");
        assert_eq!(ids(&batcher.take()), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn batch_size_ends_the_window_early() {
        let mut batcher = Batcher::new(BatchLimits::new(25, Duration::from_secs(300)));
        let start = Instant::now();
        fill(
            &mut batcher,
            Duration::from_secs(20),
            |max, _, _| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, ()>((0..max.min(10) as u32).map(rec).collect())
            },
        )
        .await
        .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(300));
        assert_eq!(batcher.take().len(), 25);
    }

    #[tokio::test(start_paused = true)]
    async fn receive_errors_keep_gathered_records() {
        let mut batcher = Batcher::new(BatchLimits::new(10, Duration::from_secs(5)));
        let calls = RefCell::new(0);
        let result = fill(&mut batcher, Duration::from_secs(20), |_, _, _| {
            *calls.borrow_mut() += 1;
            let call = *calls.borrow();
            async move {
                if call == 1 {
                    Ok(vec![rec(1)])
                } else {
                    Err("throttled")
                }
            }
        })
        .await;
        assert_eq!(result, Err("throttled"));
        assert_eq!(ids(&batcher.drain()), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn records_can_be_removed_from_open_and_carried() {
        let mut batcher = Batcher::new(BatchLimits::new(2, Duration::ZERO));
        let now = Instant::now();
        for id in 0..5 {
            batcher.push(rec(id), now);
        }
        assert_eq!(ids(&batcher.remove(|r| r.id == 1 || r.id == 3)), [1, 3]);
        // The open batch has room again, but carried records only join at open_next.
        assert_eq!(ids(&batcher.take()), [0]);
        batcher.open_next(now);
        assert_eq!(ids(&batcher.take()), [2, 4]);
        batcher.open_next(now);
        assert!(batcher.is_empty());
    }
}
