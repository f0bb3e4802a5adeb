#![allow(clippy::unwrap_used)]

use super::*;

const SESSION: Duration = Duration::from_secs(10);

fn six(topic: &str) -> u32 {
    if topic == "orders" {
        6
    } else {
        0
    }
}

/// Joins `n` new members and has every one rejoin until the group is
/// stable; returns their ids.
fn form(g: &mut Group, n: usize, now: Instant) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(g.join(None, &["orders"], SESSION, now, &six).unwrap());
    }
    rejoin_all(g, &ids, now);
    ids
}

fn rejoin_all(g: &mut Group, ids: &[String], now: Instant) {
    for id in ids {
        if g.members.contains_key(id) && !g.members[id].rejoined {
            g.join(Some(id), &["orders"], SESSION, now, &six).unwrap();
        }
    }
    assert_eq!(g.phase, Phase::Stable);
}

fn owned(g: &Group, id: &str) -> Vec<u32> {
    g.join_answer(id)
        .unwrap()
        .unwrap()
        .partitions
        .iter()
        .map(|(_, p)| *p)
        .collect()
}

#[test]
fn three_members_split_six_partitions_into_ranges() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 3, now);
    // The first join formed generation 1 alone; the next two joined one
    // rebalance, which formed generation 2 once the first member rejoined.
    assert_eq!(g.generation, 2);
    let all: Vec<Vec<u32>> = ids.iter().map(|id| owned(&g, id)).collect();
    assert_eq!(all, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
}

#[test]
fn a_fourth_member_starts_a_rebalance_that_spreads_the_load() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let mut ids = form(&mut g, 3, now);
    let generation = g.generation;
    let d = g.join(None, &["orders"], SESSION, now, &six).unwrap();
    assert!(matches!(g.phase, Phase::Rebalancing { .. }));
    assert_eq!(g.join_answer(&d).unwrap(), None, "waits for the others");
    // The others learn it from their heartbeat, and may still commit.
    assert_eq!(
        g.heartbeat(&ids[0], generation, now),
        Err(GroupError::RebalanceInProgress)
    );
    let tp = ("orders".to_string(), 0);
    assert_eq!(g.check_commit(&ids[0], generation, &[tp], now), Ok(()));
    ids.push(d);
    rejoin_all(&mut g, &ids, now);
    assert_eq!(g.generation, generation + 1);
    let sizes: Vec<usize> = ids.iter().map(|id| owned(&g, id).len()).collect();
    assert_eq!(sizes, vec![2, 2, 1, 1]);
}

#[test]
fn an_expired_member_loses_its_partitions_after_the_session_timeout() {
    let t0 = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 3, t0);
    let generation = g.generation;
    // Two keep heartbeating; the third is silent (killed).
    let t1 = t0 + SESSION / 2;
    let t2 = t0 + SESSION + Duration::from_millis(1);
    for t in [t1, t2] {
        g.heartbeat(&ids[0], generation, t).unwrap();
        g.heartbeat(&ids[1], generation, t).unwrap();
        g.tick(t, &six);
    }
    assert!(!g.members.contains_key(&ids[2]));
    assert!(matches!(g.phase, Phase::Rebalancing { .. }));
    rejoin_all(&mut g, &ids[..2], t2);
    assert_eq!(owned(&g, &ids[0]), vec![0, 1, 2]);
    assert_eq!(owned(&g, &ids[1]), vec![3, 4, 5]);
    // The expired member's late commit is refused.
    let tp = ("orders".to_string(), 4);
    assert_eq!(
        g.check_commit(&ids[2], generation, &[tp], t2),
        Err(GroupError::UnknownMember)
    );
}

#[test]
fn a_stale_generation_or_a_foreign_partition_cannot_commit() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 2, now);
    let old = g.generation;
    g.join(None, &["orders"], SESSION, now, &six).unwrap();
    rejoin_all(&mut g, &ids, now);
    let mine = ("orders".to_string(), owned(&g, &ids[0])[0]);
    assert_eq!(
        g.check_commit(&ids[0], old, std::slice::from_ref(&mine), now),
        Err(GroupError::IllegalGeneration {
            given: old,
            current: g.generation
        })
    );
    assert_eq!(
        g.check_commit(&ids[0], g.generation, std::slice::from_ref(&mine), now),
        Ok(())
    );
    let theirs = ("orders".to_string(), owned(&g, &ids[1])[0]);
    assert_eq!(
        g.check_commit(&ids[0], g.generation, std::slice::from_ref(&theirs), now),
        Err(GroupError::NotAssigned(theirs))
    );
}

#[test]
fn rebalance_deadline_drops_members_that_never_rejoin() {
    let t0 = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 2, t0);
    let c = g.join(None, &["orders"], SESSION, t0, &six).unwrap();
    // Only the newcomer and ids[0] rejoin; ids[1] heartbeats (so its
    // session stays alive) but never rejoins.
    g.join(Some(&ids[0]), &["orders"], SESSION, t0, &six)
        .unwrap();
    let t1 = t0 + SESSION + Duration::from_millis(1);
    let _ = g.heartbeat(&ids[1], 0, t1 - Duration::from_millis(2));
    assert!(g.tick(t1, &six));
    assert_eq!(g.phase, Phase::Stable);
    assert!(!g.members.contains_key(&ids[1]));
    assert_eq!(owned(&g, &ids[0]).len() + owned(&g, &c).len(), 6);
}

#[test]
fn leaving_moves_partitions_at_once_and_the_last_leave_empties_the_group() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 2, now);
    g.leave(&ids[1], now, &six).unwrap();
    rejoin_all(&mut g, &ids[..1], now);
    assert_eq!(owned(&g, &ids[0]), vec![0, 1, 2, 3, 4, 5]);
    let generation = g.generation;
    g.leave(&ids[0], now, &six).unwrap();
    assert_eq!(g.phase, Phase::Empty);
    assert!(
        g.generation > generation,
        "an emptied group fences old commits"
    );
    assert_eq!(g.leave(&ids[0], now, &six), Err(GroupError::UnknownMember));
}

#[test]
fn a_new_partition_count_starts_a_rebalance() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 2, now);
    let eight = |t: &str| if t == "orders" { 8 } else { 0 };
    assert!(g.tick(now, &eight));
    assert!(matches!(g.phase, Phase::Rebalancing { .. }));
    for id in &ids {
        g.join(Some(id), &["orders"], SESSION, now, &eight).unwrap();
    }
    assert_eq!(owned(&g, &ids[0]).len() + owned(&g, &ids[1]).len(), 8);
}

#[test]
fn range_assignment_covers_the_lecture_scenarios() {
    let now = Instant::now();
    let member = |id: &str, topics: &[&str]| Member {
        id: id.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        session_timeout: SESSION,
        rebalance_timeout: SESSION,
        protocols: Vec::new(),
        client: (String::new(), String::new()),
        synced: false,
        sync: None,
        last_seen: now,
        rejoined: true,
        answer: None,
    };
    let counts: BTreeMap<String, u32> = [("a".to_string(), 4), ("b".to_string(), 2)].into();
    // Equal counts: one partition each.
    let m: BTreeMap<String, Member> = (0..4)
        .map(|i| (format!("m{i}"), member(&format!("m{i}"), &["a"])))
        .collect();
    let a = range_assign(&m, &counts);
    assert!(a.values().all(|v| v.len() == 1));
    // More members than partitions: some get none, none is shared.
    let m: BTreeMap<String, Member> = (0..3)
        .map(|i| (format!("m{i}"), member(&format!("m{i}"), &["b"])))
        .collect();
    let a = range_assign(&m, &counts);
    assert_eq!(a.values().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 0]);
    // Two topics, different subscriptions: each topic split among its own
    // subscribers; every partition owned exactly once.
    let m: BTreeMap<String, Member> = [member("x", &["a", "b"]), member("y", &["a"])]
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    let a = range_assign(&m, &counts);
    let mut all: Vec<TopicPartition> = a.values().flatten().cloned().collect();
    all.sort();
    assert_eq!(all.len(), 6);
    all.dedup();
    assert_eq!(all.len(), 6);
    assert_eq!(a["x"].len(), 2 + 2);
    assert_eq!(a["y"].len(), 2);
}

/// Regression: a generation formed, but before the coordinator answered
/// the members' pending joins a new member joined and started the next
/// rebalance. The answers were computed when each join task ran, found the
/// group rebalancing and kept waiting; the members, blocked in their join,
/// could neither rejoin nor heartbeat, and the deadline removed them all.
#[test]
fn a_formed_generation_answers_its_joins_even_if_the_next_rebalance_started() {
    let t0 = Instant::now();
    let mut g = Group::new("g");
    let ids = form(&mut g, 2, t0);
    let c = g.join(None, &["orders"], SESSION, t0, &six).unwrap();
    for id in &ids {
        g.join(Some(id), &["orders"], SESSION, t0, &six).unwrap();
    }
    assert_eq!(g.phase, Phase::Stable);
    let formed = g.generation;
    // A fourth joins before any of the three joins was answered.
    let d = g.join(None, &["orders"], SESSION, t0, &six).unwrap();
    assert!(matches!(g.phase, Phase::Rebalancing { .. }));
    let mut all = ids.clone();
    all.push(c);
    for id in &all {
        let a = g
            .join_answer(id)
            .unwrap()
            .expect("the formed generation's answer");
        assert_eq!(a.generation, formed);
        assert_eq!(a.partitions.len(), 2);
        assert_eq!(a.members, 3);
    }
    assert_eq!(g.join_answer(&d).unwrap(), None, "waits for the others");
    // Answered, they learn of the rebalance from their heartbeat and rejoin:
    // nobody is dropped.
    let t1 = t0 + SESSION / 3;
    for id in &all {
        assert_eq!(
            g.heartbeat(id, formed, t1),
            Err(GroupError::RebalanceInProgress)
        );
        g.join(Some(id), &["orders"], SESSION, t1, &six).unwrap();
    }
    assert_eq!(g.phase, Phase::Stable);
    assert_eq!(g.members.len(), 4);
    all.push(d);
    let sizes: Vec<usize> = all.iter().map(|id| owned(&g, id).len()).collect();
    assert_eq!(sizes, vec![2, 2, 1, 1]);
}

// The classic (Kafka) protocol: the leader assigns, bytes pass through.

fn classic(protocols: &[&str]) -> ClassicJoin {
    ClassicJoin {
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), format!("meta-{p}").into_bytes()))
            .collect(),
        session_timeout: SESSION,
        rebalance_timeout: SESSION,
        client: ("client".into(), String::new()),
    }
}

/// Joins `n` classic members together (each rejoining until the
/// generation forms); returns their ids.
fn form_classic(g: &mut Group, n: usize, now: Instant) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = g
            .join_classic(None, classic(&["range", "roundrobin"]), now, &six)
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        if !g.members[id].rejoined {
            g.join_classic(Some(id), classic(&["range", "roundrobin"]), now, &six)
                .unwrap();
        }
    }
    ids
}

#[test]
fn a_classic_generation_waits_for_the_leaders_sync_and_passes_its_bytes_through() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form_classic(&mut g, 3, now);
    assert!(matches!(g.phase, Phase::AwaitingSync { .. }));
    let leader = g.leader.clone().unwrap();
    let answers: Vec<JoinAnswer> = ids
        .iter()
        .map(|id| g.join_answer(id).unwrap().unwrap())
        .collect();
    for (id, a) in ids.iter().zip(&answers) {
        assert_eq!(a.leader, leader);
        assert_eq!(a.protocol.as_deref(), Some("range"));
        assert!(a.partitions.is_empty(), "the coordinator assigns nothing");
        // Only the leader learns every member's metadata.
        let expect = if *id == leader { 3 } else { 0 };
        assert_eq!(a.metadata.len(), expect);
    }
    let generation = g.generation;
    // A follower's sync waits for the leader's; heartbeats are answered.
    let follower = ids.iter().find(|id| **id != leader).unwrap();
    g.sync(follower, generation, &[], now).unwrap();
    assert_eq!(g.sync_answer(follower, generation), Ok(None));
    assert_eq!(g.heartbeat(follower, generation, now), Ok(()));
    let assignments: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), format!("for-{id}").into_bytes()))
        .collect();
    g.sync(&leader, generation, &assignments, now).unwrap();
    assert_eq!(g.phase, Phase::Stable);
    for id in &ids {
        let bytes = g.sync_answer(id, generation).unwrap().unwrap();
        assert_eq!(bytes, format!("for-{id}").into_bytes());
    }
}

#[test]
fn the_protocol_chosen_is_one_every_member_supports() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let a = g
        .join_classic(None, classic(&["cooperative-sticky", "range"]), now, &six)
        .unwrap();
    let b = g
        .join_classic(None, classic(&["roundrobin", "range"]), now, &six)
        .unwrap();
    g.join_classic(
        Some(&a),
        classic(&["cooperative-sticky", "range"]),
        now,
        &six,
    )
    .unwrap();
    assert_eq!(g.protocol.as_deref(), Some("range"));
    assert!(g.join_answer(&b).unwrap().is_some());
    // One that shares none is refused, as is a native member.
    assert_eq!(
        g.join_classic(None, classic(&["sticky"]), now, &six),
        Err(GroupError::InconsistentProtocol)
    );
    assert_eq!(
        g.join(None, &["orders"], SESSION, now, &six),
        Err(GroupError::InconsistentProtocol)
    );
}

#[test]
fn a_leader_that_never_syncs_is_removed_at_the_rebalance_timeout() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form_classic(&mut g, 2, now);
    let generation = g.generation;
    let leader = g.leader.clone().unwrap();
    let follower = ids.iter().find(|id| **id != leader).unwrap().clone();
    g.sync(&follower, generation, &[], now).unwrap();
    assert!(g.tick(now + SESSION + Duration::from_millis(1), &six));
    assert!(!g.members.contains_key(&leader));
    assert_eq!(
        g.sync_answer(&follower, generation),
        Err(GroupError::RebalanceInProgress)
    );
}

#[test]
fn a_fenced_member_gets_rebalance_illegal_generation_and_unknown_member() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let ids = form_classic(&mut g, 1, now);
    let generation = g.generation;
    g.sync(&ids[0], generation, &[(ids[0].clone(), vec![1])], now)
        .unwrap();
    // A second member starts a rebalance: the first must rejoin.
    let b = g
        .join_classic(None, classic(&["range"]), now, &six)
        .unwrap();
    assert_eq!(
        g.heartbeat(&ids[0], generation, now),
        Err(GroupError::RebalanceInProgress)
    );
    // Commits of the generation ending are still accepted meanwhile.
    assert_eq!(g.check_classic_commit(&ids[0], generation, now), Ok(()));
    g.join_classic(Some(&ids[0]), classic(&["range"]), now, &six)
        .unwrap();
    assert_eq!(
        g.check_classic_commit(&ids[0], generation, now),
        Err(GroupError::RebalanceInProgress),
        "not while the leader computes the assignment"
    );
    assert!(matches!(
        g.sync(&b, generation, &[], now),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert_eq!(
        g.heartbeat("nobody", g.generation, now),
        Err(GroupError::UnknownMember)
    );
}

#[test]
fn simple_commits_are_accepted_only_while_the_group_has_no_members() {
    let now = Instant::now();
    let mut g = Group::new("g");
    assert_eq!(g.check_classic_commit("", -1, now), Ok(()));
    form_classic(&mut g, 1, now);
    assert_eq!(
        g.check_classic_commit("", -1, now),
        Err(GroupError::UnknownMember)
    );
}

#[test]
fn a_member_id_handed_out_first_is_accepted_then_lapses() {
    let now = Instant::now();
    let mut g = Group::new("g");
    let id = g.pending_member(SESSION, now);
    assert_eq!(
        g.join_classic(Some(&id), classic(&["range"]), now, &six),
        Ok(id.clone())
    );
    let late = g.pending_member(SESSION, now);
    g.tick(now + SESSION + Duration::from_millis(1), &six);
    assert_eq!(
        g.join_classic(Some(&late), classic(&["range"]), now, &six),
        Err(GroupError::UnknownMember)
    );
}

#[test]
fn the_initial_delay_lets_members_started_together_share_the_first_generation() {
    let now = Instant::now();
    let delay = Duration::from_secs(3);
    let mut g = Group::new("g").with_initial_delay(delay);
    let a = g.join(None, &["orders"], SESSION, now, &six).unwrap();
    assert_eq!(g.join_answer(&a).unwrap(), None, "the first join waits");
    let later = now + Duration::from_secs(2);
    let b = g.join(None, &["orders"], SESSION, later, &six).unwrap();
    let c = g.join(None, &["orders"], SESSION, later, &six).unwrap();
    // Extended by the new members: not done at the first delay's end.
    g.tick(now + delay, &six);
    assert_eq!(g.join_answer(&a).unwrap(), None);
    g.tick(later + delay, &six);
    assert_eq!(g.generation, 1);
    let sizes: Vec<usize> = [&a, &b, &c].iter().map(|id| owned(&g, id).len()).collect();
    assert_eq!(sizes, vec![2, 2, 2]);
}

#[test]
fn the_initial_delay_never_outlasts_the_rebalance_timeout() {
    let now = Instant::now();
    let mut g = Group::new("g").with_initial_delay(Duration::from_secs(60));
    let a = g.join(None, &["orders"], SESSION, now, &six).unwrap();
    g.tick(now + SESSION, &six);
    assert_eq!(g.join_answer(&a).unwrap().unwrap().generation, 1);
}
