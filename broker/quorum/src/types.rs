//! The openraft type configuration: u64 node ids, `BasicNode` (the Raft
//! address as a string), and JSON text as the entries' payload.
//!
//! Commands cross into Raft as their JSON text, encoded from the
//! application's `StateMachine::Command` at propose and decoded back at
//! apply, so that everything below the state machine adapter (the log, the
//! transport, openraft itself) is one non-generic type. Text, not a
//! `serde_json::Value`: a `Value` holds no integer above u64 (a u128 would
//! come back as a float), so the command decoded at apply would not be
//! the one proposed.

use std::io::Cursor;

openraft::declare_raft_types!(
    /// broker-quorum's openraft types.
    pub(crate) TypeConfig:
        D = String,
        R = String,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub(crate) type LogId = openraft::LogId<u64>;
/// A vote.
pub(crate) type Vote = openraft::Vote<u64>;
/// A membership config as stored.
pub(crate) type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
/// A snapshot's metadata.
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;
/// openraft's storage error.
pub(crate) type StorageError = openraft::StorageError<u64>;
/// The Raft handle.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
