//! The partition log: an append-only sequence of record batches in segment
//! files, written with direct I/O on the shard that owns the partition.
//!
//! What it owns: the partition's directory, its segment files and indexes,
//! its write buffer, group commit and fsync policy, reads by offset and by
//! timestamp, recovery at open and retention.
//!
//! What it never does: see a socket, take a lock, or run on another thread.
//! A [`Log`] is `!Send`: it lives on its shard's glommio executor, and every
//! method must be called there.
//!
//! Invariants (asserted where they must hold):
//! - Offsets are consecutive from 0: each appended batch gets the log end
//!   offset as its base and advances it by its record count.
//! - Record bytes are copied once on append (into the aligned tail buffer)
//!   and never on read: a read returns a slice of a DMA read buffer or of a
//!   written tail buffer.
//! - An append is acknowledged only once its bytes are written, and with
//!   [`FsyncPolicy::Always`] fdatasynced. Readers see acknowledged data only
//!   (up to the high watermark).
//! - After a failed write or fsync, nothing past the last acknowledged
//!   (respectively durable) batch is trusted: pending appends fail, the file
//!   is truncated back and the tail re-read from disk before new appends.
//! - Only the active (last) segment is ever written; retention never deletes it.

pub mod config;
pub mod error;
pub mod index;
pub mod io;
pub mod retention;
pub mod segment;
pub mod tail;

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    future::poll_fn,
    ops::ControlFlow,
    path::{Path, PathBuf},
    rc::{Rc, Weak},
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use glommio::io::{DmaBuffer, ReadResult};

use crate::batch::{self, BatchHeader};

pub use config::{FsyncPolicy, LogConfig};
pub use error::LogError;
pub use io::Faults;

use index::SegmentIndex;
use io::{align_down, SegmentFile, BLOCK};
use segment::{ScanEnd, Segment};
use tail::{ReadCache, Sealed, Tail};

/// What an append returns once acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// The offset after the batch's last record.
    pub next_offset: u64,
}

/// Bytes returned by a read: whole batches, borrowed from the buffer they
/// were read into (a DMA read) or written from (the tail). Never copied.
pub enum ReadBytes {
    /// Nothing to return.
    Empty,
    /// A slice of an aligned DMA read of the segment file.
    Disk(ReadResult),
    /// A slice of a recently written tail buffer.
    Memory {
        /// The written buffer.
        buf: Rc<DmaBuffer>,
        /// Start of the slice.
        start: usize,
        /// Length of the slice.
        len: usize,
    },
}

impl ReadBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadBytes::Empty => &[],
            ReadBytes::Disk(r) => r,
            ReadBytes::Memory { buf, start, len } => &buf.as_bytes()[*start..*start + *len],
        }
    }

    /// True when served from memory rather than the disk.
    pub fn is_from_memory(&self) -> bool {
        matches!(self, ReadBytes::Memory { .. })
    }
}

/// The result of a read by offset.
pub struct LogRead {
    /// Whole batches, the first one containing the requested offset (it may
    /// start before it: consumers skip records below what they asked for).
    pub bytes: ReadBytes,
    /// The offset after the last record returned (the next offset to read).
    pub next_offset: u64,
    /// The high watermark at the time of the read.
    pub high_watermark: u64,
    /// The log start offset at the time of the read.
    pub log_start_offset: u64,
}

/// What recovery found and repaired at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Bytes cut from the end of the last segment (torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, when it was.
    pub truncation_reason: Option<String>,
    /// Segments whose index was missing or stale and was rebuilt.
    pub rebuilt_indexes: Vec<u64>,
    /// Bytes validated batch by batch.
    pub scanned_bytes: u64,
}

/// What a retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Base offsets of deleted segments.
    pub deleted: Vec<u64>,
    /// Bytes freed.
    pub deleted_bytes: u64,
    /// The log start offset after the pass.
    pub log_start_offset: u64,
}

/// A partition log. Cheap to clone (a handle); `!Send`.
#[derive(Clone)]
pub struct Log {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    faults: Option<Rc<Faults>>,
    state: RefCell<State>,
}

/// A write cycle the flusher carries out.
struct PendingWrite {
    file: Rc<SegmentFile>,
    segment: u64,
    sealed: Sealed,
}

/// A write or fsync failure and the acknowledged end it left.
struct Failure {
    /// The append epoch the failure ended.
    epoch: u64,
    /// Appends of that epoch ending at or below this were acknowledged.
    acked_end: u64,
    error: LogError,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    tail: Option<Tail>,
    queue: VecDeque<PendingWrite>,
    cache: ReadCache,
    /// Log end offset: the next offset to assign.
    next_offset: u64,
    /// High watermark: appends below it are acknowledged and readable.
    acked_end: u64,
    /// Bytes of the active segment below the high watermark.
    acked_len: u64,
    /// Everything below this offset is fdatasynced.
    durable_end: u64,
    /// Bytes of the active segment below `durable_end`.
    durable_len: u64,
    /// Bumped by every failure: appends of an older epoch not acknowledged
    /// by then have failed.
    epoch: u64,
    failures: VecDeque<Failure>,
    /// Set after a failure until the flusher has truncated back and reloaded
    /// the tail; appends wait.
    reset_to_durable: Option<bool>,
    /// Why the last attempt at that reset failed: appends fail with it
    /// instead of waiting on a disk that keeps failing.
    reset_error: Option<LogError>,
    /// An append is rolling the segment, or the log is closing: appends wait.
    exclusive: bool,
    flushing: bool,
    closed: bool,
    flusher: Option<Waker>,
    waiters: Vec<Waker>,
}

/// How many failures are remembered for appends still to learn of them.
const FAILURES_KEPT: usize = 16;

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_flusher(&mut self) {
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    /// The append of epoch `epoch` ending at `end`: acknowledged, failed, or pending.
    fn outcome(&self, epoch: u64, end: u64) -> Option<Result<(), LogError>> {
        if epoch == self.epoch {
            return (self.acked_end >= end).then_some(Ok(()));
        }
        let f = self.failures.iter().find(|f| f.epoch == epoch);
        Some(match f {
            Some(f) if end <= f.acked_end => Ok(()),
            Some(f) => Err(f.error.clone()),
            None => Err(LogError::io(
                "writing",
                PathBuf::new(),
                std::io::Error::other("append failed in an earlier write failure"),
            )),
        })
    }

    /// Seals the tail, queues it for writing if it holds unwritten bytes, and
    /// continues in a new tail of at least `next_capacity` bytes.
    fn seal_tail(&mut self, next_capacity: usize) {
        let old = self.tail.take().expect("tail present while open");
        let seg = self.active();
        let (file, segment) = (seg.file.clone(), seg.base_offset);
        let has_unwritten = old.has_unwritten();
        let (sealed, next) = old.seal(&file, next_capacity);
        if has_unwritten {
            self.queue.push_back(PendingWrite {
                file,
                segment,
                sealed,
            });
        }
        self.tail = Some(next);
    }

    fn drained(&self) -> bool {
        self.queue.is_empty()
            && !self.flushing
            && self.tail.as_ref().is_none_or(|t| !t.has_unwritten())
            && self.reset_to_durable.is_none()
    }
}

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
        let (segments, report) = recover(&dir, &config, &faults).await?;
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
            durable_end: next_offset,
            durable_len: len,
            epoch: 0,
            failures: VecDeque::new(),
            reset_to_durable: None,
            reset_error: None,
            exclusive: false,
            flushing: false,
            closed: false,
            flusher: None,
            waiters: Vec::new(),
        };
        let inner = Rc::new(Inner {
            dir,
            config,
            faults,
            state: RefCell::new(state),
        });
        glommio::spawn_local(flusher(Rc::downgrade(&inner))).detach();
        Ok((Log { inner }, report))
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// The oldest offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        let st = self.inner.state.borrow();
        *st.segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    /// The next offset an append will be assigned (includes appends not yet
    /// acknowledged).
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// The offset after the last acknowledged record: readers see below it.
    pub fn high_watermark(&self) -> u64 {
        self.inner.state.borrow().acked_end
    }

    /// The offset after the last fdatasynced record.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().durable_end
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.len)
            .sum()
    }

    /// Appends one record batch (its base offset field is overwritten) and
    /// resolves once it is as durable as the fsync policy says, with the
    /// offsets it was given. The batch is validated first (length, CRC,
    /// records); nothing invalid reaches the log.
    pub async fn append(&self, batch: &[u8]) -> Result<Appended, LogError> {
        let max = self.inner.config.batch_bytes_max;
        if batch.len() > max {
            return Err(LogError::BatchTooLarge {
                len: batch.len(),
                max,
            });
        }
        let header = batch::validate(batch)?;
        let (epoch, appended) = self.place(batch, &header).await?;
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            match st.outcome(epoch, appended.next_offset) {
                Some(r) => Poll::Ready(r),
                None => {
                    st.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        Ok(appended)
    }

    /// Copies the batch into the tail, rolling first if needed; returns the
    /// epoch and offsets to wait on.
    async fn place(&self, batch: &[u8], header: &BatchHeader) -> Result<(u64, Appended), LogError> {
        loop {
            self.wait_until(|st| {
                !st.exclusive && (st.reset_to_durable.is_none() || st.reset_error.is_some())
            })
            .await?;
            if let Some(placed) = self.try_place(batch, header)? {
                return Ok(placed);
            }
            let rolled = self.roll().await;
            {
                let mut st = self.inner.state.borrow_mut();
                st.exclusive = false;
                st.wake_waiters();
            }
            rolled?;
        }
    }

    /// The synchronous part of [`Log::place`]: `Ok(None)` when the active
    /// segment must roll first (the caller then holds the log exclusively).
    fn try_place(
        &self,
        batch: &[u8],
        header: &BatchHeader,
    ) -> Result<Option<(u64, Appended)>, LogError> {
        let inner = &self.inner;
        let mut st = inner.state.borrow_mut();
        if st.reset_to_durable.is_some() {
            if let Some(e) = &st.reset_error {
                return Err(e.clone());
            }
        }
        let active = st.active();
        let roll_by_size = active.len + batch.len() as u64 > inner.config.segment_bytes_max;
        let roll_by_age = inner
            .config
            .segment_age_max
            .is_some_and(|age| active.opened_at.elapsed() >= age);
        if !active.is_empty() && (roll_by_size || roll_by_age) {
            st.exclusive = true;
            return Ok(None);
        }
        let base = st.next_offset;
        let next = base
            .checked_add(u64::from(header.record_count()))
            .ok_or_else(|| LogError::Corrupt {
                path: inner.dir.clone(),
                reason: "offset space exhausted".into(),
            })?;
        let st = &mut *st;
        let tail = st.tail.as_ref().expect("tail present while open");
        if !tail.fits(batch.len()) {
            // The next buffer holds the carried block and at least this batch.
            let capacity = (tail.unwritten_len() + batch.len())
                .min(inner.config.write_buffer_bytes)
                .max(batch.len() + BLOCK as usize);
            st.seal_tail(capacity);
        }
        let active_len = st.active().len;
        let tail = st.tail.as_mut().expect("tail present while open");
        debug_assert_eq!(
            tail.end_pos(),
            active_len,
            "tail and segment disagree on the end"
        );
        tail.append(batch, base, next);
        let interval = inner.config.index_interval_bytes;
        let seg = st.active_mut();
        debug_assert_eq!(seg.next_offset, base, "offsets must be contiguous");
        seg.on_append(header, batch.len(), interval);
        st.next_offset = next;
        st.wake_flusher();
        Ok(Some((
            st.epoch,
            Appended {
                base_offset: base,
                next_offset: next,
            },
        )))
    }

    /// Waits until `ready` holds; fails if the log closes meanwhile.
    async fn wait_until(&self, ready: impl Fn(&State) -> bool) -> Result<(), LogError> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return Poll::Ready(Err(LogError::Closed));
            }
            if ready(&st) {
                Poll::Ready(Ok(()))
            } else {
                st.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until every appended batch is written (and acknowledged); fails
    /// with the write error if a cycle fails meanwhile.
    async fn drain(&self) -> Result<(), LogError> {
        let epoch = self.inner.state.borrow().epoch;
        {
            let mut st = self.inner.state.borrow_mut();
            st.wake_flusher();
        }
        self.wait_until(|st| st.drained() || st.epoch != epoch)
            .await?;
        let st = self.inner.state.borrow();
        if st.epoch != epoch {
            let err = st.failures.back().map(|f| f.error.clone());
            return Err(err.unwrap_or(LogError::Closed));
        }
        Ok(())
    }

    /// Seals the active segment (fsync, trim the padding, write its indexes)
    /// and starts a new one at the log end offset.
    async fn roll(&self) -> Result<(), LogError> {
        let new_base = self.checkpoint_active().await?;
        let inner = &self.inner;
        let (log_path, _, _) = segment::paths(&inner.dir, new_base);
        let new_file = Rc::new(SegmentFile::open(&log_path, true, inner.faults.clone()).await?);
        new_file.truncate(0).await?;
        io::sync_dir(&inner.dir).await?;
        let mut st = inner.state.borrow_mut();
        st.durable_end = new_base;
        st.tail = Some(Tail::new(&new_file, 0, &[], new_base, TAIL_START_BYTES));
        st.segments.insert(
            new_base,
            Segment {
                base_offset: new_base,
                file: new_file,
                len: 0,
                next_offset: new_base,
                max_timestamp: i64::MIN,
                index: SegmentIndex::default(),
                opened_at: Instant::now(),
            },
        );
        st.acked_len = 0;
        st.durable_len = 0;
        Ok(())
    }

    /// Drains pending writes, then makes the active segment whole on disk:
    /// trimmed to its logical length, fdatasynced, its indexes written with
    /// a checkpoint covering all of it. Returns the log end offset.
    async fn checkpoint_active(&self) -> Result<u64, LogError> {
        self.drain().await?;
        let inner = &self.inner;
        let (file, cp, idx, times, base) = {
            let st = inner.state.borrow();
            let seg = st.active();
            (
                seg.file.clone(),
                seg.checkpoint(),
                seg.index.encode_offsets(seg.checkpoint()),
                seg.index.encode_times(),
                seg.base_offset,
            )
        };
        file.truncate(cp.valid_len).await?;
        file.sync().await?;
        let (_, idx_path, time_path) = segment::paths(&inner.dir, base);
        io::write_file_atomic(&time_path, times).await?;
        io::write_file_atomic(&idx_path, idx).await?;
        Ok(cp.next_offset)
    }

    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch, however large, so a consumer always
    /// progresses). Reading at the high watermark returns no bytes; outside
    /// [log start, high watermark] is [`LogError::OffsetOutOfRange`].
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead, LogError> {
        let (file, start_pos, limit, hw, log_start, cached) = {
            let st = self.inner.state.borrow();
            let log_start = *st
                .segments
                .keys()
                .next()
                .expect("a log always has a segment");
            let hw = st.acked_end;
            if offset < log_start || offset > hw {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    start: log_start,
                    end: hw,
                });
            }
            if offset == hw {
                return Ok(LogRead {
                    bytes: ReadBytes::Empty,
                    next_offset: hw,
                    high_watermark: hw,
                    log_start_offset: log_start,
                });
            }
            let (_, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start has a segment");
            let is_active = seg.base_offset == st.active().base_offset;
            let limit = if is_active { st.acked_len } else { seg.len };
            let entry = seg.index.lookup((offset - seg.base_offset) as u32);
            let start_pos = u64::from(entry.position);
            let cached = st.cache.find(seg.base_offset, offset);
            (seg.file.clone(), start_pos, limit, hw, log_start, cached)
        };
        // Find the first batch holding `offset` and take whole batches.
        // From memory when the buffer that received the batch holds the
        // whole answer: the byte budget, or everything up to the high
        // watermark. Otherwise one larger read from disk serves more.
        if let Some(c) = cached {
            let avail = &c.buf.as_bytes()[c.start..c.end];
            if let Some((skip, take, next)) = pick_batches(avail, offset, max_bytes) {
                let budget_full = next < c.end_offset;
                if budget_full || c.end_offset >= hw {
                    return Ok(LogRead {
                        bytes: ReadBytes::Memory {
                            buf: c.buf.clone(),
                            start: c.start + skip,
                            len: take,
                        },
                        next_offset: next,
                        high_watermark: hw,
                        log_start_offset: log_start,
                    });
                }
            }
        }
        // From disk: one aligned read covering the index gap and the budget.
        // Slack for the index gap (up to one interval of batches before
        // `offset`); a batch that runs past the window doubles it.
        let slack = u64::from(self.inner.config.index_interval_bytes) + batch::HEADER_LEN as u64;
        let read_pos = align_down(start_pos);
        let mut want_end = limit.min(start_pos + max_bytes as u64 + slack);
        loop {
            let data = file
                .read(read_pos, io::align_up(want_end - read_pos) as usize)
                .await?;
            let valid = ((limit - read_pos) as usize).min(data.len());
            let at = (start_pos - read_pos) as usize;
            if valid < at {
                return Err(LogError::Corrupt {
                    path: file.path().to_path_buf(),
                    reason: format!("segment shorter than its index says (position {start_pos})"),
                });
            }
            match pick_batches(&data[at..valid], offset, max_bytes) {
                Some((skip, take, next)) => {
                    let bytes = ReadResult::slice(&data, at + skip, take).ok_or_else(|| {
                        LogError::Corrupt {
                            path: file.path().to_path_buf(),
                            reason: "read slice out of bounds".into(),
                        }
                    })?;
                    return Ok(LogRead {
                        bytes: ReadBytes::Disk(bytes),
                        next_offset: next,
                        high_watermark: hw,
                        log_start_offset: log_start,
                    });
                }
                None if want_end < limit => {
                    // The batch holding `offset` runs past what was read:
                    // double the window (at most ~log2(64 MiB / window) rounds).
                    want_end = limit.min(read_pos + 2 * (want_end - read_pos));
                }
                None => {
                    return Err(LogError::Corrupt {
                        path: file.path().to_path_buf(),
                        reason: format!("no batch holds offset {offset} below the high watermark"),
                    });
                }
            }
        }
    }

    /// The first offset whose record timestamp is >= `timestamp`, among
    /// acknowledged records; `None` when there is none.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let candidates: Vec<(Rc<SegmentFile>, u64, u64)> = {
            let st = self.inner.state.borrow();
            let active = st.active().base_offset;
            st.segments
                .values()
                .filter(|s| s.max_timestamp >= timestamp)
                .map(|s| {
                    let limit = if s.base_offset == active {
                        st.acked_len
                    } else {
                        s.len
                    };
                    let from = u64::from(s.index.lookup_time(timestamp).position).min(limit);
                    (s.file.clone(), from, limit)
                })
                .collect()
        };
        for (file, from, limit) in candidates {
            let mut found = None;
            let end = segment::scan_batches(&file, from, limit, |_, header, bytes| {
                if header.max_timestamp < timestamp {
                    return ControlFlow::Continue(());
                }
                let Ok(records) = batch::records(bytes) else {
                    return ControlFlow::Continue(());
                };
                for r in records.flatten() {
                    if header.base_timestamp.saturating_add(r.timestamp_delta) >= timestamp {
                        found = Some(header.base_offset as u64 + r.offset_delta as u64);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
            if let ScanEnd::Malformed(pos, why) = end {
                return Err(LogError::Corrupt {
                    path: file.path().to_path_buf(),
                    reason: format!("at position {pos}: {why}"),
                });
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Deletes whole closed segments beyond the retention limits (by time:
    /// the newest record older than `now_ms - retention_ms`; by size) and
    /// advances the log start offset. Never deletes the active segment.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let inner = &self.inner;
        let removed: Vec<Segment> = {
            let mut st = inner.state.borrow_mut();
            let infos: Vec<retention::SegmentInfo> = st
                .segments
                .values()
                .map(|s| retention::SegmentInfo {
                    base_offset: s.base_offset,
                    len: s.len,
                    max_timestamp: s.max_timestamp,
                })
                .collect();
            let n = retention::segments_to_delete(
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
        }
        report.log_start_offset = self.log_start_offset();
        Ok(report)
    }

    /// Flushes and fsyncs everything, trims the active segment's padding,
    /// writes its indexes (so the next open validates nothing) and closes.
    /// Pending appends complete first; later calls fail with [`LogError::Closed`].
    pub async fn close(&self) -> Result<(), LogError> {
        self.wait_until(|st| !st.exclusive).await?;
        self.inner.state.borrow_mut().exclusive = true;
        let result = self.close_inner().await;
        let mut st = self.inner.state.borrow_mut();
        st.closed = true;
        st.exclusive = false;
        st.wake_waiters();
        st.wake_flusher();
        result
    }

    async fn close_inner(&self) -> Result<(), LogError> {
        self.checkpoint_active().await?;
        let inner = &self.inner;
        io::sync_dir(&inner.dir).await?;
        let mut st = inner.state.borrow_mut();
        st.durable_end = st.acked_end;
        st.durable_len = st.acked_len;
        Ok(())
    }
}

/// First tail buffer size; it grows with the load up to `write_buffer_bytes`.
const TAIL_START_BYTES: usize = 16 << 10;

/// In `bytes` (starting at a batch boundary), finds the batch holding
/// `offset` and the whole batches after it within `max_bytes` (at least
/// one). Returns (start, length, next offset), or None when the batch
/// holding `offset` is not wholly inside `bytes`.
fn pick_batches(bytes: &[u8], offset: u64, max_bytes: usize) -> Option<(usize, usize, u64)> {
    let mut pos = 0usize;
    let mut start = None;
    let mut end = 0usize;
    let mut next = offset;
    // `batches` yields whole batches only and stops at a cut one.
    for (header, b) in batch::batches(bytes).map_while(Result::ok) {
        let batch_next = header.next_offset() as u64;
        match start {
            None if batch_next <= offset => {}
            None => start = Some(pos),
            Some(s) if pos + b.len() - s > max_bytes => break,
            Some(_) => {}
        }
        pos += b.len();
        if start.is_some() {
            end = pos;
            next = batch_next;
        }
    }
    start.map(|s| (s, end - s, next))
}

/// The background task that carries out write cycles (group commit): it
/// takes everything appended since the last cycle, writes it, fsyncs per
/// policy, and acknowledges. Holds only a weak handle so dropping the log
/// ends it.
async fn flusher(weak: Weak<Inner>) {
    let interval = weak.upgrade().and_then(|i| match i.config.fsync {
        FsyncPolicy::Interval(d) => Some(d),
        _ => None,
    });
    // With the interval policy: when the last fdatasync was issued. The
    // deadline is kept across loop passes so a steady stream of write
    // cycles cannot starve the timer.
    let mut last_sync = Instant::now();
    loop {
        if let Some(d) = interval {
            if last_sync.elapsed() >= d {
                let Some(inner) = weak.upgrade() else { return };
                last_sync = Instant::now();
                interval_sync(&inner).await;
            }
        }
        let wait = poll_fn(|cx| {
            let Some(inner) = weak.upgrade() else {
                return Poll::Ready(None);
            };
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return Poll::Ready(None);
            }
            let work = st.reset_to_durable.is_some()
                || !st.queue.is_empty()
                || st.tail.as_ref().is_some_and(|t| t.has_unwritten());
            if work {
                Poll::Ready(Some(false))
            } else {
                st.flusher = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let next = match interval {
            Some(d) => {
                let remaining = d.saturating_sub(last_sync.elapsed());
                futures_lite::future::or(wait, async move {
                    glommio::timer::sleep(remaining).await;
                    Some(true)
                })
                .await
            }
            None => wait.await,
        };
        let Some(timer_fired) = next else { return };
        let Some(inner) = weak.upgrade() else { return };
        if timer_fired {
            continue; // the deadline check at the top syncs
        }
        let reset = inner.state.borrow().reset_to_durable;
        if let Some(to_durable) = reset {
            reset_tail(&inner, to_durable).await;
            continue;
        }
        write_cycle(&inner).await;
        glommio::yield_if_needed().await;
    }
}

/// One group-commit cycle.
async fn write_cycle(inner: &Inner) {
    let writes: Vec<PendingWrite> = {
        let mut st = inner.state.borrow_mut();
        let st = &mut *st;
        if let Some(tail) = st.tail.as_ref() {
            if tail.has_unwritten() {
                st.seal_tail((tail.unwritten_len() * 2).min(inner.config.write_buffer_bytes));
            }
        }
        st.flushing = true;
        st.queue.drain(..).collect()
    };
    let Some(last) = writes.last() else {
        inner.state.borrow_mut().flushing = false;
        return;
    };
    let end_offset = last.sealed.end_offset;
    let end_len = last.sealed.file_pos + last.sealed.len as u64;
    let file = last.file.clone();
    let mut result = Ok(());
    for w in &writes {
        debug_assert!(
            Rc::ptr_eq(&w.file, &file),
            "a cycle writes only the active segment"
        );
        if let Err(e) = w.file.write(w.sealed.buf.clone(), w.sealed.file_pos).await {
            result = Err((e, false));
            break;
        }
    }
    if result.is_ok() && inner.config.fsync == FsyncPolicy::Always {
        if let Err(e) = file.sync().await {
            result = Err((e, true));
        }
    }
    let mut st = inner.state.borrow_mut();
    st.flushing = false;
    match result {
        Ok(()) => {
            st.acked_end = end_offset;
            st.acked_len = end_len;
            if inner.config.fsync == FsyncPolicy::Always {
                st.durable_end = end_offset;
                st.durable_len = end_len;
            }
            let budget = inner.config.write_buffer_bytes * inner.config.read_cache_buffers;
            for w in writes {
                st.cache.push(w.segment, w.sealed, budget);
            }
        }
        Err((error, sync_failed)) => fail(&mut st, error, sync_failed),
    }
    st.wake_waiters();
}

/// Records a failed cycle: every append not yet acknowledged fails, and the
/// flusher resets the tail before new appends are taken. After a failed
/// fsync nothing past the last durable point is trusted.
fn fail(st: &mut State, error: LogError, sync_failed: bool) {
    let trusted_end = if sync_failed {
        st.durable_end
    } else {
        st.acked_end
    };
    st.failures.push_back(Failure {
        epoch: st.epoch,
        acked_end: trusted_end,
        error,
    });
    while st.failures.len() > FAILURES_KEPT {
        st.failures.pop_front();
    }
    st.epoch += 1;
    st.queue.clear();
    st.reset_to_durable = Some(sync_failed);
}

/// Truncates the active segment back to the last acknowledged (or durable)
/// point and reloads the partial block from disk, so the next append
/// rewrites from known state. Retries on the next wake-up if the disk fails again.
async fn reset_tail(inner: &Inner, to_durable: bool) {
    let (file, target_len, target_offset) = {
        let mut st = inner.state.borrow_mut();
        if to_durable {
            st.acked_end = st.durable_end;
            st.acked_len = st.durable_len;
        }
        (st.active().file.clone(), st.acked_len, st.acked_end)
    };
    let carry_pos = align_down(target_len);
    let reloaded = async {
        file.truncate(target_len).await?;
        let block = file.read(carry_pos, BLOCK as usize).await?;
        let n = (target_len - carry_pos) as usize;
        if block.len() < n {
            return Err(LogError::Corrupt {
                path: file.path().to_path_buf(),
                reason: "file shorter than its acknowledged length".into(),
            });
        }
        Ok(block[..n].to_vec())
    }
    .await;
    let failed = {
        let mut st = inner.state.borrow_mut();
        match reloaded {
            Ok(carry) => {
                st.tail = Some(Tail::new(
                    &file,
                    carry_pos,
                    &carry,
                    target_offset,
                    TAIL_START_BYTES,
                ));
                st.next_offset = target_offset;
                st.cache.clear();
                let seg = st.active_mut();
                seg.len = target_len;
                seg.next_offset = target_offset;
                seg.index.truncate_to(target_len as u32);
                st.reset_to_durable = None;
                st.reset_error = None;
                st.wake_waiters();
                false
            }
            Err(e) => {
                // Leave the reset pending and retry shortly; appends meanwhile
                // fail with this error rather than wait.
                st.reset_error = Some(e);
                st.wake_waiters();
                true
            }
        }
    };
    if failed {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The `interval` policy's periodic fdatasync.
async fn interval_sync(inner: &Inner) {
    let (file, end, len) = {
        let st = inner.state.borrow();
        if st.durable_end >= st.acked_end || st.flushing {
            return;
        }
        (st.active().file.clone(), st.acked_end, st.acked_len)
    };
    let r = file.sync().await;
    let mut st = inner.state.borrow_mut();
    match r {
        Ok(()) => {
            st.durable_end = end;
            st.durable_len = len;
        }
        Err(e) => {
            fail(&mut st, e, true);
            st.wake_waiters();
        }
    }
}

/// Opens every segment in `dir`, validating the last one from its
/// checkpoint and rebuilding indexes that are missing or stale.
async fn recover(
    dir: &Path,
    config: &LogConfig,
    faults: &Option<Rc<Faults>>,
) -> Result<(BTreeMap<u64, Segment>, RecoveryReport), LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io("creating directory", dir, e))?;
    io::probe_device(dir).await?;
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        let path = entry.path();
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
        let file = SegmentFile::open(&path, true, faults.clone()).await?;
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
        let file = SegmentFile::open(&log_path, false, faults.clone()).await?;
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
                    if let Err(e) = batch::verify_crc(bytes) {
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
