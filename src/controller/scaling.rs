//! Pure: how many poller replicas a mapping needs.
use crate::api::EventSourceMappingSpec;

/// Replicas of the poller Deployment: one while enabled, none while disabled. Sizing from the
/// source's signals (SPEC §8) grows here.
pub fn desired_replicas(spec: &EventSourceMappingSpec) -> i32 {
    i32::from(spec.enabled)
}
