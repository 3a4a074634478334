//! Shard leases in memory, with the Kubernetes store's rules (versions, holders, expiry), for
//! unit tests of balancing and of the stream engine, and for the engine benchmark.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::{
    Checkpoint, LeaseError, LeaseSnapshot, Presence, ShardLease, ShardLeaseStore, StaleLease,
};
use crate::poller::window::StoredWindow;
use crate::sources::sharded::Shard;

/// The leases of one mapping, shared by the stores of several replicas.
#[derive(Default)]
pub struct MemoryLeases {
    state: Mutex<State>,
    /// Replicas whose calls never return while they are here, as if the API server accepted
    /// their connections and never answered.
    cut_off: watch::Sender<BTreeSet<String>>,
}

#[derive(Default)]
struct State {
    last_version: u64,
    shards: BTreeMap<String, ShardLease>,
    presences: BTreeMap<String, Presence>,
    /// Checkpoints written, over all shards.
    checkpoint_writes: usize,
    /// Checkpoint writes still to fail, as with an API server that cannot be reached.
    failing_checkpoints: usize,
    windows: BTreeMap<String, StoredWindow>,
}

impl State {
    fn next_version(&mut self) -> String {
        self.last_version += 1;
        self.last_version.to_string()
    }
}

/// One replica's view of [`MemoryLeases`].
pub struct MemoryLeaseStore {
    leases: Arc<MemoryLeases>,
    holder: String,
    duration: Duration,
}

impl MemoryLeases {
    pub fn store(self: &Arc<Self>, holder: &str, duration: Duration) -> MemoryLeaseStore {
        MemoryLeaseStore {
            leases: Arc::clone(self),
            holder: holder.into(),
            duration,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts replica `holder` off (its calls hang until it is let back) or lets it back.
    pub fn set_cut_off(&self, holder: &str, cut_off: bool) {
        self.cut_off.send_modify(|replicas| {
            if cut_off {
                replicas.insert(holder.into());
            } else {
                replicas.remove(holder);
            }
        });
    }

    /// Checkpoints written so far, over all shards.
    pub fn checkpoint_writes(&self) -> usize {
        self.state().checkpoint_writes
    }

    /// The next `count` checkpoint writes fail, as while the API server cannot be reached.
    pub fn fail_checkpoints(&self, count: usize) {
        self.state().failing_checkpoints = count;
    }

    /// The lease of `shard_id` as stored now.
    pub fn lease(&self, shard_id: &str) -> Option<ShardLease> {
        self.state().shards.get(shard_id).cloned()
    }

    /// The window state of `shard_id` as stored now.
    pub fn window(&self, shard_id: &str) -> Option<StoredWindow> {
        self.state().windows.get(shard_id).cloned()
    }
}

impl MemoryLeaseStore {
    /// Returns once this replica is not cut off.
    async fn reachable(&self) {
        let mut cut_off = self.leases.cut_off.subscribe();
        // The sender lives as long as the leases this store holds on to.
        let _ = cut_off
            .wait_for(|replicas| !replicas.contains(&self.holder))
            .await;
    }

    /// Changes a lease this replica holds.
    fn write_held(
        &self,
        shard_id: &str,
        change: impl FnOnce(&mut ShardLease),
    ) -> Result<ShardLease, LeaseError> {
        let mut state = self.leases.state();
        let version = state.next_version();
        match state.shards.get_mut(shard_id) {
            Some(lease) if lease.is_held_by(&self.holder) => {
                change(lease);
                lease.version = version;
                Ok(lease.clone())
            }
            _ => Err(LeaseError::Lost {
                shard_id: shard_id.into(),
                holder: self.holder.clone(),
            }),
        }
    }
}

impl ShardLeaseStore for MemoryLeaseStore {
    fn holder(&self) -> &str {
        &self.holder
    }

    async fn list(&self) -> Result<LeaseSnapshot, LeaseError> {
        self.reachable().await;
        let state = self.leases.state();
        Ok(LeaseSnapshot {
            shards: state.shards.values().cloned().collect(),
            presences: state.presences.values().cloned().collect(),
        })
    }

    async fn heartbeat(&self, now: Timestamp) -> Result<(), LeaseError> {
        self.reachable().await;
        let mut state = self.leases.state();
        let version = state.next_version();
        state.presences.insert(
            self.holder.clone(),
            Presence {
                holder: self.holder.clone(),
                renew_time: Some(now),
                duration: self.duration,
                version,
            },
        );
        Ok(())
    }

    async fn try_acquire(
        &self,
        shard: &Shard,
        observed: Option<&ShardLease>,
        now: Timestamp,
    ) -> Result<ShardLease, LeaseError> {
        self.reachable().await;
        let mut state = self.leases.state();
        let version = state.next_version();
        let current = state.shards.get(&shard.shard_id);
        let conflict = |reason: &str| LeaseError::Conflict {
            shard_id: shard.shard_id.clone(),
            reason: reason.into(),
        };
        let lease = match (observed, current) {
            (None, None) => ShardLease {
                shard_id: shard.shard_id.clone(),
                parent_shard_ids: shard.parent_shard_ids.clone(),
                holder: Some(self.holder.clone()),
                renew_time: Some(now),
                duration: self.duration,
                checkpoint: None,
                transitions: 0,
                version,
            },
            (Some(observed), Some(current)) if observed.version == current.version => {
                if !observed.is_takeable_by(&self.holder, now) {
                    return Err(conflict("held by another replica"));
                }
                ShardLease {
                    holder: Some(self.holder.clone()),
                    renew_time: Some(now),
                    duration: self.duration,
                    transitions: current.transitions + 1,
                    version,
                    ..current.clone()
                }
            }
            _ => return Err(conflict("changed since observed")),
        };
        state.shards.insert(shard.shard_id.clone(), lease.clone());
        Ok(lease)
    }

    async fn renew(&self, shard_id: &str, now: Timestamp) -> Result<ShardLease, LeaseError> {
        self.reachable().await;
        self.write_held(shard_id, |lease| lease.renew_time = Some(now))
    }

    async fn checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
        now: Timestamp,
    ) -> Result<ShardLease, LeaseError> {
        self.reachable().await;
        {
            let mut state = self.leases.state();
            if state.failing_checkpoints > 0 {
                state.failing_checkpoints -= 1;
                let unavailable =
                    kube::core::Status::failure("the server is unavailable", "ServiceUnavailable")
                        .with_code(503);
                return Err(LeaseError::Kube(kube::Error::Api(unavailable.boxed())));
            }
        }
        let lease = self.write_held(shard_id, |lease| {
            lease.checkpoint = Some(checkpoint.clone());
            lease.renew_time = Some(now);
        })?;
        self.leases.state().checkpoint_writes += 1;
        Ok(lease)
    }

    async fn release(&self, shard_id: &str) -> Result<(), LeaseError> {
        self.reachable().await;
        self.write_held(shard_id, |lease| lease.holder = None)
            .map(|_| ())
    }

    async fn remove(&self, stale: &StaleLease) -> Result<(), LeaseError> {
        self.reachable().await;
        let mut state = self.leases.state();
        match stale {
            StaleLease::Shard(lease) => {
                if state.shards.get(&lease.shard_id).map(|l| &l.version) == Some(&lease.version) {
                    state.shards.remove(&lease.shard_id);
                }
            }
            StaleLease::Presence(presence) => {
                if state.presences.get(&presence.holder).map(|p| &p.version)
                    == Some(&presence.version)
                {
                    state.presences.remove(&presence.holder);
                }
            }
        }
        Ok(())
    }

    async fn load_window(&self, shard_id: &str) -> Result<Option<StoredWindow>, LeaseError> {
        self.reachable().await;
        Ok(self.leases.state().windows.get(shard_id).cloned())
    }

    async fn save_window(&self, shard_id: &str, window: &StoredWindow) -> Result<(), LeaseError> {
        self.reachable().await;
        let mut state = self.leases.state();
        if !state
            .shards
            .get(shard_id)
            .is_some_and(|lease| lease.is_held_by(&self.holder))
        {
            return Err(LeaseError::Lost {
                shard_id: shard_id.into(),
                holder: self.holder.clone(),
            });
        }
        state.windows.insert(shard_id.into(), window.clone());
        Ok(())
    }

    async fn remove_window(&self, shard_id: &str) -> Result<(), LeaseError> {
        self.reachable().await;
        self.leases.state().windows.remove(shard_id);
        Ok(())
    }
}
