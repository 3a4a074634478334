//! Hostile targets (issue #15): real misbehaving HTTP servers on loopback, most of them writing
//! raw bytes so they can break the protocol where a real server would not (redirect, answer
//! too much or too slowly, send bytes that are not UTF-8 or JSON nested past any sense, close
//! the connection at any point, answer before reading the request). Each is called through
//! the real `HttpTarget` and `classify`, and through the stream engine over an in-memory shard,
//! so the batch's outcome and what `lastProcessingResult` says are checked end to end.

#[path = "support/wait.rs"]
mod wait;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use esm_operator::api::{EventSourceMappingSpec, SourceKind};
use esm_operator::destination::Destination;
use esm_operator::poller::checkpoint::Checkpoint;
use esm_operator::poller::checkpoint::memory::MemoryLeases;
use esm_operator::poller::metrics::MappingMetrics;
use esm_operator::poller::status::ProcessingResults;
use esm_operator::poller::stream::{StreamIdentity, StreamPoller, StreamSettings};
use esm_operator::sources::sharded::memory::MemoryShard;
use esm_operator::sources::sharded::{
    KinesisEncryption, KinesisRecord, RecordPayload, StreamRecord,
};
use esm_operator::target::{
    CallError, HttpTarget, Invoke, MAX_RESPONSE_BYTES, Outcome, TargetClient, TargetResponse,
    classify,
};
use esm_operator::trace::TraceContext;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Only a guard against a hang: every call here ends within its target timeout.
const HANG_GUARD: Duration = Duration::from_secs(60);
const SHARD: &str = "shardId-000000000000";
const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks";
/// What a call sends, unless it says otherwise: the servers do not look.
const PAYLOAD: &[u8] = br#"{"Records":[]}"#;
/// A body far over the response limit.
const HUGE_BODY_BYTES: usize = 50 * 1024 * 1024;

/// A loopback server whose every connection is handed to a handler; stopped when dropped.
struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start<F, Fut>(handle: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        });
        Self { url, task }
    }

    /// Reads each request whole, writes `answer` and closes the connection.
    async fn answering(answer: Vec<u8>) -> Self {
        let answer = Arc::new(answer);
        Self::start(move |mut stream| {
            let answer = Arc::clone(&answer);
            async move {
                read_request(&mut stream).await;
                // The client may hang up first (a cut body, a redirect it does not follow).
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            }
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, head and `Content-Length` body, and returns the body.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let mut buffer = [0; 8192];
    let head_end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the client closed the connection mid-request");
        read.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = read.split_off(head_end);
    while body.len() < length {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the client closed the connection mid-body");
        body.extend_from_slice(&buffer[..n]);
    }
    body
}

/// A complete raw HTTP/1.1 answer that closes the connection.
fn answer(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("HTTP/1.1 {status}\r\nConnection: close\r\n").into_bytes();
    for header in headers {
        bytes.extend_from_slice(format!("{header}\r\n").as_bytes());
    }
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn ok(body: &[u8]) -> Vec<u8> {
    answer("200 OK", &["Content-Type: application/json"], body)
}

/// Sequence number of record `i` of the in-memory shard: the item identifier the engine sends.
fn sequence(i: usize) -> String {
    format!("{:056}", i + 1)
}

/// The first `count` item identifiers.
fn sequences(count: usize) -> Vec<String> {
    (0..count).map(sequence).collect()
}

/// How the mapping calls its target.
#[derive(Clone, Copy)]
struct Mapping {
    report_batch_item_failures: bool,
    timeout_seconds: u32,
}

/// Any 2xx is success.
const PLAIN: Mapping = Mapping {
    report_batch_item_failures: false,
    timeout_seconds: 10,
};
/// `ReportBatchItemFailures`: the body of a 2xx is read as a partial batch response.
const PARTIAL: Mapping = Mapping {
    report_batch_item_failures: true,
    timeout_seconds: 10,
};

impl Mapping {
    fn with_timeout(self, timeout_seconds: u32) -> Self {
        Self {
            timeout_seconds,
            ..self
        }
    }

    fn spec(self, url: &str) -> EventSourceMappingSpec {
        let types: &[&str] = if self.report_batch_item_failures {
            &["ReportBatchItemFailures"]
        } else {
            &[]
        };
        serde_json::from_value(json!({
            "source": {"kinesis": {"streamName": "clicks"}},
            "target": {"url": url, "timeoutSeconds": self.timeout_seconds},
            "startingPosition": "TRIM_HORIZON",
            // A failed batch is given up at once, so a run ends with every record checkpointed.
            "maximumRetryAttempts": 0,
            "targetResponseTypes": types,
        }))
        .expect("a valid spec")
    }

    fn target(self, url: &str) -> HttpTarget {
        HttpTarget::new(
            &TargetClient::new().unwrap(),
            &self.spec(url).target,
            "shop",
        )
        .expect("a valid target")
    }

    /// One call of a batch with `ids` through the real client, and its outcome.
    async fn call(self, url: &str, ids: &[String]) -> (Result<TargetResponse, CallError>, Outcome) {
        self.call_with(url, ids, PAYLOAD.to_vec()).await
    }

    async fn call_with(
        self,
        url: &str,
        ids: &[String],
        payload: Vec<u8>,
    ) -> (Result<TargetResponse, CallError>, Outcome) {
        let target = self.target(url);
        let result = tokio::time::timeout(
            HANG_GUARD,
            target.invoke(payload, &TraceContext::new_trace()),
        )
        .await
        .expect("the call ends");
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let outcome = classify(&result, self.report_batch_item_failures.then_some(&ids[..]));
        (result, outcome)
    }

    /// The reason a call of a batch with `ids` failed; panics when it did not.
    async fn failure(self, url: &str, ids: &[String]) -> String {
        match self.call(url, ids).await {
            (_, Outcome::Failure(reason)) => reason,
            (result, other) => panic!("expected a failure, got {other:?} from {result:?}"),
        }
    }

    /// Runs the stream engine over a shard of `count` Kinesis records against `url` until
    /// every record is checkpointed, and returns what `lastProcessingResult` says then.
    async fn last_processing_result(self, url: &str, count: usize) -> String {
        let spec = self.spec(url);
        let records: VecDeque<StreamRecord> = (0..count)
            .map(|i| StreamRecord {
                sequence_number: sequence(i),
                approximate_arrival: None,
                payload: RecordPayload::Kinesis(KinesisRecord {
                    partition_key: format!("key-{i}"),
                    data: format!("record {i}").into_bytes(),
                    encryption: KinesisEncryption::None,
                }),
            })
            .collect();
        let mut settings = StreamSettings::from_spec(&spec, Duration::from_secs(30));
        settings.busy_poll = Duration::ZERO;
        settings.idle_poll = Duration::from_millis(20);
        let leases = Arc::new(MemoryLeases::default());
        let results = ProcessingResults::default();
        let poller = StreamPoller {
            stream: MemoryShard::new(STREAM_ARN, SHARD, records),
            leases: leases.store("replica-a", settings.lease_duration),
            target: self.target(url),
            destination: None::<Destination>,
            filters: Default::default(),
            settings,
            identity: StreamIdentity {
                mapping: "shop/clicks".into(),
                mapping_uid: "uid".into(),
                target_url: url.into(),
                stream_arn: STREAM_ARN.into(),
                invoke_identity: "test".into(),
                kind: SourceKind::Kinesis,
            },
            metrics: MappingMetrics::detached(),
            results: results.clone(),
            spans: Default::default(),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(poller.run(stopped));
        let last = Some(Checkpoint::SequenceNumber(sequence(count - 1)));
        wait::until("every record checkpointed", HANG_GUARD, || {
            let done = leases.lease(SHARD).and_then(|l| l.checkpoint) == last;
            std::future::ready(done.then_some(()))
        })
        .await;
        stop.send_replace(true);
        task.await.unwrap();
        results.take().expect("the engine reported its batches")
    }
}

fn assert_problem(result: &str, expected: &str) {
    assert!(
        result.starts_with("PROBLEM: ") && result.contains(expected),
        "lastProcessingResult {result:?} should be a problem saying {expected:?}"
    );
}

/// A redirect is not followed: Lambda invokes a function, there is nothing to redirect to, and
/// a target that redirects is misconfigured (a Service port pointing at an HTTPS redirector, a
/// path without its trailing slash). Following it would send the batch to a host the mapping
/// does not name; the batch fails instead, saying where the target pointed.
#[tokio::test]
async fn redirects_fail_the_batch_naming_the_status_and_location() {
    let elsewhere_calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&elsewhere_calls);
    let elsewhere = Server::start(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            read_request(&mut stream).await;
            let _ = stream.write_all(&ok(b"")).await;
        }
    })
    .await;
    let location = format!("{}/moved", elsewhere.url);
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        let code = &status[..3];
        let target =
            Server::answering(answer(status, &[&format!("Location: {location}")], b"")).await;
        for mapping in [PLAIN, PARTIAL] {
            let (result, outcome) = mapping.call(&target.url, &sequences(3)).await;
            assert_eq!(result.as_ref().map(|r| r.status), Ok(code.parse().unwrap()));
            let Outcome::Failure(reason) = outcome else {
                panic!("{status} must fail the batch, got {outcome:?}");
            };
            assert_eq!(
                reason,
                format!("target answered HTTP {code}, a redirect to {location} (not followed)")
            );
        }
        assert_problem(
            &PLAIN.last_processing_result(&target.url, 3).await,
            &format!("HTTP {code}, a redirect to {location}"),
        );
    }
    assert_eq!(
        elsewhere_calls.load(Ordering::SeqCst),
        0,
        "no redirect was followed"
    );
}

/// A body of 50 MB: what is kept stops at `MAX_RESPONSE_BYTES`, and the client stops reading
/// there (on top, the server can write only what fits in the socket buffers, far below 25 MB).
/// The answer fails the batch, as an over-limit response fails a Lambda invocation.
#[tokio::test]
async fn a_huge_body_is_cut_at_the_response_limit() {
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let target = Server::start(move |mut stream| {
        let written_tx = written_tx.clone();
        async move {
            read_request(&mut stream).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BODY_BYTES}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0;
            while written < HUGE_BODY_BYTES && stream.write_all(&chunk).await.is_ok() {
                written += chunk.len();
            }
            written_tx.send(written).unwrap();
        }
    })
    .await;
    for mapping in [PLAIN, PARTIAL] {
        let (result, outcome) = mapping.call(&target.url, &sequences(3)).await;
        let response = result.expect("an answer");
        assert_eq!(response.status, 200);
        assert!(response.truncated);
        assert_eq!(
            response.body.len(),
            MAX_RESPONSE_BYTES,
            "kept up to the limit"
        );
        let written = tokio::time::timeout(HANG_GUARD, written_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            written < HUGE_BODY_BYTES / 2,
            "the client read on after the limit: the server wrote {written} bytes"
        );
        // As Lambda fails an invocation whose response is over 6 MB, whether or not the
        // mapping reads the body.
        assert_eq!(
            outcome,
            Outcome::Failure(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes (the response payload limit)"
            ))
        );
    }
    for mapping in [PLAIN, PARTIAL] {
        assert_problem(
            &mapping.last_processing_result(&target.url, 3).await,
            &format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
        );
    }
}

/// A target dripping its answer a byte at a time: the target timeout bounds the whole call,
/// the body included, and an answer not complete by then fails the batch even when only its
/// status matters (the target is still working on it, as a function still running would be).
#[tokio::test]
async fn a_slow_drip_answer_times_out() {
    const BODY: &[u8] = br#"{"batchItemFailures":[]}"#;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", BODY.len()).into_bytes();
    for (what, prefix) in [("head", Vec::new()), ("body", head.clone())] {
        let drip = Arc::new([head.as_slice(), BODY].concat());
        let prefix = Arc::new(prefix);
        let target = Server::start(move |mut stream| {
            let (drip, prefix) = (Arc::clone(&drip), Arc::clone(&prefix));
            async move {
                read_request(&mut stream).await;
                stream.write_all(&prefix).await.unwrap();
                for byte in &drip[prefix.len()..] {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        for mapping in [PLAIN.with_timeout(1), PARTIAL.with_timeout(1)] {
            let (result, outcome) = mapping.call(&target.url, &sequences(3)).await;
            assert_eq!(
                result,
                Err(CallError::Timeout(Duration::from_secs(1))),
                "{what}"
            );
            assert_eq!(
                outcome,
                Outcome::Failure("no complete answer within the 1s target timeout".into()),
                "{what}"
            );
        }
        assert_problem(
            &PLAIN
                .with_timeout(1)
                .last_processing_result(&target.url, 3)
                .await,
            "no complete answer within the 1s target timeout",
        );
    }
}

/// `target` answers 200 with a body serde_json refuses saying `error`: a partial batch
/// response that fails the batch, in the call's reason (returned) and in
/// `lastProcessingResult`; without partial batch responses the 200 succeeds.
async fn assert_not_json(target: &Server, error: &str) -> String {
    let expected = format!("not valid JSON ({error}");
    let reason = PARTIAL.failure(&target.url, &sequences(3)).await;
    assert!(
        reason.starts_with(&format!("invalid partial batch response: {expected}")),
        "{reason}"
    );
    assert_eq!(
        PLAIN.call(&target.url, &sequences(3)).await.1,
        Outcome::Success
    );
    assert_problem(
        &PARTIAL.last_processing_result(&target.url, 3).await,
        &expected,
    );
    reason
}

/// Bytes that are not UTF-8 make a partial batch response invalid; quoted in a reason they are
/// replaced, so the reason stays text. Without partial batch responses a 2xx body is not read.
#[tokio::test]
async fn invalid_utf8_is_quoted_readably() {
    let partial = Server::answering(ok(
        b"{\"batchItemFailures\":[{\"itemIdentifier\":\"\xff\xfe\"}]}",
    ))
    .await;
    let reason = assert_not_json(&partial, "invalid unicode code point").await;
    assert!(
        reason.ends_with("{\"batchItemFailures\":[{\"itemIdentifier\":\"\u{fffd}\u{fffd}\"}]}"),
        "{reason}"
    );

    let error = Server::answering(answer(
        "500 Internal Server Error",
        &[],
        b"\xc3\x28 boom \x1b[31mred\x1b[0m\nsecond line\x00",
    ))
    .await;
    let reason = PLAIN.failure(&error.url, &sequences(3)).await;
    assert_eq!(
        reason,
        "target answered HTTP 500: \u{fffd}( boom \\u{1b}[31mred\\u{1b}[0m\\nsecond line\\0"
    );
    assert_problem(
        &PLAIN.last_processing_result(&error.url, 3).await,
        "HTTP 500: \u{fffd}( boom \\u{1b}[31mred",
    );
}

/// JSON nested 100,000 levels deep: serde_json's recursion limit refuses it (no stack
/// overflow), and the batch fails saying so; the status of an error answer needs no parsing.
#[tokio::test]
async fn deeply_nested_json_is_refused_by_the_recursion_limit() {
    let depth = 100_000;
    let nested = ["[".repeat(depth), "]".repeat(depth)].concat();
    let in_failures = format!("{{\"batchItemFailures\":{nested}}}");
    for body in [nested.as_str(), in_failures.as_str()] {
        let target = Server::answering(ok(body.as_bytes())).await;
        let reason = assert_not_json(&target, "recursion limit exceeded").await;
        assert!(
            reason.len() < 1000,
            "a bounded reason: {} bytes",
            reason.len()
        );
    }
}

fn failures_of(ids: impl IntoIterator<Item = String>) -> Vec<u8> {
    let items: Vec<_> = ids
        .into_iter()
        .map(|id| json!({"itemIdentifier": id}))
        .collect();
    serde_json::to_vec(&json!({"batchItemFailures": items})).unwrap()
}

/// A partial batch response listing 10,000 items: all of a batch of 10,000 fail, in any order
/// and with repeats; a list of mostly unknown items fails the batch naming the first unknown.
#[tokio::test]
async fn thousands_of_listed_items() {
    let ids = sequences(10_000);
    let every = failures_of(ids.iter().rev().chain(&ids[..100]).cloned());
    let target = Server::answering(ok(&every)).await;
    assert_eq!(
        PARTIAL.call(&target.url, &ids).await.1,
        Outcome::PartialFailure((0..10_000).collect())
    );

    let unknown = failures_of(
        ids[..3]
            .iter()
            .cloned()
            .chain((3..10_000).map(|i| format!("unknown-{i}"))),
    );
    let target = Server::answering(ok(&unknown)).await;
    let expected = r#"invalid partial batch response: batchItemFailures[3].itemIdentifier "unknown-3" is not in the batch"#;
    assert_eq!(
        PARTIAL.call(&target.url, &ids).await.1,
        Outcome::Failure(expected.into())
    );
    assert_problem(
        &PARTIAL.last_processing_result(&target.url, 3).await,
        expected,
    );
}

/// Whatever a partial batch response holds, the reason quotes a bounded part of it: it goes to
/// the logs and the call's span on every retry, not only to status.
#[tokio::test]
async fn reasons_quote_a_bounded_part_of_huge_values() {
    let long = "x".repeat(1024 * 1024);
    let numbers: Vec<usize> = (0..200_000).collect();
    for (body, expected) in [
        (
            json!({"batchItemFailures": long}),
            "batchItemFailures is not a list: \"xxx",
        ),
        (
            json!({"batchItemFailures": [{"itemIdentifier": long}]}),
            "batchItemFailures[0].itemIdentifier \"xxx",
        ),
        (
            json!({"batchItemFailures": [{"itemIdentifier": {"id": long}}]}),
            "batchItemFailures[0].itemIdentifier is not a string: {\"id\":\"xxx",
        ),
        (json!(numbers), "not a JSON object: [0,1,2,"),
    ] {
        let target = Server::answering(ok(&serde_json::to_vec(&body).unwrap())).await;
        let reason = PARTIAL.failure(&target.url, &sequences(3)).await;
        assert!(reason.contains(expected), "{expected}: {:.300}", reason);
        assert!(
            reason.len() < 1000,
            "{expected}: a bounded reason, not {} bytes",
            reason.len()
        );
    }
}

/// A target closing the connection before its answer is complete: without a word, in the
/// middle of the head, or in the middle of the body. Each fails the batch, whatever the
/// mapping, saying the connection closed.
#[tokio::test]
async fn a_closed_connection_fails_the_batch() {
    let cut_body = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".as_slice(),
        br#"{"batchItemFailures":"#,
    ]
    .concat();
    for (what, written, expected) in [
        (
            "after reading the request",
            Vec::new(),
            "connection closed before message completed",
        ),
        (
            "mid-head",
            b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
            "connection closed before message completed",
        ),
        (
            "mid-body",
            cut_body,
            "end of file before message length reached",
        ),
    ] {
        let written = Arc::new(written);
        let target = Server::start(move |mut stream| {
            let written = Arc::clone(&written);
            async move {
                read_request(&mut stream).await;
                stream.write_all(&written).await.unwrap();
            }
        })
        .await;
        for mapping in [PLAIN, PARTIAL] {
            let reason = mapping.failure(&target.url, &sequences(3)).await;
            assert!(
                reason.contains(expected),
                "{what}: {reason:?} should say {expected:?}"
            );
        }
        assert_problem(
            &PLAIN.last_processing_result(&target.url, 3).await,
            expected,
        );
    }
}

/// A server answering 200 and closing, without reading the request body: after reading the
/// head, or (`head: false`) as soon as it accepts the connection, before the request is sent.
async fn answering_unread(head: bool) -> Server {
    Server::start(move |mut stream| async move {
        let mut read = Vec::new();
        let mut byte = [0];
        // A byte at a time: not one byte of the body is read.
        while head && !read.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            read.push(byte[0]);
        }
        let _ = stream.write_all(&ok(b"")).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// A target answering before it has read the request. Reading only the head of a small
/// request, then answering and closing: the 200 came, and counts as any 200 does. Speaking as
/// soon as the connection opens, or leaving megabytes of body unread (closing then resets the
/// connection): whether the client reads the answer first or fails sending is a race on any
/// HTTP client, so either the 200 counts or the batch fails saying the connection broke;
/// never a hang, never anything else.
#[tokio::test]
async fn an_answer_before_the_request_is_read() {
    let target = answering_unread(true).await;
    for mapping in [PLAIN, PARTIAL] {
        let (result, outcome) = mapping.call(&target.url, &sequences(3)).await;
        assert_eq!(result.map(|r| r.status), Ok(200));
        assert_eq!(outcome, Outcome::Success);
    }
    assert_eq!(PARTIAL.last_processing_result(&target.url, 3).await, "OK");

    let megabytes = vec![b' '; 8 * 1024 * 1024];
    for (head, payload) in [
        (false, PAYLOAD),
        (false, &megabytes[..]),
        (true, &megabytes[..]),
    ] {
        let target = answering_unread(head).await;
        for _ in 0..5 {
            match PARTIAL
                .call_with(&target.url, &sequences(3), payload.to_vec())
                .await
                .1
            {
                Outcome::Success => {}
                Outcome::Failure(reason) => assert!(
                    reason.starts_with("request failed: error sending request for url")
                        && reason.contains("connection"),
                    "{reason}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
