//! Fsync policies, rolling by age, and where reads are served from.
#![allow(clippy::unwrap_used)]

mod common;

use std::{rc::Rc, time::Duration};

use broker_log::{Faults, FsyncPolicy, Log, LogConfig};
use common::{make_batch, run, with_base};

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        retention_ms: None,
        ..LogConfig::default()
    }
}

#[test]
fn always_policy_fsyncs_before_every_ack() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let (log, _) = Log::open_with_faults(
            dir.path(),
            config(FsyncPolicy::Always),
            Some(faults.clone()),
        )
        .await
        .unwrap();
        for i in 0..5 {
            let before = faults.syncs.get();
            let a = log.append(&make_batch(i, 2, 10, 0)).await.unwrap();
            assert!(faults.syncs.get() > before, "ack without an fsync");
            assert_eq!(log.durable_offset(), a.next_offset);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn interval_policy_acks_after_write_and_syncs_on_a_timer() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let cfg = config(FsyncPolicy::Interval(Duration::from_millis(20)));
        let (log, _) = Log::open_with_faults(dir.path(), cfg, Some(faults.clone()))
            .await
            .unwrap();
        let a = log.append(&make_batch(1, 3, 10, 0)).await.unwrap();
        assert_eq!(faults.syncs.get(), 0, "interval acks before fsyncing");
        assert_eq!(log.high_watermark(), a.next_offset);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.durable_offset() < a.next_offset {
            assert!(
                std::time::Instant::now() < deadline,
                "the interval fsync never came"
            );
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(faults.syncs.get() >= 1);
        log.close().await.unwrap();
    });
}

/// Under a steady stream of appends the interval fsync still comes on
/// time (a timer restarted on every write cycle would never fire).
#[test]
fn interval_policy_syncs_under_steady_load() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let cfg = config(FsyncPolicy::Interval(Duration::from_millis(10)));
        let (log, _) = Log::open_with_faults(dir.path(), cfg, Some(faults.clone()))
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_millis(200) {
            log.append(&make_batch(i, 2, 100, 0)).await.unwrap();
            i += 1;
        }
        let syncs = faults.syncs.get();
        assert!(
            syncs >= 5,
            "{syncs} fsyncs in 200 ms of appends with a 10 ms interval"
        );
        assert!(log.durable_offset() > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn never_policy_syncs_only_at_close() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let (log, _) =
            Log::open_with_faults(dir.path(), config(FsyncPolicy::Never), Some(faults.clone()))
                .await
                .unwrap();
        for i in 0..20 {
            log.append(&make_batch(i, 2, 10, 0)).await.unwrap();
        }
        glommio::timer::sleep(Duration::from_millis(30)).await;
        assert_eq!(faults.syncs.get(), 0);
        assert_eq!(log.durable_offset(), 0);
        assert_eq!(log.high_watermark(), 40);
        log.close().await.unwrap();
        assert_eq!(log.durable_offset(), 40);
        assert!(faults.syncs.get() >= 1);
    });
}

#[test]
fn segments_roll_by_age() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_age_max: Some(Duration::from_millis(30)),
            ..config(FsyncPolicy::Always)
        };
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        log.append(&make_batch(1, 1, 10, 0)).await.unwrap();
        log.append(&make_batch(2, 1, 10, 0)).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        glommio::timer::sleep(Duration::from_millis(40)).await;
        let a = log.append(&make_batch(3, 1, 10, 0)).await.unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(dir
            .path()
            .join(format!("{:020}.log", a.base_offset))
            .exists());
        assert!(
            dir.path().join(format!("{:020}.index", 0)).exists(),
            "the rolled segment's index is written"
        );
        log.close().await.unwrap();
    });
}

/// Fresh data is served from the written tail buffer, older data from a DMA
/// read; both return the very bytes appended.
#[test]
fn reads_of_fresh_data_come_from_memory_and_old_data_from_disk() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            read_cache_buffers: 1,
            write_buffer_bytes: 64 << 10,
            ..config(FsyncPolicy::Always)
        };
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        let mut stored = Vec::new();
        for i in 0..200 {
            let b = make_batch(i, 5, 200, 0);
            let a = log.append(&b).await.unwrap();
            stored.push((a.base_offset, with_base(&b, a.base_offset)));
        }
        let (last_base, last) = stored.last().unwrap();
        let fresh = log.read(*last_base, 1).await.unwrap();
        assert!(
            fresh.bytes.is_from_memory(),
            "the newest batch should be served from memory"
        );
        assert_eq!(fresh.bytes.as_slice(), &last[..]);
        let (first_base, first) = &stored[0];
        let old = log.read(*first_base, 1).await.unwrap();
        assert!(
            !old.bytes.is_from_memory(),
            "old data beyond the cache comes from disk"
        );
        assert_eq!(old.bytes.as_slice(), &first[..]);
        log.close().await.unwrap();
    });
}
