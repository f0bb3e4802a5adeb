//! One client connection: read frames, hand each to its own task, write the
//! answers as they complete (pipelining: a connection may have many
//! requests in flight, answered in any order and matched by request id).
//!
//! Reading: frames are read into one growing buffer and split off it
//! without a copy (`BytesMut::split_to`), so a produce request's record
//! bytes go from the socket read to the log's write buffer with no copy in
//! between. A frame larger than what is buffered reserves room for itself
//! once its prefix is known (the bytes of it already read may move once).
//!
//! Bounds: a prefix is checked (frame size limit, version) before anything
//! is allocated for its frame; a connection holds at most
//! `connection_in_flight_bytes` of requests read but not answered, and stops
//! reading while it is at that bound. A prefix error is answered (under the
//! frame's api key and request id when they were read) and the connection
//! closed; any other bad request gets an error answer and the connection
//! goes on.
//!
//! Ordering: requests are spawned in arrival order on the shard's executor,
//! which runs tasks first-in first-out, and a log places appends in the
//! order they were first polled (those that wait out a roll keep their
//! place in a queue); so produce requests pipelined on one connection
//! to one partition are appended in the order they were sent.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    io,
    pin::Pin,
    rc::Rc,
};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::{net::TcpStream, sync::Semaphore};

use crate::copy_stats;
use crate::native::{self, Reply, Response, Via};
use crate::service::Records;
use crate::shard::{InFlight, Shard};
use broker_protocol::{decode_prefix, ApiKey, ResponseError, FRAME_PREFIX_LEN};

/// How much is read from the socket at a time, at most.
const READ_CHUNK: usize = 64 << 10;

/// The first read's size: an idle connection holds this much. Reads grow
/// (doubling up to [`READ_CHUNK`]) while they come back full.
pub(crate) const FIRST_READ: usize = 4 << 10;

/// Most requests one connection may have in flight: each request is
/// charged at least this fraction of the in-flight byte budget, so a flood
/// of tiny pipelined requests cannot crowd the shard's task queue.
const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// The stream, shared by the reader and the tasks that write answers. Each
/// borrow lasts one poll, never across an await.
pub(crate) struct Stream(RefCell<TcpStream>);

impl Stream {
    /// Wraps `stream`.
    pub(crate) fn new(stream: TcpStream) -> Stream {
        Stream(RefCell::new(stream))
    }

    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }

    /// Reads what the socket has into the end of `buf`, at most `chunk`
    /// bytes, and grows `chunk` (doubling up to [`READ_CHUNK`]) when the
    /// read came back full; 0 at the end of the stream or on an error
    /// (which ends a connection like an end of stream). The read area is
    /// zeroed before use (no uninitialised memory is handed out), so it is
    /// kept to one chunk per read.
    pub(crate) async fn read_more(&self, buf: &mut BytesMut, chunk: &mut usize) -> usize {
        if buf.capacity() - buf.len() < *chunk {
            buf.reserve(*chunk);
        }
        let start = buf.len();
        let want = (buf.capacity() - start).min(*chunk);
        buf.resize(start + want, 0);
        let n: usize = self.read(&mut buf[start..]).await.unwrap_or_default();
        buf.truncate(start + n);
        if n == want {
            *chunk = (*chunk * 2).min(READ_CHUNK);
        }
        n
    }

    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Shuts both directions down: the peer sees the end of the stream and
    /// the reader's pending read returns.
    pub(crate) fn shutdown(&self) {
        use std::os::fd::AsRawFd;
        let fd = self.0.borrow().as_raw_fd();
        // SAFETY: shutdown(2) on a descriptor this stream owns and keeps open.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// The writing side: one answer at a time, each written whole. Answers
/// without a payload (produce acks, metadata, errors) are queued and
/// written together: the first one to arrive becomes the flusher, lets the
/// other tasks that are ready run (an fsync completes a whole group of
/// appends at once), then writes everything queued in one send and goes on
/// until the queue is empty; answers queued meanwhile are its job (their
/// tasks wait for the turn, holding their in-flight permits, so the queue
/// is bounded by the connection's in-flight budget). Answers with a payload (fetches) are written
/// head then payload, straight from the log's buffer, under the same turn.
struct Writer {
    stream: Rc<Stream>,
    turn: Semaphore,
    /// Heads of answers waiting for the flusher.
    queue: RefCell<Vec<u8>>,
    /// Whether a task is flushing the queue.
    flushing: Cell<bool>,
    /// Set when a write failed or the connection must close: the reader
    /// stops.
    broken: Cell<bool>,
}

impl Writer {
    fn new(stream: Rc<Stream>) -> Writer {
        Writer {
            stream,
            turn: Semaphore::new(1),
            queue: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
            broken: Cell::new(false),
        }
    }

    /// Sends `response`; an answer without a payload may still be queued
    /// when this returns (written by the flusher, whose failure marks the
    /// connection broken).
    async fn send(&self, response: &Response) -> io::Result<()> {
        if response.payload.is_some() || !response.pieces.is_empty() {
            return self.send_now(response).await;
        }
        self.queue.borrow_mut().extend_from_slice(&response.head);
        if self.flushing.get() {
            // The flusher writes it; this task waits for its turn, by when
            // it usually has, so it keeps its in-flight permit until then
            // and a peer that does not read cannot grow the queue without
            // bound.
            let _turn = self.take_turn().await?;
            return self.write_queued().await.map(|_| ());
        }
        self.flushing.set(true);
        let flushed = self.flush().await;
        self.flushing.set(false);
        if flushed.is_err() {
            self.broken.set(true);
        }
        flushed
    }

    /// Writes whatever is queued, then `response`, before returning.
    async fn send_now(&self, response: &Response) -> io::Result<()> {
        let _turn = self.take_turn().await?;
        self.write_queued().await?;
        self.stream.write_all(&response.head).await?;
        for payload in response.payload.iter().chain(&response.pieces) {
            let bytes = payload.as_slice();
            if let Records::Log(_) = payload {
                // Straight from the log's buffer (a DMA read or the written
                // tail) to send(2): the zero-copy fetch.
                copy_stats::sent_from_log_buffer(bytes.len());
            }
            self.stream.write_all(bytes).await?;
        }
        Ok(())
    }

    async fn flush(&self) -> io::Result<()> {
        let _turn = self.take_turn().await?;
        // Let the answers that are ready join this write.
        futures_lite::future::yield_now().await;
        while self.write_queued().await? {}
        Ok(())
    }

    /// Writes what is queued; whether there was anything. The caller holds
    /// the turn.
    async fn write_queued(&self) -> io::Result<bool> {
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        if queued.is_empty() {
            return Ok(false);
        }
        self.stream.write_all(&queued).await?;
        Ok(true)
    }

    async fn take_turn(&self) -> io::Result<glommio::sync::Permit<'_>> {
        self.turn
            .acquire_permit(1)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Serves one connection until the peer closes it or breaks the protocol.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, via: Via) {
    let _ = stream.set_nodelay(true);
    let connections = &shard.metrics().connections;
    connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serve_frames(&shard, stream, via).await;
    connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Refuses a connection over the limit: one TooManyConnections answer
/// (request id 0, api key 0), then the connection is closed. Bounded in
/// time, so a peer that does not read cannot hold the task.
pub async fn refuse(shard: Rc<Shard>, stream: TcpStream) {
    let response = native::wire_error_response(
        ApiKey(0),
        0,
        &ResponseError::new(
            broker_protocol::ErrorCode::TooManyConnections,
            &format!(
                "the broker is at its limit of {} connections",
                shard.config().max_connections()
            ),
        ),
    );
    let stream = Stream(RefCell::new(stream));
    let _ = glommio::timer::timeout(std::time::Duration::from_secs(1), async {
        stream.write_all(&response.head).await.map_err(Into::into)
    })
    .await;
    stream.shutdown();
}

async fn serve_frames(shard: &Rc<Shard>, stream: TcpStream, via: Via) {
    let stream = Rc::new(Stream(RefCell::new(stream)));
    let writer = Rc::new(Writer::new(stream.clone()));
    let budget_bytes = shard.config().connection_in_flight_bytes;
    let budget = Rc::new(Semaphore::new(budget_bytes as u64));
    let max_frame = shard.config().max_frame_bytes;
    let min_cost = (budget_bytes / MAX_REQUESTS_IN_FLIGHT).max(1);
    let mut buf = BytesMut::new();
    let mut chunk = FIRST_READ;
    loop {
        match decode_prefix(&buf, max_frame) {
            Err(e) => {
                let (api, id) = if buf.len() >= FRAME_PREFIX_LEN {
                    native::raw_ids(&buf)
                } else {
                    (ApiKey(0), 0)
                };
                let response = native::frame_error_response(api, id, &e);
                tracing::debug!(error = %e, "closing a connection that broke the protocol");
                let _ = writer.send_now(&response).await;
                stream.shutdown();
                break;
            }
            Ok(Some(header)) if buf.len() >= header.frame_bytes() => {
                let frame = buf.split_to(header.frame_bytes()).freeze();
                let cost = frame.len().clamp(min_cost, budget_bytes) as u64;
                let Ok(permit) = budget.acquire_static_permit(cost).await else {
                    break;
                };
                let shard = shard.clone();
                let writer = writer.clone();
                let in_flight = InFlight::new(shard.clone());
                glommio::spawn_local(async move {
                    let reply = native::handle(&shard, frame, via).await;
                    let ok = match reply {
                        Reply::Send(response) => writer.send(&response).await.is_ok(),
                        Reply::Nothing => true,
                        Reply::Close(response) => {
                            if let Some(response) = response {
                                let _ = writer.send_now(&response).await;
                            }
                            writer.stream.shutdown();
                            false
                        }
                    };
                    if !ok {
                        writer.broken.set(true);
                    }
                    drop(permit);
                    drop(in_flight);
                })
                .detach();
                continue;
            }
            Ok(Some(header)) => {
                // Room for the whole frame, so it is read in place.
                buf.reserve(header.frame_bytes() - buf.len());
            }
            Ok(None) => {}
        }
        if stream.read_more(&mut buf, &mut chunk).await == 0 || writer.broken.get() {
            break;
        }
    }
    // In-flight requests finish and answer on their own; the stream closes
    // when the last task drops it.
}
