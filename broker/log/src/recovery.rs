//! Opening a log: [`Log::open`] recovers the directory (`recover`), reloads
//! the partial last block into a fresh tail, builds the state and starts the
//! flusher.
//!
//! Recovery decisions: closed segments whose index checkpoint covers the
//! whole file are trusted; the last segment (and any segment whose index is
//! missing or stale) is validated batch by batch from its checkpoint:
//! length, CRC, offsets continuing from the previous batch. The last
//! segment is truncated at the first batch that fails; a closed segment that
//! fails, a gap between segments or a misnamed `.log` file stops the open.
//!
//! Invariants:
//! - Segments are contiguous: each starts at the offset the previous one
//!   ends at.
//! - After open, everything in the log is acknowledged and durable
//!   (high watermark = durable end = log end offset), and the tail starts at
//!   the last block boundary of the active segment holding a copy of the
//!   bytes after it.
//! - Creating and listing the directory, which glommio 0.9 offers only as
//!   blocking calls, run on glommio's blocking thread pool (`io.rs`), not on
//!   the shard's thread.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    ops::ControlFlow,
    path::Path,
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use crate::{
    flusher::flusher,
    index::SegmentIndex,
    io::{self, align_down, Faults, IoStats, SegmentFile, BLOCK},
    segment::{self, ScanEnd, Segment},
    state::{State, TAIL_START_BYTES},
    tail::{ReadCache, Tail},
    Inner, Log, LogConfig, LogError, RecoveryReport,
};

impl Log {
    /// Opens the log in `dir` (created if missing), recovering it: the last
    /// segment is validated from its last checkpoint, a torn or corrupt tail is
    /// truncated, missing or stale indexes are rebuilt. Must run on a glommio
    /// executor.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<(Log, RecoveryReport), LogError> {
        Self::open_with_faults(dir, config, None).await
    }

    /// [`Log::open`] with a fault plan that makes chosen disk operations fail
    /// (for tests of the failure paths).
    pub async fn open_with_faults(
        dir: impl AsRef<Path>,
        config: LogConfig,
        faults: Option<Rc<Faults>>,
    ) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let stats = Arc::new(IoStats::default());
        let (segments, report) = recover(&dir, &config, &faults, &stats).await?;
        let active = segments
            .values()
            .next_back()
            .expect("recovery leaves an active segment");
        let carry_pos = align_down(active.len);
        let carry = if active.len > carry_pos {
            let block = active.file.read(carry_pos, BLOCK as usize).await?;
            let n = (active.len - carry_pos) as usize;
            if block.len() < n {
                return Err(LogError::Corrupt {
                    path: active.file.path().to_path_buf(),
                    reason: "file shorter than its recovered length".into(),
                });
            }
            block[..n].to_vec()
        } else {
            Vec::new()
        };
        let tail = Tail::new(
            &active.file,
            carry_pos,
            &carry,
            active.next_offset,
            TAIL_START_BYTES,
        );
        let next_offset = active.next_offset;
        let len = active.len;
        let state = State {
            segments,
            tail: Some(tail),
            queue: VecDeque::new(),
            cache: ReadCache::default(),
            next_offset,
            acked_end: next_offset,
            acked_len: len,
            synced_end: next_offset,
            synced_len: len,
            epoch: 0,
            failures: VecDeque::new(),
            reset_to_durable: None,
            reset_error: None,
            exclusive: false,
            flushing: false,
            writes_in_flight: 0,
            appended_while_writing: false,
            refill_pending: 0,
            closed: false,
            flusher: None,
            waiters: Vec::new(),
        };
        let inner = Rc::new(Inner {
            dir,
            config,
            faults,
            stats,
            state: RefCell::new(state),
        });
        glommio::spawn_local(flusher(Rc::downgrade(&inner))).detach();
        Ok((Log { inner }, report))
    }
}

/// Opens every segment in `dir`, validating the last one from its
/// checkpoint and rebuilding indexes that are missing or stale.
async fn recover(
    dir: &Path,
    config: &LogConfig,
    faults: &Option<Rc<Faults>>,
    stats: &Arc<IoStats>,
) -> Result<(BTreeMap<u64, Segment>, RecoveryReport), LogError> {
    io::create_dir_all(dir).await?;
    io::probe_device(dir).await?;
    let mut bases = Vec::new();
    for path in io::list_dir(dir).await? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            // An index write interrupted by a crash.
            io::remove_file(&path).await?;
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            let base = segment::parse_stem(stem).ok_or_else(|| LogError::Corrupt {
                path: path.clone(),
                reason: "a .log file whose name is not a 20-digit base offset".into(),
            })?;
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut report = RecoveryReport {
        segments: bases.len(),
        ..RecoveryReport::default()
    };
    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        let (path, _, _) = segment::paths(dir, 0);
        let file = SegmentFile::open(&path, true, faults.clone(), stats.clone()).await?;
        io::sync_dir(dir).await?;
        segments.insert(0, empty_segment(0, file));
        report.segments = 1;
        return Ok((segments, report));
    }
    let last = *bases.last().expect("not empty");
    let mut expected_next: Option<u64> = None;
    for base in bases {
        let (log_path, idx_path, time_path) = segment::paths(dir, base);
        if let Some(expected) = expected_next {
            if base != expected {
                return Err(LogError::Corrupt {
                    path: log_path,
                    reason: format!(
                        "segment starts at offset {base} but the previous one ends at {expected}"
                    ),
                });
            }
        }
        let file = SegmentFile::open(&log_path, false, faults.clone(), stats.clone()).await?;
        let file_len = file.file_len().await?;
        let loaded = match (
            io::read_file(&idx_path).await?,
            io::read_file(&time_path).await?,
        ) {
            (Some(i), Some(t)) => SegmentIndex::decode(&i, &t, file_len),
            _ => None,
        };
        let is_last = base == last;
        let mut seg = empty_segment(base, file);
        let start = match loaded {
            Some((index, cp)) if cp.next_offset >= base => {
                seg.index = index;
                seg.len = cp.valid_len;
                seg.next_offset = cp.next_offset;
                seg.max_timestamp = cp.max_timestamp;
                if !is_last && cp.valid_len == file_len {
                    expected_next = Some(seg.next_offset);
                    segments.insert(base, seg);
                    continue;
                }
                cp.valid_len
            }
            _ => {
                report.rebuilt_indexes.push(base);
                0
            }
        };
        let interval = config.index_interval_bytes;
        let mut problem = None;
        let end = {
            let seg_ref = &mut seg;
            segment::scan_batches(
                &seg_ref.file.clone(),
                start,
                file_len,
                |pos, header, bytes| {
                    if pos != seg_ref.len {
                        problem = Some(format!("batch at {pos} does not follow the previous one"));
                        return ControlFlow::Break(());
                    }
                    if header.base_offset < 0 || header.base_offset as u64 != seg_ref.next_offset {
                        problem = Some(format!(
                            "batch at {pos} has base offset {} where {} was expected",
                            header.base_offset, seg_ref.next_offset
                        ));
                        return ControlFlow::Break(());
                    }
                    if let Err(e) = broker_format::verify_crc(bytes) {
                        problem = Some(format!("batch at {pos}: {e}"));
                        return ControlFlow::Break(());
                    }
                    seg_ref.on_append(header, bytes.len(), interval);
                    ControlFlow::Continue(())
                },
            )
            .await?
        };
        report.scanned_bytes += seg.len - start;
        let reason = match end {
            ScanEnd::Complete => None,
            ScanEnd::Stopped(_) => problem,
            ScanEnd::Malformed(pos, why) => Some(format!("at position {pos}: {why}")),
        };
        if seg.len < file_len {
            if !is_last {
                return Err(LogError::Corrupt {
                    path: seg.file.path().to_path_buf(),
                    reason: format!(
                        "closed segment is damaged after {} of {file_len} bytes: {}",
                        seg.len,
                        reason.unwrap_or_default()
                    ),
                });
            }
            report.truncated_bytes = file_len - seg.len;
            report.truncation_reason = reason;
            seg.file.truncate(seg.len).await?;
            seg.file.sync().await?;
        }
        if !is_last && report.rebuilt_indexes.last() == Some(&base) {
            let cp = seg.checkpoint();
            io::write_file_atomic(&time_path, seg.index.encode_times()).await?;
            io::write_file_atomic(&idx_path, seg.index.encode_offsets(cp)).await?;
        }
        expected_next = Some(seg.next_offset);
        segments.insert(base, seg);
    }
    if !report.rebuilt_indexes.is_empty() {
        io::sync_dir(dir).await?;
    }
    Ok((segments, report))
}

fn empty_segment(base: u64, file: SegmentFile) -> Segment {
    Segment {
        base_offset: base,
        file: Rc::new(file),
        len: 0,
        next_offset: base,
        max_timestamp: i64::MIN,
        index: SegmentIndex::default(),
        opened_at: Instant::now(),
    }
}
