//! The metadata image as the quorum's replicated state machine
//! ([`MetadataMachine`]), and what applying a command answers on the wire
//! ([`Applied`]).
//!
//! Everything here is deterministic: the image's `apply` decides, this
//! module only translates its answer into a form that crosses the network
//! (the version reached, and a refusal as a kind a broker maps to a client
//! error code plus the image's message).

use serde::{Deserialize, Serialize};

use broker_cluster::{
    AlterPartitionError, BrokerEpoch, ClusterError, MetadataCommand, MetadataImage, Outcome,
    PartitionReplicas, Placement,
};

/// The quorum's state: the cluster's metadata image.
pub struct MetadataMachine {
    image: MetadataImage,
}

impl MetadataMachine {
    /// The state of a new cluster, `image` (empty, with its cluster id).
    pub fn new(image: MetadataImage) -> MetadataMachine {
        MetadataMachine { image }
    }

    /// The image as applied so far.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }
}

impl broker_quorum::StateMachine for MetadataMachine {
    type Command = MetadataCommand;
    type Response = Applied;

    fn apply(&mut self, command: &MetadataCommand) -> Applied {
        let result = self.image.apply(command);
        Applied {
            version: self.image.version(),
            result: result.map(Done::from).map_err(|e| Refused::from(&e)),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.image.to_snapshot()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.image = MetadataImage::from_snapshot(bytes, self.image.cluster_id())
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What applying one command answered, and the image's version after it:
/// a broker that waits until it has applied that version sees the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The image's version once the command was applied.
    pub version: u64,
    /// What the command did, or why it was refused (the image unchanged).
    pub result: Result<Done, Refused>,
}

/// A command that took effect (or had already: a retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    /// A registration's epoch.
    Registered {
        /// The incarnation's epoch.
        epoch: BrokerEpoch,
    },
    /// A topic's placement: partition `p` on `placement[p]`.
    TopicCreated {
        /// Where each partition lives.
        placement: Vec<Placement>,
    },
    /// An accepted AlterPartition: the partition's registration now.
    PartitionAltered {
        /// Its registration.
        replicas: PartitionReplicas,
    },
    /// Preferred-leader elections: how many partitions changed leader.
    LeadersElected {
        /// The count.
        partitions: u32,
    },
    /// Any other command.
    Done,
}

impl From<Outcome> for Done {
    fn from(o: Outcome) -> Done {
        match o {
            Outcome::Registered { epoch } => Done::Registered { epoch },
            Outcome::TopicCreated { placement } => Done::TopicCreated { placement },
            Outcome::PartitionAltered { replicas } => Done::PartitionAltered { replicas },
            Outcome::LeadersElected { partitions } => Done::LeadersElected { partitions },
            Outcome::Done => Done::Done,
        }
    }
}

/// Why the metadata refused a command: what kind of refusal (which a
/// broker maps to its clients' error codes) and the image's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// The kind of refusal.
    pub kind: RefusalKind,
    /// What the image said.
    pub message: String,
}

/// The kinds of [`Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The command is malformed (a name, a count, an endpoint, an id).
    Invalid,
    /// The topic exists and this request did not create it.
    TopicExists,
    /// No such topic.
    UnknownTopic,
    /// No such partition.
    UnknownPartition,
    /// No such broker.
    UnknownBroker,
    /// The broker epoch is not the current one: a stale process.
    StaleBrokerEpoch,
    /// Another live incarnation holds the broker id.
    DuplicateBrokerRegistration,
    /// The broker's incarnation has shut down.
    BrokerShutDown,
    /// No unfenced broker can take partitions, or the owner is fenced.
    Unavailable,
    /// Kafka's INVALID_REPLICATION_FACTOR: more replicas than brokers that
    /// can take one (registered, unfenced, fsyncing every write for more
    /// than one), or a bad `min.insync.replicas`.
    InvalidReplicationFactor,
    /// AlterPartition from a leader that is not the current one (its leader
    /// epoch or broker epoch is stale): Kafka's FENCED_LEADER_EPOCH.
    FencedLeaderEpoch,
    /// AlterPartition from a stale partition epoch (the compare-and-set
    /// failed): Kafka's INVALID_UPDATE_VERSION.
    InvalidUpdateVersion,
    /// AlterPartition naming a fenced member, or one with a stale broker
    /// epoch (KIP-903): Kafka's INELIGIBLE_REPLICA.
    IneligibleReplica,
}

impl From<&ClusterError> for Refused {
    fn from(e: &ClusterError) -> Refused {
        use ClusterError as E;
        let kind = match e {
            E::TopicAlreadyExists { .. } => RefusalKind::TopicExists,
            E::UnknownTopic { .. } => RefusalKind::UnknownTopic,
            E::UnknownPartition { .. } => RefusalKind::UnknownPartition,
            E::UnknownBroker { .. } => RefusalKind::UnknownBroker,
            E::StaleBrokerEpoch { .. } => RefusalKind::StaleBrokerEpoch,
            E::DuplicateBrokerRegistration { .. } => RefusalKind::DuplicateBrokerRegistration,
            E::BrokerShutDown { .. } => RefusalKind::BrokerShutDown,
            E::NoUnfencedBroker | E::Unavailable { .. } | E::EpochsExhausted => {
                RefusalKind::Unavailable
            }
            E::InvalidReplicationFactor { .. }
            | E::InvalidMinInsyncReplicas { .. }
            | E::ReplicationNeedsFsync { .. } => RefusalKind::InvalidReplicationFactor,
            E::AlterPartitionRefused { reason, .. } => match reason {
                AlterPartitionError::FencedLeaderEpoch => RefusalKind::FencedLeaderEpoch,
                AlterPartitionError::InvalidUpdateVersion => RefusalKind::InvalidUpdateVersion,
                AlterPartitionError::IneligibleReplica => RefusalKind::IneligibleReplica,
                AlterPartitionError::UnknownPartition => RefusalKind::UnknownPartition,
                AlterPartitionError::InvalidRequest => RefusalKind::Invalid,
            },
            E::InvalidClusterId { .. }
            | E::InvalidReassignment { .. }
            | E::BrokerIdOutOfRange { .. }
            | E::ShardCountOutOfRange { .. }
            | E::InvalidEndpoint { .. }
            | E::ShardPortCount { .. }
            | E::IncarnationConflict { .. }
            | E::InvalidTopicName { .. }
            | E::InvalidPartitionCount { .. } => RefusalKind::Invalid,
        };
        Refused {
            kind,
            message: e.to_string(),
        }
    }
}
