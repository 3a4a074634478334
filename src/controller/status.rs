//! Pure: what a mapping's status should say, from what the reconciler observed.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::validate::InvalidSpec;
use crate::api::{EventSourceMapping, EventSourceMappingStatus, State};

pub const READY: &str = "Ready";
const INVALID_SPEC_PROBLEM: &str = "PROBLEM: invalid spec: ";

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
    fn settled(&self) -> bool {
        self.rolled_out && self.current == self.desired && self.ready >= self.desired
    }
}

/// Everything that decides the status.
pub enum Observation<'a> {
    Invalid(&'a InvalidSpec),
    Deleting,
    Running(Workload),
}

/// The status after this reconciliation; equal to the current one when nothing changed, so an
/// unchanged mapping causes no write.
pub fn next_status(
    mapping: &EventSourceMapping,
    observation: Observation<'_>,
    now: Timestamp,
) -> EventSourceMappingStatus {
    let previous = mapping.status.clone().unwrap_or_default();
    let generation = mapping.metadata.generation;
    let spec_changed =
        previous.observed_generation.is_some() && previous.observed_generation != generation;
    let mut status = EventSourceMappingStatus {
        source_kind: mapping.spec.source_kind(),
        observed_generation: generation,
        ..previous.clone()
    };
    let invalid = matches!(observation, Observation::Invalid(_));
    let (state, reason, ready) = match observation {
        Observation::Invalid(invalid) => {
            status.last_processing_result = Some(format!("{INVALID_SPEC_PROBLEM}{invalid}"));
            let state = previous.state.unwrap_or(State::Creating);
            (
                state,
                format!("invalid spec: {invalid}"),
                ("False", "InvalidSpec", invalid.to_string()),
            )
        }
        Observation::Deleting => (
            State::Deleting,
            "mapping deleted; removing its pollers".into(),
            ("False", "Deleting", "the mapping is being deleted".into()),
        ),
        Observation::Running(workload) => {
            status.replicas = Some(workload.desired);
            status.ready_replicas = Some(workload.ready);
            let state = next_state(previous.state, mapping.spec.enabled, spec_changed, workload);
            let reason = match state {
                State::Enabled => "pollers running".into(),
                State::Disabled => "disabled by the user (enabled: false)".into(),
                State::Disabling => "stopping pollers".into(),
                State::Updating => "rolling out the changed spec".into(),
                State::Creating | State::Enabling => "starting pollers".into(),
                State::Deleting => unreachable!("deleting is only from Observation::Deleting"),
            };
            let ready = match state {
                State::Enabled => (
                    "True",
                    "PollersRunning",
                    format!(
                        "{} of {} poller replicas ready",
                        workload.ready, workload.desired
                    ),
                ),
                State::Disabled => (
                    "True",
                    "Disabled",
                    "the mapping is disabled and has no pollers".into(),
                ),
                _ => (
                    "False",
                    "Progressing",
                    format!(
                        "{} of {} poller replicas ready",
                        workload.ready, workload.desired
                    ),
                ),
            };
            (state, reason, ready)
        }
    };
    if previous.state != Some(state) || status.state_transition_reason.is_none() {
        status.state_transition_reason = Some(reason);
    }
    status.state = Some(state);
    let stale_problem = status
        .last_processing_result
        .as_deref()
        .is_none_or(|r| r.starts_with(INVALID_SPEC_PROBLEM));
    if !invalid && stale_problem {
        status.last_processing_result = Some("No records processed".into());
    }
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
    status
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

/// Sets a condition, keeping its transition time while its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}
