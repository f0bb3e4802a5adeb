//! The read-ahead of `Log::read`: a sequential reader of data on disk gets
//! its next read from the disk read issued after its last one, and the
//! bytes are exactly the appended batches, in order, across segment rolls;
//! a reader that jumps, a truncation and new appends in between never see
//! stale bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use broker_log::{Log, LogConfig};
use common::{run, split, Rng};

/// Small segments so that a walk crosses several rolls.
fn config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

/// Appends `n` random batches: (next offset, bytes as stored) each.
async fn fill(log: &Log, rng: &mut Rng, n: usize) -> Vec<(u64, Vec<u8>)> {
    common::fill_random(log, rng, n)
        .await
        .into_iter()
        .map(|(_, next, bytes)| (next, bytes))
        .collect()
}

/// Reads from `offset` to the end, `max_bytes` at a time.
async fn walk(log: &Log, offset: u64, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut at = offset;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let r = log.read(at, max_bytes).await.unwrap();
        if r.bytes.as_slice().is_empty() {
            return out;
        }
        assert!(
            !r.bytes.is_from_memory(),
            "after a reopen reads come from disk"
        );
        out.extend(split(r.bytes.as_slice()));
        assert!(r.next_offset > at, "a non-empty read advances");
        at = r.next_offset;
    }
    panic!("reading from {offset} did not end");
}

#[test]
fn sequential_reads_from_disk_are_served_by_read_ahead_byte_for_byte_across_rolls() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let model = fill(&log, &mut Rng(5), 400).await;
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count();
        assert!(
            segments >= 4,
            "the walk crosses rolls ({segments} segments)"
        );
        let want: Vec<Vec<u8>> = model.iter().map(|(_, b)| b.clone()).collect();
        for max_bytes in [1, 5_000, 20_000] {
            let stats = log.io_stats();
            let hits_before = stats.read_ahead_hits.load(Ordering::Relaxed);
            assert_eq!(walk(&log, 0, max_bytes).await, want, "budget {max_bytes}");
            let hits = stats.read_ahead_hits.load(Ordering::Relaxed) - hits_before;
            assert!(
                hits > 0,
                "budget {max_bytes}: no read was served by a read-ahead"
            );
        }
        log.close().await.unwrap();
    });
}

#[test]
fn reads_that_jump_or_follow_a_truncation_never_get_a_stale_read_ahead() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let mut rng = Rng(9);
        let mut model = fill(&log, &mut rng, 200).await;
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        // Jumps: each read issues a read-ahead for a place the next does not
        // read; every answer must still be the batch asked for.
        for _ in 0..300 {
            let i = rng.below(model.len() as u64) as usize;
            let from = if i == 0 { 0 } else { model[i - 1].0 };
            let r = log.read(from, 1).await.unwrap();
            assert_eq!(split(r.bytes.as_slice()), vec![model[i].1.clone()]);
        }
        // A read leaves a read-ahead for offset `next`; the log is truncated
        // there and other batches appended: the read at `next` gets them.
        let r = log.read(0, 3_000).await.unwrap();
        let next = r.next_offset;
        let kept = model.iter().position(|(n, _)| *n == next).unwrap() + 1;
        log.truncate_to(next).await.unwrap();
        model.truncate(kept);
        model.extend(fill(&log, &mut Rng(1234), 20).await);
        let got = split(log.read(next, 1 << 20).await.unwrap().bytes.as_slice());
        let want: Vec<Vec<u8>> = model[kept..].iter().map(|(_, b)| b.clone()).collect();
        assert!(
            !got.is_empty() && want.starts_with(&got),
            "bytes after the truncation"
        );
        log.close().await.unwrap();
    });
}
