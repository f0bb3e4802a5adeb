//! Every bound of broker-quorum, each with its reason, in one place.
//!
//! The frame bound is checked before a frame's buffer is allocated; the
//! record bounds before a record's payload is read from disk; the command
//! bound before a proposal enters the controller thread. The compile-time
//! assertions below keep the bounds consistent with each other.

/// The largest serialized command a proposal may carry. Metadata commands
/// are small (a topic, a partition assignment); a bound keeps one proposal
/// from filling an append frame or a log record.
pub const MAX_COMMAND_BYTES: usize = 256 << 10;

/// The most entries openraft puts in one AppendEntries RPC
/// (`Config::max_payload_entries`). With [`MAX_COMMAND_BYTES`] it bounds an
/// append frame.
pub const MAX_ENTRIES_PER_APPEND: u64 = 64;

/// The largest Raft RPC frame (request or response) read from or written to
/// a peer. A length field above it closes the connection before anything is
/// allocated.
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// The snapshot chunk openraft sends per InstallSnapshot RPC
/// (`Config::snapshot_max_chunk_size`). JSON spells a byte as up to four
/// characters ("255,"), so a chunk's frame is at most ~4x this.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// The largest record of the log file: one entry, i.e. a command and its log
/// id in JSON (the command is re-encoded from the same JSON value, so it
/// keeps its size). Above it a record is corrupt (a torn or flipped length field).
pub const MAX_LOG_RECORD_BYTES: usize = MAX_COMMAND_BYTES + (64 << 10);

/// The largest record of the vote, committed and snapshot-meta files.
pub const MAX_META_RECORD_BYTES: usize = 64 << 10;

/// The largest snapshot (the state machine's serialized image) written,
/// read or received. The whole snapshot is held in memory.
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// The most voters a quorum may have: a controller quorum is 1, 3 or 5.
pub const MAX_VOTERS: usize = 9;

/// Proposals queued for the controller thread and not yet taken by it; a
/// full queue answers `ProposeError::Overloaded` instead of queueing more.
pub const MAX_PENDING_PROPOSALS: usize = 1024;

/// Concurrent inbound Raft connections (a peer opens one per replication
/// stream and one per election, a broker one per call, so a handful);
/// past it a new one replaces the one waiting longest for a request, if
/// that one has waited [`EVICTABLE_AFTER_MS`], or is closed at accept.
pub const MAX_INBOUND_CONNECTIONS: usize = 64;

/// How long a connection must have waited for its next request before a
/// new one may take its place when all are taken: ten Raft heartbeats
/// (a live replication stream sends one every 100 ms) and far above a
/// call's request write.
pub const EVICTABLE_AFTER_MS: u64 = 1_000;

/// Connecting to a peer; the whole RPC is also bounded by openraft's TTL.
pub const CONNECT_TIMEOUT_MS: u64 = 500;

/// An inbound connection with no request for this long is closed.
pub const INBOUND_IDLE_TIMEOUT_MS: u64 = 60_000;

/// `Quorum::start` waits this long for the controller thread to be up.
pub const STARTUP_TIMEOUT_MS: u64 = 30_000;

/// A snapshot chunk's frame must fit: four characters per byte plus the
/// request's other fields.
const _: () = assert!((SNAPSHOT_CHUNK_BYTES as usize) * 4 + (64 << 10) <= MAX_FRAME_BYTES);
/// A full append frame must fit: every entry at its record bound.
const _: () = assert!((MAX_ENTRIES_PER_APPEND as usize) * MAX_LOG_RECORD_BYTES <= MAX_FRAME_BYTES);
/// A command must fit in a log record with its log id and JSON framing.
const _: () = assert!(MAX_COMMAND_BYTES + (64 << 10) <= MAX_LOG_RECORD_BYTES);
