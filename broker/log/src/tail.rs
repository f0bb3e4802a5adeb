//! The aligned write buffer of the active segment ("tail"), and the cache of
//! recently written buffers that serves reads of fresh data from memory.
//!
//! A tail is sealed one of two ways. `Whole`: everything, the partial last
//! block zero-padded; the next tail starts at that block with a copy of its
//! valid bytes, so the next write rewrites it and must not be in flight at
//! the same time as this one. `AtBlock`: only the whole blocks; the partial
//! last block (the beginning of a batch, possibly more) is carried unwritten
//! into the next tail, so this write and the next cover disjoint blocks and
//! may be in flight together. The batch that straddles the cut is
//! acknowledged by the next write.
//!
//! Invariants:
//! - A tail buffer starts at a block-aligned file position. Its first bytes
//!   may be a copy of the previous buffer's partial last block.
//! - Record bytes are copied once, from the caller into the tail; the base
//!   offset is then assigned in place. Nothing copies them again: the tail is
//!   sealed (never mutated after) and written, then kept for reads. (Up to
//!   one block is copied into the next tail at a seal.) The base offset and
//!   the partition leader epoch are the only header fields written in place.
//! - Bytes of a sealed `Whole` buffer past its valid length up to the block
//!   boundary are zeros, so a crash never leaves stale bytes that could pass
//!   for a batch; an `AtBlock` buffer ends inside a batch, which recovery
//!   sees as a torn tail if nothing follows it.
//! - A sealed buffer's acknowledgement point (`end_pos`, `end_offset`) is a
//!   batch boundary below which every byte is written once this buffer and
//!   the ones before it are.

use std::rc::Rc;

use glommio::io::DmaBuffer;

use super::io::{align_down, align_up, SegmentFile, BLOCK};

/// Smallest tail buffer: small partitions should not pin much memory.
const TAIL_MIN_BYTES: usize = 16 << 10;

/// A batch boundary: a file position and the offset that starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Boundary {
    pos: u64,
    offset: u64,
}

/// How to seal a tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Everything, the partial last block zero-padded (rewritten by the next write).
    Whole,
    /// Only the whole blocks; the partial last block moves to the next tail unwritten.
    AtBlock,
}

/// The buffer that appends land in.
pub struct Tail {
    buf: DmaBuffer,
    /// File position of `buf[0]`, block-aligned.
    file_pos: u64,
    /// Valid bytes in `buf`.
    len: usize,
    /// Bytes of `buf` already written by the previous buffer's write (the
    /// carried partial block of a `Whole` seal); 0 when the carry is unwritten.
    written_len: usize,
    /// The offset after the last record in this buffer.
    end_offset: u64,
    /// First batch boundary in `buf` not covered by an earlier buffer's
    /// whole batches, and its offset.
    first_batch_at: usize,
    first_offset: u64,
    /// The last batch boundary at or below the last block boundary of `buf`
    /// (or, when the carry was written, the end of the carry): where an
    /// `AtBlock` seal acknowledges up to.
    below_cut: Boundary,
    /// The first batch boundary at or above the last block boundary.
    above_cut: Boundary,
}

/// A sealed tail, ready to be written and then kept for reads.
#[derive(Clone)]
pub struct Sealed {
    /// The bytes, a whole number of blocks.
    pub buf: Rc<DmaBuffer>,
    /// File position of `buf[0]`.
    pub file_pos: u64,
    /// File position after the last batch that is whole once this buffer
    /// (and the ones before it) are written: the acknowledgement point.
    pub end_pos: u64,
    /// The offset after that batch.
    pub end_offset: u64,
    /// Index in `buf` of the first batch it holds whole (after the carried
    /// partial block, which holds only the end of earlier batches).
    pub first_batch_at: usize,
    /// Offset of that first batch.
    pub first_offset: u64,
    /// The first block of `buf` is also written by the previous buffer: this
    /// write must not be in flight together with that one.
    pub shares_first_block: bool,
}

impl Tail {
    /// An empty tail at the aligned position `file_pos` carrying the partial
    /// block `carry` (the bytes from `file_pos` to the log end), which is
    /// already on disk or in a write that precedes this buffer's.
    pub fn new(
        file: &SegmentFile,
        file_pos: u64,
        carry: &[u8],
        end_offset: u64,
        capacity: usize,
    ) -> Tail {
        let end = Boundary {
            pos: file_pos + carry.len() as u64,
            offset: end_offset,
        };
        let mut t = Tail::with_carry(file, file_pos, carry, end_offset, end, end, capacity);
        t.written_len = carry.len();
        t
    }

    /// A tail at `file_pos` with an unwritten `carry` that ends at
    /// `end_offset`; `below`/`above` are the batch boundaries around `file_pos`.
    fn with_carry(
        file: &SegmentFile,
        file_pos: u64,
        carry: &[u8],
        end_offset: u64,
        below: Boundary,
        above: Boundary,
        capacity: usize,
    ) -> Tail {
        // Once per write cycle; the buffer is written at `file_pos` with
        // O_DIRECT, and its acknowledgement point comes from the boundaries.
        assert_eq!(file_pos % BLOCK, 0, "a tail must start at a block boundary");
        assert!(
            (carry.len() as u64) < BLOCK,
            "the carried partial block must be shorter than a block"
        );
        assert!(
            below.pos <= file_pos + carry.len() as u64,
            "the acknowledgement boundary lies past the carried bytes"
        );
        assert!(
            file_pos <= above.pos && above.pos <= file_pos + carry.len() as u64,
            "the first whole batch of a tail must start inside its carried block"
        );
        let cap = align_up(capacity.max(TAIL_MIN_BYTES).max(carry.len() + 1) as u64) as usize;
        let mut buf = file.alloc(cap);
        buf.as_bytes_mut()[..carry.len()].copy_from_slice(carry);
        Tail {
            buf,
            file_pos,
            len: carry.len(),
            written_len: 0,
            end_offset,
            first_batch_at: (above.pos - file_pos) as usize,
            first_offset: above.offset,
            below_cut: below,
            above_cut: above,
        }
    }

    /// File position just past the last valid byte.
    pub fn end_pos(&self) -> u64 {
        self.file_pos + self.len as u64
    }

    /// True when `n` more bytes fit.
    pub fn fits(&self, n: usize) -> bool {
        self.buf.len() - self.len >= n
    }

    /// True when the buffer holds bytes not yet written.
    pub fn has_unwritten(&self) -> bool {
        self.len > self.written_len
    }

    /// True when the first block is also written by the previous buffer's write.
    pub fn shares_first_block(&self) -> bool {
        self.written_len > 0
    }

    /// Unwritten bytes an [`Cut::AtBlock`] seal would write (0: it cannot).
    pub fn unwritten_below_cut(&self) -> usize {
        (align_down(self.len as u64) as usize).saturating_sub(self.written_len)
    }

    /// Copies one batch in and sets its base offset and partition leader
    /// epoch in place (both outside the CRC). The caller has checked
    /// [`Tail::fits`].
    #[inline]
    pub fn append(&mut self, batch: &[u8], base_offset: u64, next_offset: u64, leader_epoch: i32) {
        assert!(
            self.fits(batch.len()),
            "tail overflow: the caller must seal first"
        );
        let start = self.len;
        let dst = &mut self.buf.as_bytes_mut()[start..start + batch.len()];
        dst.copy_from_slice(batch);
        broker_format::set_base_offset(dst, base_offset as i64);
        broker_format::set_partition_leader_epoch(dst, leader_epoch);
        self.len += batch.len();
        self.end_offset = next_offset;
        // Keep the boundaries around the last block boundary current.
        let cut = align_down(self.len as u64) as usize;
        let (s, e) = (self.file_pos + start as u64, self.end_pos());
        let end = Boundary {
            pos: e,
            offset: next_offset,
        };
        if self.len == cut {
            self.below_cut = end;
            self.above_cut = end;
        } else if start <= cut {
            self.below_cut = Boundary {
                pos: s,
                offset: base_offset,
            };
            self.above_cut = end;
        }
    }

    /// Seals this buffer for writing (`how`: see [`Cut`]; `AtBlock` needs
    /// [`Tail::unwritten_below_cut`] > 0) and returns it with the tail that
    /// continues it, sized for at least `next_capacity` bytes.
    pub fn seal(mut self, file: &SegmentFile, next_capacity: usize, how: Cut) -> (Sealed, Tail) {
        let shares_first_block = self.shares_first_block();
        let cut = align_down(self.len as u64) as usize;
        let (sealed_len, end, next) = match how {
            Cut::Whole => {
                let padded = align_up(self.len as u64) as usize;
                self.buf.as_bytes_mut()[self.len..padded].fill(0);
                let next = Tail::new(
                    file,
                    self.file_pos + cut as u64,
                    &self.buf.as_bytes()[cut..self.len],
                    self.end_offset,
                    next_capacity,
                );
                let end = Boundary {
                    pos: self.end_pos(),
                    offset: self.end_offset,
                };
                (padded, end, next)
            }
            Cut::AtBlock => {
                assert!(
                    self.unwritten_below_cut() > 0,
                    "an AtBlock seal needs a whole unwritten block"
                );
                let next = Tail::with_carry(
                    file,
                    self.file_pos + cut as u64,
                    &self.buf.as_bytes()[cut..self.len],
                    self.end_offset,
                    self.below_cut,
                    self.above_cut,
                    next_capacity,
                );
                (cut, self.below_cut, next)
            }
        };
        self.buf.trim_to_size(sealed_len);
        (
            Sealed {
                buf: Rc::new(self.buf),
                file_pos: self.file_pos,
                end_pos: end.pos,
                end_offset: end.offset,
                first_batch_at: self.first_batch_at,
                first_offset: self.first_offset,
                shares_first_block,
            },
            next,
        )
    }

    /// Bytes gathered since the last seal; used to size the next buffer.
    pub fn unwritten_len(&self) -> usize {
        self.len - self.written_len
    }
}

/// Whole batches in a cached buffer: `buf[start..end]`.
pub struct CachedRange {
    /// The written buffer.
    pub buf: Rc<DmaBuffer>,
    /// A batch boundary.
    pub start: usize,
    /// The end of the valid bytes (a batch boundary).
    pub end: usize,
    /// The offset after the last record in `buf[..end]`.
    pub end_offset: u64,
}

/// Written buffers kept to serve reads of recent data without a disk read.
#[derive(Default)]
pub struct ReadCache {
    entries: std::collections::VecDeque<(u64, Sealed)>,
    bytes: usize,
}

impl ReadCache {
    /// Remembers a written buffer of the segment with base `segment`; evicts
    /// the oldest beyond `budget_bytes` of buffer capacity.
    pub fn push(&mut self, segment: u64, sealed: Sealed, budget_bytes: usize) {
        if sealed.end_offset <= sealed.first_offset {
            // No whole batch in it (one batch spans it): nothing to serve.
            return;
        }
        self.bytes += sealed.buf.len();
        self.entries.push_back((segment, sealed));
        while self.bytes > budget_bytes {
            match self.entries.pop_front() {
                Some((_, old)) => self.bytes -= old.buf.len(),
                None => break,
            }
        }
    }

    /// The cached buffer of `segment` in which the batch holding `offset`
    /// was appended: the buffer and the first batch boundary in it at or
    /// before that batch, its valid length and the offset it ends at.
    pub fn find(&self, segment: u64, offset: u64) -> Option<CachedRange> {
        self.entries.iter().rev().find_map(|(seg, s)| {
            (*seg == segment && s.first_offset <= offset && offset < s.end_offset).then(|| {
                CachedRange {
                    buf: s.buf.clone(),
                    start: s.first_batch_at,
                    end: (s.end_pos - s.file_pos) as usize,
                    end_offset: s.end_offset,
                }
            })
        })
    }

    /// Forgets everything (after the log was reset to an earlier point).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Forgets the buffers of the segments with these base offsets.
    pub fn forget_segment(&mut self, segment: u64) {
        self.entries.retain(|(seg, _)| *seg != segment);
        self.bytes = self.entries.iter().map(|(_, s)| s.buf.len()).sum();
    }
}
