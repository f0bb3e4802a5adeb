//! One TCP proxy: an accept loop, and per connection two pump threads (one
//! per direction) that read with a timeout, apply the direction's current
//! fault, and write with a timeout, so that a change of fault, a reset and
//! a stop are all seen within a few ticks.

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    limits::{ACCEPT_POLL, CHUNK_BYTES, CONNECT_TIMEOUT, DELAY_LINE_BYTES, MAX_CONNECTIONS, TICK},
    rng::{derive, Rng},
    Direction, Fault,
};

/// A proxy from one listen address to one target, with a fault per
/// direction. Dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// What one direction carried, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// Bytes written to the other side.
    pub forwarded_bytes: u64,
    /// Bytes read and discarded under [`Fault::Drop`].
    pub dropped_bytes: u64,
}

/// A snapshot of a proxy's counters since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Connections accepted on the listen address (reset ones included).
    pub accepted: u64,
    /// Connections reset by the proxy: a `Cut` (existing or at accept), a
    /// `Flaky` draw, a `Drop` lifted over a stream with a hole, a target
    /// that could not be reached, the connection limit, or a stop.
    pub resets: u64,
    /// Client to target.
    pub forward: Flow,
    /// Target to client.
    pub backward: Flow,
}

/// Index of a direction's fault and counters: forward, backward.
const FORWARD: usize = 0;
const BACKWARD: usize = 1;

/// What the accept loop and every pump share.
struct Shared {
    faults: Mutex<[Fault; 2]>,
    stop: AtomicBool,
    seed: u64,
    accepted: AtomicU64,
    resets: AtomicU64,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    live: AtomicUsize,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, [Fault; 2]> {
        // A pump never panics while holding the lock; if one did, the
        // faults themselves are still whole values.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Proxy {
    /// Listens on `listen` (port 0: a free one, see [`Proxy::addr`]) and
    /// forwards each accepted connection to `target`, every direction
    /// `Pass` until [`Proxy::set`] says otherwise. `seed` drives the
    /// `Flaky` draws.
    pub fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new([Fault::Pass; 2]),
            stop: AtomicBool::new(false),
            seed,
            accepted: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            dropped: [AtomicU64::new(0), AtomicU64::new(0)],
            live: AtomicUsize::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("netfault-{addr}"))
                .spawn(move || accept_loop(listener, target, shared))?
        };
        Ok(Proxy {
            addr,
            target,
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on: what a client dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets the fault of `direction`, for existing connections and new
    /// ones: every byte read after it returns gets the new fault (chunks
    /// already in a delay line keep their due time); a `Cut` resets
    /// existing connections within a [`TICK`] or so.
    pub fn set(&self, direction: Direction, fault: Fault) {
        let mut faults = self.shared.faults();
        match direction {
            Direction::Forward => faults[FORWARD] = fault,
            Direction::Backward => faults[BACKWARD] = fault,
            Direction::Both => *faults = [fault; 2],
        }
    }

    /// The current faults: (forward, backward).
    pub fn faults(&self) -> (Fault, Fault) {
        let faults = self.shared.faults();
        (faults[FORWARD], faults[BACKWARD])
    }

    /// Every direction back to `Pass`.
    pub fn heal(&self) {
        self.set(Direction::Both, Fault::Pass);
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        let flow = |i: usize| Flow {
            forwarded_bytes: s.forwarded[i].load(Ordering::Relaxed),
            dropped_bytes: s.dropped[i].load(Ordering::Relaxed),
        };
        Counters {
            accepted: s.accepted.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
            forward: flow(FORWARD),
            backward: flow(BACKWARD),
        }
    }

    /// Stops accepting, resets every connection, and waits for every thread
    /// of the proxy to exit (each does within a few ticks, or the connect
    /// timeout of a connection still dialing its target).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            // The accept loop joins the connection threads it started; a
            // panic in one is a bug in this crate, shown by the test that
            // stops it.
            if accept.join().is_err() {
                panic!("a netfault thread of {} panicked", self.addr);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop();
        } else {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !shared.stopped() {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            // Nothing yet; or a connection that died in the backlog, or a
            // descriptor shortage: look again after a pause, not in a spin.
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        connections.retain(|c| !c.is_finished());
        let cut = shared.faults().contains(&Fault::Cut);
        if cut || shared.live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            reset(&client);
            shared.resets.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let id = next_id;
        next_id += 1;
        shared.live.fetch_add(1, Ordering::Relaxed);
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("netfault-conn-{id}"))
            .spawn(move || {
                connection(client, target, id, &conn_shared);
                conn_shared.live.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(handle) => connections.push(handle),
            // No thread for it: the client was moved into the closure and
            // dropped with it (closed); count it as not carried.
            Err(_) => {
                shared.live.fetch_sub(1, Ordering::Relaxed);
                shared.resets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for c in connections {
        if c.join().is_err() {
            panic!("a netfault connection thread panicked");
        }
    }
}

/// Both sockets of one proxied connection.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Set by whichever pump resets the connection; the other one then
    /// exits too, and the last to go closes both sockets (with SO_LINGER 0:
    /// an RST).
    dead: AtomicBool,
}

impl Conn {
    fn reset(&self, shared: &Shared) {
        if !self.dead.swap(true, Ordering::Relaxed) {
            reset(&self.client);
            reset(&self.server);
            shared.resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }
}

/// Makes the socket's close send an RST instead of a FIN (SO_LINGER 0).
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a descriptor the stream owns, with a pointer
    // to a live `linger` and its exact size. Its failure leaves a FIN
    // instead of an RST, which the peer still sees as the end.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// One accepted connection: dial the target, then pump both ways.
fn connection(client: TcpStream, target: SocketAddr, id: u64, shared: &Arc<Shared>) {
    let server = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            // The target refused or did not answer: the client sees its
            // connection reset, as near a refusal as an accepted one gets.
            reset(&client);
            shared.resets.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let setup = [&client, &server].into_iter().try_for_each(|s| {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(TICK))
    });
    let conn = Arc::new(Conn {
        client,
        server,
        dead: AtomicBool::new(false),
    });
    if setup.is_err() {
        conn.reset(shared);
        return;
    }
    let backward = {
        let conn = Arc::clone(&conn);
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("netfault-conn-{id}-back"))
            .spawn(move || pump(&conn, BACKWARD, &shared, id))
    };
    match backward {
        Ok(backward) => {
            pump(&conn, FORWARD, shared, id);
            if backward.join().is_err() {
                panic!("a netfault pump panicked");
            }
        }
        Err(_) => conn.reset(shared),
    }
}

/// One direction of a connection until it ends: `way` is FORWARD (client
/// to server) or BACKWARD.
fn pump(conn: &Conn, way: usize, shared: &Shared, id: u64) {
    let (mut src, dst) = match way {
        FORWARD => (&conn.client, &conn.server),
        _ => (&conn.server, &conn.client),
    };
    let mut rng = Rng::new(derive(shared.seed, id * 2 + way as u64));
    let mut buf = vec![0u8; CHUNK_BYTES];
    // Chunks read and not yet written, each with the instant it is due.
    let mut line: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut line_bytes = 0usize;
    // Bytes of this direction were discarded: nothing after them may
    // reach the other side.
    let mut holed = false;
    let mut eof = false;
    loop {
        if shared.stopped() {
            conn.reset(shared);
            return;
        }
        if conn.dead() {
            return;
        }
        let (fault, cut) = {
            let faults = shared.faults();
            (faults[way], faults.contains(&Fault::Cut))
        };
        if cut || (holed && fault != Fault::Drop) {
            conn.reset(shared);
            return;
        }
        while let Some((due, _)) = line.front() {
            if *due > Instant::now() {
                break;
            }
            let Some((_, chunk)) = line.pop_front() else {
                break;
            };
            line_bytes -= chunk.len();
            if !write_all(dst, &chunk, conn, shared) {
                conn.reset(shared);
                return;
            }
            shared.forwarded[way].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let wait = line
            .front()
            .map_or(TICK, |(due, _)| {
                due.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(1), TICK);
        if eof {
            // Half-close once everything before the FIN is written; under
            // Drop the FIN vanishes with the bytes until the fault lifts.
            if line.is_empty() && fault != Fault::Drop {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            thread::sleep(wait);
            continue;
        }
        if line_bytes >= DELAY_LINE_BYTES {
            thread::sleep(wait);
            continue;
        }
        if src.set_read_timeout(Some(wait)).is_err() {
            conn.reset(shared);
            return;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => {
                eof = true;
                continue;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => {
                conn.reset(shared);
                return;
            }
        };
        // The fault of the moment the bytes came, not of before the read
        // waited: a `set` that returned governs every byte read after it.
        let (fault, cut) = {
            let faults = shared.faults();
            (faults[way], faults.contains(&Fault::Cut))
        };
        if cut {
            conn.reset(shared);
            return;
        }
        let due = match fault {
            Fault::Pass => Instant::now(),
            Fault::Delay { ms } => Instant::now() + Duration::from_millis(ms),
            Fault::Drop => {
                shared.dropped[way].fetch_add(n as u64, Ordering::Relaxed);
                holed = true;
                continue;
            }
            Fault::Flaky { reset_per_mille } => {
                if rng.per_mille(reset_per_mille) {
                    conn.reset(shared);
                    return;
                }
                Instant::now()
            }
            // A Cut reset the connection just above.
            Fault::Cut => return,
        };
        line.push_back((due, buf[..n].to_vec()));
        line_bytes += n;
    }
}

/// Writes all of `bytes`, in writes bounded by the socket's write timeout,
/// giving up (false) when the peer fails, the connection is reset or the
/// proxy stops.
fn write_all(dst: &TcpStream, bytes: &[u8], conn: &Conn, shared: &Shared) -> bool {
    let mut written = 0;
    let mut dst = dst;
    while written < bytes.len() {
        if shared.stopped() || conn.dead() {
            return false;
        }
        match dst.write(&bytes[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}
