//! The cluster's metadata as a pure state machine, the one a Raft quorum
//! of controllers replicates (as Kafka's KRaft does, KIP-500 and KIP-631):
//! which brokers exist, their epochs and whether they may serve, which
//! topics exist, their settings, and which broker and shard own each
//! partition. No I/O, no clock, no threads, no randomness: every replica
//! that applies the same commands to the same image gets the same image
//! and the same answers.
//!
//! The protocol (KIP-631's broker lifecycle, with shards):
//! - A broker process draws a random incarnation at start and registers
//!   ([`MetadataCommand::RegisterBroker`]). A new incarnation gets a new
//!   [`BrokerEpoch`], unique over the cluster's life, and starts fenced; the
//!   same incarnation registering again (a retry) gets its epoch back. The
//!   leader does not propose a new incarnation while the current one is
//!   alive ([`SessionTracker::check_registration`]), so two processes given
//!   one id cannot take it from each other in turn.
//! - The active controller tracks heartbeats ([`SessionTracker`]). A fenced
//!   broker that heartbeats with its current epoch and has applied the
//!   image up to its own registration is unfenced
//!   ([`MetadataCommand::UnfenceBroker`]); an unfenced broker silent for
//!   longer than the session timeout is fenced
//!   ([`MetadataCommand::FenceBroker`]). A controlled shutdown
//!   ([`MetadataCommand::ShutdownBroker`]) fences at once, for good for
//!   that incarnation. Every broker command carries the epoch: a stale one
//!   is refused, so a zombie process cannot change a live broker's state.
//! - Topics are placed on the unfenced brokers, then on their shards
//!   ([`placement`]), each partition's `replication_factor` replicas on
//!   distinct brokers (more than one only on brokers fsyncing every
//!   write). Each partition has a replication registration
//!   ([`PartitionReplicas`]: leader, leader and partition epochs, ISR,
//!   ELR) that only broker-replication's functions change, run at apply
//!   time when brokers are fenced, unfenced, shut down or register (clean
//!   or not, by the epoch they present), and by
//!   [`MetadataCommand::AlterPartition`] and
//!   [`MetadataCommand::ElectPreferredLeaders`]. A partition is served by
//!   its leader; with none it is reported unavailable
//!   ([`MetadataImage::partition_owner`]).
//! - A topic creation carries the client request's id: its retry after a
//!   controller failover is answered with the placement instead of
//!   TopicAlreadyExists.
//!
//! Not here yet, on purpose: reassigning replicas, unregistering a broker, feature levels for
//! rolling upgrades (Kafka's `metadata.version`; unknown JSON fields are
//! ignored when a command or snapshot is read), and Kafka's refusal of
//! names that collide once '.' and '_' are equated.
//!
//! Module map:
//! - `ids.rs`: the newtypes, Kafka node ids of (broker, shard).
//! - `limits.rs`: every bound, with its reason.
//! - `registration.rs`: [`BrokerRegistration`], [`Listener`], their checks.
//! - `replicas.rs`: [`PartitionReplicas`], [`IsrMember`], the bridge to
//!   broker-replication.
//! - `image.rs`: [`MetadataImage`], its records, the queries, its invariants.
//! - `command.rs`: [`MetadataCommand`], [`MetadataImage::apply`].
//! - `placement.rs`: the placement rule (pure).
//! - `session.rs`: [`SessionTracker`], the leader's liveness view.
//! - `snapshot.rs`: the image as versioned JSON bytes.
//! - `error.rs`: [`ClusterError`], [`SnapshotError`].
#![forbid(unsafe_code)]

mod command;
mod error;
mod ids;
mod image;
pub mod limits;
pub mod placement;
mod registration;
mod replicas;
mod session;
mod snapshot;

#[cfg(test)]
mod tests;

pub use broker_replication::limits::MAX_REPLICAS;
pub use broker_replication::AlterPartitionError;
pub use command::{validate_topic_name, AlterPartition, CommandResult, MetadataCommand, Outcome};
pub use error::{ClusterError, SnapshotError};
pub use ids::{
    from_kafka_node_id, kafka_node_id, BrokerEpoch, BrokerId, Incarnation, RequestId, ShardIndex,
    KAFKA_NODE_IDS_PER_BROKER,
};
pub use image::{
    BrokerRecord, BrokerState, BrokerStatus, ClusterStatus, MetadataImage, TopicConfig,
    TopicRecord, OFFSETS_TOPIC,
};
pub use placement::Placement;
pub use registration::{BrokerRegistration, Listener};
pub use replicas::{IsrMember, PartitionReplicas};
pub use session::{HeartbeatAnswer, SessionTracker};
pub use snapshot::SNAPSHOT_FORMAT_VERSION;
