//! Tumbling windows (SPEC §3.8; Lambda's "stateful processing" of Kinesis and DynamoDB
//! streams), the pure part: which window a record belongs to, the window fields of the event,
//! the `state` a target answers, and the state kept with a shard's checkpoint.
//!
//! As Lambda does, windows are aligned on multiples of their length since the Unix epoch and a
//! record belongs to the window of its approximate arrival time in the stream (not the time it
//! is read). The engine ([`super::stream`]) carries the target's state from call to call of a
//! shard and closes each window with a call marked `isFinalInvokeForWindow`.
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::value::RawValue;

/// Most bytes of a window's state (its JSON as the target returned it). Lambda's limit is
/// "1 MB per shard"; this is the decimal megabyte, so that the state, its checkpoint and the
/// object that keeps them fit Kubernetes' 1 MiB ConfigMap limit.
pub const MAX_STATE_BYTES: usize = 1_000_000;
/// Room the window fields take in an event besides the state (the window, the shard id, the
/// ARN, the flags), so that a batch with the largest state still fits the payload limit.
pub const WINDOW_FIELDS_BYTES: usize = 4 * 1024;
/// Lambda waits "up to 2 minutes" after a window's end for late records before it closes a
/// quiet window; shorter windows wait one window length.
const MAX_GRACE: Duration = Duration::from_secs(120);

/// One window of a shard: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Windows of `tumblingWindowInSeconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TumblingWindows {
    seconds: i64,
}

impl TumblingWindows {
    /// Windows of `seconds` (at least 1).
    pub fn new(seconds: u32) -> Self {
        Self {
            seconds: i64::from(seconds.max(1)),
        }
    }

    /// The window a record that arrived at `arrival` belongs to.
    pub fn window_of(&self, arrival: Timestamp) -> Window {
        let start = arrival.as_second().div_euclid(self.seconds) * self.seconds;
        let at = |second: i64| Timestamp::from_second(second).unwrap_or(Timestamp::MAX);
        Window {
            start: at(start),
            end: at(start.saturating_add(self.seconds)),
        }
    }

    /// Where a record that arrived at `arrival` goes while `open` is the shard's open window:
    /// into it, or into a later window (which first closes `open`). A record stamped before
    /// the open window (clock jitter between stream hosts) joins the open window. Between
    /// windows a record opens its own, even one that closed already: it came later than the
    /// grace time, and it is counted in a window of its arrival time with a fresh state rather
    /// than in a window it does not belong to.
    pub fn place(&self, open: Option<Window>, arrival: Timestamp) -> Placement {
        let own = self.window_of(arrival);
        match open {
            Some(open) if own.start <= open.start => Placement::Open,
            // A window stored by a mapping with another length ends where it said it would.
            Some(open) if arrival < open.end => Placement::Open,
            Some(_) | None => Placement::Opens(own),
        }
    }

    /// How long after its end a quiet window waits for late records before it closes.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.seconds.unsigned_abs()).min(MAX_GRACE)
    }

    /// True when a window with nothing left to send can close at `now`: the shard's reader was
    /// caught up at `caught_up` (every record read by then has been handed over), and that was
    /// after the window's end plus the grace time.
    pub fn may_close(&self, window: Window, caught_up: Option<Timestamp>) -> bool {
        let grace = SignedDuration::try_from(self.grace()).unwrap_or(SignedDuration::MAX);
        let Ok(closes_at) = window.end.checked_add(grace) else {
            return false;
        };
        caught_up.is_some_and(|caught_up| caught_up >= closes_at)
    }
}

/// Where a record goes; see [`TumblingWindows::place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Open,
    /// A new window, after the open one (if any) closes.
    Opens(Window),
}

/// `{}`: the state of a window's first call.
pub fn empty_state() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

/// A shard's window progress as kept with its checkpoint, so that it survives a restart or a
/// handover: the open window and its state, valid for every record up to `checkpoint`.
#[derive(Clone, Debug)]
pub struct StoredWindow {
    /// The last record the state includes (and every record before it).
    pub checkpoint: Option<String>,
    /// The open window; `None` between windows.
    pub window: Option<Window>,
    pub state: Box<RawValue>,
}

impl PartialEq for StoredWindow {
    fn eq(&self, other: &Self) -> bool {
        self.checkpoint == other.checkpoint
            && self.window == other.window
            && self.state.get() == other.state.get()
    }
}

/// The `state` of a target's answer in a windowed mapping. Lambda treats an answer without a
/// `state` property as a failed invocation; the state is an object (Lambda's
/// `TimeWindowEventResponse`).
pub fn returned_state(body: &[u8]) -> Result<Box<RawValue>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        state: Option<Box<RawValue>>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|error| {
        format!("a tumbling window answer must be a JSON object with a state object: {error}")
    })?;
    let state = answer
        .state
        .ok_or("the answer has no state property (tumbling windows need one)")?;
    if !state.get().trim_start().starts_with('{') {
        return Err(format!(
            "the answer's state is not a JSON object: {}",
            snippet(state.get())
        ));
    }
    Ok(state)
}

fn snippet(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// What a windowed call carries besides its records.
#[derive(Clone, Copy, Debug)]
pub struct WindowCall<'a> {
    pub window: Window,
    pub state: &'a RawValue,
    pub shard_id: &'a str,
    pub event_source_arn: &'a str,
    pub is_final: bool,
    pub terminated_early: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WindowFields<'a> {
    window: WindowJson,
    state: &'a RawValue,
    shard_id: &'a str,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: &'a str,
    is_final_invoke_for_window: bool,
    is_window_terminated_early: bool,
}

#[derive(Serialize)]
struct WindowJson {
    start: String,
    end: String,
}

/// Adds the window fields to an event (`{"Records":[...]}` as [`crate::event::encode_event`]
/// wrote it), as Lambda's `KinesisTimeWindowEvent` / `DynamodbTimeWindowEvent` carry them.
pub fn add_window_fields(mut event: Vec<u8>, call: &WindowCall<'_>) -> Vec<u8> {
    debug_assert_eq!(event.last(), Some(&b'}'));
    event.pop();
    let fields = WindowFields {
        window: WindowJson {
            start: call.window.start.to_string(),
            end: call.window.end.to_string(),
        },
        state: call.state,
        shard_id: call.shard_id,
        event_source_arn: call.event_source_arn,
        is_final_invoke_for_window: call.is_final,
        is_window_terminated_early: call.terminated_early,
    };
    let fields = serde_json::to_vec(&fields).expect("window fields always serialize");
    event.push(b',');
    // The fields' own object, without its braces.
    event.extend_from_slice(&fields[1..]);
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::encode_event;
    use serde_json::{Value, json};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn windows_are_aligned_on_the_epoch_as_lambda_aligns_them() {
        let windows = TumblingWindows::new(120);
        // Lambda's documented example: a record of 07:04:35 is in 07:04:00..07:06:00.
        let window = windows.window_of(at("2020-12-09T07:04:35.123Z"));
        assert_eq!(window.start, at("2020-12-09T07:04:00Z"));
        assert_eq!(window.end, at("2020-12-09T07:06:00Z"));
        // The end is the next window's start.
        assert_eq!(
            windows.window_of(at("2020-12-09T07:06:00Z")).start,
            at("2020-12-09T07:06:00Z")
        );
        assert_eq!(
            windows.window_of(at("2020-12-09T07:05:59.999Z")).start,
            at("2020-12-09T07:04:00Z")
        );
    }

    #[test]
    fn a_record_opens_a_later_window_but_never_reopens_an_earlier_one() {
        let windows = TumblingWindows::new(60);
        let open = windows.window_of(at("2026-01-01T00:01:30Z"));
        assert_eq!(
            windows.place(Some(open), at("2026-01-01T00:01:59Z")),
            Placement::Open
        );
        assert_eq!(
            windows.place(Some(open), at("2026-01-01T00:00:59Z")),
            Placement::Open,
            "a record stamped before the open window joins it"
        );
        assert_eq!(
            windows.place(Some(open), at("2026-01-01T00:02:00Z")),
            Placement::Opens(Window {
                start: at("2026-01-01T00:02:00Z"),
                end: at("2026-01-01T00:03:00Z"),
            })
        );
        assert_eq!(
            windows.place(None, at("2026-01-01T00:02:00Z")),
            Placement::Opens(windows.window_of(at("2026-01-01T00:02:00Z")))
        );
        // A window stored before the length changed ends where it said.
        let longer = Window {
            start: at("2026-01-01T00:00:00Z"),
            end: at("2026-01-01T00:05:00Z"),
        };
        assert_eq!(
            windows.place(Some(longer), at("2026-01-01T00:04:00Z")),
            Placement::Open
        );
    }

    #[test]
    fn a_quiet_window_closes_once_the_reader_was_caught_up_after_its_end_and_grace() {
        let windows = TumblingWindows::new(5);
        assert_eq!(windows.grace(), Duration::from_secs(5));
        assert_eq!(
            TumblingWindows::new(900).grace(),
            Duration::from_secs(120),
            "Lambda waits up to 2 minutes"
        );
        let window = windows.window_of(at("2026-01-01T00:00:01Z"));
        assert!(!windows.may_close(window, None));
        assert!(!windows.may_close(window, Some(at("2026-01-01T00:00:09Z"))));
        assert!(windows.may_close(window, Some(at("2026-01-01T00:00:10Z"))));
    }

    #[test]
    fn the_answer_must_carry_a_state_object() {
        let state = returned_state(br#"{"state": {"sum": 3}, "batchItemFailures": []}"#).unwrap();
        assert_eq!(state.get(), r#"{"sum": 3}"#);
        for (body, says) in [
            (&br#"{"batchItemFailures": []}"#[..], "no state property"),
            (b"", "JSON object"),
            (br#"{"state": [1]}"#, "not a JSON object"),
            (br#"{"state": null}"#, "no state property"),
            (b"[]", "JSON object"),
        ] {
            let error = returned_state(body).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn the_event_carries_lambdas_window_fields() {
        let records = [json!({"eventID": "a"}), json!({"eventID": "b"})];
        let event = encode_event(records.iter(), 0);
        // String values: the Lambda runtime's type holds the state as a map of strings.
        let state = RawValue::from_string(r#"{"sum":"3"}"#.to_owned()).unwrap();
        let window = TumblingWindows::new(120).window_of(at("2020-12-09T07:04:35Z"));
        let call = WindowCall {
            window,
            state: &state,
            shard_id: "shardId-000000000006",
            event_source_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-stream",
            is_final: true,
            terminated_early: false,
        };
        let event = add_window_fields(event, &call);
        let event: Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(
            event,
            json!({
                "Records": [{"eventID": "a"}, {"eventID": "b"}],
                "window": {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"},
                "state": {"sum": "3"},
                "shardId": "shardId-000000000006",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-stream",
                "isFinalInvokeForWindow": true,
                "isWindowTerminatedEarly": false,
            })
        );
        // A final call (no records) reads as the Lambda runtime's own type.
        let final_call = add_window_fields(encode_event::<Value>([], 0), &call);
        let typed: aws_lambda_events::kinesis::KinesisTimeWindowEvent =
            serde_json::from_slice(&final_call).unwrap();
        let properties = typed.time_window_properties;
        assert!(properties.is_final_invoke_for_window);
        assert_eq!(properties.state["sum"], "3");
        assert_eq!(properties.shard_id.as_deref(), Some("shardId-000000000006"));
    }
}
