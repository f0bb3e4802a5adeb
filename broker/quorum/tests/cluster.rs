//! Three-controller quorums in one process, on 127.0.0.1 and temporary
//! directories: election, replication order, forwarding, failover, restarts,
//! snapshots, a minority, shutdown, bad frames. The test thread drives the
//! handles with `futures_lite::future::block_on`, no tokio runtime of its
//! own, as a glommio shard would. Every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use broker_quorum::{ConfigError, ProposeError, Quorum, QuorumConfig, QuorumError, StateMachine};
use futures_lite::future::block_on;
use tempfile::TempDir;

/// The test state machine: a journal of strings, answering each append with
/// its position.
#[derive(Debug, Default)]
struct Journal(Vec<String>);

impl StateMachine for Journal {
    type Command = String;
    type Response = u64;

    fn apply(&mut self, command: &String) -> u64 {
        self.0.push(command.clone());
        self.0.len() as u64 - 1
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns Some, for at most `WAIT`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` free addresses on 127.0.0.1, below the kernel's ephemeral range
/// (32768 and up on Linux), so that no outgoing connection of a test
/// running beside (which takes an ephemeral port) can take one while its
/// node is down between a stop and a restart. Each address is handed out
/// once per process.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    let mut addrs = Vec::new();
    while addrs.len() < n {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(offset < 10_000, "ran out of test ports");
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            addrs.push(addr);
        }
    }
    addrs
}

struct Cluster {
    dirs: BTreeMap<u64, TempDir>,
    voters: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, Quorum<Journal>>,
    tune: fn(&mut QuorumConfig),
}

impl Cluster {
    fn start(tune: fn(&mut QuorumConfig)) -> Cluster {
        let voters: BTreeMap<u64, SocketAddr> = (1..=3).zip(free_addrs(3)).collect();
        let dirs = voters
            .keys()
            .map(|id| (*id, tempfile::tempdir().unwrap()))
            .collect();
        let mut cluster = Cluster {
            dirs,
            voters,
            nodes: BTreeMap::new(),
            tune,
        };
        for id in 1..=3 {
            cluster.start_node(id);
        }
        cluster
    }

    fn config(&self, id: u64) -> QuorumConfig {
        let mut config = QuorumConfig::new(id, self.voters.clone(), self.dirs[&id].path());
        (self.tune)(&mut config);
        config
    }

    fn start_node(&mut self, id: u64) {
        let quorum = Quorum::start(self.config(id), Journal::default()).unwrap();
        self.nodes.insert(id, quorum);
    }

    fn stop_node(&mut self, id: u64) {
        let quorum = self.nodes.remove(&id).unwrap();
        quorum.shutdown();
    }

    fn node(&self, id: u64) -> &Quorum<Journal> {
        &self.nodes[&id]
    }

    /// The leader every running node agrees on.
    fn leader(&self) -> u64 {
        wait_for("one leader known to every running node", || {
            let leaders: Vec<Option<u64>> =
                self.nodes.values().map(|q| q.status().leader).collect();
            let first = leaders[0]?;
            (leaders.iter().all(|l| *l == Some(first)) && self.nodes.contains_key(&first))
                .then_some(first)
        })
    }

    fn journal(&self, id: u64) -> Vec<String> {
        self.node(id).read(|j| j.0.clone()).1
    }

    /// Waits until every running node's journal is `expected`.
    fn wait_journals(&self, expected: &[String]) {
        wait_for("every running node to apply the same journal", || {
            self.nodes
                .keys()
                .all(|id| self.journal(*id) == expected)
                .then_some(())
        });
    }

    fn propose(&self, id: u64, command: &str) -> Result<u64, ProposeError> {
        block_on(self.node(id).propose(command.to_string()))
    }
}

fn defaults(_: &mut QuorumConfig) {}

fn commands(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn three_nodes_elect_a_leader_and_apply_proposals_in_the_same_order_everywhere() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let mut expected = Vec::new();
    for (i, c) in commands("seq", 10).into_iter().enumerate() {
        assert_eq!(cluster.propose(leader, &c), Ok(i as u64));
        expected.push(c);
    }
    // Concurrent proposers: whatever order the leader picks, every node
    // applies that same order.
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let q = cluster.node(leader).clone();
            std::thread::spawn(move || {
                for c in commands(&format!("t{t}"), 10) {
                    block_on(q.propose(c)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let journal = wait_for("30 more entries at the leader", || {
        let j = cluster.journal(leader);
        (j.len() == 40).then_some(j)
    });
    assert_eq!(&journal[..10], &expected[..]);
    cluster.wait_journals(&journal);
    let status = cluster.node(leader).status();
    assert_eq!(status.leader, Some(leader));
    assert!(status.running);
    assert_eq!(status.voters, cluster.voters);
}

#[test]
fn a_follower_answers_not_leader_with_the_leaders_id_and_address() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let got = cluster.propose(follower, "at a follower");
    assert_eq!(
        got,
        Err(ProposeError::NotLeader {
            leader: Some((leader, cluster.voters[&leader]))
        })
    );
    // Nothing was appended by it.
    assert_eq!(cluster.propose(leader, "at the leader"), Ok(0));
    cluster.wait_journals(&["at the leader".to_string()]);
}

#[test]
fn when_the_leader_stops_another_is_elected_and_the_old_one_catches_up_on_restart() {
    let mut cluster = Cluster::start(defaults);
    let first = cluster.leader();
    let mut expected = commands("before", 5);
    for c in &expected {
        cluster.propose(first, c).unwrap();
    }
    cluster.wait_journals(&expected);
    cluster.stop_node(first);
    let second = cluster.leader();
    assert_ne!(second, first);
    for c in commands("after", 5) {
        cluster.propose(second, &c).unwrap();
        expected.push(c);
    }
    cluster.wait_journals(&expected);
    cluster.start_node(first);
    cluster.wait_journals(&expected);
    let leader = cluster.leader();
    cluster.propose(leader, "with all three").unwrap();
    expected.push("with all three".to_string());
    cluster.wait_journals(&expected);
}

#[test]
fn a_full_restart_keeps_every_committed_entry() {
    let mut cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let mut expected = commands("kept", 15);
    for c in &expected {
        cluster.propose(leader, c).unwrap();
    }
    cluster.wait_journals(&expected);
    let terms: Vec<u64> = cluster.nodes.values().map(|q| q.status().term).collect();
    for id in 1..=3 {
        cluster.stop_node(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    // The votes survived: from start on, no node is back at an earlier term.
    for (q, before) in cluster.nodes.values().zip(terms) {
        let status = q.status();
        assert!(status.term >= before, "{status:?} after term {before}");
    }
    cluster.wait_journals(&expected);
    let leader = cluster.leader();
    cluster.propose(leader, "after the restart").unwrap();
    expected.push("after the restart".to_string());
    cluster.wait_journals(&expected);
}

fn frequent_snapshots(config: &mut QuorumConfig) {
    config.snapshot_every_entries = 5;
    config.log_keep_after_snapshot_entries = 0;
}

#[test]
fn with_frequent_snapshots_the_log_is_purged_and_a_lagging_node_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(frequent_snapshots);
    let leader = cluster.leader();
    let lagging = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.stop_node(lagging);
    let expected = commands("snap", 40);
    for c in &expected {
        cluster.propose(leader, c).unwrap();
    }
    cluster.wait_journals(&expected);
    let purged = wait_for("the leader to purge its log", || {
        let s = cluster.node(leader).status();
        s.purged_index.filter(|p| *p >= 30)
    });
    assert!(cluster.node(leader).status().snapshot_index >= Some(purged));
    // The lagging node's log ends before the purge point: only a snapshot
    // can bring it up to date.
    cluster.start_node(lagging);
    cluster.wait_journals(&expected);
    let status = cluster.node(lagging).status();
    assert!(status.snapshot_index.is_some(), "{status:?}");
    // And it restarts from that snapshot.
    cluster.stop_node(lagging);
    cluster.start_node(lagging);
    cluster.wait_journals(&expected);
}

fn short_proposals(config: &mut QuorumConfig) {
    config.propose_timeout_ms = 1500;
}

#[test]
fn a_node_left_alone_does_not_commit() {
    let mut cluster = Cluster::start(short_proposals);
    let leader = cluster.leader();
    cluster.propose(leader, "with a majority").unwrap();
    cluster.wait_journals(&["with a majority".to_string()]);
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in others {
        cluster.stop_node(id);
    }
    let started = Instant::now();
    let got = cluster.propose(leader, "alone");
    assert!(
        matches!(
            got,
            Err(ProposeError::Timeout { .. }) | Err(ProposeError::NotLeader { .. })
        ),
        "{got:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(cluster.journal(leader), vec!["with a majority".to_string()]);
}

#[test]
fn shutdown_is_idempotent_and_answers_later_proposals() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let q = cluster.node(leader).clone();
    q.shutdown();
    q.shutdown();
    assert_eq!(
        block_on(q.propose("late".to_string())),
        Err(ProposeError::Shutdown)
    );
    assert!(!q.status().running);
    assert!(matches!(
        block_on(q.wait_applied(1_000_000)),
        Err(QuorumError::Shutdown)
    ));
}

#[test]
fn dropping_every_handle_stops_the_node_and_frees_its_port() {
    let mut cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let handle = cluster.nodes.remove(&leader).unwrap();
    let clone = handle.clone();
    drop(handle);
    drop(clone);
    // Its address can be bound again, over the same directory.
    cluster.start_node(leader);
    let leader = cluster.leader();
    cluster.propose(leader, "after the drop").unwrap();
    cluster.wait_journals(&["after the drop".to_string()]);
}

#[test]
fn wait_applied_resolves_when_the_entry_is_applied() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    // Once every node has applied a first proposal (and so the leader's
    // blank entry before it), and the follower all the leader has, the
    // next entry is the awaited proposal's.
    cluster.propose(leader, "first").unwrap();
    cluster.wait_journals(&["first".to_string()]);
    let applied = wait_for("the follower to apply what the leader applied", || {
        let at_leader = cluster.node(leader).status().last_applied;
        let (at_follower, _) = cluster.node(follower).read(|_| ());
        (at_leader.is_some() && at_follower == at_leader).then_some(at_follower)
    });
    let next = applied.map_or(0, |i| i + 1);
    let q = cluster.node(follower).clone();
    let waiter = std::thread::spawn(move || block_on(q.wait_applied(next)));
    cluster.propose(leader, "awaited").unwrap();
    wait_for("the waiter to resolve", || {
        waiter.is_finished().then_some(())
    });
    assert!(waiter.join().unwrap().unwrap() >= next);
    assert_eq!(
        cluster.journal(follower),
        vec!["first".to_string(), "awaited".to_string()]
    );
}

#[test]
fn a_bad_frame_closes_its_connection_and_the_node_keeps_serving() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    for (id, addr) in &cluster.voters {
        for garbage in [
            u32::MAX.to_le_bytes().to_vec(),
            [5u32.to_le_bytes().to_vec(), b"{nope".to_vec()].concat(),
        ] {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.write_all(&garbage).unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(
                stream.read(&mut buf).unwrap_or(0),
                0,
                "node {id} closes the connection"
            );
        }
    }
    // A well-formed snapshot chunk that reaches past the snapshot bound is
    // refused the same way, before openraft gathers it.
    let mut stream = TcpStream::connect(cluster.voters[&leader]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(&frame(&oversized_snapshot_chunk()))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        stream.read(&mut buf).unwrap_or(0),
        0,
        "the chunk past the bound closes the connection"
    );
    cluster.propose(leader, "still serving").unwrap();
    cluster.wait_journals(&["still serving".to_string()]);
}

openraft::declare_raft_types!(
    /// The quorum's openraft types, rebuilt here to encode a raw RPC.
    Wire:
        D = serde_json::Value,
        R = serde_json::Value,
);

/// An InstallSnapshot request, as the transport frames it, whose chunk
/// starts at the snapshot bound.
fn oversized_snapshot_chunk() -> serde_json::Value {
    let request = openraft::raft::InstallSnapshotRequest::<Wire> {
        vote: openraft::Vote::new_committed(99, 9),
        meta: openraft::SnapshotMeta::default(),
        offset: broker_quorum::limits::MAX_SNAPSHOT_BYTES as u64,
        data: vec![1, 2, 3],
        done: false,
    };
    serde_json::json!({ "InstallSnapshot": request })
}

fn frame(message: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap();
    let mut out = (json.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

#[test]
fn an_invalid_configuration_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = (1..=3).zip(free_addrs(3)).collect();
    let config = QuorumConfig::new(7, voters, dir.path());
    let got = Quorum::start(config, Journal::default());
    assert!(matches!(
        got,
        Err(QuorumError::Config(ConfigError::NotAVoter { node_id: 7 }))
    ));
}

#[test]
fn a_command_above_the_bound_is_refused_before_it_is_proposed() {
    let cluster = Cluster::start(defaults);
    let leader = cluster.leader();
    let huge = "x".repeat(broker_quorum::limits::MAX_COMMAND_BYTES + 1);
    assert!(matches!(
        cluster.propose(leader, &huge),
        Err(ProposeError::TooLarge { .. })
    ));
}

#[test]
fn a_single_voter_quorum_elects_itself_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = [(1, free_addrs(1)[0])].into();
    let q = Quorum::start(
        QuorumConfig::new(1, voters.clone(), dir.path()),
        Journal::default(),
    )
    .unwrap();
    wait_for("the single voter to lead", || {
        (q.status().leader == Some(1)).then_some(())
    });
    assert_eq!(block_on(q.propose("solo".to_string())), Ok(0));
    q.shutdown();
    let q = Quorum::start(QuorumConfig::new(1, voters, dir.path()), Journal::default()).unwrap();
    wait_for("the journal back after a restart", || {
        (q.read(|j| j.0.clone()).1 == ["solo".to_string()]).then_some(())
    });
}

#[test]
fn the_handle_is_send_and_sync_and_so_is_a_proposal() {
    fn send_sync<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = [(1, free_addrs(1)[0])].into();
    let q = Quorum::start(QuorumConfig::new(1, voters, dir.path()), Journal::default()).unwrap();
    send_sync(&q);
    let proposal = q.propose("typed".to_string());
    send(&proposal);
    drop(proposal);
    send(&q.wait_applied(0));
}

#[test]
fn a_glommio_executor_proposes_and_follows_the_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = [(1, free_addrs(1)[0])].into();
    let q = Quorum::start(QuorumConfig::new(1, voters, dir.path()), Journal::default()).unwrap();
    wait_for("the single voter to lead", || {
        (q.status().leader == Some(1)).then_some(())
    });
    let on_shard = q.clone();
    let executor = glommio::LocalExecutorBuilder::default()
        .name("shard-like")
        .spawn(move || async move {
            let response = on_shard.propose("from glommio".to_string()).await;
            let applied = on_shard.wait_applied(0).await;
            let journal = on_shard.read(|j| j.0.clone()).1;
            (response, applied.is_ok(), journal)
        })
        .unwrap();
    // Joined on a thread of its own, so that a lost wake-up fails the test
    // in bounded time instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(executor.join()));
    let (response, applied, journal) = rx
        .recv_timeout(WAIT)
        .expect("the glommio task ended")
        .unwrap();
    assert_eq!(response, Ok(0));
    assert!(applied);
    assert_eq!(journal, vec!["from glommio".to_string()]);
}

/// A state machine of u128s: the last one applied, answered back.
#[derive(Debug, Default)]
struct Wide(u128);

impl StateMachine for Wide {
    type Command = u128;
    type Response = u128;

    fn apply(&mut self, command: &u128) -> u128 {
        self.0 = *command;
        *command
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn a_command_is_applied_exactly_as_proposed_even_an_integer_above_u64() {
    // Regression: entries once crossed as serde_json::Value, which holds no
    // integer above u64: a u128 came back as a float and stopped the node.
    let dir = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = [(1, free_addrs(1)[0])].into();
    let q = Quorum::start(
        QuorumConfig::new(1, voters.clone(), dir.path()),
        Wide::default(),
    )
    .unwrap();
    wait_for("the single voter to lead", || {
        (q.status().leader == Some(1)).then_some(())
    });
    let wide = u128::MAX - 12345;
    assert_eq!(block_on(q.propose(wide)), Ok(wide));
    q.shutdown();
    // Replayed from the log on restart: the same value.
    let q = Quorum::start(QuorumConfig::new(1, voters, dir.path()), Wide::default()).unwrap();
    wait_for("the value back after a restart", || {
        (q.read(|w| w.0).1 == wide).then_some(())
    });
}

/// Answers every client request with its text reversed.
struct Reverse;

impl broker_quorum::ClientService for Reverse {
    fn call(
        self: std::sync::Arc<Self>,
        request: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> {
        Box::pin(async move { request.chars().rev().collect() })
    }
}

/// A one-voter quorum whose client service is [`Reverse`]: its directory,
/// address and handle.
fn reversing_node() -> (tempfile::TempDir, SocketAddr, Quorum<Journal>) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addrs(1)[0];
    let voters: BTreeMap<u64, SocketAddr> = [(1, addr)].into();
    let q = Quorum::start_with_clients(
        QuorumConfig::new(1, voters, dir.path()),
        Journal::default(),
        std::sync::Arc::new(Reverse),
    )
    .unwrap();
    (dir, addr, q)
}

#[test]
fn client_frames_on_the_raft_address_reach_the_client_service_and_only_it() {
    let (_dir, addr, q) = reversing_node();
    let answer = broker_quorum::client::call(addr, "abc\"{}", Duration::from_secs(5)).unwrap();
    assert_eq!(answer, "}{\"cba");
    q.shutdown();
    // A node without a client service says so instead of answering.
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addrs(1)[0];
    let voters: BTreeMap<u64, SocketAddr> = [(1, addr)].into();
    let q = Quorum::start(QuorumConfig::new(1, voters, dir.path()), Journal::default()).unwrap();
    let refused = broker_quorum::client::call(addr, "abc", Duration::from_secs(5)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported, "{refused}");
    q.shutdown();
    // Nobody listening: a bounded error, not a hang.
    let started = Instant::now();
    assert!(broker_quorum::client::call(addr, "abc", Duration::from_secs(1)).is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Connections that never send a request (a black-holed link keeps every
/// connection a peer abandoned open) do not lock a node out: once all
/// slots are taken, a new call takes the place of the one that waited
/// longest. (The cluster test of a cut-off leader saw the brokers' calls
/// refused for up to a minute before.)
#[test]
fn connections_that_never_send_do_not_lock_out_a_new_call() {
    let (_dir, addr, q) = reversing_node();
    let silent: Vec<TcpStream> = (0..broker_quorum::limits::MAX_INBOUND_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(
        broker_quorum::limits::EVICTABLE_AFTER_MS + 500,
    ));
    for i in 0..3 {
        let answer = broker_quorum::client::call(addr, "abc", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("call {i} with every slot held by a silent one: {e}"));
        assert_eq!(answer, "cba");
    }
    // The evicted ones are closed, not left hanging.
    let mut closed = 0;
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if matches!(s.read(&mut [0u8; 1]), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no silent connection was closed");
    q.shutdown();
}
