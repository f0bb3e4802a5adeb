//! Retention: whole closed segments go by age or by size, never the active
//! one; the log start offset advances and survives a reopen; reads below it
//! say which offsets are valid.
#![allow(clippy::unwrap_used)]

mod common;

use broker_log::{Log, LogConfig, LogError};
use common::{make_batch, run};

#[test]
fn retention_by_time_deletes_old_segments_and_advances_start() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes_max: 8 << 10,
            retention_ms: Some(1000),
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), cfg.clone()).await.unwrap();
        // Old records (t = 0..), then new ones (t = 100_000..).
        for i in 0..60 {
            log.append(&make_batch(i, 4, 100, i as i64)).await.unwrap();
        }
        let old_end = log.high_watermark();
        for i in 0..60 {
            log.append(&make_batch(100 + i, 4, 100, 100_000 + i as i64))
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 4);
        let report = log.enforce_retention(100_500).await.unwrap();
        assert!(!report.deleted.is_empty());
        let start = log.log_start_offset();
        assert_eq!(report.log_start_offset, start);
        assert!(
            start > 0 && start <= old_end,
            "start {start}, old end {old_end}"
        );
        assert_eq!(log.segment_count(), segments - report.deleted.len());
        match log.read(0, 100).await {
            Err(LogError::OffsetOutOfRange {
                requested,
                start: s,
                end,
            }) => {
                assert_eq!((requested, s, end), (0, start, log.high_watermark()));
            }
            other => panic!(
                "expected out of range, got {:?}",
                other.map(|r| r.next_offset)
            ),
        }
        assert!(log.read(start, 100).await.is_ok());
        // Far in the future everything has expired, but the active segment stays.
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        let hw = log.high_watermark();
        log.close().await.unwrap();
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        assert_eq!(log.high_watermark(), hw);
        assert!(log.log_start_offset() > start);
        let append = log.append(&make_batch(1, 1, 1, 1)).await.unwrap();
        assert_eq!(append.base_offset, hw);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_keeps_the_newest_bytes() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes_max: 8 << 10,
            retention_ms: None,
            retention_bytes: Some(20 << 10),
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), cfg).await.unwrap();
        for i in 0..200 {
            log.append(&make_batch(i, 4, 100, 0)).await.unwrap();
        }
        let before = log.size_bytes();
        assert!(before > 40 << 10);
        let report = log.enforce_retention(0).await.unwrap();
        let after = log.size_bytes();
        assert_eq!(before - after, report.deleted_bytes);
        assert!(after >= 20 << 10, "kept {after} bytes, below the limit");
        assert!(
            after < (20 << 10) + (8 << 10) + 4096,
            "kept {after} bytes: one segment too many"
        );
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name == broker_log::epochs::CHECKPOINT_FILE {
                continue;
            }
            let base: u64 = name[..20].parse().unwrap();
            assert!(base >= log.log_start_offset(), "{name} should be gone");
        }
        log.close().await.unwrap();
    });
}
