//! The log's replication primitives: follower appends that keep the
//! leader's offsets and epochs, leader-epoch stamping, the leader-epoch
//! checkpoint and its recovery, and suffix truncation (`truncate_to`),
//! including a stop at every step of a truncation followed by recovery.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
};

use broker_log::{EpochEnd, Faults, FsyncPolicy, Log, LogConfig, LogError, LogFault};
use common::{make_batch, read_all, run, split, with_base, Rng};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 8192,
        index_interval_bytes: 512,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// About four of `run_of`'s 5-record batches per segment.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        ..config()
    }
}

/// A batch as a leader in `epoch` stored it at `base`.
fn stored(seed: u64, records: usize, base: u64, epoch: i32) -> Vec<u8> {
    let mut b = with_base(&make_batch(seed, records, 150, 1_000 + seed as i64), base);
    broker_format::set_partition_leader_epoch(&mut b, epoch);
    b
}

/// Batches from `base`, `records` records each, one epoch per entry of `epochs`.
fn run_of(base: u64, epochs: &[i32], records: usize) -> Vec<Vec<u8>> {
    let mut at = base;
    epochs
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let b = stored(at * 31 + i as u64, records, at, e);
            at += records as u64;
            b
        })
        .collect()
}

fn entries(log: &Log) -> Vec<(i32, u64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

#[test]
fn replica_append_keeps_the_leaders_offsets_epochs_and_bytes() {
    run(async {
        let ldir = tempfile::tempdir().unwrap();
        let fdir = tempfile::tempdir().unwrap();
        let (leader, _) = Log::open(ldir.path(), config()).await.unwrap();
        let (follower, _) = Log::open(fdir.path(), config()).await.unwrap();
        for (epoch, n) in [(0, 3u64), (2, 4), (5, 6)] {
            leader.set_leader_epoch(epoch).await.unwrap();
            for i in 0..n {
                leader
                    .append(&make_batch(i + 10 * epoch as u64, 4, 200, 77))
                    .await
                    .unwrap();
            }
        }
        // A follower fetches in pieces and appends each answer as it came.
        let mut at = 0;
        while at < leader.durable_end() {
            let r = leader.read(at, 3000).await.unwrap();
            let a = follower.append_replica(r.bytes.as_slice()).await.unwrap();
            assert_eq!((a.base_offset, a.next_offset), (at, r.next_offset));
            at = r.next_offset;
        }
        let want = read_all(&leader).await;
        assert_eq!(read_all(&follower).await, want);
        for b in &want {
            let h = broker_format::BatchHeader::parse(b).unwrap();
            assert!([0, 2, 5].contains(&h.partition_leader_epoch), "{h:?}");
        }
        assert_eq!(entries(&follower), vec![(0, 0), (2, 12), (5, 28)]);
        assert_eq!(entries(&follower), entries(&leader));
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert!(follower.segment_count() > 1, "the follower rolled too");
        follower.close().await.unwrap();
        let (follower, report) = Log::open(fdir.path(), config()).await.unwrap();
        assert!(!report.epoch_checkpoint_rewritten, "{report:?}");
        assert_eq!(read_all(&follower).await, want);
        assert_eq!(entries(&follower), vec![(0, 0), (2, 12), (5, 28)]);
        leader.close().await.unwrap();
    });
}

#[test]
fn replica_append_refuses_gaps_overlaps_regressions_and_bad_batches_writing_nothing() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let first: Vec<u8> = run_of(0, &[3, 3], 2).concat();
        log.append_replica(&first).await.unwrap();
        let before = read_all(&log).await;
        let check_unchanged = |log: &Log| {
            assert_eq!(log.log_end_offset(), 4);
            assert_eq!(entries(log), vec![(3, 0)]);
        };
        // A gap: the call starts past the end.
        match log.append_replica(&run_of(5, &[3], 2).concat()).await {
            Err(LogError::OffsetMismatch {
                expected: 4,
                found: 5,
            }) => {}
            other => panic!("gap: {other:?}"),
        }
        check_unchanged(&log);
        // An overlap: it starts below the end.
        match log.append_replica(&run_of(2, &[3], 2).concat()).await {
            Err(LogError::OffsetMismatch {
                expected: 4,
                found: 2,
            }) => {}
            other => panic!("overlap: {other:?}"),
        }
        // A hole between two batches of one call: nothing of it is written.
        let mut holed = run_of(4, &[4], 2);
        holed.extend(run_of(7, &[4], 2));
        match log.append_replica(&holed.concat()).await {
            Err(LogError::OffsetMismatch {
                expected: 6,
                found: 7,
            }) => {}
            other => panic!("hole: {other:?}"),
        }
        check_unchanged(&log);
        // An epoch below the latest, even after a valid batch of the call.
        let regress = run_of(4, &[4, 2], 2).concat();
        match log.append_replica(&regress).await {
            Err(LogError::EpochRegression {
                epoch: 2,
                latest: 4,
            }) => {}
            other => panic!("regression: {other:?}"),
        }
        check_unchanged(&log);
        match log.append_replica(&run_of(4, &[-1], 2).concat()).await {
            Err(LogError::EpochRegression {
                epoch: -1,
                latest: 3,
            }) => {}
            other => panic!("no epoch after epochs: {other:?}"),
        }
        // A corrupt second batch (a record byte, under the CRC).
        let mut bad = run_of(4, &[3, 3], 2);
        let n = bad[1].len();
        bad[1][n - 3] ^= 0x40;
        match log.append_replica(&bad.concat()).await {
            Err(LogError::InvalidBatch(_)) => {}
            other => panic!("corrupt: {other:?}"),
        }
        // A cut last batch.
        let whole = run_of(4, &[3, 3], 2).concat();
        match log.append_replica(&whole[..whole.len() - 5]).await {
            Err(LogError::InvalidBatch(_)) => {}
            other => panic!("cut: {other:?}"),
        }
        check_unchanged(&log);
        assert_eq!(read_all(&log).await, before);
        // Nothing at all is a no-op at the end.
        let a = log.append_replica(&[]).await.unwrap();
        assert_eq!((a.base_offset, a.next_offset), (4, 4));
        // And the log goes on from where it was.
        let a = log.append_replica(&whole).await.unwrap();
        assert_eq!((a.base_offset, a.next_offset), (4, 8));
        log.close().await.unwrap();
    });
}

#[test]
fn leader_appends_carry_the_leader_epoch_and_a_log_without_one_writes_none() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        // A producer's epoch is not the log's: without a leader epoch the
        // log writes -1 (what Kafka's clients and ours send anyway).
        let mut sent = make_batch(1, 2, 10, 5);
        broker_format::set_partition_leader_epoch(&mut sent, 42);
        log.append(&sent).await.unwrap();
        log.append(&make_batch(2, 2, 10, 5)).await.unwrap();
        assert!(entries(&log).is_empty());
        assert_eq!(log.leader_epoch(), -1);
        log.set_leader_epoch(7).await.unwrap();
        log.append(&make_batch(3, 2, 10, 5)).await.unwrap();
        let epochs: Vec<i32> = read_all(&log)
            .await
            .iter()
            .map(|b| {
                broker_format::BatchHeader::parse(b)
                    .unwrap()
                    .partition_leader_epoch
            })
            .collect();
        assert_eq!(epochs, vec![-1, -1, 7]);
        // The CRC does not cover the epoch: every stored batch still validates.
        for b in read_all(&log).await {
            broker_format::validate(&b).unwrap();
        }
        assert_eq!(entries(&log), vec![(7, 4)]);
        match log.set_leader_epoch(6).await {
            Err(LogError::EpochRegression {
                epoch: 6,
                latest: 7,
            }) => {}
            other => panic!("{other:?}"),
        }
        match log.set_leader_epoch(-3).await {
            Err(LogError::InvalidLeaderEpoch(-3)) => {}
            other => panic!("{other:?}"),
        }
        log.set_leader_epoch(7).await.unwrap();
        // An epoch without a batch is replaced by the next one.
        log.set_leader_epoch(8).await.unwrap();
        log.set_leader_epoch(9).await.unwrap();
        assert_eq!(entries(&log), vec![(7, 4), (9, 6)]);
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(
            entries(&log),
            vec![(7, 4)],
            "an epoch with no batch is not kept at open"
        );
        assert_eq!(
            log.leader_epoch(),
            -1,
            "the owner sets it again after an open"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn end_offset_for_epoch_answers_as_kafka_does() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        log.append_replica(&run_of(0, &[1, 1, 3, 4, 4], 2).concat())
            .await
            .unwrap();
        let end = |epoch, end_offset| Some(EpochEnd { epoch, end_offset });
        assert_eq!(log.end_offset_for_epoch(4), end(4, 10));
        assert_eq!(log.end_offset_for_epoch(3), end(3, 6));
        assert_eq!(log.end_offset_for_epoch(2), end(1, 4));
        assert_eq!(log.end_offset_for_epoch(1), end(1, 4));
        assert_eq!(log.end_offset_for_epoch(0), end(0, 0));
        assert_eq!(log.end_offset_for_epoch(5), None);
        assert_eq!(log.end_offset_for_epoch(-1), None);
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_across_segments_then_append_again_reads_back_byte_for_byte() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), small_segments()).await.unwrap();
        let old = run_of(0, &[1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4], 5);
        for b in &old {
            log.append_replica(b).await.unwrap();
        }
        assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
        // Into the middle of an early segment: later ones go.
        let cut = 5 * 5;
        log.truncate_to(cut).await.unwrap();
        assert_eq!(log.log_end_offset(), cut);
        assert_eq!(log.durable_end(), cut);
        assert_eq!(log.durable_offset(), cut);
        assert_eq!(read_all(&log).await, old[..5].to_vec());
        assert_eq!(entries(&log), vec![(1, 0), (2, 15)]);
        match log.read(cut + 1, 100).await {
            Err(LogError::OffsetOutOfRange { end, .. }) => assert_eq!(end, cut),
            other => panic!("{:?}", other.map(|r| r.next_offset)),
        }
        // A new leader's history from the cut, with an older epoch than
        // the one truncated away.
        let new = run_of(cut, &[2, 6, 6, 6, 6, 6, 6, 6], 7);
        for b in &new {
            log.append_replica(b).await.unwrap();
        }
        let mut want = old[..5].to_vec();
        want.extend(new.iter().cloned());
        assert_eq!(read_all(&log).await, want);
        assert_eq!(entries(&log), vec![(1, 0), (2, 15), (6, cut + 7)]);
        log.close().await.unwrap();
        let (log, report) = Log::open(dir.path(), small_segments()).await.unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(read_all(&log).await, want);
        assert_eq!(entries(&log), vec![(1, 0), (2, 15), (6, cut + 7)]);
        // Reads by timestamp see only the new history.
        let last = broker_format::BatchHeader::parse(want.last().unwrap()).unwrap();
        let ts = log.offset_for_timestamp(last.base_timestamp).await.unwrap();
        assert_eq!(ts, Some(last.base_offset as u64));
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_to_a_segment_base_the_log_start_and_the_end() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let old = run_of(0, &[1; 12], 5);
        for b in &old {
            log.append_replica(b).await.unwrap();
        }
        let end = log.log_end_offset();
        log.truncate_to(end).await.unwrap();
        assert_eq!(read_all(&log).await, old);
        let base = log.active_segment_base();
        assert!(base > 0);
        log.truncate_to(base).await.unwrap();
        assert_eq!(log.log_end_offset(), base);
        assert_eq!(log.active_segment_base(), base);
        assert_eq!(read_all(&log).await, old[..(base / 5) as usize].to_vec());
        log.truncate_to(0).await.unwrap();
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.segment_count(), 1);
        assert!(entries(&log).is_empty());
        assert!(read_all(&log).await.is_empty());
        log.append_replica(&old[0]).await.unwrap();
        assert_eq!(read_all(&log).await, old[..1].to_vec());
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(read_all(&log).await, old[..1].to_vec());
        assert_eq!(entries(&log), vec![(1, 0)]);
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_to_refuses_offsets_inside_a_batch_or_out_of_range() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        for b in run_of(0, &[0; 6], 5) {
            log.append_replica(&b).await.unwrap();
        }
        match log.truncate_to(12).await {
            Err(LogError::NotBatchBoundary {
                offset: 12,
                batch_base: 10,
                batch_next: 15,
            }) => {}
            other => panic!("{other:?}"),
        }
        match log.truncate_to(31).await {
            Err(LogError::TruncateOutOfRange {
                offset: 31,
                start: 0,
                end: 30,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(log.log_end_offset(), 30);
        // Still open and usable after a refusal.
        log.truncate_to(10).await.unwrap();
        assert_eq!(log.log_end_offset(), 10);
        log.close().await.unwrap();
    });
}

#[test]
fn leader_appends_continue_at_the_cut_under_every_fsync_policy() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::Interval(std::time::Duration::from_millis(3)),
    ] {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let cfg = LogConfig { fsync, ..config() };
            let (log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
            log.set_leader_epoch(1).await.unwrap();
            let mut kept = Vec::new();
            for i in 0..30u64 {
                let b = make_batch(i, 3, 120, 10);
                let a = log.append(&b).await.unwrap();
                if a.base_offset < 30 {
                    let mut s = with_base(&b, a.base_offset);
                    broker_format::set_partition_leader_epoch(&mut s, 1);
                    kept.push(s);
                }
            }
            log.truncate_to(30).await.unwrap();
            assert_eq!(log.leader_epoch(), -1, "a truncated log is a follower");
            log.set_leader_epoch(4).await.unwrap();
            for i in 0..10u64 {
                let b = make_batch(100 + i, 2, 90, 20);
                let a = log.append(&b).await.unwrap();
                let mut s = with_base(&b, a.base_offset);
                broker_format::set_partition_leader_epoch(&mut s, 4);
                kept.push(s);
            }
            assert_eq!(read_all(&log).await, kept, "{fsync:?}");
            assert_eq!(entries(&log), vec![(1, 0), (4, 30)]);
            drop(log);
            let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
            assert_eq!(read_all(&log).await, kept, "{fsync:?} after reopen");
            assert_eq!(entries(&log), vec![(1, 0), (4, 30)]);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn a_missing_or_garbage_epoch_checkpoint_is_rebuilt_from_the_batches() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        for b in run_of(0, &[0, 0, 1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 7, 7], 6) {
            log.append_replica(&b).await.unwrap();
        }
        let want = entries(&log);
        assert_eq!(want, vec![(0, 0), (1, 12), (5, 42), (7, 72)]);
        log.close().await.unwrap();
        let file = dir.path().join("leader-epoch-checkpoint");
        for damage in [
            None,
            Some(&b"0\n2\n5 1\n"[..]),
            Some(b"garbage"),
            Some(b"0\n2\n0 0\n3 12\n"),
            Some(b"0\n1\n1 5\n"),
        ] {
            match damage {
                None => std::fs::remove_file(&file).unwrap(),
                Some(bytes) => std::fs::write(&file, bytes).unwrap(),
            }
            let (log, report) = Log::open(dir.path(), config()).await.unwrap();
            assert!(report.epoch_checkpoint_rewritten, "{damage:?}: {report:?}");
            assert_eq!(entries(&log), want, "{damage:?}");
            log.close().await.unwrap();
            let (log, report) = Log::open(dir.path(), config()).await.unwrap();
            assert!(
                !report.epoch_checkpoint_rewritten,
                "{damage:?}: rewritten once"
            );
            log.close().await.unwrap();
        }
        // Entries past the end (a crash after the file, before the data)
        // are dropped at open.
        std::fs::write(&file, b"0\n6\n0 0\n1 12\n5 42\n7 72\n8 84\n9 100\n").unwrap();
        let (log, report) = Log::open(dir.path(), config()).await.unwrap();
        assert!(report.epoch_checkpoint_rewritten);
        assert_eq!(entries(&log), want);
        log.close().await.unwrap();
    });
}

#[test]
fn a_crash_after_a_torn_tail_rebuilds_its_epochs_from_what_survived() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let batches = run_of(0, &[2, 2, 3, 4], 3);
        for b in &batches {
            log.append_replica(b).await.unwrap();
        }
        drop(log);
        // The last batch torn by a crash: epoch 4 starts nowhere now.
        let seg = dir.path().join(format!("{:020}.log", 0));
        let last_at: usize = batches[..3].iter().map(Vec::len).sum();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(last_at as u64 + 10).unwrap();
        drop(f);
        let (log, report) = Log::open(dir.path(), config()).await.unwrap();
        assert!(report.truncated_bytes > 0);
        assert!(report.epoch_checkpoint_rewritten);
        assert_eq!(log.log_end_offset(), 9);
        assert_eq!(entries(&log), vec![(2, 0), (3, 6)]);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_moves_the_first_epoch_entry_to_the_new_log_start() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_bytes: Some(12_000),
            ..config()
        };
        let (log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        for b in run_of(
            0,
            &[1; 20].iter().chain(&[2; 20]).copied().collect::<Vec<_>>(),
            4,
        ) {
            log.append_replica(&b).await.unwrap();
        }
        let r = log.enforce_retention(i64::MAX).await.unwrap();
        assert!(!r.deleted.is_empty());
        let start = log.log_start_offset();
        let e = entries(&log);
        if start < 80 {
            assert_eq!(e, vec![(1, start), (2, 80)]);
        } else {
            assert_eq!(e, vec![(2, start)]);
        }
        let below_all = log.end_offset_for_epoch(0).unwrap();
        assert_eq!(
            below_all.end_offset, start,
            "below every epoch: the log start"
        );
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        assert_eq!(entries(&log), e);
        log.close().await.unwrap();
    });
}

/// Regression: a follower write that failed left its new epoch's entry at
/// the log end, and the next leader's batches there (an older epoch) were
/// refused as a regression, with no truncation able to remove it.
#[test]
fn a_failed_follower_write_forgets_its_epoch_so_the_next_fetch_is_taken() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let (log, _) = Log::open_with_faults(dir.path(), config(), Some(faults.clone()))
            .await
            .unwrap();
        log.append_replica(&run_of(0, &[3, 3], 2).concat())
            .await
            .unwrap();
        faults.fail_write_in.set(1);
        assert!(log
            .append_replica(&run_of(4, &[6, 6], 2).concat())
            .await
            .is_err());
        // The next leader's history at the same offsets, in epoch 5.
        let next = run_of(4, &[5, 5], 2);
        let a = log.append_replica(&next.concat()).await.unwrap();
        assert_eq!((a.base_offset, a.next_offset), (4, 8));
        assert_eq!(entries(&log), vec![(3, 0), (5, 4)]);
        let mut want = run_of(0, &[3, 3], 2);
        want.extend(next);
        assert_eq!(read_all(&log).await, want);
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(entries(&log), vec![(3, 0), (5, 4)]);
        assert_eq!(read_all(&log).await, want);
        log.close().await.unwrap();
    });
}

/// Readers whose disk reads span a truncation never return what it
/// removed: every batch a read returns is the log's batch at that offset
/// when the read returns, and ends at or below the log's end then.
#[test]
fn reads_racing_truncations_never_return_truncated_bytes() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        // No read cache: every read goes to the disk and awaits.
        let cfg = LogConfig {
            read_cache_buffers: 0,
            ..small_segments()
        };
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        // The batches the log holds (or is being given), by position.
        let model: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let stop = Rc::new(Cell::new(false));
        let readers: Vec<_> = (0..4u64)
            .map(|r| {
                let (log, model, stop) = (log.clone(), model.clone(), stop.clone());
                glommio::spawn_local(async move {
                    let mut rng = Rng(r + 1);
                    let mut checked = 0u64;
                    while !stop.get() {
                        let end = log.durable_end();
                        if end == 0 {
                            futures_lite::future::yield_now().await;
                            continue;
                        }
                        let at = rng.below(end);
                        let read = match log.read(at, 3000).await {
                            Ok(read) => read,
                            Err(LogError::OffsetOutOfRange { .. }) => continue,
                            Err(e) => panic!("read at {at}: {e}"),
                        };
                        let batches = split(read.bytes.as_slice());
                        if batches.is_empty() {
                            continue;
                        }
                        assert!(
                            read.next_offset <= log.durable_end(),
                            "a read returned offsets up to {} past the end {}",
                            read.next_offset,
                            log.durable_end()
                        );
                        let m = model.borrow();
                        for b in batches {
                            let base = broker_format::BatchHeader::parse(&b).unwrap().base_offset;
                            let now = m.iter().find(|x| {
                                broker_format::BatchHeader::parse(x).unwrap().base_offset == base
                            });
                            assert_eq!(
                                Some(&b),
                                now,
                                "a read returned a truncated batch at {base}"
                            );
                            checked += 1;
                        }
                    }
                    checked
                })
            })
            .collect();
        let mut rng = Rng(99);
        let mut seed = 0u64;
        let mut epoch = 0;
        for round in 0..40u64 {
            if round > 0 {
                let n = model.borrow().len();
                let keep = (n - 1 - rng.below(n.min(10) as u64) as usize).max(1);
                let cut = broker_format::BatchHeader::parse(&model.borrow()[keep])
                    .unwrap()
                    .base_offset as u64;
                log.truncate_to(cut).await.unwrap();
                model.borrow_mut().truncate(keep);
                epoch += 1;
            }
            let mut at = log.log_end_offset();
            let new: Vec<Vec<u8>> = (0..4 + rng.below(8))
                .map(|_| {
                    seed += 1;
                    let b = stored(1_000 + seed, 5, at, epoch);
                    at += 5;
                    b
                })
                .collect();
            model.borrow_mut().extend(new.iter().cloned());
            log.append_replica(&new.concat()).await.unwrap();
        }
        stop.set(true);
        let mut checked = 0;
        for r in readers {
            checked += r.await;
        }
        assert!(checked > 100, "only {checked} batches read back");
        assert_eq!(read_all(&log).await, *model.borrow());
        log.close().await.unwrap();
    });
}

/// Stops a truncation at `at` (after `passes` earlier passes there),
/// "crashes" (drops the log) and checks what recovery makes of it.
async fn stop_truncate_and_recover(at: LogFault, passes: u32) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let faults = Rc::new(Faults::default());
    let old = run_of(
        0,
        &[1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4],
        5,
    );
    let (log, _) = Log::open_with_faults(dir.path(), small_segments(), Some(faults.clone()))
        .await
        .unwrap();
    for b in &old {
        log.append_replica(b).await.unwrap();
    }
    let old_end = log.log_end_offset();
    let all_entries = entries(&log);
    assert!(log.segment_count() >= 4);
    let cut = 5 * 5;
    faults.stop_at.set(Some(at));
    faults.stop_after_passes.set(passes);
    let stopped = log.truncate_to(cut).await;
    if faults.stop_at.get().is_some() {
        // Fewer passes there than asked for: the truncation completed.
        assert!(stopped.is_ok(), "{at:?}/{passes}: {stopped:?}");
        faults.stop_at.set(None);
        drop(log);
        return false;
    }
    assert!(
        stopped.is_err(),
        "{at:?}/{passes}: the stop was not reported"
    );
    assert!(
        matches!(log.append_replica(&old[4]).await, Err(LogError::Closed)),
        "a log whose truncation failed half-way takes nothing more"
    );
    drop(log);
    let (log, _) = Log::open(dir.path(), small_segments()).await.unwrap();
    let end = log.log_end_offset();
    assert!(
        (cut..=old_end).contains(&end),
        "{at:?}/{passes}: recovered end {end} outside {cut}..={old_end}"
    );
    let got = read_all(&log).await;
    assert_eq!(
        got,
        old[..got.len()].to_vec(),
        "{at:?}/{passes}: not a prefix"
    );
    let want_entries: Vec<(i32, u64)> = all_entries.iter().copied().filter(|e| e.1 < end).collect();
    assert_eq!(entries(&log), want_entries, "{at:?}/{passes}");
    // Finishing the job and writing a new history works from there.
    log.truncate_to(cut).await.unwrap();
    let new = run_of(cut, &[5, 5, 5, 5, 5, 5, 5, 5], 6);
    for b in &new {
        log.append_replica(b).await.unwrap();
    }
    let mut want = old[..5].to_vec();
    want.extend(new.iter().cloned());
    assert_eq!(read_all(&log).await, want, "{at:?}/{passes}");
    drop(log);
    let (log, _) = Log::open(dir.path(), small_segments()).await.unwrap();
    assert_eq!(read_all(&log).await, want, "{at:?}/{passes} after reopen");
    assert_eq!(entries(&log), vec![(1, 0), (2, 15), (5, cut)]);
    log.close().await.unwrap();
    true
}

#[test]
fn a_crash_at_any_step_of_a_truncation_recovers_a_prefix_at_least_as_long_as_the_cut() {
    run(async {
        for at in [
            LogFault::TruncateIndexWritten,
            LogFault::TruncateDirSynced,
            LogFault::TruncateFileCut,
            LogFault::TruncateFileSynced,
            LogFault::TruncateEpochsWritten,
        ] {
            assert!(
                stop_truncate_and_recover(at, 0).await,
                "{at:?} never reached"
            );
        }
        let mut passes = 0;
        while stop_truncate_and_recover(LogFault::TruncateSegmentDeleted, passes).await {
            passes += 1;
        }
        assert!(passes >= 3, "only {passes} later segments were deleted");
    });
}
