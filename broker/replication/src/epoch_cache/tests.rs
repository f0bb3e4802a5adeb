//! The epoch cache against the examples of kafka-tlaplus
//! `description/3_log_divergence.md` §3.3 and against a brute-force model
//! (a log as one epoch per record).

use proptest::prelude::*;

use super::*;

fn cache_of(epochs_per_record: &[u32]) -> EpochCache {
    let mut cache = EpochCache::new();
    for (offset, e) in epochs_per_record.iter().enumerate() {
        cache
            .assign(LeaderEpoch(*e), Offset(offset as u64))
            .expect("epochs increase");
    }
    cache
}

fn end(log: &[u32], epoch: u32, leader: Option<u32>) -> EpochEnd {
    cache_of(log).end_offset_for(
        LeaderEpoch(epoch),
        Offset(log.len() as u64),
        leader.map(LeaderEpoch),
    )
}

/// The leader's check and the follower's truncation, one fetch round.
/// Returns the follower's new length, or `None` when there is no
/// divergence.
fn one_round(leader: &[u32], leader_epoch: u32, follower: &[u32]) -> Option<u64> {
    let last = *follower.last()?;
    let found = end(leader, last, Some(leader_epoch));
    let fetch_offset = follower.len() as u64;
    if found.epoch.0 < last || found.end_offset.0 < fetch_offset {
        Some(truncation_point(&cache_of(follower), Offset(fetch_offset), found).0)
    } else {
        None
    }
}

#[test]
fn lookup_of_latest_or_current_epoch_is_the_log_end() {
    assert_eq!(end(&[1, 1, 2], 2, None).end_offset, Offset(3));
    assert_eq!(end(&[1, 1, 2], 3, Some(3)).end_offset, Offset(3));
    assert_eq!(end(&[], 5, None).end_offset, Offset(0));
}

#[test]
fn lookup_returns_floor_epoch_and_start_of_next() {
    // Fig 1: epochs 1,1,2,2 and the leader in epoch 3.
    let log = [1, 1, 2, 2];
    assert_eq!(
        end(&log, 1, Some(3)),
        EpochEnd {
            epoch: LeaderEpoch(1),
            end_offset: Offset(2)
        }
    );
    // An epoch between two present ones: the floor, ended by the next.
    let log = [1, 1, 3, 3];
    assert_eq!(
        end(&log, 2, Some(4)),
        EpochEnd {
            epoch: LeaderEpoch(1),
            end_offset: Offset(2)
        }
    );
    // No epoch at or below: the epoch asked, ended by the lowest start.
    let log = [2, 2];
    assert_eq!(
        end(&log, 1, Some(3)),
        EpochEnd {
            epoch: LeaderEpoch(1),
            end_offset: Offset(0)
        }
    );
}

#[test]
fn case_c_follower_ahead_in_same_epoch_truncates_to_leader_end() {
    assert_eq!(one_round(&[1, 1], 2, &[1, 1, 1, 1]), Some(2));
}

#[test]
fn case_d_follower_ahead_with_higher_epoch_truncates_to_end_of_common_epoch() {
    assert_eq!(one_round(&[1, 1], 3, &[1, 1, 2, 2]), Some(2));
}

#[test]
fn case_e_forked_logs_truncate_to_fork() {
    assert_eq!(one_round(&[1, 1, 3, 3], 4, &[1, 1, 2, 2]), Some(2));
}

#[test]
fn case_f_fork_inside_an_epoch_truncates_to_follower_end_of_it() {
    assert_eq!(one_round(&[1, 1, 3], 4, &[1, 2, 2]), Some(1));
}

#[test]
fn case_g_no_common_epoch_truncates_everything() {
    assert_eq!(one_round(&[1, 3], 4, &[2, 2]), Some(0));
}

#[test]
fn cases_a_and_b_follower_behind_do_not_truncate() {
    assert_eq!(one_round(&[1, 1, 1], 2, &[1, 1]), None);
    assert_eq!(one_round(&[1, 1, 2], 3, &[1, 1]), None);
}

#[test]
fn truncate_to_drops_entries_at_or_past_the_end() {
    let mut cache = cache_of(&[1, 1, 2, 3]);
    assert!(cache.truncate_to(Offset(3)));
    assert_eq!(cache.latest_epoch(), Some(LeaderEpoch(2)));
    assert!(!cache.truncate_to(Offset(3)));
    assert!(cache.truncate_to(Offset(0)));
    assert_eq!(cache.latest_epoch(), None);
}

#[test]
fn assign_refuses_an_older_epoch_and_a_corrupt_checkpoint() {
    let mut cache = cache_of(&[1, 2]);
    assert!(cache.assign(LeaderEpoch(1), Offset(2)).is_err());
    assert_eq!(cache.assign(LeaderEpoch(2), Offset(2)), Ok(false));
    let bad = [
        EpochEntry {
            epoch: LeaderEpoch(2),
            start_offset: Offset(0),
        },
        EpochEntry {
            epoch: LeaderEpoch(1),
            start_offset: Offset(1),
        },
    ];
    assert!(EpochCache::from_checkpoint(&bad, Offset(5)).is_none());
}

/// Non-decreasing epochs, as one per record.
fn log_strategy(max_epoch: u32) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec((1..=max_epoch, 0usize..4), 0..6).prop_map(|mut runs| {
        runs.sort_by_key(|r| r.0);
        runs.dedup_by_key(|r| r.0);
        runs.into_iter()
            .flat_map(|(e, n)| std::iter::repeat_n(e, n))
            .collect()
    })
}

/// Brute force: the floor epoch and the first offset past it.
fn model_end(log: &[u32], epoch: u32) -> EpochEnd {
    if log.is_empty() || log.last() == Some(&epoch) {
        return EpochEnd {
            epoch: LeaderEpoch(epoch),
            end_offset: Offset(log.len() as u64),
        };
    }
    let first_above = log.iter().position(|e| *e > epoch).unwrap_or(log.len());
    let floor = log.iter().filter(|e| **e <= epoch).max().copied();
    EpochEnd {
        epoch: LeaderEpoch(floor.unwrap_or(epoch)),
        end_offset: Offset(first_above as u64),
    }
}

proptest! {
    #[test]
    fn lookup_matches_brute_force(log in log_strategy(8), epoch in 1u32..10) {
        prop_assert_eq!(end(&log, epoch, None), model_end(&log, epoch));
    }

    #[test]
    fn truncation_equals_cache_of_truncated_log(log in log_strategy(8), cut in 0usize..20) {
        let cut = cut.min(log.len());
        let mut cache = cache_of(&log);
        cache.truncate_to(Offset(cut as u64));
        prop_assert_eq!(cache, cache_of(&log[..cut]));
    }

    /// Two logs forked from a common prefix, each later epoch written by
    /// one of them only (one leader per epoch): repeated rounds of the
    /// diverging-epoch check leave the follower a prefix of the leader,
    /// never shorter than the common prefix.
    #[test]
    fn divergence_rounds_end_in_a_prefix_of_the_leader(
        common in log_strategy(3),
        leader_runs in proptest::collection::vec(0usize..4, 0..3),
        follower_runs in proptest::collection::vec(0usize..4, 0..3),
    ) {
        let base = common.last().copied().unwrap_or(0) + 1;
        let mut leader = common.clone();
        for (i, n) in leader_runs.iter().enumerate() {
            leader.extend(std::iter::repeat_n(base + 2 * i as u32 + 1, *n));
        }
        let mut follower = common.clone();
        for (i, n) in follower_runs.iter().enumerate() {
            follower.extend(std::iter::repeat_n(base + 2 * i as u32, *n));
        }
        let leader_epoch = base + 10;
        let shared = leader.iter().zip(&follower).take_while(|(a, b)| a == b).count();
        for _ in 0..20 {
            match one_round(&leader, leader_epoch, &follower) {
                None => break,
                Some(to) => {
                    prop_assert!(to as usize >= shared.min(follower.len()), "truncated below the common prefix");
                    prop_assert!((to as usize) < follower.len(), "no progress");
                    follower.truncate(to as usize);
                }
            }
        }
        prop_assert!(follower.len() <= leader.len());
        prop_assert_eq!(&leader[..follower.len()], &follower[..]);
    }
}
