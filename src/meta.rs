//! What the controller and the pollers both name, label, hash and report: the labels of a
//! mapping's objects, the hash that restarts pollers, and status conditions. Both import it;
//! it imports neither.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::api::EventSourceMapping;

/// Label every child carries, naming its mapping.
pub const MAPPING_LABEL: &str = "esm.dev/mapping";
/// `app.kubernetes.io/managed-by` of every child object; the controller watches children by it.
pub const MANAGED_BY: &str = "esm-operator";

/// Labels of every object made for mapping `mapping` (poller workloads, leases, window state).
pub fn labels(mapping: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "esm-poller".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (MAPPING_LABEL.to_string(), mapping.to_string()),
    ])
}

/// Hash of everything the pollers read from the spec; `enabled` and scaling only change the
/// replica count, so they are left out and do not restart pods.
pub fn spec_hash(mapping: &EventSourceMapping) -> String {
    let mut spec = mapping.spec.clone();
    spec.enabled = true;
    spec.scaling_config = None;
    let json = serde_json::to_vec(&spec).expect("a spec always serializes");
    sha256_hex(&json)[..16].to_owned()
}

/// SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The condition saying whether a mapping runs as it should.
pub const READY: &str = "Ready";

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
