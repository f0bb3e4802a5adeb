//! One Kafka client connection: size-prefixed frames in, answers out in
//! request order.
//!
//! Kafka guarantees that a connection's answers come in the order of its
//! requests (clients match them by position; kafka-python and aiokafka
//! close the connection on a mismatch). Requests still run concurrently:
//! each is spawned as its own task in arrival order (so pipelined produces
//! to one partition are appended in the order sent, as on the native
//! path), takes a sequence number, and hands its reply to the connection's
//! [`Outbox`]; one writer task writes replies strictly by sequence number,
//! every consecutive ready one in one go. A reply with no answer (acks=0)
//! only takes its turn.
//!
//! Reading and bounds are the native connection's: frames are split off
//! one read buffer without a copy, a frame's size is checked against
//! `max_frame_bytes` before room is reserved for it, and a connection holds
//! at most `connection_in_flight_bytes` of requests read but not answered
//! (each permit is released when its answer is written). A size prefix out
//! of range closes the connection (Kafka's behaviour; there is no frame to
//! answer in).

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    rc::Rc,
    task::{Poll, Waker},
};

use bytes::BytesMut;
use glommio::{net::TcpStream, sync::Semaphore};

use super::{handle, Reply};
use crate::connection::{Stream, FIRST_READ};
use crate::copy_stats;
use crate::service::Records;
use crate::shard::{InFlight, Shard};

/// Most requests one connection may have in flight (see the native
/// connection's bound).
const MAX_REQUESTS_IN_FLIGHT: usize = 256;
/// The smallest request: api key, version, correlation id, client id.
const MIN_REQUEST: usize = 10;
/// Bytes of answers gathered before they are written.
const WRITE_BATCH: usize = 64 << 10;

/// Replies by sequence number, and the writer's place.
struct Outbox {
    ready: RefCell<BTreeMap<u64, (Reply, glommio::sync::StaticPermit)>>,
    /// The next sequence number to write.
    next: Cell<u64>,
    /// Sequence numbers given out so far (the reader's count), once the
    /// reader has stopped.
    end: Cell<Option<u64>>,
    writer: RefCell<Option<Waker>>,
    /// A write failed or a reply closed the connection: the reader stops.
    broken: Cell<bool>,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            ready: RefCell::new(BTreeMap::new()),
            next: Cell::new(0),
            end: Cell::new(None),
            writer: RefCell::new(None),
            broken: Cell::new(false),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }

    fn put(&self, seq: u64, reply: Reply, permit: glommio::sync::StaticPermit) {
        self.ready.borrow_mut().insert(seq, (reply, permit));
        if seq == self.next.get() {
            self.wake();
        }
    }

    /// The replies ready from `next` on, in order; None when the reader
    /// stopped and everything was written.
    async fn take(&self) -> Option<Vec<(Reply, glommio::sync::StaticPermit)>> {
        std::future::poll_fn(|cx| {
            let mut ready = self.ready.borrow_mut();
            let mut out = Vec::new();
            let mut next = self.next.get();
            while let Some(entry) = ready.remove(&next) {
                out.push(entry);
                next += 1;
            }
            self.next.set(next);
            if !out.is_empty() {
                return Poll::Ready(Some(out));
            }
            if self.broken.get() || self.end.get() == Some(next) {
                return Poll::Ready(None);
            }
            *self.writer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Serves one Kafka connection until the peer closes it or breaks the
/// protocol.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let connections = &shard.metrics().connections;
    connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stream = Rc::new(Stream::new(stream));
    let outbox = Rc::new(Outbox::new());
    let writer = glommio::spawn_local(write_replies(stream.clone(), outbox.clone()));
    read_requests(&shard, &stream, &outbox).await;
    // In-flight requests finish; the writer writes their answers and ends.
    writer.await;
    connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn read_requests(shard: &Rc<Shard>, stream: &Rc<Stream>, outbox: &Rc<Outbox>) {
    let budget_bytes = shard.config().connection_in_flight_bytes;
    let budget = Rc::new(Semaphore::new(budget_bytes as u64));
    let max_frame = shard.config().max_frame_bytes;
    let min_cost = (budget_bytes / MAX_REQUESTS_IN_FLIGHT).max(1);
    let mut buf = BytesMut::new();
    let mut chunk = FIRST_READ;
    let mut seq = 0u64;
    loop {
        if buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let Some(size) = usize::try_from(size)
                .ok()
                .filter(|&s| (MIN_REQUEST..=max_frame).contains(&s))
            else {
                tracing::warn!(
                    size,
                    max = max_frame,
                    "closing a Kafka connection: request size out of range"
                );
                stream.shutdown();
                break;
            };
            if buf.len() >= 4 + size {
                let frame = buf.split_to(4 + size).freeze().slice(4..);
                let cost = (4 + size).clamp(min_cost, budget_bytes) as u64;
                let Ok(permit) = budget.acquire_static_permit(cost).await else {
                    break;
                };
                let (shard, outbox) = (shard.clone(), outbox.clone());
                let in_flight = InFlight::new(shard.clone());
                let me = seq;
                seq += 1;
                glommio::spawn_local(async move {
                    let reply = handle(&shard, frame).await;
                    outbox.put(me, reply, permit);
                    drop(in_flight);
                })
                .detach();
                continue;
            }
            buf.reserve(4 + size - buf.len());
        }
        if stream.read_more(&mut buf, &mut chunk).await == 0 || outbox.broken.get() {
            break;
        }
    }
    outbox.end.set(Some(seq));
    outbox.wake();
}

/// Writes replies in sequence order until the connection ends.
async fn write_replies(stream: Rc<Stream>, outbox: Rc<Outbox>) {
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    while let Some(replies) = outbox.take().await {
        let mut permits = Vec::with_capacity(replies.len());
        let mut close = false;
        let mut ok = true;
        for (reply, permit) in replies {
            permits.push(permit);
            let response = match reply {
                Reply::Send(r) => r,
                Reply::Nothing => continue,
                Reply::Close => {
                    close = true;
                    break;
                }
            };
            out.extend_from_slice(&response.head);
            for (records, after) in &response.pieces {
                // Straight from the log's buffer to send(2): what is
                // gathered goes first.
                if ok && !out.is_empty() {
                    ok = stream.write_all(&out).await.is_ok();
                    out.clear();
                }
                let bytes = records.as_slice();
                if let Records::Log(_) = records {
                    copy_stats::sent_from_log_buffer(bytes.len());
                }
                if ok {
                    ok = stream.write_all(bytes).await.is_ok();
                }
                out.extend_from_slice(after);
            }
            if ok && out.len() >= WRITE_BATCH {
                ok = stream.write_all(&out).await.is_ok();
                out.clear();
            }
        }
        if ok && !out.is_empty() {
            ok = stream.write_all(&out).await.is_ok();
        }
        out.clear();
        drop(permits);
        if close || !ok {
            outbox.broken.set(true);
            stream.shutdown();
            break;
        }
    }
}
