//! Property tests of the partition log against a simple in-memory model:
//! random batches appended across segment rolls and reopens read back byte
//! for byte, and reads by offset and by timestamp agree with the model.
#![allow(clippy::unwrap_used)]

mod common;

use broker_log::{FsyncPolicy, Log, LogConfig, LogError};
use common::{make_batch, run, with_base, Rng};
use proptest::prelude::*;

/// What the model knows of one appended batch.
#[derive(Clone, Debug)]
struct Stored {
    base: u64,
    next: u64,
    bytes: Vec<u8>,
    /// (offset, timestamp) of each record.
    stamps: Vec<(u64, i64)>,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        ts_jump: i64,
    },
    Read {
        at: u64,
        max_bytes: usize,
    },
    ByTime {
        at: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..20, 0usize..600, -50i64..200).prop_map(|(records, value_len, ts_jump)| Op::Append { records, value_len, ts_jump }),
        3 => (any::<u64>(), 1usize..20_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<u64>().prop_map(|at| Op::ByTime { at }),
        1 => Just(Op::Reopen),
    ]
}

fn config(segment_bytes: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: segment_bytes,
        fsync,
        index_interval_bytes: 512,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The model's answer to "first offset with timestamp >= ts".
fn model_by_time(model: &[Stored], ts: i64) -> Option<u64> {
    model
        .iter()
        .flat_map(|s| s.stamps.iter())
        .find(|(_, t)| *t >= ts)
        .map(|(o, _)| *o)
}

async fn check_read(log: &Log, model: &[Stored], at: u64, max_bytes: usize) {
    let end = model.last().map_or(0, |s| s.next);
    match log.read(at, max_bytes).await {
        Ok(r) if at == end => assert!(r.bytes.as_slice().is_empty()),
        Ok(r) => {
            let got = common::split(r.bytes.as_slice());
            let first = model.iter().position(|s| s.next > at).unwrap();
            assert!(
                !got.is_empty(),
                "a read below the end returns at least one batch"
            );
            let mut total = 0;
            for (i, g) in got.iter().enumerate() {
                let want = &model[first + i];
                assert_eq!(
                    g,
                    &want.bytes,
                    "batch {} (offset {}) differs",
                    first + i,
                    want.base
                );
                total += g.len();
            }
            assert!(
                got.len() == 1 || total <= max_bytes,
                "read exceeds its byte budget"
            );
            assert_eq!(r.next_offset, model[first + got.len() - 1].next);
            assert_eq!(r.high_watermark, end);
        }
        Err(LogError::OffsetOutOfRange {
            requested,
            start,
            end: e,
        }) => {
            assert!(at > end, "in-range offset {at} refused (end {end})");
            assert_eq!((requested, start, e), (at, 0, end));
        }
        Err(e) => panic!("read at {at}: {e}"),
    }
}

fn run_ops(ops: Vec<Op>, segment_bytes: u64, fsync: FsyncPolicy) {
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes, fsync);
        let (mut log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        let mut model: Vec<Stored> = Vec::new();
        let mut ts = 1_000_000i64;
        let mut seed = 1u64;
        for op in ops {
            match op {
                Op::Append {
                    records,
                    value_len,
                    ts_jump,
                } => {
                    ts += ts_jump;
                    seed += 1;
                    let batch = make_batch(seed, records, value_len, ts);
                    let a = log.append(&batch).await.unwrap();
                    let expected_base = model.last().map_or(0, |s| s.next);
                    assert_eq!(a.base_offset, expected_base);
                    assert_eq!(a.next_offset, expected_base + records as u64);
                    model.push(Stored {
                        base: a.base_offset,
                        next: a.next_offset,
                        bytes: with_base(&batch, a.base_offset),
                        stamps: (0..records)
                            .map(|i| (a.base_offset + i as u64, ts + i as i64))
                            .collect(),
                    });
                }
                Op::Read { at, max_bytes } => {
                    let end = model.last().map_or(0, |s| s.next);
                    let at = at % (end + 2);
                    check_read(&log, &model, at, max_bytes).await;
                }
                Op::ByTime { at } => {
                    let probe = 1_000_000 - 100 + (at % 4000) as i64;
                    let got = log.offset_for_timestamp(probe).await.unwrap();
                    assert_eq!(got, model_by_time(&model, probe), "timestamp {probe}");
                }
                Op::Reopen => {
                    log.close().await.unwrap();
                    let (l, report) = Log::open(dir.path(), cfg.clone()).await.unwrap();
                    assert_eq!(
                        report.truncated_bytes, 0,
                        "a clean close leaves nothing to truncate"
                    );
                    assert_eq!(
                        report.scanned_bytes, 0,
                        "a clean close leaves nothing to validate"
                    );
                    log = l;
                }
            }
            let end = model.last().map_or(0, |s| s.next);
            assert_eq!(log.high_watermark(), end);
            assert_eq!(log.log_end_offset(), end);
        }
        // Everything reads back in order, batch by batch, across segments.
        let mut at = 0;
        let mut i = 0;
        let end = model.last().map_or(0, |s| s.next);
        while at < end {
            let r = log.read(at, 1 << 20).await.unwrap();
            for b in common::split(r.bytes.as_slice()) {
                assert_eq!(b, model[i].bytes);
                i += 1;
            }
            at = r.next_offset;
        }
        assert_eq!(i, model.len());
        log.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn appends_read_back_across_rolls_and_reopens(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(ops, 8192, FsyncPolicy::Always);
    }

    #[test]
    fn appends_read_back_with_fsync_never(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(ops, 64 << 10, FsyncPolicy::Never);
    }
}

#[test]
fn many_concurrent_appends_share_write_cycles() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = std::rc::Rc::new(broker_log::Faults::default());
        let (log, _) =
            Log::open_with_faults(dir.path(), LogConfig::default(), Some(faults.clone()))
                .await
                .unwrap();
        let batches: Vec<Vec<u8>> = (0..200).map(|i| make_batch(i, 5, 100, 10)).collect();
        let tasks: Vec<_> = batches
            .iter()
            .cloned()
            .map(|b| {
                let log = log.clone();
                glommio::spawn_local(async move { log.append(&b).await.unwrap() })
            })
            .collect();
        let mut acks = Vec::new();
        for t in tasks {
            acks.push(t.await);
        }
        let mut bases: Vec<u64> = acks.iter().map(|a| a.base_offset).collect();
        bases.sort_unstable();
        assert_eq!(bases, (0..200).map(|i| i * 5).collect::<Vec<_>>());
        // Group commit: far fewer fsyncs than appends.
        let syncs = faults.syncs.get();
        assert!(syncs < 100, "{syncs} fsyncs for 200 concurrent appends");
        for a in &acks {
            let r = log.read(a.base_offset, 1).await.unwrap();
            let idx = batches
                .iter()
                .position(|b| with_base(b, a.base_offset) == r.bytes.as_slice())
                .expect("the acknowledged batch reads back");
            assert_eq!(batches[idx].len(), r.bytes.as_slice().len());
        }
        log.close().await.unwrap();
    });
}

#[test]
fn random_reads_agree_with_model_seeded() {
    let seed = std::env::var("LOG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7u64);
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let ops: Vec<Op> = (0..300)
        .map(|_| match rng.below(10) {
            0..=5 => Op::Append {
                records: 1 + rng.below(50) as usize,
                value_len: rng.below(300) as usize,
                ts_jump: rng.below(100) as i64 - 20,
            },
            6..=8 => Op::Read {
                at: rng.next(),
                max_bytes: 1 + rng.below(30_000) as usize,
            },
            _ => Op::ByTime { at: rng.next() },
        })
        .collect();
    run_ops(
        ops,
        16 << 10,
        FsyncPolicy::Interval(std::time::Duration::from_millis(5)),
    );
}
