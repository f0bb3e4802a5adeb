//! Recovery at open: a torn or corrupt tail is cut back to exactly the valid
//! prefix, indexes that are missing or stale are rebuilt, damage to a closed
//! segment is reported with the file and the reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use broker_log::{Log, LogConfig, LogError};
use common::{make_batch, run, with_base};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 << 10,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Appends `n` batches and returns them as stored.
async fn fill(log: &Log, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = make_batch(
            i,
            1 + (i % 4) as usize,
            60 + (i as usize * 7) % 90,
            1000 + i as i64,
        );
        let a = log.append(&b).await.unwrap();
        out.push((a.base_offset, with_base(&b, a.base_offset)));
    }
    out
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Cuts the last segment at every byte of its final batch (and flips every
/// byte of it): each reopen keeps exactly the batches before it, and the
/// log then accepts an append at that offset.
#[test]
fn recovery_keeps_exactly_the_valid_prefix() {
    run(async {
        let src = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(src.path(), config()).await.unwrap();
        let mut stored = fill(&log, 100).await;
        log.close().await.unwrap();
        assert!(
            std::fs::read_dir(src.path()).unwrap().count() > 3,
            "several segments"
        );
        let seg = last_segment(src.path());
        // The final batch lands after the checkpoint of the clean close, and
        // the log is then dropped as in a crash: it is what recovery validates.
        let mut last_start = std::fs::metadata(&seg).unwrap().len();
        let (log, _) = Log::open(src.path(), config()).await.unwrap();
        let b = make_batch(1234, 3, 120, 7000);
        let a = log.append(&b).await.unwrap();
        stored.push((a.base_offset, with_base(&b, a.base_offset)));
        drop(log);
        let seg_now = last_segment(src.path());
        if seg_now != seg {
            last_start = 0; // the final batch rolled into a segment of its own
        }
        let seg_name = seg_now.file_name().unwrap().to_owned();
        let (last_base, last_bytes) = stored.last().unwrap().clone();
        let seg_len = last_start + last_bytes.len() as u64;
        let prefix: Vec<Vec<u8>> = stored[..stored.len() - 1]
            .iter()
            .map(|(_, b)| b.clone())
            .collect();

        let check = |dir: std::path::PathBuf, what: String| {
            let prefix = prefix.clone();
            async move {
                let (log, report) = Log::open(&dir, config())
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(log.high_watermark(), last_base, "{what}");
                assert_eq!(common::read_all(&log).await, prefix, "{what}");
                // Bytes after the prefix are cut and the reason is said;
                // a cut exactly at the prefix leaves nothing to cut.
                let expect_cut = what != format!("cut at {last_start}");
                assert_eq!(
                    report.truncation_reason.is_some(),
                    expect_cut,
                    "{what}: {report:?}"
                );
                assert_eq!(report.truncated_bytes > 0, expect_cut, "{what}: {report:?}");
                let again = make_batch(999, 2, 10, 5000);
                let a = log.append(&again).await.unwrap();
                assert_eq!(a.base_offset, last_base, "{what}");
                log.close().await.unwrap();
            }
        };
        for cut in last_start..seg_len {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(src.path(), dir.path());
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join(&seg_name))
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            check(dir.path().to_path_buf(), format!("cut at {cut}")).await;
        }
        for i in 0..last_bytes.len() {
            // partition_leader_epoch (bytes 12..16) is outside the CRC by
            // design, as in Kafka: the leader rewrites it.
            if (12..16).contains(&i) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            copy_dir(src.path(), dir.path());
            let p = dir.path().join(&seg_name);
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[last_start as usize + i] ^= 0x5a;
            std::fs::write(&p, bytes).unwrap();
            check(
                dir.path().to_path_buf(),
                format!("flip at byte {i} of the last batch"),
            )
            .await;
        }
    });
}

/// A log dropped without close (a crash) leaves no checkpoint for the
/// active segment; reopening validates it and loses nothing acknowledged.
#[test]
fn reopen_after_crash_without_close_keeps_everything_acknowledged() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let stored = fill(&log, 30).await;
        drop(log);
        let (log, report) = Log::open(dir.path(), config()).await.unwrap();
        assert!(report.scanned_bytes > 0);
        let want: Vec<Vec<u8>> = stored.iter().map(|(_, b)| b.clone()).collect();
        assert_eq!(common::read_all(&log).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn missing_and_stale_indexes_are_rebuilt() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let stored = fill(&log, 150).await;
        assert!(log.segment_count() >= 3);
        let probe: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
        let mut before = Vec::new();
        for o in &probe {
            before.push(log.read(*o, 1).await.unwrap().bytes.as_slice().to_vec());
        }
        let by_time_before = log.offset_for_timestamp(1030).await.unwrap();
        log.close().await.unwrap();
        // Remove the first segment's offset index; damage the last one's time index.
        std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
        let last = last_segment(dir.path()).with_extension("timeindex");
        let mut b = std::fs::read(&last).unwrap();
        let n = b.len();
        b[n / 2] ^= 1;
        std::fs::write(&last, b).unwrap();
        let (log, report) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(report.rebuilt_indexes.len(), 2, "{report:?}");
        assert_eq!(report.truncated_bytes, 0);
        for (o, b) in probe.iter().zip(&before) {
            assert_eq!(&log.read(*o, 1).await.unwrap().bytes.as_slice().to_vec(), b);
        }
        assert_eq!(
            log.offset_for_timestamp(1030).await.unwrap(),
            by_time_before
        );
        log.close().await.unwrap();
        // The rebuilt indexes were written back: the next open rebuilds nothing.
        let (log, report) = Log::open(dir.path(), config()).await.unwrap();
        assert!(report.rebuilt_indexes.is_empty(), "{report:?}");
        log.close().await.unwrap();
    });
}

#[test]
fn damaged_closed_segment_names_the_file() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        fill(&log, 150).await;
        assert!(log.segment_count() >= 3);
        log.close().await.unwrap();
        let first = dir.path().join(format!("{:020}.log", 0));
        let idx = dir.path().join(format!("{:020}.index", 0));
        std::fs::remove_file(&idx).unwrap();
        let mut b = std::fs::read(&first).unwrap();
        b[100] ^= 0xff;
        std::fs::write(&first, b).unwrap();
        match Log::open(dir.path(), config()).await {
            Err(LogError::Corrupt { path, reason }) => {
                assert_eq!(path, first);
                assert!(reason.contains("damaged"), "{reason}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a damaged closed segment must not open silently"),
        }
    });
}

#[test]
fn badly_named_segment_file_is_an_error() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("123.log"), b"").unwrap();
        let err = Log::open(dir.path(), config())
            .await
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("123.log") && text.contains("20-digit"),
            "{text}"
        );
    });
}
