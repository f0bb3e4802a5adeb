//! The controller's elections, ELR rules and AlterPartition refusals, and
//! its invariants under random sequences of operations.

use proptest::prelude::*;

use super::*;
use crate::message::IsrMember;

const P: PartitionId = PartitionId(7);

fn b(id: u32) -> BrokerId {
    BrokerId(id)
}

fn set(ids: &[u32]) -> BTreeSet<BrokerId> {
    ids.iter().map(|i| BrokerId(*i)).collect()
}

/// Three registered, unfenced brokers and one partition on them.
fn cluster(min_isr: usize, unclean: bool) -> (Controller, Vec<BrokerEpoch>) {
    let mut c = Controller::new(ControllerConfig::new(100));
    let mut epochs = Vec::new();
    for id in 1..=3 {
        let e = c
            .register_broker(b(id), u64::from(id), None, Millis(0))
            .expect("registers");
        assert_eq!(c.heartbeat(b(id), e, Millis(0)), Ok(false));
        epochs.push(e);
    }
    c.create_partition(P, vec![b(1), b(2), b(3)], min_isr, unclean)
        .expect("created");
    (c, epochs)
}

fn reg(c: &Controller) -> &PartitionRegistration {
    c.partition(P).expect("exists")
}

fn request(c: &Controller, epochs: &[BrokerEpoch], isr: &[(u32, bool)]) -> AlterPartitionRequest {
    let r = reg(c);
    let leader = r.leader.expect("a leader");
    AlterPartitionRequest {
        partition: P,
        leader,
        leader_broker_epoch: epochs[leader.0 as usize - 1],
        leader_epoch: r.leader_epoch,
        partition_epoch: r.partition_epoch,
        new_isr: isr
            .iter()
            .map(|(id, with_epoch)| IsrMember {
                broker: b(*id),
                broker_epoch: with_epoch.then(|| epochs[*id as usize - 1]),
            })
            .collect(),
    }
}

#[test]
fn new_partition_has_every_unfenced_replica_in_sync_and_the_first_leading() {
    let (c, _) = cluster(2, false);
    let r = reg(&c);
    assert_eq!(r.leader, Some(b(1)));
    assert_eq!(r.isr, set(&[1, 2, 3]));
    assert!(r.elr.is_empty());
}

#[test]
fn fencing_the_leader_elects_from_the_isr_in_a_new_epoch() {
    let (mut c, _) = cluster(2, false);
    c.fence(b(1));
    let r = reg(&c);
    assert_eq!(r.leader, Some(b(2)));
    assert_eq!(r.isr, set(&[2, 3]));
    assert!(r.elr.is_empty(), "the ISR is still at MinISR");
    assert_eq!(r.leader_epoch, LeaderEpoch(1));
    assert_eq!(r.partition_epoch, PartitionEpoch(1));
}

#[test]
fn fencing_below_min_isr_moves_to_the_elr_and_unfencing_elects_from_it() {
    let (mut c, epochs) = cluster(2, false);
    c.fence(b(3));
    assert_eq!(reg(&c).elr, set(&[]));
    c.fence(b(2));
    assert_eq!(reg(&c).isr, set(&[1]));
    assert_eq!(
        reg(&c).elr,
        set(&[2]),
        "below MinISR the removed replica stays eligible"
    );
    c.fence(b(1));
    let r = reg(&c);
    assert_eq!(r.leader, None);
    assert_eq!(r.isr, set(&[]));
    assert_eq!(r.elr, set(&[1, 2]));
    // Broker 3 was out of sync: it comes back, nothing is elected.
    assert_eq!(c.heartbeat(b(3), epochs[2], Millis(1)), Ok(false));
    assert_eq!(reg(&c).leader, None);
    // Broker 2 is eligible: it is elected and moves to the ISR.
    assert_eq!(c.heartbeat(b(2), epochs[1], Millis(1)), Ok(false));
    let r = reg(&c);
    assert_eq!(r.leader, Some(b(2)));
    assert_eq!(r.isr, set(&[2]));
    assert_eq!(r.elr, set(&[1]));
}

#[test]
fn unclean_restart_leaves_the_elr_and_a_clean_one_does_not() {
    let (mut c, epochs) = cluster(3, false);
    c.fence(b(2));
    c.fence(b(3));
    assert_eq!(reg(&c).elr, set(&[2, 3]));
    // Broker 2 restarts without its clean-shutdown epoch: out of the ELR.
    c.register_broker(b(2), 20, None, Millis(5))
        .expect("registers");
    assert_eq!(reg(&c).elr, set(&[3]));
    // Broker 3 restarts with it: stays.
    c.register_broker(b(3), 30, Some(epochs[2]), Millis(5))
        .expect("registers");
    assert_eq!(reg(&c).elr, set(&[3]));
}

#[test]
fn a_registration_that_never_served_does_not_make_the_next_restart_unclean() {
    // Regression (outage seeds 1371 and 1892 in the first 10,000): a broker
    // registered, crashed before the answer reached it, and came back
    // presenting the epoch before: it was taken for unclean, every ELR
    // emptied, and the partition stayed leaderless for good.
    let (mut c, epochs) = cluster(3, false);
    c.fence(b(2));
    c.fence(b(3));
    assert_eq!(reg(&c).elr, set(&[2, 3]));
    let lost = c
        .register_broker(b(3), 31, Some(epochs[2]), Millis(5))
        .expect("registers");
    c.heartbeat(b(1), epochs[0], Millis(1000)).expect("alive");
    c.tick(Millis(1000));
    c.register_broker(b(3), 32, Some(epochs[2]), Millis(1000))
        .expect("registers");
    assert_eq!(reg(&c).elr, set(&[2, 3]), "epoch {lost} never served");
    // An epoch from before the last registration that served is unclean.
    c.heartbeat(b(2), epochs[1], Millis(1000)).expect("current");
    c.fence(b(2));
    let before = c
        .register_broker(b(2), 21, Some(epochs[1]), Millis(1000))
        .expect("registers");
    c.heartbeat(b(2), before, Millis(1000)).expect("served");
    c.fence(b(2));
    c.register_broker(b(2), 22, Some(epochs[1]), Millis(1000))
        .expect("registers");
    assert!(!reg(&c).elr.contains(&b(2)) && !reg(&c).isr.contains(&b(2)));
}

#[test]
fn registration_waits_for_the_previous_incarnation_to_be_fenced() {
    let (mut c, epochs) = cluster(2, false);
    assert_eq!(
        c.register_broker(b(2), 99, None, Millis(1)),
        Err(ControllerError::StillRegistered)
    );
    assert_eq!(
        c.register_broker(b(2), 2, None, Millis(1)),
        Ok(epochs[1]),
        "a retry"
    );
    c.tick(Millis(1000));
    let e = c
        .register_broker(b(2), 99, None, Millis(1000))
        .expect("fenced now");
    assert!(e > epochs[2], "a new epoch, unique over the cluster");
    assert_eq!(
        c.heartbeat(b(2), epochs[1], Millis(1000)),
        Err(ControllerError::StaleBrokerEpoch)
    );
}

#[test]
fn session_timeout_fences_and_moves_leadership() {
    let (mut c, epochs) = cluster(2, false);
    for id in [2u32, 3] {
        c.heartbeat(b(id), epochs[id as usize - 1], Millis(150))
            .expect("alive");
    }
    c.tick(Millis(150));
    assert_eq!(reg(&c).leader, Some(b(2)), "broker 1 missed its heartbeats");
    assert!(c.broker(b(1)).is_some_and(|r| r.fenced));
}

#[test]
fn preferred_leader_election_returns_leadership_to_the_first_in_sync_replica() {
    let (mut c, epochs) = cluster(2, false);
    assert!(!c.elect_preferred_leader(P), "already the leader");
    c.fence(b(1));
    assert_eq!(reg(&c).leader, Some(b(2)));
    c.heartbeat(b(1), epochs[0], Millis(1)).expect("back");
    assert!(!c.elect_preferred_leader(P), "back, but not in the ISR yet");
    let expand = request(&c, &epochs, &[(1, true), (2, true), (3, false)]);
    c.alter_partition(&expand).result.expect("caught up");
    let before = reg(&c).leader_epoch;
    assert!(c.elect_preferred_leader(P));
    assert_eq!(reg(&c).leader, Some(b(1)));
    assert_eq!(reg(&c).leader_epoch, before.next());
    assert_eq!(reg(&c).isr, set(&[1, 2, 3]));
}

#[test]
fn controlled_shutdown_moves_leadership_at_once() {
    let (mut c, epochs) = cluster(2, false);
    c.controlled_shutdown(b(1), epochs[0])
        .expect("current epoch");
    assert_eq!(reg(&c).leader, Some(b(2)));
    assert_eq!(
        c.heartbeat(b(1), epochs[0], Millis(1)),
        Ok(true),
        "stays fenced"
    );
}

#[test]
fn alter_partition_is_a_compare_and_set_on_the_partition_epoch() {
    let (mut c, epochs) = cluster(2, false);
    let shrink = request(&c, &epochs, &[(1, true), (2, false)]);
    let answer = c.alter_partition(&shrink);
    let state = answer.result.expect("accepted");
    assert_eq!(state.isr, set(&[1, 2]));
    assert_eq!(state.partition_epoch, PartitionEpoch(1));
    assert_eq!(
        state.leader_epoch,
        LeaderEpoch(0),
        "an ISR change keeps the leader epoch"
    );
    // The same request again: its partition epoch is stale now.
    assert_eq!(
        c.alter_partition(&shrink).result,
        Err(AlterPartitionError::InvalidUpdateVersion)
    );
}

#[test]
fn alter_partition_refuses_stale_leaders_and_ineligible_members() {
    let (mut c, epochs) = cluster(2, false);
    c.fence(b(3));
    let good = request(&c, &epochs, &[(1, true), (2, false), (3, true)]);
    assert_eq!(
        c.alter_partition(&good).result,
        Err(AlterPartitionError::IneligibleReplica),
        "broker 3 is fenced"
    );
    c.heartbeat(b(3), epochs[2], Millis(1)).expect("unfenced");
    let mut stale_member = request(&c, &epochs, &[(1, true), (2, false), (3, true)]);
    stale_member.new_isr[2].broker_epoch = Some(BrokerEpoch(999));
    assert_eq!(
        c.alter_partition(&stale_member).result,
        Err(AlterPartitionError::IneligibleReplica),
        "KIP-903: an added member's broker epoch must be current"
    );
    let mut no_epoch = request(&c, &epochs, &[(1, true), (2, false), (3, false)]);
    no_epoch.new_isr[2].broker_epoch = None;
    assert_eq!(
        c.alter_partition(&no_epoch).result,
        Err(AlterPartitionError::InvalidRequest),
        "an added member must carry its epoch"
    );
    let mut stale_leader = request(&c, &epochs, &[(1, true), (2, false), (3, true)]);
    stale_leader.leader_broker_epoch = BrokerEpoch(0);
    assert_eq!(
        c.alter_partition(&stale_leader).result,
        Err(AlterPartitionError::FencedLeaderEpoch)
    );
    let mut not_leader = request(&c, &epochs, &[(1, true), (2, false), (3, true)]);
    not_leader.leader = b(2);
    not_leader.leader_broker_epoch = epochs[1];
    assert_eq!(
        c.alter_partition(&not_leader).result,
        Err(AlterPartitionError::FencedLeaderEpoch)
    );
    let without_leader = request(&c, &epochs, &[(2, false)]);
    assert_eq!(
        c.alter_partition(&without_leader).result,
        Err(AlterPartitionError::InvalidRequest)
    );
    let ok = request(&c, &epochs, &[(1, true), (2, false), (3, true)]);
    assert!(c.alter_partition(&ok).result.is_ok());
}

#[test]
fn expansion_to_min_isr_empties_the_elr() {
    let (mut c, epochs) = cluster(2, false);
    c.fence(b(2));
    c.fence(b(3));
    assert_eq!(reg(&c).elr, set(&[3]));
    c.heartbeat(b(2), epochs[1], Millis(1)).expect("back");
    let expand = request(&c, &epochs, &[(1, true), (2, true)]);
    let state = c.alter_partition(&expand).result.expect("accepted");
    assert_eq!(state.isr, set(&[1, 2]));
    assert!(
        reg(&c).elr.is_empty(),
        "the high watermark may advance again"
    );
}

#[test]
fn unclean_election_only_with_the_topic_flag() {
    for unclean in [false, true] {
        let (mut c, epochs) = cluster(1, unclean);
        // ISR shrinks to the leader (above MinISR=1, so no ELR).
        let shrink = request(&c, &epochs, &[(1, true)]);
        c.alter_partition(&shrink).result.expect("accepted");
        c.fence(b(1));
        let r = reg(&c);
        if unclean {
            assert_eq!(
                r.leader,
                Some(b(2)),
                "an out-of-sync replica, elected uncleanly"
            );
            assert_eq!(r.isr, set(&[2]));
            assert!(r.elr.is_empty());
            assert_eq!(c.unclean_elections(), 1);
        } else {
            assert_eq!(r.leader, None, "no clean candidate: wait for broker 1");
            assert_eq!(r.elr, set(&[1]));
            assert_eq!(c.unclean_elections(), 0);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Fence(u32),
    Heartbeat(u32),
    Register(u32, bool),
    Shrink(u32),
    Expand(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..=3).prop_map(Op::Fence),
        (1u32..=3).prop_map(Op::Heartbeat),
        ((1u32..=3), any::<bool>()).prop_map(|(b, clean)| Op::Register(b, clean)),
        (1u32..=3).prop_map(Op::Shrink),
        (1u32..=3).prop_map(Op::Expand),
    ]
}

#[test]
fn a_reassignment_adds_first_then_drops_once_the_target_is_in_sync() {
    // A fourth broker takes broker 1's replica, broker 1 leading.
    let (mut c, mut epochs) = cluster(2, false);
    let e4 = c
        .register_broker(b(4), 4, None, Millis(0))
        .expect("registers");
    assert_eq!(c.heartbeat(b(4), e4, Millis(0)), Ok(false));
    epochs.push(e4);
    let target = [b(2), b(3), b(4)];
    let view = Brokers(&c.brokers);
    let mut r = reg(&c).clone();
    assert_eq!(r.leader, Some(b(1)));
    // Refused: an unknown broker, duplicates, a target below MinISR.
    assert_eq!(
        begin_reassignment(&mut r.clone(), &[b(2), b(9)], &view),
        Err(ControllerError::UnknownBroker)
    );
    assert_eq!(
        begin_reassignment(&mut r.clone(), &[b(2), b(2)], &view),
        Err(ControllerError::InvalidPartition)
    );
    assert_eq!(
        begin_reassignment(&mut r.clone(), &[b(4)], &view),
        Err(ControllerError::InvalidPartition)
    );
    let before = r.clone();
    begin_reassignment(&mut r, &target, &view).expect("begins");
    assert_eq!(r.replicas, vec![b(2), b(3), b(4), b(1)]);
    assert_eq!((r.leader, &r.isr), (before.leader, &before.isr));
    assert_eq!(r.leader_epoch, before.leader_epoch);
    assert!(r.partition_epoch > before.partition_epoch);
    // Not complete while broker 4 is out of the ISR.
    assert!(!complete_reassignment(&mut r, &target, &view));
    // The leader adds broker 4 (its AlterPartition); then it completes.
    c.partitions.insert(P, r);
    let answer = c.alter_partition(&request(
        &c,
        &epochs,
        &[(1, true), (2, false), (3, false), (4, true)],
    ));
    assert!(answer.result.is_ok(), "{answer:?}");
    let view = Brokers(&c.brokers);
    let mut r = reg(&c).clone();
    let joined = r.clone();
    assert!(complete_reassignment(&mut r, &target, &view));
    assert_eq!(r.replicas, target.to_vec());
    assert_eq!(r.isr, set(&[2, 3, 4]));
    assert_eq!(r.leader, Some(b(2)), "the dropped leader hands over");
    assert!(r.leader_epoch > joined.leader_epoch);
    assert!(r.partition_epoch > joined.partition_epoch);
    // Once complete, nothing more happens.
    let done = r.clone();
    assert!(!complete_reassignment(&mut r, &target, &view));
    assert_eq!(r, done);
}

proptest! {
    /// `ValidControllerIsrAndElr` and `ValidControllerState` after any
    /// sequence of fencing, unfencing, restarts and ISR changes; epochs
    /// only grow.
    #[test]
    fn registration_invariants_hold(min_isr in 1usize..=3, unclean in any::<bool>(), ops in proptest::collection::vec(op(), 0..40)) {
        let (mut c, mut epochs) = cluster(min_isr, unclean);
        let mut incarnation = 100;
        let (mut leader_epoch, mut partition_epoch) = (LeaderEpoch(0), PartitionEpoch(0));
        for op in ops {
            match op {
                Op::Fence(id) => c.fence(b(id)),
                Op::Heartbeat(id) => { let _ = c.heartbeat(b(id), epochs[id as usize - 1], Millis(0)); }
                Op::Register(id, clean) => {
                    incarnation += 1;
                    let previous = clean.then_some(epochs[id as usize - 1]);
                    if let Ok(e) = c.register_broker(b(id), incarnation, previous, Millis(0)) {
                        epochs[id as usize - 1] = e;
                    }
                }
                Op::Shrink(id) | Op::Expand(id) => {
                    let r = reg(&c).clone();
                    let Some(leader) = r.leader else { continue };
                    let mut isr: BTreeSet<BrokerId> = r.isr.clone();
                    if matches!(op, Op::Shrink(_)) { isr.remove(&b(id)); } else { isr.insert(b(id)); }
                    isr.insert(leader);
                    let req = AlterPartitionRequest {
                        partition: P,
                        leader,
                        leader_broker_epoch: epochs[leader.0 as usize - 1],
                        leader_epoch: r.leader_epoch,
                        partition_epoch: r.partition_epoch,
                        new_isr: isr.iter().map(|m| IsrMember {
                            broker: *m,
                            broker_epoch: (!r.isr.contains(m) || *m == leader).then(|| epochs[m.0 as usize - 1]),
                        }).collect(),
                    };
                    let _ = c.alter_partition(&req);
                }
            }
            let r = reg(&c);
            prop_assert!(r.leader.is_none_or(|l| r.isr.contains(&l)));
            prop_assert!(r.isr.is_disjoint(&r.elr));
            prop_assert!(r.isr.len() < r.min_insync_replicas || r.elr.is_empty());
            for m in &r.isr {
                prop_assert!(c.broker(*m).is_some_and(|x| !x.fenced), "a fenced broker in the ISR");
            }
            prop_assert!(r.leader_epoch >= leader_epoch && r.partition_epoch >= partition_epoch);
            leader_epoch = r.leader_epoch;
            partition_epoch = r.partition_epoch;
        }
    }
}
