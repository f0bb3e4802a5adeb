//! Property test of the replication primitives against a simple model:
//! random leader appends (with leader-epoch changes), follower appends of
//! whole runs of batches, truncations to random batch boundaries, and
//! reopens (clean, or a drop without close), across segment rolls. After
//! every step the log's offsets, its bytes read back, its epoch cache and
//! its OffsetsForLeaderEpoch answers agree with the model, which derives
//! the epochs from its batches alone.
#![allow(clippy::unwrap_used)]

mod common;

use broker_log::{EpochEnd, FsyncPolicy, Log, LogConfig};
use common::{make_batch, read_all, run, with_base};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Become leader in an epoch `bump` above the latest one.
    Lead { bump: i32 },
    /// A leader append (only while leading).
    Append { records: usize, value_len: usize },
    /// A follower append of `batches` batches, in an epoch `bump` above
    /// the latest one (or the same).
    Replicate { batches: usize, bump: i32 },
    /// Truncate to the boundary of batch `at % (batches + 1)`.
    Truncate { at: usize },
    /// Reopen; `clean` closes first, otherwise the log is dropped.
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0i32..3).prop_map(|bump| Op::Lead { bump }),
        5 => (1usize..8, 0usize..400).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        4 => (1usize..5, 0i32..3).prop_map(|(batches, bump)| Op::Replicate { batches, bump }),
        2 => any::<usize>().prop_map(|at| Op::Truncate { at }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Default)]
struct Model {
    /// (base, next, epoch, bytes as stored).
    batches: Vec<(u64, u64, i32, Vec<u8>)>,
    /// The epoch the log stamps as leader (-1: not leading).
    stamped: i32,
    /// The highest epoch ever used, to pick new ones above it.
    top: i32,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.1)
    }

    /// The epoch cache the log must hold: where each epoch starts among
    /// the batches, and a leader's epoch that has no batch yet at the end.
    fn entries(&self) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        for &(base, _, epoch, _) in &self.batches {
            if epoch >= 0 && out.last().is_none_or(|l| l.0 != epoch) {
                out.push((epoch, base));
            }
        }
        if self.stamped >= 0 && out.last().is_none_or(|l| l.0 < self.stamped) {
            out.push((self.stamped, self.end()));
        }
        out
    }

    fn latest(&self) -> i32 {
        self.entries().last().map_or(-1, |e| e.0)
    }

    /// OffsetsForLeaderEpoch, spelled out over the entries (KIP-101/279).
    fn end_offset_for(&self, epoch: i32) -> Option<EpochEnd> {
        let entries = self.entries();
        if epoch < 0 || entries.is_empty() {
            return None;
        }
        if entries.last().unwrap().0 == epoch {
            return Some(EpochEnd {
                epoch,
                end_offset: self.end(),
            });
        }
        let next = entries.iter().find(|e| e.0 > epoch)?;
        let floor = entries.iter().rev().find(|e| e.0 <= epoch);
        Some(EpochEnd {
            epoch: floor.map_or(epoch, |f| f.0),
            end_offset: next.1,
        })
    }
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 6 << 10,
        index_interval_bytes: 512,
        retention_ms: None,
        fsync,
        ..LogConfig::default()
    }
}

async fn check(log: &Log, model: &Model, step: usize) {
    assert_eq!(log.log_end_offset(), model.end(), "step {step}: end");
    assert_eq!(log.durable_end(), model.end(), "step {step}: durable end");
    let got: Vec<(i32, u64)> = log
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(got, model.entries(), "step {step}: epoch cache");
    for epoch in -1..=model.top + 1 {
        assert_eq!(
            log.end_offset_for_epoch(epoch),
            model.end_offset_for(epoch),
            "step {step}: end offset for epoch {epoch}"
        );
    }
    let bytes = read_all(log).await;
    let want: Vec<Vec<u8>> = model.batches.iter().map(|b| b.3.clone()).collect();
    assert_eq!(bytes.len(), want.len(), "step {step}: batch count");
    assert!(bytes == want, "step {step}: bytes differ");
}

fn run_ops(ops: Vec<Op>, fsync: FsyncPolicy) {
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(fsync);
        let (mut log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        let mut model = Model {
            stamped: -1,
            top: -1,
            ..Model::default()
        };
        let mut seed = 0u64;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Lead { bump } => {
                    let epoch = model.top.max(0) + bump;
                    log.set_leader_epoch(epoch).await.unwrap();
                    model.stamped = epoch;
                    model.top = model.top.max(epoch);
                }
                Op::Append { records, value_len } if model.stamped >= 0 => {
                    seed += 1;
                    let batch = make_batch(seed, records, value_len, seed as i64 * 10);
                    let a = log.append(&batch).await.unwrap();
                    assert_eq!(a.base_offset, model.end());
                    let mut b = with_base(&batch, a.base_offset);
                    broker_format::set_partition_leader_epoch(&mut b, model.stamped);
                    model
                        .batches
                        .push((a.base_offset, a.next_offset, model.stamped, b));
                }
                Op::Append { .. } => {}
                Op::Replicate { batches, bump } => {
                    // A follower from here on: the model appends nothing as
                    // leader until the next `Lead`. The epoch may be below
                    // ones truncated away, never below the log's latest.
                    let epoch = model.latest().max(0) + bump;
                    model.top = model.top.max(epoch);
                    let mut at = model.end();
                    let mut run = Vec::new();
                    let mut stored = Vec::new();
                    for i in 0..batches {
                        seed += 1;
                        let records = 1 + (seed % 6) as usize;
                        let mut b = with_base(&make_batch(seed, records, 90 * i, 5), at);
                        broker_format::set_partition_leader_epoch(&mut b, epoch);
                        run.extend_from_slice(&b);
                        stored.push((at, at + records as u64, epoch, b));
                        at += records as u64;
                    }
                    let a = log.append_replica(&run).await.unwrap();
                    assert_eq!((a.base_offset, a.next_offset), (model.end(), at));
                    model.batches.extend(stored);
                    model.stamped = -1;
                }
                Op::Truncate { at } => {
                    let i = at % (model.batches.len() + 1);
                    let offset = model.batches.get(i).map_or(model.end(), |b| b.0);
                    log.truncate_to(offset).await.unwrap();
                    if offset < model.end() {
                        model.batches.truncate(i);
                        model.stamped = -1;
                    }
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().await.unwrap();
                    } else {
                        drop(log);
                    }
                    let (l, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
                    log = l;
                    model.stamped = -1;
                }
            }
            check(&log, &model, step).await;
        }
        log.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replication_primitives_agree_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(ops, FsyncPolicy::Always);
    }

    #[test]
    fn replication_primitives_agree_with_the_model_under_fsync_never(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(ops, FsyncPolicy::Never);
    }
}
