//! One segment: a `.log` file of record batches, named by its 20-digit base
//! offset, with its in-memory sparse indexes; and the chunked scan over a
//! segment's batches that recovery, index rebuilds and time lookups share.
//!
//! Invariant: batches in a segment are contiguous, the first one starts at
//! the base offset, and each starts where the previous one ended (offsets
//! and bytes).

use std::{
    ops::ControlFlow,
    path::{Path, PathBuf},
    rc::Rc,
    time::Instant,
};

use broker_format::BatchHeader;

use super::{
    error::LogError,
    index::{Checkpoint, SegmentIndex},
    io::{align_down, SegmentFile},
};

/// File name stem of a segment: its base offset, 20 digits, zero padded.
pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Paths of a segment's `.log`, `.index` and `.timeindex` files.
pub fn paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf, PathBuf) {
    let stem = file_stem(base_offset);
    (
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    )
}

/// Parses a segment file name stem back into its base offset.
pub fn parse_stem(stem: &str) -> Option<u64> {
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// A segment of the log.
pub struct Segment {
    /// Offset of the first record.
    pub base_offset: u64,
    /// The `.log` file.
    pub file: Rc<SegmentFile>,
    /// Bytes of batches appended (including those not yet acknowledged).
    pub len: u64,
    /// The offset after the last appended record.
    pub next_offset: u64,
    /// Largest record timestamp appended (i64::MIN when empty).
    pub max_timestamp: i64,
    /// Sparse offset and time indexes.
    pub index: SegmentIndex,
    /// When this segment became active (for rolling by age).
    pub opened_at: Instant,
}

impl Segment {
    /// Records a batch appended at the current end.
    pub fn on_append(&mut self, header: &BatchHeader, len: usize, interval: u32) {
        let rel = (self.next_offset - self.base_offset) as u32;
        self.index.on_batch(
            rel,
            self.len as u32,
            len as u32,
            header.max_timestamp,
            self.max_timestamp,
            interval,
        );
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.len += len as u64;
        self.next_offset += u64::from(header.record_count());
    }

    /// The checkpoint to store with the index: valid as of `len` bytes.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            valid_len: self.len,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
        }
    }

    /// True when the segment has no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Size of each read while scanning a segment.
const SCAN_CHUNK: usize = 1 << 20;

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every batch up to the limit was visited.
    Complete,
    /// The visitor asked to stop at this batch position.
    Stopped(u64),
    /// Bytes at this position are not a whole, well-formed batch header (a
    /// torn or garbage tail); the reason says what was wrong.
    Malformed(u64, String),
}

/// Visits each batch in `file` from `start` (a batch boundary) up to
/// `limit` bytes, reading in large aligned chunks. The visitor gets the
/// batch's position, parsed header and whole bytes. Only header-level checks
/// are made here; the visitor validates what it needs (CRC, continuity).
pub async fn scan_batches(
    file: &SegmentFile,
    start: u64,
    limit: u64,
    mut visit: impl FnMut(u64, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> Result<ScanEnd, LogError> {
    let mut pos = start;
    while pos < limit {
        let read_pos = align_down(pos);
        let want = ((limit - read_pos) as usize).min(SCAN_CHUNK);
        let chunk = file
            .read(read_pos, super::io::align_up(want as u64) as usize)
            .await?;
        let avail_end = (read_pos + chunk.len() as u64).min(limit);
        let mut progressed = false;
        loop {
            if pos >= limit {
                return Ok(ScanEnd::Complete);
            }
            let at = (pos - read_pos) as usize;
            let here = &chunk[at..(avail_end - read_pos) as usize];
            let Some(total) = broker_format::peek_total_len(here) else {
                if here.len() < broker_format::LENGTH_FIELDS_LEN && avail_end < limit && progressed
                {
                    break; // the header continues in the next chunk
                }
                return Ok(ScanEnd::Malformed(pos, describe(here, limit - pos)));
            };
            if pos + total as u64 > limit {
                return Ok(ScanEnd::Malformed(
                    pos,
                    format!(
                        "batch of {total} bytes runs past the end ({} bytes left)",
                        limit - pos
                    ),
                ));
            }
            if here.len() < total {
                if chunk.len() < want && avail_end < limit {
                    return Ok(ScanEnd::Malformed(pos, "file shorter than expected".into()));
                }
                if progressed {
                    break; // re-read from this batch
                }
                // One batch larger than a chunk: read exactly it.
                let big = file
                    .read(read_pos, super::io::align_up((at + total) as u64) as usize)
                    .await?;
                if big.len() < at + total {
                    return Ok(ScanEnd::Malformed(pos, "file shorter than expected".into()));
                }
                let bytes = &big[at..at + total];
                let header = match BatchHeader::parse(bytes) {
                    Ok(h) => h,
                    Err(e) => return Ok(ScanEnd::Malformed(pos, e.to_string())),
                };
                if visit(pos, &header, bytes).is_break() {
                    return Ok(ScanEnd::Stopped(pos));
                }
                pos += total as u64;
                break;
            }
            let bytes = &here[..total];
            let header = match BatchHeader::parse(bytes) {
                Ok(h) => h,
                Err(e) => return Ok(ScanEnd::Malformed(pos, e.to_string())),
            };
            if visit(pos, &header, bytes).is_break() {
                return Ok(ScanEnd::Stopped(pos));
            }
            pos += total as u64;
            progressed = true;
        }
        glommio::yield_if_needed().await;
    }
    Ok(ScanEnd::Complete)
}

fn describe(here: &[u8], left: u64) -> String {
    if here.len() < broker_format::LENGTH_FIELDS_LEN {
        format!("{left} trailing bytes are too few for a batch header")
    } else if here.iter().take(broker_format::HEADER_LEN).all(|&b| b == 0) {
        "zeros where a batch header should be (unwritten or padding)".into()
    } else {
        "batch length field out of range".into()
    }
}
