//! The mutable state of one open log, behind the [`Log`](crate::Log)
//! handle's `RefCell`: the segments, the tail being filled, the sealed
//! buffers waiting for the flusher, the acknowledged and durable points, and
//! the failure bookkeeping that appends and the flusher share.
//!
//! Nothing here does I/O or awaits: it is borrowed, changed and released
//! within one poll, by appends, reads and the flusher alike.
//!
//! Invariants:
//! - `synced_end <= next_offset` and `acked_end <= next_offset`: nothing is
//!   acknowledged or durable that was not appended. With
//!   [`FsyncPolicy::Always`](crate::FsyncPolicy::Always) also
//!   `acked_end <= synced_end`.
//! - `acked_len` and `synced_len` are byte positions in the active (last)
//!   segment, at batch boundaries, and at most its length; `acked_end` is the
//!   offset that starts at `acked_len` (likewise for the synced pair).
//! - The tail's end position is the active segment's length, and its end
//!   offset the log end offset: appended bytes go nowhere else.
//! - Appends of an epoch older than `epoch` are settled: acknowledged up to
//!   their failure's `acked_end`, failed past it. (`epoch` counts failures;
//!   leader epochs are `leader_epoch` and `epoch_cache`.)
//! - `epoch_cache` holds no entry at or past `next_offset`, save the
//!   entries a follower append recorded for the batches it is placing, and
//!   the epoch the log stamps as leader, starting exactly there before its
//!   first batch. What a failure gives back, its entries go with
//!   (`forget_epochs_from`).

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    rc::Rc,
    task::Waker,
};

use crate::{
    epochs::LeaderEpochs,
    io::SegmentFile,
    segment::Segment,
    tail::{Cut, ReadCache, Sealed, Tail},
    LogError,
};

/// A write cycle the flusher carries out.
pub(crate) struct PendingWrite {
    pub(crate) file: Rc<SegmentFile>,
    pub(crate) segment: u64,
    pub(crate) sealed: Sealed,
}

/// A write or fsync failure and the acknowledged end it left.
pub(crate) struct Failure {
    /// The append epoch the failure ended.
    pub(crate) epoch: u64,
    /// Appends of that epoch ending at or below this were acknowledged.
    pub(crate) acked_end: u64,
    pub(crate) error: LogError,
}

/// A disk read issued ahead of a sequential reader: the window of segment
/// `segment` that starts with the batch at `offset` (file position `pos`).
pub(crate) struct ReadAhead {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) pos: u64,
    /// The aligned position the read starts at (`pos` rounded down).
    pub(crate) read_pos: u64,
    /// The segment's readable length when the read was issued: bytes past
    /// it in the buffer are not data yet.
    pub(crate) limit: u64,
    /// `State::truncations` when the read was issued: a truncation since
    /// makes it stale.
    pub(crate) truncations: u64,
    pub(crate) data: glommio::Task<Result<glommio::io::ReadResult, LogError>>,
}

/// Everything about an open log that changes.
pub(crate) struct State {
    pub(crate) segments: BTreeMap<u64, Segment>,
    pub(crate) tail: Option<Tail>,
    pub(crate) queue: VecDeque<PendingWrite>,
    pub(crate) cache: ReadCache,
    /// Log end offset: the next offset to assign.
    pub(crate) next_offset: u64,
    /// High watermark: appends below it are acknowledged and readable.
    pub(crate) acked_end: u64,
    /// Bytes of the active segment below the high watermark.
    pub(crate) acked_len: u64,
    /// Everything below this offset is fdatasynced (what
    /// [`Log::durable_offset`](crate::Log::durable_offset) returns; not
    /// [`Log::durable_end`](crate::Log::durable_end), the acknowledged end).
    pub(crate) synced_end: u64,
    /// Bytes of the active segment below `synced_end`.
    pub(crate) synced_len: u64,
    /// Bumped by every failure: appends of an older epoch not acknowledged
    /// by then have failed.
    pub(crate) epoch: u64,
    pub(crate) failures: VecDeque<Failure>,
    /// Set after a failure until the flusher has truncated back and reloaded
    /// the tail; appends wait.
    pub(crate) reset_to_durable: Option<bool>,
    /// Why the last attempt at that reset failed: appends fail with it
    /// instead of waiting on a disk that keeps failing.
    pub(crate) reset_error: Option<LogError>,
    /// An append is rolling the segment, or the log is closing: appends wait.
    pub(crate) exclusive: bool,
    /// The flusher holds writes or fsyncs whose appends are not yet
    /// acknowledged (or failed).
    pub(crate) flushing: bool,
    /// Data writes issued and not yet completed.
    pub(crate) writes_in_flight: usize,
    /// An append landed while a data write was in flight since the flusher
    /// last issued one: the load is concurrent, so cutting buffers at block
    /// boundaries (to pipeline writes) pays off.
    pub(crate) appended_while_writing: bool,
    /// Bytes the last acknowledgement released that have not been appended
    /// again since (each append counts down, whoever sends it). While I/O is
    /// in flight, the flusher holds the tail until they are back (or a
    /// deadline passes), so a closed loop of appenders fills one write
    /// instead of being split among several (see `flusher::next_write`).
    pub(crate) refill_pending: u64,
    pub(crate) closed: bool,
    /// The partition leader epoch written into each leader append's batch
    /// header ([`NO_EPOCH`](crate::epochs::NO_EPOCH) until the owner sets
    /// one with [`Log::set_leader_epoch`](crate::Log::set_leader_epoch)).
    pub(crate) leader_epoch: i32,
    /// The leader-epoch cache; the checkpoint file holds it as of the last
    /// persist (plus, possibly, entries past the log end).
    pub(crate) epoch_cache: LeaderEpochs,
    /// The cache changed since the file was written in a way that must be
    /// written before the data below the active segment's checkpoint
    /// becomes trusted (a roll, a close): entries were removed after a reset.
    pub(crate) epoch_cache_dirty: bool,
    /// The checkpoint file exists (was read at open, or written since).
    pub(crate) epoch_file_exists: bool,
    /// A write of the checkpoint file is under way: writers take turns (they
    /// share its temporary file).
    pub(crate) epoch_file_writing: bool,
    /// An [`Log::append_replica`](crate::Log::append_replica) is checking
    /// and placing its batches: follower appends, truncations and epoch
    /// changes take turns with it.
    pub(crate) replica_appending: bool,
    /// Bumped by every [`Log::truncate_to`](crate::Log::truncate_to): a read
    /// that awaited I/O across one starts again, so no reader gets bytes
    /// that were truncated under it.
    pub(crate) truncations: u64,
    /// Appends that found the log busy (a roll, a reset) and wait to be
    /// placed, by ticket, oldest first: they are placed in this order, and
    /// an append arriving while any waits queues behind them (see
    /// `Log::place`).
    pub(crate) place_queue: VecDeque<u64>,
    /// The next ticket of `place_queue`.
    pub(crate) place_next_ticket: u64,
    /// The disk read a sequential reader will want next, issued when the
    /// last read from disk ended before the data did (see `read.rs`).
    pub(crate) read_ahead: Option<ReadAhead>,
    pub(crate) flusher: Option<Waker>,
    pub(crate) waiters: Vec<Waker>,
}

/// How many failures are remembered for appends still to learn of them.
pub(crate) const FAILURES_KEPT: usize = 16;

impl State {
    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Drops the epoch cache's entries for batches at or past `end` that
    /// the log does not hold (given back after a failure, or not placed by
    /// a follower append): every entry past `end`, and the one at `end`
    /// unless it is the epoch this log stamps as leader (its epoch before
    /// its first batch). The file catches up before the next roll or close.
    pub(crate) fn forget_epochs_from(&mut self, end: u64) {
        let mut changed = self.epoch_cache.truncate_after(end);
        if self
            .epoch_cache
            .latest()
            .is_some_and(|l| l.start_offset == end && l.epoch != self.leader_epoch)
        {
            changed |= self.epoch_cache.truncate_from_end(end);
        }
        if changed {
            self.epoch_cache_dirty = true;
        }
    }

    pub(crate) fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn wake_flusher(&mut self) {
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    /// The append of epoch `epoch` ending at `end`: acknowledged, failed, or pending.
    pub(crate) fn outcome(&self, epoch: u64, end: u64) -> Option<Result<(), LogError>> {
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
    pub(crate) fn seal_tail(&mut self, next_capacity: usize, how: Cut) {
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

    pub(crate) fn drained(&self) -> bool {
        self.queue.is_empty()
            && !self.flushing
            && self.tail.as_ref().is_none_or(|t| !t.has_unwritten())
            && self.reset_to_durable.is_none()
    }
}

/// First tail buffer size; it grows with the load up to `write_buffer_bytes`.
pub(crate) const TAIL_START_BYTES: usize = 16 << 10;
