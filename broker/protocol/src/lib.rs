//! The wire protocol: frames of a fixed big-endian prefix, a flatbuffer
//! header and an opaque payload. The schema is `schemas/protocol.fbs`; the
//! layout is documented in [`frame`] and in ARCHITECTURE.md.
//!
//! This module owns the frame codec: reading and checking a prefix from a
//! byte stream ([`decode_prefix`]), decoding a whole frame into its verified,
//! typed header and its payload ([`decode_frame`], [`decode_as`]), and
//! building frames ([`FrameWriter`]). It knows nothing of sockets, shards or
//! the log: the server feeds it bytes and writes what it returns.
//!
//! Invariants:
//! - Record bytes never go through flatbuffers: they are the payload, which
//!   the codec only delimits. A produce request's batches and a fetch or
//!   replica fetch response's batches are borrowed or sent as they are,
//!   never copied here.
//! - Every length and count from the peer is checked against a limit of
//!   [`limits`] before it is trusted; decoding allocates nothing on success
//!   and never panics, whatever the bytes.
//! - No flatbuffer header is read before the verifier (with bounded depth,
//!   table count and apparent size) accepted it as its api's table.
//! - The generated code in [`generated`] is exactly what
//!   `scripts/gen-protocol.sh` makes from the schema (CI runs
//!   `scripts/check-protocol.sh`).

mod encode;
mod encode_groups;
mod encode_replication;
mod error;
pub mod frame;
pub mod generated;
pub mod limits;
mod message;

pub use encode::{
    FetchParams, FetchPosition, FrameWriter, OffsetQuery, ResponseError, ShardAddress,
    TopicDescription, TopicSettings, TopicSummary, BROKER_DEFAULT, NO_LIMIT,
};
pub use encode_groups::{GroupSummary, MemberSummary, OffsetEntry, TopicAssignment};
pub use encode_replication::{
    replica_fetch_slices, ReplicaFetchParams, ReplicaFetchPartitionParams, ReplicaFetchResult,
};
pub use error::FrameError;
pub use frame::{
    decode_prefix, encode_prefix, FrameHeader, FLAG_RESPONSE, FRAME_PREFIX_LEN, PROTOCOL_VERSION,
};
pub use generated::{Acks, ApiKey, ErrorCode, OffsetSpec, ReplicaFetchError};
pub use message::{decode_as, decode_frame, Body, Frame, Message};
