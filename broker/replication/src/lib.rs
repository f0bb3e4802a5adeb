//! Replicated partitions: Kafka's ISR replication protocol, pull-based,
//! as pure state machines, and the seeded deterministic simulator that
//! checks them (tracker issue 17). No I/O, no async, no clock, no
//! randomness in the protocol: a [`Replica`] (one broker's replica of one
//! partition) and the [`Controller`] (the partitions' registrations) take
//! events with the time they happen at and answer with actions; the
//! server's partition layer and metadata quorum will carry the actions out
//! (see "Wiring" below).
//!
//! # What each part follows
//!
//! Written from the published specifications, read for this crate:
//! Vanlightly/kafka-tlaplus `kafka_data_replication/kraft/kip-966`
//! (`kafka_replication_kip_966.tla`, `kip_966_functions.tla`,
//! `kip_966_properties.tla` and `description/*.md`) and
//! hachikuji/kafka-specification (`Kip101.tla`, `Kip279.tla`,
//! `Kip320.tla`, `KafkaTruncateToHighWatermark.tla`).
//! - [`EpochCache`], [`truncation_point`]: `LastOffsetForEpoch`,
//!   `FindTruncatePoint`; `description/3_log_divergence.md` §3.2-3.3
//!   (KIP-101, KIP-279, KIP-320's diverging epoch in the fetch response).
//! - [`Replica`]: `ReceiveMetadataUpdate` and its sub-actions (§2.10),
//!   `ReceiveFetchRequest`/`ReceiveFetchResponse` (§2.2, §3.2), the high
//!   watermark (`GetCommitOffset`, `CanAdvanceHwm`: the Maximal ISR counted,
//!   only while the ISR is at least MinISR, §2.7, §6.5.2), ISR changes
//!   (`SendAlterPartitionRequest`, `FollowerIsCaughtUp`: the local HWM, the
//!   Leader Epoch Start Offset and a fetch in this epoch, §6.5.3-6.5.4;
//!   `ReceiveAlterPartitionResponse`, §2.9.2), produce and acks
//!   (`WriteRecordToLeader`, `MaybeFailPendingWrites`, §2.5-2.6), reads
//!   only below a high watermark known true (§6.4.2).
//! - [`Controller`]: `HandleBrokerFenced`, `HandleBrokerUnfenced`,
//!   `MaybeUpdatePartitionOnBrokerChange`, `UpdateElr` (KIP-966's ELR,
//!   §2.8-2.9.1, `5_recovery.md` §5.2), `ReceiveBrokerRegRequest` and
//!   `ProcessUncleanBroker` (Unclean Exclusion, §6.5.1),
//!   `ReceiveAlterPartitionRequest` and `ValidateAlterPartitionRequest`
//!   (partition epoch compare-and-set, KIP-903 broker epochs, §6.3).
//! - The simulator's checks (`sim::checker`): `kip_966_properties.tla`'s
//!   LeaderCompleteness, LeaderCandidateCompleteness, ConsistentRead,
//!   NoCommittedRecordLostGlobally, and Log Matching (§6.6); at most one
//!   leader per epoch; offsets contiguous.
//!
//! # The fsync decision: replicated topics are durable before ack
//!
//! A topic with more than one replica is always fsync-before-ack, on every
//! replica (the log's `FsyncPolicy` must be "every write" for it; interval
//! and never are refused for replicated topics). In the protocol:
//! - the leader counts its own *durable* end, not its log end, in the high
//!   watermark; acks=1 answers when the leader has the batch durable;
//! - a follower appends what it fetched, fsyncs ([`Action::Sync`]), and
//!   only then fetches again: its fetch offset, the number the leader
//!   counts, is its durable end.
//!
//! So every offset below any high watermark is durable on every member of
//! the Maximal ISR at that time, hence (the Replication Quorum Superset
//! property, §6.5.2) on every member of the controller's ISR and ELR. A
//! crash takes only a replica's unsynced tail, which no high watermark
//! covered; a replica that lost it is never the only holder of a committed
//! record, so it cannot become a leader the others truncate committed data
//! to. That is why a restarted broker registers as clean (presenting the
//! last broker epoch it recorded, written durably at registration) and
//! stays in the ELR: KIP-966's unclean-recovery machinery for asynchronous
//! storage is not needed. The controller still treats a restart without a
//! recorded epoch (a new or wiped disk), or with one older than its last
//! registration that served, as unclean and takes it out of every ELR.
//! The simulator checks exactly this: crashes there lose everything
//! unsynced, and with `Flaw::FollowerAcksBeforeFsync` (fetch offset =
//! unsynced log end) it catches an ISR member whose disk, after a crash,
//! lacks committed records.
//!
//! # Wiring (for the server)
//!
//! Per replica: feed [`Event::Metadata`] from each applied metadata image
//! (a partition's registration), [`Event::Fetch`]/[`Event::FetchAnswer`]
//! from the fetch sessions, [`Event::AlterPartitionAnswer`] from the
//! controller link, [`Event::Produce`] from the service, [`Event::Durable`]
//! from the log's flusher, [`Event::Tick`] from a timer. Carry out the
//! [`Action`]s in order; [`Action::TruncateTo`] and
//! [`Action::WriteEpochCheckpoint`] must be durable before the next
//! action. The controller's rules are commands of the metadata state
//! machine: broker-cluster's image runs the per-partition functions
//! ([`new_partition`], [`on_fenced`], [`on_unfenced`],
//! [`on_unclean_restart`], [`restart_is_clean`], [`alter_partition`],
//! [`elect_preferred_leader`]) over its own brokers through a
//! [`BrokerView`], the same functions the [`Controller`] runs over its
//! records, so the simulator checks what the quorum decides. The simulator (`sim`, feature `sim`) is a complete driver.
//!
//! Module map:
//! - `ids.rs`: the newtypes. `limits.rs`: every bound.
//! - `epoch_cache.rs`: [`EpochCache`], [`truncation_point`].
//! - `message.rs`: fetch, AlterPartition, partition state, produce.
//! - `replica.rs`: [`Replica`], [`next_high_watermark`].
//! - `controller.rs`: [`Controller`], [`update_elr`].
//! - `flaw.rs` (tests and `sim` only): `Flaw`, the deliberate flaws.
//! - `sim/` (tests and `sim` only): the simulator, its network, its checker,
//!   its scenarios.
#![forbid(unsafe_code)]

mod controller;
mod epoch_cache;
#[cfg(any(test, feature = "sim"))]
mod flaw;
mod ids;
pub mod limits;
mod message;
mod replica;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use controller::{
    alter_partition, begin_reassignment, complete_reassignment, elect_preferred_leader,
    new_partition, next_clean_floor, on_fenced, on_unclean_restart, on_unfenced, restart_is_clean,
    update_elr, BrokerRecord, BrokerView, Controller, ControllerConfig, ControllerError,
    PartitionRegistration, Transition,
};
pub use epoch_cache::{truncation_point, EpochCache, EpochCacheError, EpochEnd, EpochEntry};
#[cfg(any(test, feature = "sim"))]
pub use flaw::Flaw;
pub use ids::{
    BrokerEpoch, BrokerId, LeaderEpoch, Millis, Offset, PartitionEpoch, PartitionId, ProduceId,
};
pub use message::{
    Acks, AlterPartitionError, AlterPartitionRequest, AlterPartitionResponse, BatchMeta,
    FetchError, FetchRequest, FetchResponse, IsrMember, PartitionState, ProduceError,
    ProduceRequest,
};
pub use replica::{
    next_high_watermark, Action, Event, ReadError, ReaderView, Recovered, RecoveryError, Replica,
    ReplicaConfig, RoleKind,
};
