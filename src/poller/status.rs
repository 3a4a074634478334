//! `status.lastProcessingResult` of a mapping, as its pollers see it: "OK", or "PROBLEM: ..."
//! (the controller writes the initial "No records processed"). Written with server-side apply
//! under its own field manager, only when it changes and at most once per interval.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use crate::api::EventSourceMapping;

/// Field manager of everything pollers write.
pub const FIELD_MANAGER: &str = "esm-poller";
/// Field manager of the source checks pollers report as conditions: separate from
/// [`FIELD_MANAGER`] because an apply must repeat every field its manager owns.
pub const CHECKS_FIELD_MANAGER: &str = "esm-poller-checks";
/// Condition type of the SQS visibility-timeout check (SPEC §4.3).
pub const QUEUE_VISIBILITY_TIMEOUT: &str = "QueueVisibilityTimeout";
/// Shortest time between two status writes of one poller.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Most characters of a problem shown in status.
const MAX_PROBLEM_CHARS: usize = 512;

pub const OK: &str = "OK";
pub const PROBLEM_PREFIX: &str = "PROBLEM: ";

/// Outcomes reported by the poller loops since the last look.
#[derive(Clone, Default)]
pub struct ProcessingResults(Arc<Mutex<Interval>>);

#[derive(Default)]
struct Interval {
    succeeded: bool,
    problem: Option<String>,
}

impl ProcessingResults {
    /// A batch was processed (the target answered with success or a partial batch response).
    pub fn ok(&self) {
        self.0.lock().expect("results lock").succeeded = true;
    }

    /// Something went wrong: a failed call, a source error, a record that cannot be sent.
    pub fn problem(&self, problem: impl Into<String>) {
        self.0.lock().expect("results lock").problem = Some(problem.into());
    }

    /// What status should say about the interval that ends now, and starts the next: the last
    /// problem if there was one (so a failure stays visible for an interval even when later
    /// batches succeed), else "OK" if a batch succeeded, else `None` (keep what it says).
    pub fn take(&self) -> Option<String> {
        let interval = std::mem::take(&mut *self.0.lock().expect("results lock"));
        match (interval.problem, interval.succeeded) {
            (Some(problem), _) => Some(format!("{PROBLEM_PREFIX}{}", bounded(&problem))),
            (None, true) => Some(OK.to_owned()),
            (None, false) => None,
        }
    }
}

fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_PROBLEM_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Writes what `results` says to the mapping's status every [`STATUS_INTERVAL`] when it
/// changed, until `stop`, then once more. A failed write is logged and tried again next time.
pub async fn write_results(
    api: Api<EventSourceMapping>,
    name: String,
    results: ProcessingResults,
    mut stop: watch::Receiver<bool>,
) {
    let mut written: Option<String> = None;
    let mut ticker = tokio::time::interval(STATUS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<String> = None;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if let Some(result) = results.take() {
            pending = Some(result);
        }
        if let Some(result) = pending.take_if(|r| written.as_ref() != Some(r)) {
            match patch_result(&api, &name, &result).await {
                Ok(()) => written = Some(result),
                Err(err) => {
                    tracing::warn!(mapping = %name, error = %err, "cannot write lastProcessingResult");
                    pending = Some(result);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

async fn patch_result(
    api: &Api<EventSourceMapping>,
    name: &str,
    result: &str,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "status": { "lastProcessingResult": result },
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}

/// Sets one condition of the mapping's status, leaving the others to their writers (the
/// conditions are a map keyed by type).
pub async fn report_check(
    api: &Api<EventSourceMapping>,
    name: &str,
    condition: &Condition,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "status": { "conditions": [condition] },
    });
    api.patch_status(
        name,
        &PatchParams::apply(CHECKS_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_win_within_an_interval() {
        let results = ProcessingResults::default();
        assert_eq!(results.take(), None, "nothing happened");
        results.ok();
        assert_eq!(results.take().as_deref(), Some("OK"));
        results.ok();
        results.problem("target answered HTTP 500");
        results.ok();
        assert_eq!(
            results.take().as_deref(),
            Some("PROBLEM: target answered HTTP 500")
        );
        assert_eq!(results.take(), None, "each interval starts empty");
    }

    #[test]
    fn problems_are_bounded() {
        let results = ProcessingResults::default();
        results.problem("x".repeat(10_000));
        let shown = results.take().unwrap();
        assert_eq!(shown.len(), PROBLEM_PREFIX.len() + MAX_PROBLEM_CHARS);
    }
}
