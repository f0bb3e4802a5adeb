//! Every bound the metadata puts on what a command may ask for, each with
//! its reason, in one place. A command beyond one is refused with a typed
//! error, never truncated or clamped.

/// Most shards a broker may register: Kafka node ids are
/// `broker_id * 1024 + shard` (the server's `MAX_SHARDS_PER_BROKER`).
pub const MAX_SHARDS_PER_BROKER: u16 = 1024;

/// Largest broker id: the Kafka node id of its last shard must fit an
/// `i32`. One below the arithmetic bound, as the server's configuration
/// check has it, so that the cluster accepts exactly the ids a broker
/// accepts in its configuration.
pub const MAX_BROKER_ID: u32 = (i32::MAX as u32) / (MAX_SHARDS_PER_BROKER as u32) - 1;

/// Most partitions of one topic: the same bound as the native protocol's
/// `MAX_PARTITIONS_PER_TOPIC` (broker-protocol's limits), so that every
/// topic the cluster creates can be described in one answer.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// Longest topic name, as in Kafka (a partition's directory name adds a
/// dash and a number to it, within a file system's 255 bytes).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Longest cluster id. Kafka's are 22 characters (a base64url UUID); the
/// bound leaves room for ids chosen by hand.
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// Longest host of an endpoint: a DNS name's limit.
pub const MAX_HOST_LEN: usize = 253;
