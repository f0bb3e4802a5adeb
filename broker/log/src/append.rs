//! The writers' side of the log: [`Log::append`] (validate, place the batch
//! in the tail, wait for its acknowledgement), rolling the active segment,
//! and [`Log::close`]. The flusher (`flusher.rs`) does the writing; this
//! module only fills the tail and waits on the outcome.
//!
//! Invariants:
//! - A batch is validated before it touches the tail; it is copied once,
//!   into the tail, at the log end offset, which then advances by its record
//!   count (offsets contiguous).
//! - A roll or a close holds the log exclusively (`State::exclusive`):
//!   no append is placed while the active segment is drained, fsynced,
//!   trimmed and its indexes written, and the new segment starts at exactly
//!   the log end offset.
//! - Appends are placed in the order they were first polled: one that
//!   finds the log busy waits with a ticket (`State::place_queue`), and
//!   while any waits, newer ones queue behind it; the roller places first.
//! - An append resolves `Ok` only once its epoch has acknowledged past its
//!   end (`State::outcome`), never earlier (save the `fault-injection`
//!   build's deliberate bug).

use std::{future::poll_fn, rc::Rc, task::Poll, time::Instant};

use broker_format::{BatchHeader, Validated};

use crate::{
    index::SegmentIndex,
    io::{self, SegmentFile, BLOCK},
    segment::{self, Segment},
    state::{State, TAIL_START_BYTES},
    tail::{Cut, Tail},
    Appended, Log, LogError,
};

/// Who places a batch: the leader, which gives it the log end offset as
/// its base and stamps the log's leader epoch, or a follower, which keeps
/// both as the leader stored them (and must start at the log end offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Leader,
    Replica,
}

/// A deliberately broken build, for the chaos checker's own test: with the
/// `fault-injection` feature and `BROKER_FAULT_ACK_BEFORE_DURABLE=1`, an
/// append resolves as soon as its batch is in the write buffer, before any
/// write or fdatasync, so a crash loses acknowledged records. Never part of
/// a normal build.
#[cfg(feature = "fault-injection")]
fn fault_ack_before_durable() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("BROKER_FAULT_ACK_BEFORE_DURABLE").is_some_and(|v| v == "1");
        if on {
            tracing::warn!("FAULT INJECTED: appends are acknowledged before they are written");
        }
        on
    })
}

impl Log {
    /// Appends one record batch (its base offset field is overwritten) and
    /// resolves once it is as durable as the fsync policy says, with the
    /// offsets it was given. The batch is validated first (length, CRC,
    /// records); nothing invalid reaches the log.
    pub async fn append(&self, batch: &[u8]) -> Result<Appended, LogError> {
        self.check_size(batch)?;
        self.append_validated(Validated::check(batch)?).await
    }

    /// [`Log::append`] of a batch its caller has validated already (a
    /// produce request's batches are validated before any is appended, so
    /// that a bad one appends nothing): not validated twice.
    pub async fn append_validated(&self, batch: Validated<'_>) -> Result<Appended, LogError> {
        self.check_size(batch.bytes())?;
        let (epoch, appended) = self
            .place(batch.bytes(), batch.header(), Origin::Leader)
            .await?;
        #[cfg(feature = "fault-injection")]
        if fault_ack_before_durable() {
            return Ok(appended);
        }
        self.acknowledged(epoch, appended.next_offset).await?;
        Ok(appended)
    }

    /// Waits until the appends of failure epoch `epoch` that end at `end`
    /// are acknowledged (`Ok`) or failed.
    pub(crate) async fn acknowledged(&self, epoch: u64, end: u64) -> Result<(), LogError> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            match st.outcome(epoch, end) {
                Some(r) => Poll::Ready(r),
                None => {
                    st.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Refuses a batch larger than the log's limit.
    fn check_size(&self, batch: &[u8]) -> Result<(), LogError> {
        let max = self.inner.config.batch_bytes_max;
        if batch.len() > max {
            return Err(LogError::BatchTooLarge {
                len: batch.len(),
                max,
            });
        }
        Ok(())
    }

    /// Copies the batch into the tail, rolling first if needed; returns the
    /// epoch and offsets to wait on.
    pub(crate) async fn place(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        origin: Origin,
    ) -> Result<(u64, Appended), LogError> {
        // Appends are placed in the order they were first polled (a
        // connection's pipelined produces keep their order): one that finds
        // the log busy takes a ticket and waits its turn, and while any
        // waits, a newer one queues behind it. Waking the waiters does not
        // order them by itself: a newer append already scheduled would be
        // polled before them and place first.
        let mut ticket = PlaceTicket {
            log: self,
            ticket: None,
        };
        let mut after_roll = false;
        loop {
            if !after_roll {
                // Straight after its own roll the roller places at once: it
                // is the oldest, and nothing ran in between.
                self.wait_turn(&mut ticket).await?;
            }
            if let Some(placed) = self.try_place(batch, header, origin)? {
                return Ok(placed);
            }
            // Boxed: a roll happens once a segment, and its future (the
            // checkpoint, index writes, a new file) would otherwise make
            // every append's future, and every future that awaits one, over
            // a kilobyte larger, memcpy'd at every await of every produce.
            let rolled = Box::pin(self.roll()).await;
            {
                let mut st = self.inner.state.borrow_mut();
                st.exclusive = false;
                st.wake_waiters();
                // An `interval` fdatasync may have fallen due meanwhile.
                st.wake_flusher();
            }
            rolled?;
            after_roll = true;
        }
    }

    /// Waits until the log is free to place an append and it is `ticket`'s
    /// turn (none queued before it), taking a ticket if it must wait.
    async fn wait_turn(&self, ticket: &mut PlaceTicket<'_>) -> Result<(), LogError> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return Poll::Ready(Err(LogError::Closed));
            }
            let free = !st.exclusive && (st.reset_to_durable.is_none() || st.reset_error.is_some());
            let turn = st.place_queue.front().copied() == ticket.ticket;
            if free && turn {
                return Poll::Ready(Ok(()));
            }
            if ticket.ticket.is_none() {
                let t = st.place_next_ticket;
                st.place_next_ticket += 1;
                st.place_queue.push_back(t);
                ticket.ticket = Some(t);
            }
            st.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The synchronous part of [`Log::place`]: `Ok(None)` when the active
    /// segment must roll first (the caller then holds the log exclusively).
    fn try_place(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        origin: Origin,
    ) -> Result<Option<(u64, Appended)>, LogError> {
        let inner = &self.inner;
        let mut st = inner.state.borrow_mut();
        if st.reset_to_durable.is_some() {
            if let Some(e) = &st.reset_error {
                return Err(e.clone());
            }
        }
        let leader_epoch = match origin {
            Origin::Leader => st.leader_epoch,
            Origin::Replica => {
                if header.base_offset != st.next_offset as i64 {
                    return Err(LogError::OffsetMismatch {
                        expected: st.next_offset,
                        found: header.base_offset,
                    });
                }
                header.partition_leader_epoch
            }
        };
        let active = st.active();
        let roll_by_size = active.len + batch.len() as u64 > inner.config.segment_bytes_max;
        let roll_by_age = inner
            .config
            .segment_age_max
            .is_some_and(|age| active.opened_at.elapsed() >= age);
        if !active.is_empty() && (roll_by_size || roll_by_age) {
            st.exclusive = true;
            return Ok(None);
        }
        let base = st.next_offset;
        let next = base
            .checked_add(u64::from(header.record_count()))
            .ok_or_else(|| LogError::Corrupt {
                path: inner.dir.clone(),
                reason: "offset space exhausted".into(),
            })?;
        let st = &mut *st;
        let tail = st.tail.as_ref().expect("tail present while open");
        if !tail.fits(batch.len()) {
            // The next buffer holds the carried block and at least this batch.
            let capacity = (tail.unwritten_len() + batch.len())
                .min(inner.config.write_buffer_bytes)
                .max(batch.len() + BLOCK as usize);
            // Cut at the block boundary when there is one, so the write of
            // this buffer and of the next can be in flight together.
            let how = if tail.unwritten_below_cut() > 0 {
                Cut::AtBlock
            } else {
                Cut::Whole
            };
            st.seal_tail(capacity, how);
        }
        if st.writes_in_flight > 0 {
            st.appended_while_writing = true;
        }
        st.refill_pending = st.refill_pending.saturating_sub(batch.len() as u64);
        let active_len = st.active().len;
        let tail = st.tail.as_mut().expect("tail present while open");
        // Per batch, and a violation would put the batch where no index or
        // recovery expects it: checked in release builds too.
        assert_eq!(
            tail.end_pos(),
            active_len,
            "the tail and the active segment disagree on where the next batch goes"
        );
        tail.append(batch, base, next, leader_epoch);
        let interval = inner.config.index_interval_bytes;
        let seg = st.active_mut();
        assert_eq!(
            seg.next_offset, base,
            "offsets not contiguous: the active segment ends at one offset, the batch is given another"
        );
        seg.on_append(header, batch.len(), interval);
        st.next_offset = next;
        st.wake_flusher();
        Ok(Some((
            st.epoch,
            Appended {
                base_offset: base,
                next_offset: next,
            },
        )))
    }

    /// Waits until `ready` holds; fails if the log closes meanwhile.
    pub(crate) async fn wait_until(&self, ready: impl Fn(&State) -> bool) -> Result<(), LogError> {
        let inner = &self.inner;
        poll_fn(|cx| {
            let mut st = inner.state.borrow_mut();
            if st.closed {
                return Poll::Ready(Err(LogError::Closed));
            }
            if ready(&st) {
                Poll::Ready(Ok(()))
            } else {
                st.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until every appended batch is written (and acknowledged); fails
    /// with the write error if a cycle fails meanwhile.
    pub(crate) async fn drain(&self) -> Result<(), LogError> {
        let epoch = self.inner.state.borrow().epoch;
        {
            let mut st = self.inner.state.borrow_mut();
            st.wake_flusher();
        }
        self.wait_until(|st| st.drained() || st.epoch != epoch)
            .await?;
        let st = self.inner.state.borrow();
        if st.epoch != epoch {
            let err = st.failures.back().map(|f| f.error.clone());
            return Err(err.unwrap_or(LogError::Closed));
        }
        Ok(())
    }

    /// Seals the active segment (fsync, trim the padding, write its indexes)
    /// and starts a new one at the log end offset.
    async fn roll(&self) -> Result<(), LogError> {
        let new_base = self.checkpoint_active().await?;
        let inner = &self.inner;
        let (log_path, _, _) = segment::paths(&inner.dir, new_base);
        let new_file = Rc::new(
            SegmentFile::open(&log_path, true, inner.faults.clone(), inner.stats.clone()).await?,
        );
        new_file.truncate(0).await?;
        io::sync_dir(&inner.dir).await?;
        let mut st = inner.state.borrow_mut();
        // The log is held exclusively and drained: nothing moved since the
        // checkpoint. A new segment anywhere but at the log end offset would
        // leave a gap or an overlap that recovery refuses.
        assert_eq!(
            new_base, st.next_offset,
            "a roll must start the new segment at exactly the log end offset"
        );
        assert_eq!(
            st.acked_end, new_base,
            "a roll sealed a segment holding appends not yet acknowledged"
        );
        assert!(
            new_base > st.active().base_offset,
            "a roll of an empty segment would reuse its base offset"
        );
        st.synced_end = new_base;
        st.tail = Some(Tail::new(&new_file, 0, &[], new_base, TAIL_START_BYTES));
        st.segments.insert(
            new_base,
            Segment {
                base_offset: new_base,
                file: new_file,
                len: 0,
                next_offset: new_base,
                max_timestamp: i64::MIN,
                index: SegmentIndex::default(),
                opened_at: Instant::now(),
            },
        );
        st.acked_len = 0;
        st.synced_len = 0;
        Ok(())
    }

    /// Drains pending writes, then makes the active segment whole on disk:
    /// trimmed to its logical length, fdatasynced, its indexes written with
    /// a checkpoint covering all of it. Returns the log end offset.
    async fn checkpoint_active(&self) -> Result<u64, LogError> {
        self.drain().await?;
        let inner = &self.inner;
        let (file, cp, idx, times, base) = {
            let st = inner.state.borrow();
            let seg = st.active();
            (
                seg.file.clone(),
                seg.checkpoint(),
                seg.index.encode_offsets(seg.checkpoint()),
                seg.index.encode_times(),
                seg.base_offset,
            )
        };
        file.truncate(cp.valid_len).await?;
        file.sync().await?;
        // The index checkpoint below makes this segment's batches trusted
        // at the next open (not scanned): the epoch checkpoint must cover
        // them first.
        let stale = {
            let st = inner.state.borrow();
            st.epoch_cache_dirty || !st.epoch_file_exists
        };
        if stale {
            self.persist_epochs().await?;
        }
        let (_, idx_path, time_path) = segment::paths(&inner.dir, base);
        io::write_file_atomic(&time_path, times).await?;
        io::write_file_atomic(&idx_path, idx).await?;
        Ok(cp.next_offset)
    }

    /// Flushes and fsyncs everything, trims the active segment's padding,
    /// writes its indexes (so the next open validates nothing) and closes.
    /// Pending appends complete first; later calls fail with [`LogError::Closed`].
    pub async fn close(&self) -> Result<(), LogError> {
        self.wait_until(|st| !st.exclusive).await?;
        self.inner.state.borrow_mut().exclusive = true;
        let result = self.close_inner().await;
        let mut st = self.inner.state.borrow_mut();
        st.closed = true;
        st.exclusive = false;
        st.wake_waiters();
        st.wake_flusher();
        result
    }

    async fn close_inner(&self) -> Result<(), LogError> {
        self.checkpoint_active().await?;
        let inner = &self.inner;
        io::sync_dir(&inner.dir).await?;
        let mut st = inner.state.borrow_mut();
        st.synced_end = st.acked_end;
        st.synced_len = st.acked_len;
        Ok(())
    }
}

/// An append's place in `State::place_queue`, if it took one: leaves the
/// queue when the append is placed, fails or is dropped, and wakes the
/// waiters so that the next in line goes on.
struct PlaceTicket<'a> {
    log: &'a Log,
    ticket: Option<u64>,
}

impl Drop for PlaceTicket<'_> {
    fn drop(&mut self) {
        let Some(t) = self.ticket else {
            return;
        };
        let mut st = self.log.inner.state.borrow_mut();
        st.place_queue.retain(|&q| q != t);
        st.wake_waiters();
    }
}
