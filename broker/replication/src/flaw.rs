//! Deliberate protocol flaws, for tests only: each one re-introduces a
//! bug that Kafka's replication protocol is designed against, and the
//! simulator's checker must catch every one within a bounded number of
//! seeds. Compiled only into tests and the `sim` feature; a production
//! build has no flaw switch at all.

/// One deliberate flaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A replica becoming a follower truncates its log to its local high
    /// watermark instead of by the diverging epoch (the pre-KIP-101 rule;
    /// hachikuji/kafka-specification `KafkaTruncateToHighWatermark.tla`).
    TruncateToHighWatermark,
    /// The controller elects any live replica, in the ISR or not.
    ElectOutsideIsr,
    /// A follower's fetch offset moves past data before it is durable, so
    /// the leader counts records a crash can still take away.
    FollowerAcksBeforeFsync,
    /// The leader advances the high watermark over its committed ISR only,
    /// not the union with a proposed one (kafka-tlaplus
    /// `6_replication_correctness.md` §6.5.2, the Maximal ISR).
    NoMaximalIsr,
}
