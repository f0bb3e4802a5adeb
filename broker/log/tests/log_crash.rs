//! Crash tests with real processes: a child appends with fsync=always and
//! reports each acknowledged batch; the test SIGKILLs it at a random moment,
//! reopens the log and checks that every acknowledged batch is there intact,
//! the log is one contiguous run of valid batches, and nothing past the
//! recovered end is readable.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use broker_log::{Log, LogConfig, LogError};
use common::{make_batch, run, with_base, Rng};

const CHILD_ENV: &str = "BROKER_CRASH_CHILD_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        index_interval_bytes: 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Batch `i` of the child: its shape is a function of `i` only.
fn child_batch(i: u64) -> Vec<u8> {
    make_batch(
        i,
        1 + (i % 9) as usize,
        40 + (i % 13) as usize * 37,
        1_000 + i as i64,
    )
}

/// The child's body: appends from 16 concurrent tasks forever (so write
/// cycles carry several buffers written at once), printing
/// "ACK <i> <base_offset>" once batch `i` is acknowledged. Run only as the
/// child of `kill_during_appends_loses_nothing_acknowledged`.
#[test]
#[ignore = "runs only as the crash test's child process"]
fn crash_child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        panic!("{CHILD_ENV} is not set: this test is the crash test's child");
    };
    run(async move {
        let (log, _) = Log::open(&dir, config()).await.unwrap();
        let next = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let log = log.clone();
                let next = next.clone();
                glommio::spawn_local(async move {
                    loop {
                        let i = next.get();
                        next.set(i + 1);
                        let a = log.append(&child_batch(i)).await.unwrap();
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {i} {}", a.base_offset).unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn kill_during_appends_loses_nothing_acknowledged() {
    let seed = std::env::var("LOG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42u64);
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("seed {seed}, {iterations} iterations");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut total_acked = 0usize;
    // Every acknowledged batch of every life of the log: (i, base offset).
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for iteration in 0..iterations {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_appender",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut it = line.split_whitespace();
                    if it.next() != Some("ACK") {
                        continue;
                    }
                    let i: u64 = it.next().unwrap().parse().unwrap();
                    let base: u64 = it.next().unwrap().parse().unwrap();
                    lines.lock().unwrap().push((i, base));
                }
            })
        };
        // Let it run until some acks arrived, then a random extra moment.
        let start = std::time::Instant::now();
        while lines.lock().unwrap().len() < 5 && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        child.wait().unwrap();
        reader.join().unwrap();
        let got = std::mem::take(&mut *lines.lock().unwrap());
        assert!(
            !got.is_empty(),
            "iteration {iteration}: the child acknowledged nothing"
        );
        total_acked += got.len();
        // Each life numbers its batches from 0 again; (i, base) pairs stay unique.
        acked.extend(got);
        let all = acked.clone();
        let dirp = dir.path().to_path_buf();
        run(async move {
            let (log, report) = Log::open(&dirp, config()).await.unwrap();
            let hw = log.high_watermark();
            // Every batch acknowledged in any life so far reads back intact.
            for &(i, base) in &all {
                assert!(
                    base < hw,
                    "seed {seed}: acked offset {base} beyond recovered end {hw}"
                );
                let r = log.read(base, 1).await.unwrap();
                let first = common::split(r.bytes.as_slice())
                    .into_iter()
                    .next()
                    .unwrap();
                assert_eq!(
                    first,
                    with_base(&child_batch(i), base),
                    "seed {seed}: batch {i} at {base} differs"
                );
            }
            // The whole log is contiguous valid batches up to hw.
            let mut at = 0;
            while at < hw {
                let r = log.read(at, 1 << 20).await.unwrap();
                for b in common::split(r.bytes.as_slice()) {
                    broker_format::validate(&b).unwrap();
                    let h = broker_format::BatchHeader::parse(&b).unwrap();
                    assert_eq!(
                        h.base_offset as u64, at,
                        "seed {seed}: offsets not contiguous"
                    );
                    at = h.next_offset() as u64;
                }
            }
            assert_eq!(at, hw);
            // Nothing past the recovered end is readable.
            assert!(log
                .read(hw, 1 << 20)
                .await
                .unwrap()
                .bytes
                .as_slice()
                .is_empty());
            assert!(matches!(
                log.read(hw + 1, 1).await,
                Err(LogError::OffsetOutOfRange { .. })
            ));
            drop(report);
            // Leave without close: the next child recovers from a crash too.
            drop(log);
        });
    }
    eprintln!("{total_acked} acknowledged batches over {iterations} kills, none lost");
}
