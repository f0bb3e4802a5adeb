//! Replicated partitions in the metadata image: placement with a
//! replication factor, elections when brokers are fenced (from the ISR
//! and ELR only), AlterPartition's compare-and-set and its typed refusals,
//! clean and unclean restarts, preferred-leader elections, and images and
//! commands written by the main branch before replication existed
//! (fixtures in `tests/fixtures/`, written with main at fe49b4a).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use broker_cluster::{
    AlterPartition, BrokerEpoch, BrokerId, BrokerRegistration, ClusterError, IsrMember,
    MetadataCommand, MetadataImage, Outcome, PartitionReplicas, RequestId, TopicConfig,
};
use broker_replication::AlterPartitionError;
use proptest::prelude::*;

const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qk";

fn registration(id: u32, incarnation: u128, shards: u16) -> BrokerRegistration {
    support::registration(id, incarnation, shards, true)
}

fn config(rf: u16, min_isr: u16) -> TopicConfig {
    TopicConfig {
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: 1 << 20,
        log_append_time: false,
        replication_factor: rf,
        min_insync_replicas: min_isr,
        unclean_leader_election: false,
    }
}

fn create(name: &str, partitions: u32, config: TopicConfig) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_owned(),
        partitions,
        config,
        request_id: RequestId(u128::from(partitions) << 64 | name.len() as u128),
    }
}

/// Brokers 1..=n (2 shards each) registered and unfenced; returns the
/// image and each broker's epoch.
fn cluster(n: u32) -> (MetadataImage, BTreeMap<BrokerId, BrokerEpoch>) {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let mut epochs = BTreeMap::new();
    for id in 1..=n {
        let Outcome::Registered { epoch } = image
            .apply(&MetadataCommand::RegisterBroker(registration(
                id,
                u128::from(id),
                2,
            )))
            .unwrap()
        else {
            panic!("not registered")
        };
        image
            .apply(&MetadataCommand::UnfenceBroker {
                id: BrokerId(id),
                epoch,
            })
            .unwrap();
        epochs.insert(BrokerId(id), epoch);
    }
    (image, epochs)
}

fn part<'a>(image: &'a MetadataImage, topic: &str, p: u32) -> &'a PartitionReplicas {
    image.partition_replicas(topic, p).unwrap()
}

fn fence(image: &mut MetadataImage, epochs: &BTreeMap<BrokerId, BrokerEpoch>, id: BrokerId) {
    image
        .apply(&MetadataCommand::FenceBroker {
            id,
            epoch: epochs[&id],
        })
        .unwrap();
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn an_image_and_commands_written_before_replication_load_as_single_replica_partitions() {
    // Written by main at fe49b4a: brokers 1 and 2 (2 shards), topic
    // "orders" of 4 partitions placed over both, then broker 2 fenced.
    let loaded =
        MetadataImage::from_snapshot(fixture("main-fe49b4a-snapshot.json").as_bytes(), CLUSTER)
            .unwrap();
    let topic = loaded.topic("orders").unwrap();
    assert_eq!(topic.config.replication_factor, 1);
    assert_eq!(topic.config.min_insync_replicas, 1);
    assert!(!topic.config.unclean_leader_election);
    assert_eq!(topic.replicas.len(), 4);
    for (p, (pl, reg)) in topic.partitions.iter().zip(&topic.replicas).enumerate() {
        assert_eq!(reg.replicas, vec![*pl], "partition {p}");
        if pl.broker == BrokerId(1) {
            // Its broker serves: it leads, in sync, epochs 0.
            assert_eq!(reg.leader, Some(pl.broker));
            assert_eq!(reg.isr, BTreeSet::from([pl.broker]));
            assert_eq!((reg.leader_epoch, reg.partition_epoch), (0, 0));
        } else {
            // Its broker is fenced: what fencing does now.
            assert_eq!(reg.leader, None);
            assert!(reg.isr.is_empty());
            assert_eq!(reg.elr, BTreeSet::from([pl.broker]));
            assert_eq!((reg.leader_epoch, reg.partition_epoch), (1, 1));
            assert!(matches!(
                loaded.partition_owner("orders", p as u32),
                Err(ClusterError::Unavailable {
                    broker: BrokerId(2),
                    ..
                })
            ));
        }
    }
    // Replaying the same log, as main wrote its entries, gives the same
    // image the old snapshot loads as.
    let mut replayed = MetadataImage::new(CLUSTER).unwrap();
    for line in fixture("main-fe49b4a-commands.jsonl").lines() {
        let command: MetadataCommand = serde_json::from_str(line).unwrap();
        let _ = replayed.apply(&command);
    }
    assert_eq!(replayed, loaded);
    // And the image round-trips in the new format.
    let again = MetadataImage::from_snapshot(&loaded.to_snapshot(), CLUSTER).unwrap();
    assert_eq!(again, loaded);
    // Broker 2 back (a new process with no recorded epoch: unclean, but
    // the only copy): its partitions come back with it, as before.
    let mut image = loaded;
    let Outcome::Registered { epoch } = image
        .apply(&MetadataCommand::RegisterBroker(registration(2, 99, 2)))
        .unwrap()
    else {
        panic!()
    };
    image
        .apply(&MetadataCommand::UnfenceBroker {
            id: BrokerId(2),
            epoch,
        })
        .unwrap();
    for p in 0..4 {
        assert!(image.partition_owner("orders", p).is_ok(), "partition {p}");
    }
}

#[test]
fn a_replicated_topic_has_rf_replicas_on_distinct_brokers_all_in_sync() {
    let (mut image, _) = cluster(4);
    image.apply(&create("r", 12, config(3, 2))).unwrap();
    let topic = image.topic("r").unwrap();
    let mut leaders: BTreeMap<BrokerId, u32> = BTreeMap::new();
    let mut replicas: BTreeMap<BrokerId, u32> = BTreeMap::new();
    for (p, reg) in topic.replicas.iter().enumerate() {
        let brokers: BTreeSet<BrokerId> = reg.replicas.iter().map(|r| r.broker).collect();
        assert_eq!(brokers.len(), 3, "partition {p}: distinct brokers");
        assert_eq!(reg.isr, brokers);
        assert_eq!(reg.leader, Some(reg.replicas[0].broker));
        assert_eq!(topic.partitions[p], reg.replicas[0]);
        *leaders.entry(reg.leader.unwrap()).or_default() += 1;
        for r in &reg.replicas {
            *replicas.entry(r.broker).or_default() += 1;
        }
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![3; 4]);
    assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![9; 4]);
}

#[test]
fn a_replication_factor_above_the_brokers_is_refused() {
    let (mut image, epochs) = cluster(2);
    let before = image.clone();
    let err = image.apply(&create("r", 1, config(3, 1))).unwrap_err();
    assert!(matches!(
        err,
        ClusterError::InvalidReplicationFactor {
            replication_factor: 3,
            registered: 2,
            ..
        }
    ));
    assert_eq!(image, before);
    // Registered but fenced brokers cannot take a replica either.
    let (mut image, _) = cluster(3);
    fence(&mut image, &epochs, BrokerId(1));
    assert!(matches!(
        image.apply(&create("r", 1, config(3, 1))),
        Err(ClusterError::InvalidReplicationFactor { eligible: 2, .. })
    ));
    assert!(matches!(
        image.apply(&create("r", 1, config(2, 3))),
        Err(ClusterError::InvalidMinInsyncReplicas { .. })
    ));
}

#[test]
fn a_replicated_topic_needs_brokers_that_fsync_every_write() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    for id in 1..=3 {
        let mut r = registration(id, u128::from(id), 1);
        r.fsync_every_write = id != 2;
        let Outcome::Registered { epoch } =
            image.apply(&MetadataCommand::RegisterBroker(r)).unwrap()
        else {
            panic!()
        };
        image
            .apply(&MetadataCommand::UnfenceBroker {
                id: BrokerId(id),
                epoch,
            })
            .unwrap();
    }
    assert!(matches!(
        image.apply(&create("r", 1, config(3, 1))),
        Err(ClusterError::ReplicationNeedsFsync {
            replication_factor: 3,
            durable: 2
        })
    ));
    image.apply(&create("two", 3, config(2, 1))).unwrap();
    for reg in &image.topic("two").unwrap().replicas {
        assert!(reg.replicas.iter().all(|r| r.broker != BrokerId(2)));
    }
    // One replica: any broker, as before.
    image.apply(&create("one", 3, config(1, 1))).unwrap();
}

#[test]
fn fencing_the_leader_elects_from_the_isr_in_a_higher_leader_epoch() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 3, config(3, 2))).unwrap();
    let before = part(&image, "r", 0).clone();
    let leader = before.leader.unwrap();
    fence(&mut image, &epochs, leader);
    let after = part(&image, "r", 0);
    let new = after.leader.unwrap();
    assert_ne!(new, leader);
    assert!(before.isr.contains(&new));
    assert!(!after.isr.contains(&leader));
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert!(after.partition_epoch > before.partition_epoch);
    assert_eq!(image.partition_owner("r", 0).unwrap().broker, new);
    // ISR 2 >= min.insync 2: no ELR.
    assert!(after.elr.is_empty());
}

#[test]
fn fencing_below_min_insync_keeps_the_elr_and_elects_only_from_isr_or_elr() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 1, config(3, 3))).unwrap();
    let reg = part(&image, "r", 0).clone();
    let order: Vec<BrokerId> = reg.replicas.iter().map(|r| r.broker).collect();
    for b in &order {
        fence(&mut image, &epochs, *b);
    }
    let reg = part(&image, "r", 0).clone();
    assert_eq!(reg.leader, None);
    assert!(reg.isr.is_empty());
    assert_eq!(reg.elr, order.iter().copied().collect());
    assert!(image.partition_owner("r", 0).is_err());
    // A broker returning cleanly (its recorded epoch) is elected from the ELR.
    let mut r = registration(order[2].0, 1000, 2);
    r.previous_epoch = Some(epochs[&order[2]]);
    let Outcome::Registered { epoch } = image.apply(&MetadataCommand::RegisterBroker(r)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        part(&image, "r", 0).elr,
        reg.elr,
        "a clean restart stays eligible"
    );
    image
        .apply(&MetadataCommand::UnfenceBroker {
            id: order[2],
            epoch,
        })
        .unwrap();
    let after = part(&image, "r", 0);
    assert_eq!(after.leader, Some(order[2]));
    assert!(after.leader_epoch > reg.leader_epoch);
}

#[test]
fn an_unclean_restart_leaves_the_elr_and_is_never_elected() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 1, config(3, 3))).unwrap();
    let order: Vec<BrokerId> = part(&image, "r", 0)
        .replicas
        .iter()
        .map(|r| r.broker)
        .collect();
    for b in &order {
        fence(&mut image, &epochs, *b);
    }
    // A wiped disk presents no epoch.
    let Outcome::Registered { epoch } = image
        .apply(&MetadataCommand::RegisterBroker(registration(
            order[0].0, 2000, 2,
        )))
        .unwrap()
    else {
        panic!()
    };
    assert!(!part(&image, "r", 0).elr.contains(&order[0]));
    image
        .apply(&MetadataCommand::UnfenceBroker {
            id: order[0],
            epoch,
        })
        .unwrap();
    assert_eq!(
        part(&image, "r", 0).leader,
        None,
        "no election outside ISR and ELR"
    );
}

#[test]
fn status_counts_replicas_leaders_and_under_replicated_partitions() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 6, config(3, 3))).unwrap();
    let status = image.status();
    assert_eq!((status.under_replicated, status.offline), (0, 0));
    assert!(status
        .brokers
        .iter()
        .all(|b| b.partitions == 6 && b.leaders == 2));
    fence(&mut image, &epochs, BrokerId(1));
    fence(&mut image, &epochs, BrokerId(2));
    fence(&mut image, &epochs, BrokerId(3));
    let status = image.status();
    assert_eq!((status.under_replicated, status.offline), (6, 6));
    assert!(status.brokers.iter().all(|b| b.leaders == 0));
}

#[test]
fn a_controlled_shutdown_moves_leadership_at_once() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 1, config(3, 1))).unwrap();
    let leader = part(&image, "r", 0).leader.unwrap();
    image
        .apply(&MetadataCommand::ShutdownBroker {
            id: leader,
            epoch: epochs[&leader],
        })
        .unwrap();
    let reg = part(&image, "r", 0);
    assert!(reg.leader.is_some_and(|l| l != leader));
    assert_eq!(reg.leader_epoch, 1);
}

fn alter(
    image: &MetadataImage,
    epochs: &BTreeMap<BrokerId, BrokerEpoch>,
    isr: &[(BrokerId, bool)],
) -> MetadataCommand {
    let reg = part(image, "r", 0);
    let leader = reg.leader.unwrap();
    MetadataCommand::AlterPartition(AlterPartition {
        topic: "r".into(),
        partition: 0,
        leader,
        leader_broker_epoch: epochs[&leader],
        leader_epoch: reg.leader_epoch,
        partition_epoch: reg.partition_epoch,
        new_isr: isr
            .iter()
            .map(|&(broker, with_epoch)| IsrMember {
                broker,
                broker_epoch: with_epoch.then(|| epochs[&broker]),
            })
            .collect(),
    })
}

#[test]
fn alter_partition_is_a_compare_and_set_refused_with_a_typed_reason() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 1, config(3, 1))).unwrap();
    let reg = part(&image, "r", 0).clone();
    let order: Vec<BrokerId> = reg.replicas.iter().map(|r| r.broker).collect();
    let (l, a, b) = (order[0], order[1], order[2]);
    // Shrink to {leader, a}.
    let shrink = alter(&image, &epochs, &[(l, false), (a, false)]);
    let Outcome::PartitionAltered { replicas } = image.apply(&shrink).unwrap() else {
        panic!()
    };
    assert_eq!(replicas.isr, BTreeSet::from([l, a]));
    assert_eq!(replicas.partition_epoch, reg.partition_epoch + 1);
    assert_eq!(replicas.leader_epoch, reg.leader_epoch);
    let refused = |image: &mut MetadataImage, command: &MetadataCommand| {
        let before = image.clone();
        let err = image.apply(command).unwrap_err();
        assert_eq!(*image, before, "a refusal changes nothing");
        match err {
            ClusterError::AlterPartitionRefused { reason, .. } => reason,
            e => panic!("{e}"),
        }
    };
    // The same request again: its partition epoch is no longer current.
    assert_eq!(
        refused(&mut image, &shrink),
        AlterPartitionError::InvalidUpdateVersion
    );
    // Adding b without its broker epoch (KIP-903).
    let add = alter(&image, &epochs, &[(l, false), (a, false), (b, false)]);
    assert_eq!(
        refused(&mut image, &add),
        AlterPartitionError::InvalidRequest
    );
    // With a stale broker epoch.
    let mut stale = epochs.clone();
    stale.insert(b, BrokerEpoch(epochs[&b].0 + 100));
    let add = alter(&image, &stale, &[(l, false), (a, false), (b, true)]);
    assert_eq!(
        refused(&mut image, &add),
        AlterPartitionError::IneligibleReplica
    );
    // A stale leader epoch.
    let mut command = alter(&image, &epochs, &[(l, false), (a, false), (b, true)]);
    if let MetadataCommand::AlterPartition(a) = &mut command {
        a.leader_epoch += 1;
    }
    assert_eq!(
        refused(&mut image, &command),
        AlterPartitionError::FencedLeaderEpoch
    );
    // A fenced member.
    fence(&mut image, &epochs, b);
    let add = alter(&image, &epochs, &[(l, false), (a, false), (b, true)]);
    assert_eq!(
        refused(&mut image, &add),
        AlterPartitionError::IneligibleReplica
    );
    // Unknown partition.
    let mut command = alter(&image, &epochs, &[(l, false)]);
    if let MetadataCommand::AlterPartition(a) = &mut command {
        a.partition = 7;
    }
    assert!(matches!(
        image.apply(&command),
        Err(ClusterError::UnknownPartition { .. })
    ));
}

#[test]
fn a_preferred_leader_election_returns_leadership_to_the_first_replica() {
    let (mut image, epochs) = cluster(3);
    image.apply(&create("r", 1, config(3, 1))).unwrap();
    let preferred = part(&image, "r", 0).replicas[0].broker;
    fence(&mut image, &epochs, preferred);
    assert_ne!(part(&image, "r", 0).leader, Some(preferred));
    let mut r = registration(preferred.0, 3000, 2);
    r.previous_epoch = Some(epochs[&preferred]);
    let Outcome::Registered { epoch } = image.apply(&MetadataCommand::RegisterBroker(r)).unwrap()
    else {
        panic!()
    };
    image
        .apply(&MetadataCommand::UnfenceBroker {
            id: preferred,
            epoch,
        })
        .unwrap();
    // Not in the ISR yet (it must catch up first: AlterPartition).
    let elect = MetadataCommand::ElectPreferredLeaders {
        topic: Some("r".into()),
    };
    assert_eq!(
        image.apply(&elect).unwrap(),
        Outcome::LeadersElected { partitions: 0 }
    );
    let mut epochs = epochs;
    epochs.insert(preferred, epoch);
    let reg = part(&image, "r", 0).clone();
    let mut isr: Vec<(BrokerId, bool)> = reg.isr.iter().map(|b| (*b, false)).collect();
    isr.push((preferred, true));
    image.apply(&alter(&image, &epochs, &isr)).unwrap();
    assert_eq!(
        image.apply(&elect).unwrap(),
        Outcome::LeadersElected { partitions: 1 }
    );
    let after = part(&image, "r", 0);
    assert_eq!(after.leader, Some(preferred));
    assert_eq!(after.leader_epoch, reg.leader_epoch + 1);
    assert!(matches!(
        image.apply(&MetadataCommand::ElectPreferredLeaders {
            topic: Some("nope".into())
        }),
        Err(ClusterError::UnknownTopic { .. })
    ));
}

fn proptest_config() -> ProptestConfig {
    support::seeded(0x5e_9117_ca7e)
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Over any brokers and any replication factor they allow: replicas
    /// on distinct unfenced brokers, every broker within one of its share
    /// of leaders and two of its share of replicas, every shard of a broker within one of
    /// its share of that broker's replicas.
    #[test]
    fn replica_placement_is_distinct_and_spread(
        brokers in prop::collection::vec(1u16..=4, 1..=6),
        partitions in 1u32..=40,
        rf_pick in 0usize..6,
        name in "[a-z]{1,12}",
    ) {
        let mut image = MetadataImage::new(CLUSTER).unwrap();
        for (i, &shards) in brokers.iter().enumerate() {
            let id = i as u32 + 1;
            let Outcome::Registered { epoch } = image
                .apply(&MetadataCommand::RegisterBroker(registration(id, u128::from(id), shards)))
                .unwrap() else { panic!() };
            image.apply(&MetadataCommand::UnfenceBroker { id: BrokerId(id), epoch }).unwrap();
        }
        let rf = (rf_pick % brokers.len()) as u16 + 1;
        image.apply(&create(&name, partitions, config(rf, 1))).unwrap();
        let topic = image.topic(&name).unwrap();
        let mut leaders = vec![0u32; brokers.len()];
        let mut replicas = vec![0u32; brokers.len()];
        let mut shards: BTreeMap<(u32, u16), u32> = BTreeMap::new();
        for reg in &topic.replicas {
            let distinct: BTreeSet<BrokerId> = reg.replicas.iter().map(|r| r.broker).collect();
            prop_assert_eq!(distinct.len(), usize::from(rf));
            leaders[reg.leader.unwrap().0 as usize - 1] += 1;
            for r in &reg.replicas {
                replicas[r.broker.0 as usize - 1] += 1;
                *shards.entry((r.broker.0, r.shard.0)).or_default() += 1;
            }
        }
        let spread = |v: &[u32]| v.iter().max().unwrap() - v.iter().min().unwrap();
        prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
        // Leaders are fixed where one-replica placement puts partitions, so
        // followers balance around them: within two.
        prop_assert!(spread(&replicas) <= 2, "replicas {:?}", replicas);
        for (i, &n) in brokers.iter().enumerate() {
            let per: Vec<u32> = (0..n).map(|s| shards.get(&(i as u32 + 1, s)).copied().unwrap_or(0)).collect();
            prop_assert!(spread(&per) <= 1, "broker {} shards {:?}", i + 1, per);
        }
    }

    /// Any sequence of fencing, unfencing, shutdowns and restarts (clean or
    /// not) of three brokers under RF-3 topics: a leader is always an
    /// unfenced ISR member; the leader epoch never goes back and grows
    /// with every change of leader; a new leader was in the ISR or ELR the
    /// moment before (no unclean election without the flag); and the image
    /// round-trips through a snapshot.
    #[test]
    fn elections_pick_only_from_the_isr_or_elr(
        ops in prop::collection::vec((0u8..4, 1u32..=3, any::<bool>()), 1..40),
        min_isr in 1u16..=3,
    ) {
        let (mut image, mut epochs) = cluster(3);
        image.apply(&create("r", 3, config(3, min_isr))).unwrap();
        let mut incarnation = 100u128;
        for (op, id, clean) in ops {
            let id = BrokerId(id);
            let before = image.clone();
            let command = match op {
                0 => MetadataCommand::FenceBroker { id, epoch: epochs[&id] },
                1 => MetadataCommand::UnfenceBroker { id, epoch: epochs[&id] },
                2 => MetadataCommand::ShutdownBroker { id, epoch: epochs[&id] },
                _ => {
                    if !image.is_fenced(id) {
                        continue;
                    }
                    incarnation += 1;
                    let mut r = registration(id.0, incarnation, 2);
                    r.previous_epoch = clean.then(|| epochs[&id]);
                    MetadataCommand::RegisterBroker(r)
                }
            };
            if let Ok(Outcome::Registered { epoch }) = image.apply(&command) {
                epochs.insert(id, epoch);
            }
            for p in 0..3 {
                let (old, new) = (part(&before, "r", p), part(&image, "r", p));
                if let Some(l) = new.leader {
                    prop_assert!(new.isr.contains(&l));
                    prop_assert!(!image.is_fenced(l), "fenced leader {}", l);
                }
                prop_assert!(new.leader_epoch >= old.leader_epoch);
                if new.leader != old.leader {
                    prop_assert!(new.leader_epoch > old.leader_epoch);
                    if let Some(l) = new.leader {
                        prop_assert!(old.isr.contains(&l) || old.elr.contains(&l),
                            "leader {} from outside ISR {:?} and ELR {:?}", l, old.isr, old.elr);
                    }
                }
            }
        }
        let again = MetadataImage::from_snapshot(&image.to_snapshot(), CLUSTER).unwrap();
        prop_assert_eq!(again, image);
    }
}

#[test]
fn a_reassignment_adds_the_new_replica_then_drops_the_old_once_it_is_in_sync() {
    let (mut image, epochs) = cluster(4);
    image.apply(&create("r", 1, config(3, 2))).unwrap();
    let before = part(&image, "r", 0).clone();
    let old: Vec<BrokerId> = before.replicas.iter().map(|p| p.broker).collect();
    let leader = before.leader.unwrap();
    let newcomer = (1..=4).map(BrokerId).find(|b| !old.contains(b)).unwrap();
    let target: Vec<BrokerId> = old
        .iter()
        .copied()
        .filter(|b| *b != leader)
        .chain([newcomer])
        .collect();
    let reassign = |replicas: Vec<BrokerId>| MetadataCommand::ReassignPartition {
        topic: "r".into(),
        partition: 0,
        replicas,
    };
    // Refused: another replication factor, an unknown broker.
    assert!(matches!(
        image.apply(&reassign(target[..2].to_vec())),
        Err(ClusterError::InvalidReassignment { .. })
    ));
    assert!(image
        .apply(&reassign(vec![target[0], target[1], BrokerId(9)]))
        .is_err());
    image.apply(&reassign(target.clone())).unwrap();
    let moving = part(&image, "r", 0).clone();
    let now: Vec<BrokerId> = moving.replicas.iter().map(|p| p.broker).collect();
    assert_eq!(now[..3], target[..]);
    assert_eq!(
        now[3], leader,
        "the dropped one stays until the target is in sync"
    );
    assert_eq!((moving.leader, &moving.isr), (before.leader, &before.isr));
    // A retry is answered with the same; another target is refused meanwhile.
    image.apply(&reassign(target.clone())).unwrap();
    assert!(image.apply(&reassign(old.clone())).is_err());
    // The image with the move in progress round-trips through a snapshot.
    let again = MetadataImage::from_snapshot(&image.to_snapshot(), CLUSTER).unwrap();
    assert_eq!(part(&again, "r", 0), &moving);
    // The leader adds the newcomer: the move completes.
    let mut isr: Vec<(BrokerId, bool)> = before.isr.iter().map(|b| (*b, *b == leader)).collect();
    isr.push((newcomer, true));
    image.apply(&alter(&image, &epochs, &isr)).unwrap();
    let done = part(&image, "r", 0);
    let now: Vec<BrokerId> = done.replicas.iter().map(|p| p.broker).collect();
    assert_eq!(now, target);
    assert!(done.target.is_none());
    assert_eq!(done.isr, target.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(
        done.leader,
        Some(target[0]),
        "the dropped leader handed over"
    );
    assert!(done.leader_epoch > before.leader_epoch);
    let again = MetadataImage::from_snapshot(&image.to_snapshot(), CLUSTER).unwrap();
    assert_eq!(part(&again, "r", 0), done);
}
