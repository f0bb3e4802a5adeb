//! One TCP connection to one broker address, with pipelining: any number of
//! requests in flight, answered in any order and paired by request id.
//!
//! Writers serialise on a mutex (one frame is written whole before the
//! next starts); a reader thread reads answer frames and completes the
//! pending request each one names. Every request completes exactly once,
//! through its callback: with its answer, or with the error that ended the
//! connection.
//!
//! Invariants:
//! - A frame is bounded by `max_frame_bytes` as soon as its 4 length bytes
//!   arrive, before anything is allocated for it.
//! - A connection that failed once (I/O error, peer closed, a bad frame, a
//!   request past its deadline) is dead for good: every pending request
//!   fails, later requests fail at once, and the caller reconnects. An
//!   answer stream is never resynchronised after an error.
//! - Callbacks run without any of the connection's locks held, so they may
//!   take their owner's locks (never the other way round: nobody calls into
//!   a connection while holding a lock a callback takes).
//! - A request registers as pending before its first byte is written, so an
//!   answer can never arrive for a request the reader does not know.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::error::{ClientError, ClientResult};
use super::ClientConfig;
use broker_protocol::{
    decode_as, decode_prefix, Frame, FrameError, FrameHeader, FrameWriter, Message,
    FRAME_PREFIX_LEN,
};

/// How often the reader thread wakes while waiting, to enforce deadlines.
const DEADLINE_TICK: Duration = Duration::from_millis(50);

/// Payloads up to this size are copied behind their header so the frame
/// leaves in one write (one segment with TCP_NODELAY); larger ones are
/// written straight from the caller's slice.
const COALESCE_PAYLOAD_BYTES: usize = 64 << 10;

/// What a pending request's completion is called with.
pub(crate) type Callback = Box<dyn FnOnce(ClientResult<Response>) + Send>;

/// An answer frame, whole, as read from the connection.
#[derive(Debug)]
pub struct Response {
    frame: Bytes,
    addr: Arc<str>,
    max_frame_bytes: usize,
}

impl Response {
    /// The frame's bytes: prefix, header, payload.
    pub fn bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The frame as shared bytes: parts of it (records' keys and values)
    /// are handed out as slices of it, without a copy.
    pub fn shared(&self) -> &Bytes {
        &self.frame
    }

    /// Decodes the frame as the answer `M` and turns a set `error` field
    /// into [`ClientError::Broker`]. An `ErrorResponse` reads as any `M`.
    pub fn decode<'a, M: Message<'a> + HasError<'a>>(&'a self) -> ClientResult<Frame<'a, M>> {
        let frame = decode_as::<M>(&self.frame, self.max_frame_bytes).map_err(|error| {
            ClientError::Protocol {
                addr: self.addr.to_string(),
                error,
            }
        })?;
        match frame.body.wire_error() {
            Some(e) if e.code() != broker_protocol::ErrorCode::None => {
                Err(ClientError::from_wire(e))
            }
            _ => Ok(frame),
        }
    }
}

/// A response table, whose field 0 is the `error` every response carries.
pub trait HasError<'a> {
    /// The `error` field: absent on success.
    fn wire_error(&self) -> Option<broker_protocol::generated::Error<'a>>;
}

macro_rules! has_error {
    ($($table:ident),* $(,)?) => {
        $(
            impl<'a> HasError<'a> for broker_protocol::generated::$table<'a> {
                fn wire_error(&self) -> Option<broker_protocol::generated::Error<'a>> {
                    self.error()
                }
            }
        )*
    };
}

has_error!(
    CreateTopicResponse,
    DeleteTopicResponse,
    ListTopicsResponse,
    MetadataResponse,
    ProduceResponse,
    FetchResponse,
    ListOffsetsResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ListGroupsResponse,
    DescribeGroupResponse,
);

/// A pipelined connection to one address. Cheap to clone; the socket closes
/// (failing what is still pending) when the last clone is dropped or
/// [`Connection::close`] is called.
#[derive(Debug, Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// Closes the connection when the last [`Connection`] goes; the reader
/// thread holds only [`Shared`], so it does not keep the socket open.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.fail(|_| ClientError::Disconnected {
            addr: self.shared.addr.to_string(),
            reason: "closed by the client".into(),
        });
    }
}

#[derive(Debug)]
struct Shared {
    addr: Arc<str>,
    max_frame_bytes: usize,
    next_id: AtomicU64,
    /// Serialises writers: one whole frame at a time. Taken before `state`.
    writer: Mutex<Writer>,
    state: Mutex<State>,
    /// A handle on the socket to shut it down without the writer lock.
    control: TcpStream,
}

struct Writer {
    stream: TcpStream,
    frames: FrameWriter,
    /// Bytes of whole frames not yet written to the socket.
    buf: Vec<u8>,
    /// Open [`Cork`]s: while any is, small frames gather in `buf` and go
    /// out together (one send for many requests) when the last one drops
    /// or `buf` passes [`COALESCE_PAYLOAD_BYTES`].
    corks: u32,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Set once, when the connection fails; the error later calls get.
    dead: Option<ClientError>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("pending", &self.pending.len())
            .field("dead", &self.dead)
            .finish()
    }
}

struct Pending {
    started: Instant,
    deadline: Instant,
    callback: Callback,
}

impl Connection {
    /// Connects to `addr` ("host:port"), with TCP_NODELAY, and starts its
    /// reader thread.
    pub fn connect(addr: &str, config: &ClientConfig) -> ClientResult<Connection> {
        let stream = connect_any(addr, config.connect_timeout)?;
        let io_error = |e: io::Error| ClientError::Connect {
            addr: addr.to_owned(),
            kind: e.kind(),
            message: e.to_string(),
        };
        stream.set_nodelay(true).map_err(io_error)?;
        // A peer that stops reading must not hold a writer forever.
        stream
            .set_write_timeout(Some(config.request_timeout.max(DEADLINE_TICK)))
            .map_err(io_error)?;
        let reader = stream.try_clone().map_err(io_error)?;
        reader
            .set_read_timeout(Some(DEADLINE_TICK))
            .map_err(io_error)?;
        let control = stream.try_clone().map_err(io_error)?;
        let shared = Arc::new(Shared {
            addr: Arc::from(addr),
            max_frame_bytes: config.max_frame_bytes,
            next_id: AtomicU64::new(1),
            writer: Mutex::new(Writer {
                stream,
                frames: FrameWriter::new(),
                buf: Vec::with_capacity(256),
                corks: 0,
            }),
            state: Mutex::new(State::default()),
            control,
        });
        let for_reader = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("broker-client-reader {addr}"))
            .spawn(move || read_loop(&for_reader, reader))
            .map_err(io_error)?;
        Ok(Connection {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// The address this connection was made to.
    pub fn addr(&self) -> &str {
        &self.handle.shared.addr
    }

    /// Whether the connection can still carry requests.
    pub fn is_alive(&self) -> bool {
        lock(&self.handle.shared.state).dead.is_none()
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        lock(&self.handle.shared.state).pending.len()
    }

    /// Closes the socket; everything pending fails with
    /// [`ClientError::Disconnected`].
    pub fn close(&self) {
        let addr = self.addr().to_owned();
        self.handle.shared.fail(|_| ClientError::Disconnected {
            addr: addr.clone(),
            reason: "closed by the client".into(),
        });
    }

    /// Sends a request and waits for its answer (or `timeout`).
    ///
    /// `build` appends the frame's prefix and header for the request id it is
    /// given (a [`FrameWriter`] method); `payload` follows it.
    pub fn call(
        &self,
        timeout: Duration,
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
        payload: &[u8],
    ) -> ClientResult<Response> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.request(
            timeout,
            build,
            payload,
            Box::new(move |result| {
                // The caller may have given up; nobody to tell then.
                let _ = tx.send(result);
            }),
        );
        // The callback always runs: on the answer, or when the reader
        // enforces the deadline (or the connection dies).
        rx.recv().unwrap_or_else(|_| {
            Err(ClientError::Disconnected {
                addr: self.addr().to_owned(),
                reason: "the request was dropped".into(),
            })
        })
    }

    /// Sends a request; `callback` runs exactly once, on the reader thread
    /// with the answer, or with the error that failed the request (possibly
    /// on this thread, before this returns). A request unanswered after
    /// `timeout` fails with [`ClientError::TimedOut`] and closes the
    /// connection.
    pub fn request(
        &self,
        timeout: Duration,
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
        payload: &[u8],
        callback: Callback,
    ) {
        let shared = &self.handle.shared;
        let mut writer = lock(&shared.writer);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = encode(&mut writer, id, build, payload) {
            drop(writer);
            callback(Err(e));
            return;
        }
        {
            let mut state = lock(&shared.state);
            if let Some(dead) = &state.dead {
                let dead = dead.clone();
                drop(state);
                drop(writer);
                callback(Err(dead));
                return;
            }
            let started = Instant::now();
            state.pending.insert(
                id,
                Pending {
                    started,
                    deadline: started + timeout,
                    callback,
                },
            );
        }
        let written = write_frame(&mut writer, payload);
        drop(writer);
        if let Err(e) = written {
            shared.fail_io(&e);
        }
    }

    /// Holds this connection's small frames back until the returned guard
    /// drops, so that the requests made meanwhile leave in one send instead
    /// of one each. Whoever corks must not wait for an answer to a request
    /// made under the cork before dropping it: that request may not be
    /// sent yet.
    pub fn cork(&self) -> Cork {
        lock(&self.handle.shared.writer).corks += 1;
        Cork {
            shared: Arc::clone(&self.handle.shared),
        }
    }

    /// Sends a request that gets no answer (a produce with acks = none).
    /// Returns once the frame is handed to the socket.
    pub fn send_only(
        &self,
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
        payload: &[u8],
    ) -> ClientResult<()> {
        let shared = &self.handle.shared;
        let mut writer = lock(&shared.writer);
        if let Some(dead) = &lock(&shared.state).dead {
            return Err(dead.clone());
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        encode(&mut writer, id, build, payload)?;
        let written = write_frame(&mut writer, payload);
        drop(writer);
        written.map_err(|e| {
            shared.fail_io(&e);
            shared.disconnected(&e)
        })
    }
}

/// Appends the frame's prefix and header (and a small payload) to the
/// writer's buffer.
fn encode(
    writer: &mut Writer,
    id: u64,
    build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
    payload: &[u8],
) -> ClientResult<()> {
    let Writer { frames, buf, .. } = writer;
    // Frames held back by a cork stay; a failed encoding leaves them whole.
    let start = buf.len();
    let header = match build(frames, buf, id) {
        Ok(h) if h.payload_len() == payload.len() => h,
        Ok(h) => {
            buf.truncate(start);
            return Err(ClientError::InvalidArgument(format!(
                "the frame declares {} payload bytes but {} were given",
                h.payload_len(),
                payload.len()
            )));
        }
        Err(e) => {
            buf.truncate(start);
            return Err(ClientError::InvalidArgument(format!(
                "cannot encode the request: {e}"
            )));
        }
    };
    if header.payload_len() <= COALESCE_PAYLOAD_BYTES {
        buf.extend_from_slice(payload);
    }
    Ok(())
}

/// Sends the frame just encoded: at once, or (small, under a cork) with the
/// next ones. A large payload goes straight from the caller's buffer.
fn write_frame(writer: &mut Writer, payload: &[u8]) -> io::Result<()> {
    if payload.len() > COALESCE_PAYLOAD_BYTES {
        flush(writer)?;
        return writer.stream.write_all(payload);
    }
    if writer.corks == 0 || writer.buf.len() >= COALESCE_PAYLOAD_BYTES {
        flush(writer)?;
    }
    Ok(())
}

/// Writes out every frame held back.
fn flush(writer: &mut Writer) -> io::Result<()> {
    if writer.buf.is_empty() {
        return Ok(());
    }
    let written = writer.stream.write_all(&writer.buf);
    // Written or not, these bytes are done with: after a failed write the
    // connection is failed whole.
    writer.buf.clear();
    written
}

/// Held-back frames of a corked connection; see [`Connection::cork`].
#[derive(Debug)]
pub struct Cork {
    shared: Arc<Shared>,
}

impl Drop for Cork {
    fn drop(&mut self) {
        let mut writer = lock(&self.shared.writer);
        writer.corks -= 1;
        if writer.corks == 0 {
            let written = flush(&mut writer);
            drop(writer);
            if let Err(e) = written {
                self.shared.fail_io(&e);
            }
        }
    }
}

impl Shared {
    fn disconnected(&self, e: &io::Error) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.to_string(),
            reason: e.to_string(),
        }
    }

    fn fail_io(&self, e: &io::Error) {
        let error = self.disconnected(e);
        self.fail(|_| error.clone());
    }

    /// Marks the connection dead (the first failure's error sticks), shuts
    /// the socket and fails every pending request with `error_for(id)`.
    fn fail(&self, error_for: impl Fn(u64) -> ClientError) {
        let pending = {
            let mut state = lock(&self.state);
            if state.dead.is_none() {
                state.dead = Some(error_for(0));
            }
            std::mem::take(&mut state.pending)
        };
        // Wakes the reader thread; errors mean it is already shut.
        let _ = self.control.shutdown(Shutdown::Both);
        for (id, p) in pending {
            (p.callback)(Err(error_for(id)));
        }
    }

    /// Fails the connection if a request is past its deadline: that request
    /// with TimedOut, the others with Disconnected.
    fn enforce_deadlines(&self) -> Result<(), ()> {
        let now = Instant::now();
        let expired: HashMap<u64, Duration> = {
            let state = lock(&self.state);
            if state.dead.is_some() {
                return Err(());
            }
            state
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(&id, p)| (id, now - p.started))
                .collect()
        };
        if expired.is_empty() {
            return Ok(());
        }
        let addr = self.addr.to_string();
        self.fail(|id| match expired.get(&id) {
            Some(&after) => ClientError::TimedOut {
                addr: addr.clone(),
                after,
            },
            None => ClientError::Disconnected {
                addr: addr.clone(),
                reason: "closed after a request on it timed out".into(),
            },
        });
        Err(())
    }

    fn protocol_error(&self, error: FrameError) {
        let e = ClientError::Protocol {
            addr: self.addr.to_string(),
            error,
        };
        self.fail(|_| e.clone());
    }
}

/// The reader thread: reads answer frames until the connection fails.
fn read_loop(shared: &Shared, mut stream: TcpStream) {
    let mut next_check = Instant::now() + DEADLINE_TICK;
    loop {
        let frame = match read_frame(shared, &mut stream) {
            Ok(frame) => frame,
            Err(ReadStop::Io(e)) => return shared.fail_io(&e),
            Err(ReadStop::Closed) => {
                let error = ClientError::Disconnected {
                    addr: shared.addr.to_string(),
                    reason: "closed by the peer".into(),
                };
                return shared.fail(|_| error.clone());
            }
            Err(ReadStop::Frame(e)) => return shared.protocol_error(e),
            Err(ReadStop::Done) => return,
        };
        // Answers keep coming: deadlines are still checked on the tick.
        if Instant::now() >= next_check {
            next_check = Instant::now() + DEADLINE_TICK;
            if shared.enforce_deadlines().is_err() {
                return;
            }
        }
        let Some((header, frame)) = frame else {
            continue;
        };
        if !header.is_response() {
            return shared.protocol_error(FrameError::UnexpectedMessage {
                expected: "response",
                api_key: header.api_key(),
                response: false,
            });
        }
        if header.request_id() == 0 {
            // A connection-level error the broker sends unasked (request id
            // 0, e.g. TooManyConnections) before closing: every pending
            // request fails with it.
            let body = frame
                .get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + header.header_len())
                .unwrap_or_default();
            if let Ok(answer) = flatbuffers::root::<broker_protocol::generated::ErrorResponse>(body)
            {
                if let Some(e) = answer.error() {
                    let error = ClientError::Broker {
                        code: e.code(),
                        message: e.message().unwrap_or("").to_string(),
                        valid_range: None,
                    };
                    return shared.fail(|_| error.clone());
                }
            }
        }
        let pending = lock(&shared.state).pending.remove(&header.request_id());
        let Some(pending) = pending else {
            // Not ours: the stream no longer pairs answers with requests.
            let error = ClientError::Disconnected {
                addr: shared.addr.to_string(),
                reason: format!(
                    "answer to unknown request id {} ({:?})",
                    header.request_id(),
                    header.api_key()
                ),
            };
            return shared.fail(|_| error.clone());
        };
        (pending.callback)(Ok(Response {
            frame: Bytes::from(frame),
            addr: Arc::clone(&shared.addr),
            max_frame_bytes: shared.max_frame_bytes,
        }));
    }
}

enum ReadStop {
    Io(io::Error),
    Closed,
    Frame(FrameError),
    /// The connection was failed elsewhere (deadline, client close).
    Done,
}

/// Reads one whole frame. `Ok(None)`: nothing arrived within a tick.
#[allow(clippy::type_complexity)]
fn read_frame(
    shared: &Shared,
    stream: &mut TcpStream,
) -> Result<Option<(FrameHeader, Vec<u8>)>, ReadStop> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    // The length field alone is checked first: an oversized claim is refused
    // before the rest of the prefix, let alone the frame, is read.
    if !read_exact(shared, stream, &mut prefix[..4], true)? {
        return Ok(None);
    }
    decode_prefix(&prefix[..4], shared.max_frame_bytes).map_err(ReadStop::Frame)?;
    read_exact(shared, stream, &mut prefix[4..], false)?;
    let header = decode_prefix(&prefix, shared.max_frame_bytes)
        .map_err(ReadStop::Frame)?
        .ok_or(ReadStop::Closed)?;
    // Bounded: decode_prefix checked frame_bytes against max_frame_bytes.
    // Read into the spare capacity: no zeroing of what the socket fills.
    let total = header.frame_bytes();
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&prefix);
    while frame.len() < total {
        let left = (total - frame.len()) as u64;
        match Read::take(&mut *stream, left).read_to_end(&mut frame) {
            Ok(0) => return Err(closed(shared)),
            Ok(_) => {}
            Err(e) => {
                read_error(shared, e)?;
            }
        }
    }
    Ok(Some((header, frame)))
}

/// Fills `buf`, waking every tick to enforce deadlines. With `idle`, gives
/// up (`Ok(false)`) when a tick passes before the first byte.
fn read_exact(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut [u8],
    idle: bool,
) -> Result<bool, ReadStop> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(closed(shared)),
            Ok(n) => filled += n,
            Err(e) => {
                if read_error(shared, e)? && idle && filled == 0 {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// The peer closed the connection (or it was failed elsewhere).
fn closed(shared: &Shared) -> ReadStop {
    if lock(&shared.state).dead.is_some() {
        ReadStop::Done
    } else {
        ReadStop::Closed
    }
}

/// What a read error means: `Ok(true)` a tick passed (deadlines enforced),
/// `Ok(false)` interrupted, read on either way; `Err` stop reading.
fn read_error(shared: &Shared, e: io::Error) -> Result<bool, ReadStop> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(false),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            if shared.enforce_deadlines().is_err() {
                return Err(ReadStop::Done);
            }
            Ok(true)
        }
        _ if lock(&shared.state).dead.is_some() => Err(ReadStop::Done),
        _ => Err(ReadStop::Io(e)),
    }
}

/// Connects to the first address `addr` resolves to that accepts.
fn connect_any(addr: &str, timeout: Duration) -> ClientResult<TcpStream> {
    let fail = |e: io::Error| ClientError::Connect {
        addr: addr.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    };
    let candidates: Vec<SocketAddr> = addr.to_socket_addrs().map_err(fail)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves
/// its state consistent between statements, and a panicking callback must
/// not take the connection down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use std::{io::Read, net::TcpListener};

    use super::*;
    use broker_protocol::Acks;

    fn produce(conn: &Connection, payload: &[u8]) {
        conn.send_only(
            |w, out, id| w.produce_request(out, id, "t", 0, Acks::None, payload.len()),
            payload,
        )
        .unwrap();
    }

    /// Reads what arrives within `wait`.
    fn read_for(peer: &mut TcpStream, wait: Duration) -> Vec<u8> {
        peer.set_read_timeout(Some(wait)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        got
    }

    #[test]
    fn a_cork_holds_small_frames_until_it_drops_then_sends_them_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conn = Connection::connect(&addr, &ClientConfig::default()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();

        // Uncorked: each frame goes out at once.
        produce(&conn, b"first");
        let alone = read_for(&mut peer, Duration::from_millis(200));
        assert!(alone.ends_with(b"first"), "sent at once");

        let cork = conn.cork();
        let nested = conn.cork();
        produce(&conn, b"second");
        produce(&conn, b"third");
        drop(nested);
        assert!(
            read_for(&mut peer, Duration::from_millis(200)).is_empty(),
            "nothing leaves while a cork is held"
        );
        drop(cork);
        let both = read_for(&mut peer, Duration::from_millis(200));
        // Two whole frames, in order: the same framing as the uncorked
        // one, with a payload one byte longer ("second") and as long
        // ("third").
        let frame_len = alone.len();
        assert_eq!(both.len(), 2 * frame_len + 1);
        let (a, b) = both.split_at(frame_len + 1);
        assert!(a.ends_with(b"second"), "{a:?}");
        assert!(b.ends_with(b"third"), "{b:?}");
    }
}
