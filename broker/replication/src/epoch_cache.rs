//! The leader-epoch cache of one replica: for each leader epoch that wrote
//! data to this log, the offset of its first record (Kafka's
//! `LeaderEpochFileCache`, KIP-101). It answers "end offset for leader
//! epoch" (OffsetsForLeaderEpoch, and the diverging-epoch check of
//! KIP-320's fetch) and is cut back when the log is truncated.
//!
//! Follows kafka-tlaplus `kip_966_functions.tla` `LastOffsetForEpoch` and
//! `description/3_log_divergence.md` §3.2: the lookup for epoch `e` returns
//! the highest epoch `<= e` in the log with the start offset of the next
//! higher epoch as its (exclusive) end; for the log's last epoch (or the
//! leader's current epoch) the end is the log end; with no epoch `<= e` it
//! returns `e` itself with the start offset of the lowest epoch.
//!
//! Invariants (asserted): epochs strictly increase along the entries,
//! start offsets never decrease, the first entry's start offset is at or
//! past the log start (0 here: retention is not replicated yet).
//!
//! The cache is durable state: every change is handed to the driver as an
//! [`crate::Action::WriteEpochCheckpoint`], which writes it (fsynced, a
//! small file) before the data it describes becomes durable; on recovery
//! the driver hands the checkpoint back and [`EpochCache::truncate_to`]
//! cuts off entries past the recovered log end.

use crate::ids::{LeaderEpoch, Offset};
use crate::limits::MAX_EPOCH_ENTRIES;

/// One entry: `epoch` wrote the records from `start_offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// The offset of its first record.
    pub start_offset: Offset,
}

/// The answer of an end-offset-for-epoch lookup (Kafka's
/// `EpochEndOffset`): the epoch found and the exclusive end of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The highest epoch `<=` the one asked about (or that one, if none).
    pub epoch: LeaderEpoch,
    /// The exclusive end offset of that epoch's records in this log.
    pub end_offset: Offset,
}

/// Why the cache refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpochCacheError {
    /// The epoch is older than the latest, or starts before it.
    #[error("leader epoch out of order")]
    OutOfOrder,
    /// [`MAX_EPOCH_ENTRIES`] reached.
    #[error("leader-epoch cache full")]
    Full,
}

/// The cache: entries in increasing epoch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// An empty cache (an empty log).
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    /// A cache from a checkpoint, cut back to `log_end`. Returns `None` if
    /// the checkpoint breaks the invariants (a corrupt file).
    pub fn from_checkpoint(entries: &[EpochEntry], log_end: Offset) -> Option<EpochCache> {
        let mut cache = EpochCache::new();
        for e in entries {
            if !cache.may_assign(e.epoch, e.start_offset) {
                return None;
            }
            cache.entries.push(*e);
        }
        cache.truncate_to(log_end);
        Some(cache)
    }

    /// The entries, for the checkpoint.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The epoch of the log's last record, `None` for an empty log.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.epoch)
    }

    fn may_assign(&self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        match self.entries.last() {
            None => true,
            Some(last) => epoch > last.epoch && start_offset >= last.start_offset,
        }
    }

    /// Records that records of `epoch` start at `start_offset` (an append
    /// of a batch of a new epoch). A batch of the latest epoch changes
    /// nothing. Returns whether the cache changed; refuses (returns
    /// `Err`) an epoch older than the latest, or a full cache.
    pub fn assign(
        &mut self,
        epoch: LeaderEpoch,
        start_offset: Offset,
    ) -> Result<bool, EpochCacheError> {
        if self.latest_epoch() == Some(epoch) {
            return Ok(false);
        }
        if !self.may_assign(epoch, start_offset) {
            return Err(EpochCacheError::OutOfOrder);
        }
        if self.entries.len() >= MAX_EPOCH_ENTRIES {
            return Err(EpochCacheError::Full);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(true)
    }

    /// Cuts the cache back to a log truncated to `end` (exclusive): entries
    /// starting at or past `end` go. Returns whether it changed.
    pub fn truncate_to(&mut self, end: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        self.entries.len() != before
    }

    /// End offset for leader epoch `epoch` in a log ending at `log_end`.
    /// `current_leader_epoch` is `Some` on the leader: its own epoch counts
    /// as the latest even before it appended anything (`LastOffsetForEpoch`
    /// with `is_leader`).
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> EpochEnd {
        let at_end = EpochEnd {
            epoch,
            end_offset: log_end,
        };
        if self.entries.is_empty()
            || self.latest_epoch() == Some(epoch)
            || current_leader_epoch == Some(epoch)
        {
            return at_end;
        }
        // The start of the lowest epoch above `epoch`: the end of `epoch`'s
        // floor. On the leader its current epoch is above every entry.
        let higher_start = self
            .entries
            .iter()
            .find(|e| e.epoch > epoch)
            .map(|e| e.start_offset)
            .or_else(|| match current_leader_epoch {
                Some(current) if current > epoch => Some(log_end),
                _ => None,
            });
        let Some(end_offset) = higher_start else {
            // `epoch` is above every epoch here and this is not the leader
            // of a higher one: all of this log is at or below it.
            let floor = self.latest_epoch().unwrap_or(epoch);
            return EpochEnd {
                epoch: floor,
                end_offset: log_end,
            };
        };
        let floor = self.entries.iter().rev().find(|e| e.epoch <= epoch);
        EpochEnd {
            epoch: floor.map_or(epoch, |e| e.epoch),
            end_offset,
        }
    }
}

/// The follower's truncation point for a diverging epoch the leader sent
/// (kafka-tlaplus `FindTruncatePoint`; KIP-320): look up the diverging
/// epoch locally; if this log has that very epoch, truncate to the smaller
/// of the two ends, else to the local end of the floor epoch (a later
/// fetch narrows it further if needed).
pub fn truncation_point(local: &EpochCache, log_end: Offset, diverging: EpochEnd) -> Offset {
    let mine = local.end_offset_for(diverging.epoch, log_end, None);
    let point = if mine.epoch != diverging.epoch {
        mine.end_offset
    } else {
        mine.end_offset.min(diverging.end_offset)
    };
    point.min(log_end)
}

#[cfg(test)]
mod tests;
