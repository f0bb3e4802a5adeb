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

use broker_format::BatchHeader;

use crate::{
    epochs::{LeaderEpochs, CHECKPOINT_FILE, NO_EPOCH},
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
        let (segments, mut report, tail) = recover(&dir, &config, &faults, &stats).await?;
        let (epoch_cache, rewritten, epoch_file_exists) =
            recover_epochs(&dir, &segments, &tail).await?;
        report.epoch_checkpoint_rewritten = rewritten;
        let active = segments
            .values()
            .next_back()
            .expect("recovery leaves an active segment");
        let carry_pos = align_down(active.len);
        let carry = active.file.read_partial_block(active.len).await?;
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
            leader_epoch: NO_EPOCH,
            epoch_cache,
            epoch_cache_dirty: false,
            epoch_file_exists,
            epoch_file_writing: false,
            replica_appending: false,
            truncations: 0,
            read_ahead: None,
            place_queue: VecDeque::new(),
            place_next_ticket: 0,
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

/// Where recovery started validating the last segment batch by batch, and
/// the leader epochs of the batches it kept there.
#[derive(Default)]
struct TailScan {
    /// The offset the scan started at: everything below it was trusted.
    offset: u64,
    /// Its position in the last segment.
    position: u64,
    /// (epoch, base offset) of each scanned batch whose epoch differs from
    /// the one before it (epochs >= 0 only).
    epochs: Vec<(i32, u64)>,
}

/// Opens every segment in `dir`, validating the last one from its
/// checkpoint and rebuilding indexes that are missing or stale.
async fn recover(
    dir: &Path,
    config: &LogConfig,
    faults: &Option<Rc<Faults>>,
    stats: &Arc<IoStats>,
) -> Result<(BTreeMap<u64, Segment>, RecoveryReport, TailScan), LogError> {
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
        return Ok((segments, report, TailScan::default()));
    }
    let last = *bases.last().expect("not empty");
    let mut expected_next: Option<u64> = None;
    let mut tail = TailScan::default();
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
        if is_last {
            tail.offset = seg.next_offset;
            tail.position = start;
        }
        let tail_epochs = &mut tail.epochs;
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
                    let epoch = header.partition_leader_epoch;
                    if is_last && epoch >= 0 && tail_epochs.last().is_none_or(|l| l.0 != epoch) {
                        tail_epochs.push((epoch, seg_ref.next_offset));
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
    Ok((segments, report, tail))
}

/// The leader-epoch cache of the recovered log: the checkpoint file's
/// entries below the tail scan (trusted, as the data there is), then the
/// epochs of the batches the scan kept, nothing at or past the log end and
/// nothing below its start. A missing or invalid file is rebuilt from the
/// epochs of every batch below the tail scan (a full read of the log, once:
/// the file is then written). The file is rewritten when it disagrees with
/// the result (or missing from a log that has data); returns the cache,
/// whether the file was (re)written and whether it exists now.
async fn recover_epochs(
    dir: &Path,
    segments: &BTreeMap<u64, Segment>,
    tail: &TailScan,
) -> Result<(LeaderEpochs, bool, bool), LogError> {
    let log_start = *segments.keys().next().expect("recovery leaves a segment");
    let log_end = segments
        .values()
        .next_back()
        .expect("recovery leaves a segment")
        .next_offset;
    let path = dir.join(CHECKPOINT_FILE);
    let stored = io::read_file(&path).await?;
    let parsed = stored.as_deref().and_then(LeaderEpochs::decode);
    let mut trusted = parsed.clone();
    if let Some(c) = trusted.as_mut() {
        c.truncate_from_end(tail.offset);
        c.truncate_from_start(log_start);
        if !entries_match_batches(segments, c).await? {
            trusted = None;
        }
    }
    let mut cache = match trusted {
        Some(c) => c,
        None if tail.offset > log_start => epochs_of_batches(segments, tail).await?,
        None => LeaderEpochs::default(),
    };
    cache.truncate_from_end(tail.offset);
    for &(epoch, base) in &tail.epochs {
        cache.assign(epoch, base);
    }
    cache.truncate_from_end(log_end);
    cache.truncate_from_start(log_start);
    let write = match &parsed {
        Some(p) => *p != cache,
        None => stored.is_some() || log_end > log_start,
    };
    if write {
        io::write_file_atomic(&path, cache.encode()).await?;
        io::sync_dir(dir).await?;
    }
    let exists = write || parsed.is_some();
    Ok((cache, write, exists))
}

/// Whether a batch of the recovered log starts at each entry's start offset
/// with the entry's epoch (one short read per entry: entries are few, one
/// per leader change): a file that names epochs the batches do not have is
/// not trusted. (An entry missing from the file is not detected here: the
/// file is written before any batch of its epoch, so it cannot lack one.)
async fn entries_match_batches(
    segments: &BTreeMap<u64, Segment>,
    cache: &LeaderEpochs,
) -> Result<bool, LogError> {
    for e in cache.entries() {
        let Some((_, seg)) = segments.range(..=e.start_offset).next_back() else {
            return Ok(false);
        };
        if e.start_offset >= seg.next_offset {
            return Ok(false);
        }
        let mut pos = u64::from(
            seg.index
                .lookup((e.start_offset - seg.base_offset) as u32)
                .position,
        );
        // Header to header from the index entry (at most an index interval
        // of batches): two blocks read per batch, not the batches.
        let epoch = loop {
            let Some(header) = header_at(seg, pos).await? else {
                break None;
            };
            let base = header.base_offset as u64;
            if base >= e.start_offset {
                break (base == e.start_offset).then_some(header.partition_leader_epoch);
            }
            pos += header.total_len() as u64;
        };
        if epoch != Some(e.epoch) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The header of the batch at `pos` in `seg`, if a whole header lies there
/// below the segment's length.
async fn header_at(seg: &Segment, pos: u64) -> Result<Option<BatchHeader>, LogError> {
    let header_len = broker_format::HEADER_LEN as u64;
    if pos + header_len > seg.len {
        return Ok(None);
    }
    let at = align_down(pos);
    let block = seg.file.read(at, 2 * BLOCK as usize).await?;
    let from = (pos - at) as usize;
    Ok(block
        .get(from..from + broker_format::HEADER_LEN)
        .and_then(|h| BatchHeader::parse(h).ok()))
}

/// The epochs of every batch below the tail scan, read from the segments
/// (only their headers are looked at; recovery validated or trusted them).
async fn epochs_of_batches(
    segments: &BTreeMap<u64, Segment>,
    tail: &TailScan,
) -> Result<LeaderEpochs, LogError> {
    let mut cache = LeaderEpochs::default();
    for seg in segments.values() {
        if seg.base_offset >= tail.offset {
            break;
        }
        let limit = if seg.next_offset > tail.offset {
            tail.position
        } else {
            seg.len
        };
        let end = segment::scan_batches(&seg.file, 0, limit, |_, header, _| {
            if let Ok(base) = u64::try_from(header.base_offset) {
                cache.assign(header.partition_leader_epoch, base);
            }
            ControlFlow::Continue(())
        })
        .await?;
        if let ScanEnd::Malformed(pos, why) = end {
            return Err(LogError::Corrupt {
                path: seg.file.path().to_path_buf(),
                reason: format!("at position {pos}, rebuilding the leader epochs: {why}"),
            });
        }
    }
    Ok(cache)
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
