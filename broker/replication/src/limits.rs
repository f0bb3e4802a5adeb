//! Every bound of replication, each with its reason, in one place. Input
//! beyond one (from a peer or the controller) is refused, never clamped.

/// Most replicas of one partition: Kafka allows more, but a replica set
/// beyond this is a configuration error here, and the leader keeps one
/// state per follower.
pub const MAX_REPLICAS: usize = 16;

/// Most produce requests a leader keeps waiting for the high watermark or
/// the disk; beyond it a produce is refused (`ProduceError::Busy`), so a
/// stalled ISR cannot grow the leader's memory without bound.
pub const MAX_PENDING_PRODUCES: usize = 4096;

/// Most batches one fetch response may carry; the leader's driver reads at
/// most this many, and a follower drops a response with more.
pub const MAX_FETCH_BATCHES: usize = 64;

/// Most entries of the leader-epoch cache. One entry per leadership term
/// that wrote data; beyond it an append in a new epoch is an invariant
/// violation of the driver's setup (compaction of old entries is not done
/// yet, as retention is not replicated yet).
pub const MAX_EPOCH_ENTRIES: usize = 65_536;
