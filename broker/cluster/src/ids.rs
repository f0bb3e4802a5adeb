//! The numbers of the cluster's metadata, each its own type: broker ids,
//! broker epochs, incarnations, shard indexes, request ids, and the
//! mapping of (broker, shard) to a Kafka node id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_BROKER_ID, MAX_SHARDS_PER_BROKER};

/// A broker's id, chosen by its operator (configuration), stable across
/// restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerId(pub u32);

/// The epoch the controller gave one registration of a broker (one
/// incarnation). Unique over the cluster's life: never given twice, to the
/// same broker or another, so a request carrying an old epoch is always
/// recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerEpoch(pub u64);

/// One start of a broker process: random, drawn by the process when it
/// starts. A registration with the incarnation already on record is a
/// retry; another incarnation is a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub u128);

/// A shard of a broker: `0..shards` of its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardIndex(pub u16);

/// Identifies one client request across retries (drawn at random by the
/// broker that received it), so that a request retried after a controller
/// failover takes effect once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u128);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for BrokerEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ShardIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Kafka node ids per broker: shard `s` of broker `b` is Kafka node
/// `b * KAFKA_NODE_IDS_PER_BROKER + s`, so that a Kafka client, which
/// knows nodes and not shards, can address each shard.
pub const KAFKA_NODE_IDS_PER_BROKER: u32 = MAX_SHARDS_PER_BROKER as u32;

/// The Kafka node id of `shard` of `broker`; None if the broker id is above
/// [`MAX_BROKER_ID`] or the shard is not below
/// [`MAX_SHARDS_PER_BROKER`] (registration refuses both).
pub fn kafka_node_id(broker: BrokerId, shard: ShardIndex) -> Option<i32> {
    if broker.0 > MAX_BROKER_ID || shard.0 >= MAX_SHARDS_PER_BROKER {
        return None;
    }
    i32::try_from(broker.0 * KAFKA_NODE_IDS_PER_BROKER + u32::from(shard.0)).ok()
}

/// The broker and shard of a Kafka node id; None for a negative id (Kafka's
/// "no node") or one above the range of [`kafka_node_id`].
pub fn from_kafka_node_id(node: i32) -> Option<(BrokerId, ShardIndex)> {
    let node = u32::try_from(node).ok()?;
    let broker = node / KAFKA_NODE_IDS_PER_BROKER;
    let shard = u16::try_from(node % KAFKA_NODE_IDS_PER_BROKER).ok()?;
    (broker <= MAX_BROKER_ID).then_some((BrokerId(broker), ShardIndex(shard)))
}
