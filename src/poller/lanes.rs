//! Parallelization within a shard (SPEC §3.5): which lane a record goes to, and how far the
//! shard's checkpoint may move while lanes finish out of order. Pure.
use std::collections::VecDeque;

/// The lane of a record with ordering key `key` among `lanes` (>= 1): equal keys always share
/// a lane, so their records stay in order. FNV-1a: stable across processes and versions, so a
/// replica taking over a shard lanes it the same way.
pub fn lane_of(key: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % lanes as u64) as usize
}

/// The records of a shard read and not yet covered by the checkpoint, in shard order. Each
/// gets a position when read; lanes finish them in any order; the checkpoint is the last
/// record of the finished prefix.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Position of the first entry of `pending`.
    base: u64,
    /// `Some(sequence number)` once finished.
    pending: VecDeque<Option<String>>,
    /// Sequence number of the last record of the finished prefix...
    advanced: Option<String>,
    /// ...and whether it was written as the checkpoint.
    written: bool,
}

impl Watermark {
    /// Registers the next record read; returns its position.
    pub fn push(&mut self) -> u64 {
        self.pending.push_back(None);
        self.base + self.pending.len() as u64 - 1
    }

    /// Marks the record at `position` finished (processed, filtered out or discarded).
    /// Positions already covered are ignored.
    pub fn finish(&mut self, position: u64, sequence_number: String) {
        let Some(offset) = position.checked_sub(self.base) else {
            return;
        };
        if let Some(slot) = self.pending.get_mut(offset as usize) {
            *slot = Some(sequence_number);
        }
        while let Some(Some(_)) = self.pending.front() {
            self.advanced = self.pending.pop_front().flatten();
            self.written = false;
            self.base += 1;
        }
    }

    /// The checkpoint to write: the end of the finished prefix, unless already written. It
    /// stays pending until [`Watermark::written`] confirms it, so an interrupted write loses
    /// nothing.
    pub fn checkpoint(&self) -> Option<String> {
        self.advanced.clone().filter(|_| !self.written)
    }

    /// The last record of the finished prefix, written or not.
    pub fn finished(&self) -> Option<&str> {
        self.advanced.as_deref()
    }

    /// `sequence_number` was written as the checkpoint.
    pub fn written(&mut self, sequence_number: &str) {
        if self.advanced.as_deref() == Some(sequence_number) {
            self.written = true;
        }
    }

    /// Records read and not yet finished, or finished behind an unfinished one.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Every record read is finished.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_a_lane_and_keys_spread_over_lanes() {
        assert_eq!(lane_of("anything", 1), 0);
        let mut used = [0usize; 4];
        for key in 0..200 {
            let key = format!("customer-{key}");
            let lane = lane_of(&key, 4);
            assert_eq!(lane, lane_of(&key, 4));
            used[lane] += 1;
        }
        assert!(used.iter().all(|n| *n > 20), "{used:?}");
        assert_eq!(lane_of("customer-1", 4), 3, "stable across versions");
    }

    #[test]
    fn checkpoint_waits_for_the_oldest_unfinished_record() {
        let mut watermark = Watermark::default();
        let positions: Vec<u64> = (0..5).map(|_| watermark.push()).collect();
        assert_eq!(positions, [0, 1, 2, 3, 4]);
        watermark.finish(1, "s1".into());
        watermark.finish(3, "s3".into());
        assert_eq!(watermark.checkpoint(), None, "record 0 is still running");
        watermark.finish(0, "s0".into());
        assert_eq!(watermark.checkpoint().as_deref(), Some("s1"));
        assert_eq!(
            watermark.checkpoint().as_deref(),
            Some("s1"),
            "pending until written"
        );
        watermark.written("s0");
        assert_eq!(
            watermark.checkpoint().as_deref(),
            Some("s1"),
            "not that one"
        );
        watermark.written("s1");
        assert_eq!(watermark.checkpoint(), None, "written once");
        assert_eq!(watermark.outstanding(), 3);
        watermark.finish(2, "s2".into());
        assert_eq!(watermark.checkpoint().as_deref(), Some("s3"));
        assert!(!watermark.is_complete());
        watermark.finish(4, "s4".into());
        assert_eq!(watermark.checkpoint().as_deref(), Some("s4"));
        assert!(watermark.is_complete());
        watermark.written("s4");
        assert_eq!(watermark.push(), 5, "positions keep counting");
        watermark.finish(2, "stale".into());
        assert_eq!(
            watermark.checkpoint(),
            None,
            "covered positions are ignored"
        );
    }

    #[test]
    fn lanes_finishing_in_any_order_never_move_the_checkpoint_past_a_running_record() {
        // Two lanes: even positions in lane A, odd in lane B. Lane B finishes everything first.
        let mut watermark = Watermark::default();
        for _ in 0..10 {
            watermark.push();
        }
        for position in (1..10).step_by(2) {
            watermark.finish(position, format!("s{position}"));
            assert_eq!(watermark.checkpoint(), None);
        }
        let mut checkpoints = Vec::new();
        for position in (0..10).step_by(2) {
            watermark.finish(position, format!("s{position}"));
            if let Some(checkpoint) = watermark.checkpoint() {
                watermark.written(&checkpoint);
                checkpoints.push(checkpoint);
            }
        }
        assert_eq!(checkpoints, ["s1", "s3", "s5", "s7", "s9"]);
    }
}
