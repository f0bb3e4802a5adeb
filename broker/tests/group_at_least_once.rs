//! At-least-once delivery of a consumer group under crashes, on the real
//! binary: producer threads write uniquely numbered records while `broker
//! consume --group` processes join, are SIGKILLed (no commit, no leave),
//! stop gracefully (SIGTERM: commit, leave) and start again at random
//! (fixed seed, printed; `GROUP_SEED=n` to replay another). At the end:
//! - no gap: every acknowledged record was printed by some process, at the
//!   partition and offset its acknowledgement named;
//! - order: within one process and one generation, each partition's
//!   records come at consecutive offsets;
//! - one owner: in a generation, a partition's records are printed only by
//!   the process whose join of that generation was assigned the partition;
//! - so duplicates only come after a crash or a rebalance: no record is
//!   printed twice in one generation. Duplicates are counted and printed,
//!   split by what preceded them (the earlier printer was SIGKILLed, or
//!   the partition moved in a rebalance).
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use broker_client::{Client, Producer, ProducerConfig, TopicSettings};
use server_support::{collect_lines, Broker};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;
const GROUP: &str = "alo";
const PRODUCERS: usize = 2;
/// How long members crash and restart while producers write.
const CHAOS: Duration = Duration::from_secs(15);
/// Most members alive at once.
const MEMBERS_MAX: usize = 4;
/// Bound on waiting for the group to drain (not a speed check).
const DRAIN: Duration = Duration::from_secs(60);

/// xorshift64*: a fixed seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One consumer process and the lines it printed.
struct Member {
    name: usize,
    child: Child,
    /// "GENERATION PARTITION OFFSET VALUE" lines.
    lines: Arc<Mutex<Vec<String>>>,
    /// Its "joined group" lines, among the rest of its stderr.
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// What an ended member printed.
struct Output {
    name: usize,
    lines: Vec<String>,
    stderr: Vec<String>,
    killed: bool,
}

impl Member {
    fn spawn(broker: &Broker, name: usize, commit_ms: u64) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["consume", TOPIC, "--group", GROUP, "--print-offsets"])
            .args(["--session-timeout-ms", "1000"])
            .args(["--auto-commit-interval-ms", &commit_ms.to_string()])
            .args(["--bootstrap", &broker.listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Member {
            name,
            child,
            lines,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Whether it has joined a generation (so its signal handlers are in
    /// place: a SIGTERM is a graceful stop, not a kill at start-up).
    fn joined(&self) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("joined group"))
    }

    /// Ends the process with `signal`; what it printed, and whether it
    /// exited successfully.
    fn end(mut self, signal: i32) -> (Output, bool) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let output = Output {
            name: self.name,
            lines: std::mem::take(&mut *self.lines.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
            killed: signal == libc::SIGKILL,
        };
        (output, status.success())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A "joined group G as member M in generation N: partitions [T/P, ...]"
/// line: (member, generation, partitions).
fn parse_join(line: &str) -> Option<(String, i32, BTreeSet<u32>)> {
    let rest = line.split(" as member ").nth(1)?;
    let (member, rest) = rest.split_once(" in generation ")?;
    let (generation, rest) = rest.split_once(": partitions [")?;
    let partitions = rest
        .trim_end_matches(']')
        .split(", ")
        .filter(|tp| !tp.is_empty())
        .map(|tp| tp.rsplit_once('/').unwrap().1.parse().unwrap())
        .collect();
    Some((member.to_owned(), generation.parse().ok()?, partitions))
}

/// A printed line: generation, partition, offset, value.
fn parse(line: &str) -> (i32, u32, i64, String) {
    let mut f = line.splitn(4, ' ');
    let mut next = || f.next().unwrap();
    let generation = next().parse().unwrap();
    let partition = next().parse().unwrap();
    let offset = next().parse().unwrap();
    (generation, partition, offset, next().to_owned())
}

#[test]
fn crashing_and_restarting_members_miss_nothing_and_keep_partition_order() {
    let seed: u64 = std::env::var("GROUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2011);
    println!("seed {seed} (GROUP_SEED={seed} replays its schedule)");
    let mut rng = Rng(seed | 1);

    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &[]);
    let client = Client::connect(&broker.listen.to_string()).unwrap();
    client
        .create_topic(TOPIC, PARTITIONS, &TopicSettings::default())
        .unwrap();

    // Producers: "p<producer>-<seq>", keyed by the value; every ack's
    // partition and offset is kept.
    let producing = Arc::new(AtomicBool::new(true));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let (client, producing) = (client.clone(), Arc::clone(&producing));
            thread::spawn(move || {
                let producer = Producer::with_client(client, ProducerConfig::default()).unwrap();
                let mut pending = Vec::new();
                let mut seq = 0u64;
                while producing.load(Ordering::Relaxed) {
                    for _ in 0..20 {
                        let v = format!("p{id}-{seq}");
                        seq += 1;
                        let f = producer
                            .send(TOPIC, Some(v.as_bytes()), v.as_bytes())
                            .unwrap();
                        pending.push((v, f));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                producer.flush();
                pending
                    .into_iter()
                    .map(|(v, f)| {
                        let m = f.wait().unwrap();
                        (v, (m.partition, m.offset.unwrap()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();

    // Chaos: members join, crash and stop at random.
    let mut alive: Vec<Member> = Vec::new();
    let mut outputs: Vec<Output> = Vec::new();
    let (mut spawned, mut killed, mut stopped) = (0usize, 0usize, 0usize);
    let spawn = |alive: &mut Vec<Member>, spawned: &mut usize, rng: &mut Rng| {
        let commit_ms = 100 + rng.below(1500);
        alive.push(Member::spawn(&broker, *spawned, commit_ms));
        *spawned += 1;
    };
    let chaos_end = Instant::now() + CHAOS;
    spawn(&mut alive, &mut spawned, &mut rng);
    while Instant::now() < chaos_end {
        thread::sleep(Duration::from_millis(200 + rng.below(800)));
        match rng.below(10) {
            0..=3 if alive.len() < MEMBERS_MAX => spawn(&mut alive, &mut spawned, &mut rng),
            4..=6 if alive.len() > 1 => {
                let m = alive.remove(rng.below(alive.len() as u64) as usize);
                outputs.push(m.end(libc::SIGKILL).0);
                killed += 1;
            }
            7 if alive.len() > 1 => {
                // Only a member that has joined: one still starting may not
                // handle SIGTERM yet.
                let joined: Vec<usize> = (0..alive.len()).filter(|&i| alive[i].joined()).collect();
                if joined.is_empty() {
                    continue;
                }
                let m = alive.remove(joined[rng.below(joined.len() as u64) as usize]);
                let (output, ok) = m.end(libc::SIGTERM);
                assert!(ok, "member {} did not exit cleanly on SIGTERM", output.name);
                outputs.push(output);
                stopped += 1;
            }
            _ => {}
        }
    }
    producing.store(false, Ordering::Relaxed);
    let mut acked: HashMap<String, (u32, i64)> = HashMap::new();
    for p in producers {
        acked.extend(p.join().unwrap());
    }

    // Drain: at least two members run until the group has committed up to
    // every partition's high watermark, then stop gracefully.
    while alive.len() < 2 {
        spawn(&mut alive, &mut spawned, &mut rng);
    }
    let mut hw = BTreeMap::new();
    for p in 0..PARTITIONS {
        let o = client
            .list_offsets(TOPIC, p, broker_client::OffsetQuery::Latest)
            .unwrap();
        hw.insert(p, o.high_watermark);
    }
    assert_eq!(hw.values().sum::<i64>() as usize, acked.len());
    let started = Instant::now();
    let deadline = started + DRAIN;
    loop {
        let d = client.describe_group(GROUP).unwrap();
        let committed: BTreeMap<u32, i64> =
            d.offsets.iter().map(|o| (o.partition, o.offset)).collect();
        if committed == hw && alive.iter().all(Member::joined) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never committed {hw:?}: {committed:?} (seed {seed})"
        );
        thread::sleep(Duration::from_millis(100));
    }
    println!("drained after {:?}", started.elapsed());
    for m in alive.drain(..) {
        let (output, ok) = m.end(libc::SIGTERM);
        assert!(
            ok,
            "member {} did not exit cleanly on SIGTERM (seed {seed})",
            output.name
        );
        outputs.push(output);
        stopped += 1;
    }

    // No gap, at the right place; order per process, generation and
    // partition; one printer per generation and partition, the one it was
    // assigned to.
    let mut deliveries: HashMap<&str, Vec<(i32, usize)>> = HashMap::new();
    let mut printer: HashMap<(i32, u32), usize> = HashMap::new();
    let mut lines_total = 0usize;
    let mut rejoined_as_new = 0usize;
    for out in &outputs {
        let name = out.name;
        let joins: Vec<(String, i32, BTreeSet<u32>)> =
            out.stderr.iter().filter_map(|l| parse_join(l)).collect();
        let assigned: HashMap<i32, &BTreeSet<u32>> =
            joins.iter().map(|(_, g, ps)| (*g, ps)).collect();
        let ids: BTreeSet<&str> = joins.iter().map(|(m, _, _)| m.as_str()).collect();
        // Dropped by the coordinator while alive (missed a rebalance, or
        // its session expired), it joined again as a new member.
        rejoined_as_new += ids.len().saturating_sub(1);
        let mut last: HashMap<(i32, u32), i64> = HashMap::new();
        for line in &out.lines {
            lines_total += 1;
            let (generation, partition, offset, value) = parse(line);
            let Some((value, &(p, o))) = acked.get_key_value(&value) else {
                panic!("member {name} printed {line:?}, which was never acknowledged");
            };
            assert_eq!(
                (partition, offset),
                (p, o),
                "member {name}: {value} is at {p}/{o} (seed {seed})"
            );
            if let Some(prev) = last.insert((generation, partition), offset) {
                assert_eq!(
                    offset,
                    prev + 1,
                    "member {name}, generation {generation}, partition {partition}: \
                     offset {offset} after {prev} (seed {seed})"
                );
            }
            assert!(
                assigned
                    .get(&generation)
                    .is_some_and(|ps| ps.contains(&partition)),
                "member {name} printed partition {partition} in generation {generation}, \
                 which its joins did not assign it: {joins:?} (seed {seed})"
            );
            let first = *printer.entry((generation, partition)).or_insert(name);
            assert_eq!(
                first, name,
                "generation {generation}: partition {partition} printed by members {first} \
                 and {name} (seed {seed})"
            );
            deliveries
                .entry(value.as_str())
                .or_default()
                .push((generation, name));
        }
    }

    // Duplicates only after a crash or a rebalance: a record printed again
    // is printed in a later generation, and the delivery before it was by
    // a member that was then SIGKILLed, or that lost the partition in a
    // rebalance without its commit (it was fenced first).
    let was_killed: HashMap<usize, bool> = outputs.iter().map(|o| (o.name, o.killed)).collect();
    let (mut after_crash, mut after_rebalance) = (0usize, 0usize);
    for (value, list) in &mut deliveries {
        list.sort_unstable();
        for pair in list.windows(2) {
            let ((g0, m0), (g1, m1)) = (pair[0], pair[1]);
            assert!(
                g0 < g1,
                "{value} printed twice in generation {g0}, by members {m0} and {m1} (seed {seed})"
            );
            if was_killed[&m0] {
                after_crash += 1;
            } else {
                after_rebalance += 1;
            }
        }
    }
    let missing: Vec<&String> = acked
        .keys()
        .filter(|v| !deliveries.contains_key(v.as_str()))
        .collect();
    let duplicates = after_crash + after_rebalance;
    let records_duplicated = deliveries.values().filter(|l| l.len() > 1).count();
    let generations: BTreeSet<i32> = printer.keys().map(|(g, _)| *g).collect();
    println!(
        "seed {seed}: {} records produced, {lines_total} printed by {spawned} members \
         ({killed} SIGKILLed, {stopped} stopped by SIGTERM) over {} generations; \
         {duplicates} duplicate deliveries of {records_duplicated} records \
         ({after_crash} after a SIGKILL, {after_rebalance} after a rebalance); \
         {rejoined_as_new} rejoins as a new member; {} missing",
        acked.len(),
        generations.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged records never consumed, e.g. {:?} (seed {seed})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(lines_total, acked.len() + duplicates);
}
