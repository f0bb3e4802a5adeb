//! ClientError: every way a client call fails, typed so that a caller can
//! tell "retry", "reset the offset" and "give up" apart.

use std::time::Duration;

use broker_format::BatchError;
use broker_protocol::{ErrorCode, FrameError};

/// Why a client call failed.
///
/// Cloneable because one connection failure fails every request pending on
/// it, each with its own copy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made to `addr`.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The I/O error, for humans.
        message: String,
    },
    /// The connection was lost (closed by the peer, an I/O error, or closed
    /// after another request on it timed out) before the answer came. The
    /// request may or may not have been carried out: a produce retried after
    /// this may append twice (at-least-once).
    #[error("connection to {addr} lost: {reason}")]
    Disconnected {
        /// The peer.
        addr: String,
        /// What ended it.
        reason: String,
    },
    /// No answer within the request timeout. The connection is closed (its
    /// byte stream can no longer be trusted to pair answers with requests),
    /// so every other request pending on it fails with
    /// [`ClientError::Disconnected`].
    #[error("request to {addr} timed out after {after:?}")]
    TimedOut {
        /// The peer.
        addr: String,
        /// How long the request waited.
        after: Duration,
    },
    /// The peer sent bytes that are not a valid answer (bad frame prefix, an
    /// oversized frame, an answer to no request, an unreadable header). The
    /// connection is closed.
    #[error("protocol error from {addr}: {error}")]
    Protocol {
        /// The peer.
        addr: String,
        /// What was wrong with the frame.
        error: FrameError,
    },
    /// The broker refused the request with an error code.
    #[error("broker error {code:?}: {message}")]
    Broker {
        /// The wire error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
        /// For [`ErrorCode::OffsetOutOfRange`]: the readable range
        /// `[log_start_offset, high_watermark]`.
        valid_range: Option<(i64, i64)>,
    },
    /// A fetched record batch failed the client's own check (CRC, framing,
    /// record layout): the bytes were damaged after the broker checked them.
    #[error("corrupt record batch in {topic}/{partition} at offset {offset}: {error}")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The position the fetch read from.
        offset: i64,
        /// What the check found.
        error: BatchError,
    },
    /// The topic has no partition with this number (per the metadata).
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// The call's arguments are unusable (e.g. an empty bootstrap list).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    /// The broker's error code, if the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// For [`ErrorCode::OffsetOutOfRange`]: the readable range
    /// `(log_start_offset, high_watermark)`, to reset a consumer into.
    pub fn offset_range(&self) -> Option<(i64, i64)> {
        match self {
            ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                valid_range,
                ..
            } => *valid_range,
            _ => None,
        }
    }

    /// Whether the same request may succeed if retried after a metadata
    /// refresh and a short pause: the connection broke, the partition moved,
    /// the topic is not (yet) known where it was sent, or the broker was
    /// briefly unable to serve it.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Disconnected { .. }
            | ClientError::TimedOut { .. } => true,
            ClientError::Broker { code, .. } => matches!(
                *code,
                ErrorCode::NotOwner
                    | ErrorCode::UnknownTopic
                    | ErrorCode::UnknownPartition
                    | ErrorCode::StorageError
                    | ErrorCode::TooManyConnections
                    | ErrorCode::NotEnoughReplicas
            ),
            _ => false,
        }
    }

    /// Whether the request's outcome is unknown: the broker wrote it but
    /// could not tell whether it will be committed (it lost the
    /// leadership, the in-sync replicas fell below `min.insync.replicas`,
    /// or it was not committed in time), or the answer never came (the
    /// connection broke or timed out after the request was sent). Such a
    /// record may or may not be in the log; it is never "not written".
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Disconnected { .. } | ClientError::TimedOut { .. } => true,
            ClientError::Broker { code, .. } => *code == ErrorCode::Indeterminate,
            _ => false,
        }
    }

    /// Whether the request never reached a shard that could act on it, so
    /// a retry cannot duplicate it: the routing errors.
    pub fn is_routing(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::NotOwner | ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)
        )
    }

    /// A broker error from a response's `error` field.
    pub(crate) fn from_wire(error: broker_protocol::generated::Error<'_>) -> ClientError {
        let valid_range = (error.code() == ErrorCode::OffsetOutOfRange)
            .then(|| (error.log_start_offset(), error.high_watermark()));
        ClientError::Broker {
            code: error.code(),
            message: error.message().unwrap_or_default().to_owned(),
            valid_range,
        }
    }
}

/// What client calls return.
pub type ClientResult<T> = Result<T, ClientError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: ErrorCode) -> ClientError {
        ClientError::Broker {
            code,
            message: String::new(),
            valid_range: None,
        }
    }

    #[test]
    fn replication_errors_say_whether_anything_was_written() {
        // Nothing written: retried.
        let refused = broker(ErrorCode::NotEnoughReplicas);
        assert!(refused.is_retriable() && !refused.is_indeterminate());
        // Written, outcome unknown: reported as such, never retried blindly.
        let unknown = broker(ErrorCode::Indeterminate);
        assert!(unknown.is_indeterminate() && !unknown.is_retriable());
        let lost = ClientError::Disconnected {
            addr: "a".into(),
            reason: "reset".into(),
        };
        assert!(lost.is_indeterminate());
        assert!(!broker(ErrorCode::CorruptBatch).is_indeterminate());
    }
}
