//! The chaos run: producers write uniquely numbered records (acks after
//! fsync), over the native protocol and over the Kafka protocol
//! (confluent-kafka processes, acks=all, idempotent), a reader follows every partition by offset and a consumer group
//! of real `broker consume --group` processes reads along, while hostile
//! clients attack the broker and a fault scheduler injects, at random
//! (seeded) moments:
//! - broker SIGKILL and restart;
//! - broker SIGSTOP/SIGCONT pauses, most longer than the group's session
//!   timeout;
//! - the data filesystem (a size-limited tmpfs the run mounts itself)
//!   filling up, then freed;
//! - member crashes (SIGKILL, no commit, no leave; restarted later);
//! - member pauses (SIGSTOP past the session timeout, then SIGCONT);
//! - slow members (their output read slowly, so they block writing it).
//!
//! Then every fault is lifted, the group drains, the whole log is read
//! back, and the checker (checker.rs) reports lost writes, offsets that held
//! two different records, gaps, out-of-order records, records no producer
//! sent, acknowledged records never delivered to the group, and any member
//! whose offsets went backwards within one membership; it counts
//! duplicates delivered and unacknowledged-but-present records. Any
//! violation fails the run and prints the seed.
//!
//! Built with the `fault-injection` feature, a second test runs the same
//! chaos against a broker that acknowledges appends before writing them,
//! and requires the checker to report the acknowledged records it lost.
//!
//! `CHAOS_SECS` (default 40) and `CHAOS_SEED` (default fixed) choose the
//! run, `CHAOS_SUMMARY=path` writes its summary as JSON; `scripts/chaos.sh`
//! runs a longer one. Needs root for the tmpfs; when the mount is refused
//! the disk-full fault is reported as not run.
#![allow(clippy::unwrap_used)]

mod checker;
mod load;
mod members;
mod node;
#[path = "../server_support/mod.rs"]
mod server_support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use broker_client::{Client, ClientConfig, Consumer, ConsumerConfig, StartOffset};
use broker_protocol::TopicSettings;
use serde::Serialize;

use checker::{Counts, FinalLog};
use load::History;
use members::{Members, SESSION_TIMEOUT_MS};
use node::{Node, Tmpfs};
use server_support::hostile;

const TOPIC: &str = "chaos";
const GROUP: &str = "chaos-group";
/// The Kafka clients' group (confluent-kafka members).
const KAFKA_GROUP: &str = "chaos-kafka-group";
const PARTITIONS: u32 = 4;
/// Member processes in the group (restarted after crashes).
const MEMBERS: usize = 3;
/// How long the group may take to deliver everything once the faults stop
/// (a bound on a hang, not a speed check).
const DRAIN: Duration = Duration::from_secs(120);
/// Draining ends early after this long without a new record delivered.
const STALL: Duration = Duration::from_secs(15);

/// The kinds of fault the scheduler injects.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    BrokerKill,
    BrokerPause,
    DiskFull,
    MemberCrash,
    MemberPause,
    MemberSlow,
}

const EVERY_FAULT: [Fault; 6] = [
    Fault::BrokerKill,
    Fault::BrokerPause,
    Fault::DiskFull,
    Fault::MemberCrash,
    Fault::MemberPause,
    Fault::MemberSlow,
];

/// splitmix64: a fixed seed replays the same fault schedule.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The numbers `0..n` in a random order.
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
        v
    }

    /// A duration of `lo..hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// What a run did and found, printed and (with `CHAOS_SUMMARY`) written.
#[derive(Serialize)]
struct Summary {
    seed: u64,
    seconds: u64,
    revision: String,
    /// Faults injected, by kind.
    faults: BTreeMap<&'static str, u32>,
    /// Why the disk-full fault did not run, if it did not.
    disk_full_skipped: Option<String>,
    /// Hostile connections made, by kind.
    hostile_inputs: BTreeMap<&'static str, u64>,
    /// The broker's largest resident memory seen (sampled between faults).
    broker_max_rss_mib: u64,
    counts: Counts,
    violations: Vec<String>,
}

#[test]
fn chaos() {
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123);
    let violations = run(secs, seed, &EVERY_FAULT, false);
    assert!(
        violations.is_empty(),
        "seed {seed} (reproduce: CHAOS_SEED={seed} CHAOS_SECS={secs}): {violations:#?}"
    );
}

/// The checker catches a broker that acknowledges before writing: built
/// with the `fault-injection` feature (scripts/test.sh runs this), the
/// broker acks appends as soon as they are buffered, and the kills of the
/// run must show up as lost acknowledged records.
#[cfg(feature = "fault-injection")]
#[test]
fn a_broker_that_acks_before_writing_is_caught() {
    // The faults that lose what a broken broker only buffered.
    let violations = run(15, 20_261_124, &[Fault::BrokerKill, Fault::DiskFull], true);
    // Lost: an acknowledged record missing from the log, or its offset
    // acknowledged again for another record after the restart.
    assert!(
        violations.iter().any(|v| v.contains("acknowledged")),
        "the checker missed the lost writes: {violations:#?}"
    );
    eprintln!("the checker caught the broken build: {violations:#?}");
}

/// One chaos run; the checker's violations (empty when all is well).
fn run(secs: u64, seed: u64, kinds: &[Fault], broken: bool) -> Vec<String> {
    eprintln!("chaos: seed {seed}, {secs} s (reproduce: CHAOS_SEED={seed} CHAOS_SECS={secs})");
    let revision = revision();
    let tmp = tempfile::tempdir().unwrap();
    // The run's own copy of the binary: a rebuild during a long run must not
    // change what is restarted after each kill.
    let bin = tmp.path().join("broker");
    std::fs::copy(env!("CARGO_BIN_EXE_broker"), &bin).unwrap();
    let mount_dir = tmp.path().join("disk");
    // Room for what the run writes (about 8 MiB a minute from the native
    // producers and as much from the Kafka ones, at most ~1,000 records a
    // second each) and the offsets topic, with a margin: the disk is full
    // only when filled.
    let tmpfs = Tmpfs::mount(&mount_dir, 48 + secs as u32 / 2);
    let mut node = Node::new(
        bin.clone(),
        mount_dir.join("data"),
        tmp.path().join("broker.log"),
        broken,
    );
    node.start();
    let bootstrap = node.listen.to_string();
    let quick = ClientConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    Client::connect_with(&bootstrap, quick.clone())
        .unwrap()
        .create_topic(TOPIC, PARTITIONS, &TopicSettings::default())
        .unwrap();

    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let target = load::Target {
        bootstrap: bootstrap.clone(),
        client: quick.clone(),
        topic: TOPIC,
        partitions: PARTITIONS,
        history: history.clone(),
        stop: stop.clone(),
    };
    let mut workers: Vec<_> = (0..2).map(|w| load::producer(w, target.clone())).collect();
    let kafka = node.kafka().to_string();
    workers.extend((0..2).map(|w| load::kafka_producer(w, target.clone(), kafka.clone())));
    workers.push(load::reader(target));
    let hostile_stop = Arc::new(AtomicBool::new(false));
    let hostile = attack(
        seed,
        [node.listen, node.shard_addrs()[0], node.shard_addrs()[1]],
        hostile_stop.clone(),
    );
    let mut members = Members::new(&bin, &bootstrap, TOPIC, GROUP);
    let mut kafka_members = Members::of(
        members::Client::Kafka(kafka.clone()),
        &bin,
        &bootstrap,
        TOPIC,
        KAFKA_GROUP,
    );
    for _ in 0..MEMBERS {
        members.spawn();
        kafka_members.spawn();
    }

    // The fault scheduler.
    let mut rng = Rng(seed);
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut count = |kind| *faults.entry(kind).or_default() += 1;
    let end = Instant::now() + Duration::from_secs(secs);
    // Rounds of every kind of fault asked for, in a random order.
    let mut schedule = Vec::new();
    let mut max_rss_kib = 0;
    while Instant::now() < end {
        thread::sleep(rng.ms(800, 2000));
        max_rss_kib = max_rss_kib.max(node.rss_kib());
        for _ in 0..members.restart_ended() {
            count("member ended by itself, restarted");
        }
        for _ in 0..kafka_members.restart_ended() {
            count("Kafka member ended by itself, restarted");
        }
        if schedule.is_empty() {
            schedule = rng.permutation(kinds.len());
        }
        match kinds[schedule.pop().unwrap()] {
            Fault::BrokerKill => {
                node.kill();
                thread::sleep(rng.ms(0, 300));
                node.start();
                count("broker killed and restarted");
            }
            Fault::BrokerPause => {
                let pause = rng.ms(500, 4000);
                node.pause();
                thread::sleep(pause);
                node.resume();
                count(if pause.as_millis() > u128::from(SESSION_TIMEOUT_MS) {
                    "broker paused past the session timeout"
                } else {
                    "broker paused"
                });
            }
            Fault::DiskFull => {
                if let Ok(disk) = &tmpfs {
                    disk.fill();
                    thread::sleep(rng.ms(500, 2000));
                    disk.free();
                    count("disk full, then freed");
                }
            }
            // Member faults hit the native group or the Kafka one.
            Fault::MemberCrash => {
                let (group, kind) = pick(&mut rng, &mut members, &mut kafka_members);
                group.crash(rng.next() as usize);
                thread::sleep(rng.ms(0, 1000));
                group.spawn();
                count(kind.crashed);
            }
            Fault::MemberPause => {
                let (group, kind) = pick(&mut rng, &mut members, &mut kafka_members);
                let i = rng.next() as usize;
                group.pause(i);
                thread::sleep(rng.ms(SESSION_TIMEOUT_MS, 2 * SESSION_TIMEOUT_MS + 1000));
                group.resume_all();
                count(kind.paused);
            }
            Fault::MemberSlow => {
                let (group, kind) = pick(&mut rng, &mut members, &mut kafka_members);
                let i = rng.next() as usize;
                group.slow(i, 1 + rng.next() % 5);
                thread::sleep(rng.ms(1000, 5000));
                group.resume_all();
                count(kind.slowed);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    hostile_stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let hostile_inputs = hostile.join().unwrap();

    // Every fault lifted: the group must now deliver every acknowledged
    // record.
    members.resume_all();
    kafka_members.resume_all();
    for _ in 0..members.restart_ended() {
        count("member ended by itself, restarted");
    }
    for _ in 0..kafka_members.restart_ended() {
        count("Kafka member ended by itself, restarted");
    }
    while members.len() < MEMBERS {
        members.spawn();
    }
    while kafka_members.len() < MEMBERS {
        kafka_members.spawn();
    }
    // Until the group has delivered every acknowledged record, or has
    // delivered nothing new for a while (what is missing is then reported
    // by the checker), within DRAIN.
    let drain_end = Instant::now() + DRAIN;
    let (mut delivered, mut progress) = (0, Instant::now());
    loop {
        let (undelivered, now_delivered) = {
            let h = history.lock().unwrap();
            let d = members.delivered.lock().unwrap();
            let k = kafka_members.delivered.lock().unwrap();
            let undelivered = h
                .acked
                .keys()
                .filter(|at| !d.records.contains_key(at) || !k.records.contains_key(at))
                .count();
            (undelivered, d.records.len() + k.records.len())
        };
        if now_delivered != delivered {
            (delivered, progress) = (now_delivered, Instant::now());
        }
        if undelivered == 0 || Instant::now() >= drain_end || progress.elapsed() > STALL {
            break;
        }
        members.restart_ended();
        kafka_members.restart_ended();
        thread::sleep(Duration::from_millis(200));
    }
    members.stop_all();
    kafka_members.stop_all();

    // Everything that is in the log now, read by a fresh consumer.
    node.kill();
    node.start();
    let final_log = read_all(&bootstrap, seed);

    let h = history.lock().unwrap();
    let d = members.delivered.lock().unwrap();
    let (mut violations, mut counts) = checker::check(&h, &d, &final_log, PARTITIONS);
    let k = kafka_members.delivered.lock().unwrap();
    let (kafka_violations, kafka_delivered) =
        checker::check_group("the Kafka group", &h, &k, &final_log);
    violations.extend(kafka_violations);
    counts.delivered_to_kafka_group = kafka_delivered;
    counts.kafka_group_memberships_joined = k.joins;
    let summary = Summary {
        seed,
        seconds: secs,
        revision,
        faults,
        disk_full_skipped: tmpfs.as_ref().err().cloned(),
        hostile_inputs,
        broker_max_rss_mib: max_rss_kib / 1024,
        counts,
        violations,
    };
    let json = serde_json::to_string_pretty(&summary).unwrap();
    eprintln!("chaos: {json}");
    if let Some(path) = std::env::var_os("CHAOS_SUMMARY") {
        std::fs::write(path, &json).unwrap();
    }
    for exit in d.exits.iter().take(5) {
        eprintln!("chaos: a member ended by itself: {exit}");
    }
    drop(d);
    assert!(
        summary.counts.acknowledged > 100,
        "seed {seed}: the load barely ran"
    );
    assert!(summary.faults.values().sum::<u32>() > 0);
    drop(members);
    drop(node);
    drop(tmpfs);
    summary.violations
}

/// Hostile connections to `addrs` in turn, each of the next kind, until
/// `stop`; how many of each kind were made.
fn attack(
    seed: u64,
    addrs: [SocketAddr; 3],
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<BTreeMap<&'static str, u64>> {
    thread::spawn(move || {
        let mut rng = hostile::Rng(seed | 1);
        let mut made: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let kind = n % hostile::KINDS.len();
            hostile::attempt(addrs[n % addrs.len()], kind, &mut rng, TOPIC);
            *made.entry(hostile::KINDS[kind]).or_default() += 1;
            n += 1;
            thread::sleep(Duration::from_millis(20));
        }
        made
    })
}

/// The whole log, partition by partition, up to each end offset.
fn read_all(bootstrap: &str, seed: u64) -> FinalLog {
    let mut final_log = FinalLog::new();
    let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).unwrap();
    let client = Client::connect(bootstrap).unwrap();
    for p in 0..PARTITIONS {
        consumer.assign(TOPIC, p, StartOffset::Earliest).unwrap();
    }
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            client
                .list_offsets(TOPIC, p, broker_protocol::OffsetQuery::Latest)
                .unwrap()
                .offset
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..PARTITIONS).any(|p| consumer.position(TOPIC, p).unwrap_or(0) < ends[p as usize]) {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: final read did not finish"
        );
        for r in consumer.poll(Duration::from_millis(500)).unwrap() {
            let value = String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string();
            assert!(
                final_log.insert((r.partition, r.offset), value).is_none(),
                "seed {seed}: offset {}/{} delivered twice in one read",
                r.partition,
                r.offset
            );
        }
    }
    final_log
}

/// The commit under test: `CHAOS_REVISION` (scripts/chaos.sh sets it when
/// it builds), else `git describe` as the run starts, or "unknown".
fn revision() -> String {
    if let Ok(r) = std::env::var("CHAOS_REVISION") {
        return r;
    }
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Fault counter names for one group's member faults.
struct MemberFaults {
    crashed: &'static str,
    paused: &'static str,
    slowed: &'static str,
}

/// The native group or the Kafka one, at random, with its fault names.
fn pick<'a>(
    rng: &mut Rng,
    native: &'a mut Members,
    kafka: &'a mut Members,
) -> (&'a mut Members, MemberFaults) {
    if rng.next() % 2 == 0 {
        (
            native,
            MemberFaults {
                crashed: "member crashed (SIGKILL), restarted",
                paused: "member paused past the session timeout",
                slowed: "member slowed down",
            },
        )
    } else {
        (
            kafka,
            MemberFaults {
                crashed: "Kafka member crashed (SIGKILL), restarted",
                paused: "Kafka member paused past the session timeout",
                slowed: "Kafka member slowed down",
            },
        )
    }
}
