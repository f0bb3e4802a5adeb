//! The replica's pieces one at a time: the high watermark, acks, the
//! diverging epoch and truncation, fetch-after-fsync, ISR shrink and
//! expansion with the Maximal ISR, readers and stale metadata.

use proptest::prelude::*;

use super::*;
use crate::epoch_cache::EpochEntry;
use crate::ids::PartitionEpoch;
use crate::message::AlterPartitionError;

const P: PartitionId = PartitionId(3);

fn state(leader: u32, leader_epoch: u32, partition_epoch: u32, isr: &[u32]) -> PartitionState {
    PartitionState {
        partition: P,
        replicas: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
        leader: Some(BrokerId(leader)),
        leader_epoch: LeaderEpoch(leader_epoch),
        partition_epoch: PartitionEpoch(partition_epoch),
        isr: isr.iter().map(|b| BrokerId(*b)).collect(),
    }
}

fn replica(broker: u32, log_end: u64, epochs: &[(u32, u64)]) -> Replica {
    let mut config = ReplicaConfig::new(BrokerId(broker), P, 2);
    config.replica_lag_time_max_ms = 100;
    let recovered = Recovered {
        log_end: Offset(log_end),
        epochs: epochs
            .iter()
            .map(|(e, o)| EpochEntry {
                epoch: LeaderEpoch(*e),
                start_offset: Offset(*o),
            })
            .collect(),
    };
    Replica::new(config, BrokerEpoch(u64::from(broker) * 10), recovered).expect("valid")
}

fn handle(r: &mut Replica, now: u64, event: Event) -> Vec<Action> {
    let mut out = Vec::new();
    r.handle(Millis(now), event, &mut out);
    out
}

fn fetch(from: u32, leader_epoch: u32, offset: u64, last_epoch: Option<u32>) -> Event {
    Event::Fetch(FetchRequest {
        partition: P,
        replica: BrokerId(from),
        replica_epoch: BrokerEpoch(u64::from(from) * 10),
        leader_epoch: LeaderEpoch(leader_epoch),
        fetch_offset: Offset(offset),
        last_fetched_epoch: last_epoch.map(LeaderEpoch),
        fetch_id: 1,
    })
}

fn produce(id: u64, records: u32, acks: Acks) -> Event {
    Event::Produce(ProduceRequest {
        id: ProduceId(id),
        records,
        acks,
    })
}

fn answers(out: &[Action]) -> Vec<(ProduceId, Result<Offset, ProduceError>)> {
    out.iter()
        .filter_map(|a| match a {
            Action::ProduceAnswer { produce, result } => Some((*produce, *result)),
            _ => None,
        })
        .collect()
}

fn alter(out: &[Action]) -> Option<&AlterPartitionRequest> {
    out.iter().find_map(|a| match a {
        Action::SendAlterPartition(r) => Some(r),
        _ => None,
    })
}

proptest! {
    #[test]
    fn high_watermark_is_the_smallest_durable_offset_and_never_goes_back(
        current in 0u64..50,
        leader in 0u64..100,
        others in proptest::collection::vec(proptest::option::of(0u64..100), 0..4),
        isr_len in 1usize..4,
        min_isr in 1usize..4,
    ) {
        let hw = next_high_watermark(
            Offset(current),
            Offset(leader),
            isr_len,
            min_isr,
            others.iter().map(|o| o.map(Offset)),
        );
        prop_assert!(hw >= Offset(current));
        if isr_len < min_isr || others.iter().any(Option::is_none) {
            prop_assert_eq!(hw, Offset(current));
        } else {
            let smallest = others.iter().flatten().copied().chain([leader]).min().unwrap_or(leader);
            prop_assert_eq!(hw, Offset(smallest.max(current)));
        }
    }
}

#[test]
fn acks_all_waits_for_every_isr_member_to_be_durable_and_acks_one_for_the_leader() {
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1, 2, 3])));
    let out = handle(&mut l, 1, produce(1, 2, Acks::All));
    assert!(out.contains(&Action::AppendAsLeader {
        produce: ProduceId(1),
        base_offset: Offset(0),
        last_offset: Offset(1),
        epoch: LeaderEpoch(0),
    }));
    assert!(out.contains(&Action::Sync { up_to: Offset(2) }));
    handle(&mut l, 1, produce(2, 1, Acks::Leader));
    let out = handle(&mut l, 2, Event::Durable { end: Offset(3) });
    assert_eq!(
        answers(&out),
        vec![(ProduceId(2), Ok(Offset(2)))],
        "acks=1: leader-durable"
    );
    let out = handle(&mut l, 3, fetch(2, 0, 2, Some(0)));
    assert!(answers(&out).is_empty(), "broker 3 has not fetched yet");
    assert_eq!(l.high_watermark(), Offset(0));
    let out = handle(&mut l, 4, fetch(3, 0, 3, Some(0)));
    assert_eq!(
        l.high_watermark(),
        Offset(2),
        "the smallest fetch offset of the ISR"
    );
    assert_eq!(answers(&out), vec![(ProduceId(1), Ok(Offset(0)))]);
}

#[test]
fn acks_all_is_refused_below_min_insync_replicas() {
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1])));
    let out = handle(&mut l, 1, produce(1, 1, Acks::All));
    assert_eq!(
        answers(&out),
        vec![(ProduceId(1), Err(ProduceError::NotEnoughReplicas))]
    );
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::AppendAsLeader { .. })));
    // acks=1 is still taken, and the high watermark does not move.
    handle(&mut l, 1, produce(2, 1, Acks::Leader));
    let out = handle(&mut l, 2, Event::Durable { end: Offset(1) });
    assert_eq!(answers(&out), vec![(ProduceId(2), Ok(Offset(0)))]);
    assert_eq!(l.high_watermark(), Offset(0));
}

#[test]
fn leader_sends_a_diverging_epoch_and_the_follower_truncates_by_it() {
    // The leader: epoch 0 wrote 0..5, epoch 2 wrote 5..8; it leads epoch 3.
    let mut l = replica(1, 8, &[(0, 0), (2, 5)]);
    handle(&mut l, 0, Event::Metadata(state(1, 3, 4, &[1, 2, 3])));
    // The follower: epoch 0 wrote 0..5, epoch 1 (a deposed leader) 5..7.
    let mut f = replica(2, 7, &[(0, 0), (1, 5)]);
    let out = handle(&mut f, 0, Event::Metadata(state(1, 3, 4, &[1, 2, 3])));
    let request = out
        .iter()
        .find_map(|a| match a {
            Action::SendFetch { request, .. } => Some(request.clone()),
            _ => None,
        })
        .expect("fetches at once");
    assert_eq!(request.fetch_offset, Offset(7));
    assert_eq!(request.last_fetched_epoch, Some(LeaderEpoch(1)));
    let out = handle(&mut l, 1, Event::Fetch(request));
    let Some(Action::ServeFetch {
        response,
        read_from,
        ..
    }) = out.first().cloned()
    else {
        panic!("an answer: {out:?}");
    };
    assert_eq!(read_from, None);
    assert_eq!(
        response.diverging_epoch,
        Some(EpochEnd {
            epoch: LeaderEpoch(0),
            end_offset: Offset(5)
        })
    );
    let out = handle(&mut f, 2, Event::FetchAnswer(response));
    assert!(
        out.contains(&Action::TruncateTo { end: Offset(5) }),
        "{out:?}"
    );
    assert_eq!(f.log_end(), Offset(5));
    assert_eq!(f.epochs().latest_epoch(), Some(LeaderEpoch(0)));
}

#[test]
fn follower_fetches_on_only_once_what_it_appended_is_durable() {
    let mut f = replica(2, 0, &[]);
    let out = handle(&mut f, 0, Event::Metadata(state(1, 0, 0, &[1, 2, 3])));
    assert!(out.iter().any(|a| matches!(a, Action::SendFetch { .. })));
    let response = FetchResponse {
        partition: P,
        leader: BrokerId(1),
        leader_epoch: LeaderEpoch(0),
        fetch_id: 1,
        fetch_offset: Offset(0),
        replica_epoch: BrokerEpoch(20),
        error: None,
        diverging_epoch: None,
        high_watermark: Offset(0),
        batches: vec![BatchMeta {
            base_offset: Offset(0),
            last_offset: Offset(2),
            epoch: LeaderEpoch(0),
        }],
    };
    let out = handle(&mut f, 1, Event::FetchAnswer(response.clone()));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::AppendAsFollower { .. })));
    assert!(out.contains(&Action::Sync { up_to: Offset(3) }));
    assert!(
        !out.iter().any(|a| matches!(a, Action::SendFetch { .. })),
        "not durable yet"
    );
    // A duplicate of the same answer is ignored (its fetch offset is old).
    assert!(handle(&mut f, 1, Event::FetchAnswer(response)).is_empty());
    let out = handle(&mut f, 2, Event::Durable { end: Offset(3) });
    let fetched = out.iter().find_map(|a| match a {
        Action::SendFetch { request, .. } => Some(request.fetch_offset),
        _ => None,
    });
    assert_eq!(fetched, Some(Offset(3)), "fetch offset = durable end");
}

#[test]
fn a_lagging_member_is_proposed_out_but_still_counted_until_the_controller_agrees() {
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1, 2, 3])));
    handle(&mut l, 1, produce(1, 1, Acks::All));
    handle(&mut l, 2, Event::Durable { end: Offset(1) });
    handle(&mut l, 50, fetch(2, 0, 1, Some(0)));
    let out = handle(&mut l, 90, Event::Tick);
    assert!(alter(&out).is_none(), "within the lag time");
    let out = handle(&mut l, 130, Event::Tick);
    let request = alter(&out).expect("broker 3 lags past 100 ms").clone();
    let proposed: Vec<BrokerId> = request.new_isr.iter().map(|m| m.broker).collect();
    assert_eq!(proposed, vec![BrokerId(1), BrokerId(2)]);
    assert_eq!(
        l.maximal_isr().map(BTreeSet::len),
        Some(3),
        "the union while in flight"
    );
    assert_eq!(l.high_watermark(), Offset(0), "broker 3 still counts");
    let accepted = AlterPartitionResponse {
        partition: P,
        request_partition_epoch: PartitionEpoch(0),
        result: Ok(state(1, 0, 1, &[1, 2])),
    };
    let out = handle(&mut l, 131, Event::AlterPartitionAnswer(accepted));
    assert_eq!(l.high_watermark(), Offset(1));
    assert_eq!(answers(&out), vec![(ProduceId(1), Ok(Offset(0)))]);
}

#[test]
fn expansion_needs_the_leader_epoch_start_offset_and_counts_the_new_member_at_once() {
    // Re-elected in epoch 1 with a log of 4 (LESO 4) and a stale HW of 0.
    let mut l = replica(1, 4, &[(0, 0)]);
    handle(&mut l, 0, Event::Metadata(state(1, 1, 1, &[1, 2])));
    let out = handle(&mut l, 1, fetch(3, 1, 2, Some(0)));
    assert!(
        alter(&out).is_none(),
        "broker 3 is past the HW but not the LESO"
    );
    let out = handle(&mut l, 2, fetch(3, 1, 4, Some(0)));
    let request = alter(&out).expect("caught up to the LESO");
    let added = request.new_isr.iter().find(|m| m.broker == BrokerId(3));
    assert_eq!(
        added.and_then(|m| m.broker_epoch),
        Some(BrokerEpoch(30)),
        "KIP-903"
    );
    // Broker 2 catches up: the HW needs broker 3 too (the Maximal ISR).
    handle(&mut l, 3, Event::Durable { end: Offset(4) });
    handle(&mut l, 3, fetch(2, 1, 4, Some(0)));
    assert_eq!(l.high_watermark(), Offset(4));
    handle(&mut l, 4, produce(1, 1, Acks::All));
    handle(&mut l, 5, Event::Durable { end: Offset(5) });
    handle(&mut l, 6, fetch(2, 1, 5, Some(1)));
    assert_eq!(
        l.high_watermark(),
        Offset(4),
        "broker 3, being added, has not fetched offset 4"
    );
    handle(&mut l, 7, fetch(3, 1, 5, Some(1)));
    assert_eq!(l.high_watermark(), Offset(5));
}

#[test]
fn readers_wait_for_a_high_watermark_known_true_and_newer_epochs_fence() {
    let mut l = replica(1, 3, &[(0, 0)]);
    handle(&mut l, 0, Event::Metadata(state(1, 1, 1, &[1, 2])));
    assert_eq!(
        l.reader_view(None),
        Err(ReadError::HighWatermarkNotYetKnown)
    );
    handle(&mut l, 1, fetch(2, 1, 3, Some(0)));
    assert_eq!(
        l.reader_view(Some(LeaderEpoch(1))),
        Ok(ReaderView {
            leader_epoch: LeaderEpoch(1),
            high_watermark: Offset(3)
        })
    );
    assert_eq!(
        l.reader_view(Some(LeaderEpoch(2))),
        Err(ReadError::UnknownLeaderEpoch)
    );
}

#[test]
fn stale_metadata_is_ignored_and_a_new_epoch_deposes() {
    let mut r = replica(1, 0, &[]);
    handle(&mut r, 0, Event::Metadata(state(1, 2, 5, &[1, 2, 3])));
    assert_eq!(r.role(), RoleKind::Leader);
    handle(&mut r, 1, Event::Metadata(state(2, 1, 4, &[1, 2, 3])));
    assert_eq!(r.role(), RoleKind::Leader, "an older partition epoch");
    handle(&mut r, 2, produce(1, 1, Acks::All));
    let out = handle(&mut r, 3, Event::Metadata(state(2, 3, 6, &[2, 3])));
    assert_eq!(r.role(), RoleKind::Follower(BrokerId(2)));
    assert_eq!(
        answers(&out),
        vec![(ProduceId(1), Err(ProduceError::LeadershipLost))]
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::TruncateTo { .. })),
        "never truncates to its high watermark"
    );
}

#[test]
fn fetches_in_the_wrong_epoch_are_refused() {
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 2, 2, &[1, 2, 3])));
    for (epoch, error) in [
        (1, FetchError::FencedLeaderEpoch),
        (3, FetchError::UnknownLeaderEpoch),
    ] {
        let out = handle(&mut l, 1, fetch(2, epoch, 0, None));
        let Some(Action::ServeFetch { response, .. }) = out.first() else {
            panic!("an answer");
        };
        assert_eq!(response.error, Some(error));
    }
    let mut f = replica(2, 0, &[]);
    let out = handle(&mut f, 0, fetch(3, 0, 0, None));
    assert!(matches!(
        out.first(),
        Some(Action::ServeFetch { response, .. }) if response.error == Some(FetchError::NotLeaderOrFollower)
    ));
}

#[test]
fn a_refused_copy_of_an_alter_partition_does_not_roll_the_maximal_isr_back() {
    // Regression (leader-isolation seed 3935 in the first 10,000): the
    // expansion was applied, its answer lost, the retry refused; rolling
    // back let the high watermark pass without the added member, which the
    // controller then elected.
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1, 2])));
    let out = handle(&mut l, 1, fetch(3, 0, 0, None));
    let request = alter(&out).expect("broker 3 caught up").clone();
    let refused = AlterPartitionResponse {
        partition: P,
        request_partition_epoch: request.partition_epoch,
        result: Err(AlterPartitionError::FencedLeaderEpoch),
    };
    handle(&mut l, 2, Event::AlterPartitionAnswer(refused));
    assert!(l.maximal_isr().is_some_and(|m| m.contains(&BrokerId(3))));
    handle(&mut l, 3, produce(1, 1, Acks::All));
    handle(&mut l, 4, Event::Durable { end: Offset(1) });
    handle(&mut l, 5, fetch(2, 0, 1, Some(0)));
    assert_eq!(
        l.high_watermark(),
        Offset(0),
        "broker 3 may be in the controller's ISR"
    );
    // The metadata settles it: the expansion was not applied.
    handle(&mut l, 6, Event::Metadata(state(1, 0, 1, &[1, 2])));
    assert_eq!(l.high_watermark(), Offset(1));
}

#[test]
fn a_fenced_broker_is_never_proposed_and_a_refusal_is_settled_by_the_committed_isr() {
    // Found on real processes: the leader's follower died while caught up;
    // the controller fenced it and took it out of the ISR; the leader,
    // seeing it still caught up, proposed it back, was refused
    // IneligibleReplica again and again, and its high watermark waited for
    // it in the Maximal ISR forever.
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1, 2, 3])));
    handle(&mut l, 1, fetch(2, 0, 0, None));
    handle(&mut l, 1, fetch(3, 0, 0, None));
    // Broker 3 is fenced: out of the ISR, and ineligible.
    handle(&mut l, 2, Event::Ineligible([BrokerId(3)].into()));
    let out = handle(&mut l, 2, Event::Metadata(state(1, 0, 1, &[1, 2])));
    assert!(alter(&out).is_none(), "{out:?}");
    assert!(alter(&handle(&mut l, 3, Event::Tick)).is_none());
    // Without the eligibility (an older image), it is proposed and
    // refused; the next proposal is the committed ISR, which settles it.
    let mut l = replica(1, 0, &[]);
    handle(&mut l, 0, Event::Metadata(state(1, 0, 0, &[1, 2, 3])));
    handle(&mut l, 1, fetch(2, 0, 0, None));
    handle(&mut l, 1, fetch(3, 0, 0, None));
    handle(&mut l, 2, Event::Metadata(state(1, 0, 1, &[1, 2])));
    let out = handle(&mut l, 3, Event::Tick);
    let request = alter(&out).expect("broker 3 looks caught up").clone();
    assert!(request.new_isr.iter().any(|m| m.broker == BrokerId(3)));
    let refused = AlterPartitionResponse {
        partition: P,
        request_partition_epoch: request.partition_epoch,
        result: Err(AlterPartitionError::IneligibleReplica),
    };
    handle(&mut l, 4, Event::AlterPartitionAnswer(refused));
    handle(&mut l, 5, Event::Ineligible([BrokerId(3)].into()));
    handle(&mut l, 6, produce(1, 1, Acks::All));
    handle(&mut l, 7, Event::Durable { end: Offset(1) });
    let out = handle(&mut l, 8, fetch(2, 0, 1, Some(0)));
    assert!(alter(&out).is_none(), "within the refusal's pause");
    assert_eq!(l.high_watermark(), Offset(0), "broker 3 is still counted");
    let out = handle(&mut l, 600, fetch(2, 0, 1, Some(0)));
    let settle = alter(&out).expect("the committed ISR proposed").clone();
    let members: Vec<BrokerId> = settle.new_isr.iter().map(|m| m.broker).collect();
    assert_eq!(members, vec![BrokerId(1), BrokerId(2)]);
    let accepted = AlterPartitionResponse {
        partition: P,
        request_partition_epoch: settle.partition_epoch,
        result: Ok(state(1, 0, 2, &[1, 2])),
    };
    let out = handle(&mut l, 601, Event::AlterPartitionAnswer(accepted));
    assert_eq!(l.high_watermark(), Offset(1));
    assert_eq!(answers(&out), vec![(ProduceId(1), Ok(Offset(0)))]);
}

/// One step of the robustness test: an event of any kind, with values
/// chosen at random, or an answer (random too) to the last fetch sent.
#[derive(Debug, Clone)]
enum Step {
    Metadata(u32, u32, u32, Vec<u32>),
    Fetch(u32, u32, u64, Option<u32>),
    Answer(Option<u8>, Option<(u32, u64)>, u64, Vec<(u64, u32)>),
    Alter(bool, u32, Vec<u32>),
    Produce(u32, bool),
    Durable(u64),
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let ids = proptest::collection::vec(1u32..=4, 0..4);
    prop_oneof![
        (1u32..=4, 0u32..4, 0u32..6, ids.clone())
            .prop_map(|(l, e, p, i)| Step::Metadata(l, e, p, i)),
        (1u32..=4, 0u32..4, 0u64..12, proptest::option::of(0u32..4))
            .prop_map(|(b, e, o, l)| Step::Fetch(b, e, o, l)),
        (
            proptest::option::of(0u8..4),
            proptest::option::of((0u32..4, 0u64..12)),
            0u64..12,
            proptest::collection::vec((1u64..4, 0u32..4), 0..4)
        )
            .prop_map(|(e, d, hw, b)| Step::Answer(e, d, hw, b)),
        (any::<bool>(), 0u32..6, ids).prop_map(|(ok, p, i)| Step::Alter(ok, p, i)),
        (0u32..4, any::<bool>()).prop_map(|(n, all)| Step::Produce(n, all)),
        (0u64..12).prop_map(Step::Durable),
        (0u64..300).prop_map(Step::Tick),
    ]
}

proptest! {
    /// Whatever peers, the controller and the disk say, in any order, the
    /// replica never panics and keeps its own invariants: the high
    /// watermark and durable end within the log, the epoch cache within
    /// it, the high watermark never back on a leader.
    #[test]
    fn random_events_never_panic_or_break_invariants(steps in proptest::collection::vec(step(), 0..60)) {
        let mut r = replica(2, 3, &[(0, 0)]);
        let mut now = 0;
        let mut last_fetch: Option<FetchRequest> = None;
        let mut leader_hw: Option<(LeaderEpoch, Offset)> = None;
        for s in steps {
            now += 1;
            let event = match s {
                Step::Metadata(l, e, p, isr) => Event::Metadata(PartitionState {
                    partition: P,
                    replicas: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
                    leader: Some(BrokerId(l)),
                    leader_epoch: LeaderEpoch(e),
                    partition_epoch: PartitionEpoch(p),
                    isr: isr.into_iter().map(BrokerId).collect(),
                }),
                Step::Fetch(b, e, o, last) => fetch(b, e, o, last),
                Step::Answer(error, diverging, hw, batches) => {
                    let Some(request) = last_fetch.clone() else { continue };
                    let mut next = request.fetch_offset;
                    Event::FetchAnswer(FetchResponse {
                        partition: P,
                        leader: BrokerId(1),
                        leader_epoch: request.leader_epoch,
                        fetch_id: request.fetch_id,
                        fetch_offset: request.fetch_offset,
                        replica_epoch: request.replica_epoch,
                        error: error.map(|e| [FetchError::NotLeaderOrFollower, FetchError::FencedLeaderEpoch, FetchError::UnknownLeaderEpoch, FetchError::UnknownReplica][e as usize]),
                        diverging_epoch: diverging.map(|(e, o)| EpochEnd { epoch: LeaderEpoch(e), end_offset: Offset(o) }),
                        high_watermark: Offset(hw),
                        batches: batches
                            .into_iter()
                            .map(|(n, e)| {
                                let b = BatchMeta { base_offset: next, last_offset: next.plus(n - 1), epoch: LeaderEpoch(e) };
                                next = b.end();
                                b
                            })
                            .collect(),
                    })
                }
                Step::Alter(ok, p, isr) => Event::AlterPartitionAnswer(AlterPartitionResponse {
                    partition: P,
                    request_partition_epoch: r.partition_state().map_or(PartitionEpoch(0), |s| s.partition_epoch),
                    result: if ok {
                        Ok(PartitionState {
                            partition: P,
                            replicas: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
                            leader: Some(BrokerId(2)),
                            leader_epoch: r.leader_epoch().unwrap_or_default(),
                            partition_epoch: PartitionEpoch(p),
                            isr: isr.into_iter().map(BrokerId).collect(),
                        })
                    } else {
                        Err(AlterPartitionError::InvalidUpdateVersion)
                    },
                }),
                Step::Produce(n, all) => produce(now, n, if all { Acks::All } else { Acks::Leader }),
                Step::Durable(end) => Event::Durable { end: Offset(end) },
                Step::Tick(ms) => {
                    now += ms;
                    Event::Tick
                }
            };
            let out = handle(&mut r, now, event);
            for a in &out {
                if let Action::SendFetch { request, .. } = a {
                    last_fetch = Some(request.clone());
                }
            }
            prop_assert!(r.high_watermark() <= r.log_end());
            prop_assert!(r.durable_end() <= r.log_end());
            prop_assert!(r.epochs().entries().last().is_none_or(|e| e.start_offset < r.log_end()));
            if r.role() == RoleKind::Leader {
                let epoch = r.leader_epoch().unwrap_or_default();
                if let Some((e, hw)) = leader_hw {
                    if e == epoch {
                        prop_assert!(r.high_watermark() >= hw, "a leader's high watermark went back");
                    }
                }
                leader_hw = Some((epoch, r.high_watermark()));
            } else {
                leader_hw = None;
            }
        }
    }
}
