//! Consumer groups on the real binary, over raw frames: range assignment,
//! rebalance on join, on silence past the session timeout and on leave,
//! generation-fenced commits, and committed offsets surviving SIGKILL.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use broker_protocol::generated::{
    DescribeGroupResponse, FindCoordinatorResponse, JoinGroupResponse, ListGroupsResponse,
    OffsetFetchResponse,
};
use broker_protocol::{ErrorCode, OffsetEntry, TopicSettings};
use server_support::{Broker, Conn};

const SESSION_MS: u32 = 1500;
/// How long the group may take to settle (generous: not a speed test).
const SETTLE: Duration = Duration::from_secs(60);

struct Member {
    conn: Conn,
    id: String,
    generation: i32,
    partitions: Vec<u32>,
    /// When it last sent a request: the coordinator heard from it after.
    last_sent: Instant,
}

impl Member {
    fn new(addr: SocketAddr) -> Member {
        Member {
            conn: Conn::connect(addr),
            id: String::new(),
            generation: -1,
            partitions: Vec::new(),
            last_sent: Instant::now(),
        }
    }

    /// Joins (or rejoins) and blocks until the generation forms.
    fn join(&mut self) {
        let member = self.id.clone();
        self.last_sent = Instant::now();
        let f = self.conn.call(&[], |w, out, id| {
            w.join_group_request(out, id, "g", &member, &["orders"], SESSION_MS)
                .unwrap();
        });
        assert!(f.error().is_none(), "{:?}", f.error());
        let r = f.decode::<JoinGroupResponse>().body;
        self.id = r.member_id().unwrap().to_string();
        self.generation = r.generation();
        self.partitions = r
            .assignment()
            .map(|a| {
                a.iter()
                    .flat_map(|t| t.partitions().unwrap().iter())
                    .collect()
            })
            .unwrap_or_default();
    }

    fn heartbeat(&mut self) -> Option<ErrorCode> {
        let (member, generation) = (self.id.clone(), self.generation);
        self.last_sent = Instant::now();
        let f = self.conn.call(&[], |w, out, id| {
            w.heartbeat_request(out, id, "g", &member, generation)
                .unwrap();
        });
        f.error().map(|e| e.0)
    }

    fn commit(&mut self, generation: i32, partition: u32, offset: i64) -> Option<ErrorCode> {
        let member = self.id.clone();
        self.last_sent = Instant::now();
        let f = self.conn.call(&[], |w, out, id| {
            let e = [OffsetEntry {
                topic: "orders",
                partition,
                offset,
            }];
            w.offset_commit_request(out, id, "g", &member, generation, &e)
                .unwrap();
        });
        f.error().map(|e| e.0)
    }
}

/// Runs every member like a client would for `for_ms`: heartbeat every
/// 50 ms, rejoin when told to (a new member joins first). Returns them.
fn run_members(members: Vec<Member>, for_ms: u64) -> Vec<Member> {
    let handles: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            thread::spawn(move || {
                if m.id.is_empty() {
                    m.join();
                }
                let until = std::time::Instant::now() + Duration::from_millis(for_ms);
                while std::time::Instant::now() < until {
                    match m.heartbeat() {
                        None => thread::sleep(Duration::from_millis(50)),
                        Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration) => {
                            m.join()
                        }
                        Some(other) => panic!("heartbeat: {other:?}"),
                    }
                }
                m
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Whether the members are in one generation that gives every partition
/// exactly one owner, with these partition counts (largest first).
fn partitioned(members: &[Member], sizes: &[usize]) -> Result<(), String> {
    let generation = members[0].generation;
    let mut all = BTreeSet::new();
    let mut got: Vec<usize> = Vec::new();
    for m in members {
        if m.generation != generation {
            return Err(format!("generations {} and {generation}", m.generation));
        }
        for p in &m.partitions {
            if !all.insert(*p) {
                return Err(format!("partition {p} owned twice"));
            }
        }
        got.push(m.partitions.len());
    }
    got.sort_unstable_by(|a, b| b.cmp(a));
    if got != sizes || all.len() != 6 {
        return Err(format!("{} partitions owned, as {got:?}", all.len()));
    }
    Ok(())
}

/// Runs the members (as [`run_members`], 300 ms at a time) until they are
/// partitioned as `sizes`; gives up after a generous deadline.
fn settle(mut members: Vec<Member>, sizes: &[usize]) -> Vec<Member> {
    let started = Instant::now();
    loop {
        members = run_members(members, 300);
        match partitioned(&members, sizes) {
            Ok(()) => {
                println!("partitioned as {sizes:?} after {:?}", started.elapsed());
                return members;
            }
            Err(e) => assert!(
                started.elapsed() < SETTLE,
                "never partitioned as {sizes:?}: {e}"
            ),
        }
    }
}

#[test]
fn group_lifecycle_rebalances_fences_and_keeps_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, 2, &["--fsync", "always"]);
    let mut admin = Conn::connect(broker.listen);
    let f = admin.call(&[], |w, out, id| {
        w.create_topic_request(out, id, "orders", 6, &TopicSettings::default())
            .unwrap();
    });
    assert!(f.error().is_none());

    // Members talk to the coordinator's own port, found like a client does.
    let f = admin.call(&[], |w, out, id| {
        w.find_coordinator_request(out, id, "g").unwrap();
    });
    let c = f.decode::<FindCoordinatorResponse>().body;
    let coordinator: SocketAddr = format!("{}:{}", c.host().unwrap(), c.port())
        .parse()
        .unwrap();
    assert_eq!(coordinator, broker.shards[usize::from(c.shard())]);

    // Three members on six partitions: two each.
    let mut members = settle(
        (0..3).map(|_| Member::new(coordinator)).collect(),
        &[2, 2, 2],
    );
    let gen3 = members[0].generation;
    for m in members.iter_mut() {
        assert_eq!(m.heartbeat(), None);
    }
    // Each commits its first partition.
    for (i, m) in members.iter_mut().enumerate() {
        let p = m.partitions[0];
        assert_eq!(m.commit(gen3, p, 10 + i as i64), None);
    }

    // A fourth joins (through the main port: forwarded to the coordinator).
    // The others learn it from their heartbeats, commit, and rejoin.
    let main_addr = broker.listen;
    let fourth = thread::spawn(move || {
        let mut m = Member::new(main_addr);
        m.join();
        m
    });
    let deadline = Instant::now() + SETTLE;
    loop {
        thread::sleep(Duration::from_millis(50));
        let seen_rebalance = members
            .iter_mut()
            .map(|m| m.heartbeat())
            .filter(|e| *e == Some(ErrorCode::RebalanceInProgress))
            .count();
        if seen_rebalance == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the members never saw the rebalance"
        );
    }
    // Commits of the current generation are still accepted while rebalancing.
    let p = members[0].partitions[0];
    assert_eq!(members[0].commit(gen3, p, 11), None);
    // The old members rejoin; that completes the fourth's pending join.
    let mut members = run_members(members, 300);
    members.push(fourth.join().unwrap());
    let mut members = settle(members, &[2, 2, 1, 1]);
    let gen4 = members[0].generation;
    assert!(gen4 > gen3);

    // The old generation is fenced; so is a partition the member lost.
    let p = members[0].partitions[0];
    assert_eq!(
        members[0].commit(gen3, p, 12),
        Some(ErrorCode::IllegalGeneration)
    );
    let foreign = members[1].partitions[0];
    assert_eq!(
        members[0].commit(gen4, foreign, 12),
        Some(ErrorCode::NotAssigned)
    );
    assert_eq!(members[0].commit(gen4, p, 12), None);

    // One member goes silent as if SIGKILLed (its connection closes, no
    // leave): after its session timeout, and not before, the others are
    // told to rebalance, and its partitions move. (Its new connection is
    // for checking its stale requests later.)
    let mut silent = members.pop().unwrap();
    silent.conn = Conn::connect(coordinator);
    let mut moved = None;
    let deadline = Instant::now() + SETTLE;
    while moved.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        for m in members.iter_mut() {
            if m.heartbeat() == Some(ErrorCode::RebalanceInProgress) {
                moved = Some(Instant::now());
            }
        }
    }
    let moved = moved.expect("no rebalance after the session timeout");
    // The coordinator heard from it last after `last_sent`, and removes it
    // a session timeout after that: the rebalance cannot be seen sooner.
    let silence = moved - silent.last_sent;
    println!("a silent member's partitions moved {silence:?} after it was last heard from");
    assert!(
        silence > Duration::from_millis(SESSION_MS.into()),
        "its partitions moved {silence:?} after it was last heard from: \
         before its session timeout of {SESSION_MS} ms"
    );
    let mut members = settle(members, &[2, 2, 2]);
    assert_eq!(silent.heartbeat(), Some(ErrorCode::UnknownMember));
    assert_eq!(silent.commit(gen4, 0, 99), Some(ErrorCode::UnknownMember));

    // Describe and list.
    let f = members[0].conn.call(&[], |w, out, id| {
        w.describe_group_request(out, id, "g").unwrap();
    });
    let d = f.decode::<DescribeGroupResponse>().body;
    assert_eq!(d.state(), Some("Stable"));
    assert_eq!(d.members().unwrap().len(), 3);
    let committed_before: Vec<(u32, i64)> = d
        .offsets()
        .unwrap()
        .iter()
        .map(|o| (o.partition(), o.offset()))
        .collect();
    assert_eq!(committed_before.len(), 3);
    let f = admin.call(&[], |w, out, id| {
        w.list_groups_request(out, id).unwrap();
    });
    let groups = f.decode::<ListGroupsResponse>().body.groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups.get(0).group(), Some("g"));

    // A restart (SIGKILL) keeps every committed offset.
    let before: Vec<(String, i32)> = members
        .iter()
        .map(|m| (m.id.clone(), m.generation))
        .collect();
    drop(members);
    broker.kill();
    let broker = Broker::start(&data, 2, &[]);
    let mut conn = Conn::connect(broker.listen);
    let f = conn.call(&[], |w, out, id| {
        w.offset_fetch_request(out, id, "g", &[]).unwrap();
    });
    let after: Vec<(u32, i64)> = f
        .decode::<OffsetFetchResponse>()
        .body
        .offsets()
        .unwrap()
        .iter()
        .map(|o| (o.partition(), o.offset()))
        .collect();
    assert_eq!(after, committed_before);

    // Generations start again after a restart, member ids never do: a new
    // member gets an id no member had before, and a member from before the
    // restart (a zombie that missed it) is unknown, so its commit is
    // refused rather than taken for a live member's.
    let f = conn.call(&[], |w, out, id| {
        w.find_coordinator_request(out, id, "g").unwrap();
    });
    let c = f.decode::<FindCoordinatorResponse>().body;
    let coordinator = broker.shards[usize::from(c.shard())];
    let mut fresh = Member::new(coordinator);
    fresh.join();
    assert!(
        before.iter().all(|(id, _)| *id != fresh.id),
        "{} was handed out before the restart too ({before:?})",
        fresh.id
    );
    for (id, generation) in before {
        let mut zombie = Member::new(coordinator);
        zombie.id = id;
        let partition = fresh.partitions[0];
        assert_eq!(
            zombie.commit(generation, partition, 1),
            Some(ErrorCode::UnknownMember),
            "a commit from {} of generation {generation}",
            zombie.id
        );
    }
}
