//! Tumbling windows in the stream engine: state carried per shard and window, final calls,
//! early termination, restarts, on the paused clock. Arrival times are real timestamps (the
//! window alignment is by wall clock): windows in the past close as soon as the reader is
//! caught up, windows around now stay open.
use std::sync::atomic::AtomicUsize;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::*;
use crate::poller::window::{MAX_STATE_BYTES, TumblingWindows};

/// One call as a windowed target saw it.
#[derive(Clone, Debug, PartialEq)]
struct Call {
    start: String,
    is_final: bool,
    early: bool,
    /// `state.sum` of the call (0 for `{}`).
    sum_in: i64,
    values: Vec<i64>,
    answered: u16,
}

/// Sums the records' values (their data) into `state.sum`. A record of value 999 makes the
/// answer's state larger than 1 MB.
#[derive(Clone, Default)]
struct SummingTarget {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Final calls to fail (HTTP 500) before one succeeds.
    final_failures_left: Arc<AtomicUsize>,
    /// Aggregate calls to answer without a state.
    stateless_answers_left: Arc<AtomicUsize>,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Invoke for SummingTarget {
    async fn invoke(
        &self,
        payload: Vec<u8>,
        _trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        let event: Value = serde_json::from_slice(&payload).unwrap();
        let values: Vec<i64> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| data(record).parse().unwrap())
            .collect();
        let is_final = event["isFinalInvokeForWindow"].as_bool().unwrap();
        let sum_in = event["state"]["sum"].as_i64().unwrap_or(0);
        let (status, body) = if is_final && take_one(&self.final_failures_left) {
            (500, String::new())
        } else if !is_final && take_one(&self.stateless_answers_left) {
            (200, "{}".to_owned())
        } else {
            let sum = sum_in + values.iter().sum::<i64>();
            let mut state = json!({"sum": sum});
            if values.contains(&999) {
                state["pad"] = json!("x".repeat(MAX_STATE_BYTES));
            }
            (200, json!({"state": state}).to_string())
        };
        self.calls.lock().unwrap().push(Call {
            start: event["window"]["start"].as_str().unwrap().to_owned(),
            is_final,
            early: event["isWindowTerminatedEarly"].as_bool().unwrap(),
            sum_in,
            values,
            answered: status,
        });
        Ok(answer(status, &body))
    }
}

impl SummingTarget {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// `(window start, final sum)` of every successful final call, in order.
    fn finals(&self) -> Vec<(String, i64)> {
        self.calls()
            .into_iter()
            .filter(|c| c.is_final && !c.early && c.answered == 200)
            .map(|c| (c.start, c.sum_in))
            .collect()
    }
}

/// Records of `(value, arrival)`, sequence numbers from `first`.
fn valued(first: usize, values: &[(i64, Timestamp)]) -> Vec<StreamRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, (value, arrival))| StreamRecord {
            approximate_arrival: Some(*arrival),
            ..record(first + i, &format!("k{}", i % 3), &value.to_string())
        })
        .collect()
}

/// A window start an hour ago, on a multiple of `seconds`.
fn past_window(seconds: i64) -> Timestamp {
    let hour_ago = Timestamp::now().as_second() - 3600;
    Timestamp::from_second(hour_ago - hour_ago.rem_euclid(seconds)).unwrap()
}

fn plus(at: Timestamp, seconds: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_secs(seconds)).unwrap()
}

fn windowed(seconds: u32, batch_size: usize) -> StreamSettings {
    StreamSettings {
        batch_size,
        tumbling: Some(TumblingWindows::new(seconds)),
        ..settings(1)
    }
}

#[tokio::test(start_paused = true)]
async fn each_window_sums_its_records_and_closes_with_a_final_call() {
    let base = past_window(10);
    let stream = FakeStream::default();
    let values = [
        (1, plus(base, 1)),
        (2, plus(base, 3)),
        (3, plus(base, 9)),
        (10, plus(base, 12)),
        (20, plus(base, 15)),
        (100, plus(base, 21)),
        (200, plus(base, 22)),
        (300, plus(base, 29)),
    ];
    // An open shard: the last window closes because the reader is caught up past its end.
    stream.add_shard("shard-0", &[], true, valued(0, &values));
    let leases = Arc::new(MemoryLeases::default());
    let target = SummingTarget::default();
    let running = start(&stream, &leases, &target, None, windowed(10, 2));
    until("three windows closed", || target.finals().len() == 3).await;
    running.stop().await;

    let start_of = |offset| plus(base, offset).to_string();
    assert_eq!(
        target.finals(),
        [(start_of(0), 6), (start_of(10), 30), (start_of(20), 600)]
    );
    let calls = target.calls();
    let mut seen_final = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        if call.is_final {
            assert!(call.values.is_empty(), "a final call has no records");
            seen_final.push(call.start.clone());
            continue;
        }
        assert!(
            !seen_final.contains(&call.start),
            "no records after the window closed: {calls:#?}"
        );
        let window_start = calls[..i].iter().all(|c| c.start != call.start);
        if window_start {
            assert_eq!(call.sum_in, 0, "a window starts with state {{}}");
            assert_eq!(
                calls[..i].iter().filter(|c| c.is_final).count(),
                seen_final.len()
            );
        }
        let window = TumblingWindows::new(10);
        // Every record of a call is in the call's window.
        for value in &call.values {
            let (_, arrival) = values.iter().find(|(v, _)| v == value).unwrap();
            assert_eq!(window.window_of(*arrival).start.to_string(), call.start);
        }
    }
    // Between windows, the stored state says so and is valid at the last record.
    let stored = leases.window("shard-0").unwrap();
    assert_eq!(stored.window, None);
    assert_eq!(stored.state.get(), "{}");
    assert_eq!(stored.checkpoint.as_deref(), Some("000007"));
}

#[tokio::test(start_paused = true)]
async fn a_killed_poller_resumes_the_window_from_its_stored_state() {
    // Windows around now: nothing closes by time during the test.
    let now = Timestamp::now();
    let stream = FakeStream::default();
    stream.add_shard(
        "shard-0",
        &[],
        true,
        valued(0, &[(1, now), (2, now), (3, now), (4, now)]),
    );
    let leases = Arc::new(MemoryLeases::default());
    let target = SummingTarget::default();
    let running = start(&stream, &leases, &target, None, windowed(3600, 2));
    until("the state of four records stored", || {
        leases
            .window("shard-0")
            .is_some_and(|w| w.checkpoint.as_deref() == Some("000003"))
    })
    .await;
    // SIGKILL: nothing is written on the way out.
    running.task.abort();
    let _ = running.task.await;
    let stored = leases.window("shard-0").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(stored.state.get()).unwrap(),
        json!({"sum": 10})
    );

    let next_hour = plus(now, 3600);
    stream.0.lock().unwrap().shards[0]
        .1
        .extend(valued(4, &[(5, now), (6, now), (7, next_hour)]));
    let again = start(&stream, &leases, &target, None, windowed(3600, 2));
    until("the first window closed", || !target.finals().is_empty()).await;
    until("the next window's first call", || {
        target.calls().iter().any(|c| c.values == [7])
    })
    .await;
    again.stop().await;
    assert_eq!(
        target.finals()[0].1,
        21,
        "1 + ... + 6, each record counted once"
    );
    let calls = target.calls();
    let first_of_next = calls.iter().find(|c| c.values == [7]).unwrap();
    assert_eq!(first_of_next.sum_in, 0);
    // Stopped mid-window: the window and its state are kept for the next holder.
    let stored = leases.window("shard-0").unwrap();
    assert!(stored.window.is_some());
    assert_eq!(stored.checkpoint.as_deref(), Some("000006"));
    assert_eq!(
        serde_json::from_str::<Value>(stored.state.get()).unwrap(),
        json!({"sum": 7})
    );
}

#[tokio::test(start_paused = true)]
async fn a_state_above_1_mb_ends_the_window_early_and_it_goes_on_afresh() {
    let base = past_window(60);
    let stream = FakeStream::default();
    let at = plus(base, 5);
    // A closed shard: its end closes the last window.
    stream.add_shard(
        "shard-0",
        &[],
        false,
        valued(0, &[(1, at), (999, at), (2, at), (3, at)]),
    );
    let leases = Arc::new(MemoryLeases::default());
    let target = SummingTarget::default();
    let running = start(&stream, &leases, &target, None, windowed(60, 1));
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    running.stop().await;
    let calls: Vec<(bool, bool, i64, Vec<i64>)> = target
        .calls()
        .into_iter()
        .map(|c| (c.is_final, c.early, c.sum_in, c.values))
        .collect();
    assert_eq!(
        calls,
        [
            (false, false, 0, vec![1]),
            (false, false, 1, vec![999]),
            // The oversized state's last call, then the same window with a fresh state.
            (true, true, 1000, vec![]),
            (false, false, 0, vec![2]),
            (false, false, 2, vec![3]),
            (true, false, 5, vec![]),
        ]
    );
    assert!(
        target.calls().iter().all(|c| c.start == base.to_string()),
        "one window"
    );
    assert_eq!(
        leases.window("shard-0"),
        None,
        "a finished shard's state is deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_final_call_is_retried_and_holds_back_the_next_window() {
    let base = past_window(10);
    let stream = FakeStream::default();
    stream.add_shard(
        "shard-0",
        &[],
        true,
        valued(
            0,
            &[(1, plus(base, 1)), (2, plus(base, 2)), (3, plus(base, 11))],
        ),
    );
    let leases = Arc::new(MemoryLeases::default());
    let target = SummingTarget::default();
    target.final_failures_left.store(3, Ordering::SeqCst);
    let running = start(&stream, &leases, &target, None, windowed(10, 5));
    until("both windows closed", || target.finals().len() == 2).await;
    running.stop().await;
    let calls: Vec<(bool, u16, Vec<i64>)> = target
        .calls()
        .into_iter()
        .map(|c| (c.is_final, c.answered, c.values))
        .collect();
    assert_eq!(
        calls,
        [
            (false, 200, vec![1, 2]),
            (true, 500, vec![]),
            (true, 500, vec![]),
            (true, 500, vec![]),
            (true, 200, vec![]),
            (false, 200, vec![3]),
            (true, 200, vec![]),
        ]
    );
    assert_eq!(
        target.finals(),
        [(base.to_string(), 3), (plus(base, 10).to_string(), 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_state_fails_the_batch_which_is_sent_again_with_the_same_state() {
    let base = past_window(10);
    let stream = FakeStream::default();
    stream.add_shard(
        "shard-0",
        &[],
        false,
        valued(0, &[(4, plus(base, 1)), (5, plus(base, 2))]),
    );
    let leases = Arc::new(MemoryLeases::default());
    let target = SummingTarget::default();
    target.stateless_answers_left.store(1, Ordering::SeqCst);
    let running = start(&stream, &leases, &target, None, windowed(10, 1));
    until("the shard end", || {
        checkpoint(&leases, "shard-0") == Some(Checkpoint::ShardEnd)
    })
    .await;
    let failed = running.metrics.failed.get();
    running.stop().await;
    let calls: Vec<(i64, Vec<i64>)> = target
        .calls()
        .into_iter()
        .filter(|c| !c.is_final)
        .map(|c| (c.sum_in, c.values))
        .collect();
    assert_eq!(calls, [(0, vec![4]), (0, vec![4]), (4, vec![5])]);
    assert_eq!(failed, 1, "the stateless answer counted as a failed call");
    assert_eq!(target.finals(), [(base.to_string(), 9)]);
}
