//! Errors of the partition log. Each says what failed, on which file, and why.

use std::{io, path::PathBuf, sync::Arc};

use broker_format::BatchError;

/// Everything that can go wrong in a partition log.
///
/// Cloneable so that one failed write cycle can fail every append it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// A disk operation failed (ENOSPC, EIO, ...). Appends it carried are not
    /// acknowledged; the log stays readable up to the last acknowledged batch.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing ("writing", "fsyncing", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// The appended bytes are not one valid record batch.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The batch is larger than this log accepts.
    #[error("record batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Size of the rejected batch.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A read asked for an offset outside the log.
    #[error("offset {requested} is out of range: valid offsets are {start}..={end}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The log start offset (oldest readable).
        start: u64,
        /// The high watermark: reading here waits for the next append.
        end: u64,
    },
    /// The log cannot be opened: a file is damaged beyond what recovery repairs.
    #[error("cannot open log: {path}: {reason}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid log setting {setting}: {reason}")]
    Config {
        /// The setting's name.
        setting: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// A follower append whose batch does not start at the log end offset:
    /// a gap (`found` above `expected`) or an overlap (below). Nothing of
    /// the call was written.
    #[error("replicated batch starts at offset {found}, the log ends at {expected}")]
    OffsetMismatch {
        /// The log end offset (or, for a later batch of the same call, the
        /// end of the batch before it).
        expected: u64,
        /// The batch's base offset.
        found: i64,
    },
    /// A batch (or a new leader epoch) whose leader epoch is below the
    /// latest the log holds. Nothing was written.
    #[error("leader epoch {epoch} is below the latest epoch {latest} of the log")]
    EpochRegression {
        /// The epoch refused.
        epoch: i32,
        /// The latest epoch of the log's epoch cache (or the epoch it stamps).
        latest: i32,
    },
    /// A leader epoch below 0 given to [`Log::set_leader_epoch`](crate::Log::set_leader_epoch).
    #[error("leader epoch {0} is not a valid epoch (must be >= 0)")]
    InvalidLeaderEpoch(i32),
    /// A truncation point outside [log start offset, log end offset].
    #[error("cannot truncate to offset {offset}: the log holds {start}..{end}")]
    TruncateOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The log start offset.
        start: u64,
        /// The log end offset.
        end: u64,
    },
    /// A truncation point inside a batch: the log is cut only between batches.
    #[error(
        "cannot truncate to offset {offset}: it is inside the batch {batch_base}..{batch_next}"
    )]
    NotBatchBoundary {
        /// The offset asked for.
        offset: u64,
        /// The base offset of the batch holding it.
        batch_base: u64,
        /// The offset after that batch.
        batch_next: u64,
    },
}

impl LogError {
    /// Wraps an OS error with the operation and the file it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// True when the error is the disk being full: the log accepts appends
    /// again once space is freed.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}
