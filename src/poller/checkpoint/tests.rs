use std::collections::BTreeMap;
use std::sync::Arc;

use super::memory::{MemoryLeaseStore, MemoryLeases};
use super::*;

const DURATION: Duration = Duration::from_secs(30);

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

fn shard(id: &str, parents: &[&str]) -> Shard {
    Shard {
        shard_id: id.into(),
        parent_shard_ids: parents.iter().map(|p| p.to_string()).collect(),
        open: true,
    }
}

fn four_shards() -> Vec<Shard> {
    (0..4)
        .map(|i| shard(&format!("shardId-00000000000{i}"), &[]))
        .collect()
}

/// Runs a round as the engine would: releases what it is told to give up.
async fn round(store: &MemoryLeaseStore, shards: &[Shard], now: Timestamp) -> Vec<String> {
    let assignment = balance(store, shards, now).await.unwrap();
    for shard_id in &assignment.give_up {
        store.release(shard_id).await.unwrap();
    }
    let mut held: Vec<_> = assignment
        .held
        .into_iter()
        .map(|lease| lease.shard_id)
        .collect();
    held.sort();
    held
}

fn holders(leases: &MemoryLeases, shards: &[Shard]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for shard in shards {
        if let Some(holder) = leases.lease(&shard.shard_id).and_then(|l| l.holder) {
            *count.entry(holder).or_default() += 1;
        }
    }
    count
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[test]
fn lease_names_are_valid_deterministic_and_distinct() {
    let mapping52 = "m".repeat(52);
    let ids = [
        "shardId-000000000001".to_string(),
        "shardId-00000001795395270441-729d3502".to_string(),
        "SHARDID-000000000001".to_string(),
        "shard_id.000000000001".to_string(),
        "x".repeat(400),
    ];
    let mut names = Vec::new();
    for mapping in ["orders", "a.b", mapping52.as_str()] {
        for id in &ids {
            let name = shard_lease_name(mapping, id);
            assert!(is_dns_subdomain(&name), "{name}");
            assert_eq!(name, shard_lease_name(mapping, id));
            names.push(name);
        }
        let presence = presence_lease_name(mapping, "esm-orders-7d9f-xk2p");
        assert!(is_dns_subdomain(&presence), "{presence}");
    }
    let distinct: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    assert!(
        shard_lease_name("orders", "shardId-000000000001")
            .starts_with("esm-orders-shardid-000000000001-")
    );
}

#[test]
fn children_wait_for_every_parent_to_finish_or_leave_the_stream() {
    let lease = |id: &str, checkpoint: Option<Checkpoint>| ShardLease {
        shard_id: id.into(),
        parent_shard_ids: Vec::new(),
        holder: None,
        renew_time: None,
        duration: DURATION,
        checkpoint,
        transitions: 0,
        version: "1".into(),
    };
    let shards = vec![
        shard("p1", &[]),
        shard("p2", &[]),
        shard("split", &["p1"]),
        shard("merged", &["p1", "p2"]),
        shard("orphan", &["trimmed"]),
    ];
    let eligible = |leases: &[ShardLease]| -> Vec<String> {
        eligible_shards(&shards, leases)
            .iter()
            .map(|s| s.shard_id.clone())
            .collect()
    };
    assert_eq!(eligible(&[]), ["p1", "p2", "orphan"]);
    let p1_midway = lease("p1", Some(Checkpoint::SequenceNumber("9".into())));
    assert_eq!(eligible(&[p1_midway]), ["p1", "p2", "orphan"]);
    let p1_done = lease("p1", Some(Checkpoint::ShardEnd));
    assert_eq!(
        eligible(std::slice::from_ref(&p1_done)),
        ["p2", "split", "orphan"]
    );
    let p2_done = lease("p2", Some(Checkpoint::ShardEnd));
    assert_eq!(eligible(&[p1_done, p2_done]), ["split", "merged", "orphan"]);
}

#[tokio::test]
async fn two_replicas_split_four_shards_two_and_two() {
    let leases = Arc::new(MemoryLeases::default());
    let (a, b) = (leases.store("a", DURATION), leases.store("b", DURATION));
    let shards = four_shards();

    assert_eq!(
        round(&a, &shards, at(0)).await.len(),
        4,
        "alone, a takes all"
    );
    assert!(
        round(&b, &shards, at(1)).await.is_empty(),
        "live leases are not taken"
    );
    assert_eq!(
        round(&a, &shards, at(2)).await.len(),
        2,
        "a makes room for b"
    );
    assert_eq!(
        round(&b, &shards, at(3)).await.len(),
        2,
        "b takes what a released"
    );
    for second in 4..10 {
        round(&a, &shards, at(second)).await;
        round(&b, &shards, at(second)).await;
    }
    assert_eq!(
        holders(&leases, &shards),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );
}

#[tokio::test]
async fn three_replicas_converge_to_an_even_share() {
    let leases = Arc::new(MemoryLeases::default());
    let stores: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|holder| leases.store(holder, DURATION))
        .collect();
    let shards: Vec<_> = (0..10).map(|i| shard(&format!("s{i:02}"), &[])).collect();
    for second in 0..10 {
        for store in &stores {
            round(store, &shards, at(second)).await;
        }
    }
    let mut shares: Vec<_> = holders(&leases, &shards).into_values().collect();
    shares.sort();
    assert_eq!(shares, [3, 3, 4]);
}

#[tokio::test]
async fn expired_leases_are_taken_over_with_their_checkpoints() {
    let leases = Arc::new(MemoryLeases::default());
    let (a, b) = (leases.store("a", DURATION), leases.store("b", DURATION));
    let shards = four_shards();
    round(&a, &shards, at(0)).await;
    for shard in &shards {
        let checkpoint = Checkpoint::SequenceNumber(format!("{}-7", shard.shard_id));
        a.checkpoint(&shard.shard_id, &checkpoint, at(1))
            .await
            .unwrap();
    }

    // a stops renewing; before the lease duration b cannot take anything.
    assert!(round(&b, &shards, at(30)).await.is_empty());
    assert_eq!(round(&b, &shards, at(32)).await.len(), 4);
    for shard in &shards {
        let lease = leases.lease(&shard.shard_id).unwrap();
        assert!(lease.is_held_by("b"));
        assert_eq!(lease.transitions, 1);
        assert_eq!(
            lease.checkpoint,
            Some(Checkpoint::SequenceNumber(format!("{}-7", shard.shard_id)))
        );
    }

    // a comes back: its writes fail and its round holds nothing it lost.
    let error = a
        .checkpoint(&shards[0].shard_id, &Checkpoint::ShardEnd, at(33))
        .await
        .unwrap_err();
    assert!(matches!(error, LeaseError::Lost { .. }), "{error:?}");
    assert!(round(&a, &shards, at(34)).await.is_empty());
}

#[tokio::test]
async fn a_stale_observation_cannot_acquire() {
    let leases = Arc::new(MemoryLeases::default());
    let (a, b) = (leases.store("a", DURATION), leases.store("b", DURATION));
    let shard = shard("s", &[]);
    let first = a.try_acquire(&shard, None, at(0)).await.unwrap();
    let error = b.try_acquire(&shard, None, at(0)).await.unwrap_err();
    assert!(matches!(error, LeaseError::Conflict { .. }), "{error:?}");
    let error = b
        .try_acquire(&shard, Some(&first), at(1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeaseError::Conflict { .. }),
        "live: {error:?}"
    );
    a.renew("s", at(20)).await.unwrap();
    // Expired by the first observation, but renewed since: the version tells.
    let error = b
        .try_acquire(&shard, Some(&first), at(40))
        .await
        .unwrap_err();
    assert!(matches!(error, LeaseError::Conflict { .. }), "{error:?}");
}

#[tokio::test]
async fn finished_parents_hand_over_to_children_and_leave_no_lease_behind() {
    let leases = Arc::new(MemoryLeases::default());
    let a = leases.store("a", DURATION);
    let mut shards = vec![shard("parent", &[]), shard("child", &["parent"])];
    shards[0].open = false;
    assert_eq!(round(&a, &shards, at(0)).await, ["parent"]);

    a.checkpoint("parent", &Checkpoint::ShardEnd, at(1))
        .await
        .unwrap();
    let assignment = balance(&a, &shards, at(2)).await.unwrap();
    assert_eq!(
        assignment.give_up,
        ["parent"],
        "a finished shard is handed back"
    );
    a.release("parent").await.unwrap();
    assert_eq!(round(&a, &shards, at(3)).await, ["child"]);

    // Once the parent leaves the stream (trimmed), its finished lease is deleted.
    shards.remove(0);
    assert_eq!(round(&a, &shards, at(4)).await, ["child"]);
    assert_eq!(leases.lease("parent"), None);
    assert!(leases.lease("child").unwrap().is_held_by("a"));
}

#[tokio::test]
async fn a_departed_replica_presence_is_removed_and_its_share_redistributed() {
    let leases = Arc::new(MemoryLeases::default());
    let (a, b) = (leases.store("a", DURATION), leases.store("b", DURATION));
    let shards = four_shards();
    for second in 0..4 {
        round(&a, &shards, at(second)).await;
        round(&b, &shards, at(second)).await;
    }
    assert_eq!(holders(&leases, &shards).len(), 2);
    // b is gone: after expiry a holds everything and b's presence is cleaned up.
    round(&a, &shards, at(40)).await;
    assert_eq!(round(&a, &shards, at(41)).await.len(), 4);
    let snapshot = a.list().await.unwrap();
    let present: Vec<_> = snapshot
        .presences
        .iter()
        .map(|p| p.holder.as_str())
        .collect();
    assert_eq!(present, ["a"]);
}
