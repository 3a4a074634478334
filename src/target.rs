//! Calling the target (SPEC §5): an HTTP POST of the event, and what the answer means for the
//! batch.
//!
//! [`HttpTarget`] does the call behind the [`Invoke`] trait (so the engine is tested without a
//! network); [`classify`] turns its result into an [`Outcome`], pure.
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::api::Target;
use crate::trace::TraceContext;

/// Most of a response body that is read: Lambda's response payload limit. A larger partial
/// batch response fails the batch; other answers only need the status.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Characters of a failed answer's body quoted in reasons and logs.
const BODY_SNIPPET_CHARS: usize = 200;

/// A target's answer: status and (up to [`MAX_RESPONSE_BYTES`] of) the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body was longer than [`MAX_RESPONSE_BYTES`] and was cut there.
    pub truncated: bool,
    /// Where a 3xx answer points (its `Location`), for the reason: redirects are not followed.
    pub location: Option<String>,
}

/// A call that got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Also when the head came in time but the body did not: the timeout bounds the whole call.
    #[error("no complete answer within the {}s target timeout", .0.as_secs())]
    Timeout(Duration),
    #[error("connection error: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

/// Sends one event to the target.
pub trait Invoke: Send + Sync + 'static {
    fn invoke(
        &self,
        payload: Vec<u8>,
        trace: &TraceContext,
    ) -> impl Future<Output = Result<TargetResponse, CallError>> + Send;
}

/// What a call means for its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record succeeded.
    Success,
    /// A partial batch response: positions (ascending, no repeats) of the records that failed.
    PartialFailure(Vec<usize>),
    /// The whole batch failed, and why.
    Failure(String),
}

/// Classifies a call's result. `item_ids` are the batch's item identifiers in order when the
/// mapping uses `ReportBatchItemFailures`, `None` when it does not (then any 2xx is a success).
pub fn classify(result: &Result<TargetResponse, CallError>, item_ids: Option<&[&str]>) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(err) => return Outcome::Failure(err.to_string()),
    };
    if let (300..400, Some(location)) = (response.status, &response.location) {
        return Outcome::Failure(format!(
            "target answered HTTP {}, a redirect to {} (not followed){}",
            response.status,
            bounded(location),
            body_snippet(&response.body)
        ));
    }
    if !(200..300).contains(&response.status) {
        return Outcome::Failure(format!(
            "target answered HTTP {}{}",
            response.status,
            body_snippet(&response.body)
        ));
    }
    // Lambda fails an invocation whose response is over its 6 MB payload limit, whatever the
    // function meant by it.
    if response.truncated {
        return Outcome::Failure(format!(
            "the answer is larger than {MAX_RESPONSE_BYTES} bytes (the response payload limit)"
        ));
    }
    let Some(ids) = item_ids else {
        return Outcome::Success;
    };
    match batch_item_failures(&response.body, ids) {
        Ok(failed) if failed.is_empty() => Outcome::Success,
        Ok(failed) => Outcome::PartialFailure(failed),
        Err(reason) => Outcome::Failure(format!("invalid partial batch response: {reason}")),
    }
}

/// Positions of the records a partial batch response lists. An empty body, `null`, `[]`, an
/// object without `batchItemFailures` or an empty list mean none failed, as recorded on AWS for
/// every source (a handler returning an empty list of failures directly, as some libraries do);
/// invalid JSON, another value, an item without a non-empty string `itemIdentifier`, or one
/// naming no record of the batch are errors.
fn batch_item_failures(body: &[u8], ids: &[&str]) -> Result<Vec<usize>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|err| format!("not valid JSON ({err}){}", body_snippet(body)))?;
    let failures = match &parsed {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) if items.is_empty() => return Ok(Vec::new()),
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(format!(
                    "batchItemFailures is not a list: {}",
                    bounded(&other.to_string())
                ));
            }
        },
        other => {
            return Err(format!(
                "not a JSON object: {}",
                bounded(&other.to_string())
            ));
        }
    };
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let positions: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut failed = Vec::with_capacity(failures.len());
    for (index, item) in failures.iter().enumerate() {
        let identifier = match item.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id.as_str(),
            Some(Value::String(_)) => {
                return Err(format!(
                    "batchItemFailures[{index}].itemIdentifier is empty"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "batchItemFailures[{index}].itemIdentifier is not a string: {}",
                    bounded(&other.to_string())
                ));
            }
            None => return Err(format!("batchItemFailures[{index}] has no itemIdentifier")),
        };
        let Some(&position) = positions.get(identifier) else {
            return Err(format!(
                "batchItemFailures[{index}].itemIdentifier {} is not in the batch",
                bounded(&format!("{identifier:?}"))
            ));
        };
        failed.push(position);
    }
    failed.sort_unstable();
    failed.dedup();
    Ok(failed)
}

/// `: <start of the body>` for reasons, bounded (see [`bounded`]); bytes that are not UTF-8
/// are replaced. Empty for an empty body.
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SNIPPET_CHARS * 4)]);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    format!(": {}", bounded(text))
}

/// Up to [`BODY_SNIPPET_CHARS`] characters of what a target sent, for a reason: cut on a
/// character boundary, and with control characters escaped, so a reason stays one line of
/// text in logs and status whatever the target wrote (a reason is logged on every retry).
fn bounded(text: &str) -> String {
    let (shown, cut) = match text.char_indices().nth(BODY_SNIPPET_CHARS) {
        Some((cut, _)) => (&text[..cut], "..."),
        None => (text, ""),
    };
    let mut quoted = String::with_capacity(shown.len() + cut.len());
    for c in shown.chars() {
        if c.is_control() {
            quoted.extend(c.escape_debug());
        } else {
            quoted.push(c);
        }
    }
    quoted.push_str(cut);
    quoted
}

/// Where a mapping's batches go: the Service as `http://NAME.NAMESPACE.svc:PORT/PATH`, or the
/// URL.
pub fn target_url(target: &Target, mapping_namespace: &str) -> Option<String> {
    match (&target.endpoint.service, &target.endpoint.url) {
        (Some(service), None) => Some(format!(
            "http://{}.{}.svc:{}{}",
            service.name,
            service.namespace.as_deref().unwrap_or(mapping_namespace),
            service.port,
            service.path.as_deref().unwrap_or("/")
        )),
        (None, Some(url)) => Some(url.clone()),
        _ => None,
    }
}

/// The HTTP client behind every target and HTTP destination of a process: one connection pool
/// (connections are reused between calls, per host) and one TLS configuration (reqwest loads
/// the platform's root certificates for each client it builds: ~0.3 MiB per mapping when each
/// had its own). One per process (per tokio runtime: pooled connections belong to the runtime
/// that opened them).
#[derive(Clone, Debug)]
pub struct TargetClient(reqwest::Client);

impl TargetClient {
    pub fn new() -> Result<Self, TargetConfigError> {
        reqwest::Client::builder()
            .user_agent(concat!("esm-operator/", env!("CARGO_PKG_VERSION")))
            // Lambda invokes a function, with nothing to redirect: a target that redirects is
            // misconfigured, and following it (reqwest follows 10 by default) would send the
            // batch to a host the mapping does not name. The 3xx fails the batch instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Self)
            .map_err(|err| TargetConfigError::Client(err.to_string()))
    }
}

/// The target of a mapping over HTTP, called through the process's [`TargetClient`].
#[derive(Clone, Debug)]
pub struct HttpTarget {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

/// A target that cannot be called as configured.
#[derive(Debug, thiserror::Error)]
pub enum TargetConfigError {
    #[error("spec.target: exactly one of service, url must be set")]
    NoEndpoint,
    #[error("spec.target.url: {url:?} is not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
}

impl HttpTarget {
    pub fn new(
        client: &TargetClient,
        target: &Target,
        mapping_namespace: &str,
    ) -> Result<Self, TargetConfigError> {
        let url = target_url(target, mapping_namespace).ok_or(TargetConfigError::NoEndpoint)?;
        let url = reqwest::Url::parse(&url).map_err(|err| TargetConfigError::BadUrl {
            url: url.clone(),
            reason: err.to_string(),
        })?;
        let timeout = target.timeout();
        Ok(Self {
            client: client.0.clone(),
            url,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn call_error(&self, err: reqwest::Error) -> CallError {
        if err.is_timeout() {
            CallError::Timeout(self.timeout)
        } else if err.is_connect() {
            CallError::Connect(error_chain(&err))
        } else {
            CallError::Request(error_chain(&err))
        }
    }
}

impl Invoke for HttpTarget {
    async fn invoke(
        &self,
        payload: Vec<u8>,
        trace: &TraceContext,
    ) -> Result<TargetResponse, CallError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("traceparent", &trace.traceparent);
        if let Some(xray) = &trace.amzn_trace_id {
            request = request.header("X-Amzn-Trace-Id", xray);
        }
        let mut response = request
            .timeout(self.timeout)
            .body(payload)
            .send()
            .await
            .map_err(|err| self.call_error(err))?;
        let status = response.status().as_u16();
        let location = response
            .status()
            .is_redirection()
            .then(|| response.headers().get(reqwest::header::LOCATION))
            .flatten()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|err| self.call_error(err))? {
            let room = MAX_RESPONSE_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(TargetResponse {
            status,
            body,
            truncated,
            location,
        })
    }
}

/// The error and its sources, one line: reqwest's own message rarely says what went wrong.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HttpEndpoint, ServiceReference};

    fn ok(status: u16, body: &str) -> Result<TargetResponse, CallError> {
        Ok(TargetResponse {
            status,
            body: body.as_bytes().to_vec(),
            truncated: false,
            location: None,
        })
    }

    const IDS: &[&str] = &["a", "b", "c"];

    #[test]
    fn any_2xx_succeeds_without_partial_responses() {
        assert_eq!(classify(&ok(200, "garbage"), None), Outcome::Success);
        assert_eq!(classify(&ok(204, ""), None), Outcome::Success);
    }

    #[test]
    fn non_2xx_fails_with_status_and_bounded_body() {
        let long = "x".repeat(10_000);
        let Outcome::Failure(reason) = classify(&ok(503, &long), None) else {
            panic!("503 must fail");
        };
        assert!(
            reason.starts_with("target answered HTTP 503: xxx"),
            "{reason}"
        );
        assert!(
            reason.len() < 300,
            "reason is bounded: {} bytes",
            reason.len()
        );
        assert_eq!(
            classify(&ok(302, ""), Some(IDS)),
            Outcome::Failure("target answered HTTP 302".into())
        );
    }

    #[test]
    fn redirects_fail_naming_their_location() {
        let result = Ok(TargetResponse {
            status: 308,
            body: b"moved".to_vec(),
            truncated: false,
            location: Some("https://elsewhere/\n".into()),
        });
        assert_eq!(
            classify(&result, None),
            Outcome::Failure(
                "target answered HTTP 308, a redirect to https://elsewhere/\\n (not followed): moved"
                    .into()
            )
        );
    }

    #[test]
    fn call_errors_fail_the_batch() {
        let timeout = Err(CallError::Timeout(Duration::from_secs(3)));
        assert_eq!(
            classify(&timeout, Some(IDS)),
            Outcome::Failure("no complete answer within the 3s target timeout".into())
        );
    }

    #[test]
    fn partial_responses_list_failed_positions() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"c"},{"itemIdentifier":"a"},{"itemIdentifier":"c"}]}"#;
        assert_eq!(
            classify(&ok(200, body), Some(IDS)),
            Outcome::PartialFailure(vec![0, 2])
        );
    }

    #[test]
    fn empty_or_absent_failure_lists_are_success() {
        for body in [
            "",
            "  \n",
            "null",
            "{}",
            "[]",
            " [ ] ",
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
            r#"{"statusCode":200}"#,
        ] {
            assert_eq!(
                classify(&ok(200, body), Some(IDS)),
                Outcome::Success,
                "{body}"
            );
        }
    }

    #[test]
    fn bad_partial_responses_fail_the_whole_batch_naming_the_problem() {
        for (body, expected) in [
            ("garbage", "not valid JSON"),
            ("[1,2]", "not a JSON object: [1,2]"),
            (r#"[{"itemIdentifier":"a"}]"#, "not a JSON object"),
            ("7", "not a JSON object: 7"),
            (
                r#"{"batchItemFailures":"a"}"#,
                "batchItemFailures is not a list",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                "batchItemFailures[0].itemIdentifier is empty",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"id":"b"}]}"#,
                "batchItemFailures[1] has no itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":7}]}"#,
                "itemIdentifier is not a string: 7",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"zz"}]}"#,
                r#"itemIdentifier "zz" is not in the batch"#,
            ),
        ] {
            match classify(&ok(200, body), Some(IDS)) {
                Outcome::Failure(reason) => assert!(
                    reason.contains(expected),
                    "{body}: {reason:?} should contain {expected:?}"
                ),
                other => panic!("{body}: expected a failure, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_answer_over_the_payload_limit_fails() {
        let result = Ok(TargetResponse {
            status: 200,
            body: b"{}".to_vec(),
            truncated: true,
            location: None,
        });
        assert!(matches!(classify(&result, Some(IDS)), Outcome::Failure(_)));
        assert!(matches!(classify(&result, None), Outcome::Failure(_)));
    }

    #[test]
    fn snippet_cuts_on_a_character_boundary() {
        let text = "é".repeat(500);
        let snippet = body_snippet(text.as_bytes());
        assert_eq!(
            snippet.chars().filter(|c| *c == 'é').count(),
            BODY_SNIPPET_CHARS
        );
        assert!(snippet.ends_with("..."));
        assert_eq!(body_snippet(b"  "), "");
        assert_eq!(body_snippet(b"a\r\nb\x1b\xff"), ": a\\r\\nb\\u{1b}\u{fffd}");
    }

    #[test]
    fn service_targets_resolve_to_cluster_dns() {
        let mut target = Target {
            endpoint: HttpEndpoint {
                service: Some(ServiceReference {
                    name: "orders".into(),
                    namespace: None,
                    port: 8080,
                    path: Some("/events".into()),
                }),
                url: None,
            },
            timeout_seconds: Some(5),
        };
        assert_eq!(
            target_url(&target, "shop").as_deref(),
            Some("http://orders.shop.svc:8080/events")
        );
        let http =
            HttpTarget::new(&TargetClient::new().unwrap(), &target, "shop").expect("valid target");
        assert_eq!(http.timeout(), Duration::from_secs(5));
        target.endpoint.service.as_mut().unwrap().path = None;
        target.endpoint.service.as_mut().unwrap().namespace = Some("other".into());
        assert_eq!(
            target_url(&target, "shop").as_deref(),
            Some("http://orders.other.svc:8080/")
        );
        target.endpoint.service = None;
        target.endpoint.url = Some("not a url".into());
        let err =
            HttpTarget::new(&TargetClient::new().unwrap(), &target, "shop").expect_err("bad url");
        assert!(
            err.to_string()
                .starts_with("spec.target.url: \"not a url\""),
            "{err}"
        );
    }
}
