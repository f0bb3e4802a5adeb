//! The aligned write buffer of the active segment ("tail"), and the cache of
//! recently written buffers that serves reads of fresh data from memory.
//!
//! Invariants:
//! - A tail buffer starts at a block-aligned file position. Its first bytes
//!   may be a copy of the previous buffer's partial last block: that block is
//!   rewritten whole by the next write (direct I/O writes whole blocks).
//! - Record bytes are copied once, from the caller into the tail; the base
//!   offset is then assigned in place. Nothing copies them again: the tail is
//!   sealed (never mutated after) and written, then kept for reads.
//! - Bytes of a sealed buffer past its valid length up to the block boundary
//!   are zeros, so a crash never leaves stale bytes that could pass for a batch.

use std::rc::Rc;

use glommio::io::DmaBuffer;

use super::io::{align_down, align_up, SegmentFile, BLOCK};

/// Smallest tail buffer: small partitions should not pin much memory.
const TAIL_MIN_BYTES: usize = 16 << 10;

/// The buffer that appends land in.
pub struct Tail {
    buf: DmaBuffer,
    /// File position of `buf[0]`, block-aligned.
    file_pos: u64,
    /// Valid bytes in `buf`.
    len: usize,
    /// Bytes of `buf` already on disk (the carried partial block).
    written_len: usize,
    /// The offset after the last record in this buffer.
    end_offset: u64,
    /// The offset of the first batch appended to this buffer.
    first_offset: u64,
}

/// A sealed tail, ready to be written and then kept for reads.
#[derive(Clone)]
pub struct Sealed {
    /// The bytes, trimmed to a whole number of blocks.
    pub buf: Rc<DmaBuffer>,
    /// File position of `buf[0]`.
    pub file_pos: u64,
    /// Valid bytes in `buf`.
    pub len: usize,
    /// The offset after the last record in `buf`.
    pub end_offset: u64,
    /// Index in `buf` of the first batch appended to it (after the carried
    /// partial block, which holds only the end of earlier batches).
    pub first_batch_at: usize,
    /// Offset of that first batch.
    pub first_offset: u64,
}

impl Tail {
    /// An empty tail at the aligned position `file_pos` (or one carrying the
    /// partial block `carry`, the bytes from `file_pos` to the log end).
    pub fn new(
        file: &SegmentFile,
        file_pos: u64,
        carry: &[u8],
        end_offset: u64,
        capacity: usize,
    ) -> Tail {
        debug_assert_eq!(file_pos % BLOCK, 0);
        debug_assert!((carry.len() as u64) < BLOCK);
        let cap = align_up(capacity.max(TAIL_MIN_BYTES).max(carry.len() + 1) as u64) as usize;
        let mut buf = file.alloc(cap);
        buf.as_bytes_mut()[..carry.len()].copy_from_slice(carry);
        Tail {
            buf,
            file_pos,
            len: carry.len(),
            written_len: carry.len(),
            end_offset,
            first_offset: end_offset,
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

    /// Copies one batch in and assigns its base offset in place. The caller
    /// has checked [`Tail::fits`].
    pub fn append(&mut self, batch: &[u8], base_offset: u64, next_offset: u64) {
        assert!(
            self.fits(batch.len()),
            "tail overflow: the caller must seal first"
        );
        let dst = &mut self.buf.as_bytes_mut()[self.len..self.len + batch.len()];
        dst.copy_from_slice(batch);
        crate::batch::set_base_offset(dst, base_offset as i64);
        self.len += batch.len();
        self.end_offset = next_offset;
    }

    /// Seals this buffer for writing and returns it with the tail that
    /// continues it (carrying the partial last block), sized for at least
    /// `next_capacity` bytes.
    pub fn seal(mut self, file: &SegmentFile, next_capacity: usize) -> (Sealed, Tail) {
        let padded = align_up(self.len as u64) as usize;
        self.buf.as_bytes_mut()[self.len..padded].fill(0);
        let carry_start = align_down(self.len as u64) as usize;
        let next = Tail::new(
            file,
            self.file_pos + carry_start as u64,
            &self.buf.as_bytes()[carry_start..self.len],
            self.end_offset,
            next_capacity,
        );
        self.buf.trim_to_size(padded);
        (
            Sealed {
                buf: Rc::new(self.buf),
                file_pos: self.file_pos,
                len: self.len,
                end_offset: self.end_offset,
                first_batch_at: self.written_len,
                first_offset: self.first_offset,
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
                    end: s.len,
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
