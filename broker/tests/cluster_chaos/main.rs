//! The cluster chaos run: three brokers, all of them controllers, the
//! links between the controllers behind netfault proxies; two topics of
//! six partitions created through different brokers; producer threads
//! (acks from the partition's broker after fsync, every record awaited,
//! each value carrying a unique id) recording every acknowledgement as
//! (topic, partition, offset, value); and a seeded fault loop, one fault at
//! a time, each undone before the next:
//! - SIGKILL of a broker, restarted after a while;
//! - SIGSTOP of a broker for longer than its session timeout, then SIGCONT;
//! - a controller isolated by the proxies (Drop or Cut), then healed;
//! - a one-way partition between two controllers, then healed;
//! - topic creates and deletes through a random broker while a fault
//!   holds (an acknowledged create must exist at the end; a failed one may
//!   or may not).
//!
//! At the end everything is healed, resumed and restarted, and once every
//! broker is unfenced and the controllers agree, the checker (checker.rs,
//! pure functions with their own tests) reports: acknowledged records lost
//! or misplaced (each partition read from the start through another
//! broker), acknowledged topics lost, deleted ones back, a topic listed
//! twice, and metadata differing between brokers or controllers. The
//! summary is printed as JSON (and written to `CLUSTER_CHAOS_SUMMARY` if
//! set); any violation fails the run with its seed.
//!
//! Built with the `fault-injection` feature, a second test runs broker
//! kills only against brokers that acknowledge appends before writing
//! them, and requires the checker to report acknowledged records lost.
//!
//! `CLUSTER_CHAOS_SECONDS` (default 20) and `CLUSTER_CHAOS_SEED` (default
//! fixed) choose the run; `scripts/chaos-cluster.sh` runs a longer one.
#![allow(clippy::unwrap_used)]

mod checker;
#[path = "../cluster_support/mod.rs"]
mod cluster_support;

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use broker_client::{
    ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset, TopicSettings,
};
use broker_netfault::Fault as NetFault;
use checker::{Ack, AdminOp, ControllerView, Listing, ReadBack, RecordCounts};
use cluster_support::{Cluster, SESSION_TIMEOUT_MS};
use serde::Serialize;

const BROKERS: usize = 3;
const PARTITIONS: u32 = 6;
const TOPICS: [&str; 2] = ["chaos-a", "chaos-b"];
const PRODUCERS: usize = 3;
/// Least pause between two sends of one producer: its rate bound.
const SEND_GAP: Duration = Duration::from_millis(3);
/// Most faults in a run, whatever its length.
const MAX_FAULTS: u32 = 2_000;
/// How long the cluster may take to settle at the end (a bound on a hang).
const SETTLE: Duration = Duration::from_secs(90);

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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }

    fn blocking(&mut self) -> NetFault {
        if self.below(2) == 0 {
            NetFault::Drop
        } else {
            NetFault::Cut
        }
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    }
}

/// Admin calls: a controller call may take 8 s before the next is tried.
fn admin_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    }
}

#[derive(Serialize)]
struct Summary {
    seed: u64,
    seconds: u64,
    revision: String,
    faults: BTreeMap<&'static str, u32>,
    /// Producer sends that failed (unacknowledged: may or may not exist).
    send_errors: u64,
    records: RecordCounts,
    /// Topic admin during faults: acknowledged and failed, by kind.
    topic_ops: BTreeMap<&'static str, u32>,
    /// The topics at the end (every broker's list, when they agree).
    topics: Vec<(String, u32)>,
    /// The controllers at the end.
    controllers: Vec<ControllerView>,
    /// Seconds the cluster took to settle after the last fault.
    settle_seconds: f64,
    violations: Vec<String>,
}

/// One run at a time in this process: the broken build's test sets an
/// environment variable every broker it starts inherits.
static ONE_RUN: Mutex<()> = Mutex::new(());

#[test]
fn cluster_chaos() {
    let _one = ONE_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let secs: u64 = env_or("CLUSTER_CHAOS_SECONDS", 20);
    let seed: u64 = env_or("CLUSTER_CHAOS_SEED", 20_261_203);
    println!(
        "cluster chaos: seed {seed}, {secs} s (reproduce: CLUSTER_CHAOS_SEED={seed} CLUSTER_CHAOS_SECONDS={secs})"
    );
    let summary = run(secs, seed, false);
    let json = serde_json::to_string_pretty(&summary).unwrap();
    println!("{json}");
    if let Some(path) = std::env::var_os("CLUSTER_CHAOS_SUMMARY") {
        std::fs::write(&path, format!("{json}\n")).unwrap();
    }
    assert!(
        summary.violations.is_empty(),
        "seed {seed} (reproduce: CLUSTER_CHAOS_SEED={seed} CLUSTER_CHAOS_SECONDS={secs}): {:#?}",
        summary.violations
    );
    assert!(
        summary.records.acknowledged > 100,
        "too few records acknowledged"
    );
    assert!(
        summary.faults.values().sum::<u32>() > 0,
        "no fault injected"
    );
}

/// The checker catches brokers that acknowledge before writing: built with
/// the `fault-injection` feature (scripts/test.sh runs this), with
/// `BROKER_FAULT_ACK_BEFORE_DURABLE=1` every broker acks appends once they
/// are buffered, and a run of broker kills only must end with acknowledged
/// records lost (or their offsets holding other records).
#[cfg(feature = "fault-injection")]
#[test]
fn a_cluster_that_acks_before_writing_is_caught() {
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            std::env::remove_var("BROKER_FAULT_ACK_BEFORE_DURABLE");
        }
    }
    let _one = ONE_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    std::env::set_var("BROKER_FAULT_ACK_BEFORE_DURABLE", "1");
    let _unset = Unset;
    let summary = run(20, 20_261_205, true);
    let r = &summary.records;
    assert!(
        r.lost + r.misplaced + r.acked_twice > 0,
        "the checker missed the lost writes: {} faults, {:?}, {:#?}",
        summary.faults.values().sum::<u32>(),
        r,
        summary.violations
    );
    println!(
        "the checker caught the broken build: {} lost, {} misplaced, {} acknowledged twice",
        r.lost, r.misplaced, r.acked_twice
    );
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One run; `kills_only`: every fault a broker SIGKILL (for the broken
/// build's test).
fn run(secs: u64, seed: u64, kills_only: bool) -> Summary {
    let mut rng = Rng(seed);
    let mut cluster = Cluster::start_members_behind_proxies(BROKERS, 1, BROKERS, seed);
    let direct = cluster.controllers();
    let addrs: Vec<String> = (0..BROKERS).map(|i| cluster.addr(i).to_string()).collect();
    wait("every broker admitted", Duration::from_secs(60), || {
        settled(&direct).map(|_| ())
    });
    // The producers' topics, through different brokers.
    let mut history: Vec<(String, AdminOp)> = Vec::new();
    for (k, topic) in TOPICS.iter().enumerate() {
        let at = &addrs[k % BROKERS];
        let created = broker_client::Client::connect_with(at, admin_config())
            .unwrap()
            .create_topic(topic, PARTITIONS, &TopicSettings::default())
            .unwrap();
        assert_eq!(created.partitions, PARTITIONS);
        history.push(((*topic).into(), AdminOp::Created(PARTITIONS)));
    }
    for at in &addrs {
        wait(
            "the topics on every broker",
            Duration::from_secs(20),
            || {
                let l = listing(at)?;
                TOPICS
                    .iter()
                    .all(|t| l.iter().any(|(n, _)| n == t))
                    .then_some(())
            },
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|k| {
            let bootstrap = addrs.join(",");
            let (stop, acks, errors) = (stop.clone(), acks.clone(), errors.clone());
            thread::Builder::new()
                .name(format!("producer-{k}"))
                .spawn(move || produce(k, &bootstrap, &stop, &acks, &errors))
                .unwrap()
        })
        .collect();

    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut admin = Admin {
        addrs: addrs.clone(),
        topics: Vec::new(),
        next: 0,
        history,
        ops: BTreeMap::new(),
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mesh_len = cluster.mesh().unwrap().len();
    let mut count = 0;
    let first_kind = rng.below(4);
    while Instant::now() < deadline && count < MAX_FAULTS {
        count += 1;
        thread::sleep(rng.ms(300, 1_500));
        // The first four faults are one of each kind (in a seeded order),
        // so that a short run has them all; then any.
        let kind = if kills_only {
            0
        } else if count <= 4 {
            (first_kind + u64::from(count)) % 4
        } else {
            rng.below(4)
        };
        let mut hold = rng.ms(1_000, 4_000);
        // Applied now; undone once it held (and topic admin went on).
        let (name, down, undo) = match kind {
            0 => {
                let b = rng.below(BROKERS as u64) as usize;
                println!("fault {count}: SIGKILL broker {b}, restart after {hold:?}");
                cluster.kill(b);
                ("broker_kill", Some(b), Undo::Restart(b))
            }
            1 => {
                let b = rng.below(BROKERS as u64) as usize;
                hold = Duration::from_millis(SESSION_TIMEOUT_MS) + rng.ms(500, 2_500);
                println!("fault {count}: SIGSTOP broker {b} for {hold:?}");
                cluster.pause(b);
                ("broker_pause", Some(b), Undo::Resume(b))
            }
            2 => {
                let c = rng.below(mesh_len as u64) as usize;
                let f = rng.blocking();
                println!("fault {count}: isolate controller {c} ({f:?}) for {hold:?}");
                cluster.mesh().unwrap().isolate(c, f);
                ("controller_isolate", None, Undo::Heal)
            }
            _ => {
                let from = rng.below(mesh_len as u64) as usize;
                let to = (from + 1 + rng.below(mesh_len as u64 - 1) as usize) % mesh_len;
                let f = rng.blocking();
                println!("fault {count}: one-way {from} -> {to} ({f:?}) for {hold:?}");
                cluster.mesh().unwrap().one_way(from, to, f);
                ("one_way_partition", None, Undo::Heal)
            }
        };
        admin.during(&mut rng, down, hold);
        match undo {
            Undo::Restart(b) => cluster.restart(b),
            Undo::Resume(b) => cluster.resume(b),
            Undo::Heal => cluster.mesh().unwrap().heal(),
        }
        *faults.entry(name).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }

    // Everything lifted, then the cluster must settle.
    cluster.mesh().unwrap().heal();
    for i in 0..BROKERS {
        if cluster.pid(i).is_none() {
            cluster.restart(i);
        }
    }
    let settle_start = Instant::now();
    let mut violations = Vec::new();
    let settled_views = wait_opt(SETTLE, || {
        let views = settled(&direct)?;
        // The brokers' lists agree with one another too, twice in a row.
        let lists: Vec<_> = addrs.iter().map(|a| listing(a)).collect();
        let first = lists[0].clone()?;
        if lists
            .iter()
            .any(|l| l.as_ref().map(sorted) != Some(sorted(&first)))
        {
            return None;
        }
        thread::sleep(Duration::from_millis(500));
        (settled(&direct)? == views).then_some(views)
    });
    let settle_seconds = settle_start.elapsed().as_secs_f64();
    if settled_views.is_none() {
        violations.push(format!(
            "the cluster did not settle within {SETTLE:?} (every broker unfenced, controllers and brokers agreeing): {}",
            status_json(&direct).map_or_else(|| "no status".into(), |s| s.to_string())
        ));
    }
    let views = controller_views(&direct);
    let listings: Vec<Option<Listing>> = addrs.iter().map(|a| listing(a)).collect();

    // (a) Every acknowledged record at its place, read through a broker
    // other than the partition's index would suggest.
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let mut read = ReadBack::new();
    for (k, topic) in TOPICS.iter().enumerate() {
        let at = &addrs[(k + 1) % BROKERS];
        let (r, error) = read_topic(at, topic);
        read.extend(r);
        if let Some(e) = error {
            violations.push(format!("reading {topic} back through {at}: {e}"));
        }
    }
    let (records, record_violations) = checker::check_records(&acks, &read);
    violations.extend(record_violations.into_iter().take(50));
    if records.lost + records.misplaced > 50 {
        violations.push(format!(
            "... {} lost and {} misplaced in all",
            records.lost, records.misplaced
        ));
    }
    // (b) Topics as their admin said; (c) the same metadata everywhere.
    let expected = checker::expected_topics(&admin.history);
    violations.extend(checker::check_topics(&expected, &listings));
    // The offsets topic: in the image, not in the brokers' lists.
    violations.extend(checker::check_metadata(&listings, &views, BROKERS, 1));
    if !violations.is_empty() {
        for i in 0..BROKERS {
            let log = cluster.stderr(i);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- broker {i} stderr (last 40 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    let send_errors = *errors.lock().unwrap();
    Summary {
        seed,
        seconds: secs,
        revision: std::env::var("CLUSTER_CHAOS_REVISION").unwrap_or_else(|_| "unknown".into()),
        faults,
        send_errors,
        records,
        topic_ops: admin.ops,
        topics: listings[0].clone().map(|l| sorted(&l)).unwrap_or_default(),
        controllers: views,
        settle_seconds,
        violations,
    }
}

fn sorted(l: &Listing) -> Listing {
    let mut l = l.clone();
    l.sort();
    l
}

/// What a fault does until it is undone.
enum Undo {
    Restart(usize),
    Resume(usize),
    Heal,
}

/// Topic admin during the faults, and its outcomes.
struct Admin {
    addrs: Vec<String>,
    /// Topics this loop created (or tried to): the ones it may delete.
    topics: Vec<String>,
    next: u32,
    history: Vec<(String, AdminOp)>,
    ops: BTreeMap<&'static str, u32>,
}

impl Admin {
    /// While a fault holds (`hold`), at most two topic admin requests through
    /// random brokers (not the `down` one: a stopped broker only times out): a create of a new topic or a delete of one created
    /// earlier by this loop (never the producers' topics). Each outcome goes
    /// into `history`.
    fn during(&mut self, rng: &mut Rng, down: Option<usize>, hold: Duration) {
        let addrs = &self.addrs;
        let until = Instant::now() + hold;
        let n = rng.below(3);
        for _ in 0..n {
            thread::sleep(
                rng.ms(100, 800)
                    .min(until.saturating_duration_since(Instant::now())),
            );
            let up: Vec<&String> = (0..addrs.len())
                .filter(|&i| Some(i) != down)
                .map(|i| &addrs[i])
                .collect();
            let at = up[rng.below(up.len() as u64) as usize];
            let delete = !self.topics.is_empty() && rng.below(3) == 0;
            if delete {
                let k = rng.below(self.topics.len() as u64) as usize;
                let name = self.topics.swap_remove(k);
                let result = broker_client::Client::connect_with(at, admin_config())
                    .and_then(|c| c.delete_topic(&name));
                println!("  delete {name} at {at}: {result:?}");
                let op = match result {
                    Ok(()) => AdminOp::Deleted,
                    Err(_) => AdminOp::DeleteFailed,
                };
                *self
                    .ops
                    .entry(if op == AdminOp::Deleted {
                        "delete_ok"
                    } else {
                        "delete_failed"
                    })
                    .or_default() += 1;
                self.history.push((name, op));
            } else {
                self.next += 1;
                let name = format!("admin-{}", self.next);
                let partitions = 1 + rng.below(4) as u32;
                let result = broker_client::Client::connect_with(at, admin_config())
                    .and_then(|c| c.create_topic(&name, partitions, &TopicSettings::default()));
                println!("  create {name} ({partitions} partitions) at {at}: {result:?}");
                let op = match result {
                    Ok(created) if created.partitions == partitions => AdminOp::Created(partitions),
                    Ok(created) => {
                        // Recorded as what it said; the checker then finds the
                        // list disagreeing with it.
                        AdminOp::Created(created.partitions)
                    }
                    // Timed out, refused, or met a fault: it may exist.
                    Err(_) => AdminOp::CreateFailed,
                };
                *self
                    .ops
                    .entry(match op {
                        AdminOp::Created(_) => "create_ok",
                        _ => "create_failed",
                    })
                    .or_default() += 1;
                self.history.push((name.clone(), op));
                // A failed create may exist: it may be deleted later too.
                self.topics.push(name);
            }
        }
        thread::sleep(until.saturating_duration_since(Instant::now()));
    }
}

/// One producer: round-robin over the topics' partitions, each record's
/// acknowledgement awaited; on an error the producer is made again.
fn produce(
    k: usize,
    bootstrap: &str,
    stop: &AtomicBool,
    acks: &Mutex<Vec<Ack>>,
    errors: &Mutex<u64>,
) {
    let config = || ProducerConfig {
        client: client_config(),
        retries: 3,
        linger_ms: 0,
        ..ProducerConfig::default()
    };
    let mut producer: Option<Producer> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(SEND_GAP);
        let p = match &producer {
            Some(p) => p,
            None => match Producer::connect(bootstrap, config()) {
                Ok(p) => producer.insert(p),
                Err(_) => {
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        seq += 1;
        let topic = TOPICS[(seq % TOPICS.len() as u64) as usize];
        let partition = ((seq / TOPICS.len() as u64 + k as u64) % PARTITIONS as u64) as u32;
        let value = format!("p{k}-{seq}|{}", "x".repeat((seq % 64) as usize)).into_bytes();
        let outcome = p
            .send_to(topic, partition, None, &value)
            .map(|f| f.wait_timeout(Duration::from_secs(30)));
        match outcome {
            Ok(Some(Ok(meta))) => {
                let offset = meta.offset.expect("acks from the leader carry the offset");
                acks.lock().unwrap().push(Ack {
                    topic: topic.into(),
                    partition: meta.partition,
                    offset,
                    value,
                });
            }
            _ => {
                *errors.lock().unwrap() += 1;
                // A new producer: the old one's connections may be to a
                // broker that is gone.
                producer = None;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads every partition of `topic` from the start through `at`, up to
/// its high watermark (the producers have stopped): what it read, and why
/// it stopped early if it did (bounded).
fn read_topic(at: &str, topic: &str) -> (ReadBack, Option<String>) {
    let mut read = ReadBack::new();
    for p in 0..PARTITIONS {
        read.insert((topic.into(), p), BTreeMap::new());
    }
    let consumer = Consumer::connect(
        at,
        ConsumerConfig {
            fetch_max_wait_ms: 100,
            client: client_config(),
            ..ConsumerConfig::default()
        },
    );
    let mut consumer = match consumer {
        Ok(c) => c,
        Err(e) => return (read, Some(e.to_string())),
    };
    for p in 0..PARTITIONS {
        if let Err(e) = consumer.assign(topic, p, StartOffset::Earliest) {
            return (read, Some(e.to_string()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    loop {
        let done = (0..PARTITIONS).all(|p| {
            let pos = consumer.position(topic, p).unwrap_or(0);
            consumer
                .high_watermark(topic, p)
                .is_some_and(|hw| pos >= hw)
        });
        if done {
            return (read, None);
        }
        if Instant::now() > deadline {
            let at: Vec<_> = (0..PARTITIONS)
                .map(|p| {
                    (
                        consumer.position(topic, p),
                        consumer.high_watermark(topic, p),
                    )
                })
                .collect();
            return (
                read,
                Some(format!(
                    "not read to the end within 60 s (last error {last_error:?}); positions and high watermarks {at:?}"
                )),
            );
        }
        match consumer.poll(Duration::from_millis(300)) {
            Ok(records) => {
                for r in records {
                    read.entry((topic.into(), r.partition))
                        .or_default()
                        .insert(r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default());
                }
            }
            Err(e) => {
                last_error = Some(e.to_string());
                thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Broker `at`'s topic list, if it answers.
fn listing(at: &str) -> Option<Listing> {
    let client = broker_client::Client::connect_with(at, client_config()).ok()?;
    let topics = client.list_topics().ok()?;
    Some(topics.into_iter().map(|t| (t.name, t.partitions)).collect())
}

/// `broker cluster status --json` of the controllers (direct, not through
/// the proxies).
fn status_json(direct: &str) -> Option<serde_json::Value> {
    let out = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_broker"), "cluster", "status"])
        .args(["--controllers", direct, "--json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Every controller's own view that answered.
fn controller_views(direct: &str) -> Vec<ControllerView> {
    let Some(s) = status_json(direct) else {
        return Vec::new();
    };
    views_of(&s)
}

fn views_of(s: &serde_json::Value) -> Vec<ControllerView> {
    s["controllers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    let st = c.get("status")?;
                    Some(ControllerView {
                        node_id: st["node_id"].as_u64()?,
                        leader: st["leader"].as_u64(),
                        term: st["term"].as_u64().unwrap_or(0),
                        last_applied: st["last_applied"].as_u64(),
                        version: st["cluster"]["version"].as_u64().unwrap_or(0),
                        topics: st["cluster"]["topics"].as_u64().unwrap_or(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The controllers' views once every broker is unfenced and every
/// controller answers with the same leader, term, applied index and
/// image; `None` before.
fn settled(direct: &str) -> Option<Vec<ControllerView>> {
    let s = status_json(direct)?;
    let brokers = s["cluster"]["brokers"].as_array()?;
    if brokers.len() != BROKERS || brokers.iter().any(|b| b["state"] != "unfenced") {
        return None;
    }
    let views = views_of(&s);
    let first = views.first()?;
    let agree = views.len() == BROKERS
        && first.leader.is_some()
        && views.iter().all(|v| {
            (v.leader, v.term, v.last_applied, v.version)
                == (first.leader, first.term, first.last_applied, first.version)
        });
    agree.then_some(views)
}

fn wait<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_opt(limit, f).unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

fn wait_opt<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(250));
    }
}
