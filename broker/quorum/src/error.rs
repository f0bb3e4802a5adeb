//! The crate's errors: `QuorumError` (starting, stopping, waiting) and
//! `ProposeError` (one proposal), and the storage errors behind them.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;

/// Why a quorum could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The configuration is invalid.
    #[error("invalid quorum configuration: {0}")]
    Config(#[from] ConfigError),
    /// A file of the quorum could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file of the quorum holds something recovery cannot use (a wrong
    /// magic, a corrupt head record, an undecodable snapshot).
    #[error("corrupt {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state machine refused the snapshot found on disk.
    #[error("the state machine refused the snapshot {}: {reason}", path.display())]
    Restore {
        /// The snapshot file.
        path: PathBuf,
        /// The state machine's reason.
        reason: String,
    },
    /// Another quorum (in this process or another) holds the directory.
    #[error("{} is in use by another quorum", path.display())]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// This node's Raft address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The controller thread could not be started, or did not come up.
    #[error("controller thread: {0}")]
    Thread(String),
    /// openraft stopped with an error (a storage failure, a fatal bug).
    #[error("raft: {0}")]
    Raft(String),
    /// The quorum has been shut down.
    #[error("the quorum is shut down")]
    Shutdown,
}

/// Why a proposal did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; propose at `leader` (its id and Raft
    /// address) if one is known. Nothing was appended.
    #[error("not the leader; leader: {leader:?}")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<(u64, SocketAddr)>,
    },
    /// The proposal did not commit and apply within the propose timeout.
    /// Its outcome is unknown: it may still commit.
    #[error("the proposal did not commit within {timeout_ms} ms (outcome unknown)")]
    Timeout {
        /// The propose timeout.
        timeout_ms: u64,
    },
    /// The command's encoding exceeds `MAX_COMMAND_BYTES`.
    #[error("the command encodes to {bytes} bytes, at most {max}")]
    TooLarge {
        /// The encoded size.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The command (or the response) could not be encoded or decoded.
    #[error("encoding: {0}")]
    Encoding(String),
    /// `MAX_PENDING_PROPOSALS` are already queued for the controller thread.
    #[error("too many proposals pending")]
    Overloaded,
    /// The quorum is shut down (or stopped while the proposal was pending:
    /// its outcome is then unknown).
    #[error("the quorum is shut down")]
    Shutdown,
    /// openraft stopped with an error; the quorum is unusable.
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// openraft's storage error for an I/O failure on our files.
pub(crate) fn storage_io(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> openraft::StorageError<u64> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(e)).into()
}
