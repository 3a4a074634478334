//! Shard ownership and checkpoints in `coordination.k8s.io/v1` Leases.
//!
//! One Lease per (mapping, shard), owned by the mapping so that deleting the mapping deletes
//! them. It holds the shard's holder (holderIdentity, renewTime, leaseDurationSeconds) and, in
//! annotations, the checkpoint and the parent shard ids, so ownership and progress move
//! together. Every write is conditional on the resourceVersion last read: two replicas can never
//! both take a lease, and a replica that lost one cannot checkpoint it.
//!
//! Replicas also keep a presence Lease each, so that a new replica is seen (and made room for)
//! before it holds any shard.
//!
//! Expiry compares the renewTime written by one replica with the clock of another: replica
//! clocks must agree to well within the lease duration (NTP does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use crate::meta::sha256_hex;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::window::StoredWindow;
use crate::sources::sharded::Shard;

pub use kube_store::KubeShardLeases;
pub use window_store::WINDOW_STATE_LABEL;

/// Annotation with the shard id the Lease is for (its name is only derived from it).
pub const SHARD_ID_ANNOTATION: &str = "esm.dev/shard-id";
/// Annotation with the parent shard ids, comma-separated.
pub const PARENT_SHARD_IDS_ANNOTATION: &str = "esm.dev/parent-shard-ids";
/// Annotation with the checkpoint: the last fully processed sequence number, or `SHARD_END`.
pub const CHECKPOINT_ANNOTATION: &str = "esm.dev/checkpoint";
/// Label telling shard Leases (`shard`) from presence Leases (`poller`).
pub const LEASE_KIND_LABEL: &str = "esm.dev/lease";
/// Checkpoint of a closed shard that was read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// Hex digits of the shard id hash in a Lease name.
const NAME_HASH_LENGTH: usize = 10;
/// Kubernetes object names (DNS subdomains) are at most this long.
const MAX_NAME_LENGTH: usize = 253;

/// How far a shard has been processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is processed.
    SequenceNumber(String),
    /// The shard is closed and was processed to its end.
    ShardEnd,
}

impl Checkpoint {
    fn parse(text: &str) -> Checkpoint {
        if text == SHARD_END {
            Checkpoint::ShardEnd
        } else {
            Checkpoint::SequenceNumber(text.to_owned())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Checkpoint::SequenceNumber(sequence) => sequence,
            Checkpoint::ShardEnd => SHARD_END,
        }
    }
}

/// A shard's Lease as read.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardLease {
    pub shard_id: String,
    pub parent_shard_ids: Vec<String>,
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration: Duration,
    pub checkpoint: Option<Checkpoint>,
    /// Times the lease changed hands.
    pub transitions: i32,
    /// resourceVersion: the condition of the next write.
    version: String,
}

/// A replica's presence Lease as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    pub holder: String,
    pub renew_time: Option<Timestamp>,
    pub duration: Duration,
    version: String,
}

/// Every Lease of a mapping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaseSnapshot {
    pub shards: Vec<ShardLease>,
    pub presences: Vec<Presence>,
}

/// True while `renew_time + duration` is in the future.
pub(crate) fn is_live(renew_time: Option<Timestamp>, duration: Duration, now: Timestamp) -> bool {
    let duration = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
    renew_time.is_some_and(|renewed| renewed.checked_add(duration).is_ok_and(|end| end > now))
}

impl ShardLease {
    pub fn is_held_by(&self, holder: &str) -> bool {
        self.holder.as_deref() == Some(holder)
    }

    /// Held and renewed within its duration.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.holder.is_some() && is_live(self.renew_time, self.duration, now)
    }

    pub fn is_finished(&self) -> bool {
        self.checkpoint == Some(Checkpoint::ShardEnd)
    }

    /// Released, expired, or already ours.
    pub fn is_takeable_by(&self, holder: &str, now: Timestamp) -> bool {
        self.is_held_by(holder) || !self.is_live(now)
    }
}

impl Presence {
    pub fn is_live(&self, now: Timestamp) -> bool {
        is_live(self.renew_time, self.duration, now)
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica changed or took the lease first: move on.
    #[error("lease of shard {shard_id} was changed by another replica: {reason}")]
    Conflict { shard_id: String, reason: String },
    /// This replica does not hold the lease (any more): it must stop processing the shard.
    #[error("lease of shard {shard_id} is not held by {holder}")]
    Lost { shard_id: String, holder: String },
    #[error("Kubernetes API error on shard leases: {0}")]
    Kube(#[from] kube::Error),
    /// The stored window state cannot be read; it is left as it is.
    #[error(
        "window state of shard {shard_id} ({object}) cannot be read: {reason}; fix or delete it to start the window afresh"
    )]
    BadWindowState {
        shard_id: String,
        object: String,
        reason: String,
    },
    /// The mapping cannot own leases (no uid or namespace: not read from the API server).
    #[error("mapping {0} has no uid or namespace: read it from the API server first")]
    UnsavedMapping(String),
}

/// Where shard leases are kept. One instance acts for one replica (`holder`) of one mapping.
pub trait ShardLeaseStore: Send + Sync {
    /// This replica's identity, written as holderIdentity.
    fn holder(&self) -> &str;

    /// Every shard lease and presence of the mapping.
    fn list(&self) -> impl Future<Output = Result<LeaseSnapshot, LeaseError>> + Send;

    /// Creates or renews this replica's presence.
    fn heartbeat(&self, now: Timestamp) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Takes `shard` for this replica: creates its lease when `observed` is `None`, otherwise
    /// takes over `observed` if it is released or expired at `now`. Fails with
    /// [`LeaseError::Conflict`] when the lease is live elsewhere or changed since observed.
    fn try_acquire(
        &self,
        shard: &Shard,
        observed: Option<&ShardLease>,
        now: Timestamp,
    ) -> impl Future<Output = Result<ShardLease, LeaseError>> + Send;

    /// Extends this replica's hold; [`LeaseError::Lost`] when another replica took the lease.
    fn renew(
        &self,
        shard_id: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<ShardLease, LeaseError>> + Send;

    /// Records progress (and renews); only the holder can, else [`LeaseError::Lost`].
    fn checkpoint(
        &self,
        shard_id: &str,
        checkpoint: &Checkpoint,
        now: Timestamp,
    ) -> impl Future<Output = Result<ShardLease, LeaseError>> + Send;

    /// Hands the lease back (keeping its checkpoint) so another replica can take it at once.
    fn release(&self, shard_id: &str) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Deletes a lease as observed: a finished shard the stream no longer has, or an expired
    /// presence. Does nothing when it changed or is gone.
    fn remove(&self, stale: &StaleLease) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// The tumbling-window state kept beside the shard's checkpoint, if any. What it holds is
    /// valid up to its own checkpoint, which is the one to resume from when it exists.
    fn load_window(
        &self,
        shard_id: &str,
    ) -> impl Future<Output = Result<Option<StoredWindow>, LeaseError>> + Send;

    /// Replaces the window state of a shard this replica holds; [`LeaseError::Lost`] when
    /// another replica wrote it since this one loaded or saved it.
    fn save_window(
        &self,
        shard_id: &str,
        window: &StoredWindow,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Deletes the window state of a shard read to its end.
    fn remove_window(&self, shard_id: &str) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// A lease nobody needs any more.
#[derive(Clone, Debug, PartialEq)]
pub enum StaleLease {
    Shard(ShardLease),
    Presence(Presence),
}

/// What one replica should do to move towards an even share of the shards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BalancePlan {
    /// Shards to take, with their lease when one exists (released or expired).
    pub acquire: Vec<(Shard, Option<ShardLease>)>,
    /// Shards this replica holds and should hand over once their in-flight work is
    /// checkpointed: above its share, finished, or gone from the stream.
    pub give_up: Vec<String>,
    /// Leases to delete.
    pub remove: Vec<StaleLease>,
}

/// Shards that may be read now: not finished, and every parent finished or gone from the
/// stream (trimmed).
pub fn eligible_shards<'a>(shards: &'a [Shard], leases: &[ShardLease]) -> Vec<&'a Shard> {
    let finished: HashSet<&str> = leases
        .iter()
        .filter(|lease| lease.is_finished())
        .map(|lease| lease.shard_id.as_str())
        .collect();
    let in_stream: HashSet<&str> = shards.iter().map(|shard| shard.shard_id.as_str()).collect();
    shards
        .iter()
        .filter(|shard| !finished.contains(shard.shard_id.as_str()))
        .filter(|shard| {
            shard.parent_shard_ids.iter().all(|parent| {
                finished.contains(parent.as_str()) || !in_stream.contains(parent.as_str())
            })
        })
        .collect()
}

/// Plans `holder`'s next step. Each live replica ends up with the floor or the ceiling of
/// eligible shards / live replicas: a replica takes free shards up to the ceiling (only up to
/// the floor while another is below it), and gives up shards above that. Live shard leases
/// are never taken, only handed over, so a shard is never read by two replicas at once.
pub fn plan(
    holder: &str,
    shards: &[Shard],
    snapshot: &LeaseSnapshot,
    now: Timestamp,
) -> BalancePlan {
    let leases: HashMap<&str, &ShardLease> = snapshot
        .shards
        .iter()
        .map(|lease| (lease.shard_id.as_str(), lease))
        .collect();
    let eligible = eligible_shards(shards, &snapshot.shards);
    let eligible_ids: HashSet<&str> = eligible
        .iter()
        .map(|shard| shard.shard_id.as_str())
        .collect();

    // Live replicas and how many eligible shards each holds; this replica always counts.
    let mut load: BTreeMap<&str, usize> = BTreeMap::from([(holder, 0)]);
    for presence in snapshot.presences.iter().filter(|p| p.is_live(now)) {
        load.entry(presence.holder.as_str()).or_default();
    }
    for shard in &eligible {
        if let Some(lease) = leases.get(shard.shard_id.as_str()) {
            match &lease.holder {
                Some(owner) if owner == holder || lease.is_live(now) => {
                    *load.entry(owner.as_str()).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    let replicas = load.len();
    let floor = eligible.len() / replicas;
    let ceiling = eligible.len().div_ceil(replicas);
    let others_below_floor = load
        .iter()
        .any(|(owner, count)| *owner != holder && *count < floor);
    let share = if others_below_floor { floor } else { ceiling };

    let mut plan = BalancePlan::default();
    let mut mine: Vec<&str> = Vec::new();
    for lease in snapshot
        .shards
        .iter()
        .filter(|lease| lease.is_held_by(holder))
    {
        if eligible_ids.contains(lease.shard_id.as_str()) {
            mine.push(&lease.shard_id);
        } else {
            plan.give_up.push(lease.shard_id.clone());
        }
    }
    mine.sort_unstable();
    if mine.len() > share {
        plan.give_up
            .extend(mine[share..].iter().map(|shard_id| shard_id.to_string()));
    } else {
        let mut free: Vec<&Shard> = eligible
            .iter()
            .copied()
            .filter(|shard| {
                leases
                    .get(shard.shard_id.as_str())
                    .is_none_or(|lease| !lease.is_held_by(holder) && !lease.is_live(now))
            })
            .collect();
        // Replicas start at different places in the free list so they rarely race for one.
        if !free.is_empty() {
            let start = u64::from_str_radix(&sha256_hex(holder.as_bytes())[..8], 16).unwrap_or(0);
            let start = (start % free.len() as u64) as usize;
            free.rotate_left(start);
        }
        plan.acquire = free
            .into_iter()
            .take(share - mine.len())
            .map(|shard| {
                let observed = leases
                    .get(shard.shard_id.as_str())
                    .map(|lease| (*lease).clone());
                (shard.clone(), observed)
            })
            .collect();
    }

    let in_stream: HashSet<&str> = shards.iter().map(|shard| shard.shard_id.as_str()).collect();
    plan.remove.extend(
        snapshot
            .shards
            .iter()
            .filter(|lease| {
                lease.is_finished()
                    && !in_stream.contains(lease.shard_id.as_str())
                    && !lease.is_live(now)
            })
            .cloned()
            .map(StaleLease::Shard),
    );
    plan.remove.extend(
        snapshot
            .presences
            .iter()
            .filter(|presence| presence.holder != holder && !presence.is_live(now))
            .cloned()
            .map(StaleLease::Presence),
    );
    plan
}

/// The outcome of one balancing round for this replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    /// Shards to read now, with their renewed leases (checkpoints included).
    pub held: Vec<ShardLease>,
    /// Shards to stop reading, checkpoint and [`ShardLeaseStore::release`].
    pub give_up: Vec<String>,
}

/// One balancing round: announce this replica, renew what it holds, take its share of free
/// shards, hand over the rest, clean up stale leases. Run it well within the lease duration;
/// the engine reads exactly the shards in [`Assignment::held`].
pub async fn balance<S: ShardLeaseStore>(
    store: &S,
    shards: &[Shard],
    now: Timestamp,
) -> Result<Assignment, LeaseError> {
    store.heartbeat(now).await?;
    let snapshot = store.list().await?;
    let plan = plan(store.holder(), shards, &snapshot, now);
    for stale in &plan.remove {
        store.remove(stale).await?;
    }
    let mut assignment = Assignment {
        give_up: plan.give_up,
        held: Vec::new(),
    };
    for lease in snapshot
        .shards
        .iter()
        .filter(|lease| lease.is_held_by(store.holder()))
    {
        if assignment.give_up.contains(&lease.shard_id) {
            continue;
        }
        match store.renew(&lease.shard_id, now).await {
            Ok(renewed) => assignment.held.push(renewed),
            Err(LeaseError::Lost { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    for (shard, observed) in &plan.acquire {
        match store.try_acquire(shard, observed.as_ref(), now).await {
            Ok(acquired) => assignment.held.push(acquired),
            Err(LeaseError::Conflict { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(assignment)
}

/// The Lease name of a mapping's shard: `esm-MAPPING-SHARD-HASH`, the shard id lowercased with
/// other characters than `[a-z0-9]` as `-` (shortened to fit 253 characters) and a hash of the
/// exact id so that ids differing in case or punctuation never share a name.
pub fn shard_lease_name(mapping: &str, shard_id: &str) -> String {
    let hash = &sha256_hex(shard_id.as_bytes())[..NAME_HASH_LENGTH];
    let room = MAX_NAME_LENGTH.saturating_sub("esm---".len() + mapping.len() + NAME_HASH_LENGTH);
    let readable: String = shard_id
        .chars()
        .take(room)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    format!("esm-{mapping}-{readable}-{hash}")
}

/// The Lease name of a replica's presence: `esm-MAPPING-poller-HASH`.
pub fn presence_lease_name(mapping: &str, holder: &str) -> String {
    format!(
        "esm-{mapping}-poller-{}",
        &sha256_hex(holder.as_bytes())[..NAME_HASH_LENGTH]
    )
}

mod kube_store;
pub mod memory;
mod window_store;

#[cfg(test)]
mod tests;
