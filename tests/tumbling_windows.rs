//! Tumbling windows end to end: mappings with `tumblingWindowInSeconds` on kinesis-local and
//! DynamoDB Local, pollers run in the test process against the real API server, and a target
//! that sums its records into the window state and parses every event with the Lambda
//! runtime's own types (`KinesisTimeWindowEvent`, DynamoDB's `TimeWindowEvent`).
//!
//! What is asserted is what the semantics promise whatever the machine's speed: every record is
//! in the window of its arrival time, each window's final state is the sum of its records
//! (each counted once, across a SIGKILL-like stop and a handover), every window closes with a
//! final call, a state above 1 MB ends its window early, and a failing final call holds back
//! the next window until it succeeds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::TimeWindowEvent as DynamoDbTimeWindowEvent;
use aws_lambda_events::event::kinesis::KinesisTimeWindowEvent;
use aws_lambda_events::time_window::TimeWindowProperties;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use support::emulators::{dynamodb_table, shared};
use support::streams::{WAIT, create_stream, dynamodb_source, fixture};
use support::target::EventTarget;
use support::wait;

/// What the test target saw of one call.
#[derive(Clone, Debug)]
struct Seen {
    /// Milliseconds since the epoch.
    window_start: i64,
    window_end: i64,
    is_final: bool,
    early: bool,
    sum_in: i64,
    /// (sequence number, value, arrival in milliseconds) of each record.
    records: Vec<(String, i64, i64)>,
}

fn sum_of(properties: &TimeWindowProperties) -> i64 {
    properties.state.get("sum").map_or(0, |sum| {
        sum.parse().expect("the state this target returned")
    })
}

/// The answer of a summing target to a call: `{"state": {"sum": "..."}}`, with the state
/// padded past 1 MB when `oversize`.
fn summed(properties: &TimeWindowProperties, values: &[i64], oversize: bool) -> (u16, String) {
    let sum = sum_of(properties) + values.iter().sum::<i64>();
    let mut state = json!({"sum": sum.to_string()});
    if oversize {
        state["pad"] = json!("x".repeat(1_000_001));
    }
    (200, json!({"state": state}).to_string())
}

fn kinesis_seen(event: &KinesisTimeWindowEvent) -> Seen {
    let properties = &event.time_window_properties;
    Seen {
        window_start: properties.window.start.timestamp_millis(),
        window_end: properties.window.end.timestamp_millis(),
        is_final: properties.is_final_invoke_for_window,
        early: properties.is_window_terminated_early,
        sum_in: sum_of(properties),
        records: event
            .kinesis_event
            .records
            .iter()
            .map(|record| {
                let data = String::from_utf8(record.kinesis.data.0.clone()).unwrap();
                (
                    record.kinesis.sequence_number.clone(),
                    data.parse().unwrap(),
                    record
                        .kinesis
                        .approximate_arrival_timestamp
                        .timestamp_millis(),
                )
            })
            .collect(),
    }
}

/// Final calls (the summing target accepts each): window start -> final sum.
fn finals(seen: &[Seen]) -> BTreeMap<i64, i64> {
    seen.iter()
        .filter(|s| s.is_final && !s.early)
        .map(|s| (s.window_start, s.sum_in))
        .collect()
}

/// Sleeps until just after the next multiple of `seconds` since the epoch, so that what is
/// written next falls in one window.
async fn until_window_start(seconds: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into_window =
        Duration::from_millis((now.as_millis() % (u128::from(seconds) * 1000)) as u64);
    tokio::time::sleep(Duration::from_secs(seconds) - into_window + Duration::from_millis(200))
        .await;
}

/// The ConfigMaps holding mapping `name`'s window state.
async fn window_states(client: &kube::Client, ns: &str, name: &str) -> Vec<ConfigMap> {
    let selector = format!("esm.dev/mapping={name},esm.dev/window-state=shard");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn kinesis_windows_sum_their_records_across_a_killed_poller_and_a_handover() {
    const WINDOW: u64 = 8;
    let fixture = fixture("windows").await;
    let stream = create_stream(1).await;
    let target = EventTarget::<KinesisTimeWindowEvent>::start(|_, event| {
        let values: Vec<i64> = event
            .kinesis_event
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.kinesis.data.0).parse().unwrap())
            .collect();
        summed(&event.time_window_properties, &values, false)
    })
    .await;
    fixture
        .mapping(
            "sums",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 2,
                "tumblingWindowInSeconds": WINDOW,
            }),
        )
        .await;
    let seen = || -> Vec<Seen> {
        target
            .calls()
            .iter()
            .map(|call| kinesis_seen(&call.event))
            .collect()
    };
    let stream = &stream;
    let put_round = |values: std::ops::RangeInclusive<i64>| {
        let records: Vec<(String, String)> =
            values.map(|v| ("k".to_owned(), v.to_string())).collect();
        async move { stream.put(&records).await }
    };

    let first = fixture.start("sums", "replica-a");
    put_round(1..=4).await;
    tokio::time::sleep(Duration::from_secs(WINDOW) + Duration::from_millis(500)).await;
    put_round(10..=14).await;
    // Kill replica A while the second window is open and its state is stored.
    let stored_mid_window = wait::until("the open window's state stored", WAIT, || async {
        let states = window_states(&fixture.client, fixture.ns(), "sums").await;
        let data = states.first()?.data.clone()?;
        let window_start = data
            .get("window-start")?
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()?
            .as_millisecond();
        let sum: i64 = serde_json::from_str::<serde_json::Value>(data.get("state")?).ok()?["sum"]
            .as_str()?
            .parse()
            .ok()?;
        let has_round_two = seen()
            .iter()
            .any(|s| s.records.iter().any(|(_, v, _)| *v >= 10));
        (has_round_two && sum >= 10 && !finals(&seen()).contains_key(&window_start))
            .then_some((window_start, sum))
    })
    .await;
    first.task.abort();
    let _ = first.task.await;
    // Replica B takes the shard over once A's lease expires, and resumes the open window.
    let second = fixture.start("sums", "replica-b");
    tokio::time::sleep(Duration::from_secs(WINDOW) + Duration::from_millis(500)).await;
    put_round(100..=103).await;

    let all: BTreeSet<i64> = (1..=4).chain(10..=14).chain(100..=103).collect();
    wait::until("every window closed", WAIT, || async {
        let seen = seen();
        let delivered: BTreeSet<i64> = seen
            .iter()
            .flat_map(|s| s.records.iter().map(|(_, v, _)| *v))
            .collect();
        let windows: BTreeSet<i64> = seen.iter().map(|s| s.window_start).collect();
        let finals = finals(&seen);
        (delivered == all && windows.iter().all(|w| finals.contains_key(w))).then_some(())
    })
    .await;
    second.stop().await;

    let seen = seen();
    let finals = finals(&seen);
    assert!(finals.len() >= 3, "three windows or more: {finals:?}");
    assert!(
        finals.contains_key(&stored_mid_window.0),
        "the window open at the kill closed"
    );
    // Each record once per window, in the window of its arrival time.
    let mut per_window: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for call in seen.iter().filter(|s| !s.is_final) {
        for (sequence, value, arrival) in &call.records {
            assert!(
                call.window_start <= *arrival && *arrival < call.window_end,
                "record {value} arrived {arrival}, outside its call's window {}..{}",
                call.window_start,
                call.window_end
            );
            per_window
                .entry(call.window_start)
                .or_default()
                .insert(sequence.clone(), *value);
        }
    }
    for (window, records) in &per_window {
        assert_eq!(
            finals[window],
            records.values().sum::<i64>(),
            "window {window}: the final state counts each of its records once"
        );
    }
    // Windows are whole multiples of their length since the epoch.
    let length = WINDOW as i64 * 1000;
    for s in &seen {
        assert_eq!(s.window_start % length, 0, "{s:?}");
        assert_eq!(s.window_end - s.window_start, length, "{s:?}");
    }
    // The first call of every window starts from {}.
    let mut started = BTreeSet::new();
    for s in &seen {
        if started.insert(s.window_start) {
            assert_eq!(s.sum_in, 0, "first call of window {}", s.window_start);
        }
    }
    // Final calls carry no records and come after every record of their window.
    for (i, s) in seen.iter().enumerate().filter(|(_, s)| s.is_final) {
        assert!(s.records.is_empty());
        assert!(
            seen[i + 1..]
                .iter()
                .all(|later| later.window_start != s.window_start || later.is_final),
            "records of window {} after its final call",
            s.window_start
        );
    }
}

#[tokio::test]
async fn dynamodb_a_state_above_1_mb_ends_the_window_early_and_a_failing_final_call_holds_the_next_window()
 {
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WINDOW: u64 = 3;
    let fixture = fixture("windows-ddb").await;
    let emulator = shared("dynamodb");
    let (dynamodb, table, stream_arn) = dynamodb_table(&emulator, false).await;
    let final_failures_left = Arc::new(AtomicUsize::new(2));
    let failures = final_failures_left.clone();
    let value_of = |event: &DynamoDbTimeWindowEvent| -> Vec<i64> {
        event
            .dynamo_db_event
            .records
            .iter()
            .map(|r| {
                serde_json::to_value(&r.change.new_image).unwrap()["v"]["N"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let target = EventTarget::<DynamoDbTimeWindowEvent>::start(move |_, event| {
        let properties = &event.time_window_properties;
        if properties.is_final_invoke_for_window
            && !properties.is_window_terminated_early
            && failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return (500, "not yet".into());
        }
        let values = value_of(event);
        summed(properties, &values, values.contains(&999))
    })
    .await;
    fixture
        .mapping(
            "sums",
            json!({
                "source": dynamodb_source(&emulator, &stream_arn),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 1,
                "tumblingWindowInSeconds": WINDOW,
            }),
        )
        .await;
    let poller = fixture.start("sums", "replica-a");
    let put = |key: &str, value: i64| {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(key.into()))
            .item("v", AttributeValue::N(value.to_string()))
            .send()
    };
    // One window for the three: they are written at its start.
    until_window_start(WINDOW).await;
    for (key, value) in [("a", 1), ("b", 999), ("c", 2)] {
        put(key, value).await.expect("PutItem");
    }
    // (window start, final, early, state in, values)
    type Step = (i64, bool, bool, i64, Vec<i64>);
    let steps = || -> Vec<Step> {
        target
            .calls()
            .iter()
            .map(|call| {
                let p = &call.event.time_window_properties;
                (
                    p.window.start.timestamp_millis(),
                    p.is_final_invoke_for_window,
                    p.is_window_terminated_early,
                    sum_of(p),
                    value_of(&call.event),
                )
            })
            .collect()
    };
    // Written once the window's final call has failed: it waits until that call succeeds.
    // (DynamoDB Local stamps records to the minute, so this one may be stamped in the same
    // window, opened again; see docs/streams.md.)
    wait::until("a failed final call", WAIT, || async {
        steps()
            .iter()
            .any(|s| s.1 && !s.2 && s.3 == 2)
            .then_some(())
    })
    .await;
    put("d", 50).await.expect("PutItem");
    wait::until(
        "the record of the second window and its final call",
        WAIT,
        || async {
            let steps = steps();
            let last_window = steps.iter().find(|s| s.4 == [50])?.0;
            steps
                .iter()
                .any(|s| s.0 == last_window && s.1 && s.3 == 50)
                .then_some(())
        },
    )
    .await;
    poller.stop().await;

    let steps = steps();
    // Positions are found, not counted: a call that timed out on a loaded machine is made
    // again, and the answer taken is the last one's.
    let big = steps.iter().rposition(|s| s.4 == [999]).unwrap();
    let first_window = steps[big].0;
    // The call after the oversized state is its window's early end, with that state...
    let early = &steps[big + 1];
    assert_eq!(
        (early.1, early.2, early.4.len()),
        (true, true, 0),
        "{steps:#?}"
    );
    assert_eq!(early.0, first_window);
    assert_eq!(early.3, steps[big].3 + 999);
    // ...and the same window goes on with a fresh state.
    let after_early = steps[big + 1..].iter().find(|s| !s.1).unwrap();
    assert_eq!(
        (after_early.0, after_early.1, after_early.3, &after_early.4),
        (first_window, false, 0, &vec![2]),
        "a fresh state after the early end: {steps:#?}"
    );
    // The window's final call failed twice and was retried until it succeeded; the record
    // read after it waited for that.
    let next = steps.iter().position(|s| s.4 == [50]).unwrap();
    let last_aggregate = steps[..next].iter().rposition(|s| !s.1).unwrap();
    assert_eq!(steps[last_aggregate].4, [2], "{steps:#?}");
    let finals = &steps[last_aggregate + 1..next];
    assert!(
        finals.len() >= 3
            && finals
                .iter()
                .all(|s| s.1 && !s.2 && s.0 == first_window && s.3 == 2),
        "two failed final calls, then one that succeeded, before anything else: {steps:#?}"
    );
    assert_eq!(steps[next].3, 0, "the next window starts from {{}}");
    assert!(
        steps[next + 1..].iter().any(|s| s.1 && s.3 == 50),
        "and closes in turn: {steps:#?}"
    );
    assert_eq!(final_failures_left.load(Ordering::SeqCst), 0);
}
