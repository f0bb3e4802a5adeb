//! What brokers (and `broker cluster status`) ask the controllers, and
//! what they answer: JSON messages carried by the quorum's client frames
//! (`broker_quorum::client`), on each controller's quorum address.
//!
//! Requests that change or depend on the leader's state (registration,
//! heartbeats, topic commands, shutdown, AlterPartition, elections) are answered only by the leader;
//! any other controller answers [`Response::NotLeader`] naming it. Reads of
//! the image and the status are answered by any controller from what it has
//! applied (never ahead of what is committed).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use broker_cluster::{
    AlterPartition, BrokerEpoch, BrokerId, BrokerRegistration, ClusterStatus, MetadataImage,
    RequestId, TopicConfig,
};

use crate::machine::Applied;

/// A request to a controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A broker process starts (or retries): answered with
    /// [`Response::Applied`] holding its epoch; `BadRequest` if it belongs
    /// to another cluster.
    Register {
        /// What the broker registers.
        registration: BrokerRegistration,
        /// The cluster it believes it joins.
        cluster_id: String,
    },
    /// A broker is alive, with its epoch, having applied the image up to
    /// `applied_version`.
    Heartbeat {
        /// The broker.
        id: BrokerId,
        /// Its epoch.
        epoch: BrokerEpoch,
        /// The image version it has applied.
        applied_version: u64,
    },
    /// A controlled shutdown: the broker is fenced at once.
    Shutdown {
        /// The broker.
        id: BrokerId,
        /// Its epoch.
        epoch: BrokerEpoch,
    },
    /// Create a topic, placed over the unfenced brokers.
    CreateTopic {
        /// Its name.
        name: String,
        /// Its partition count.
        partitions: u32,
        /// Its settings, defaults resolved by the asking broker.
        config: TopicConfig,
        /// The client request's id (a retry takes effect once).
        request_id: RequestId,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Its name.
        name: String,
    },
    /// A partition leader's ISR change, a compare-and-set on the partition
    /// epoch (KIP-497's AlterPartition, KIP-903's broker epochs): answered
    /// with [`Response::Applied`] holding `Done::PartitionAltered`, or
    /// refused with its typed reason (`RefusalKind::FencedLeaderEpoch`,
    /// `InvalidUpdateVersion`, `IneligibleReplica`, `UnknownPartition`,
    /// `Invalid`).
    AlterPartition(AlterPartition),
    /// Preferred-leader elections over `topic` (every topic: None):
    /// answered with `Done::LeadersElected`.
    ElectPreferredLeaders {
        /// The topic, or every one.
        topic: Option<String>,
    },
    /// Moves a partition's replicas (KIP-455's reassignment, begun):
    /// answered with `Done::PartitionAltered` (the registration, the
    /// target in it until the move completes).
    ReassignPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas it moves to, in preference order.
        replicas: Vec<BrokerId>,
    },
    /// The image, if this controller has applied one newer than
    /// `since_version`.
    FetchImage {
        /// The version the asker has.
        since_version: u64,
    },
    /// The quorum's and the cluster's state, as this controller sees them.
    Status,
}

/// A controller's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Ask the leader instead: its id and address, if this controller knows
    /// one.
    NotLeader {
        /// The leader, if known.
        leader: Option<(u64, SocketAddr)>,
    },
    /// The quorum could not decide now (no quorum, a timeout, shutting
    /// down): retry. After a timeout the command may still take effect.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The command was applied (or refused by the image).
    Applied(Applied),
    /// The answer to a heartbeat.
    Heartbeat {
        /// Where the broker stands.
        state: BrokerStanding,
        /// The image version the leader has applied: fetch the image when
        /// it is newer than yours.
        version: u64,
    },
    /// The image asked for; None when it is not newer than the asker's.
    Image(Option<Box<MetadataImage>>),
    /// The status asked for.
    Status(Box<ControllerStatus>),
    /// The request could not be decoded or is not allowed.
    BadRequest {
        /// Why.
        reason: String,
    },
}

/// A broker's standing, answered to its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerStanding {
    /// It may serve.
    Unfenced,
    /// Fenced until it has applied the image up to its registration.
    CatchingUp {
        /// The version it must reach.
        registered_at_version: u64,
    },
    /// Fenced; its unfencing was proposed and did not commit (yet).
    Fenced,
    /// This incarnation shut down: it never serves again.
    ShutDown,
    /// Its epoch is not the current one: another incarnation of the id
    /// registered since. This process must stop serving.
    StaleEpoch {
        /// The current epoch.
        current: BrokerEpoch,
    },
    /// Not registered: register (again).
    UnknownBroker,
}

/// What `broker cluster status` shows of one controller's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// The controller answering.
    pub node_id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// The last log index it has applied.
    pub last_applied: Option<u64>,
    /// The voters and their addresses.
    pub voters: Vec<(u64, SocketAddr)>,
    /// The cluster as its image says.
    pub cluster: ClusterStatus,
}
