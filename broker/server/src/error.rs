//! The one error type of serving: what a service operation answers when it
//! fails, whatever protocol asked.
//!
//! A [`ServiceError`] is a kind (protocol-neutral: each codec maps it to its
//! own wire code), a message for humans, and for out-of-range reads the range
//! that is valid. Log, group and metadata errors convert into it with `From`,
//! so every path answers an error the same way: the codec turns the error
//! into one error response.

use std::fmt;

use broker_log::LogError;

use crate::group::GroupError;
use crate::metadata::MetadataError;

/// What went wrong, in terms any protocol can map to its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The topic does not exist.
    UnknownTopic,
    /// The topic has no partition with this number.
    UnknownPartition,
    /// The offset is outside the readable range (carried by the error).
    OffsetOutOfRange,
    /// The partition is served by another shard than the one asked, which
    /// does not forward (a shard-aware port): refresh metadata.
    NotOwner,
    /// A record batch failed validation; nothing of the request was appended.
    CorruptBatch,
    /// A record batch exceeds the broker's batch size limit.
    BatchTooLarge,
    /// The disk is full.
    NoSpace,
    /// The partition's storage failed; nothing acknowledged is lost.
    Storage,
    /// The request is malformed or breaks a rule (a field out of range, an
    /// internal topic written by a client, ...).
    InvalidRequest,
    /// A topic with this name exists (or is being created or deleted).
    TopicExists,
    /// A replication factor the cluster cannot honour: more replicas than
    /// brokers that can take one, more than one on a broker on its own, a
    /// bad min.insync.replicas (Kafka's INVALID_REPLICATION_FACTOR).
    InvalidReplicationFactor,
    /// The member is not (or no longer) in the group.
    UnknownMember,
    /// The request's generation is not the group's current one.
    IllegalGeneration,
    /// The group is rebalancing.
    RebalanceInProgress,
    /// A committed partition is not assigned to the member.
    NotAssigned,
    /// A member's protocol type or protocols do not fit its group's.
    InconsistentGroupProtocol,
    /// An idempotent producer's batch does not follow its last one (a gap
    /// or a reordering).
    OutOfOrderSequence,
    /// An idempotent producer's batch carries an epoch older than its
    /// current one: a newer instance of the producer exists.
    ProducerFenced,
    /// An idempotent producer this partition does not know sent a batch
    /// that does not start its sequence.
    UnknownProducer,
    /// acks=all with fewer in-sync replicas than the topic's
    /// `min.insync.replicas`: nothing was written (Kafka's
    /// NOT_ENOUGH_REPLICAS).
    NotEnoughReplicas,
    /// Written, but the in-sync replicas fell below `min.insync.replicas`
    /// before it was committed: indeterminate (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    NotEnoughReplicasAfterAppend,
    /// Written on the leader, but its outcome is unknown (leadership lost,
    /// or not committed in time): it may or may not be committed. Never
    /// reported as a failure that wrote nothing.
    Indeterminate,
    /// A failure the other kinds do not describe (a bug, a shard stopping).
    Internal,
}

/// A failed service operation: its kind, a message, and for
/// [`ErrorKind::OffsetOutOfRange`] the valid range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Detail for humans: what was asked and why it failed.
    pub message: String,
    /// For out-of-range reads: the log start offset and the end a reader may
    /// read up to (the high watermark).
    pub valid_range: Option<(u64, u64)>,
}

/// The result of a service operation.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            message: message.into(),
            valid_range: None,
        }
    }

    /// [`ErrorKind::InvalidRequest`] with `message`.
    pub fn invalid(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::InvalidRequest, message)
    }

    /// [`ErrorKind::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Internal, message)
    }

    /// [`ErrorKind::Storage`] with `message`.
    pub fn storage(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Storage, message)
    }

    /// [`ErrorKind::OffsetOutOfRange`]: `[start, end]` is what may be read.
    pub fn offset_out_of_range(message: impl Into<String>, start: u64, end: u64) -> ServiceError {
        ServiceError {
            valid_range: Some((start, end)),
            ..ServiceError::new(ErrorKind::OffsetOutOfRange, message)
        }
    }

    /// The topic is unknown.
    pub fn unknown_topic(topic: &str) -> ServiceError {
        ServiceError::new(ErrorKind::UnknownTopic, format!("unknown topic {topic:?}"))
    }

    /// The partition is not open on this shard (the topic was deleted since
    /// the request was routed).
    pub fn not_open(topic: &str, partition: u32) -> ServiceError {
        ServiceError::new(
            ErrorKind::UnknownTopic,
            format!("partition {topic}/{partition} is not open"),
        )
    }

    /// The message with `context` in front ("committing offsets: ...").
    pub fn context(mut self, context: impl fmt::Display) -> ServiceError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<LogError> for ServiceError {
    fn from(e: LogError) -> ServiceError {
        let kind = match &e {
            LogError::InvalidBatch(_) => ErrorKind::CorruptBatch,
            LogError::BatchTooLarge { .. } => ErrorKind::BatchTooLarge,
            LogError::OffsetOutOfRange { start, end, .. } => {
                return ServiceError::offset_out_of_range(e.to_string(), *start, *end)
            }
            e if e.is_no_space() => ErrorKind::NoSpace,
            LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Closed => ErrorKind::Storage,
            LogError::Config { .. } => ErrorKind::Internal,
            // Refusals of the replication primitives, which no client
            // request reaches: the replication layer handles them itself.
            LogError::OffsetMismatch { .. }
            | LogError::EpochRegression { .. }
            | LogError::InvalidLeaderEpoch(_)
            | LogError::TruncateOutOfRange { .. }
            | LogError::NotBatchBoundary { .. } => ErrorKind::Internal,
        };
        ServiceError::new(kind, e.to_string())
    }
}

impl From<GroupError> for ServiceError {
    fn from(e: GroupError) -> ServiceError {
        let kind = match e {
            GroupError::UnknownMember => ErrorKind::UnknownMember,
            GroupError::IllegalGeneration { .. } => ErrorKind::IllegalGeneration,
            GroupError::RebalanceInProgress => ErrorKind::RebalanceInProgress,
            GroupError::NotAssigned(_) => ErrorKind::NotAssigned,
            GroupError::InconsistentProtocol => ErrorKind::InconsistentGroupProtocol,
        };
        ServiceError::new(kind, e.to_string())
    }
}

impl From<MetadataError> for ServiceError {
    fn from(e: MetadataError) -> ServiceError {
        let kind = match e {
            MetadataError::Log(e) => return ServiceError::from(e),
            MetadataError::Invalid(_) => ErrorKind::InvalidRequest,
            MetadataError::Io { .. } | MetadataError::Corrupt { .. } => ErrorKind::Storage,
        };
        ServiceError::new(kind, e.to_string())
    }
}

/// Why the broker could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is out of range or inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The machine cannot run the shards asked for.
    #[error("{0}")]
    Cpus(String),
    /// The data directory or its lock file could not be used.
    #[error("cannot {what} {}: {source}", path.display())]
    DataDir {
        /// What was being done ("create", "resolve", "open").
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another broker holds the data directory's lock.
    #[error("data directory {} is in use by another broker (pid {pid})", path.display())]
    InUse {
        /// The data directory.
        path: std::path::PathBuf,
        /// What its lock file says of the holder.
        pid: String,
    },
    /// The data directory could not be opened or is not ours.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A partition could not be opened (recovered).
    #[error("partition {topic}/{partition}: {source}")]
    Partition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What the log said.
        source: LogError,
    },
    /// An address could not be bound.
    #[error("cannot listen on {addr}{what}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Which listener, for the message (" (shard 1's port)").
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The shards could not be started or stopped during start-up.
    #[error("{0}")]
    Shards(String),
    /// Replaying committed offsets failed.
    #[error("replaying committed offsets: {0}")]
    Replay(ServiceError),
    /// The broker could not take its part in the cluster (its controller
    /// did not start, or the controllers did not admit it in time).
    #[error("cluster: {0}")]
    Cluster(String),
}
