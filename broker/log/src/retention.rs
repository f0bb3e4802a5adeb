//! Retention: which segments to delete (`segments_to_delete`, pure: no I/O,
//! no state) and [`Log::enforce_retention`], which applies that plan to the
//! log's files.
//!
//! Rules (Kafka's): only whole segments, oldest first, never the active one;
//! by time, a segment goes when its newest record is older than
//! `retention_ms`; by size, the oldest go while the log stays at or above
//! `retention_bytes` without them.
//!
//! Invariant: the log start offset is the first remaining segment's base;
//! a segment leaves the in-memory map (and the read cache) before its files
//! are removed, its `.log` last; the leader-epoch cache's first entry then
//! moves up to the new start (Kafka's `truncateFromStart`), persisted after
//! the removals. A pass while a roll, close or truncation holds the log
//! deletes nothing.

use crate::{io, segment, segment::Segment, Log, LogError, RetentionReport};

/// What retention needs to know of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Base offset.
    pub base_offset: u64,
    /// Bytes.
    pub len: u64,
    /// Largest record timestamp, ms (i64::MIN when empty).
    pub max_timestamp: i64,
}

/// How many of the oldest segments to delete. `segments` is in offset
/// order and ends with the active segment, which is never counted.
pub fn segments_to_delete(
    segments: &[SegmentInfo],
    now_ms: i64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> usize {
    let Some((_active, closed)) = segments.split_last() else {
        return 0;
    };
    let mut total: u64 = segments.iter().map(|s| s.len).sum();
    let mut n = 0;
    for s in closed {
        let expired = retention_ms.is_some_and(|ms| {
            let cutoff = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
            s.max_timestamp < cutoff
        });
        let oversize = retention_bytes.is_some_and(|max| total - s.len >= max);
        if !(expired || oversize) {
            break;
        }
        total -= s.len;
        n += 1;
    }
    n
}

impl Log {
    /// Deletes whole closed segments beyond the retention limits (by time:
    /// the newest record older than `now_ms - retention_ms`; by size) and
    /// advances the log start offset. Never deletes the active segment.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let inner = &self.inner;
        let removed: Vec<Segment> = {
            let mut st = inner.state.borrow_mut();
            if st.exclusive {
                // A roll, close or truncation is changing the segments:
                // this pass deletes nothing (the next one will).
                return Ok(RetentionReport {
                    log_start_offset: *st.segments.keys().next().expect("a log has a segment"),
                    ..RetentionReport::default()
                });
            }
            let infos: Vec<SegmentInfo> = st
                .segments
                .values()
                .map(|s| SegmentInfo {
                    base_offset: s.base_offset,
                    len: s.len,
                    max_timestamp: s.max_timestamp,
                })
                .collect();
            let n = segments_to_delete(
                &infos,
                now_ms,
                inner.config.retention_ms,
                inner.config.retention_bytes,
            );
            let mut removed = Vec::with_capacity(n);
            for info in &infos[..n] {
                if let Some(seg) = st.segments.remove(&info.base_offset) {
                    st.cache.forget_segment(info.base_offset);
                    removed.push(seg);
                }
            }
            removed
        };
        let mut report = RetentionReport::default();
        for seg in removed {
            let (log_path, idx_path, time_path) = segment::paths(&inner.dir, seg.base_offset);
            // The .log goes last: a crash in between leaves an orphan index
            // (ignored at open) rather than a log without one.
            io::remove_file(&idx_path).await?;
            io::remove_file(&time_path).await?;
            io::remove_file(&log_path).await?;
            report.deleted.push(seg.base_offset);
            report.deleted_bytes += seg.len;
        }
        if !report.deleted.is_empty() {
            io::sync_dir(&inner.dir).await?;
            // After the files: a crash in between leaves entries below the
            // log start, which the next open drops.
            let start = self.log_start_offset();
            let moved = inner
                .state
                .borrow_mut()
                .epoch_cache
                .truncate_from_start(start);
            if moved {
                self.persist_epochs().await?;
            }
        }
        report.log_start_offset = self.log_start_offset();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(spec: &[(u64, i64)]) -> Vec<SegmentInfo> {
        let mut base = 0;
        spec.iter()
            .map(|&(len, ts)| {
                let s = SegmentInfo {
                    base_offset: base,
                    len,
                    max_timestamp: ts,
                };
                base += 10;
                s
            })
            .collect()
    }

    #[test]
    fn time_retention_deletes_old_prefix_but_never_active() {
        let s = segs(&[(100, 10), (100, 20), (100, 500), (100, 30)]);
        assert_eq!(segments_to_delete(&s, 1000, Some(900), None), 2);
        // Everything expired: the active segment still stays.
        assert_eq!(segments_to_delete(&s, 1_000_000, Some(1), None), 3);
        assert_eq!(segments_to_delete(&s, 1000, None, None), 0);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let s = segs(&[(100, 0), (100, 0), (100, 0), (50, 0)]);
        // 350 bytes; limit 200: drop one (250 >= 200), drop two (150 < 200 stops).
        assert_eq!(segments_to_delete(&s, 0, None, Some(200)), 1);
        assert_eq!(segments_to_delete(&s, 0, None, Some(50)), 3);
        assert_eq!(segments_to_delete(&s, 0, None, Some(1000)), 0);
    }

    #[test]
    fn empty_or_single_segment_deletes_nothing() {
        assert_eq!(segments_to_delete(&[], 0, Some(0), Some(0)), 0);
        assert_eq!(
            segments_to_delete(&segs(&[(100, 0)]), 1 << 40, Some(0), Some(0)),
            0
        );
    }
}
