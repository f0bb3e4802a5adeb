//! The numbers of replication, each its own type: offsets, leader epochs,
//! partition epochs, broker ids and epochs, partition ids, produce ids and
//! the time the driver hands in.

use std::fmt;

/// A record's logical position in a partition's log. As an end ("log end",
/// "durable end", "high watermark") it is exclusive: the next offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

/// One leadership term of a partition (and one assignment of it). Stamped
/// in every batch the leader of that term appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub u32);

/// The version of a partition's registration at the controller: bumped by
/// every change, checked by every AlterPartition (compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionEpoch(pub u32);

/// A broker's id, stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(pub u32);

/// One registration (uptime session) of a broker, unique over the
/// cluster's life; a restart gets a new one (KIP-631, KIP-903).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub u64);

/// A partition, as the metadata numbers it (topic and index folded into
/// one id by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// The driver's id of one produce request, echoed in its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProduceId(pub u64);

/// Milliseconds on the driver's monotonic clock. The state machines never
/// read a clock: every event comes with the time it happens at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Offset {
    /// The offset `n` records further on.
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl LeaderEpoch {
    /// The next term.
    pub fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

impl PartitionEpoch {
    /// The next version.
    pub fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0 + 1)
    }
}

impl Millis {
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `ms` milliseconds later.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0 + ms)
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_inner!(
    Offset,
    LeaderEpoch,
    PartitionEpoch,
    BrokerId,
    BrokerEpoch,
    PartitionId,
    ProduceId,
    Millis
);
