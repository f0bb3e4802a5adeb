//! Why a command is refused or a query has no answer ([`ClusterError`]),
//! and why a snapshot cannot be loaded ([`SnapshotError`]). A refused
//! command leaves the image exactly as it was.

use crate::ids::{BrokerEpoch, BrokerId};

/// Why the metadata refuses a command, or cannot answer a query. Every
/// replica computes the same error for the same command on the same image,
/// so it is an answer, not a failure of the replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// A cluster id must be 1 to 64 ASCII letters, digits, '-' or '_'.
    #[error("invalid cluster id: {reason}")]
    InvalidClusterId {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A broker id above [`crate::limits::MAX_BROKER_ID`]: its Kafka node
    /// ids would not fit an i32.
    #[error(
        "broker id {id} is above {}: its Kafka node ids would not fit an i32",
        crate::limits::MAX_BROKER_ID
    )]
    BrokerIdOutOfRange {
        /// The id asked for.
        id: BrokerId,
    },
    /// A shard count outside `1..=`[`crate::limits::MAX_SHARDS_PER_BROKER`].
    #[error(
        "{shards} shards: a broker runs 1 to {}",
        crate::limits::MAX_SHARDS_PER_BROKER
    )]
    ShardCountOutOfRange {
        /// The count asked for.
        shards: u16,
    },
    /// A listener's address is not a usable `host:port`, or a shard's port
    /// is 0.
    #[error("the {listener} listener's address {addr:?}: {reason}")]
    InvalidEndpoint {
        /// "native" or "kafka".
        listener: &'static str,
        /// The address (cut to a bounded length), or the shard.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A listener does not have exactly one port per shard.
    #[error("the {listener} listener has {given} shard ports for {shards} shards")]
    ShardPortCount {
        /// "native" or "kafka".
        listener: &'static str,
        /// Ports given.
        given: usize,
        /// The registration's shard count.
        shards: u16,
    },
    /// The incarnation on record registered again with other contents: a
    /// process cannot change its shards or listeners without restarting
    /// (a new incarnation).
    #[error(
        "broker {id} registered again with the same incarnation but other shards or listeners"
    )]
    IncarnationConflict {
        /// The broker.
        id: BrokerId,
    },
    /// Another incarnation of this broker id is alive (its session has not
    /// expired): the registration is not proposed. Retry once it has
    /// expired; a second process configured with the same id keeps
    /// getting this.
    #[error("broker {id} is registered by another live incarnation")]
    DuplicateBrokerRegistration {
        /// The broker.
        id: BrokerId,
    },
    /// Every broker epoch has been given out (2^64 registrations).
    #[error("no broker epoch is left to give")]
    EpochsExhausted,
    /// No broker with this id has ever registered.
    #[error("broker {id} is not registered")]
    UnknownBroker {
        /// The broker.
        id: BrokerId,
    },
    /// The request carries an epoch that is not the broker's current one:
    /// it comes from an earlier incarnation (or a confused one) and is
    /// refused, so a zombie process cannot change the broker's state.
    #[error("broker {id}: epoch {given} is stale, the current one is {current}")]
    StaleBrokerEpoch {
        /// The broker.
        id: BrokerId,
        /// The epoch the request carried.
        given: BrokerEpoch,
        /// The broker's current epoch.
        current: BrokerEpoch,
    },
    /// The broker's current incarnation went through a controlled
    /// shutdown; only a new incarnation (a registration) can serve again.
    #[error("broker {id} has shut down: it must register again to be unfenced")]
    BrokerShutDown {
        /// The broker.
        id: BrokerId,
    },
    /// A topic name outside Kafka's rules.
    #[error("invalid topic name: {reason}")]
    InvalidTopicName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A partition count outside `1..=`[`crate::limits::MAX_PARTITIONS_PER_TOPIC`].
    #[error(
        "{partitions} partitions: a topic has 1 to {}",
        crate::limits::MAX_PARTITIONS_PER_TOPIC
    )]
    InvalidPartitionCount {
        /// The count asked for.
        partitions: u32,
    },
    /// The topic exists and this request did not create it (another
    /// request id, or other partitions or settings).
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists {
        /// The topic.
        name: String,
    },
    /// No broker is unfenced, so no partition can be placed.
    #[error("no unfenced broker to place partitions on")]
    NoUnfencedBroker,
    /// No topic has this name.
    #[error("unknown topic {name:?}")]
    UnknownTopic {
        /// The name asked for (cut to a bounded length).
        name: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic:?} has {partitions} partitions, not partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// The partition has no leader (its only replica's broker, or every
    /// in-sync and eligible replica's, is fenced): nobody serves it until
    /// one is unfenced. `broker` is its leader if fenced, else its
    /// preferred replica.
    #[error(
        "partition {partition} of {topic:?} is unavailable: no leader (broker {broker} is fenced)"
    )]
    Unavailable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The fenced broker that owns it.
        broker: BrokerId,
    },
    /// A replication factor the cluster cannot honour (Kafka's
    /// INVALID_REPLICATION_FACTOR): 0, above
    /// [`broker_replication::limits::MAX_REPLICAS`], or above the number of
    /// brokers that can take a replica now (registered, unfenced, and for
    /// more than one replica, fsyncing every write).
    #[error("replication factor {replication_factor}: {reason} ({registered} brokers registered, {eligible} can take a replica now)")]
    InvalidReplicationFactor {
        /// The factor asked for.
        replication_factor: u16,
        /// Brokers registered.
        registered: usize,
        /// Brokers that can take a replica.
        eligible: usize,
        /// Why.
        reason: &'static str,
    },
    /// `min.insync.replicas` of 0 or above the replication factor.
    #[error("min.insync.replicas {min_insync_replicas} must be 1 to the replication factor {replication_factor}")]
    InvalidMinInsyncReplicas {
        /// The setting asked for.
        min_insync_replicas: u16,
        /// The topic's replication factor.
        replication_factor: u16,
    },
    /// A replicated topic (more than one replica) needs brokers that fsync
    /// every write before acknowledging it (the fsync decision, see
    /// broker-replication): too few unfenced brokers run with
    /// `--fsync always`.
    #[error("a topic with {replication_factor} replicas needs as many brokers that fsync every write (--fsync always); {durable} of the unfenced brokers do")]
    ReplicationNeedsFsync {
        /// The factor asked for.
        replication_factor: u16,
        /// Unfenced brokers fsyncing every write.
        durable: usize,
    },
    /// An AlterPartition the registration refused (compare-and-set on the
    /// partition epoch, the leader's and the members' broker epochs,
    /// KIP-903), with the typed reason.
    #[error("AlterPartition of partition {partition} of {topic:?} refused: {reason:?}")]
    AlterPartitionRefused {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why (broker-replication's reasons).
        reason: broker_replication::AlterPartitionError,
    },
    /// A reassignment the partition cannot take: an empty target,
    /// duplicates, a broker that is not registered, too many replicas
    /// during the move, a target below `min.insync.replicas`, or another
    /// reassignment of the partition in progress.
    #[error("reassigning partition {partition} of {topic:?}: {reason}")]
    InvalidReassignment {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
}

/// Why a snapshot cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a snapshot's JSON, or the image in it breaks an
    /// invariant (serde_json's message says which).
    #[error("snapshot: {0}")]
    Decode(#[from] serde_json::Error),
    /// A snapshot written by another version of the format.
    #[error("snapshot format version {found}, this build reads version {supported}")]
    UnknownFormatVersion {
        /// The snapshot's version.
        found: u64,
        /// The one this build reads.
        supported: u32,
    },
    /// A snapshot of another cluster.
    #[error("snapshot of cluster {found:?}, expected {expected:?}")]
    WrongCluster {
        /// The cluster this replica belongs to.
        expected: String,
        /// The snapshot's.
        found: String,
    },
}
