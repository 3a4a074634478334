//! What queue pollers tell the controller for scaling (SPEC §8): each replica keeps a presence
//! Lease (`esm.dev/lease=poller`, named by [`presence_lease_name`]) whose annotations say how
//! many FIFO message groups and busy receive loops it saw in the last minute. The controller
//! lists these Leases and adds up the live ones. Leases rather than the mapping's status: the
//! controller does not watch Leases, so reports every 10 s cause no reconciliations, and a
//! replica that dies stops renewing its Lease and drops out of the sum.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::checkpoint::{LEASE_KIND_LABEL, presence_lease_name};
use super::queue::{Activity, ActivitySnapshot};
use crate::api::EventSourceMapping;
use crate::meta::{MAPPING_LABEL, labels};

/// Annotation with the FIFO message groups a replica saw messages of recently.
pub const ACTIVE_GROUPS_ANNOTATION: &str = "esm.dev/active-message-groups";
/// Annotation with the receive loops of a replica that sent a batch recently.
pub const BUSY_BATCHES_ANNOTATION: &str = "esm.dev/busy-batches";
/// Label value of presence Leases.
const PRESENCE_KIND: &str = "poller";
/// How often a replica reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// The period a report covers: groups and loops seen within it are active.
pub const ACTIVITY_PERIOD: Duration = Duration::from_secs(60);
/// A report not renewed for this long is from a replica that is gone.
const REPORT_LIFETIME: Duration = Duration::from_secs(30);

/// Reports `activity` for `mapping` until `stop` turns true: looks every [`REPORT_INTERVAL`],
/// writes when the report changed, and renews one that says something before it lapses. An
/// idle replica writes nothing at all: its lapsed (or never written) report counts as zero,
/// which is what it would say. A failed write is logged and tried again next time.
pub async fn report_activity(
    mapping: EventSourceMapping,
    api: Api<Lease>,
    holder: String,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<Written> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let snapshot = activity.snapshot(ACTIVITY_PERIOD);
        let now = tokio::time::Instant::now();
        if !needs_write(written, snapshot, now) {
            continue;
        }
        match write(&api, &mapping, &holder, snapshot, Timestamp::now()).await {
            Ok(()) => written = Some(Written { snapshot, at: now }),
            Err(err) => {
                tracing::warn!(mapping = %mapping.name_any(), error = %err, "cannot report poller activity")
            }
        }
    }
}

/// The last report written, and when.
#[derive(Clone, Copy)]
struct Written {
    snapshot: ActivitySnapshot,
    at: tokio::time::Instant,
}

/// Renewed this long after its last write, so a report that says something never lapses
/// (one interval of margin for the write itself).
const RENEW_AFTER: Duration = REPORT_LIFETIME.saturating_sub(REPORT_INTERVAL);

fn needs_write(
    written: Option<Written>,
    snapshot: ActivitySnapshot,
    now: tokio::time::Instant,
) -> bool {
    let idle = snapshot == ActivitySnapshot::default();
    match written {
        None => !idle,
        Some(written) if written.snapshot != snapshot => true,
        Some(written) => !idle && now.duration_since(written.at) >= RENEW_AFTER,
    }
}

/// Creates or renews this replica's report.
async fn write(
    api: &Api<Lease>,
    mapping: &EventSourceMapping,
    holder: &str,
    snapshot: ActivitySnapshot,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let name = presence_lease_name(&mapping.name_any(), holder);
    let annotations = BTreeMap::from([
        (
            ACTIVE_GROUPS_ANNOTATION.to_string(),
            snapshot.active_groups.to_string(),
        ),
        (
            BUSY_BATCHES_ANNOTATION.to_string(),
            snapshot.busy_loops.to_string(),
        ),
    ]);
    let spec = LeaseSpec {
        holder_identity: Some(holder.into()),
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(REPORT_LIFETIME.as_secs() as i32),
        ..LeaseSpec::default()
    };
    let patch = json!({"metadata": {"annotations": annotations}, "spec": spec});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let mut labels = labels(&mapping.name_any());
            labels.insert(LEASE_KIND_LABEL.into(), PRESENCE_KIND.into());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: mapping.owner_ref(&()).map(|owner| vec![owner]),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            match api.create(&PostParams::default(), &lease).await {
                // 409: a racing write of this replica created it.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                other => other.map(drop),
            }
        }
        Err(err) => Err(err),
    }
}

/// The reports of every live replica of `mapping`, added up. Reports of replicas that are
/// gone are deleted (a replaced pod never renews its report again).
pub async fn read_activity(
    api: &Api<Lease>,
    mapping: &EventSourceMapping,
    now: Timestamp,
) -> Result<ActivitySnapshot, kube::Error> {
    let selector = format!(
        "{MAPPING_LABEL}={},{LEASE_KIND_LABEL}={PRESENCE_KIND}",
        mapping.name_any()
    );
    let uid = mapping.uid().unwrap_or_default();
    let leases = api.list(&ListParams::default().labels(&selector)).await?;
    for gone in leases
        .items
        .iter()
        .filter(|lease| is_owned(lease, &uid) && !is_live(lease, now))
    {
        let params = DeleteParams {
            // Unless it was renewed since it was listed.
            preconditions: Some(Preconditions {
                resource_version: gone.resource_version(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&gone.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(sum_reports(&leases.items, &uid, now))
}

fn is_owned(lease: &Lease, uid: &str) -> bool {
    lease.owner_references().iter().any(|o| o.uid == uid)
}

fn is_live(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let duration = std::time::Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
    );
    super::checkpoint::is_live(spec.renew_time.as_ref().map(|t| t.0), duration, now)
}

/// Adds up the live reports of the mapping with `uid`. A group seen by two replicas within
/// the period counts twice: the sum is an upper bound.
pub fn sum_reports(leases: &[Lease], uid: &str, now: Timestamp) -> ActivitySnapshot {
    let mut total = ActivitySnapshot::default();
    for lease in leases
        .iter()
        .filter(|lease| is_owned(lease, uid) && is_live(lease, now))
    {
        let count = |key: &str| -> usize {
            lease
                .annotations()
                .get(key)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        total.active_groups += count(ACTIVE_GROUPS_ANNOTATION);
        total.busy_loops += count(BUSY_BATCHES_ANNOTATION);
    }
    total
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn report(uid: &str, renewed: &str, groups: &str, busy: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (ACTIVE_GROUPS_ANNOTATION.to_string(), groups.to_string()),
                    (BUSY_BATCHES_ANNOTATION.to_string(), busy.to_string()),
                ])),
                owner_references: Some(vec![OwnerReference {
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(30),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn reports_are_written_on_change_and_renewed_only_while_they_say_something() {
        let start = tokio::time::Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let idle = ActivitySnapshot::default();
        let busy = ActivitySnapshot {
            active_groups: 0,
            busy_loops: 3,
        };
        let written = |snapshot, seconds| {
            Some(Written {
                snapshot,
                at: at(seconds),
            })
        };
        assert!(
            !needs_write(None, idle, at(0)),
            "an idle replica never writes"
        );
        assert!(needs_write(None, busy, at(0)));
        assert!(!needs_write(written(busy, 0), busy, at(10)));
        assert!(
            needs_write(written(busy, 0), busy, at(20)),
            "renewed before it lapses"
        );
        assert!(
            needs_write(written(busy, 0), idle, at(10)),
            "a change is written"
        );
        assert!(
            !needs_write(written(idle, 0), idle, at(3600)),
            "idle: nothing to renew"
        );
        assert!(RENEW_AFTER + REPORT_INTERVAL <= REPORT_LIFETIME);
    }

    #[test]
    fn live_reports_of_this_mapping_add_up() {
        let now: Timestamp = "2026-11-23T10:00:40Z".parse().unwrap();
        let leases = [
            report("m1", "2026-11-23T10:00:30Z", "12", "4"),
            report("m1", "2026-11-23T10:00:35Z", "3", "10"),
            // Gone: not renewed for 30 s.
            report("m1", "2026-11-23T10:00:05Z", "100", "10"),
            // An earlier mapping of the same name.
            report("m0", "2026-11-23T10:00:35Z", "100", "10"),
            // Unreadable counts count as nothing.
            report("m1", "2026-11-23T10:00:35Z", "many", ""),
        ];
        assert_eq!(
            sum_reports(&leases, "m1", now),
            ActivitySnapshot {
                active_groups: 15,
                busy_loops: 14,
            }
        );
    }
}
