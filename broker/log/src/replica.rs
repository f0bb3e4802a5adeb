//! What replication needs of the log: follower appends that keep the
//! leader's offsets and epochs ([`Log::append_replica`]), the leader epoch
//! stamped on leader appends ([`Log::set_leader_epoch`]), the leader-epoch
//! cache and its checkpoint file ([`Log::end_offset_for_epoch`]), and
//! suffix truncation ([`Log::truncate_to`]).
//!
//! Invariants:
//! - A follower append writes nothing unless every batch of the call is
//!   valid, the first starts at the log end offset, each next one where the
//!   one before it ends, and no epoch is below the latest epoch of the log;
//!   at placement each batch is checked again against the log end offset
//!   (so a concurrent append can never misplace one).
//! - An epoch entry reaches the checkpoint file before any batch of its
//!   epoch is placed (a new leader epoch, a follower's new epoch): the file
//!   is never behind the data below the active segment's index checkpoint.
//!   Entries it holds at or past the recovered log end are dropped at open.
//! - A truncation moves the point recovery trusts down to the cut first (the
//!   cut segment's indexes are rewritten for the prefix), deletes later
//!   segments newest first, fsyncs the directory, and only then truncates
//!   and fdatasyncs the cut segment, then the epoch checkpoint: a crash at
//!   any step leaves a contiguous prefix of the old log at least as long as
//!   the cut (see `Log::truncate_to`).
//! - Readers never get bytes at or past a truncation point once it began:
//!   the readable end drops to the cut before any file changes, and a read
//!   whose I/O spanned a truncation starts again.

use std::time::Instant;

use broker_format::Validated;

use crate::{
    append::Origin,
    epochs::{EpochEnd, EpochEntry, CHECKPOINT_FILE, NO_EPOCH},
    io::{self, align_down, LogFault},
    segment::{self, ScanEnd},
    state::TAIL_START_BYTES,
    tail::Tail,
    Appended, Log, LogError,
};

impl Log {
    /// The partition leader epoch this log stamps on leader appends (-1,
    /// none, until [`Log::set_leader_epoch`]).
    pub fn leader_epoch(&self) -> i32 {
        self.inner.state.borrow().leader_epoch
    }

    /// The latest epoch of the log's leader-epoch cache, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.state.borrow().epoch_cache.latest_epoch()
    }

    /// The leader-epoch cache's entries (epoch, start offset), oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.inner.state.borrow().epoch_cache.entries().to_vec()
    }

    /// Kafka's OffsetsForLeaderEpoch for `epoch`: the largest epoch at or
    /// below it and where that epoch ends (the start of the next higher one,
    /// or the log end offset if it is the latest); `None` is Kafka's
    /// UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET (epoch -1, no epoch, or
    /// above every epoch). See [`crate::epochs`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<EpochEnd> {
        let st = self.inner.state.borrow();
        st.epoch_cache.end_offset_for(epoch, st.next_offset)
    }

    /// Makes this log a leader in `epoch`: every later leader append
    /// ([`Log::append`], [`Log::append_validated`]) carries it in its batch
    /// header's partition leader epoch, and the epoch cache records that it
    /// starts at the log end offset (persisted, fsynced, before this
    /// returns). Pending appends are written and fdatasynced first, so no
    /// later failure can take the log end back below the epoch's start.
    /// Refuses an epoch below 0 or below the latest of the log; setting the
    /// current one again changes nothing. Not on the append path: a leader
    /// change, once.
    pub async fn set_leader_epoch(&self, epoch: i32) -> Result<(), LogError> {
        if epoch < 0 {
            return Err(LogError::InvalidLeaderEpoch(epoch));
        }
        self.take_exclusive().await?;
        let result = self.set_leader_epoch_inner(epoch).await;
        self.release_exclusive(false);
        result
    }

    async fn set_leader_epoch_inner(&self, epoch: i32) -> Result<(), LogError> {
        {
            let st = self.inner.state.borrow();
            let latest = st
                .epoch_cache
                .latest_epoch()
                .unwrap_or(-1)
                .max(st.leader_epoch);
            if epoch < latest {
                return Err(LogError::EpochRegression { epoch, latest });
            }
            if epoch == st.leader_epoch && st.epoch_cache.latest_epoch() == Some(epoch) {
                return Ok(());
            }
        }
        self.drain().await?;
        let file = {
            let st = self.inner.state.borrow();
            (st.synced_end < st.acked_end).then(|| st.active().file.clone())
        };
        if let Some(file) = file {
            file.sync().await?;
            let mut st = self.inner.state.borrow_mut();
            st.synced_end = st.acked_end;
            st.synced_len = st.acked_len;
        }
        let before = {
            let mut st = self.inner.state.borrow_mut();
            let before = st.epoch_cache.clone();
            let end = st.next_offset;
            st.epoch_cache.assign(epoch, end).then_some(before)
        };
        if let Some(before) = before {
            if let Err(e) = self.persist_epochs().await {
                // Not leading in `epoch` after all: its entry goes (the
                // file may hold it, past the end, which an open drops).
                self.inner.state.borrow_mut().epoch_cache = before;
                return Err(e);
            }
        }
        self.inner.state.borrow_mut().leader_epoch = epoch;
        Ok(())
    }

    /// Appends batches exactly as a leader stored them (a follower's
    /// append of a fetch answer): base offsets, leader epochs, timestamps
    /// and attributes untouched. `batches` is whole batches back to back.
    /// Before anything is written, every batch is validated (length, CRC,
    /// records, as [`Validated::check`]) and must continue the log: the
    /// first at the log end offset, each next one where the one before ends
    /// ([`LogError::OffsetMismatch`]), none with an epoch below the log's
    /// latest ([`LogError::EpochRegression`]). New epochs are recorded in
    /// the epoch cache and its file (fsynced) before their batches are
    /// placed. Resolves, as [`Log::append`] does, once every batch is as
    /// durable as the fsync policy says, with the first base offset and the
    /// last next offset (both the log end offset for no batch).
    ///
    /// Calls take turns with each other and with truncations. A follower's
    /// log takes no leader appends; if one is placed concurrently anyway,
    /// the batch it displaces fails with `OffsetMismatch` (never misplaced)
    /// and the batches of the call before it stay. On an error after the
    /// checks, [`Log::log_end_offset`] tells how far the call got.
    pub async fn append_replica(&self, batches: &[u8]) -> Result<Appended, LogError> {
        // After a failure, the log end is settled only once the flusher
        // has reset the tail: the checks below need it.
        self.wait_until(|st| {
            !st.replica_appending
                && !st.exclusive
                && (st.reset_to_durable.is_none() || st.reset_error.is_some())
        })
        .await?;
        let before = {
            let mut st = self.inner.state.borrow_mut();
            if let (Some(_), Some(e)) = (&st.reset_to_durable, &st.reset_error) {
                return Err(e.clone());
            }
            st.replica_appending = true;
            st.epoch_cache.latest()
        };
        let placed = self.place_replica(batches).await;
        {
            let mut st = self.inner.state.borrow_mut();
            st.replica_appending = false;
            if placed.is_err() {
                // No entry for batches the call did not place: the next
                // fetch must not be refused for an epoch it never stored.
                let end = st.next_offset;
                st.forget_epochs_from(end);
                // A leader's epoch at the end that a new epoch replaced.
                if let Some(e) = before.filter(|e| e.start_offset == end) {
                    if e.epoch == st.leader_epoch && st.epoch_cache.latest() != Some(e) {
                        st.epoch_cache.assign(e.epoch, e.start_offset);
                    }
                }
            }
            st.wake_waiters();
        }
        let (epoch, appended) = placed?;
        self.acknowledged(epoch, appended.next_offset).await?;
        Ok(appended)
    }

    /// Checks every batch, records new epochs, places the batches; returns
    /// the failure epoch and offsets to wait on. Allocates nothing but for
    /// a new epoch (two passes over the batches: validate, then place).
    async fn place_replica(&self, batches: &[u8]) -> Result<(u64, Appended), LogError> {
        let (start, end, new_epochs) = {
            let st = self.inner.state.borrow();
            let start = st.next_offset;
            let mut expected = start;
            let mut latest = st.epoch_cache.latest_epoch();
            let mut new_epochs = Vec::new();
            let max = self.inner.config.batch_bytes_max;
            for b in broker_format::batches(batches) {
                let (_, bytes) = b?;
                if bytes.len() > max {
                    return Err(LogError::BatchTooLarge {
                        len: bytes.len(),
                        max,
                    });
                }
                let header = *Validated::check(bytes)?.header();
                if header.base_offset != expected as i64 {
                    return Err(LogError::OffsetMismatch {
                        expected,
                        found: header.base_offset,
                    });
                }
                let epoch = header.partition_leader_epoch;
                if let Some(latest) = latest {
                    if epoch < latest {
                        return Err(LogError::EpochRegression { epoch, latest });
                    }
                }
                if epoch >= 0 && latest != Some(epoch) {
                    new_epochs.push((epoch, expected));
                    latest = Some(epoch);
                }
                expected = header.next_offset() as u64;
            }
            (start, expected, new_epochs)
        };
        if start == end {
            return Ok((
                self.inner.state.borrow().epoch,
                Appended {
                    base_offset: start,
                    next_offset: start,
                },
            ));
        }
        if !new_epochs.is_empty() {
            {
                let mut st = self.inner.state.borrow_mut();
                for &(epoch, offset) in &new_epochs {
                    st.epoch_cache.assign(epoch, offset);
                }
            }
            self.persist_epochs().await?;
        }
        let mut last = None;
        // Validated above: the same bytes, so only the headers again.
        for b in broker_format::batches(batches) {
            let (header, bytes) = b?;
            last = Some(self.place(bytes, &header, Origin::Replica).await?);
        }
        let (epoch, appended) = last.expect("at least one batch");
        Ok((
            epoch,
            Appended {
                base_offset: start,
                next_offset: appended.next_offset,
            },
        ))
    }

    /// Removes every record at and above `offset`, durably: afterwards the
    /// log end offset, the durable end and the high watermark are `offset`,
    /// the next append goes there, and the epoch cache holds no entry at or
    /// past it. The log becomes a follower: it stamps no leader epoch
    /// ([`Log::leader_epoch`] is -1) until [`Log::set_leader_epoch`].
    ///
    /// `offset` must be a batch boundary in [log start offset, log end
    /// offset] ([`LogError::TruncateOutOfRange`], [`LogError::NotBatchBoundary`]:
    /// nothing changes); the log end offset itself changes nothing. The
    /// caller guarantees it is not below a high watermark it has served
    /// (the log cannot know it). Pending appends are written first; leader
    /// and follower appends wait meanwhile.
    ///
    /// Crash-safe: a crash at any point leaves a log that recovery opens
    /// with its end between `offset` and the old end, a prefix of the old
    /// log. A disk error after the first change closes the log
    /// ([`LogError::Closed`] from then on): reopen it, and truncate again if
    /// its end is still above `offset`.
    pub async fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        if !self.truncation_needed(offset)? {
            return Ok(());
        }
        self.take_exclusive().await?;
        let mut began = false;
        let result = self.truncate_inner(offset, &mut began).await;
        self.release_exclusive(result.is_err() && began);
        result
    }

    async fn truncate_inner(&self, offset: u64, began: &mut bool) -> Result<(), LogError> {
        self.drain().await?;
        // Again: a failure while draining may have moved the end.
        if !self.truncation_needed(offset)? {
            return Ok(());
        }
        let inner = &self.inner;
        let (base, file, scan_from, running_max, end) = {
            let st = inner.state.borrow();
            let (_, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start has a segment");
            let rel = (offset - seg.base_offset) as u32;
            // The segment's running max timestamp just below the cut: that
            // of the last time-index entry before it, and the batches from
            // there (scanned below).
            let (from, max) = match seg.index.last_time_before(rel) {
                Some(t) => (u64::from(t.position), t.max_timestamp),
                None => (0, i64::MIN),
            };
            (seg.base_offset, seg.file.clone(), from, max, seg.len)
        };
        let (cut_pos, max_timestamp) = if offset == base {
            (0, i64::MIN)
        } else {
            find_boundary(&file, scan_from, end, base, offset, running_max).await?
        };
        // From here on the log changes: readers see nothing at or past the
        // cut, and a read in flight starts again.
        *began = true;
        let (index, later): (_, Vec<u64>) = {
            let mut st = inner.state.borrow_mut();
            st.acked_end = st.acked_end.min(offset);
            st.synced_end = st.synced_end.min(offset);
            if st.active().base_offset == base {
                st.acked_len = cut_pos;
                st.synced_len = st.synced_len.min(cut_pos);
            }
            st.truncations += 1;
            st.cache.clear();
            st.wake_waiters();
            let mut index = st.segments[&base].index.clone();
            index.truncate_to(cut_pos as u32);
            let later = st.segments.range(base + 1..).map(|(b, _)| *b).collect();
            (index, later)
        };
        // 1. The cut segment's indexes, with a checkpoint at the cut: from
        //    now on recovery trusts only the prefix and scans the rest.
        let cp = crate::index::Checkpoint {
            valid_len: cut_pos,
            next_offset: offset,
            max_timestamp,
        };
        let (_, idx_path, time_path) = segment::paths(&inner.dir, base);
        io::write_file_atomic(&time_path, index.encode_times()).await?;
        io::write_file_atomic(&idx_path, index.encode_offsets(cp)).await?;
        self.fault_point(LogFault::TruncateIndexWritten)?;
        // 2. Later segments, newest first (indexes before the .log, as
        //    retention does): what remains is always a contiguous prefix.
        for b in later.iter().rev() {
            let (log_path, idx_path, time_path) = segment::paths(&inner.dir, *b);
            io::remove_file(&idx_path).await?;
            io::remove_file(&time_path).await?;
            io::remove_file(&log_path).await?;
            self.fault_point(LogFault::TruncateSegmentDeleted)?;
        }
        // 3. The deletions durable before the cut: a cut segment followed
        //    by a resurrected later one would be a gap.
        io::sync_dir(&inner.dir).await?;
        self.fault_point(LogFault::TruncateDirSynced)?;
        // 4. The cut itself, durable.
        file.truncate(cut_pos).await?;
        self.fault_point(LogFault::TruncateFileCut)?;
        file.sync().await?;
        self.fault_point(LogFault::TruncateFileSynced)?;
        // 5. The epoch checkpoint (entries past the end are dropped at open
        //    anyway, so it comes last).
        {
            let mut st = inner.state.borrow_mut();
            st.epoch_cache.truncate_from_end(offset);
            // Only a follower truncates: it stamps nothing of its own from
            // now on, and appends the new leader's batches whatever their
            // (older) epochs.
            st.leader_epoch = NO_EPOCH;
        }
        self.persist_epochs().await?;
        self.fault_point(LogFault::TruncateEpochsWritten)?;
        // 6. The tail continues at the cut.
        let carry_pos = align_down(cut_pos);
        let carry = file.read_partial_block(cut_pos).await?;
        let mut st = inner.state.borrow_mut();
        for b in &later {
            st.segments.remove(b);
        }
        let seg = st.active_mut();
        assert_eq!(
            seg.base_offset, base,
            "after a truncation the cut segment is the active one"
        );
        seg.len = cut_pos;
        seg.next_offset = offset;
        seg.max_timestamp = max_timestamp;
        seg.index = index;
        if !later.is_empty() {
            seg.opened_at = Instant::now();
        }
        st.tail = Some(Tail::new(
            &file,
            carry_pos,
            &carry,
            offset,
            TAIL_START_BYTES,
        ));
        st.next_offset = offset;
        st.acked_end = offset;
        st.acked_len = cut_pos;
        st.synced_end = offset;
        st.synced_len = cut_pos;
        st.refill_pending = 0;
        st.appended_while_writing = false;
        st.truncations += 1;
        st.cache.clear();
        Ok(())
    }

    /// Whether truncating to `offset` removes anything: refused outside
    /// [log start, log end], false at the log end.
    fn truncation_needed(&self, offset: u64) -> Result<bool, LogError> {
        let st = self.inner.state.borrow();
        let start = *st.segments.keys().next().expect("a log has a segment");
        if offset < start || offset > st.next_offset {
            return Err(LogError::TruncateOutOfRange {
                offset,
                start,
                end: st.next_offset,
            });
        }
        Ok(offset < st.next_offset)
    }

    /// Waits for the log to be free (no roll, close, truncation, epoch
    /// change or follower append under way) and holds it exclusively.
    async fn take_exclusive(&self) -> Result<(), LogError> {
        self.wait_until(|st| !st.exclusive && !st.replica_appending)
            .await?;
        self.inner.state.borrow_mut().exclusive = true;
        Ok(())
    }

    /// Ends what [`Log::take_exclusive`] began; with `close`, the log is
    /// left closed (its state in memory no longer matches its files).
    fn release_exclusive(&self, close: bool) {
        let mut st = self.inner.state.borrow_mut();
        st.exclusive = false;
        if close {
            st.closed = true;
        }
        st.wake_waiters();
        st.wake_flusher();
    }

    /// Writes the epoch cache to its checkpoint file (atomically, fsynced,
    /// the directory too). Writers take turns; each writes the cache as it
    /// is when its turn comes.
    pub(crate) async fn persist_epochs(&self) -> Result<(), LogError> {
        self.wait_until(|st| !st.epoch_file_writing).await?;
        let bytes = {
            let mut st = self.inner.state.borrow_mut();
            st.epoch_file_writing = true;
            st.epoch_cache_dirty = false;
            st.epoch_cache.encode()
        };
        let dir = &self.inner.dir;
        let written = async {
            io::write_file_atomic(&dir.join(CHECKPOINT_FILE), bytes).await?;
            io::sync_dir(dir).await
        }
        .await;
        let mut st = self.inner.state.borrow_mut();
        st.epoch_file_writing = false;
        match written {
            Ok(()) => st.epoch_file_exists = true,
            Err(_) => st.epoch_cache_dirty = true,
        }
        st.wake_waiters();
        written
    }

    /// Fails with an injected error when the log's fault plan stops here.
    fn fault_point(&self, at: LogFault) -> Result<(), LogError> {
        match &self.inner.faults {
            Some(f) => f.check_stop(at, &self.inner.dir),
            None => Ok(()),
        }
    }
}

/// Finds the batch of the segment (base offset `base`) that starts at
/// `offset`, scanning from `from` (a batch boundary below it) up to `end`;
/// returns its position and the segment's running max timestamp before it
/// (`running_max` being the max up to and including the batch at `from`'s
/// time-index entry, or `i64::MIN`).
async fn find_boundary(
    file: &io::SegmentFile,
    from: u64,
    end: u64,
    base: u64,
    offset: u64,
    running_max: i64,
) -> Result<(u64, i64), LogError> {
    let mut found = None;
    let mut max = running_max;
    let mut inside = None;
    let scan = segment::scan_batches(file, from, end, |pos, header, _| {
        let b = header.base_offset as u64;
        if b == offset {
            found = Some(pos);
            return std::ops::ControlFlow::Break(());
        }
        let next = header.next_offset() as u64;
        if b < offset && offset < next {
            inside = Some((b, next));
            return std::ops::ControlFlow::Break(());
        }
        max = max.max(header.max_timestamp);
        std::ops::ControlFlow::Continue(())
    })
    .await?;
    if let Some(pos) = found {
        return Ok((pos, max));
    }
    if let Some((batch_base, batch_next)) = inside {
        return Err(LogError::NotBatchBoundary {
            offset,
            batch_base,
            batch_next,
        });
    }
    let why = match scan {
        ScanEnd::Malformed(pos, why) => format!("at position {pos}: {why}"),
        _ => format!("no batch of the segment at {base} starts at offset {offset}"),
    };
    Err(LogError::Corrupt {
        path: file.path().to_path_buf(),
        reason: why,
    })
}
