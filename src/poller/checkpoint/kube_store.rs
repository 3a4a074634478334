//! Shard leases as `coordination.k8s.io/v1` Lease objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::window_store::ConfigMapWindows;
use super::{
    CHECKPOINT_ANNOTATION, Checkpoint, LEASE_KIND_LABEL, LeaseError, LeaseSnapshot,
    PARENT_SHARD_IDS_ANNOTATION, Presence, SHARD_ID_ANNOTATION, ShardLease, ShardLeaseStore,
    StaleLease, presence_lease_name, shard_lease_name,
};
use crate::api::EventSourceMapping;
use crate::meta::{MAPPING_LABEL, labels};
use crate::poller::window::StoredWindow;
use crate::sources::sharded::Shard;

/// Writes retried after a conflict with this replica's own concurrent writes.
const MAX_WRITE_ATTEMPTS: usize = 5;

/// Shard leases in the Kubernetes API.
pub struct KubeShardLeases {
    api: Api<Lease>,
    mapping: String,
    owner: OwnerReference,
    holder: String,
    duration: Duration,
    /// The leases this replica last wrote, so a renewal or checkpoint is usually one request.
    held: Mutex<HashMap<String, ShardLease>>,
    windows: ConfigMapWindows,
}

/// A write to a held lease.
enum HeldChange<'a> {
    Renew(Timestamp),
    Checkpoint(&'a Checkpoint, Timestamp),
    Release,
}

impl KubeShardLeases {
    /// The leases of `mapping` (as read from the API server) held as `holder` (e.g. the pod
    /// name) for `duration` after each renewal.
    pub fn new(
        client: Client,
        mapping: &EventSourceMapping,
        holder: impl Into<String>,
        duration: Duration,
    ) -> Result<Self, LeaseError> {
        let name = mapping.name_any();
        let (Some(namespace), Some(owner)) = (mapping.namespace(), mapping.owner_ref(&())) else {
            return Err(LeaseError::UnsavedMapping(name));
        };
        let holder = holder.into();
        Ok(KubeShardLeases {
            windows: ConfigMapWindows::new(
                Api::namespaced(client.clone(), &namespace),
                name.clone(),
                owner.clone(),
                holder.clone(),
            ),
            api: Api::namespaced(client, &namespace),
            mapping: name,
            owner,
            holder,
            duration,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn metadata(
        &self,
        name: String,
        kind: &str,
        annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        let mut labels = labels(&self.mapping);
        labels.insert(LEASE_KIND_LABEL.into(), kind.into());
        ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn new_spec(&self, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(self.duration_seconds()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    fn remember(&self, lease: &ShardLease) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lease.is_held_by(&self.holder) {
            held.insert(lease.shard_id.clone(), lease.clone());
        } else {
            held.remove(&lease.shard_id);
        }
    }

    fn forget(&self, shard_id: &str) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.remove(shard_id);
    }

    fn lost(&self, shard_id: &str) -> LeaseError {
        self.forget(shard_id);
        LeaseError::Lost {
            shard_id: shard_id.into(),
            holder: self.holder.clone(),
        }
    }

    async fn get(&self, shard_id: &str) -> Result<Option<ShardLease>, LeaseError> {
        let name = shard_lease_name(&self.mapping, shard_id);
        let lease = self.api.get_opt(&name).await?;
        Ok(lease
            .filter(|lease| self.owns(lease))
            .and_then(|lease| shard_lease(&lease)))
    }

    /// Owned by this incarnation of the mapping: a mapping deleted and created again under the
    /// same name must not inherit leases the garbage collector has not removed yet.
    fn owns(&self, lease: &Lease) -> bool {
        lease
            .owner_references()
            .iter()
            .any(|owner| owner.uid == self.owner.uid)
    }

    /// Applies `change` to a lease this replica holds, conditional on the version last seen; a
    /// conflict (e.g. a checkpoint racing a renewal) is retried on a fresh read while the lease
    /// is still ours.
    async fn write_held(
        &self,
        shard_id: &str,
        change: HeldChange<'_>,
    ) -> Result<Option<ShardLease>, LeaseError> {
        let name = shard_lease_name(&self.mapping, shard_id);
        let mut known = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(shard_id)
            .cloned();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let lease = match known.take() {
                Some(lease) => lease,
                None => self
                    .get(shard_id)
                    .await?
                    .ok_or_else(|| self.lost(shard_id))?,
            };
            if !lease.is_held_by(&self.holder) {
                return Err(self.lost(shard_id));
            }
            let patch = match change {
                HeldChange::Renew(now) => json!({
                    "metadata": {"resourceVersion": lease.version},
                    "spec": {"renewTime": MicroTime(now)},
                }),
                HeldChange::Checkpoint(checkpoint, now) => json!({
                    "metadata": {
                        "resourceVersion": lease.version,
                        "annotations": {CHECKPOINT_ANNOTATION: checkpoint.as_str()},
                    },
                    "spec": {"renewTime": MicroTime(now)},
                }),
                HeldChange::Release => json!({
                    "metadata": {"resourceVersion": lease.version},
                    "spec": {"holderIdentity": null},
                }),
            };
            match self
                .api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    let written = shard_lease(&written);
                    if let Some(lease) = &written {
                        self.remember(lease);
                    }
                    return Ok(written);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Err(self.lost(shard_id));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(LeaseError::Conflict {
            shard_id: shard_id.into(),
            reason: format!("still conflicting after {MAX_WRITE_ATTEMPTS} attempts"),
        })
    }
}

impl ShardLeaseStore for KubeShardLeases {
    fn holder(&self) -> &str {
        &self.holder
    }

    async fn list(&self) -> Result<LeaseSnapshot, LeaseError> {
        let selector = format!("{MAPPING_LABEL}={}", self.mapping);
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut snapshot = LeaseSnapshot::default();
        for lease in leases.items.iter().filter(|lease| self.owns(lease)) {
            let kind = lease.labels().get(LEASE_KIND_LABEL).map(String::as_str);
            match kind {
                Some("shard") => match shard_lease(lease) {
                    Some(shard) => snapshot.shards.push(shard),
                    None => tracing::warn!(
                        lease = lease.name_any(),
                        "shard lease without the {SHARD_ID_ANNOTATION} annotation; ignored"
                    ),
                },
                Some("poller") => snapshot.presences.extend(presence(lease)),
                _ => {}
            }
        }
        Ok(snapshot)
    }

    async fn heartbeat(&self, now: Timestamp) -> Result<(), LeaseError> {
        let name = presence_lease_name(&self.mapping, &self.holder);
        let patch = json!({"spec": {
            "holderIdentity": self.holder,
            "renewTime": MicroTime(now),
            "leaseDurationSeconds": self.duration_seconds(),
        }});
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let lease = Lease {
                    metadata: self.metadata(name, "poller", BTreeMap::new()),
                    spec: Some(self.new_spec(now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    // 409: created by a racing heartbeat of this replica: present either way.
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn try_acquire(
        &self,
        shard: &Shard,
        observed: Option<&ShardLease>,
        now: Timestamp,
    ) -> Result<ShardLease, LeaseError> {
        let name = shard_lease_name(&self.mapping, &shard.shard_id);
        let conflict = |reason: String| LeaseError::Conflict {
            shard_id: shard.shard_id.clone(),
            reason,
        };
        let written = match observed {
            None => {
                let mut annotations =
                    BTreeMap::from([(SHARD_ID_ANNOTATION.to_string(), shard.shard_id.clone())]);
                if !shard.parent_shard_ids.is_empty() {
                    annotations.insert(
                        PARENT_SHARD_IDS_ANNOTATION.into(),
                        shard.parent_shard_ids.join(","),
                    );
                }
                let lease = Lease {
                    metadata: self.metadata(name, "shard", annotations),
                    spec: Some(self.new_spec(now)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(observed) => {
                if !observed.is_takeable_by(&self.holder, now) {
                    return Err(conflict(format!(
                        "held by {}",
                        observed.holder.as_deref().unwrap_or_default()
                    )));
                }
                let patch = json!({
                    "metadata": {"resourceVersion": observed.version},
                    "spec": {
                        "holderIdentity": self.holder,
                        "acquireTime": MicroTime(now),
                        "renewTime": MicroTime(now),
                        "leaseDurationSeconds": self.duration_seconds(),
                        "leaseTransitions": observed.transitions.saturating_add(1),
                    },
                });
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        };
        match written {
            Ok(lease) => {
                let lease = shard_lease(&lease)
                    .ok_or_else(|| conflict("written lease lost its shard id".into()))?;
                self.remember(&lease);
                Ok(lease)
            }
            // 409: created or changed by another replica first; 404: deleted meanwhile.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                Err(conflict(status.message))
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn renew(&self, shard_id: &str, now: Timestamp) -> Result<ShardLease, LeaseError> {
        self.write_held(shard_id, HeldChange::Renew(now))
            .await?
            .ok_or_else(|| self.lost(shard_id))
    }

    async fn checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
        now: Timestamp,
    ) -> Result<ShardLease, LeaseError> {
        self.write_held(shard_id, HeldChange::Checkpoint(checkpoint, now))
            .await?
            .ok_or_else(|| self.lost(shard_id))
    }

    async fn release(&self, shard_id: &str) -> Result<(), LeaseError> {
        let released = self.write_held(shard_id, HeldChange::Release).await;
        self.forget(shard_id);
        released.map(|_| ())
    }

    async fn remove(&self, stale: &StaleLease) -> Result<(), LeaseError> {
        let (name, version) = match stale {
            StaleLease::Shard(lease) => (
                shard_lease_name(&self.mapping, &lease.shard_id),
                &lease.version,
            ),
            StaleLease::Presence(presence) => (
                presence_lease_name(&self.mapping, &presence.holder),
                &presence.version,
            ),
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.clone()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            // Changed or deleted by someone else since it was observed: nothing to do.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn load_window(&self, shard_id: &str) -> Result<Option<StoredWindow>, LeaseError> {
        self.windows.load(shard_id).await
    }

    async fn save_window(&self, shard_id: &str, window: &StoredWindow) -> Result<(), LeaseError> {
        // A replica that knows it lost the lease must not write; one that does not know yet
        // is stopped by the object's version (see window_store).
        let held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(shard_id);
        if !held {
            return Err(self.lost(shard_id));
        }
        self.windows.save(shard_id, window).await
    }

    async fn remove_window(&self, shard_id: &str) -> Result<(), LeaseError> {
        self.windows.remove(shard_id).await
    }
}

fn duration_of(spec: &LeaseSpec) -> Duration {
    Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64)
}

/// A shard Lease as read; `None` without the shard id annotation.
fn shard_lease(lease: &Lease) -> Option<ShardLease> {
    let annotations = lease.annotations();
    let spec = lease.spec.clone().unwrap_or_default();
    Some(ShardLease {
        shard_id: annotations.get(SHARD_ID_ANNOTATION)?.clone(),
        parent_shard_ids: annotations
            .get(PARENT_SHARD_IDS_ANNOTATION)
            .map(|parents| parents.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        checkpoint: annotations
            .get(CHECKPOINT_ANNOTATION)
            .map(|text| Checkpoint::parse(text)),
        duration: duration_of(&spec),
        holder: spec.holder_identity.filter(|holder| !holder.is_empty()),
        renew_time: spec.renew_time.map(|time| time.0),
        transitions: spec.lease_transitions.unwrap_or(0),
        version: lease.resource_version().unwrap_or_default(),
    })
}

fn presence(lease: &Lease) -> Option<Presence> {
    let spec = lease.spec.clone().unwrap_or_default();
    Some(Presence {
        duration: duration_of(&spec),
        holder: spec.holder_identity?,
        renew_time: spec.renew_time.map(|time| time.0),
        version: lease.resource_version().unwrap_or_default(),
    })
}
