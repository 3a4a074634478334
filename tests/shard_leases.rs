//! Shard leases and checkpoints in a real kube-apiserver.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use esm_operator::api::EventSourceMapping;
use esm_operator::poller::checkpoint::{
    CHECKPOINT_ANNOTATION, Checkpoint, KubeShardLeases, LeaseError, PARENT_SHARD_IDS_ANNOTATION,
    SHARD_ID_ANNOTATION, ShardLeaseStore, balance, shard_lease_name,
};
use esm_operator::sources::sharded::Shard;
use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use support::control_plane::ControlPlane;

const DURATION: Duration = Duration::from_secs(30);

struct Fixture {
    client: Client,
    mapping: EventSourceMapping,
    start: Timestamp,
}

async fn fixture(name: &str) -> Fixture {
    let client = ControlPlane::with_crd().client().await;
    let mapping = create_mapping(&client, name).await;
    Fixture {
        client,
        mapping,
        start: Timestamp::now(),
    }
}

/// Creates a Kinesis mapping named `name` in the default namespace: the owner of its leases.
async fn create_mapping(client: &Client, name: &str) -> EventSourceMapping {
    let mapping: EventSourceMapping = serde_json::from_value(serde_json::json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "source": {"kinesis": {"streamName": "orders"}},
            "target": {"url": "http://127.0.0.1:9/"},
            "startingPosition": "TRIM_HORIZON",
        },
    }))
    .expect("a valid mapping");
    Api::<EventSourceMapping>::default_namespaced(client.clone())
        .create(&PostParams::default(), &mapping)
        .await
        .expect("create the mapping")
}

impl Fixture {
    fn store(&self, holder: &str) -> KubeShardLeases {
        KubeShardLeases::new(self.client.clone(), &self.mapping, holder, DURATION).unwrap()
    }

    /// `seconds` after the test started: leases are written with these times, so expiry needs
    /// no waiting.
    fn at(&self, seconds: i64) -> Timestamp {
        self.start + SignedDuration::from_secs(seconds)
    }

    async fn leases(&self) -> Vec<Lease> {
        let selector = format!("esm.dev/mapping={}", self.mapping.name_any());
        Api::<Lease>::default_namespaced(self.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }

    /// Shard id -> holder, read from the API server.
    async fn holders(&self) -> BTreeMap<String, String> {
        self.leases()
            .await
            .iter()
            .filter_map(|lease| {
                let shard_id = lease.annotations().get(SHARD_ID_ANNOTATION)?;
                let holder = lease.spec.as_ref()?.holder_identity.clone()?;
                Some((shard_id.clone(), holder))
            })
            .collect()
    }
}

fn shards(ids: &[&str]) -> Vec<Shard> {
    ids.iter()
        .map(|id| Shard {
            shard_id: id.to_string(),
            parent_shard_ids: Vec::new(),
            open: true,
        })
        .collect()
}

fn four_shards() -> Vec<Shard> {
    shards(&[
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
        "shardId-000000000003",
    ])
}

/// A balancing round that hands over what it is told to: the shard ids this replica reads.
async fn round(store: &KubeShardLeases, shards: &[Shard], now: Timestamp) -> Vec<String> {
    let assignment = balance(store, shards, now).await.unwrap();
    for shard_id in &assignment.give_up {
        store.release(shard_id).await.unwrap();
    }
    assignment
        .held
        .into_iter()
        .map(|lease| lease.shard_id)
        .collect()
}

#[tokio::test]
async fn two_holders_split_four_shards_two_and_two() {
    let fixture = fixture("split-four").await;
    let (a, b) = (fixture.store("poller-a"), fixture.store("poller-b"));
    let shards = four_shards();

    assert_eq!(round(&a, &shards, fixture.at(0)).await.len(), 4);
    assert!(round(&b, &shards, fixture.at(1)).await.is_empty());
    assert_eq!(round(&a, &shards, fixture.at(2)).await.len(), 2);
    let taken_by_b = round(&b, &shards, fixture.at(3)).await;
    assert_eq!(taken_by_b.len(), 2);
    let mut held_by_a = round(&a, &shards, fixture.at(4)).await;
    held_by_a.extend(round(&b, &shards, fixture.at(4)).await);
    let distinct: HashSet<_> = held_by_a.iter().collect();
    assert_eq!(distinct.len(), 4, "every shard read once: {held_by_a:?}");

    let mut per_holder: BTreeMap<String, usize> = BTreeMap::new();
    for holder in fixture.holders().await.into_values() {
        *per_holder.entry(holder).or_default() += 1;
    }
    assert_eq!(
        per_holder,
        BTreeMap::from([("poller-a".into(), 2), ("poller-b".into(), 2)])
    );

    // What the API server holds: named from the shard, owned by the mapping, readable ids.
    let leases = fixture.leases().await;
    let owner_uid = fixture.mapping.uid().unwrap();
    for shard in &shards {
        let name = shard_lease_name("split-four", &shard.shard_id);
        let lease = leases
            .iter()
            .find(|lease| lease.name_any() == name)
            .unwrap_or_else(|| panic!("no lease {name}"));
        assert_eq!(lease.annotations()[SHARD_ID_ANNOTATION], shard.shard_id);
        assert_eq!(lease.owner_references()[0].uid, owner_uid);
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(30));
        assert!(spec.renew_time.is_some());
    }
}

#[tokio::test]
async fn expired_leases_are_taken_over_with_their_checkpoints() {
    let fixture = fixture("expiry").await;
    let (a, b) = (fixture.store("poller-a"), fixture.store("poller-b"));
    let shards = four_shards();
    round(&a, &shards, fixture.at(0)).await;
    for shard in &shards {
        let checkpoint = Checkpoint::SequenceNumber("49600000000000000001".into());
        a.checkpoint(&shard.shard_id, &checkpoint, fixture.at(1))
            .await
            .unwrap();
    }

    assert!(
        round(&b, &shards, fixture.at(30)).await.is_empty(),
        "still live"
    );
    assert_eq!(round(&b, &shards, fixture.at(32)).await.len(), 4);
    for lease in fixture.leases().await {
        if lease.annotations().contains_key(SHARD_ID_ANNOTATION) {
            assert_eq!(
                lease.annotations()[CHECKPOINT_ANNOTATION],
                "49600000000000000001"
            );
            let spec = lease.spec.unwrap();
            assert_eq!(spec.holder_identity.as_deref(), Some("poller-b"));
            assert_eq!(spec.lease_transitions, Some(1));
        }
    }

    // The old holder cannot write any more and reads nothing.
    let error = a
        .checkpoint(&shards[0].shard_id, &Checkpoint::ShardEnd, fixture.at(33))
        .await
        .unwrap_err();
    assert!(matches!(error, LeaseError::Lost { .. }), "{error:?}");
    let error = a
        .renew(&shards[0].shard_id, fixture.at(33))
        .await
        .unwrap_err();
    assert!(matches!(error, LeaseError::Lost { .. }), "{error:?}");
    assert!(round(&a, &shards, fixture.at(34)).await.is_empty());
}

#[tokio::test]
async fn concurrent_acquires_never_give_a_shard_two_holders() {
    let fixture = fixture("races").await;
    let stores: Vec<_> = (0..6)
        .map(|i| fixture.store(&format!("poller-{i}")))
        .collect();
    let shard = &shards(&["shardId-000000000007"])[0];

    // Creation race.
    let created = join_all(
        stores
            .iter()
            .map(|store| store.try_acquire(shard, None, fixture.at(0))),
    )
    .await;
    let winners: Vec<_> = created.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{created:?}");
    assert!(
        created
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|error| matches!(error, LeaseError::Conflict { .. }))
    );

    // Takeover races on the same expired observation, several times over.
    let mut observed = winners[0].clone();
    for attempt in 1..=5 {
        let now = fixture.at(40 * attempt);
        let taken = join_all(
            stores
                .iter()
                .map(|store| store.try_acquire(shard, Some(&observed), now)),
        )
        .await;
        let winners: Vec<_> = taken.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "attempt {attempt}: {taken:?}");
        observed = winners[0].clone();
    }
    assert_eq!(observed.transitions, 5);

    // Whole balancing rounds of four replicas at once over eight shards.
    let eight = shards(&["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"]);
    let now = fixture.at(1000);
    let held = join_all(stores[..4].iter().map(|store| balance(store, &eight, now))).await;
    let mut reading = Vec::new();
    for assignment in held {
        reading.extend(assignment.unwrap().held.into_iter().map(|l| l.shard_id));
    }
    let distinct: HashSet<_> = reading.iter().collect();
    assert_eq!(
        distinct.len(),
        reading.len(),
        "a shard read twice: {reading:?}"
    );
}

#[tokio::test]
async fn only_the_holder_checkpoints_even_while_renewing() {
    let fixture = fixture("checkpoints").await;
    let (a, b) = (fixture.store("poller-a"), fixture.store("poller-b"));
    let shard = &shards(&["shardId-000000000001"])[0];
    a.try_acquire(shard, None, fixture.at(0)).await.unwrap();

    let error = b
        .checkpoint(
            &shard.shard_id,
            &Checkpoint::SequenceNumber("1".into()),
            fixture.at(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, LeaseError::Lost { .. }), "{error:?}");
    let error = b.release(&shard.shard_id).await.unwrap_err();
    assert!(matches!(error, LeaseError::Lost { .. }), "{error:?}");

    // Checkpoints racing renewals of the same holder all land: conflicts are retried.
    for step in 0..5_i64 {
        let checkpoint = Checkpoint::SequenceNumber(format!("{}", 100 + step));
        let now = fixture.at(2 + step);
        let (renewed, checkpointed) = tokio::join!(
            a.renew(&shard.shard_id, now),
            a.checkpoint(&shard.shard_id, &checkpoint, now)
        );
        renewed.unwrap();
        assert_eq!(checkpointed.unwrap().checkpoint, Some(checkpoint));
    }
    let leases = a.list().await.unwrap();
    assert_eq!(
        leases.shards[0].checkpoint,
        Some(Checkpoint::SequenceNumber("104".into()))
    );

    // Released, the checkpoint stays and anyone may take the shard at once.
    a.release(&shard.shard_id).await.unwrap();
    let released = b.list().await.unwrap().shards.remove(0);
    assert_eq!(released.holder, None);
    let taken = b
        .try_acquire(shard, Some(&released), fixture.at(8))
        .await
        .unwrap();
    assert_eq!(
        taken.checkpoint,
        Some(Checkpoint::SequenceNumber("104".into()))
    );
}

#[tokio::test]
async fn children_start_once_their_parents_reached_shard_end() {
    let fixture = fixture("reshard").await;
    let a = fixture.store("poller-a");
    let mut stream = vec![
        Shard {
            shard_id: "shardId-000000000000".into(),
            parent_shard_ids: Vec::new(),
            open: false,
        },
        Shard {
            shard_id: "shardId-000000000001".into(),
            parent_shard_ids: Vec::new(),
            open: false,
        },
        Shard {
            shard_id: "shardId-000000000002".into(),
            parent_shard_ids: vec!["shardId-000000000000".into(), "shardId-000000000001".into()],
            open: true,
        },
    ];
    let mut reading = round(&a, &stream, fixture.at(0)).await;
    reading.sort();
    assert_eq!(reading, ["shardId-000000000000", "shardId-000000000001"]);

    a.checkpoint("shardId-000000000000", &Checkpoint::ShardEnd, fixture.at(1))
        .await
        .unwrap();
    assert_eq!(
        round(&a, &stream, fixture.at(2)).await,
        ["shardId-000000000001"],
        "one parent is not enough"
    );
    a.checkpoint("shardId-000000000001", &Checkpoint::ShardEnd, fixture.at(3))
        .await
        .unwrap();
    assert_eq!(
        round(&a, &stream, fixture.at(4)).await,
        ["shardId-000000000002"]
    );
    let child = fixture
        .leases()
        .await
        .into_iter()
        .find(|lease| {
            lease
                .annotations()
                .get(SHARD_ID_ANNOTATION)
                .map(String::as_str)
                == Some("shardId-000000000002")
        })
        .unwrap();
    assert_eq!(
        child.annotations()[PARENT_SHARD_IDS_ANNOTATION],
        "shardId-000000000000,shardId-000000000001"
    );

    // Parents trimmed from the stream: their finished leases go.
    stream.drain(..2);
    assert_eq!(
        round(&a, &stream, fixture.at(5)).await,
        ["shardId-000000000002"]
    );
    let left: Vec<_> = fixture.holders().await.into_keys().collect();
    assert_eq!(left, ["shardId-000000000002"]);
}

#[tokio::test]
async fn deleting_the_mapping_deletes_its_leases() {
    let fixture = fixture("deleted").await;
    let a = fixture.store("poller-a");
    round(&a, &four_shards(), fixture.at(0)).await;
    assert_eq!(fixture.leases().await.len(), 5, "4 shards and a presence");

    Api::<EventSourceMapping>::default_namespaced(fixture.client.clone())
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    // The garbage collector of kube-controller-manager removes the owned Leases.
    for _ in 0..600 {
        if fixture.leases().await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("leases left 60 s after their mapping was deleted");
}
