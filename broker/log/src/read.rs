//! The readers' side of the log: [`Log::read`] and [`Log::read_below`] by
//! offset (one path: `read` is `read_below` with no bound of its own),
//! [`Log::offset_for_timestamp`], and `pick_batches`, which cuts whole
//! batches out of a buffer.
//!
//! Invariants:
//! - Readers see acknowledged data only: every byte returned lies below the
//!   high watermark (`State::acked_end`, `State::acked_len` in the active
//!   segment), and below the caller's bound when it gives one (asserted).
//! - A read returns whole batches, the first one holding the requested
//!   offset, and at least one batch however large, so a consumer always
//!   progresses.
//! - No copy: the bytes are a slice of a cached tail buffer (`Rc`, never
//!   mutated after sealing) or of the DMA buffer a disk read filled.
//! - No read returns bytes a truncation removed: a read whose disk I/O
//!   spanned a [`Log::truncate_to`] (`State::truncations` moved) starts again.
//! - Read-ahead: a read from disk that stops before the readable data ends
//!   issues the next window's read (one per log, `State::read_ahead`); only
//!   a read at exactly that offset, in that segment, with no truncation
//!   since, uses it, and only the bytes that were readable when it was
//!   issued, cut into whole batches as any disk read.

use std::{
    ops::ControlFlow,
    rc::Rc,
    sync::{atomic::Ordering, Arc},
};

use glommio::io::ReadResult;

use crate::{
    io::{self, align_down, SegmentFile},
    segment::{self, ScanEnd},
    state::ReadAhead,
    Log, LogError, LogRead, ReadBytes,
};

impl Log {
    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch, however large, so a consumer always
    /// progresses). Reading at the high watermark returns no bytes; outside
    /// [log start, high watermark] is [`LogError::OffsetOutOfRange`].
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead, LogError> {
        self.read_below(offset, max_bytes, u64::MAX).await
    }

    /// [`Log::read`], returning only whole batches that lie entirely below
    /// `min(end, durable_end())`: a partition passes its high watermark,
    /// which under replication is below the log's [`Log::durable_end`].
    ///
    /// - `offset` below the log start or above `durable_end()`:
    ///   [`LogError::OffsetOutOfRange`], as for [`Log::read`].
    /// - `offset` at or above the bound (up to `durable_end()`), or in a
    ///   batch that runs past the bound: an empty read whose `next_offset`
    ///   is `offset` (the consumer is ahead of what may be read: it waits, it
    ///   is not out of range).
    /// - Otherwise the batch holding `offset` and the whole batches after it
    ///   that end at or below the bound, within `max_bytes` (at least one).
    ///
    /// The result's `high_watermark` is still the log's (`durable_end()`),
    /// not `end`.
    pub async fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<LogRead, LogError> {
        loop {
            if let Some(read) = self.read_below_once(offset, max_bytes, end).await? {
                return Ok(read);
            }
        }
    }

    /// One attempt at [`Log::read_below`]: `None` when a truncation
    /// happened while it awaited the disk (its bytes may be gone: the
    /// caller starts again, with the log as it is now).
    async fn read_below_once(
        &self,
        offset: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Option<LogRead>, LogError> {
        let (file, seg_base, start_pos, limit, hw, bound, log_start, cached, truncations, ahead) = {
            let mut st = self.inner.state.borrow_mut();
            let log_start = *st
                .segments
                .keys()
                .next()
                .expect("a log always has a segment");
            let hw = st.acked_end;
            if offset < log_start || offset > hw {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    start: log_start,
                    end: hw,
                });
            }
            let bound = end.min(hw);
            if offset >= bound {
                return Ok(Some(LogRead {
                    bytes: ReadBytes::Empty,
                    next_offset: offset,
                    high_watermark: hw,
                    log_start_offset: log_start,
                }));
            }
            let (_, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start has a segment");
            let is_active = seg.base_offset == st.active().base_offset;
            let limit = if is_active { st.acked_len } else { seg.len };
            let entry = seg.index.lookup((offset - seg.base_offset) as u32);
            let start_pos = u64::from(entry.position);
            let cached = st.cache.find(seg.base_offset, offset);
            let (file, seg_base) = (seg.file.clone(), seg.base_offset);
            // A read-ahead is for one reader's next read; any read takes it
            // (one that does not match drops it: the reader moved on).
            let ahead = st.read_ahead.take().filter(|a| {
                a.segment == seg_base && a.offset == offset && a.truncations == st.truncations
            });
            (
                file,
                seg_base,
                start_pos,
                limit,
                hw,
                bound,
                log_start,
                cached,
                st.truncations,
                ahead,
            )
        };
        // Find the first batch holding `offset` and take whole batches.
        // From memory when the buffer that received the batch holds the
        // whole answer: picking stopped inside it (the byte budget or the
        // bound), or it reaches the bound. Otherwise one larger read from
        // disk serves more.
        if let Some(c) = cached {
            let avail = &c.buf.as_bytes()[c.start..c.end];
            if let Some((skip, take, next)) = pick_batches(avail, offset, max_bytes, bound) {
                let stopped_inside = next < c.end_offset;
                if stopped_inside || c.end_offset >= bound {
                    check_below(next, bound);
                    let bytes = if take == 0 {
                        ReadBytes::Empty
                    } else {
                        ReadBytes::Memory {
                            buf: c.buf.clone(),
                            start: c.start + skip,
                            len: take,
                        }
                    };
                    return Ok(Some(LogRead {
                        bytes,
                        next_offset: next,
                        high_watermark: hw,
                        log_start_offset: log_start,
                    }));
                }
            }
        }
        let slack =
            u64::from(self.inner.config.index_interval_bytes) + broker_format::HEADER_LEN as u64;
        // The answer cut out of a disk read whose `data[at..]` starts at file
        // position `pos`; a non-empty one issues the read of the window
        // after it.
        let answer = |data: &ReadResult, at: usize, pos: u64, (skip, take, next)| {
            let bytes = if take == 0 {
                ReadBytes::Empty
            } else {
                let end_pos = pos + (skip + take) as u64;
                self.read_ahead(&file, seg_base, next, end_pos, max_bytes + slack as usize);
                ReadBytes::Disk(self.slice(&file, data, at + skip, take)?)
            };
            Ok::<_, LogError>(LogRead {
                bytes,
                next_offset: next,
                high_watermark: hw,
                log_start_offset: log_start,
            })
        };
        // From the read-ahead the previous read issued, when it holds the
        // batch at `offset` whole (else the disk, as if there were none).
        if let Some(a) = ahead {
            if let Ok(data) = a.data.await {
                if self.inner.state.borrow().truncations != truncations {
                    return Ok(None);
                }
                let valid = ((a.limit - a.read_pos) as usize).min(data.len());
                let at = (a.pos - a.read_pos) as usize;
                if at <= valid {
                    if let Some((skip, take, next)) =
                        pick_batches(&data[at..valid], offset, max_bytes, bound)
                    {
                        check_below(next, bound);
                        self.inner
                            .stats
                            .read_ahead_hits
                            .fetch_add(1, Ordering::Relaxed);
                        return answer(&data, at, a.pos, (skip, take, next)).map(Some);
                    }
                }
            }
        }
        // From disk: one aligned read covering the index gap and the budget.
        // Slack for the index gap (up to one interval of batches before
        // `offset`); a batch that runs past the window doubles it.
        let read_pos = align_down(start_pos);
        let mut want_end = limit.min(start_pos + max_bytes as u64 + slack);
        loop {
            self.inner.stats.disk_reads.fetch_add(1, Ordering::Relaxed);
            let data = file
                .read(read_pos, io::align_up(want_end - read_pos) as usize)
                .await;
            if self.inner.state.borrow().truncations != truncations {
                return Ok(None);
            }
            let data = data?;
            let valid = ((limit - read_pos) as usize).min(data.len());
            let at = (start_pos - read_pos) as usize;
            if valid < at {
                return Err(LogError::Corrupt {
                    path: file.path().to_path_buf(),
                    reason: format!("segment shorter than its index says (position {start_pos})"),
                });
            }
            match pick_batches(&data[at..valid], offset, max_bytes, bound) {
                Some(picked) => {
                    check_below(picked.2, bound);
                    return answer(&data, at, start_pos, picked).map(Some);
                }
                None if want_end < limit => {
                    // The batch holding `offset` runs past what was read:
                    // double the window (at most ~log2(64 MiB / window) rounds).
                    want_end = limit.min(read_pos + 2 * (want_end - read_pos));
                }
                None => {
                    return Err(LogError::Corrupt {
                        path: file.path().to_path_buf(),
                        reason: format!("no batch holds offset {offset} below the high watermark"),
                    });
                }
            }
        }
    }

    /// `len` bytes of `data` from `at`, without a copy.
    fn slice(
        &self,
        file: &SegmentFile,
        data: &ReadResult,
        at: usize,
        len: usize,
    ) -> Result<ReadResult, LogError> {
        ReadResult::slice(data, at, len).ok_or_else(|| LogError::Corrupt {
            path: file.path().to_path_buf(),
            reason: "read slice out of bounds".into(),
        })
    }

    /// After a read from disk that ended at `pos` (the batch at `offset`) in
    /// segment `segment`, issues the read of the next `window` bytes there, so
    /// that a sequential reader's next read finds them read (the disk works
    /// while the answer travels and the reader decodes it). Nothing when the
    /// readable data ends at `pos` or the tail cache holds `offset`: those
    /// reads are answered without the disk. One per log: a new one replaces
    /// (and cancels) the last.
    fn read_ahead(
        &self,
        file: &Rc<SegmentFile>,
        segment: u64,
        offset: u64,
        pos: u64,
        window: usize,
    ) {
        let mut st = self.inner.state.borrow_mut();
        let Some(seg) = st.segments.get(&segment) else {
            return;
        };
        let limit = if segment == st.active().base_offset {
            st.acked_len
        } else {
            seg.len
        };
        if pos >= limit || st.cache.find(segment, offset).is_some() {
            st.read_ahead = None;
            return;
        }
        let read_pos = align_down(pos);
        let len = io::align_up(limit.min(pos + window as u64) - read_pos) as usize;
        let reader = Rc::clone(file);
        let stats = Arc::clone(&self.inner.stats);
        let data = glommio::spawn_local(async move {
            stats.disk_reads.fetch_add(1, Ordering::Relaxed);
            reader.read(read_pos, len).await
        });
        st.read_ahead = Some(ReadAhead {
            segment,
            offset,
            pos,
            read_pos,
            limit,
            truncations: st.truncations,
            data,
        });
    }

    /// The first offset whose record timestamp is >= `timestamp`, among
    /// acknowledged records; `None` when there is none.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        loop {
            let truncations = self.inner.state.borrow().truncations;
            let found = self.offset_for_timestamp_once(timestamp).await;
            if self.inner.state.borrow().truncations == truncations {
                return found;
            }
        }
    }

    /// One attempt at [`Log::offset_for_timestamp`] (the caller starts
    /// again if a truncation happened meanwhile).
    async fn offset_for_timestamp_once(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let candidates: Vec<(Rc<SegmentFile>, u64, u64)> = {
            let st = self.inner.state.borrow();
            let active = st.active().base_offset;
            st.segments
                .values()
                .filter(|s| s.max_timestamp >= timestamp)
                .map(|s| {
                    let limit = if s.base_offset == active {
                        st.acked_len
                    } else {
                        s.len
                    };
                    let from = u64::from(s.index.lookup_time(timestamp).position).min(limit);
                    (s.file.clone(), from, limit)
                })
                .collect()
        };
        for (file, from, limit) in candidates {
            let mut found = None;
            let end = segment::scan_batches(&file, from, limit, |_, header, bytes| {
                if header.max_timestamp < timestamp {
                    return ControlFlow::Continue(());
                }
                let Ok(records) = broker_format::records(bytes) else {
                    return ControlFlow::Continue(());
                };
                for r in records.flatten() {
                    if header.base_timestamp.saturating_add(r.timestamp_delta) >= timestamp {
                        found = Some(header.base_offset as u64 + r.offset_delta as u64);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
            if let ScanEnd::Malformed(pos, why) = end {
                return Err(LogError::Corrupt {
                    path: file.path().to_path_buf(),
                    reason: format!("at position {pos}: {why}"),
                });
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

/// Once per read: a read never returns a record at or past its bound (the
/// high watermark, or the partition's), which would hand a consumer data
/// not yet acknowledged.
fn check_below(next: u64, bound: u64) {
    assert!(
        next <= bound,
        "a read returned records up to {next}, past its bound {bound}"
    );
}

/// In `bytes` (starting at a batch boundary), finds the batch holding
/// `offset` and the whole batches after it within `max_bytes` (at least
/// one) that end at or below `bound`. Returns (start, length, next offset):
/// length 0 and next offset `offset` when the batch holding `offset` runs
/// past `bound`; None when that batch is not wholly inside `bytes`.
fn pick_batches(
    bytes: &[u8],
    offset: u64,
    max_bytes: usize,
    bound: u64,
) -> Option<(usize, usize, u64)> {
    let mut pos = 0usize;
    let mut start = None;
    let mut end = 0usize;
    let mut next = offset;
    // `batches` yields whole batches only and stops at a cut one.
    for (header, b) in broker_format::batches(bytes).map_while(Result::ok) {
        let batch_next = header.next_offset() as u64;
        match start {
            None if batch_next <= offset => {}
            None if batch_next > bound => return Some((pos, 0, offset)),
            None => start = Some(pos),
            Some(_) if batch_next > bound => break,
            Some(s) if pos + b.len() - s > max_bytes => break,
            Some(_) => {}
        }
        pos += b.len();
        if start.is_some() {
            end = pos;
            next = batch_next;
        }
    }
    start.map(|s| (s, end - s, next))
}
