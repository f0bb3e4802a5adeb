//! Consumer groups over the Kafka protocol (the classic protocol: JoinGroup,
//! SyncGroup, Heartbeat, OffsetCommit, OffsetFetch), driven by real
//! clients: for each of confluent-kafka and kafka-python, three member
//! processes share a 6-partition topic 2/2/2; one is SIGKILLed, the two
//! others take its partitions over, and in the end every produced offset
//! was consumed and committed. Committed offsets are one store for both
//! protocols: what Kafka members commit is what the native `broker group
//! describe` shows and what a native `broker consume --group` resumes from,
//! and what a native member commits is where a Kafka member resumes.
//!
//! The clients are installed by scripts/install-kafka-clients.sh; without
//! them these tests fail, saying so.
#![allow(clippy::unwrap_used)]

mod server_support;
#[path = "kafka_clients/support.rs"]
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use server_support::Broker;
use support::{
    args, create_topic, kafka_addr, native_cli_lines, native_committed, native_group, run_script,
    script_cmd, start_kafka_broker, Ack, Lib, Proc,
};

/// How long a condition that depends on the group settling may take.
const SETTLE: Duration = Duration::from_secs(40);
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);
/// Kafka's own lower bound (group.min.session.timeout.ms) by default.
const SESSION_MS: &str = "6000";
const HEARTBEAT_MS: &str = "500";

/// Produces `count` keyed records of 100 bytes of text (from `seed`; the
/// native `broker consume` prints values one per line) with
/// confluent-kafka, acks=all; returns the acknowledgements.
fn produce(kafka: &str, topic: &str, count: usize, seed: u64) -> Vec<Ack> {
    let a = args(&[
        "--bootstrap",
        kafka,
        "--topic",
        topic,
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--keys",
        "--text",
        "--acks",
        "all",
        "--timeout",
        "30",
    ]);
    let out = run_script(&Lib::Confluent.script("produce"), &a, SCRIPT_LIMIT).ok();
    let acks: Vec<Ack> = out.events("ack").iter().map(Ack::from_json).collect();
    assert_eq!(acks.len(), count, "every record acknowledged");
    acks
}

/// A group member script, running.
struct Member {
    name: String,
    proc: Proc,
}

impl Member {
    /// A member that runs until SIGTERM or `timeout_s` seconds.
    fn spawn(
        lib: Lib,
        name: &str,
        kafka: &str,
        topic: &str,
        group: &str,
        timeout_s: u32,
        extra: &[&str],
    ) -> Member {
        let mut a = args(&[
            "--bootstrap",
            kafka,
            "--topic",
            topic,
            "--group",
            group,
            "--session-timeout-ms",
            SESSION_MS,
            "--heartbeat-interval-ms",
            HEARTBEAT_MS,
            "--timeout",
            &timeout_s.to_string(),
        ]);
        a.extend(args(extra));
        Member {
            name: name.to_owned(),
            proc: Proc::spawn(script_cmd(&lib.script("group"), &a)),
        }
    }

    fn events(&self) -> Vec<Value> {
        self.proc.json()
    }

    /// The partitions it holds now, by its own assigned/revoked lines.
    fn holds(&self) -> BTreeSet<u32> {
        let mut holds = BTreeSet::new();
        for e in self.events() {
            if e["event"] == "assigned" {
                holds = partitions(&e);
            } else if e["event"] == "revoked" {
                for p in partitions(&e) {
                    holds.remove(&p);
                }
            }
        }
        holds
    }

    /// Panics with its stderr if it exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.proc.exited() {
            panic!(
                "member {} exited ({status}):\n{}",
                self.name,
                self.proc.stderr_text()
            );
        }
    }
}

fn partitions(e: &Value) -> BTreeSet<u32> {
    e["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect()
}

/// (partition, offset) of every record event in `events`.
fn consumed(events: &[Value]) -> BTreeSet<(u32, i64)> {
    events
        .iter()
        .filter(|e| e["event"] == "record")
        .map(|e| {
            (
                e["partition"].as_u64().unwrap() as u32,
                e["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Waits until `members` hold disjoint sets of partitions that together are
/// 0..partitions, with these sizes (largest first).
fn wait_for_split(members: &mut [Member], partitions: u32, sizes: &[usize], what: &str) {
    let started = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.check_alive();
        }
        let holds: Vec<BTreeSet<u32>> = members.iter().map(Member::holds).collect();
        let mut all = BTreeSet::new();
        let disjoint = holds.iter().all(|h| h.iter().all(|p| all.insert(*p)));
        let mut got: Vec<usize> = holds.iter().map(BTreeSet::len).collect();
        got.sort_unstable_by(|a, b| b.cmp(a));
        if disjoint && all.len() == partitions as usize && got == sizes {
            println!("{what} after {:?}: {holds:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "never {what}: members hold {holds:?}; stderr of each:\n{}",
            members
                .iter()
                .map(|m| format!("--- {}:\n{}", m.name, m.proc.stderr_text()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every (partition, offset) of `acks` is among what `members`
/// (and the `gone` members' output) consumed.
fn wait_consumed(members: &mut [Member], gone: &BTreeSet<(u32, i64)>, acks: &[Ack], what: &str) {
    let started = Instant::now();
    loop {
        for m in members.iter_mut() {
            m.check_alive();
        }
        let mut seen = gone.clone();
        for m in members.iter() {
            seen.extend(consumed(&m.events()));
        }
        let missing: Vec<(u32, i64)> = acks
            .iter()
            .map(|a| (a.partition, a.offset))
            .filter(|po| !seen.contains(po))
            .collect();
        if missing.is_empty() {
            println!(
                "{what}: all {} consumed after {:?}",
                acks.len(),
                started.elapsed()
            );
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{what}: {} of {} records never consumed, e.g. {:?}",
            missing.len(),
            acks.len(),
            &missing[..missing.len().min(10)]
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// partition -> high watermark, from the produce acknowledgements.
fn ends(acks: &[Ack]) -> BTreeMap<u32, i64> {
    let mut ends = BTreeMap::new();
    for a in acks {
        let e = ends.entry(a.partition).or_insert(0);
        *e = (*e).max(a.offset + 1);
    }
    ends
}

/// Waits until the native `group describe` shows `want` committed for
/// `topic`; a partition missing from `want` is to have no commit or 0 (a
/// native member commits 0 for a partition it read nothing from).
fn wait_committed(broker: &Broker, group: &str, topic: &str, want: &BTreeMap<u32, i64>) -> Value {
    let started = Instant::now();
    loop {
        let d = native_group(broker, group);
        let mut got = native_committed(&d, topic);
        got.retain(|p, o| *o != 0 || want.contains_key(p));
        if got == *want {
            println!("{group}: committed {want:?} after {:?}", started.elapsed());
            return d;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{group}: never committed {want:?}; the native describe: {d:#}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn three_members_share_six_partitions_and_survive_a_sigkill(lib: Lib) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &[]);
    let kafka = kafka_addr(&broker);
    let topic = "six";
    let group = format!("three-{}", lib.name());
    create_topic(&broker, topic, 6);
    let mut acks = produce(&kafka, topic, 600, 1);

    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::spawn(lib, &format!("m{i}"), &kafka, topic, &group, 100, &[]))
        .collect();
    wait_for_split(
        &mut members,
        6,
        &[2, 2, 2],
        "3 members with 2 partitions each",
    );
    wait_consumed(&mut members, &BTreeSet::new(), &acks, "the first 600");

    // SIGKILL one (no commit, no leave): after its session timeout the two
    // others hold all six, and read on from what it committed.
    let victim = members.remove(1);
    let victim_held = victim.holds();
    let gone = consumed(&victim.proc.kill().json());
    println!("killed {} holding {victim_held:?}", victim.name);
    wait_for_split(
        &mut members,
        6,
        &[3, 3],
        "the killed member's partitions moved",
    );
    for m in &members {
        let holds = m.holds();
        println!("{} holds {holds:?}", m.name);
    }
    acks.extend(produce(&kafka, topic, 600, 2));
    wait_consumed(&mut members, &gone, &acks, "all 1200");

    // Everything consumed is committed, and the native describe shows it.
    let d = wait_committed(&broker, &group, topic, &ends(&acks));
    println!("native describe: {d}");
    for m in members.drain(..) {
        let name = m.name.clone();
        let out = m.proc.terminate(Duration::from_secs(30));
        assert!(out.status.success(), "member {name}: {}", out.stderr);
    }
}

#[test]
fn confluent_three_members_share_six_partitions_and_survive_a_sigkill() {
    three_members_share_six_partitions_and_survive_a_sigkill(Lib::Confluent);
}

#[test]
fn kafka_python_three_members_share_six_partitions_and_survive_a_sigkill() {
    three_members_share_six_partitions_and_survive_a_sigkill(Lib::KafkaPython);
}

/// `broker consume TOPIC --group GROUP --print-offsets ARGS`: the
/// (partition, offset) of each record it printed, after it exited 0.
fn native_group_consume(
    broker: &Broker,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> Vec<(u32, i64)> {
    let mut a = vec!["consume", topic, "--group", group, "--print-offsets"];
    a.extend(["--session-timeout-ms", SESSION_MS]);
    a.extend_from_slice(extra);
    native_cli_lines(broker, &a, SCRIPT_LIMIT)
        .iter()
        .map(|l| {
            // GENERATION PARTITION OFFSET VALUE
            let mut f = l.splitn(4, ' ');
            let _generation = f.next();
            let p = f.next().unwrap().parse().unwrap();
            let o = f.next().unwrap().parse().unwrap();
            (p, o)
        })
        .collect()
}

/// partition -> the next offset after what `read` holds.
fn next_offsets(read: &[(u32, i64)]) -> BTreeMap<u32, i64> {
    let mut next = BTreeMap::new();
    for &(p, o) in read {
        let e = next.entry(p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    next
}

fn committed_offsets_are_shared_with_the_native_protocol(lib: Lib) {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &[]);
    let kafka = kafka_addr(&broker);
    let topic = "shared";
    create_topic(&broker, topic, 4);
    let acks = produce(&kafka, topic, 80, 3);
    let all: BTreeSet<(u32, i64)> = acks.iter().map(|a| (a.partition, a.offset)).collect();

    // A Kafka member reads 30 and commits them: the native describe shows
    // those offsets, and a native member of the group reads the other 50.
    let group = format!("kafka-first-{}", lib.name());
    let member = Member::spawn(lib, "k", &kafka, topic, &group, 40, &["--stop-after", "30"]);
    let out = member.proc.wait(SCRIPT_LIMIT).ok();
    let read: Vec<(u32, i64)> = consumed(&out.json()).into_iter().collect();
    assert_eq!(read.len(), 30, "{}", out.stderr);
    let committed = next_offsets(&read);
    wait_committed(&broker, &group, topic, &committed);
    // The rest is 50: a native member that read more did not resume from
    // the commit (checked below); --timeout-ms outlasts the group's
    // initial rebalance delay (3 s).
    let rest = native_group_consume(
        &broker,
        topic,
        &group,
        &["--max-messages", "50", "--timeout-ms", "15000"],
    );
    for (p, o) in &rest {
        assert!(
            *o >= committed.get(p).copied().unwrap_or(0),
            "the native member read {p}/{o}, below the Kafka member's commit {committed:?}"
        );
    }
    let union: BTreeSet<(u32, i64)> = read.iter().chain(rest.iter()).copied().collect();
    assert_eq!(
        union, all,
        "the Kafka member's 30 and the native member's rest"
    );
    assert_eq!(
        rest.len(),
        50,
        "the native member read each of the rest once"
    );

    // A native member reads 25 and commits them: a Kafka member of the
    // group resumes from there.
    let group = format!("native-first-{}", lib.name());
    let first = native_group_consume(
        &broker,
        topic,
        &group,
        &["--max-messages", "25", "--timeout-ms", "15000"],
    );
    assert_eq!(first.len(), 25);
    let committed = next_offsets(&first);
    wait_committed(&broker, &group, topic, &committed);
    let member = Member::spawn(lib, "k", &kafka, topic, &group, 40, &["--stop-after", "55"]);
    let out = member.proc.wait(SCRIPT_LIMIT).ok();
    let rest: Vec<(u32, i64)> = consumed(&out.json()).into_iter().collect();
    for (p, o) in &rest {
        assert!(
            *o >= committed.get(p).copied().unwrap_or(0),
            "the Kafka member read {p}/{o}, below the native member's commit {committed:?}"
        );
    }
    let union: BTreeSet<(u32, i64)> = first.iter().chain(rest.iter()).copied().collect();
    assert_eq!(
        union, all,
        "the native member's 25 and the Kafka member's 55"
    );
    wait_committed(&broker, &group, topic, &ends(&acks));
}

#[test]
fn confluent_committed_offsets_are_shared_with_the_native_protocol() {
    committed_offsets_are_shared_with_the_native_protocol(Lib::Confluent);
}

#[test]
fn kafka_python_committed_offsets_are_shared_with_the_native_protocol() {
    committed_offsets_are_shared_with_the_native_protocol(Lib::KafkaPython);
}
