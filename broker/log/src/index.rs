//! Sparse indexes of one segment, kept in memory and written to the
//! segment's `.index` and `.timeindex` files when the segment is sealed or the
//! log closes. Pure logic: no I/O here.
//!
//! - Offset index: (offset relative to the segment base, file position of the
//!   batch that starts there), one entry per `index_interval_bytes` of log.
//! - Time index: (max timestamp so far, relative offset, position), an entry
//!   whenever the running max timestamp grows at an index point.
//!
//! The `.index` file also carries a checkpoint: the segment length, next
//! offset and max timestamp at the moment it was written. Everything before
//! that length was durable then, so recovery validates only what follows.
//! Both files end with a CRC-32C; a file that fails it is stale and rebuilt.

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Offset of the batch's first record, minus the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest record timestamp seen up to and including this batch.
    pub max_timestamp: i64,
    /// Offset of the batch's first record, minus the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// What a segment's `.index` file records besides its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bytes of the segment that were valid and durable when written.
    pub valid_len: u64,
    /// The offset after the last record in those bytes.
    pub next_offset: u64,
    /// The largest record timestamp in those bytes (i64::MIN when empty).
    pub max_timestamp: i64,
}

/// The in-memory indexes of one segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentIndex {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    bytes_since_entry: u64,
}

const INDEX_MAGIC: &[u8; 4] = b"BIX1";
const TIME_MAGIC: &[u8; 4] = b"BTX1";
const INDEX_HEADER: usize = 4 + 8 + 8 + 8 + 4;
const TIME_HEADER: usize = 4 + 4;

impl SegmentIndex {
    /// Notes a batch appended at `position` covering relative offsets from
    /// `relative_offset`, `len` bytes long, with the batch's max timestamp.
    /// `running_max` is the segment's max timestamp before this batch.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        len: u32,
        batch_max_timestamp: i64,
        running_max: i64,
        interval: u32,
    ) {
        // The first batch needs no entry: a lookup falls back to position 0.
        if self.bytes_since_entry < u64::from(interval) {
            self.bytes_since_entry += u64::from(len);
            return;
        }
        self.offsets.push(OffsetEntry {
            relative_offset,
            position,
        });
        self.bytes_since_entry = 0;
        // Time entries share the offset index's cadence and record the
        // running max including this batch, so every batch up to and
        // including `position` has a timestamp <= the entry's.
        let new_max = running_max.max(batch_max_timestamp);
        if self.times.last().is_none_or(|t| new_max > t.max_timestamp) {
            self.times.push(TimeEntry {
                max_timestamp: new_max,
                relative_offset,
                position,
            });
        }
        self.bytes_since_entry += u64::from(len);
    }

    /// The position to start scanning from to find `relative_offset`: the
    /// last entry at or before it, else the segment start.
    pub fn lookup(&self, relative_offset: u32) -> OffsetEntry {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.offsets[i - 1]
        }
    }

    /// The position to start scanning from to find the first record with a
    /// timestamp >= `ts`: every batch before the returned position has a max
    /// timestamp below `ts`.
    pub fn lookup_time(&self, ts: i64) -> OffsetEntry {
        // Entries are increasing in max_timestamp. The last entry with a
        // max below ts bounds everything before it; its batch itself may
        // not contain ts, but scanning from it is correct and cheap.
        let i = self.times.partition_point(|e| e.max_timestamp < ts);
        if i == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            let e = self.times[i - 1];
            OffsetEntry {
                relative_offset: e.relative_offset,
                position: e.position,
            }
        }
    }

    /// The last time-index entry of a batch before `relative_offset`: its
    /// max timestamp is the segment's running max up to and including that
    /// batch (a truncation scans from there for the max below its cut).
    pub fn last_time_before(&self, relative_offset: u32) -> Option<TimeEntry> {
        let i = self
            .times
            .partition_point(|e| e.relative_offset < relative_offset);
        i.checked_sub(1).map(|i| self.times[i])
    }

    /// Drops entries at or after `position` (after a truncation).
    pub fn truncate_to(&mut self, position: u32) {
        self.offsets.retain(|e| e.position < position);
        self.times.retain(|e| e.position < position);
        // Conservative: the next batch after a truncation gets no entry until
        // a full interval has passed again.
        self.bytes_since_entry = 0;
    }

    /// Number of offset-index entries.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when there is no offset-index entry.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Serialises the offset index with its checkpoint.
    pub fn encode_offsets(&self, cp: Checkpoint) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER + self.offsets.len() * 8 + 4);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&cp.valid_len.to_be_bytes());
        out.extend_from_slice(&cp.next_offset.to_be_bytes());
        out.extend_from_slice(&cp.max_timestamp.to_be_bytes());
        out.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for e in &self.offsets {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Serialises the time index.
    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TIME_HEADER + self.times.len() * 16 + 4);
        out.extend_from_slice(TIME_MAGIC);
        out.extend_from_slice(&(self.times.len() as u32).to_be_bytes());
        for e in &self.times {
            out.extend_from_slice(&e.max_timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses an `.index` and a `.timeindex` file. `None` when either is
    /// damaged, inconsistent, or describes more bytes than `file_len`: the
    /// caller rebuilds by scanning.
    pub fn decode(index: &[u8], times: &[u8], file_len: u64) -> Option<(SegmentIndex, Checkpoint)> {
        let index = check_crc(index)?;
        if index.len() < INDEX_HEADER || &index[..4] != INDEX_MAGIC {
            return None;
        }
        let cp = Checkpoint {
            valid_len: be_u64(&index[4..12]),
            next_offset: be_u64(&index[12..20]),
            max_timestamp: be_u64(&index[20..28]) as i64,
        };
        if cp.valid_len > file_len {
            return None;
        }
        let n = be_u32(&index[28..32]) as usize;
        let body = &index[INDEX_HEADER..];
        if body.len() != n.checked_mul(8)? {
            return None;
        }
        let offsets: Vec<OffsetEntry> = body
            .chunks_exact(8)
            .map(|c| OffsetEntry {
                relative_offset: be_u32(&c[..4]),
                position: be_u32(&c[4..]),
            })
            .collect();
        let times = check_crc(times)?;
        if times.len() < TIME_HEADER || &times[..4] != TIME_MAGIC {
            return None;
        }
        let m = be_u32(&times[4..8]) as usize;
        let body = &times[TIME_HEADER..];
        if body.len() != m.checked_mul(16)? {
            return None;
        }
        let times: Vec<TimeEntry> = body
            .chunks_exact(16)
            .map(|c| TimeEntry {
                max_timestamp: be_u64(&c[..8]) as i64,
                relative_offset: be_u32(&c[8..12]),
                position: be_u32(&c[12..16]),
            })
            .collect();
        let sorted = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && times
                .windows(2)
                .all(|w| w[0].max_timestamp < w[1].max_timestamp && w[0].position < w[1].position);
        let inside = offsets.iter().all(|e| u64::from(e.position) < cp.valid_len)
            && times.iter().all(|e| u64::from(e.position) < cp.valid_len);
        if !sorted || !inside {
            return None;
        }
        let last = offsets.last().map_or(0, |e| e.position);
        Some((
            SegmentIndex {
                offsets,
                times,
                bytes_since_entry: cp.valid_len - u64::from(last),
            },
            cp,
        ))
    }
}

fn check_crc(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.len().checked_sub(4)?;
    let (body, crc) = bytes.split_at(split);
    (crc32c::crc32c(body) == be_u32(crc)).then_some(body)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        let mut max = i64::MIN;
        for i in 0..100u32 {
            let ts = 1000 + i64::from(i % 7) * 10 + i64::from(i);
            idx.on_batch(i * 10, i * 1000, 1000, ts, max, 4096);
            max = max.max(ts);
        }
        idx
    }

    #[test]
    fn lookup_finds_last_entry_at_or_before() {
        let idx = sample();
        assert!(!idx.is_empty());
        assert_eq!(idx.lookup(0).position, 0);
        for target in [0u32, 5, 49, 50, 51, 500, 999] {
            let e = idx.lookup(target);
            assert!(e.relative_offset <= target);
            // No later entry is also at or before the target.
            assert!(idx
                .offsets
                .iter()
                .all(|x| x.relative_offset <= e.relative_offset || x.relative_offset > target));
        }
    }

    #[test]
    fn entries_are_one_per_interval() {
        let idx = sample();
        // 100 batches of 1000 bytes with a 4096-byte interval: an entry every 5th batch.
        assert_eq!(idx.len(), 19);
        assert!(idx
            .offsets
            .windows(2)
            .all(|w| w[1].position - w[0].position >= 4096));
    }

    #[test]
    fn files_round_trip_and_detect_damage() {
        let idx = sample();
        let cp = Checkpoint {
            valid_len: 100_000,
            next_offset: 1000,
            max_timestamp: 1300,
        };
        let a = idx.encode_offsets(cp);
        let b = idx.encode_times();
        let (back, cp2) = SegmentIndex::decode(&a, &b, 100_000).expect("decodes");
        assert_eq!(cp2, cp);
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        // A file shorter than the checkpoint says makes the index stale.
        assert!(SegmentIndex::decode(&a, &b, 99_999).is_none());
        for i in 0..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 0x40;
            assert!(
                SegmentIndex::decode(&bad, &b, 100_000).is_none(),
                "flip at {i}"
            );
        }
        for cut in 0..b.len() {
            assert!(SegmentIndex::decode(&a, &b[..cut], 100_000).is_none());
        }
    }

    #[test]
    fn time_lookup_bounds_earlier_batches() {
        let idx = sample();
        for ts in [0i64, 1000, 1050, 1100, 1200, 5000] {
            let e = idx.lookup_time(ts);
            // Every time entry before the returned position has a max below ts.
            for t in &idx.times {
                if t.position < e.position {
                    assert!(t.max_timestamp < ts);
                }
            }
        }
    }

    #[test]
    fn truncate_drops_entries_at_or_after() {
        let mut idx = sample();
        idx.truncate_to(50_000);
        assert!(idx.offsets.iter().all(|e| e.position < 50_000));
        assert!(idx.times.iter().all(|e| e.position < 50_000));
    }
}
