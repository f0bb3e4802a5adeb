//! The client library: blocking, on `std::net`, usable from plain threads
//! (tests, the CLI, loadgen). Shaped like Kafka's Java clients:
//!
//! - [`Connection`]: one pipelined TCP connection; a reader thread pairs
//!   answers with requests by request id.
//! - [`Client`]: the admin and metadata side (create, delete, list and
//!   describe topics, list offsets), a pool of connections by address and a
//!   cache of where each partition lives.
//! - [`Producer`]: accumulates records per partition into record batches and
//!   sends each batch as one produce request, from a background thread,
//!   straight to the shard that owns the partition. By topic name with a
//!   future per record, or through a [`PartitionHandle`] resolved once with
//!   one [`BatchDelivery`] per call ([`Producer::send_batch`]).
//! - [`Consumer`]: fetches chosen partitions from chosen offsets with long
//!   polls, checks every batch's CRC, and hands out records in order.
//! - [`GroupConsumer`]: a member of a consumer group: the coordinator
//!   assigns its partitions; it heartbeats, commits and rejoins on
//!   rebalances (at-least-once). The group requests are [`Client`] methods.
//!
//! Invariants:
//! - Data-path requests (produce, fetch, list offsets) go to the owning
//!   shard's own address from the metadata, never through the main port, so
//!   the client never costs the broker a cross-core hop. A NotOwner answer
//!   refreshes the metadata.
//! - Records of one partition leave a producer in the order they were sent,
//!   over one connection (the broker appends one connection's requests in
//!   arrival order).
//! - Nothing read from the network is trusted before it is checked: frame
//!   sizes against `max_frame_bytes` before allocation, headers by the
//!   protocol's verifier, record batches by their CRC.
//! - The client never panics on what a peer sends.

mod admin;
mod connection;
mod consumer;
mod error;
mod group;
mod partitioner;
mod producer;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use admin::{
    Client, ClusterMetadata, CreatedTopic, PartitionInfo, PartitionOffsets, ShardInfo, TopicInfo,
    TopicListing,
};
pub use connection::{Connection, Cork, HasError, Response};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
pub use error::{ClientError, ClientResult};
pub use group::{
    is_fenced, AutoOffsetReset, CommittedOffset, Coordinator, GroupConsumer, GroupConsumerConfig,
    GroupDescription, GroupListing, GroupMemberInfo, Joined, TopicPartition,
};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{
    BatchDelivery, BatchMetadata, DeliveryFuture, PartitionHandle, Producer, ProducerConfig,
    ProducerRecord, Record, RecordMetadata,
};

pub use broker_protocol::{Acks, ErrorCode, OffsetQuery, TopicSettings, BROKER_DEFAULT, NO_LIMIT};

/// The broker address clients use when none is given.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Settings shared by every connection a client makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer (a fetch: on top of its
    /// long-poll wait) before it fails and its connection is closed.
    pub request_timeout: Duration,
    /// Largest answer frame accepted; a larger claim closes the connection
    /// before anything is allocated for it.
    pub max_frame_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: broker_protocol::limits::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}
