//! Disk failures: a failed write or fsync fails the appends it carried and
//! never acknowledges them; the log stays readable up to the last
//! acknowledged batch and accepts appends again. Injected faults cover EIO on
//! fsync; a real size-limited tmpfs covers a disk that fills up and frees.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, process::Command, rc::Rc};

use broker_log::{Faults, FsyncPolicy, Log, LogConfig, LogError};
use common::{make_batch, run, with_base};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 32 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

#[test]
fn failed_write_fails_its_appends_and_the_log_recovers() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let (log, _) = Log::open_with_faults(dir.path(), config(), Some(faults.clone()))
            .await
            .unwrap();
        let mut good = Vec::new();
        for i in 0..10 {
            let b = make_batch(i, 3, 100, 0);
            let a = log.append(&b).await.unwrap();
            good.push(with_base(&b, a.base_offset));
        }
        let hw = log.high_watermark();
        faults.fail_write_in.set(1);
        // Several appends in flight share the failing cycle: all fail.
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(
                    async move { log.append(&make_batch(100 + i, 2, 50, 0)).await },
                )
            })
            .collect();
        for t in tasks {
            let err = t
                .await
                .expect_err("an append carried by a failed write must fail");
            assert!(err.is_no_space(), "{err}");
        }
        assert_eq!(log.high_watermark(), hw);
        assert_eq!(common::read_all(&log).await, good);
        // The next append takes the offset the failed ones did not keep.
        let b = make_batch(7, 4, 80, 0);
        let a = log.append(&b).await.unwrap();
        assert_eq!(a.base_offset, hw);
        good.push(with_base(&b, hw));
        assert_eq!(common::read_all(&log).await, good);
        drop(log);
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(common::read_all(&log).await, good);
        log.close().await.unwrap();
    });
}

#[test]
fn failed_fsync_is_not_retried_as_success() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let faults = Rc::new(Faults::default());
        let (log, _) = Log::open_with_faults(dir.path(), config(), Some(faults.clone()))
            .await
            .unwrap();
        let first = make_batch(1, 2, 64, 0);
        log.append(&first).await.unwrap();
        faults.fail_sync_in.set(1);
        let lost = make_batch(2, 2, 64, 0);
        let err = log.append(&lost).await.expect_err("fsync failed");
        assert!(err.to_string().contains("fsyncing"), "{err}");
        assert_eq!(log.high_watermark(), 2);
        assert_eq!(log.durable_offset(), 2);
        // The written-but-not-durable batch was cut; a new batch takes its place.
        let next = make_batch(3, 1, 10, 0);
        assert_eq!(log.append(&next).await.unwrap().base_offset, 2);
        let want = vec![with_base(&first, 0), with_base(&next, 2)];
        assert_eq!(common::read_all(&log).await, want);
        drop(log);
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(common::read_all(&log).await, want);
        log.close().await.unwrap();
    });
}

#[test]
fn invalid_batches_never_reach_the_log() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config()).await.unwrap();
        let good = make_batch(1, 3, 30, 0);
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert!(matches!(
            log.append(&bad_crc).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            log.append(&good[..good.len() - 1]).await,
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            log.append(b"garbage").await,
            Err(LogError::InvalidBatch(_))
        ));
        let huge = vec![0u8; LogConfig::default().batch_bytes_max + 1];
        assert!(matches!(
            log.append(&huge).await,
            Err(LogError::BatchTooLarge { .. })
        ));
        assert_eq!(log.high_watermark(), 0);
        assert_eq!(log.append(&good).await.unwrap().base_offset, 0);
        log.close().await.unwrap();
    });
}

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A real filesystem that fills up: appends fail cleanly with ENOSPC,
/// nothing acknowledged is lost, and appends succeed once space is freed.
#[test]
fn full_disk_fails_appends_cleanly_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(mnt.path(), "2m");
    let root = mnt.path().to_path_buf();
    run(async move {
        let filler = root.join("filler");
        std::fs::write(&filler, vec![7u8; 512 << 10]).unwrap();
        let dir = root.join("log");
        let cfg = LogConfig {
            segment_bytes_max: 256 << 10,
            fsync: FsyncPolicy::Always,
            retention_ms: None,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(&dir, cfg.clone()).await.unwrap();
        let mut acked = Vec::new();
        let mut failures = 0;
        for i in 0..2000u64 {
            let b = make_batch(i, 10, 200, 0);
            match log.append(&b).await {
                Ok(a) => acked.push(with_base(&b, a.base_offset)),
                Err(e) => {
                    assert!(e.is_no_space(), "expected ENOSPC, got {e}");
                    failures += 1;
                    if failures >= 3 {
                        break;
                    }
                }
            }
        }
        assert!(failures >= 3, "the disk never filled up");
        assert!(!acked.is_empty());
        assert_eq!(
            common::read_all(&log).await,
            acked,
            "acknowledged data stays readable"
        );
        // Free space: appends succeed again.
        std::fs::remove_file(&filler).unwrap();
        for i in 0..20u64 {
            let b = make_batch(5000 + i, 10, 200, 0);
            let a = log.append(&b).await.unwrap();
            acked.push(with_base(&b, a.base_offset));
        }
        assert_eq!(common::read_all(&log).await, acked);
        drop(log);
        let (log, _) = Log::open(&dir, cfg).await.unwrap();
        assert_eq!(
            common::read_all(&log).await,
            acked,
            "nothing acknowledged lost across reopen"
        );
        log.close().await.unwrap();
    });
}
