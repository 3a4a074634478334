//! The target's answer (src/target.rs, [`classify`]): status and body are whatever the target
//! wrote.
//!
//! Input, so that seeds read as what they are:
//!
//! ```text
//! 200 [truncated] [location=URL]
//! id-1<TAB>id-2<TAB>...        (or `-`: the mapping does not use ReportBatchItemFailures)
//! body bytes, to the end
//! ```

use std::collections::BTreeSet;

use esm_operator::target::{Outcome, TargetResponse, classify};
use serde_json::Value;

/// Characters of the target's text a reason may quote: two snippets of 200 characters, each
/// character escaped to at most 10 (`\u{10ffff}`), and the words around them.
const MAX_REASON_CHARS: usize = 2 * 200 * 10 + 300;

/// `partial_batch_response`: a failure's reason is one bounded line; only a 2xx succeeds; a
/// partial failure names positions of the batch, ascending, exactly those whose ids the body
/// lists; a success with ReportBatchItemFailures lists none.
pub fn check(data: &[u8]) {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let (Some(Ok(head)), Some(Ok(ids)), Some(body)) = (
        lines.next().map(std::str::from_utf8),
        lines.next().map(std::str::from_utf8),
        lines.next(),
    ) else {
        return;
    };
    let mut words = head.split(' ');
    let Some(Ok(status)) = words.next().map(str::parse::<u16>) else {
        return;
    };
    let mut response = TargetResponse {
        status,
        body: body.to_vec(),
        truncated: false,
        location: None,
    };
    for word in words {
        match word.strip_prefix("location=") {
            Some(location) => response.location = Some(location.to_owned()),
            None => response.truncated |= word == "truncated",
        }
    }
    let ids: Option<Vec<&str>> = (ids != "-").then(|| ids.split('\t').collect());
    let outcome = classify(&Ok(response.clone()), ids.as_deref());
    let succeeded = (200..300).contains(&status) && !response.truncated;
    match &outcome {
        Outcome::Failure(reason) => {
            assert!(
                !reason.chars().any(char::is_control),
                "a reason is one line of text: {reason:?}"
            );
            assert!(
                reason.chars().count() <= MAX_REASON_CHARS,
                "a reason is bounded: {} characters",
                reason.chars().count()
            );
            if (300..400).contains(&status) && response.location.is_some() {
                assert!(reason.contains("redirect"), "{reason}");
            }
        }
        Outcome::Success => {
            assert!(succeeded, "only a complete 2xx succeeds: {status}");
            if ids.is_some() {
                assert_eq!(listed(body), Some(BTreeSet::new()), "nothing failed");
            }
        }
        Outcome::PartialFailure(positions) => {
            assert!(succeeded, "only a complete 2xx lists failures: {status}");
            let ids = ids
                .as_deref()
                .expect("partial failures only with ReportBatchItemFailures");
            assert!(!positions.is_empty(), "a partial failure names a record");
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "positions ascend without repeats: {positions:?}"
            );
            assert!(
                positions.iter().all(|&p| p < ids.len()),
                "positions are in the batch: {positions:?} of {}",
                ids.len()
            );
            let named: BTreeSet<&str> = positions.iter().map(|&p| ids[p]).collect();
            let listed = listed(body).expect("a partial failure's body is a list of failures");
            assert_eq!(
                named,
                listed.iter().map(String::as_str).collect(),
                "the failed records are those the body lists"
            );
        }
    }
    if succeeded && ids.is_none() {
        assert_eq!(outcome, Outcome::Success, "without ReportBatchItemFailures");
    }
}

/// The item identifiers a partial batch response lists, read independently of the classifier:
/// `None` when the body is not JSON, or is JSON other than no failures or a list of them.
fn listed(body: &[u8]) -> Option<BTreeSet<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(BTreeSet::new());
    }
    let failures = match serde_json::from_slice::<Value>(body).ok()? {
        Value::Null => return Some(BTreeSet::new()),
        Value::Array(items) if items.is_empty() => return Some(BTreeSet::new()),
        Value::Object(mut response) => match response.remove("batchItemFailures") {
            None | Some(Value::Null) => return Some(BTreeSet::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return None,
        },
        _ => return None,
    };
    failures
        .iter()
        .map(|item| item.get("itemIdentifier")?.as_str().map(str::to_owned))
        .collect()
}
