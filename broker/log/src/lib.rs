//! The partition log: an append-only sequence of record batches in segment
//! files, written with direct I/O on the shard that owns the partition.
//!
//! What it owns: the partition's directory, its segment files and indexes,
//! its write buffer, group commit and fsync policy, reads by offset and by
//! timestamp, recovery at open and retention; and what replication needs
//! of a log: follower appends at the leader's offsets
//! ([`Log::append_replica`]), the leader epoch stamped on leader appends
//! ([`Log::set_leader_epoch`]), the leader-epoch cache and its checkpoint
//! file ([`Log::end_offset_for_epoch`]), and suffix truncation
//! ([`Log::truncate_to`]). Which replica leads, the high watermark of a
//! replicated partition and when to truncate are the owner's: the log knows
//! no other replica.
//!
//! What it never does: see a socket, take a lock, run on another thread, or
//! block its thread. A [`Log`] is `!Send`: it lives on its shard's glommio
//! executor, and every method must be called there. File I/O goes through
//! glommio's io_uring API; the few calls glommio 0.9 has only in blocking
//! form (stat, create and list the directory, at open) go to glommio's
//! blocking thread pool and touch no log state.
//!
//! Invariants (asserted where they must hold):
//! - Offsets are consecutive from 0: each appended batch gets the log end
//!   offset as its base and advances it by its record count; a follower's
//!   batch keeps its own base, which must be exactly the log end offset.
//! - A leader append's batch carries the log's leader epoch (-1 until
//!   [`Log::set_leader_epoch`]); a follower's keeps the leader's. The base
//!   offset and that epoch are the only bytes the log writes into a batch,
//!   both outside its CRC.
//! - The leader-epoch cache is strictly increasing in epoch and start
//!   offset, and no batch is stored with an epoch below its latest. Its
//!   file is written (fsynced) before any batch of a new epoch is placed;
//!   at open, entries at or past the log end are dropped and the entries of
//!   the scanned tail rebuilt from its batches.
//! - A truncation leaves, at every step, files that recovery opens as a
//!   contiguous prefix of the old log at least as long as the cut; no reader
//!   gets a byte at or past the cut once it began.
//! - Record bytes are copied once on append (into the aligned tail buffer)
//!   and never on read: a read returns a slice of a DMA read buffer or of a
//!   written tail buffer.
//! - An append is acknowledged only once its bytes are written, and with
//!   [`FsyncPolicy::Always`] fdatasynced. Readers see acknowledged data only
//!   (up to the high watermark).
//! - After a failed write or fsync, nothing past the last acknowledged
//!   (respectively durable) batch is trusted: pending appends fail, the file
//!   is truncated back and the tail re-read from disk before new appends.
//! - Only the active (last) segment is ever written (a truncation removes
//!   the later segments before it cuts one, which so becomes the active
//!   one); retention never deletes it.
//! - Write cycles are pipelined (at most `WRITE_DEPTH` data writes in
//!   flight) but acknowledged in file order, and two writes in flight never
//!   cover the same block.
//!
//! Module map:
//! - `state`: the mutable state behind the handle (segments, tail, queue,
//!   acknowledged and durable points, failures, the leader epoch and the
//!   epoch cache) and its small helpers.
//! - `append`: [`Log::append`], rolling the active segment, [`Log::close`].
//! - `flusher`: the per-log task that writes, fdatasyncs and acknowledges
//!   (group commit, the write pipeline, the refill hold), and the reset
//!   after a failed write or fsync.
//! - `read`: [`Log::read`], [`Log::read_below`] and
//!   [`Log::offset_for_timestamp`].
//! - `recovery`: [`Log::open`]: recovering the directory at open (the epoch
//!   cache included).
//! - `replica`: [`Log::append_replica`], [`Log::set_leader_epoch`],
//!   [`Log::end_offset_for_epoch`], [`Log::truncate_to`], and the epoch
//!   checkpoint's writes.
//! - [`epochs`]: the leader-epoch cache and its file format (pure).
//! - [`retention`]: which segments to delete, and [`Log::enforce_retention`].
//! - [`segment`], [`index`], [`tail`]: one segment and its scan, its sparse
//!   indexes (pure), the aligned write buffer and the read cache.
//! - [`io`]: the only module that touches glommio's file API.
//! - [`config`], [`error`], [`histogram`]: settings, errors, latency counts.

pub mod config;
pub mod epochs;
pub mod error;
pub mod histogram;
pub mod index;
pub mod io;
pub mod retention;
pub mod segment;
pub mod tail;

mod append;
mod flusher;
mod read;
mod recovery;
mod replica;
mod state;

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use glommio::io::{DmaBuffer, ReadResult};

pub use config::{FsyncPolicy, LogConfig};
pub use epochs::{EpochEnd, EpochEntry};
pub use error::LogError;
pub use io::{Faults, IoStats, LogFault};

use state::State;

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
    /// The leader-epoch checkpoint was missing, invalid or disagreed with
    /// the recovered batches, and was rewritten from them.
    pub epoch_checkpoint_rewritten: bool,
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

/// What the handle shares: fixed settings and the state behind a `RefCell`
/// (borrowed only between awaits, never across one).
struct Inner {
    dir: PathBuf,
    config: LogConfig,
    faults: Option<Rc<Faults>>,
    stats: Arc<IoStats>,
    state: RefCell<State>,
}

impl Log {
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

    /// The base offset of the active segment (the one appends go to).
    pub fn active_segment_base(&self) -> u64 {
        let st = self.inner.state.borrow();
        *st.segments
            .keys()
            .next_back()
            .expect("a log always has a segment")
    }

    /// The next offset an append will be assigned (includes appends not yet
    /// acknowledged).
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// The end of what an acknowledgement promises under the log's fsync
    /// policy: every record below it is acknowledged, that is written, and
    /// with [`FsyncPolicy::Always`] fdatasynced. Readers of the log see below
    /// it; a replicated partition keeps its own high watermark at or below
    /// it and reads with [`Log::read_below`].
    pub fn durable_end(&self) -> u64 {
        self.inner.state.borrow().acked_end
    }

    /// The offset after the last acknowledged record: readers see below it.
    /// The same value as [`Log::durable_end`], under its older name (the
    /// log's own high watermark, not a replicated partition's).
    pub fn high_watermark(&self) -> u64 {
        self.inner.state.borrow().acked_end
    }

    /// The offset after the last fdatasynced record. With
    /// [`FsyncPolicy::Always`] at or above [`Log::durable_end`]; with
    /// `interval` and `never` it may lag it.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().synced_end
    }

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
}
