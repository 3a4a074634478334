//! The engine against an in-memory queue and target (the emulator tests are in tests/sqs.rs).
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::*;
use crate::api::SourceKind;
use crate::event::SQS_EVENT_SOURCE;
use crate::sources::sqs::{EntryFailure, QueueAttributes};
use crate::target::{CallError, TargetResponse};
use crate::trace::TraceContext;

#[derive(Default)]
struct QueueState {
    visible: VecDeque<SqsRecord>,
    in_flight: Vec<SqsRecord>,
    deleted: Vec<String>,
    released: Vec<String>,
    /// Errors the next receives return.
    receive_errors: u32,
    /// Message ids whose next delete fails (retryable), and ids whose deletes always fail.
    delete_fails_once: Vec<String>,
    delete_refused: Vec<String>,
    /// Receives started, and the most in flight at once.
    receives: usize,
    receiving: usize,
    most_receiving: usize,
}

#[derive(Clone, Default)]
struct FakeQueue(Arc<Mutex<QueueState>>);

impl FakeQueue {
    fn with(records: impl IntoIterator<Item = SqsRecord>) -> Self {
        let queue = Self::default();
        queue.0.lock().unwrap().visible.extend(records);
        queue
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.0.lock().unwrap()
    }
}

impl Queue for FakeQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsRecord>, SqsError> {
        {
            let mut state = self.state();
            state.receives += 1;
            if state.receive_errors > 0 {
                state.receive_errors -= 1;
                return Err(SqsError {
                    operation: "ReceiveMessage",
                    queue_url: "fake".into(),
                    message: "AWS.SimpleQueueService.NonExistentQueue: gone".into(),
                });
            }
            let count = max.min(state.visible.len());
            if count > 0 {
                let records: Vec<SqsRecord> = state.visible.drain(..count).collect();
                state.in_flight.extend(records.iter().cloned());
                return Ok(records);
            }
        }
        {
            let mut state = self.state();
            state.receiving += 1;
            state.most_receiving = state.most_receiving.max(state.receiving);
        }
        tokio::time::sleep(wait).await;
        self.state().receiving -= 1;
        Ok(Vec::new())
    }

    async fn delete(&self, receipts: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        let mut state = self.state();
        let mut failures = Vec::new();
        for (index, receipt) in receipts.iter().enumerate() {
            let id = receipt.message_id.to_owned();
            if state.delete_refused.contains(&id) {
                failures.push(failure(index, true));
            } else if let Some(at) = state.delete_fails_once.iter().position(|m| *m == id) {
                state.delete_fails_once.remove(at);
                failures.push(failure(index, false));
            } else {
                state.deleted.push(id);
            }
        }
        Ok(failures)
    }

    async fn release(&self, receipts: &[Receipt<'_>]) -> Result<Vec<EntryFailure>, SqsError> {
        let mut state = self.state();
        state
            .released
            .extend(receipts.iter().map(|r| r.message_id.to_owned()));
        Ok(Vec::new())
    }

    async fn attributes(&self) -> Result<QueueAttributes, SqsError> {
        unreachable!("the engine does not read attributes")
    }
}

fn failure(index: usize, sender_fault: bool) -> EntryFailure {
    EntryFailure {
        index,
        code: if sender_fault {
            "ReceiptHandleIsInvalid".into()
        } else {
            "InternalError".into()
        },
        message: "injected".into(),
        sender_fault,
    }
}

type Answer = Box<dyn Fn(&[Value]) -> Result<TargetResponse, CallError> + Send + Sync>;

/// A target that records the records of every call and answers with `answer`.
#[derive(Clone)]
struct FakeTarget {
    calls: Arc<Mutex<Vec<Vec<Value>>>>,
    answer: Arc<Answer>,
}

impl FakeTarget {
    fn new(
        answer: impl Fn(&[Value]) -> Result<TargetResponse, CallError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: Arc::default(),
            answer: Arc::new(Box::new(answer)),
        }
    }

    fn ok() -> Self {
        Self::new(|_| Ok(response(200, "")))
    }

    fn delivered_ids(&self) -> Vec<Vec<String>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|records| {
                records
                    .iter()
                    .map(|r| r["messageId"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }
}

impl Invoke for FakeTarget {
    async fn invoke(
        &self,
        payload: Vec<u8>,
        _trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        let event: Value = serde_json::from_slice(&payload).expect("the engine sends JSON");
        let records = event["Records"].as_array().expect("Records").clone();
        let answer = (self.answer)(&records);
        self.calls.lock().unwrap().push(records);
        answer
    }
}

fn response(status: u16, body: &str) -> TargetResponse {
    TargetResponse {
        status,
        body: body.as_bytes().to_vec(),
        truncated: false,
        location: None,
    }
}

fn record(id: &str, body: &str, group: Option<&str>) -> SqsRecord {
    let mut attributes = BTreeMap::from([("ApproximateReceiveCount".to_string(), "1".to_string())]);
    if let Some(group) = group {
        attributes.insert("MessageGroupId".into(), group.into());
    }
    SqsRecord {
        message_id: id.into(),
        receipt_handle: format!("rh-{id}"),
        body: body.into(),
        attributes,
        message_attributes: BTreeMap::new(),
        md5_of_body: String::new(),
        md5_of_message_attributes: None,
        event_source: SQS_EVENT_SOURCE,
        event_source_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
        aws_region: "us-east-1".into(),
    }
}

fn settings(batch_size: usize, loops: usize) -> QueueSettings {
    QueueSettings {
        batch_size,
        window: Duration::ZERO,
        loops,
        report_batch_item_failures: true,
        one_long_poll_when_quiet: true,
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: MappingMetrics,
    results: ProcessingResults,
    activity: Activity,
}

fn start(
    queue: &FakeQueue,
    target: &FakeTarget,
    settings: QueueSettings,
    filters: FilterSet,
) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let metrics = MappingMetrics::detached();
    let results = ProcessingResults::default();
    let activity = Activity::default();
    let poller = QueuePoller {
        queue: queue.clone(),
        target: target.clone(),
        filters,
        settings,
        metrics: metrics.clone(),
        results: results.clone(),
        activity: activity.clone(),
        spans: Default::default(),
    };
    Running {
        stop,
        task: tokio::spawn(poller.run(stop_rx)),
        metrics,
        results,
        activity,
    }
}

impl Running {
    async fn until(&self, what: &str, done: impl Fn(&MappingMetrics) -> bool) {
        for _ in 0..10_000 {
            if done(&self.metrics) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never happened: {what}");
    }

    async fn stop(self) -> (MappingMetrics, ProcessingResults) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        (self.metrics, self.results)
    }
}

#[test]
fn keep_nothing_on_success_everything_on_failure() {
    let groups = [None, None];
    assert_eq!(messages_to_keep(&Outcome::Success, &groups), [false, false]);
    assert_eq!(
        messages_to_keep(&Outcome::Failure("x".into()), &groups),
        [true, true]
    );
}

#[test]
fn standard_partial_failure_keeps_exactly_the_listed_messages() {
    let groups = [None; 5];
    assert_eq!(
        messages_to_keep(&Outcome::PartialFailure(vec![1, 3]), &groups),
        [false, true, false, true, false]
    );
}

#[test]
fn fifo_partial_failure_keeps_the_rest_of_the_group() {
    let groups = [
        Some("a"),
        Some("a"),
        Some("b"),
        Some("a"),
        Some("b"),
        Some("c"),
    ];
    assert_eq!(
        messages_to_keep(&Outcome::PartialFailure(vec![1, 4]), &groups),
        [false, true, false, true, true, false]
    );
}

#[tokio::test(start_paused = true)]
async fn success_deletes_every_message_once() {
    let queue = FakeQueue::with((0..25).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = FakeTarget::ok();
    let running = start(&queue, &target, settings(10, 2), FilterSet::default());
    running.until("25 deleted", |m| m.deleted.get() == 25).await;
    let (metrics, results) = running.stop().await;
    let mut deleted = queue.state().deleted.clone();
    deleted.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(metrics.polled.get(), 25);
    assert_eq!(metrics.invoked.get(), 25);
    assert_eq!(metrics.failed.get(), 0);
    assert_eq!(metrics.in_flight.get(), 0);
    assert!(target.delivered_ids().iter().all(|b| b.len() <= 10));
    assert_eq!(results.take().as_deref(), Some("OK"));
}

#[tokio::test(start_paused = true)]
async fn failed_call_deletes_nothing_and_reports_the_problem() {
    let queue = FakeQueue::with((0..3).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = FakeTarget::new(|_| Ok(response(500, "boom")));
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running
        .until("one failed call", |m| m.failed.get() == 3)
        .await;
    let (metrics, results) = running.stop().await;
    assert!(queue.state().deleted.is_empty());
    assert_eq!(metrics.deleted.get(), 0);
    assert_eq!(
        results.take().as_deref(),
        Some("PROBLEM: target answered HTTP 500: boom")
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_partial_response_fails_the_whole_batch() {
    let queue = FakeQueue::with((0..3).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = FakeTarget::new(|_| Ok(response(200, "<html>oops</html>")));
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running
        .until("one failed call", |m| m.failed.get() == 3)
        .await;
    let (_, results) = running.stop().await;
    assert!(queue.state().deleted.is_empty());
    let problem = results.take().unwrap();
    assert!(
        problem.starts_with("PROBLEM: invalid partial batch response: not valid JSON"),
        "{problem}"
    );
}

#[tokio::test(start_paused = true)]
async fn partial_response_keeps_exactly_the_listed_messages() {
    let queue = FakeQueue::with((0..5).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = FakeTarget::new(|_| {
        Ok(response(
            200,
            r#"{"batchItemFailures":[{"itemIdentifier":"m1"},{"itemIdentifier":"m3"}]}"#,
        ))
    });
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running.until("3 deleted", |m| m.deleted.get() == 3).await;
    let (metrics, _) = running.stop().await;
    assert_eq!(queue.state().deleted, ["m0", "m2", "m4"]);
    assert_eq!(metrics.failed.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn fifo_failure_keeps_later_messages_of_the_group() {
    let queue = FakeQueue::with([
        record("a1", "{}", Some("a")),
        record("a2", "{}", Some("a")),
        record("b1", "{}", Some("b")),
        record("a3", "{}", Some("a")),
        record("b2", "{}", Some("b")),
    ]);
    let target = FakeTarget::new(|_| {
        Ok(response(
            200,
            r#"{"batchItemFailures":[{"itemIdentifier":"a2"}]}"#,
        ))
    });
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running.until("3 deleted", |m| m.deleted.get() == 3).await;
    let activity = running.activity.snapshot(Duration::from_secs(60));
    let (metrics, _) = running.stop().await;
    assert_eq!(queue.state().deleted, ["a1", "b1", "b2"]);
    assert_eq!(metrics.failed.get(), 2);
    assert_eq!(
        activity,
        ActivitySnapshot {
            active_groups: 2,
            busy_loops: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn fifo_messages_carried_past_a_failure_are_not_sent() {
    // Two 2.5 MB messages fill an event: a3 and b1 are carried to the next batch, and a3 must
    // not be sent once a2 failed.
    let big = "x".repeat(MAX_PAYLOAD_BYTES * 5 / 12);
    let queue = FakeQueue::with([
        record("a1", &big, Some("a")),
        record("a2", &big, Some("a")),
        record("a3", &big, Some("a")),
        record("b1", &big, Some("b")),
    ]);
    let target = FakeTarget::new(|records| {
        let failed = records.iter().any(|r| r["messageId"] == "a2");
        Ok(response(
            200,
            if failed {
                r#"{"batchItemFailures":[{"itemIdentifier":"a2"}]}"#
            } else {
                ""
            },
        ))
    });
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running
        .until("a1 and b1 deleted", |m| m.deleted.get() == 2)
        .await;
    running.stop().await;
    assert_eq!(queue.state().deleted, ["a1", "b1"]);
    assert_eq!(target.delivered_ids(), [vec!["a1", "a2"], vec!["b1"]]);
}

#[tokio::test(start_paused = true)]
async fn filters_delete_and_count_what_they_drop() {
    let queue = FakeQueue::with([
        record("order", r#"{"type":"order"}"#, None),
        record("refund", r#"{"type":"refund"}"#, None),
        record("plain", "type=order", None),
    ]);
    let target = FakeTarget::ok();
    let filters =
        FilterSet::parse_for(SourceKind::Sqs, [r#"{"body":{"type":["order"]}}"#]).unwrap();
    let running = start(&queue, &target, settings(10, 1), filters);
    running.until("3 deleted", |m| m.deleted.get() == 3).await;
    let (metrics, _) = running.stop().await;
    assert_eq!(target.delivered_ids(), [vec!["order"]]);
    assert_eq!(metrics.filtered_out.get(), 2);
    assert_eq!(metrics.invoked.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn deletes_are_retried_and_refusals_counted() {
    let queue = FakeQueue::with((0..3).map(|i| record(&format!("m{i}"), "{}", None)));
    queue.state().delete_fails_once.push("m0".into());
    queue.state().delete_refused.push("m2".into());
    let target = FakeTarget::ok();
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running
        .until("delete failure counted", |m| m.delete_failures.get() == 1)
        .await;
    let (metrics, results) = running.stop().await;
    assert_eq!(queue.state().deleted, ["m1", "m0"]);
    assert_eq!(metrics.deleted.get(), 2);
    let problem = results.take().unwrap();
    assert!(
        problem.contains("could not delete 1 message(s) (first m2)")
            && problem.contains("ReceiptHandleIsInvalid"),
        "{problem}"
    );
}

#[tokio::test(start_paused = true)]
async fn receive_errors_back_off_and_recover() {
    let queue = FakeQueue::with([record("m0", "{}", None)]);
    queue.state().receive_errors = 3;
    let target = FakeTarget::ok();
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    let started = Instant::now();
    running
        .until("delivered after the errors", |m| m.deleted.get() == 1)
        .await;
    // 1 s + 2 s + 4 s of backoff.
    assert!(Instant::now() - started >= Duration::from_secs(7));
    let (metrics, results) = running.stop().await;
    assert_eq!(metrics.source_errors.get(), 3);
    let problem = results.take().unwrap();
    assert!(problem.contains("NonExistentQueue"), "{problem}");
}

#[tokio::test(start_paused = true)]
async fn stop_hands_gathered_messages_back() {
    let queue = FakeQueue::with((0..3).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = FakeTarget::ok();
    let mut settings = settings(100, 1);
    settings.window = Duration::from_secs(60);
    let running = start(&queue, &target, settings, FilterSet::default());
    running.until("3 polled", |m| m.polled.get() == 3).await;
    running.stop().await;
    assert!(target.delivered_ids().is_empty());
    assert_eq!(queue.state().released, ["m0", "m1", "m2"]);
}

#[tokio::test(start_paused = true)]
async fn oversized_message_is_left_in_the_queue_and_counted() {
    // JSON escapes a control character as \u0001: 6 bytes each.
    let huge = "\u{1}".repeat(MAX_PAYLOAD_BYTES / 6 + 1);
    let queue = FakeQueue::with([record("small", "{}", None), record("huge", &huge, None)]);
    let target = FakeTarget::ok();
    let running = start(&queue, &target, settings(10, 1), FilterSet::default());
    running
        .until("small deleted", |m| m.deleted.get() == 1)
        .await;
    let (metrics, results) = running.stop().await;
    assert_eq!(metrics.oversized.get(), 1);
    assert_eq!(target.delivered_ids(), [vec!["small"]]);
    assert_eq!(queue.state().deleted, ["small"]);
    let problem = results.take().unwrap();
    assert!(problem.contains("message huge needs a"), "{problem}");
}

#[test]
fn receive_backoff_doubles_to_a_cap() {
    assert_eq!(receive_backoff(1), Duration::from_secs(1));
    assert_eq!(receive_backoff(3), Duration::from_secs(4));
    assert_eq!(receive_backoff(100), RECEIVE_BACKOFF_MAX);
}

/// A target that takes a second per call and remembers the most calls it had at once.
#[derive(Clone, Default)]
struct SlowTarget(Arc<Mutex<(usize, usize)>>);

impl SlowTarget {
    /// The most calls at once since the last look.
    fn take_most(&self) -> usize {
        let mut calls = self.0.lock().unwrap();
        let now = calls.0;
        std::mem::replace(&mut calls.1, now)
    }
}

impl Invoke for SlowTarget {
    async fn invoke(
        &self,
        _payload: Vec<u8>,
        _trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        {
            let mut calls = self.0.lock().unwrap();
            calls.0 += 1;
            calls.1 = calls.1.max(calls.0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.0.lock().unwrap().0 -= 1;
        Ok(response(200, ""))
    }
}

#[tokio::test(start_paused = true)]
async fn receive_loops_follow_a_changed_count() {
    let queue = FakeQueue::with((0..1000).map(|i| record(&format!("m{i}"), "{}", None)));
    let target = SlowTarget::default();
    let poller = QueuePoller {
        queue: queue.clone(),
        target: target.clone(),
        filters: FilterSet::default(),
        settings: settings(1, 2),
        metrics: MappingMetrics::detached(),
        results: ProcessingResults::default(),
        activity: Activity::default(),
        spans: Default::default(),
    };
    let (loops, loops_rx) = watch::channel(2);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(poller.run_with_loops(stop_rx, loops_rx));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(target.take_most(), 2);

    loops.send(5).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(target.take_most(), 5, "three loops started");

    loops.send(1).unwrap();
    // Retiring loops finish the batch they are sending first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    target.take_most();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(target.take_most(), 1, "four loops ended");

    stop.send(true).unwrap();
    task.await.unwrap();
    let state = queue.state();
    assert!(state.released.is_empty() && state.in_flight.len() == state.deleted.len());
}

#[tokio::test(start_paused = true)]
async fn an_empty_queue_has_one_long_poll_and_messages_wake_every_loop() {
    let queue = FakeQueue::default();
    let target = SlowTarget::default();
    let poller = QueuePoller {
        queue: queue.clone(),
        target: target.clone(),
        filters: FilterSet::default(),
        settings: settings(10, 10),
        metrics: MappingMetrics::detached(),
        results: ProcessingResults::default(),
        activity: Activity::default(),
        spans: Default::default(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(poller.run(stop_rx));
    // The first long polls of all ten loops come back empty after 20 s: the queue is quiet,
    // and from then on one loop long-polls at a time.
    tokio::time::sleep(Duration::from_secs(21)).await;
    {
        let mut state = queue.state();
        assert_eq!(state.receives, 11, "ten first polls, then one listener");
        state.receives = 0;
        state.most_receiving = 0;
    }
    tokio::time::sleep(Duration::from_secs(200)).await;
    {
        let state = queue.state();
        assert_eq!(
            state.most_receiving, 1,
            "one long poll at a time while quiet"
        );
        assert_eq!(state.receives, 10, "one long poll per 20 s");
    }

    // Messages: the listening loop receives 10 (the fake hands them out when its wait ends),
    // and every loop polls again: ten calls at once.
    queue
        .state()
        .visible
        .extend((0..1000).map(|i| record(&format!("m{i}"), "{}", None)));
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(target.take_most(), 10, "every loop busy again");

    stop.send(true).unwrap();
    task.await.unwrap();
    let state = queue.state();
    assert!(state.released.is_empty() && state.in_flight.len() == state.deleted.len());
}
