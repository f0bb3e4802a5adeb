//! The flusher: one task per log, on the log's executor, that turns what
//! appends put in the tail into data writes and fdatasyncs, and
//! acknowledges appends as they complete (group commit). Also what happens
//! after a write or fsync fails: fail the appends not yet acknowledged,
//! truncate back, reload the tail.
//!
//! Shape: `flusher` loops over `pump`, a synchronous pass that polls the
//! I/O in flight (`Pipeline`), acknowledges in file order, issues the
//! fdatasync the policy calls for and then new writes (`next_write`, which
//! decides when to cut the tail and when to hold it for the appends an
//! acknowledgement released: the refill hold). Only a reset after a failure
//! (`reset_tail`) awaits outside the pass.
//!
//! Invariants:
//! - At most [`WRITE_DEPTH`] data writes in flight; they are issued in file
//!   order and acknowledged in that order, whatever order they complete in.
//! - Two writes in flight never cover the same block: a buffer that
//!   rewrites the previous one's partial block waits for that write.
//! - The high watermark advances only to a completed write's (with `always`:
//!   a completed fdatasync's) acknowledgement point, a batch boundary at or
//!   below the log end offset and inside the active segment.
//! - After a failure nothing new is issued until the I/O in flight is in
//!   and the tail was reloaded from disk at the last trusted point.

use std::{
    collections::VecDeque,
    future::{poll_fn, Future},
    pin::Pin,
    rc::Weak,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::{
    io::{align_down, BLOCK},
    state::{Failure, PendingWrite, State, FAILURES_KEPT, TAIL_START_BYTES},
    tail::{Cut, Sealed, Tail},
    FsyncPolicy, Inner, LogError,
};

/// Most data writes the flusher keeps issued and not yet acknowledged.
/// ext4 runs extending direct writes one at a time (under the inode lock,
/// in io_uring's worker threads), so depth does not add parallelism at the
/// device: it only lets the next write wait ready while one runs. Two do
/// that; more only split the appends in flight into smaller writes, which
/// measured much slower (bench-results/README.md).
const WRITE_DEPTH: usize = 2;

/// With nothing in flight and concurrent appends, a buffer is cut at its
/// last block boundary (so the next write can be in flight with it) once it
/// holds this fraction of `write_buffer_bytes` in whole blocks.
const PIPELINED_WRITE_DIVISOR: usize = 4;

/// The longest the tail is held for the appends an acknowledgement released
/// (half a write's time otherwise): a disk that stalls once must not make
/// every later write wait long for appenders that are not coming.
const REFILL_HOLD_MAX: Duration = Duration::from_millis(2);

/// A data write or fdatasync issued by the flusher.
type IoFuture = Pin<Box<dyn Future<Output = Result<(), LogError>>>>;

/// A data write issued by the flusher, and its result once in.
struct InFlight {
    io: IoFuture,
    done: Option<Result<(), LogError>>,
    issued: Instant,
    segment: u64,
    sealed: Sealed,
}

/// An fdatasync issued by the flusher and what it makes durable.
struct SyncInFlight {
    io: IoFuture,
    done: Option<Result<(), LogError>>,
    end_offset: u64,
    end_len: u64,
    /// Base offset of the segment whose file it syncs (`end_len` is a
    /// position in that file).
    segment: u64,
    /// With `always`: the written buffers whose appends it acknowledges.
    buffers: Vec<(u64, Sealed)>,
}

/// The flusher's own state: the I/O it has issued, in order.
struct Pipeline {
    /// Data writes in the order they were issued (= file order).
    writes: VecDeque<InFlight>,
    /// With `always`: writes completed in order, awaiting an fdatasync
    /// before their appends are acknowledged: the point it will make
    /// durable and the buffers.
    unsynced: Option<(u64, u64)>,
    unsynced_buffers: Vec<(u64, Sealed)>,
    sync: Option<SyncInFlight>,
    /// With `interval`: when the last fdatasync was issued, and the timer
    /// for the next one.
    last_sync: Instant,
    timer: Option<Pin<Box<glommio::timer::Timer>>>,
    /// How long a data write keeps the disk (moving average of the time
    /// from when it could start, its issue or its predecessor's completion,
    /// to its completion).
    write_time: Duration,
    /// When the last data write completed.
    last_write_done: Instant,
    /// The tail is held for the appends the last acknowledgement released
    /// (`State::refill_pending`) until this instant at most. No timer: the
    /// flusher looks at it whenever an append or a completion wakes it, and
    /// if neither comes, the I/O in flight completes and ends the hold.
    refill_deadline: Option<Instant>,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline {
            writes: VecDeque::new(),
            unsynced: None,
            unsynced_buffers: Vec::new(),
            sync: None,
            last_sync: Instant::now(),
            timer: None,
            write_time: Duration::ZERO,
            last_write_done: Instant::now(),
            refill_deadline: None,
        }
    }

    fn idle(&self) -> bool {
        self.writes.is_empty() && self.sync.is_none() && self.unsynced.is_none()
    }
}

/// What the flusher must do outside its poll loop.
enum Step {
    /// Truncate back and reload the tail after a failure (`true`: to the
    /// durable point).
    Reset(bool),
    /// The log closed or was dropped, and no I/O is in flight.
    Exit,
}

/// The background task that carries out write cycles (group commit) as a
/// pipeline: it seals what was appended, issues the write while earlier
/// writes are still in flight (up to [`WRITE_DEPTH`]), and acknowledges in
/// file order as writes (and, per policy, fdatasyncs) complete. Two writes
/// in flight never cover the same block: a buffer that rewrites the
/// previous one's partial block is issued only after that write completed.
/// Holds only a weak handle so dropping the log ends it (once its I/O is
/// in).
pub(crate) async fn flusher(weak: Weak<Inner>) {
    let mut pipe = Pipeline::new();
    loop {
        let step = poll_fn(|cx| match weak.upgrade() {
            Some(inner) => pump(&inner, &mut pipe, cx),
            None => finish_orphaned(&mut pipe, cx),
        })
        .await;
        match step {
            Step::Exit => return,
            Step::Reset(to_durable) => {
                let Some(inner) = weak.upgrade() else { return };
                reset_tail(&inner, to_durable).await;
            }
        }
    }
}

/// The log is gone: lets the I/O already issued complete (its buffers and
/// file stay alive in the futures), then ends the flusher.
fn finish_orphaned(pipe: &mut Pipeline, cx: &mut Context<'_>) -> Poll<Step> {
    pipe.writes
        .retain_mut(|w| w.done.is_none() && w.io.as_mut().poll(cx).is_pending());
    if let Some(s) = pipe.sync.as_mut() {
        if s.done.is_some() || s.io.as_mut().poll(cx).is_ready() {
            pipe.sync = None;
        }
    }
    if pipe.writes.is_empty() && pipe.sync.is_none() {
        Poll::Ready(Step::Exit)
    } else {
        Poll::Pending
    }
}

/// One pass of the flusher: collects completed I/O, acknowledges in order,
/// issues fdatasyncs and new writes. Everything here is synchronous; the
/// futures it polls register the flusher's waker, as do appends (through
/// `State::flusher`) and the interval timer.
fn pump(inner: &Inner, pipe: &mut Pipeline, cx: &mut Context<'_>) -> Poll<Step> {
    let mut st = inner.state.borrow_mut();
    let st = &mut *st;
    loop {
        let mut progress = false;
        // Results of data writes, in whatever order they complete.
        for w in pipe.writes.iter_mut().filter(|w| w.done.is_none()) {
            if let Poll::Ready(r) = w.io.as_mut().poll(cx) {
                w.done = Some(r);
            }
        }
        // Acknowledge in file order: only the completed prefix counts.
        let mut acked = false;
        let acked_before = (st.acked_end, st.acked_len);
        while let Some(r) = pipe.writes.front_mut().and_then(|w| w.done.take()) {
            let w = pipe.writes.pop_front().expect("front exists");
            progress = true;
            let now = Instant::now();
            let took = now.saturating_duration_since(w.issued.max(pipe.last_write_done));
            pipe.write_time = (pipe.write_time * 7 + took) / 8;
            pipe.last_write_done = now;
            if st.reset_to_durable.is_some() {
                // A failure already failed these appends; the write only
                // had to finish before the truncation.
                continue;
            }
            // A roll drains every write first: a write acknowledged here
            // was made in the active segment, so its positions are in it.
            assert_eq!(
                w.segment,
                st.active().base_offset,
                "a write of a segment rolled since was still being acknowledged"
            );
            match r {
                Ok(()) if inner.config.fsync == FsyncPolicy::Always => {
                    assert!(
                        pipe.unsynced
                            .is_none_or(|(end, _)| end <= w.sealed.end_offset),
                        "writes awaiting an fdatasync completed out of file order"
                    );
                    pipe.unsynced = Some((w.sealed.end_offset, w.sealed.end_pos));
                    pipe.unsynced_buffers.push((w.segment, w.sealed));
                }
                Ok(()) => {
                    advance_acked(st, w.sealed.end_offset, w.sealed.end_pos);
                    let budget = inner.config.write_buffer_bytes * inner.config.read_cache_buffers;
                    st.cache.push(w.segment, w.sealed, budget);
                    acked = true;
                }
                Err(e) => {
                    pipe.unsynced = None;
                    pipe.unsynced_buffers.clear();
                    fail(st, e, false);
                    acked = true;
                }
            }
        }
        // The fdatasync in flight.
        if let Some(s) = pipe.sync.as_mut() {
            if s.done.is_none() {
                if let Poll::Ready(r) = s.io.as_mut().poll(cx) {
                    s.done = Some(r);
                }
            }
            if let Some(r) = s.done.take() {
                let s = pipe.sync.take().expect("sync in flight");
                progress = true;
                acked = true;
                synced(inner, st, pipe, s, r);
            }
        }
        if acked {
            assert!(
                st.acked_end >= acked_before.0,
                "the high watermark went backwards in a write cycle"
            );
            st.wake_waiters();
            if st.acked_end > acked_before.0 {
                // What was just acknowledged tends to come back at once
                // (producers waiting on their acknowledgement): hold the
                // tail for it, at most half a write's time, well before the
                // write in flight ends.
                st.refill_pending = if st.acked_len > acked_before.1 {
                    st.acked_len - acked_before.1
                } else {
                    // A roll restarted the count in the new segment.
                    st.acked_len
                };
                pipe.refill_deadline =
                    Some(Instant::now() + (pipe.write_time / 2).min(REFILL_HOLD_MAX));
            }
        }
        if let Some(to_durable) = st.reset_to_durable {
            // Nothing new is issued; truncate once the issued I/O is in.
            if pipe.writes.is_empty() && pipe.sync.is_none() {
                st.flushing = false;
                st.writes_in_flight = 0;
                return Poll::Ready(Step::Reset(to_durable));
            }
        } else {
            if pipe.sync.is_none() {
                progress |= start_sync(inner, st, pipe, cx);
            }
            let holding =
                st.refill_pending > 0 && pipe.refill_deadline.is_some_and(|d| Instant::now() < d);
            if !holding {
                pipe.refill_deadline = None;
            }
            while let Some(w) = next_write(inner, st, pipe, holding) {
                let (file, buf, pos) = (w.file.clone(), w.sealed.buf.clone(), w.sealed.file_pos);
                check_issue_order(pipe, &w);
                let mut io: IoFuture = Box::pin(async move { file.write(buf, pos).await });
                // The first poll issues the write.
                let done = match io.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        progress = true;
                        Some(r)
                    }
                    Poll::Pending => None,
                };
                pipe.writes.push_back(InFlight {
                    io,
                    done,
                    issued: Instant::now(),
                    segment: w.segment,
                    sealed: w.sealed,
                });
            }
        }
        if !progress {
            break;
        }
    }
    st.writes_in_flight = pipe.writes.iter().filter(|w| w.done.is_none()).count();
    let was_flushing = st.flushing;
    st.flushing = !pipe.idle();
    if was_flushing && !st.flushing {
        // `drain` waits for this.
        st.wake_waiters();
    }
    if st.closed && pipe.idle() {
        return Poll::Ready(Step::Exit);
    }
    st.flusher = Some(cx.waker().clone());
    Poll::Pending
}

/// Takes in the result of the fdatasync `s`: advances the durable point
/// (with `always`, the high watermark too), or fails what it covered.
fn synced(
    inner: &Inner,
    st: &mut State,
    pipe: &mut Pipeline,
    s: SyncInFlight,
    r: Result<(), LogError>,
) {
    match r {
        Ok(()) if st.reset_to_durable.is_some() => {}
        Ok(()) if s.segment != st.active().base_offset => {
            // An fdatasync of a segment rolled since it was issued. A roll
            // drains the one in flight and none starts while it holds the
            // log (`start_sync`), so this is the second line of defence:
            // the roll fsynced that segment itself and set the durable point
            // of the new one, and `end_len`, a position in the old file,
            // must not be taken for one in the new.
            assert!(
                s.buffers.is_empty(),
                "an fdatasync that acknowledges appends outlived a roll of its segment"
            );
        }
        Ok(()) => {
            assert!(
                s.end_offset <= st.next_offset && s.end_len <= st.active().len,
                "an fdatasync made durable a point past the log end"
            );
            st.synced_end = st.synced_end.max(s.end_offset);
            st.synced_len = st.synced_len.max(s.end_len);
            if inner.config.fsync == FsyncPolicy::Always {
                advance_acked(st, s.end_offset, s.end_len);
                assert!(
                    st.acked_end <= st.synced_end,
                    "with fsync=always, the high watermark passed the fdatasynced end"
                );
                let budget = inner.config.write_buffer_bytes * inner.config.read_cache_buffers;
                for (seg, sealed) in s.buffers {
                    st.cache.push(seg, sealed, budget);
                }
            }
        }
        Err(_) if st.reset_to_durable.is_some() => {
            // Already resetting after a failed write: the pages
            // this fsync covered are now in an unknown state too.
            st.reset_to_durable = Some(true);
        }
        Err(e) => {
            pipe.unsynced = None;
            pipe.unsynced_buffers.clear();
            fail(st, e, true);
        }
    }
}

/// Raises the high watermark to a completed write's (or fdatasync's)
/// point. A buffer cut inside a batch may complete no new batch: its point
/// is then at or below the mark, which does not move.
///
/// Checked in release builds (once per write or fdatasync): a point past
/// the log end or the active segment would let readers and producers take
/// bytes as acknowledged that were never written.
fn advance_acked(st: &mut State, end_offset: u64, end_len: u64) {
    assert!(
        end_offset <= st.next_offset,
        "acknowledging offset {end_offset}, past the log end offset {}",
        st.next_offset
    );
    assert!(
        end_len <= st.active().len,
        "acknowledging position {end_len}, past the active segment's length {}",
        st.active().len
    );
    // Both are the same batch boundary, one as an offset and one as a
    // position in the segment: they compare alike with the high watermark,
    // or the point is out of file order or from another segment.
    assert_eq!(
        end_offset.cmp(&st.acked_end),
        end_len.cmp(&st.acked_len),
        "acknowledgement point ({end_offset}, {end_len}) and high watermark ({}, {}) disagree",
        st.acked_end,
        st.acked_len
    );
    if end_offset > st.acked_end {
        st.acked_end = end_offset;
        st.acked_len = end_len;
    }
}

/// Issues the fdatasync the policy calls for, if any: with `always` as
/// soon as written data awaits one (appends that complete meanwhile share
/// the next: group commit); with `interval` once the period has passed
/// since the last one and acknowledged data is not yet durable. Returns
/// true when something completed at once.
fn start_sync(inner: &Inner, st: &mut State, pipe: &mut Pipeline, cx: &mut Context<'_>) -> bool {
    let target = match inner.config.fsync {
        FsyncPolicy::Never => return false,
        FsyncPolicy::Always => match pipe.unsynced.take() {
            Some(t) => t,
            None => return false,
        },
        FsyncPolicy::Interval(d) => {
            if st.synced_end >= st.acked_end {
                pipe.timer = None;
                return false;
            }
            if st.exclusive {
                // A roll or close is sealing the active segment and fsyncs
                // it itself. A sync of ours would race it: completing after
                // the roll it would speak of the old file, and failing it
                // would reset the segment under the roll. The roll leaves
                // nothing to sync; whoever ends it wakes the flusher.
                return false;
            }
            let since = pipe.last_sync.elapsed();
            if since < d {
                let timer = pipe
                    .timer
                    .get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(d - since)));
                if timer.as_mut().poll(cx).is_pending() {
                    return false;
                }
            }
            pipe.timer = None;
            pipe.last_sync = Instant::now();
            (st.acked_end, st.acked_len)
        }
    };
    let file = st.active().file.clone();
    let mut io: IoFuture = Box::pin(async move { file.sync().await });
    // The first poll issues it; a result already in is collected by the
    // caller's next pass.
    let done = match io.as_mut().poll(cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    };
    let completed = done.is_some();
    pipe.sync = Some(SyncInFlight {
        io,
        done,
        end_offset: target.0,
        end_len: target.1,
        segment: st.active().base_offset,
        buffers: std::mem::take(&mut pipe.unsynced_buffers),
    });
    completed
}

/// The next buffer to write, sealing the tail if it is its turn, or None
/// when the pipeline is full or must wait: for a write to complete (a
/// shared block) or, while others are in flight, for more data.
///
/// While I/O is in flight the disk is busy, so a new write gains nothing by
/// leaving early; it goes once the appends the last acknowledgement released
/// are back (`holding` false: see `State::refill_pending`) or the deadline
/// for them has passed. Issuing at once instead splits a closed loop of N
/// appenders into three groups (the write running, the one queued behind
/// it, and those refilling the tail) where two would do, so every write
/// carries a third of them rather than half.
fn next_write(
    inner: &Inner,
    st: &mut State,
    pipe: &Pipeline,
    holding: bool,
) -> Option<PendingWrite> {
    if st.closed || pipe.writes.len() >= WRITE_DEPTH {
        return None;
    }
    // With `always` an fdatasync in flight holds the appends back as a
    // write does: what arrives meanwhile joins the next write rather than
    // going out at once in a small one.
    let in_flight = pipe.writes.iter().any(|w| w.done.is_none())
        || (inner.config.fsync == FsyncPolicy::Always
            && (pipe.sync.is_some() || pipe.unsynced.is_some()));
    let last_in_flight = pipe.writes.back().is_some_and(|w| w.done.is_none());
    if let Some(front) = st.queue.front() {
        if front.sealed.shares_first_block && last_in_flight {
            return None;
        }
        return st.queue.pop_front();
    }
    let tail = st.tail.as_ref()?;
    if !tail.has_unwritten() || (tail.shares_first_block() && last_in_flight) {
        return None;
    }
    let big = tail.unwritten_below_cut() > 0
        && tail.unwritten_below_cut() >= inner.config.write_buffer_bytes / PIPELINED_WRITE_DIVISOR;
    let how = if in_flight {
        // The disk is busy: write only whole blocks, once the appends
        // expected back are in; the rest waits for the next write.
        if tail.unwritten_below_cut() == 0 || holding {
            return None;
        }
        Cut::AtBlock
    } else if big && st.appended_while_writing {
        // Concurrent load: leave the partial block to the next write so
        // that write can be issued while this one is in flight.
        Cut::AtBlock
    } else {
        // A lone appender: everything, in one write.
        Cut::Whole
    };
    st.appended_while_writing = false;
    let capacity = (tail.unwritten_len() * 2).min(inner.config.write_buffer_bytes);
    st.seal_tail(capacity, how);
    st.queue.pop_front()
}

/// Asserts what must hold of a write about to be issued after those in
/// `pipe`, once per write: it is block-aligned, in the same segment,
/// continues the last write issued (from its end, or from its last block
/// when it rewrites that partial block), and overlaps no write still in
/// flight.
fn check_issue_order(pipe: &Pipeline, w: &PendingWrite) {
    let pos = w.sealed.file_pos;
    assert_eq!(pos % BLOCK, 0, "a write must start at a block boundary");
    if let Some(last) = pipe.writes.back() {
        assert_eq!(
            last.segment, w.segment,
            "writes of two segments were in the pipeline at once"
        );
        let last_end = last.sealed.file_pos + last.sealed.buf.len() as u64;
        let expected = if w.sealed.shares_first_block {
            last_end.saturating_sub(BLOCK)
        } else {
            last_end
        };
        assert_eq!(
            pos, expected,
            "writes must be issued in file order, each continuing the last"
        );
    }
    assert!(
        pipe.writes
            .iter()
            .filter(|p| p.done.is_none())
            .all(|p| p.sealed.file_pos + p.sealed.buf.len() as u64 <= pos),
        "two writes in flight would cover the same block"
    );
}

/// Records a failed write or fsync: every append not yet acknowledged
/// fails, and the flusher resets the tail (once the I/O already issued is
/// in) before new appends are taken. After a failed
/// fsync nothing past the last durable point is trusted.
fn fail(st: &mut State, error: LogError, sync_failed: bool) {
    let trusted_end = if sync_failed {
        st.synced_end
    } else {
        st.acked_end
    };
    st.failures.push_back(Failure {
        epoch: st.epoch,
        acked_end: trusted_end,
        error,
    });
    while st.failures.len() > FAILURES_KEPT {
        st.failures.pop_front();
    }
    st.epoch += 1;
    st.queue.clear();
    st.reset_to_durable = Some(sync_failed);
}

/// Truncates the active segment back to the last acknowledged (or durable)
/// point and reloads the partial block from disk, so the next append
/// rewrites from known state. Retries on the next wake-up if the disk fails again.
async fn reset_tail(inner: &Inner, to_durable: bool) {
    let (file, target_len, target_offset) = {
        let mut st = inner.state.borrow_mut();
        if to_durable {
            // With `always` nothing is acknowledged before it is durable,
            // so this takes back no acknowledgement (with `interval` and
            // `never` it may: those policies acknowledge before the fsync).
            assert!(
                inner.config.fsync != FsyncPolicy::Always || st.synced_end >= st.acked_end,
                "with fsync=always an acknowledged append was not durable"
            );
            st.acked_end = st.synced_end;
            st.acked_len = st.synced_len;
        }
        // The truncation below must only cut back, at a point inside the
        // active segment.
        assert!(
            st.acked_end <= st.next_offset && st.acked_len <= st.active().len,
            "a reset would move the log end forward"
        );
        (st.active().file.clone(), st.acked_len, st.acked_end)
    };
    let carry_pos = align_down(target_len);
    let reloaded = async {
        file.truncate(target_len).await?;
        file.read_partial_block(target_len).await
    }
    .await;
    let failed = {
        let mut st = inner.state.borrow_mut();
        match reloaded {
            Ok(carry) => {
                st.tail = Some(Tail::new(
                    &file,
                    carry_pos,
                    &carry,
                    target_offset,
                    TAIL_START_BYTES,
                ));
                st.next_offset = target_offset;
                st.cache.clear();
                let seg = st.active_mut();
                seg.len = target_len;
                seg.next_offset = target_offset;
                seg.index.truncate_to(target_len as u32);
                // Epochs of batches given back go too (a leader's entry at
                // the end stays); the file catches up before the next roll
                // or close makes anything below it trusted.
                st.forget_epochs_from(target_offset);
                st.reset_to_durable = None;
                st.reset_error = None;
                st.wake_waiters();
                false
            }
            Err(e) => {
                // Leave the reset pending and retry shortly; appends meanwhile
                // fail with this error rather than wait.
                st.reset_error = Some(e);
                st.wake_waiters();
                true
            }
        }
    };
    if failed {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::{future::ready, time::Duration};

    use broker_format::BatchBuilder;

    use super::*;
    use crate::{Log, LogConfig};

    fn batch(value_len: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(&vec![7u8; value_len]), &[]);
        b.finish()
    }

    /// Regression: with `interval`, the timer can issue an fdatasync of the
    /// active segment while a roll is sealing it, and that sync can complete
    /// after the roll. It used to raise the new segment's durable length to
    /// the old segment's, so a later failed fsync "truncated back" the new
    /// segment to bytes it never had (seen in about one roll in 40 with a
    /// 5-10 ms interval). Driven here directly, since the window is one
    /// directory fsync wide.
    #[test]
    fn interval_sync_that_outlives_a_roll_leaves_the_new_segment_alone() {
        glommio::LocalExecutorBuilder::default()
            .io_memory(2 << 20)
            .make()
            .expect("glommio executor")
            .run(async {
                broker_shard::spawn_park_guard();
                let dir = tempfile::tempdir().expect("temporary directory");
                let cfg = LogConfig {
                    segment_bytes_max: 4096,
                    fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
                    retention_ms: None,
                    ..LogConfig::default()
                };
                let (log, _) = Log::open(dir.path(), cfg).await.expect("open");
                let first = log.append(&batch(3000)).await.expect("append");
                log.append(&batch(1500)).await.expect("append that rolls");
                {
                    let mut st = log.inner.state.borrow_mut();
                    assert_eq!(st.segments.len(), 2, "the second append rolled");
                    let old_len = st.segments[&0].len;
                    assert!(old_len > st.active().len);
                    assert_eq!((st.synced_end, st.synced_len), (first.next_offset, 0));
                    // The fdatasync of segment 0 issued before the roll ended.
                    let late = SyncInFlight {
                        io: Box::pin(ready(Ok(()))),
                        done: None,
                        end_offset: first.next_offset,
                        end_len: old_len,
                        segment: 0,
                        buffers: Vec::new(),
                    };
                    let mut pipe = Pipeline::new();
                    synced(&log.inner, &mut st, &mut pipe, late, Ok(()));
                    assert_eq!(
                        (st.synced_end, st.synced_len),
                        (first.next_offset, 0),
                        "a sync of the rolled segment moved the new segment's durable point"
                    );
                }
                log.close().await.expect("close");
            });
    }

    /// Regression: with `interval`, the timer issued fdatasyncs while a
    /// roll held the log; one that failed then reset the segment the roll
    /// was sealing. None is issued while the log is held exclusively, and
    /// the one that was due goes once it is released.
    #[test]
    fn interval_sync_waits_while_a_roll_holds_the_log() {
        glommio::LocalExecutorBuilder::default()
            .io_memory(2 << 20)
            .make()
            .expect("glommio executor")
            .run(async {
                broker_shard::spawn_park_guard();
                let dir = tempfile::tempdir().expect("temporary directory");
                let cfg = LogConfig {
                    fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
                    retention_ms: None,
                    ..LogConfig::default()
                };
                let faults = std::rc::Rc::new(crate::Faults::default());
                let (log, _) = Log::open_with_faults(dir.path(), cfg, Some(faults.clone()))
                    .await
                    .expect("open");
                // Until an acknowledged append is not yet durable (on a slow
                // disk the interval may pass before its write is in).
                let mut a = log.append(&batch(100)).await.expect("append");
                for _ in 0..100 {
                    if log.durable_offset() < a.next_offset {
                        break;
                    }
                    a = log.append(&batch(100)).await.expect("append");
                }
                // What a roll does first: take the log, then append nothing more.
                log.inner.state.borrow_mut().exclusive = true;
                let syncs = faults.syncs.get();
                glommio::timer::sleep(Duration::from_millis(100)).await;
                assert_eq!(
                    faults.syncs.get(),
                    syncs,
                    "an fdatasync was issued during a roll"
                );
                assert!(log.durable_offset() < a.next_offset);
                {
                    let mut st = log.inner.state.borrow_mut();
                    st.exclusive = false;
                    st.wake_flusher();
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while log.durable_offset() < a.next_offset {
                    assert!(Instant::now() < deadline, "the due fdatasync never came");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                log.close().await.expect("close");
            });
    }
}
