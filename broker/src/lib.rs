//! A thread-per-core Kafka-style log broker.
//!
//! Modules, from the bottom up:
//! - [`batch`]: the record batch format, identical on the wire and on disk.
//! - [`log`]: the partition log (segments on direct I/O, indexes, recovery,
//!   retention). It knows nothing of sockets.
//! - [`protocol`]: wire frames (prefix, flatbuffer header, payload) and their codec.
//! - [`metadata`]: topics, their settings and partition placement, on disk.
//! - [`shard`]: pinned executors, one per core, and their channel mesh.
//! - [`server`]: the broker: connections, routing, request handling.
//! - [`client`]: the client library (producer, consumer, admin).
//! - [`cli`]: the `broker` command line.

pub mod batch;
pub mod cli;
pub mod client;
pub mod group;
pub mod histogram;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
