//! Kafka's classic consumer-group protocol on the Kafka listener, driven
//! by unmodified clients against the real binary: kafka-python 3 and
//! confluent-kafka (librdkafka) consumers form a group, split a topic's
//! partitions through their own (client-side) assignors, survive a
//! member's SIGKILL without skipping a record, and commit offsets that the
//! native `broker group describe` reads, and the other way round.
//!
//! Skipped (with a message) when python3 lacks `kafka` or `confluent_kafka`.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use server_support::Broker;

const BROKER: &str = env!("CARGO_BIN_EXE_broker");

/// A consumer in a group: prints "assign P,P,..." after every poll and
/// "rec P OFFSET" per record, and commits synchronously after each batch
/// it printed (so a SIGKILL loses at most what it had not printed).
const KAFKA_PYTHON: &str = r#"
import sys, time
from kafka import KafkaConsumer
boot, topic, group, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
c = KafkaConsumer(topic, bootstrap_servers=boot, group_id=group, auto_offset_reset='earliest',
    enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
    max_poll_interval_ms=20000, max_poll_records=20)
end = time.time() + seconds
while time.time() < end:
    r = c.poll(timeout_ms=200)
    for tp, msgs in r.items():
        for m in msgs:
            print(f"rec {tp.partition} {m.offset}", flush=True)
    if r:
        c.commit()
    print("assign " + ",".join(str(p.partition) for p in sorted(c.assignment(), key=lambda p: p.partition)), flush=True)
c.close()
"#;

const CONFLUENT: &str = r#"
import sys, time
from confluent_kafka import Consumer
boot, topic, group, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
assignor = sys.argv[5] if len(sys.argv) > 5 else 'range,roundrobin'
c = Consumer({'bootstrap.servers': boot, 'group.id': group, 'auto.offset.reset': 'earliest',
    'enable.auto.commit': False, 'session.timeout.ms': 6000, 'heartbeat.interval.ms': 500,
    'max.poll.interval.ms': 20000, 'partition.assignment.strategy': assignor})
c.subscribe([topic])
end = time.time() + seconds
while time.time() < end:
    msgs = c.consume(num_messages=20, timeout=0.2)
    for m in msgs:
        if m.error() is None:
            print(f"rec {m.partition()} {m.offset()}", flush=True)
    if any(m.error() is None for m in msgs):
        c.commit(asynchronous=False)
    print("assign " + ",".join(str(p.partition) for p in sorted(c.assignment(), key=lambda p: p.partition)), flush=True)
c.close()
"#;

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The broker, its Kafka listener on free ports (read off the ready line:
/// a port chosen here could not promise the shards' ports after it).
fn start(dir: &tempfile::TempDir, extra: &[&str]) -> (Broker, String) {
    let broker = Broker::start(&dir.path().join("data"), 2, extra);
    let kafka = broker
        .kafka
        .expect("the ready line names the Kafka listener")
        .to_string();
    (broker, kafka)
}

fn cli(broker: &Broker, args: &[&str]) -> String {
    let out = Command::new(BROKER)
        .args(args)
        .args(["--bootstrap", &broker.listen.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "broker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `count` records, spread evenly over `partitions`, through kcat.
fn produce(kafka: &str, topic: &str, partitions: u32, count: u32) {
    for p in 0..partitions {
        let mut child = Command::new("kcat")
            .args(["-b", kafka, "-P", "-t", topic, "-p", &p.to_string()])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let body: String = (0..count / partitions)
            .map(|i| format!("r{p}-{i}\n"))
            .collect();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "kcat produce");
    }
}

/// A consumer process and what it printed so far.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(script: &str, kafka: &str, topic: &str, group: &str, seconds: u32) -> Member {
        let mut child = Command::new("python3")
            .args(["-c", script, kafka, topic, group, &seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, lines }
    }

    /// Its latest assignment.
    fn assigned(&self) -> BTreeSet<u32> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("assign "))
            .map(|a| a.split(',').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    fn records(&self) -> BTreeSet<(u32, i64)> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("rec "))
            .filter_map(|r| {
                let (p, o) = r.split_once(' ')?;
                Some((p.parse().ok()?, o.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Three members split six partitions two each, one is SIGKILLed, the two
/// others take its partitions after the session timeout, and every record
/// is consumed (none skipped); the offsets they committed are what the
/// native `broker group describe` shows.
fn three_members_split_survive_a_sigkill_and_commit(script: &str, group: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir, &[]);
    cli(&broker, &["topic", "create", "t6", "--partitions", "6"]);
    produce(&kafka, "t6", 6, 600);
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start(script, &kafka, "t6", group, 90))
        .collect();
    wait_until(
        "three members with two partitions each",
        Duration::from_secs(40),
        || {
            let sets: Vec<BTreeSet<u32>> = members.iter().map(Member::assigned).collect();
            let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
            sets.iter().all(|s| s.len() == 2) && all.len() == 6
        },
    );
    // Let them consume a little, then kill one.
    thread::sleep(Duration::from_millis(500));
    let mut dead = members.remove(0);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let dead_records = dead.records();
    wait_until(
        "two members covering six partitions",
        Duration::from_secs(40),
        || {
            let sets: Vec<BTreeSet<u32>> = members.iter().map(Member::assigned).collect();
            let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
            all.len() == 6 && sets.iter().map(BTreeSet::len).sum::<usize>() == 6
        },
    );
    let every: BTreeSet<(u32, i64)> = (0..6).flat_map(|p| (0..100).map(move |o| (p, o))).collect();
    wait_until("every record consumed", Duration::from_secs(40), || {
        let mut seen = dead_records.clone();
        for m in &members {
            seen.extend(m.records());
        }
        seen == every
    });
    // Every partition's commit reaches the end, as the native CLI sees it.
    wait_until(
        "commits at the end of every partition",
        Duration::from_secs(20),
        || {
            let out = cli(&broker, &["group", "describe", group, "--output", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let committed: BTreeMap<u64, i64> = v["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["partition"].as_u64().unwrap(),
                        p["committed"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            committed.len() == 6 && committed.values().all(|&c| c == 100)
        },
    );
}

#[test]
fn kafka_python_members_split_partitions_survive_a_sigkill_and_commit() {
    if !python_has("kafka") {
        eprintln!("skipped: python3 has no kafka (kafka-python)");
        return;
    }
    three_members_split_survive_a_sigkill_and_commit(KAFKA_PYTHON, "kp-group");
}

#[test]
fn confluent_members_split_partitions_survive_a_sigkill_and_commit() {
    if !python_has("confluent_kafka") {
        eprintln!("skipped: python3 has no confluent_kafka");
        return;
    }
    three_members_split_survive_a_sigkill_and_commit(CONFLUENT, "ck-group");
}

/// Offsets committed by the native protocol's group consumer are where a
/// Kafka client of the same group starts.
#[test]
fn a_kafka_client_resumes_from_offsets_the_native_group_committed() {
    if !python_has("confluent_kafka") {
        eprintln!("skipped: python3 has no confluent_kafka");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir, &["--group-initial-rebalance-delay-ms", "0"]);
    cli(&broker, &["topic", "create", "t2", "--partitions", "2"]);
    produce(&kafka, "t2", 2, 40);
    // The native consumer reads (and commits) everything there is.
    let out = cli(
        &broker,
        &[
            "consume",
            "t2",
            "--group",
            "shared",
            "--timeout-ms",
            "3000",
            "--auto-commit-interval-ms",
            "200",
        ],
    );
    assert_eq!(out.lines().count(), 40, "{out}");
    produce(&kafka, "t2", 2, 10);
    let member = Member::start(CONFLUENT, &kafka, "t2", "shared", 60);
    let new: BTreeSet<(u32, i64)> = (0..2).flat_map(|p| (20..25).map(move |o| (p, o))).collect();
    wait_until(
        "the five new records of each partition",
        Duration::from_secs(40),
        || member.records() == new,
    );
}
