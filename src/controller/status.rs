//! Pure: what a mapping's status should say, from what the reconciler observed.
use k8s_openapi::jiff::Timestamp;

use super::validate::InvalidSpec;
use crate::api::{EventSourceMapping, EventSourceMappingStatus, State};
use crate::meta::{READY, set_condition};

/// Ready reasons of a mapping the controller refuses to run; each is also a Warning event.
pub const REFUSED_REASONS: [&str; 2] = ["InvalidSpec", "DuplicateMapping"];
/// Start with [`crate::poller::status::PROBLEM_PREFIX`], as every problem the pollers report.
const INVALID_SPEC_PROBLEM: &str = "PROBLEM: invalid spec: ";
const DUPLICATE_PROBLEM: &str = "PROBLEM: duplicate mapping: ";
/// Lambda's `StateTransitionReason` for a change the user made: every state change here is one
/// (an apply, an enable, a delete); the details are in the Ready condition's message.
const USER_INITIATED_QUEUE: &str = "USER_INITIATED";
const USER_INITIATED_STREAM: &str = "User action";
const NO_RECORDS: &str = "No records processed";

/// What the reconciler saw of the poller workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas that exist (any version).
    pub current: i32,
    /// Ready replicas.
    pub ready: i32,
    /// The newest pod template is rolled out to every replica.
    pub rolled_out: bool,
}

impl Workload {
    pub fn settled(&self) -> bool {
        self.rolled_out && self.current == self.desired && self.ready >= self.desired
    }
}

/// Everything that decides the status.
pub enum Observation<'a> {
    Invalid(&'a InvalidSpec),
    Deleting,
    Running(Workload),
    /// Refused: the older mapping `of` (`NAMESPACE/NAME`) reads the same source and calls the
    /// same target; the workload is scaled to zero.
    Duplicate {
        of: String,
        workload: Workload,
    },
}

/// What the controller writes after a reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub struct NextStatus {
    /// The fields the controller owns (see [`owned_part`]); equal to the current ones when
    /// nothing changed, so an unchanged mapping causes no write.
    pub owned: EventSourceMappingStatus,
    /// A new `lastProcessingResult`, when the controller has something to say: an invalid spec,
    /// or "No records processed" before any poller reported. Pollers own it otherwise.
    pub processing_result: Option<String>,
}

/// The part of a status the controller owns: everything but `lastProcessingResult` and the
/// conditions pollers write.
pub fn owned_part(status: &EventSourceMappingStatus) -> EventSourceMappingStatus {
    EventSourceMappingStatus {
        last_processing_result: None,
        conditions: status
            .conditions
            .iter()
            .filter(|c| c.type_ == READY)
            .cloned()
            .collect(),
        ..status.clone()
    }
}

pub fn next_status(
    mapping: &EventSourceMapping,
    observation: Observation<'_>,
    now: Timestamp,
) -> NextStatus {
    let current = mapping.status.clone().unwrap_or_default();
    let previous = owned_part(&current);
    let generation = mapping.metadata.generation;
    let spec_changed =
        previous.observed_generation.is_some() && previous.observed_generation != generation;
    let mut status = EventSourceMappingStatus {
        source_kind: mapping.spec.source_kind(),
        observed_generation: generation,
        ..previous.clone()
    };
    let processing_result = match &observation {
        Observation::Invalid(invalid) => Some(format!("{INVALID_SPEC_PROBLEM}{invalid}")),
        Observation::Duplicate { of, .. } => {
            Some(format!("{DUPLICATE_PROBLEM}{}", duplicate_message(of)))
        }
        _ if current.last_processing_result.as_deref().is_none_or(|r| {
            r.starts_with(INVALID_SPEC_PROBLEM) || r.starts_with(DUPLICATE_PROBLEM)
        }) =>
        {
            Some(NO_RECORDS.to_string())
        }
        _ => None,
    }
    .filter(|result| current.last_processing_result.as_ref() != Some(result));
    let (state, ready) = match observation {
        Observation::Invalid(invalid) => (
            previous.state.unwrap_or(State::Creating),
            ("False", "InvalidSpec", invalid.to_string()),
        ),
        Observation::Deleting => (
            State::Deleting,
            (
                "False",
                "Deleting",
                "mapping deleted; removing its pollers".into(),
            ),
        ),
        Observation::Duplicate { of, workload } => {
            status.replicas = Some(workload.desired);
            status.ready_replicas = Some(workload.ready);
            let state = next_state(previous.state, false, spec_changed, workload);
            (state, ("False", "DuplicateMapping", duplicate_message(&of)))
        }
        Observation::Running(workload) => {
            status.replicas = Some(workload.desired);
            status.ready_replicas = Some(workload.ready);
            let state = next_state(previous.state, mapping.spec.enabled, spec_changed, workload);
            let replicas = format!(
                "{} of {} poller replicas ready",
                workload.ready, workload.desired
            );
            let ready = match state {
                State::Enabled => (
                    "True",
                    "PollersRunning",
                    format!("pollers running: {replicas}"),
                ),
                State::Disabled => (
                    "True",
                    "Disabled",
                    "disabled by the user (enabled: false); the mapping has no pollers".into(),
                ),
                State::Disabling => (
                    "False",
                    "Progressing",
                    format!("stopping pollers: {replicas}"),
                ),
                State::Updating => (
                    "False",
                    "Progressing",
                    format!("rolling out the changed spec: {replicas}"),
                ),
                State::Creating | State::Enabling => (
                    "False",
                    "Progressing",
                    format!("starting pollers: {replicas}"),
                ),
                State::Deleting => unreachable!("deleting is only from Observation::Deleting"),
            };
            (state, ready)
        }
    };
    let user_initiated = match mapping.spec.source_kind() {
        Some(kind) if kind.is_stream() => USER_INITIATED_STREAM,
        _ => USER_INITIATED_QUEUE,
    };
    status.state_transition_reason = Some(user_initiated.into());
    status.state = Some(state);
    let (cond_status, cond_reason, message) = ready;
    set_condition(
        &mut status.conditions,
        READY,
        cond_status,
        cond_reason,
        &message,
        generation,
        now,
    );
    NextStatus {
        owned: status,
        processing_result,
    }
}

fn duplicate_message(of: &str) -> String {
    format!(
        "{of} already delivers this source's records to this target; this mapping runs no pollers while that one is enabled (delete this one, or give it another source or target)"
    )
}

/// State machine of SPEC §9, driven by the workload the reconciler sees.
fn next_state(
    previous: Option<State>,
    enabled: bool,
    spec_changed: bool,
    workload: Workload,
) -> State {
    if !enabled {
        return if workload.current == 0 {
            State::Disabled
        } else {
            State::Disabling
        };
    }
    if workload.settled() {
        return State::Enabled;
    }
    match previous {
        None | Some(State::Creating) => State::Creating,
        Some(State::Disabled | State::Disabling | State::Enabling) => State::Enabling,
        Some(State::Updating) => State::Updating,
        Some(State::Enabled) if spec_changed => State::Updating,
        // A running mapping whose pods are not ready stays Enabled; Ready says why.
        Some(State::Enabled) => State::Enabled,
        Some(State::Deleting) => State::Deleting,
    }
}

/// The `Ready` condition of a mapping read untyped (the watch parses objects one by one).
pub fn untyped_ready(object: &kube::api::DynamicObject) -> Option<&serde_json::Value> {
    object
        .data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == READY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EventSourceMappingStatus;

    fn mapping(
        enabled: bool,
        generation: i64,
        status: Option<EventSourceMappingStatus>,
    ) -> EventSourceMapping {
        let mut mapping: EventSourceMapping = serde_yaml::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/build/sqs-standard.yaml"
            ))
            .unwrap(),
        )
        .unwrap();
        mapping.spec.enabled = enabled;
        mapping.metadata.generation = Some(generation);
        mapping.status = status;
        mapping
    }

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    fn workload(desired: i32, current: i32, ready: i32, rolled_out: bool) -> Workload {
        Workload {
            desired,
            current,
            ready,
            rolled_out,
        }
    }

    /// The status after one reconciliation, as the API server would hold it.
    fn step(m: &EventSourceMapping, w: Workload) -> EventSourceMappingStatus {
        applied(m, next_status(m, Observation::Running(w), now()))
    }

    fn applied(m: &EventSourceMapping, next: NextStatus) -> EventSourceMappingStatus {
        let current = m.status.clone().unwrap_or_default();
        EventSourceMappingStatus {
            last_processing_result: next.processing_result.or(current.last_processing_result),
            ..next.owned
        }
    }

    #[test]
    fn new_mapping_is_creating_until_its_pollers_are_ready() {
        let status = step(&mapping(true, 1, None), workload(1, 1, 0, false));
        assert_eq!(status.state, Some(State::Creating));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.last_processing_result.as_deref(),
            Some("No records processed")
        );
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Progressing")
        );

        let status = step(&mapping(true, 1, Some(status)), workload(1, 1, 1, true));
        assert_eq!(status.state, Some(State::Enabled));
        assert_eq!(status.conditions[0].status, "True");
    }

    #[test]
    fn spec_change_of_an_enabled_mapping_is_updating_until_rolled_out() {
        let enabled = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let updating = step(&mapping(true, 2, Some(enabled)), workload(1, 2, 1, false));
        assert_eq!(updating.state, Some(State::Updating));
        let still = step(&mapping(true, 2, Some(updating)), workload(1, 2, 1, false));
        assert_eq!(still.state, Some(State::Updating));
        let done = step(&mapping(true, 2, Some(still)), workload(1, 1, 1, true));
        assert_eq!(done.state, Some(State::Enabled));
    }

    #[test]
    fn disabling_waits_for_pods_to_go_and_enabling_for_them_to_come() {
        let enabled = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let disabling = step(&mapping(false, 2, Some(enabled)), workload(0, 1, 1, false));
        assert_eq!(disabling.state, Some(State::Disabling));
        let disabled = step(&mapping(false, 2, Some(disabling)), workload(0, 0, 0, true));
        assert_eq!(disabled.state, Some(State::Disabled));
        assert_eq!(disabled.conditions[0].reason, "Disabled");
        let enabling = step(&mapping(true, 3, Some(disabled)), workload(1, 1, 0, false));
        assert_eq!(enabling.state, Some(State::Enabling));
        assert_eq!(
            enabling.state_transition_reason.as_deref(),
            Some("USER_INITIATED"),
            "as Lambda writes it for SQS"
        );
        assert!(
            enabling.conditions[0]
                .message
                .starts_with("starting pollers"),
            "{:?}",
            enabling.conditions[0]
        );
    }

    #[test]
    fn a_duplicate_is_refused_with_no_pollers_and_runs_once_the_other_is_gone() {
        let running = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let next = next_status(
            &mapping(true, 1, Some(running)),
            Observation::Duplicate {
                of: "shop/orders".into(),
                workload: workload(0, 0, 0, true),
            },
            now(),
        );
        let refused = applied(&mapping(true, 1, None), next.clone());
        assert_eq!(refused.state, Some(State::Disabled));
        assert_eq!(refused.conditions[0].reason, "DuplicateMapping");
        assert!(
            refused.conditions[0]
                .message
                .starts_with("shop/orders already delivers")
        );
        assert!(
            next.processing_result
                .unwrap()
                .starts_with(DUPLICATE_PROBLEM)
        );
        let again = next_status(
            &mapping(true, 1, Some(refused)),
            Observation::Running(workload(1, 1, 1, true)),
            now(),
        );
        assert_eq!(
            again.processing_result.as_deref(),
            Some(NO_RECORDS),
            "the problem is cleared"
        );
        assert_eq!(again.owned.state, Some(State::Enabled));
    }

    #[test]
    fn unchanged_observation_gives_an_identical_status() {
        let first = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let later = next_status(
            &mapping(true, 1, Some(first.clone())),
            Observation::Running(workload(1, 1, 1, true)),
            "2026-11-23T11:00:00Z".parse().unwrap(),
        );
        assert_eq!(
            owned_part(&first),
            later.owned,
            "no new transition time, no write"
        );
        assert_eq!(later.processing_result, None);
    }

    #[test]
    fn invalid_spec_keeps_the_state_and_says_why() {
        let enabled = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let invalid = crate::controller::validate::InvalidSpec {
            field: "spec.filterCriteria".into(),
            message: "bad pattern".into(),
        };
        let before = mapping(true, 2, Some(enabled));
        let status = applied(
            &before,
            next_status(&before, Observation::Invalid(&invalid), now()),
        );
        assert_eq!(status.state, Some(State::Enabled));
        assert_eq!(status.conditions[0].reason, "InvalidSpec");
        assert_eq!(
            status.conditions[0].message,
            "spec.filterCriteria: bad pattern"
        );
        assert_eq!(
            status.last_processing_result.as_deref(),
            Some("PROBLEM: invalid spec: spec.filterCriteria: bad pattern")
        );
        let fixed = step(&mapping(true, 3, Some(status)), workload(1, 1, 1, true));
        assert_eq!(
            fixed.last_processing_result.as_deref(),
            Some("No records processed")
        );
    }

    #[test]
    fn pollers_own_the_processing_result_and_their_conditions() {
        let mut status = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        status.last_processing_result = Some("OK".into());
        set_condition(
            &mut status.conditions,
            "QueueVisibilityTimeout",
            "False",
            "TooShort",
            "30 s < 180 s",
            Some(1),
            now(),
        );
        let next = next_status(
            &mapping(true, 1, Some(status)),
            Observation::Running(workload(1, 1, 1, true)),
            now(),
        );
        assert_eq!(next.processing_result, None, "the poller's OK stays");
        assert_eq!(next.owned.last_processing_result, None);
        assert_eq!(
            next.owned.conditions.len(),
            1,
            "only Ready is the controller's"
        );
        assert_eq!(next.owned.conditions[0].type_, READY);
    }

    #[test]
    fn deleting_is_reported() {
        let enabled = step(&mapping(true, 1, None), workload(1, 1, 1, true));
        let status = next_status(
            &mapping(true, 1, Some(enabled)),
            Observation::Deleting,
            now(),
        );
        assert_eq!(status.owned.state, Some(State::Deleting));
    }
}
