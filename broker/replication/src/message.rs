//! What replicas, the controller and the driver exchange: the fetch
//! request and response of pull replication (with KIP-320's diverging
//! epoch), AlterPartition (KIP-497, with KIP-903's broker epochs), the
//! partition state a broker sees in the metadata, produce requests and
//! their errors. Plain data: the codec of the wire is the server's.

use std::collections::BTreeSet;

use crate::epoch_cache::EpochEnd;
use crate::ids::{
    BrokerEpoch, BrokerId, LeaderEpoch, Offset, PartitionEpoch, PartitionId, ProduceId,
};

/// A partition's registration as a broker sees it in the metadata image
/// (Kafka's PartitionRecord/PartitionChangeRecord, materialised; the ELR
/// is the controller's only, kafka-tlaplus `2_replication_algorithm.md`
/// §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: PartitionId,
    /// Its replicas, in preference order, on distinct brokers.
    pub replicas: Vec<BrokerId>,
    /// The leader, if one is elected.
    pub leader: Option<BrokerId>,
    /// The leader's term.
    pub leader_epoch: LeaderEpoch,
    /// The registration's version.
    pub partition_epoch: PartitionEpoch,
    /// The in-sync replicas.
    pub isr: BTreeSet<BrokerId>,
}

/// A batch as replication sees it: its offsets and its leader epoch. The
/// bytes travel beside it, with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record (inclusive).
    pub last_offset: Offset,
    /// The leader epoch stamped in it (PartitionLeaderEpoch).
    pub epoch: LeaderEpoch,
}

impl BatchMeta {
    /// The offset after it.
    pub fn end(&self) -> Offset {
        self.last_offset.plus(1)
    }
}

/// A follower's fetch for one partition (one partition of a broker pair's
/// fetch session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The partition.
    pub partition: PartitionId,
    /// The follower's broker.
    pub replica: BrokerId,
    /// Its broker epoch (the leader passes it on in an ISR expansion).
    pub replica_epoch: BrokerEpoch,
    /// The leader epoch the follower knows.
    pub leader_epoch: LeaderEpoch,
    /// Where to read from: the follower's log end, which is durable there.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last record (`None`: empty log).
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The follower's correlation id, echoed in the answer.
    pub fetch_id: u64,
}

/// Why a fetch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// The receiver is not the partition's leader (in any epoch it knows).
    NotLeaderOrFollower,
    /// The follower's leader epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The follower's leader epoch is newer than the leader's (its
    /// metadata is behind).
    UnknownLeaderEpoch,
    /// The follower is not a replica of the partition.
    UnknownReplica,
}

/// The leader's answer to a fetch. `batches` is filled by the driver from
/// the leader's log (see [`crate::Action::ServeFetch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The partition.
    pub partition: PartitionId,
    /// The leader's broker.
    pub leader: BrokerId,
    /// The request's leader epoch, echoed.
    pub leader_epoch: LeaderEpoch,
    /// The request's fetch id, echoed.
    pub fetch_id: u64,
    /// The request's fetch offset, echoed.
    pub fetch_offset: Offset,
    /// The request's broker epoch, echoed.
    pub replica_epoch: BrokerEpoch,
    /// Set when the fetch was refused.
    pub error: Option<FetchError>,
    /// Set when the follower's log diverges (KIP-320): truncate by it.
    pub diverging_epoch: Option<EpochEnd>,
    /// The leader's high watermark.
    pub high_watermark: Offset,
    /// Batches from `fetch_offset` on, contiguous.
    pub batches: Vec<BatchMeta>,
}

/// One member of a proposed ISR. The broker epoch is given for the leader
/// and every added member (KIP-903), `None` for members kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsrMember {
    /// The member.
    pub broker: BrokerId,
    /// Its broker epoch as the leader last saw it in a fetch.
    pub broker_epoch: Option<BrokerEpoch>,
}

/// The leader's proposal of a new ISR: a compare-and-set on the
/// partition epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The partition.
    pub partition: PartitionId,
    /// The proposing leader.
    pub leader: BrokerId,
    /// The leader's broker epoch.
    pub leader_broker_epoch: BrokerEpoch,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal starts from.
    pub partition_epoch: PartitionEpoch,
    /// The proposed ISR.
    pub new_isr: Vec<IsrMember>,
}

/// Why the controller refused an AlterPartition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterPartitionError {
    /// No such partition.
    UnknownPartition,
    /// The sender is not the leader of that epoch, or its broker epoch is
    /// not the current one.
    FencedLeaderEpoch,
    /// The partition epoch is not the current one (a concurrent change).
    InvalidUpdateVersion,
    /// A member is fenced, shutting down, or its broker epoch is stale
    /// (KIP-903).
    IneligibleReplica,
    /// The proposal is malformed: a member that is no replica, a leader
    /// outside it, an added member without its epoch.
    InvalidRequest,
}

/// The controller's answer to an AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionResponse {
    /// The partition.
    pub partition: PartitionId,
    /// The request's partition epoch, echoed for correlation.
    pub request_partition_epoch: PartitionEpoch,
    /// The new state, or why not.
    pub result: Result<PartitionState, AlterPartitionError>,
}

/// How durable a write must be before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// When the leader has it durable.
    Leader,
    /// When the high watermark has passed it (every ISR member durable).
    All,
}

/// A produce of `records` records (one batch) to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRequest {
    /// The driver's id, echoed.
    pub id: ProduceId,
    /// Records in the batch, at least 1.
    pub records: u32,
    /// The durability asked for.
    pub acks: Acks,
}

/// Why a produce failed. Only `NotEnoughReplicas`, `NotLeader` before an
/// append and `InvalidRequest` say the batch was not written; the others
/// are indeterminate: the batch may still become committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceError {
    /// This replica is not the leader (nothing written).
    NotLeader,
    /// acks=all with an ISR smaller than min.insync.replicas (nothing
    /// written).
    NotEnoughReplicas,
    /// Written, but the ISR fell below min.insync.replicas before the high
    /// watermark passed it (indeterminate).
    NotEnoughReplicasAfterAppend,
    /// Written, but leadership was lost before it was answered
    /// (indeterminate).
    LeadershipLost,
    /// Written, not answered within the produce timeout (indeterminate).
    TimedOut,
    /// Too many produces waiting (nothing written).
    Busy,
    /// Zero records (nothing written).
    InvalidRequest,
}
