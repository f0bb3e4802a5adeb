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
//! - Write cycles are pipelined (at most `WRITE_DEPTH` data writes in
//!   flight) but acknowledged in file order, and two writes in flight never
//!   cover the same block.

pub mod config;
pub mod error;
pub mod histogram;
pub mod index;
pub mod io;
pub mod retention;
pub mod segment;
pub mod tail;

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    future::{poll_fn, Future},
    ops::ControlFlow,
    path::{Path, PathBuf},
    pin::Pin,
    rc::{Rc, Weak},
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use glommio::io::{DmaBuffer, ReadResult};

use broker_format::BatchHeader;

pub use config::{FsyncPolicy, LogConfig};
pub use error::LogError;
pub use io::{Faults, IoStats};

use index::SegmentIndex;
use io::{align_down, SegmentFile, BLOCK};
use segment::{ScanEnd, Segment};
use tail::{Cut, ReadCache, Sealed, Tail};

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

/// A deliberately broken build, for the chaos checker's own test: with the
/// `fault-injection` feature and `BROKER_FAULT_ACK_BEFORE_DURABLE=1`, an
/// append resolves as soon as its batch is in the write buffer, before any
/// write or fdatasync, so a crash loses acknowledged records. Never part of
/// a normal build.
#[cfg(feature = "fault-injection")]
fn fault_ack_before_durable() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("BROKER_FAULT_ACK_BEFORE_DURABLE").is_some_and(|v| v == "1");
        if on {
            tracing::warn!("FAULT INJECTED: appends are acknowledged before they are written");
        }
        on
    })
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
    stats: Arc<IoStats>,
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
    /// The flusher holds writes or fsyncs whose appends are not yet
    /// acknowledged (or failed).
    flushing: bool,
    /// Data writes issued and not yet completed.
    writes_in_flight: usize,
    /// An append landed while a data write was in flight since the flusher
    /// last issued one: the load is concurrent, so cutting buffers at block
    /// boundaries (to pipeline writes) pays off.
    appended_while_writing: bool,
    /// Bytes the last acknowledgement released that have not been appended
    /// again since (each append counts down, whoever sends it). While I/O is
    /// in flight, the flusher holds the tail until they are back (or a
    /// deadline passes), so a closed loop of appenders fills one write
    /// instead of being split among several (see [`next_write`]).
    refill_pending: u64,
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

    /// Seals the tail (`how`: see [`Cut`]), queues it for writing if it
    /// holds unwritten bytes, and continues in a new tail of at least
    /// `next_capacity` bytes.
    fn seal_tail(&mut self, next_capacity: usize, how: Cut) {
        let old = self.tail.take().expect("tail present while open");
        let seg = self.active();
        let (file, segment) = (seg.file.clone(), seg.base_offset);
        let has_unwritten = old.has_unwritten();
        let (sealed, next) = old.seal(&file, next_capacity, how);
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
            durable_end: next_offset,
            durable_len: len,
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
    /// What this log's files did on the disk (writes, fdatasyncs and their
    /// latency), shared with whoever reports it.
    pub fn io_stats(&self) -> Arc<IoStats> {
        self.inner.stats.clone()
    }

    /// Segments on disk, the active one included.
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
        let header = broker_format::validate(batch)?;
        let (epoch, appended) = self.place(batch, &header).await?;
        #[cfg(feature = "fault-injection")]
        if fault_ack_before_durable() {
            return Ok(appended);
        }
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
            // Cut at the block boundary when there is one, so the write of
            // this buffer and of the next can be in flight together.
            let how = if tail.unwritten_below_cut() > 0 {
                Cut::AtBlock
            } else {
                Cut::Whole
            };
            st.seal_tail(capacity, how);
        }
        if st.writes_in_flight > 0 {
            st.appended_while_writing = true;
        }
        st.refill_pending = st.refill_pending.saturating_sub(batch.len() as u64);
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
        let new_file = Rc::new(
            SegmentFile::open(&log_path, true, inner.faults.clone(), inner.stats.clone()).await?,
        );
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
        let slack =
            u64::from(self.inner.config.index_interval_bytes) + broker_format::HEADER_LEN as u64;
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
                let Ok(records) = broker_format::records(bytes) else {
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
    for (header, b) in broker_format::batches(bytes).map_while(Result::ok) {
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

/// Most data writes the flusher keeps issued and not yet acknowledged.
/// ext4 runs extending direct writes one at a time (under the inode lock,
/// in io_uring's worker threads), so depth does not add parallelism at the
/// device: it only lets the next write wait ready while one runs. Two do
/// that; more only split the appends in flight into smaller writes, which
/// measured much slower (bench-results/README.md).
const WRITE_DEPTH: usize = 2;

/// With nothing in flight and concurrent appends, a buffer is cut at its
/// last block boundary (so the next write can be in flight with it) once it
/// holds this fraction of `write_buffer_bytes` in whole blocks.
const PIPELINED_WRITE_DIVISOR: usize = 4;

/// The longest the tail is held for the appends an acknowledgement released
/// (half a write's time otherwise): a disk that stalls once must not make
/// every later write wait long for appenders that are not coming.
const REFILL_HOLD_MAX: Duration = Duration::from_millis(2);

/// A data write or fdatasync issued by the flusher.
type IoFuture = Pin<Box<dyn Future<Output = Result<(), LogError>>>>;

/// A data write issued by the flusher, and its result once in.
struct InFlight {
    io: IoFuture,
    done: Option<Result<(), LogError>>,
    issued: Instant,
    segment: u64,
    sealed: Sealed,
}

/// An fdatasync issued by the flusher and what it makes durable.
struct SyncInFlight {
    io: IoFuture,
    done: Option<Result<(), LogError>>,
    end_offset: u64,
    end_len: u64,
    /// With `always`: the written buffers whose appends it acknowledges.
    buffers: Vec<(u64, Sealed)>,
}

/// The flusher's own state: the I/O it has issued, in order.
struct Pipeline {
    /// Data writes in the order they were issued (= file order).
    writes: VecDeque<InFlight>,
    /// With `always`: writes completed in order, awaiting an fdatasync
    /// before their appends are acknowledged: the point it will make
    /// durable and the buffers.
    unsynced: Option<(u64, u64)>,
    unsynced_buffers: Vec<(u64, Sealed)>,
    sync: Option<SyncInFlight>,
    /// With `interval`: when the last fdatasync was issued, and the timer
    /// for the next one.
    last_sync: Instant,
    timer: Option<Pin<Box<glommio::timer::Timer>>>,
    /// How long a data write keeps the disk (moving average of the time
    /// from when it could start, its issue or its predecessor's completion,
    /// to its completion).
    write_time: Duration,
    /// When the last data write completed.
    last_write_done: Instant,
    /// The tail is held for the appends the last acknowledgement released
    /// (`State::refill_pending`) until this instant at most. No timer: the
    /// flusher looks at it whenever an append or a completion wakes it, and
    /// if neither comes, the I/O in flight completes and ends the hold.
    refill_deadline: Option<Instant>,
}

impl Pipeline {
    fn idle(&self) -> bool {
        self.writes.is_empty() && self.sync.is_none() && self.unsynced.is_none()
    }
}

/// What the flusher must do outside its poll loop.
enum Step {
    /// Truncate back and reload the tail after a failure (`true`: to the
    /// durable point).
    Reset(bool),
    /// The log closed or was dropped, and no I/O is in flight.
    Exit,
}

/// The background task that carries out write cycles (group commit) as a
/// pipeline: it seals what was appended, issues the write while earlier
/// writes are still in flight (up to [`WRITE_DEPTH`]), and acknowledges in
/// file order as writes (and, per policy, fdatasyncs) complete. Two writes
/// in flight never cover the same block: a buffer that rewrites the
/// previous one's partial block is issued only after that write completed.
/// Holds only a weak handle so dropping the log ends it (once its I/O is
/// in).
async fn flusher(weak: Weak<Inner>) {
    let mut pipe = Pipeline {
        writes: VecDeque::new(),
        unsynced: None,
        unsynced_buffers: Vec::new(),
        sync: None,
        last_sync: Instant::now(),
        timer: None,
        write_time: Duration::ZERO,
        last_write_done: Instant::now(),
        refill_deadline: None,
    };
    loop {
        let step = poll_fn(|cx| match weak.upgrade() {
            Some(inner) => pump(&inner, &mut pipe, cx),
            None => finish_orphaned(&mut pipe, cx),
        })
        .await;
        match step {
            Step::Exit => return,
            Step::Reset(to_durable) => {
                let Some(inner) = weak.upgrade() else { return };
                reset_tail(&inner, to_durable).await;
            }
        }
    }
}

/// The log is gone: lets the I/O already issued complete (its buffers and
/// file stay alive in the futures), then ends the flusher.
fn finish_orphaned(pipe: &mut Pipeline, cx: &mut Context<'_>) -> Poll<Step> {
    pipe.writes
        .retain_mut(|w| w.done.is_none() && w.io.as_mut().poll(cx).is_pending());
    if let Some(s) = pipe.sync.as_mut() {
        if s.done.is_some() || s.io.as_mut().poll(cx).is_ready() {
            pipe.sync = None;
        }
    }
    if pipe.writes.is_empty() && pipe.sync.is_none() {
        Poll::Ready(Step::Exit)
    } else {
        Poll::Pending
    }
}

/// One pass of the flusher: collects completed I/O, acknowledges in order,
/// issues fdatasyncs and new writes. Everything here is synchronous; the
/// futures it polls register the flusher's waker, as do appends (through
/// `State::flusher`) and the interval timer.
fn pump(inner: &Inner, pipe: &mut Pipeline, cx: &mut Context<'_>) -> Poll<Step> {
    let mut st = inner.state.borrow_mut();
    let st = &mut *st;
    loop {
        let mut progress = false;
        // Results of data writes, in whatever order they complete.
        for w in pipe.writes.iter_mut().filter(|w| w.done.is_none()) {
            if let Poll::Ready(r) = w.io.as_mut().poll(cx) {
                w.done = Some(r);
            }
        }
        // Acknowledge in file order: only the completed prefix counts.
        let mut acked = false;
        let acked_before = (st.acked_end, st.acked_len);
        while let Some(r) = pipe.writes.front_mut().and_then(|w| w.done.take()) {
            let w = pipe.writes.pop_front().expect("front exists");
            progress = true;
            let now = Instant::now();
            let took = now.saturating_duration_since(w.issued.max(pipe.last_write_done));
            pipe.write_time = (pipe.write_time * 7 + took) / 8;
            pipe.last_write_done = now;
            if st.reset_to_durable.is_some() {
                // A failure already failed these appends; the write only
                // had to finish before the truncation.
                continue;
            }
            match r {
                Ok(()) if inner.config.fsync == FsyncPolicy::Always => {
                    pipe.unsynced = Some((w.sealed.end_offset, w.sealed.end_pos));
                    pipe.unsynced_buffers.push((w.segment, w.sealed));
                }
                Ok(()) => {
                    advance_acked(st, w.sealed.end_offset, w.sealed.end_pos);
                    let budget = inner.config.write_buffer_bytes * inner.config.read_cache_buffers;
                    st.cache.push(w.segment, w.sealed, budget);
                    acked = true;
                }
                Err(e) => {
                    pipe.unsynced = None;
                    pipe.unsynced_buffers.clear();
                    fail(st, e, false);
                    acked = true;
                }
            }
        }
        // The fdatasync in flight.
        if let Some(s) = pipe.sync.as_mut() {
            if s.done.is_none() {
                if let Poll::Ready(r) = s.io.as_mut().poll(cx) {
                    s.done = Some(r);
                }
            }
            if let Some(r) = s.done.take() {
                let s = pipe.sync.take().expect("sync in flight");
                progress = true;
                acked = true;
                match r {
                    Ok(()) if st.reset_to_durable.is_none() => {
                        st.durable_end = st.durable_end.max(s.end_offset);
                        st.durable_len = st.durable_len.max(s.end_len);
                        if inner.config.fsync == FsyncPolicy::Always {
                            advance_acked(st, s.end_offset, s.end_len);
                            let budget =
                                inner.config.write_buffer_bytes * inner.config.read_cache_buffers;
                            for (seg, sealed) in s.buffers {
                                st.cache.push(seg, sealed, budget);
                            }
                        }
                    }
                    Ok(()) => {}
                    Err(_) if st.reset_to_durable.is_some() => {
                        // Already resetting after a failed write: the pages
                        // this fsync covered are now in an unknown state too.
                        st.reset_to_durable = Some(true);
                    }
                    Err(e) => {
                        pipe.unsynced = None;
                        pipe.unsynced_buffers.clear();
                        fail(st, e, true);
                    }
                }
            }
        }
        if acked {
            st.wake_waiters();
            if st.acked_end > acked_before.0 {
                // What was just acknowledged tends to come back at once
                // (producers waiting on their acknowledgement): hold the
                // tail for it, at most half a write's time, well before the
                // write in flight ends.
                st.refill_pending = if st.acked_len > acked_before.1 {
                    st.acked_len - acked_before.1
                } else {
                    // A roll restarted the count in the new segment.
                    st.acked_len
                };
                pipe.refill_deadline =
                    Some(Instant::now() + (pipe.write_time / 2).min(REFILL_HOLD_MAX));
            }
        }
        if let Some(to_durable) = st.reset_to_durable {
            // Nothing new is issued; truncate once the issued I/O is in.
            if pipe.writes.is_empty() && pipe.sync.is_none() {
                st.flushing = false;
                st.writes_in_flight = 0;
                return Poll::Ready(Step::Reset(to_durable));
            }
        } else {
            if pipe.sync.is_none() {
                progress |= start_sync(inner, st, pipe, cx);
            }
            let holding =
                st.refill_pending > 0 && pipe.refill_deadline.is_some_and(|d| Instant::now() < d);
            if !holding {
                pipe.refill_deadline = None;
            }
            while let Some(w) = next_write(inner, st, pipe, holding) {
                let (file, buf, pos) = (w.file.clone(), w.sealed.buf.clone(), w.sealed.file_pos);
                debug_assert!(
                    pipe.writes.back().is_none_or(|p| p.sealed.file_pos < pos),
                    "writes are issued in file order"
                );
                let mut io: IoFuture = Box::pin(async move { file.write(buf, pos).await });
                // The first poll issues the write.
                let done = match io.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        progress = true;
                        Some(r)
                    }
                    Poll::Pending => None,
                };
                pipe.writes.push_back(InFlight {
                    io,
                    done,
                    issued: Instant::now(),
                    segment: w.segment,
                    sealed: w.sealed,
                });
            }
        }
        if !progress {
            break;
        }
    }
    st.writes_in_flight = pipe.writes.iter().filter(|w| w.done.is_none()).count();
    let was_flushing = st.flushing;
    st.flushing = !pipe.idle();
    if was_flushing && !st.flushing {
        // `drain` waits for this.
        st.wake_waiters();
    }
    if st.closed && pipe.idle() {
        return Poll::Ready(Step::Exit);
    }
    st.flusher = Some(cx.waker().clone());
    Poll::Pending
}

/// Raises the high watermark to a completed write's (or fdatasync's)
/// point. A buffer cut inside a batch may complete no new batch: its point
/// is then at or below the mark, which does not move.
fn advance_acked(st: &mut State, end_offset: u64, end_len: u64) {
    if end_offset > st.acked_end {
        debug_assert!(
            end_len > st.acked_len,
            "offsets and positions advance together"
        );
        st.acked_end = end_offset;
        st.acked_len = end_len;
    }
}

/// Issues the fdatasync the policy calls for, if any: with `always` as
/// soon as written data awaits one (appends that complete meanwhile share
/// the next: group commit); with `interval` once the period has passed
/// since the last one and acknowledged data is not yet durable. Returns
/// true when something completed at once.
fn start_sync(inner: &Inner, st: &mut State, pipe: &mut Pipeline, cx: &mut Context<'_>) -> bool {
    let target = match inner.config.fsync {
        FsyncPolicy::Never => return false,
        FsyncPolicy::Always => match pipe.unsynced.take() {
            Some(t) => t,
            None => return false,
        },
        FsyncPolicy::Interval(d) => {
            if st.durable_end >= st.acked_end {
                pipe.timer = None;
                return false;
            }
            let since = pipe.last_sync.elapsed();
            if since < d {
                let timer = pipe
                    .timer
                    .get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(d - since)));
                if timer.as_mut().poll(cx).is_pending() {
                    return false;
                }
            }
            pipe.timer = None;
            pipe.last_sync = Instant::now();
            (st.acked_end, st.acked_len)
        }
    };
    let file = st.active().file.clone();
    let mut io: IoFuture = Box::pin(async move { file.sync().await });
    // The first poll issues it; a result already in is collected by the
    // caller's next pass.
    let done = match io.as_mut().poll(cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    };
    let completed = done.is_some();
    pipe.sync = Some(SyncInFlight {
        io,
        done,
        end_offset: target.0,
        end_len: target.1,
        buffers: std::mem::take(&mut pipe.unsynced_buffers),
    });
    completed
}

/// The next buffer to write, sealing the tail if it is its turn, or None
/// when the pipeline is full or must wait: for a write to complete (a
/// shared block) or, while others are in flight, for more data.
///
/// While I/O is in flight the disk is busy, so a new write gains nothing by
/// leaving early; it goes once the appends the last acknowledgement released
/// are back (`holding` false: see `State::refill_pending`) or the deadline
/// for them has passed. Issuing at once instead splits a closed loop of N
/// appenders into three groups (the write running, the one queued behind
/// it, and those refilling the tail) where two would do, so every write
/// carries a third of them rather than half.
fn next_write(
    inner: &Inner,
    st: &mut State,
    pipe: &Pipeline,
    holding: bool,
) -> Option<PendingWrite> {
    if st.closed || pipe.writes.len() >= WRITE_DEPTH {
        return None;
    }
    // With `always` an fdatasync in flight holds the appends back as a
    // write does: what arrives meanwhile joins the next write rather than
    // going out at once in a small one.
    let in_flight = pipe.writes.iter().any(|w| w.done.is_none())
        || (inner.config.fsync == FsyncPolicy::Always
            && (pipe.sync.is_some() || pipe.unsynced.is_some()));
    let last_in_flight = pipe.writes.back().is_some_and(|w| w.done.is_none());
    if let Some(front) = st.queue.front() {
        if front.sealed.shares_first_block && last_in_flight {
            return None;
        }
        return st.queue.pop_front();
    }
    let tail = st.tail.as_ref()?;
    if !tail.has_unwritten() || (tail.shares_first_block() && last_in_flight) {
        return None;
    }
    let big = tail.unwritten_below_cut() > 0
        && tail.unwritten_below_cut() >= inner.config.write_buffer_bytes / PIPELINED_WRITE_DIVISOR;
    let how = if in_flight {
        // The disk is busy: write only whole blocks, once the appends
        // expected back are in; the rest waits for the next write.
        if tail.unwritten_below_cut() == 0 || holding {
            return None;
        }
        Cut::AtBlock
    } else if big && st.appended_while_writing {
        // Concurrent load: leave the partial block to the next write so
        // that write can be issued while this one is in flight.
        Cut::AtBlock
    } else {
        // A lone appender: everything, in one write.
        Cut::Whole
    };
    st.appended_while_writing = false;
    let capacity = (tail.unwritten_len() * 2).min(inner.config.write_buffer_bytes);
    st.seal_tail(capacity, how);
    st.queue.pop_front()
}

/// Records a failed write or fsync: every append not yet acknowledged
/// fails, and the flusher resets the tail (once the I/O already issued is
/// in) before new appends are taken. After a failed
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

/// Opens every segment in `dir`, validating the last one from its
/// checkpoint and rebuilding indexes that are missing or stale.
async fn recover(
    dir: &Path,
    config: &LogConfig,
    faults: &Option<Rc<Faults>>,
    stats: &Arc<IoStats>,
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
