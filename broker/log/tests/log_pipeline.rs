//! Pipelined write cycles: under concurrent appends the flusher keeps two
//! data writes in flight, acknowledges in file order, and a failure of the
//! later write fails only the appends the earlier one did not carry. Writes
//! are slowed down with the fault plan's `write_delay` so that two are
//! reliably in flight at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::{rc::Rc, time::Duration};

use broker_log::{Appended, Faults, FsyncPolicy, Log, LogConfig, LogError};
use common::{make_batch, run, with_base};

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Appends `batches` concurrently (one task each, spawned in order) and
/// returns each one's result, in the same order.
async fn append_all(log: &Log, batches: &[Vec<u8>]) -> Vec<Result<Appended, LogError>> {
    let tasks: Vec<_> = batches
        .iter()
        .map(|b| {
            let (log, b) = (log.clone(), b.clone());
            glommio::spawn_local(async move { log.append(&b).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

#[test]
fn failed_second_write_in_flight_fails_only_its_appends() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let cfg = config(FsyncPolicy::Never);
        let (log, _) = Log::open_with_faults(dir.path(), cfg.clone(), Some(faults.clone()))
            .await
            .unwrap();
        faults.write_delay.set(Duration::from_millis(40));
        // Write 1 carries `first` alone; writes 2 and 3 split the group that
        // arrives while it is in flight, and are in flight together. Write 3 fails.
        faults.fail_write_in.set(3);
        let first = make_batch(1, 10, 1000, 0);
        let first_task = {
            let (log, b) = (log.clone(), first.clone());
            glommio::spawn_local(async move { log.append(&b).await })
        };
        glommio::timer::sleep(Duration::from_millis(5)).await;
        // Small batches, so the first buffer of the group holds whole ones.
        let group: Vec<Vec<u8>> = (0..20).map(|i| make_batch(100 + i, 2, 1000, 0)).collect();
        let results = append_all(&log, &group).await;
        let a = first_task.await.unwrap();
        assert_eq!(a.base_offset, 0);
        assert!(
            faults.max_writes_in_flight.get() >= 2,
            "the two writes of the group were never in flight together"
        );
        let mut acked = vec![with_base(&first, 0)];
        let ok = results.iter().take_while(|r| r.is_ok()).count();
        assert!(ok >= 1, "the write that completed acknowledged nothing");
        assert!(
            ok < group.len(),
            "the failed write acknowledged its appends"
        );
        for (b, r) in group.iter().zip(&results) {
            match r {
                Ok(a) => acked.push(with_base(b, a.base_offset)),
                Err(e) => assert!(e.is_no_space(), "{e}"),
            }
        }
        assert!(
            results[ok..].iter().all(Result::is_err),
            "acknowledgements are in file order: nothing after a failure succeeds"
        );
        let hw = results[ok - 1].as_ref().unwrap().next_offset;
        assert_eq!(log.high_watermark(), hw);
        faults.write_delay.set(Duration::ZERO);
        assert_eq!(common::read_all(&log).await, acked);
        // The log continues at the acknowledged end.
        let next = make_batch(7, 3, 100, 0);
        assert_eq!(log.append(&next).await.unwrap().base_offset, hw);
        acked.push(with_base(&next, hw));
        drop(log);
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        assert_eq!(
            common::read_all(&log).await,
            acked,
            "nothing past the acknowledged end survives a reopen"
        );
        log.close().await.unwrap();
    });
}

/// Many concurrent appenders: at most two writes in flight, at least two at
/// some point, every append acknowledged with its own offsets, and the log
/// reads back (from memory and after reopen) exactly what was appended.
fn concurrent_appends_read_back(fsync: FsyncPolicy) {
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let cfg = LogConfig {
            segment_bytes_max: 1 << 20,
            ..config(fsync)
        };
        let (log, _) = Log::open_with_faults(dir.path(), cfg.clone(), Some(faults.clone()))
            .await
            .unwrap();
        faults.write_delay.set(Duration::from_millis(2));
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut mine = Vec::new();
                    for i in 0..12u64 {
                        let b = make_batch(t * 1000 + i, 1 + (i % 7) as usize, 700, 0);
                        let a = log.append(&b).await.unwrap();
                        if fsync == FsyncPolicy::Always {
                            assert!(
                                log.durable_offset() >= a.next_offset,
                                "acknowledged before its fdatasync"
                            );
                        }
                        mine.push((a.base_offset, with_base(&b, a.base_offset)));
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all.sort_by_key(|(base, _)| *base);
        let want: Vec<Vec<u8>> = all.into_iter().map(|(_, b)| b).collect();
        let max = faults.max_writes_in_flight.get();
        assert!(
            (2..=2).contains(&max),
            "{max} writes were in flight at once"
        );
        assert_eq!(common::read_all(&log).await, want);
        log.close().await.unwrap();
        let (log, report) = Log::open(dir.path(), cfg).await.unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(common::read_all(&log).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn concurrent_appends_pipeline_writes_and_read_back_with_fsync_never() {
    concurrent_appends_read_back(FsyncPolicy::Never);
}

#[test]
fn concurrent_appends_pipeline_writes_and_read_back_with_fsync_always() {
    concurrent_appends_read_back(FsyncPolicy::Always);
}

#[test]
fn concurrent_appends_pipeline_writes_and_read_back_with_fsync_interval() {
    concurrent_appends_read_back(FsyncPolicy::Interval(Duration::from_millis(3)));
}
