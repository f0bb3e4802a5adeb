//! Crash test with real processes: three quorum nodes, each a child
//! process (this test binary re-executed with `QUORUM_CRASH_NODE` set,
//! driven by lines on its stdin), the leader killed with SIGKILL while it
//! takes proposals, restarted over its directory; then all three killed and
//! restarted. Every proposal a node acknowledged must be in every node's
//! journal, in one order, after each crash. Every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker_quorum::{ProposeError, Quorum, QuorumConfig, StateMachine};

/// The state machine: a journal of strings.
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

const NODE_ENV: &str = "QUORUM_CRASH_NODE";
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    if let Ok(spec) = std::env::var(NODE_ENV) {
        node(&spec);
        return;
    }
    const NAME: &str = "leader_killed_mid_stream_and_then_everyone_loses_nothing_acknowledged";
    // Honour a test-name filter (`cargo test -p broker-quorum some_name`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        println!("0 passed, 0 failed");
        return;
    }
    let started = Instant::now();
    leader_killed_mid_stream_and_then_everyone_loses_nothing_acknowledged();
    println!("test {NAME} ... ok ({:.1?})", started.elapsed());
    println!("1 passed, 0 failed");
}

/// A node: `<id>;<dir>;<id>=<addr>,...`. Reads `p <command>` (propose;
/// answers `ok <command>` or `err <command> <error>`), `s` (answers
/// `s <leader or ->`), `j` (answers `j <journal as JSON>`).
fn node(spec: &str) {
    let mut parts = spec.split(';');
    let id: u64 = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    let voters: BTreeMap<u64, SocketAddr> = parts
        .next()
        .unwrap()
        .split(',')
        .map(|v| {
            let (id, addr) = v.split_once('=').unwrap();
            (id.parse().unwrap(), addr.parse().unwrap())
        })
        .collect();
    let mut config = QuorumConfig::new(id, voters, dir);
    config.snapshot_every_entries = 50;
    let quorum = Quorum::start(config, Journal::default()).unwrap();
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let answer = match line.split_once(' ') {
            Some(("p", command)) => {
                match futures_lite::future::block_on(quorum.propose(command.to_string())) {
                    Ok(_) => format!("ok {command}"),
                    Err(ProposeError::NotLeader { leader }) => {
                        format!("err {command} not leader {leader:?}")
                    }
                    Err(e) => format!("err {command} {e}"),
                }
            }
            _ if line == "s" => format!(
                "s {}",
                quorum
                    .status()
                    .leader
                    .map_or("-".to_string(), |l| l.to_string())
            ),
            _ if line == "j" => format!(
                "j {}",
                serde_json::to_string(&quorum.read(|j| j.0.clone()).1).unwrap()
            ),
            _ => format!("? {line}"),
        };
        let mut out = stdout.lock();
        writeln!(out, "{answer}").unwrap();
        out.flush().unwrap();
    }
    quorum.shutdown();
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line starting with `prefix`, within `WAIT`.
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no '{prefix}' line within {WAIT:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    fn leader(&mut self) -> Option<u64> {
        self.send("s");
        self.expect("s ").parse().ok()
    }

    fn journal(&mut self) -> Vec<String> {
        self.send("j");
        serde_json::from_str(&self.expect("j ")).unwrap()
    }

    /// SIGKILL, and reap.
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Proc {
    // Also on a failed assertion: no node outlives the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    voters: BTreeMap<u64, SocketAddr>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    procs: BTreeMap<u64, Proc>,
}

impl Cluster {
    fn spawn(&mut self, id: u64) {
        let voters: Vec<String> = self
            .voters
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect();
        let spec = format!("{id};{};{}", path(self.dirs[&id].path()), voters.join(","));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(NODE_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.procs.insert(
            id,
            Proc {
                child,
                stdin,
                lines,
            },
        );
    }

    /// The leader every running node names.
    fn leader(&mut self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<Option<u64>> = self.procs.values_mut().map(Proc::leader).collect();
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*first)) && self.procs.contains_key(first) {
                    return *first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {WAIT:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node's journal is the same and holds `acked`, in
    /// the order they were acknowledged; returns it.
    fn converged(&mut self, acked: &[String]) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let journals: Vec<Vec<String>> = self.procs.values_mut().map(Proc::journal).collect();
            let same = journals.windows(2).all(|w| w[0] == w[1]);
            let first = &journals[0];
            let positions: Vec<Option<usize>> = acked
                .iter()
                .map(|a| first.iter().position(|j| j == a))
                .collect();
            let holds_in_order =
                positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]);
            if same && holds_in_order {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "journals not converged on the {} acknowledged within {WAIT:?}: lengths {:?}",
                acked.len(),
                journals.iter().map(Vec::len).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    // Below the ephemeral range, as in cluster.rs.
    let base = 32_000 - (std::process::id() % 50) as u16 * 20;
    let mut addrs = Vec::new();
    let mut port = base;
    while addrs.len() < n {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            addrs.push(addr);
        }
        port -= 1;
    }
    addrs
}

fn leader_killed_mid_stream_and_then_everyone_loses_nothing_acknowledged() {
    let voters: BTreeMap<u64, SocketAddr> = (1..=3).zip(free_addrs(3)).collect();
    let dirs = voters
        .keys()
        .map(|id| (*id, tempfile::tempdir().unwrap()))
        .collect();
    let mut cluster = Cluster {
        voters,
        dirs,
        procs: BTreeMap::new(),
    };
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = cluster.leader();

    // 200 proposals queued at the leader; SIGKILL once 60 are acknowledged.
    let mut acked = Vec::new();
    {
        let proc = cluster.procs.get_mut(&leader).unwrap();
        for i in 0..200 {
            proc.send(&format!("p a{i}"));
        }
        while acked.len() < 60 {
            acked.push(proc.expect("ok "));
        }
    }
    cluster.procs.remove(&leader).unwrap().kill();

    let second = cluster.leader();
    assert_ne!(second, leader);
    {
        let proc = cluster.procs.get_mut(&second).unwrap();
        for i in 0..40 {
            proc.send(&format!("p b{i}"));
            acked.push(proc.expect("ok "));
        }
    }
    cluster.spawn(leader);
    let before = cluster.converged(&acked);

    // Everyone killed at once: what was committed comes back from disk.
    let ids: Vec<u64> = cluster.procs.keys().copied().collect();
    for id in &ids {
        cluster.procs.remove(id).unwrap().kill();
    }
    for id in &ids {
        cluster.spawn(*id);
    }
    let third = cluster.leader();
    let after = cluster.converged(&before);
    assert_eq!(after, before, "a full crash changed the committed journal");
    {
        let proc = cluster.procs.get_mut(&third).unwrap();
        proc.send("p after-all");
        proc.expect("ok ");
    }
    let mut expected = before;
    expected.push("after-all".to_string());
    cluster.converged(&expected);
    for id in ids {
        cluster.procs.remove(&id).unwrap().kill();
    }
}
