//! The leader-epoch cache of one partition (Kafka's `LeaderEpochFileCache`
//! and its `leader-epoch-checkpoint` file): which leader epoch each range
//! of offsets was written in, as (epoch, start offset) entries. Pure: no
//! I/O here; the log persists it (`replica.rs`) and rebuilds it at open
//! (`recovery.rs`).
//!
//! Rules (KIP-101, KIP-279; Kafka's `LeaderEpochFileCache`):
//! - [`LeaderEpochs::assign`] records that `epoch` starts at `offset`. An
//!   entry with the same epoch as the latest is not added again; one that
//!   breaks monotonicity removes the later entries it conflicts with (an
//!   entry whose epoch is at or above the new one, or whose start offset is
//!   at or above it), as Kafka does, so entries stay strictly increasing in
//!   both epoch and start offset. The log itself refuses to append a batch
//!   whose epoch is below the latest (`Log::append_replica`): only recovery
//!   ever assigns out of order.
//! - [`LeaderEpochs::end_offset_for`] answers OffsetsForLeaderEpoch: the
//!   largest epoch at or below the one asked and the start offset of the
//!   next higher epoch, or the log end offset if it is the latest; `None`
//!   (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET) for epoch -1, for an empty
//!   cache, or above every epoch known. Below every known epoch it answers
//!   the epoch asked with the first entry's start offset, as Kafka does (the
//!   data before it was deleted: the follower restarts from there).
//! - [`LeaderEpochs::truncate_from_end`] removes entries starting at or
//!   after an offset (suffix truncation); [`LeaderEpochs::truncate_from_start`]
//!   removes the entries wholly below a new log start offset and moves the
//!   one covering it to start there.
//!
//! The file is Kafka's text format: a version line (`0`), an entry count,
//! then one `epoch start_offset` line per entry. [`LeaderEpochs::decode`]
//! accepts only a file that is exactly that with entries strictly
//! increasing in both columns; anything else is treated as missing.
//!
//! Invariants: entries are strictly increasing in epoch and in start
//! offset; every epoch is >= 0 (batches with epoch -1, Kafka's
//! NO_PARTITION_LEADER_EPOCH, are not recorded).

/// The checkpoint file's name in the partition's directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// The batch header's partition leader epoch of a batch no leader stamped
/// (Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH`): never recorded.
pub const NO_EPOCH: i32 = -1;

/// Most entries a checkpoint file may hold before it is refused as garbage:
/// one per leader change that wrote data, and retention drops old ones.
const MAX_ENTRIES: usize = 1 << 20;

/// One entry: `epoch` starts at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch (>= 0).
    pub epoch: i32,
    /// The first offset written in it.
    pub start_offset: u64,
}

/// The answer to OffsetsForLeaderEpoch for a defined epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked (or the one asked, when
    /// it is below every epoch the log still has).
    pub epoch: i32,
    /// Where that epoch ends: the start offset of the next higher epoch, or
    /// the log end offset if it is the latest.
    pub end_offset: u64,
}

/// The (epoch, start offset) entries of one partition, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochs {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest entry.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`);
    /// returns true when the entries changed. An epoch below 0 is ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && start_offset >= last.start_offset {
                return false;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Removes every entry starting at or after `end_offset`; returns true
    /// when any was removed.
    pub fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Removes every entry starting after `end_offset` (an entry exactly at
    /// it stays: a leader's epoch that has no batch yet); returns true when
    /// any was removed.
    pub fn truncate_after(&mut self, end_offset: u64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset <= end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops the entries wholly below the new log start offset `start` and
    /// moves the one covering `start` to begin there (Kafka's
    /// `truncateFromStart`); returns true when the entries changed.
    pub fn truncate_from_start(&mut self, start: u64) -> bool {
        let covered = self.entries.partition_point(|e| e.start_offset <= start);
        if covered == 0 {
            return false;
        }
        let last_below = self.entries[covered - 1];
        if covered == 1 && last_below.start_offset == start {
            return false;
        }
        self.entries.drain(..covered - 1);
        self.entries[0].start_offset = start;
        true
    }

    /// OffsetsForLeaderEpoch (see the module's rules): `None` is Kafka's
    /// (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: u64) -> Option<EpochEnd> {
        if requested < 0 {
            return None;
        }
        let last = self.entries.last()?;
        if last.epoch == requested {
            return Some(EpochEnd {
                epoch: requested,
                end_offset: log_end_offset,
            });
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let next = self.entries.get(higher)?;
        Some(match higher.checked_sub(1) {
            Some(floor) => EpochEnd {
                epoch: self.entries[floor].epoch,
                end_offset: next.start_offset,
            },
            None => EpochEnd {
                epoch: requested,
                end_offset: next.start_offset,
            },
        })
    }

    /// The checkpoint file's bytes (Kafka's text format).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out.into_bytes()
    }

    /// Parses a checkpoint file; `None` when it is not exactly a version-0
    /// file whose entries are strictly increasing in both columns.
    pub fn decode(bytes: &[u8]) -> Option<LeaderEpochs> {
        let text = std::str::from_utf8(bytes).ok()?;
        let body = text.strip_suffix('\n')?;
        let mut lines = body.split('\n');
        if lines.next()? != "0" {
            return None;
        }
        let count: usize = lines.next()?.parse().ok()?;
        if count > MAX_ENTRIES {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for line in lines {
            let (epoch, start) = line.split_once(' ')?;
            let entry = EpochEntry {
                epoch: epoch.parse().ok().filter(|&e: &i32| e >= 0)?,
                start_offset: start.parse().ok()?,
            };
            if let Some(prev) = entries.last() {
                let EpochEntry {
                    epoch,
                    start_offset,
                } = *prev;
                if entry.epoch <= epoch || entry.start_offset <= start_offset {
                    return None;
                }
            }
            if entries.len() == count {
                return None;
            }
            entries.push(entry);
        }
        (entries.len() == count).then_some(LeaderEpochs { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochs {
        let mut c = LeaderEpochs::default();
        for &(e, s) in entries {
            assert!(c.assign(e, s));
        }
        c
    }

    fn pairs(c: &LeaderEpochs) -> Vec<(i32, u64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_entries_strictly_increasing() {
        let mut c = cache(&[(0, 0), (2, 10), (5, 30)]);
        assert!(!c.assign(5, 40), "same epoch later: nothing new");
        assert!(!c.assign(-1, 50), "no epoch: not recorded");
        assert!(c.assign(6, 30), "an empty epoch is replaced");
        assert_eq!(pairs(&c), vec![(0, 0), (2, 10), (6, 30)]);
        assert!(
            c.assign(3, 20),
            "out of order: later conflicting entries go"
        );
        assert_eq!(pairs(&c), vec![(0, 0), (2, 10), (3, 20)]);
    }

    #[test]
    fn end_offset_follows_kafka_offsets_for_leader_epoch() {
        let c = cache(&[(1, 5), (3, 20), (4, 40)]);
        let end = |epoch, end_offset| Some(EpochEnd { epoch, end_offset });
        assert_eq!(c.end_offset_for(4, 55), end(4, 55), "latest: the log end");
        assert_eq!(c.end_offset_for(3, 55), end(3, 40));
        assert_eq!(c.end_offset_for(2, 55), end(1, 20), "between: the floor");
        assert_eq!(c.end_offset_for(1, 55), end(1, 20));
        assert_eq!(c.end_offset_for(0, 55), end(0, 5), "below all: first start");
        assert_eq!(c.end_offset_for(9, 55), None, "above all: undefined");
        assert_eq!(c.end_offset_for(-1, 55), None);
        assert_eq!(LeaderEpochs::default().end_offset_for(0, 55), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 5), (3, 20), (4, 40)]);
        assert!(!c.truncate_from_end(41));
        assert!(c.truncate_from_end(40), "an entry at the cut goes");
        assert_eq!(pairs(&c), vec![(1, 5), (3, 20)]);
        assert!(!c.truncate_after(20), "an entry at the end stays");
        assert!(c.truncate_after(19));
        assert_eq!(pairs(&c), vec![(1, 5)]);

        let mut c = cache(&[(1, 5), (3, 20), (4, 40)]);
        assert!(!c.truncate_from_start(5));
        assert!(!c.truncate_from_start(3), "below every entry: nothing");
        assert!(c.truncate_from_start(25));
        assert_eq!(pairs(&c), vec![(3, 25), (4, 40)]);
        assert!(c.truncate_from_start(40));
        assert_eq!(pairs(&c), vec![(4, 40)]);
    }

    #[test]
    fn file_round_trips_and_refuses_anything_else() {
        let c = cache(&[(0, 0), (2, 17), (9, 1 << 40)]);
        let bytes = c.encode();
        assert_eq!(bytes, b"0\n3\n0 0\n2 17\n9 1099511627776\n");
        assert_eq!(LeaderEpochs::decode(&bytes), Some(c));
        assert_eq!(
            LeaderEpochs::decode(b"0\n0\n"),
            Some(LeaderEpochs::default())
        );
        for bad in [
            &b""[..],
            b"0\n",
            b"1\n0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n2\n1 5\n1 6\n",
            b"0\n2\n1 5\n2 5\n",
            b"0\n1\n-1 0\n",
            b"0\n1\n0 0",
            b"0\n1\n0  0\n",
            b"0\n99999999999\n",
        ] {
            assert_eq!(LeaderEpochs::decode(bad), None, "{:?}", bad);
        }
    }
}
