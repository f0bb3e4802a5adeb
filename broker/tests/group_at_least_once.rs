//! At-least-once delivery of a consumer group under crashes, on the real
//! binary: producer threads write uniquely numbered records while `broker
//! consume --group` processes join, are SIGKILLed (no commit, no leave),
//! stop gracefully (SIGTERM: commit, leave) and start again at random
//! (fixed seed, printed; `GROUP_SEED=n` to replay another). At the end:
//! - no gap: every acknowledged record was printed by some process, at the
//!   partition and offset its acknowledgement named;
//! - order: within one process and one generation, each partition's
//!   records come at consecutive offsets (a rewind, i.e. a duplicate, only
//!   happens across a crash or a rebalance);
//! - duplicates are counted and printed.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use broker::client::{Client, Producer, ProducerConfig, TopicSettings};
use server_support::Broker;

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
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                // A line cut by SIGKILL has no newline: never committed,
                // not counted.
                if line.ends_with(b"\n") {
                    line.pop();
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8(line.clone()).unwrap());
                }
                line.clear();
            }
        });
        Member {
            name,
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Ends the process with `signal` and returns what it printed.
    fn end(mut self, signal: i32) -> (usize, Vec<String>, bool) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        (self.name, lines, status.success())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut outputs: Vec<(usize, Vec<String>)> = Vec::new();
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
                let (name, lines, _) = m.end(libc::SIGKILL);
                outputs.push((name, lines));
                killed += 1;
            }
            7 if alive.len() > 1 => {
                let m = alive.remove(rng.below(alive.len() as u64) as usize);
                let (name, lines, ok) = m.end(libc::SIGTERM);
                assert!(ok, "member {name} did not exit cleanly on SIGTERM");
                outputs.push((name, lines));
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
            .list_offsets(TOPIC, p, broker::client::OffsetQuery::Latest)
            .unwrap();
        hw.insert(p, o.high_watermark);
    }
    assert_eq!(hw.values().sum::<i64>() as usize, acked.len());
    let deadline = Instant::now() + DRAIN;
    loop {
        let d = client.describe_group(GROUP).unwrap();
        let committed: BTreeMap<u32, i64> =
            d.offsets.iter().map(|o| (o.partition, o.offset)).collect();
        if committed == hw {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never committed {hw:?}: {committed:?} (seed {seed})"
        );
        thread::sleep(Duration::from_millis(100));
    }
    for m in alive.drain(..) {
        let (name, lines, ok) = m.end(libc::SIGTERM);
        assert!(
            ok,
            "member {name} did not exit cleanly on SIGTERM (seed {seed})"
        );
        outputs.push((name, lines));
        stopped += 1;
    }

    // No gap, at the right place; order per process, generation and
    // partition; duplicates counted.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut lines_total = 0usize;
    for (name, lines) in &outputs {
        let mut last: HashMap<(i32, u32), i64> = HashMap::new();
        for line in lines {
            lines_total += 1;
            let (generation, partition, offset, value) = parse(line);
            let Some(&(p, o)) = acked.get(&value) else {
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
            *seen
                .entry(acked.get_key_value(&value).unwrap().0.as_str())
                .or_default() += 1;
        }
    }
    let missing: Vec<&String> = acked
        .keys()
        .filter(|v| !seen.contains_key(v.as_str()))
        .collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let records_duplicated = seen.values().filter(|&&n| n > 1).count();
    println!(
        "seed {seed}: {} records produced, {lines_total} printed by {spawned} members \
         ({killed} SIGKILLed, {stopped} stopped by SIGTERM), {duplicates} duplicate deliveries \
         of {records_duplicated} records, {} missing",
        acked.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged records never consumed, e.g. {:?} (seed {seed})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
