//! What happens to a stream batch after the target answered (SPEC §3.6): pure, so every rule
//! is tested without a clock or a network.
//!
//! A batch is worked through as [`Segment`]s: ranges of its records, sent one after the other
//! so records keep their order. After each call, [`RetryPolicy::next`] says which records are
//! done, which segments are sent next (a retry, or the two halves of a bisection) and which
//! records are given up on. Bisection and the cut at a partial batch failure never count as a
//! retry: each makes the segment strictly smaller, so they always end.
use std::ops::Range;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::EventSourceMappingSpec;
use crate::target::Outcome;

/// First pause before a counted retry of a failed stream batch; doubles up to the max.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// 1, 2, 4, 8, then every 12 s: about 8 attempts within a 60 s record age, as recorded on AWS
/// (a 60 s cap made 6). The pause starts over at its first step once a call made progress.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(12);

/// Why records were given up on; the `condition` of the on-failure invocation record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DiscardCondition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
}

impl DiscardCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardCondition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            DiscardCondition::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// A mapping's error handling for streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of a segment before it is discarded; `None`: until it succeeds or expires.
    pub max_retries: Option<u32>,
    /// Records older than this are discarded instead of sent; `None`: never.
    pub max_record_age: Option<Duration>,
    pub bisect_on_error: bool,
}

impl RetryPolicy {
    pub fn from_spec(spec: &EventSourceMappingSpec) -> Self {
        Self {
            max_retries: spec
                .maximum_retry_attempts
                .and_then(|n| u32::try_from(n).ok()),
            max_record_age: spec
                .maximum_record_age_in_seconds
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
            bisect_on_error: spec.bisect_batch_on_target_error.unwrap_or(false),
        }
    }
}

/// Records of a batch sent together, with the retries they have used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub range: Range<usize>,
    /// Failed calls counted against `maximumRetryAttempts`.
    pub retries: u32,
}

impl Segment {
    pub fn whole(len: usize) -> Self {
        Self::fresh(0..len)
    }

    /// Records with their whole retry budget.
    pub fn fresh(range: Range<usize>) -> Self {
        Self { range, retries: 0 }
    }

    fn len(&self) -> usize {
        self.range.len()
    }
}

/// What to do after one call for a segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextStep {
    /// Records that succeeded.
    pub done: Range<usize>,
    /// Segments to send next, in this order, before the rest of the batch.
    pub send: Vec<Segment>,
    /// Records given up on: sent to the on-failure destination, then done.
    pub discard: Option<Range<usize>>,
    /// The next send is a counted retry: wait before it.
    pub backoff: bool,
}

impl RetryPolicy {
    /// The step after `outcome` for `segment`; positions in a partial failure are relative to
    /// the segment.
    ///
    /// A partial failure that moved the checkpoint (records before the first failed one
    /// succeeded) is progress, as AWS counts it: the rest is sent again at once with a fresh
    /// retry budget, so the backoff starts over too. One that failed at its first record is a
    /// failed call; when its budget is spent, the failed records at its front are given up on
    /// and the records after them go on with a fresh budget: a record the target did not list
    /// is never discarded.
    pub fn next(&self, segment: &Segment, outcome: &Outcome) -> NextStep {
        let start = segment.range.start;
        let end = segment.range.end;
        match outcome {
            Outcome::Success => NextStep {
                done: segment.range.clone(),
                ..NextStep::default()
            },
            Outcome::PartialFailure(failed) => {
                let first_failed = start + failed.first().copied().unwrap_or(0).min(segment.len());
                if first_failed > start {
                    return NextStep {
                        done: start..first_failed,
                        send: vec![Segment::fresh(first_failed..end)],
                        ..NextStep::default()
                    };
                }
                let mut step = self.after_failure(segment.clone());
                if let Some(discarded) = &mut step.discard {
                    // Only records the target listed are given up on: the run of failed
                    // records at the front.
                    let run = failed
                        .iter()
                        .zip(failed[0]..)
                        .take_while(|(f, n)| *f == n)
                        .count();
                    let past_run = (start + run).min(end);
                    discarded.end = past_run;
                    if past_run < end {
                        step.send.push(Segment::fresh(past_run..end));
                    }
                }
                step
            }
            Outcome::Failure(_) => self.after_failure(segment.clone()),
        }
    }

    /// `segment` failed as a whole.
    fn after_failure(&self, segment: Segment) -> NextStep {
        let (start, end) = (segment.range.start, segment.range.end);
        if start == end {
            return NextStep {
                done: start..start,
                ..NextStep::default()
            };
        }
        if self.bisect_on_error && segment.len() > 1 {
            let middle = start + segment.len() / 2;
            return NextStep {
                done: start..start,
                send: vec![
                    Segment {
                        range: start..middle,
                        retries: segment.retries,
                    },
                    Segment {
                        range: middle..end,
                        retries: segment.retries,
                    },
                ],
                ..NextStep::default()
            };
        }
        if self.max_retries.is_some_and(|max| segment.retries >= max) {
            return NextStep {
                done: start..start,
                discard: Some(segment.range),
                ..NextStep::default()
            };
        }
        NextStep {
            done: start..start,
            send: vec![Segment {
                range: segment.range,
                retries: segment.retries + 1,
            }],
            backoff: true,
            ..NextStep::default()
        }
    }

    /// How many records at the start of `arrivals` (a segment's records in order) are older
    /// than the maximum record age at `now`. Records without an arrival time never expire.
    pub fn expired_prefix(
        &self,
        arrivals: impl IntoIterator<Item = Option<Timestamp>>,
        now: Timestamp,
    ) -> usize {
        let Some(max_age) = self.max_record_age else {
            return 0;
        };
        let max_age = SignedDuration::try_from(max_age).unwrap_or(SignedDuration::MAX);
        arrivals
            .into_iter()
            .take_while(|arrival| arrival.is_some_and(|at| now.duration_since(at) > max_age))
            .count()
    }
}

/// Pause before a counted retry: `base`, doubling per retry already made, at most `max`.
pub fn retry_delay(retries: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << retries.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: Option<u32>, bisect: bool) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            max_record_age: None,
            bisect_on_error: bisect,
        }
    }

    fn segment(range: Range<usize>, retries: u32) -> Segment {
        Segment { range, retries }
    }

    fn failure() -> Outcome {
        Outcome::Failure("HTTP 500".into())
    }

    #[test]
    fn success_finishes_the_segment() {
        let step = policy(None, true).next(&segment(3..8, 2), &Outcome::Success);
        assert_eq!(
            step,
            NextStep {
                done: 3..8,
                ..NextStep::default()
            }
        );
    }

    #[test]
    fn failures_retry_the_whole_segment_forever_by_default() {
        let policy = policy(None, false);
        let mut current = segment(0..10, 0);
        for retry in 1..=50 {
            let step = policy.next(&current, &failure());
            assert!(step.done.is_empty() && step.discard.is_none() && step.backoff);
            assert_eq!(step.send, [segment(0..10, retry)]);
            current = step.send[0].clone();
        }
    }

    #[test]
    fn retries_run_out_then_the_segment_is_discarded() {
        let policy = policy(Some(2), false);
        let first = policy.next(&segment(0..4, 0), &failure());
        assert_eq!(first.send, [segment(0..4, 1)]);
        let second = policy.next(&first.send[0], &failure());
        assert_eq!(second.send, [segment(0..4, 2)]);
        let third = policy.next(&second.send[0], &failure());
        assert_eq!(third.discard, Some(0..4));
        assert!(third.send.is_empty());

        let none = RetryPolicy {
            max_retries: Some(0),
            ..policy
        };
        assert_eq!(
            none.next(&segment(0..4, 0), &failure()).discard,
            Some(0..4),
            "0 retries: discarded after the first failure"
        );
    }

    #[test]
    fn bisection_halves_without_using_retries() {
        let policy = policy(Some(0), true);
        let step = policy.next(&segment(0..7, 0), &failure());
        assert_eq!(step.send, [segment(0..3, 0), segment(3..7, 0)]);
        assert!(!step.backoff, "halves are sent at once");
        // A single record cannot be split: its failures count.
        let single = policy.next(&segment(5..6, 0), &failure());
        assert_eq!(single.discard, Some(5..6));
    }

    /// Drives a batch with one poison record through the policy: only the poison record is
    /// discarded, after its own retries; every other record succeeds.
    #[test]
    fn bisection_isolates_a_poison_record() {
        let policy = policy(Some(2), true);
        let poison = 37;
        let mut queue = std::collections::VecDeque::from([Segment::whole(100)]);
        let (mut done, mut discarded, mut calls) = (Vec::new(), Vec::new(), 0);
        while let Some(current) = queue.pop_front() {
            calls += 1;
            let outcome = if current.range.contains(&poison) {
                failure()
            } else {
                Outcome::Success
            };
            let step = policy.next(&current, &outcome);
            done.extend(step.done);
            discarded.extend(step.discard.into_iter().flatten());
            for next in step.send.into_iter().rev() {
                queue.push_front(next);
            }
        }
        assert_eq!(discarded, [poison]);
        let mut expected: Vec<usize> = (0..100).filter(|i| *i != poison).collect();
        done.sort_unstable();
        expected.sort_unstable();
        assert_eq!(done, expected);
        assert!(calls < 30, "log2(100) splits plus 3 calls: {calls}");
    }

    #[test]
    fn progress_gives_the_rest_a_fresh_budget_sent_at_once() {
        let partial = Outcome::PartialFailure(vec![4, 6]);
        let step = policy(Some(3), false).next(&segment(10..20, 3), &partial);
        assert_eq!(step.done, 10..14);
        assert_eq!(step.send, [segment(14..20, 0)], "not a counted retry");
        assert!(!step.backoff && step.discard.is_none());
    }

    #[test]
    fn a_partial_failure_at_the_first_record_is_a_counted_retry() {
        let partial = Outcome::PartialFailure(vec![0, 2]);
        let step = policy(Some(3), false).next(&segment(10..20, 1), &partial);
        assert_eq!(step.done, 10..10);
        assert_eq!(step.send, [segment(10..20, 2)]);
        assert!(step.backoff);
    }

    #[test]
    fn exhausted_partial_failures_give_up_only_the_failed_records_at_the_front() {
        let partial = Outcome::PartialFailure(vec![0, 1, 2, 5]);
        let step = policy(Some(1), false).next(&segment(10..20, 1), &partial);
        assert_eq!(step.done, 10..10);
        assert_eq!(step.discard, Some(10..13));
        assert_eq!(
            step.send,
            [segment(13..20, 0)],
            "record 13 never failed: the rest goes on with a fresh budget"
        );
        assert!(!step.backoff);
        let all = Outcome::PartialFailure(vec![0, 1, 2]);
        let last = policy(Some(0), false).next(&segment(0..3, 0), &all);
        assert_eq!((last.discard, last.send), (Some(0..3), vec![]));
    }

    /// Drives batches of a shard through the policy with a target that always lists the same
    /// records as failed; returns how often each record was sent and the discarded ranges
    /// with the calls they had.
    fn drive_partial(
        policy: RetryPolicy,
        records: usize,
        batch_size: usize,
        always_failing: &[usize],
    ) -> (Vec<u32>, Vec<(Range<usize>, u32)>) {
        let mut deliveries = vec![0u32; records];
        let mut discarded = Vec::new();
        let mut next_batch = 0;
        while next_batch < records {
            // As the stream does: the next batch starts at the checkpoint.
            let batch = next_batch..(next_batch + batch_size).min(records);
            let mut queue = std::collections::VecDeque::from([Segment::fresh(batch.clone())]);
            while let Some(current) = queue.pop_front() {
                current.range.clone().for_each(|r| deliveries[r] += 1);
                let failed: Vec<usize> = current
                    .range
                    .clone()
                    .filter(|r| always_failing.contains(r))
                    .map(|r| r - current.range.start)
                    .collect();
                let outcome = if failed.is_empty() {
                    Outcome::Success
                } else {
                    Outcome::PartialFailure(failed)
                };
                let step = policy.next(&current, &outcome);
                if let Some(range) = step.discard {
                    discarded.push((range, current.retries + 1));
                }
                for next in step.send.into_iter().rev() {
                    queue.push_front(next);
                }
            }
            next_batch = batch.end;
        }
        (deliveries, discarded)
    }

    /// Recorded on AWS: 6 records, batch size 3, MaximumRetryAttempts 3, the 5th record always
    /// listed: it is delivered 5 times and given up on alone after 4 calls of its batch.
    #[test]
    fn partial_failures_count_retries_as_aws_does() {
        let (deliveries, discarded) = drive_partial(policy(Some(3), false), 6, 3, &[4]);
        assert_eq!(deliveries, [1, 1, 1, 1, 5, 6]);
        assert_eq!(
            discarded,
            [(4..5, 4)],
            "batchSize 1, approximateInvokeCount 4"
        );

        // No retries: the failed record is given up on after one call of its own, and every
        // record after it is still delivered.
        let (deliveries, discarded) = drive_partial(policy(Some(0), false), 6, 3, &[4]);
        assert_eq!(deliveries, [1, 1, 1, 1, 2, 3]);
        assert_eq!(discarded, [(4..5, 1)]);
    }

    /// Scattered failures each make progress: nothing that never failed is given up on.
    #[test]
    fn scattered_failures_discard_only_failed_records() {
        let failing = [3, 11, 12, 40, 77];
        let (deliveries, discarded) = drive_partial(policy(Some(2), false), 100, 25, &failing);
        assert!(deliveries.iter().all(|d| *d >= 1));
        let given_up: Vec<usize> = discarded.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(given_up, failing);
        assert!(
            discarded.iter().all(|(_, calls)| *calls == 3),
            "{discarded:?}"
        );
    }

    #[test]
    fn partial_failure_with_bisection_cuts_at_the_failed_record() {
        let policy = policy(Some(0), true);
        let step = policy.next(&segment(0..10, 0), &Outcome::PartialFailure(vec![6]));
        assert_eq!(step.done, 0..6);
        assert_eq!(step.send, [segment(6..10, 0)], "the cut is not a retry");
        assert!(!step.backoff);
        // The first record failed: nothing to cut, so the rest is halved.
        let step = policy.next(&segment(6..10, 0), &Outcome::PartialFailure(vec![0]));
        assert_eq!(step.done, 6..6);
        assert_eq!(step.send, [segment(6..8, 0), segment(8..10, 0)]);
        // And a single failed record uses its retries.
        let step = policy.next(&segment(6..7, 0), &Outcome::PartialFailure(vec![0]));
        assert_eq!(step.discard, Some(6..7));
    }

    #[test]
    fn expired_records_are_the_old_prefix() {
        let policy = RetryPolicy {
            max_record_age: Some(Duration::from_secs(60)),
            ..policy(None, false)
        };
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let at = |seconds_ago: i64| Some(now - SignedDuration::from_secs(seconds_ago));
        assert_eq!(
            policy.expired_prefix([at(120), at(61), at(60), at(120)], now),
            2
        );
        assert_eq!(policy.expired_prefix([None, at(120)], now), 0);
        assert_eq!(
            RetryPolicy {
                max_record_age: None,
                ..policy
            }
            .expired_prefix([at(100_000)], now),
            0
        );
    }

    #[test]
    fn spec_values_map_to_the_policy() {
        let mut spec: EventSourceMappingSpec = serde_json::from_value(serde_json::json!({
            "source": {"kinesis": {"streamName": "s"}},
            "target": {"url": "http://t"},
            "startingPosition": "LATEST",
        }))
        .unwrap();
        assert_eq!(RetryPolicy::from_spec(&spec), policy(None, false));
        spec.maximum_retry_attempts = Some(-1);
        spec.maximum_record_age_in_seconds = Some(-1);
        assert_eq!(RetryPolicy::from_spec(&spec), policy(None, false));
        spec.maximum_retry_attempts = Some(2);
        spec.maximum_record_age_in_seconds = Some(60);
        spec.bisect_batch_on_target_error = Some(true);
        assert_eq!(
            RetryPolicy::from_spec(&spec),
            RetryPolicy {
                max_retries: Some(2),
                max_record_age: Some(Duration::from_secs(60)),
                bisect_on_error: true,
            }
        );
    }

    /// Recorded on AWS: about 8 attempts within a 60 s record age.
    #[test]
    fn stream_retries_are_paced_as_lambda_paces_them() {
        let mut at = Duration::ZERO;
        let mut attempts = 1;
        for retry in 1.. {
            at += retry_delay(retry, RETRY_BACKOFF, RETRY_BACKOFF_MAX);
            if at > Duration::from_secs(60) {
                break;
            }
            attempts += 1;
        }
        assert_eq!(attempts, 8);
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(4));
        let delays: Vec<_> = (1..=6).map(|n| retry_delay(n, base, max)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 4000, 4000].map(Duration::from_millis)
        );
    }
}
