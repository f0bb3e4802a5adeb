//! broker-quorum: the Raft metadata quorum of the cluster's controllers.
//!
//! A `Quorum` replicates the commands of an application `StateMachine`
//! (the cluster's metadata image) across a fixed set of voters with
//! openraft 0.9, over this crate's own durable log, vote and snapshot files
//! and its own TCP transport. openraft runs on a tokio current-thread
//! runtime on a thread of its own ("controller"); the `Quorum` handle is
//! usable from any executor (the brokers' shards run glommio).
//!
//! Modules:
//! - `quorum`: `Quorum::start`, the controller thread, the handle (propose,
//!   status, read, wait_applied, shutdown).
//! - `config`: `QuorumConfig`, defaults, validation, openraft's config.
//! - `log_store`: the log, vote, committed and lock files (openraft's
//!   `RaftLogStorage`), recovery.
//! - `sm_store`: the state machine adapter and the snapshot file
//!   (`RaftStateMachine`, `RaftSnapshotBuilder`).
//! - `network`, `server`, `rpc`: the Raft RPCs over TCP, client and server
//!   sides, and their frames; the application's client frames ride on
//!   them (`client::call` sends one, a [`ClientService`] answers it).
//! - `record`, `file`: the CRC-framed records of every file, atomic
//!   replacement of small files.
//! - `limits`: every bound; `error`: the errors; `types`: openraft's types.
//! - `storage_suite` (tests only): openraft's storage test suite over the
//!   stores.
//!
//! The files and frames, byte by byte: `schemas/quorum-files.md`.
//!
//! Invariants, as absences: broker-quorum never knows what a topic, a
//! partition or a shard is (commands are the application's, opaque JSON
//! here); it never acknowledges an append or a vote before it is fsynced;
//! no length read from a peer or a file allocates before it is checked
//! against a bound in `limits`; nothing a peer sends can panic it.

use std::{fmt::Debug, future::Future, pin::Pin, sync::Arc};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod client;
mod config;
mod error;
mod file;
pub mod limits;
mod log_store;
mod network;
mod quorum;
mod record;
mod rpc;
mod server;
mod sm_store;
mod types;

#[cfg(test)]
mod storage_suite;

pub use config::{
    ConfigError, QuorumConfig, DEFAULT_ELECTION_TIMEOUT_MAX_MS, DEFAULT_ELECTION_TIMEOUT_MIN_MS,
    DEFAULT_HEARTBEAT_MS, DEFAULT_LOG_KEEP_AFTER_SNAPSHOT_ENTRIES, DEFAULT_PROPOSE_TIMEOUT_MS,
    DEFAULT_SNAPSHOT_EVERY_ENTRIES,
};
pub use error::{ProposeError, QuorumError};
pub use quorum::{Quorum, QuorumStatus};

/// The replicated state: every node applies the same committed commands in
/// the same order to its own instance.
///
/// Implementations must be deterministic (the same commands from the same
/// state give the same state and responses on every node) and must not do
/// I/O: durability is the quorum's (the log and the snapshots).
pub trait StateMachine: Send + 'static {
    /// A change to the state, proposed by the application.
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// What applying a command answers the proposer.
    type Response: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Response;

    /// The whole state, serialized (a snapshot's content).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with one serialized by `snapshot`. On `Err`
    /// the state must be left as it was.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;
}

/// Answers the application's client requests (text in, text out) that
/// arrive on a node's Raft address ([`client::call`]): the application's
/// own protocol between its processes and the controllers, on the same
/// port as the Raft RPCs. Runs on the controller thread's runtime: the
/// future must not block (awaiting [`Quorum::propose`] is fine).
pub trait ClientService: Send + Sync + 'static {
    /// The answer to `request`.
    fn call(self: Arc<Self>, request: String) -> Pin<Box<dyn Future<Output = String> + Send>>;
}
