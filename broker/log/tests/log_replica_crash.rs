//! Crash test with real processes for follower appends and truncations: a
//! child runs a seeded plan of `append_replica` runs and `truncate_to`
//! cuts (with fsync=always) and reports each finished step; the test
//! SIGKILLs it at a random moment and reopens the log. What recovery finds
//! must be the plan's log after the last reported step, or, for the step
//! under way, a state it allows: after an append, a log between the two; in
//! a truncation, a prefix of the log before it that reaches the cut. The
//! epoch cache must match the surviving batches.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use broker_log::{Log, LogConfig};
use common::{make_batch, read_all, run, with_base, Rng};

const CHILD_ENV: &str = "BROKER_REPLICA_CRASH_CHILD";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 << 10,
        index_interval_bytes: 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// One step of the plan.
enum Step {
    /// Append these stored batches (each starts where the log ends).
    Append(Vec<Vec<u8>>),
    /// Truncate to this batch boundary.
    Truncate(u64),
}

/// The plan's log: batches as stored, and the next step from `rng`.
#[derive(Clone, Default)]
struct Plan {
    batches: Vec<Vec<u8>>,
    /// (base, next) of each batch.
    spans: Vec<(u64, u64)>,
    epoch: i32,
}

impl Plan {
    fn end(&self) -> u64 {
        self.spans.last().map_or(0, |s| s.1)
    }

    fn next_step(&self, rng: &mut Rng, n: u64) -> Step {
        if rng.below(5) == 0 && !self.spans.is_empty() {
            let back = 1 + rng.below(self.spans.len().min(12) as u64) as usize;
            return Step::Truncate(self.spans[self.spans.len() - back].0);
        }
        let mut at = self.end();
        let epoch = self.epoch + i32::from(rng.below(4) == 0);
        let batches = (0..1 + rng.below(3))
            .map(|i| {
                let records = 1 + rng.below(6) as usize;
                let mut b = with_base(&make_batch(n * 8 + i, records, 200, n as i64), at);
                broker_format::set_partition_leader_epoch(&mut b, epoch);
                at += records as u64;
                b
            })
            .collect();
        Step::Append(batches)
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Append(batches) => {
                for b in batches {
                    let h = broker_format::BatchHeader::parse(b).unwrap();
                    self.spans
                        .push((h.base_offset as u64, h.next_offset() as u64));
                    self.epoch = h.partition_leader_epoch;
                    self.batches.push(b.clone());
                }
            }
            Step::Truncate(offset) => {
                let keep = self.spans.iter().take_while(|s| s.0 < *offset).count();
                self.spans.truncate(keep);
                self.batches.truncate(keep);
            }
        }
    }
}

/// The epochs' start offsets among `batches` (what the cache must hold).
fn derived_entries(batches: &[Vec<u8>]) -> Vec<(i32, u64)> {
    let mut out: Vec<(i32, u64)> = Vec::new();
    for b in batches {
        let h = broker_format::BatchHeader::parse(b).unwrap();
        if out.last().is_none_or(|l| l.0 != h.partition_leader_epoch) {
            out.push((h.partition_leader_epoch, h.base_offset as u64));
        }
    }
    out
}

/// The child: runs the plan of seed `BROKER_REPLICA_CRASH_CHILD`'s seed
/// forever, printing "DONE <n>" after step n. Run only by the crash test.
#[test]
#[ignore = "runs only as the replica crash test's child process"]
fn replica_crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!("{CHILD_ENV} is not set: this test is the crash test's child");
    };
    let (dir, seed) = spec.rsplit_once(':').unwrap();
    let (dir, seed) = (dir.to_string(), seed.parse::<u64>().unwrap());
    run(async move {
        let (log, _) = Log::open(&dir, config()).await.unwrap();
        let mut rng = Rng(seed);
        let mut plan = Plan::default();
        for n in 0.. {
            let step = plan.next_step(&mut rng, n);
            match &step {
                Step::Append(batches) => {
                    log.append_replica(&batches.concat()).await.unwrap();
                }
                Step::Truncate(offset) => log.truncate_to(*offset).await.unwrap(),
            }
            plan.apply(&step);
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "DONE {n}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn kill_during_replica_appends_and_truncations_recovers_an_allowed_log() {
    let seed = std::env::var("LOG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17u64);
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("seed {seed}, {iterations} iterations");
    let mut rng = Rng(seed);
    for iteration in 0..iterations {
        let child_seed = seed * 1000 + iteration;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "replica_crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}:{child_seed}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let done = Arc::new(Mutex::new(None::<u64>));
        let reader = {
            let done = done.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("DONE ") {
                        *done.lock().unwrap() = Some(n.parse().unwrap());
                    }
                }
            })
        };
        let start = std::time::Instant::now();
        while done.lock().unwrap().is_none_or(|n| n < 20)
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        child.wait().unwrap();
        reader.join().unwrap();
        let last = done.lock().unwrap().expect("the child finished no step");
        // The plan up to the last reported step, and the step after it.
        let mut plan_rng = Rng(child_seed);
        let mut plan = Plan::default();
        for n in 0..=last {
            let step = plan.next_step(&mut plan_rng, n);
            plan.apply(&step);
        }
        let before = plan.clone();
        let step = plan.next_step(&mut plan_rng, last + 1);
        let mut after = plan.clone();
        after.apply(&step);
        let dirp = dir.path().to_path_buf();
        let what = format!("seed {seed} iteration {iteration} after step {last}");
        run(async move {
            let (log, report) = Log::open(&dirp, config()).await.unwrap();
            let got = read_all(&log).await;
            let end = log.log_end_offset();
            let is_prefix =
                |of: &Plan| got.len() <= of.batches.len() && got[..] == of.batches[..got.len()];
            match step {
                Step::Append(_) => {
                    assert!(
                        is_prefix(&after),
                        "{what}: not a prefix of the log after the append in flight"
                    );
                    assert!(
                        got.len() >= before.batches.len(),
                        "{what}: lost appended batches ({report:?})"
                    );
                }
                Step::Truncate(offset) => {
                    assert!(
                        is_prefix(&before),
                        "{what}: not a prefix of the log before the truncation"
                    );
                    assert!(
                        end >= offset,
                        "{what}: recovered end {end} below the cut {offset}"
                    );
                }
            }
            let entries: Vec<(i32, u64)> = log
                .epoch_entries()
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect();
            assert_eq!(entries, derived_entries(&got), "{what}: epoch cache");
            eprintln!("{what}: {} batches, end {end}", got.len());
            log.close().await.unwrap();
        });
    }
}
