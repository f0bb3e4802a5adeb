//! `Log::read_below`: a read bounded by a partition's high watermark returns
//! exactly the whole batches that lie below the bound, byte for byte, from
//! memory (fresh data) and from disk (after a reopen); an offset between the
//! bound and the log's durable end waits (an empty read) instead of being out
//! of range; and `read` is `read_below` without a bound.
#![allow(clippy::unwrap_used)]

mod common;

use broker_log::{Log, LogConfig, LogError, LogRead};
use common::{run, split, Rng};

/// One appended batch, as the log stores it.
struct Stored {
    base: u64,
    next: u64,
    bytes: Vec<u8>,
}

/// A budget larger than the whole log: a read then returns everything it may.
const ALL: usize = 1 << 30;

/// What a read from `offset` may return below `bound`: the batch holding
/// `offset` and every batch after it that ends at or below `bound`.
fn below(model: &[Stored], offset: u64, bound: u64) -> Vec<Vec<u8>> {
    model
        .iter()
        .filter(|s| s.next > offset)
        .take_while(|s| s.next <= bound)
        .map(|s| s.bytes.clone())
        .collect()
}

/// Appends `n` random batches and returns what the log must hold.
async fn fill(log: &Log, rng: &mut Rng, n: usize) -> Vec<Stored> {
    common::fill_random(log, rng, n)
        .await
        .into_iter()
        .map(|(base, next, bytes)| Stored { base, next, bytes })
        .collect()
}

/// Reads once and checks the answer against the model: a prefix of what
/// lies below the bound, at least one batch when there is one, within the
/// budget (or a single batch), and all of it when `exact`. Returns the read.
async fn check_once(
    log: &Log,
    model: &[Stored],
    offset: u64,
    max_bytes: usize,
    end: u64,
    exact: bool,
) -> LogRead {
    let hw = log.durable_end();
    let bound = end.min(hw);
    let what = format!("read_below({offset}, {max_bytes}, {end}) with durable end {hw}");
    let r = log.read_below(offset, max_bytes, end).await.unwrap();
    let got = split(r.bytes.as_slice());
    let want = below(model, offset, bound);
    assert!(
        got.len() <= want.len(),
        "{what}: more batches than lie below the bound"
    );
    assert!(
        got == want[..got.len()],
        "{what}: bytes differ from the appended batches"
    );
    if exact {
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: not every batch below the bound"
        );
    }
    if want.is_empty() {
        assert_eq!(
            r.next_offset, offset,
            "{what}: an empty read stays at its offset"
        );
    } else {
        assert!(!got.is_empty(), "{what}: a batch lies below the bound");
        let total: usize = got.iter().map(Vec::len).sum();
        assert!(got.len() == 1 || total <= max_bytes, "{what}: over budget");
        let last = model
            .iter()
            .find(|s| s.bytes == got[got.len() - 1])
            .unwrap();
        assert_eq!(r.next_offset, last.next, "{what}: next offset");
        assert!(r.next_offset <= bound, "{what}: past the bound");
    }
    assert_eq!(r.high_watermark, hw, "{what}: the log's high watermark");
    r
}

/// Reads from `offset` until an empty read; everything read, in order.
async fn walk(
    log: &Log,
    offset: u64,
    max_bytes: usize,
    end: u64,
    bound_reads: usize,
) -> Vec<Vec<u8>> {
    let mut at = offset;
    let mut out = Vec::new();
    for _ in 0..bound_reads {
        let r = log.read_below(at, max_bytes, end).await.unwrap();
        if r.bytes.as_slice().is_empty() {
            return out;
        }
        out.extend(split(r.bytes.as_slice()));
        assert!(r.next_offset > at, "a non-empty read advances");
        at = r.next_offset;
    }
    panic!("reading from {offset} below {end} did not end in {bound_reads} reads");
}

/// The bounds worth trying: every batch boundary, one past it (inside the
/// next batch), zero, the durable end and beyond.
fn bounds(model: &[Stored]) -> Vec<u64> {
    let mut b = vec![0, u64::MAX];
    for s in model {
        b.extend([s.base, s.base + 1, s.next]);
    }
    let end = model.last().map_or(0, |s| s.next);
    b.extend([end + 1, end + 1000]);
    b.sort_unstable();
    b.dedup();
    b
}

#[test]
fn read_below_returns_exactly_the_whole_batches_below_the_bound() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_ms: None,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        let mut rng = Rng(11);
        let model = fill(&log, &mut rng, 40).await;
        let hw = log.durable_end();
        assert_eq!(hw, model.last().unwrap().next);
        assert_eq!(
            log.high_watermark(),
            hw,
            "durable_end and high_watermark agree"
        );
        let mut log = log;
        for from_disk in [false, true] {
            if from_disk {
                // An empty read cache: every byte now comes from a disk read.
                log.close().await.unwrap();
                log = Log::open(dir.path(), cfg.clone()).await.unwrap().0;
            }
            let mut memory_cut_by_bound = 0;
            // From the start, below every bound, with an unlimited budget.
            for bound in bounds(&model) {
                let r = check_once(&log, &model, 0, ALL, bound, true).await;
                assert!(!(from_disk && r.bytes.is_from_memory()));
            }
            // Each batch alone: read at its base (and inside it) below its end.
            for s in &model {
                for offset in [s.base, s.next - 1] {
                    let r = check_once(&log, &model, offset, ALL, s.next, true).await;
                    assert_eq!(split(r.bytes.as_slice()), vec![s.bytes.clone()]);
                    if r.bytes.is_from_memory() {
                        assert!(!from_disk, "a read after the reopen came from memory");
                        memory_cut_by_bound += usize::from(s.next < hw);
                    }
                }
            }
            // Random offsets, bounds and budgets.
            let all_bounds = bounds(&model);
            for _ in 0..300 {
                let offset = rng.below(hw + 1);
                let end = all_bounds[rng.below(all_bounds.len() as u64) as usize];
                let max_bytes = [1, 700, 5_000, ALL][rng.below(4) as usize];
                let r = check_once(&log, &model, offset, max_bytes, end, max_bytes == ALL).await;
                assert!(!(from_disk && r.bytes.is_from_memory()));
            }
            if !from_disk {
                assert!(
                    memory_cut_by_bound > 0,
                    "no read below a bound inside the log was served from memory"
                );
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn read_below_walks_exactly_to_the_bound_across_segments() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes_max: 8 << 10,
            index_interval_bytes: 1024,
            retention_ms: None,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        let mut rng = Rng(12);
        let model = fill(&log, &mut rng, 60).await;
        assert!(log.segment_count() > 3, "the batches span several segments");
        let hw = log.durable_end();
        for reopened in [false, true] {
            if reopened {
                log.close().await.unwrap();
                log = Log::open(dir.path(), cfg.clone()).await.unwrap().0;
            }
            for (i, bound) in bounds(&model).into_iter().enumerate() {
                let offset = if i % 2 == 0 { 0 } else { rng.below(hw + 1) };
                for max_bytes in [1, 700, 5_000, ALL] {
                    let got = walk(&log, offset, max_bytes, bound, model.len() + 1).await;
                    assert!(
                        got == below(&model, offset, bound.min(hw)),
                        "reading from {offset} below {bound} with budget {max_bytes} (reopened: {reopened})"
                    );
                }
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn offsets_past_the_bound_wait_and_past_the_durable_end_are_out_of_range() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes_max: 4096,
            retention_ms: None,
            retention_bytes: Some(4096),
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        let model = fill(&log, &mut Rng(13), 20).await;
        let hw = log.durable_end();
        let bound = model[model.len() / 2].next;
        // At the bound and past it, up to the durable end: nothing yet.
        for offset in [bound, bound + 1, hw - 1, hw] {
            let r = log.read_below(offset, ALL, bound).await.unwrap();
            assert!(
                r.bytes.as_slice().is_empty(),
                "offset {offset} past bound {bound}"
            );
            assert_eq!(r.next_offset, offset);
            assert_eq!(r.high_watermark, hw);
        }
        // Past the durable end: out of range, whatever the bound.
        for end in [bound, hw, u64::MAX] {
            match log.read_below(hw + 1, ALL, end).await {
                Err(LogError::OffsetOutOfRange {
                    requested,
                    start,
                    end: e,
                }) => {
                    assert_eq!((requested, start, e), (hw + 1, 0, hw));
                }
                Ok(_) => panic!("offset {} past the durable end {hw} was read", hw + 1),
                Err(e) => panic!("{e}"),
            }
        }
        // `read` is `read_below` without a bound of its own.
        for s in &model {
            let a = log.read(s.base, ALL).await.unwrap();
            let b = log.read_below(s.base, ALL, u64::MAX).await.unwrap();
            assert_eq!(a.bytes.as_slice(), b.bytes.as_slice());
            assert_eq!(a.next_offset, b.next_offset);
        }
        // Below the log start: out of range.
        let report = log.enforce_retention(0).await.unwrap();
        assert!(
            !report.deleted.is_empty(),
            "retention by size deleted segments"
        );
        let start = log.log_start_offset();
        assert!(start > 0);
        match log.read_below(start - 1, ALL, hw).await {
            Err(LogError::OffsetOutOfRange {
                requested,
                start: s,
                end: e,
            }) => {
                assert_eq!((requested, s, e), (start - 1, start, hw));
            }
            Ok(_) => panic!("offset below the log start {start} was read"),
            Err(e) => panic!("{e}"),
        }
        log.close().await.unwrap();
    });
}
