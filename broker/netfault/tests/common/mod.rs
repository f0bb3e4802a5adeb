//! Real TCP ends for the proxy's tests: a listener standing for a target,
//! whose accepted side the test holds, and bounded reads.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use broker_netfault::Proxy;

/// How long a test waits for something that must happen.
pub const SOON: Duration = Duration::from_secs(5);
/// How long a test waits to see that something does not happen.
pub const QUIET: Duration = Duration::from_millis(200);

/// A listener on a free port of 127.0.0.1.
pub fn target() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The next connection `listener` accepts, within `SOON`.
pub fn accept(listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + SOON;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(SOON)).unwrap();
                return s;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("no connection reached the target: {e}"),
        }
    }
}

/// A client connected to `addr`, reads bounded by `SOON`.
pub fn dial(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, SOON).unwrap();
    // A proxy under a cut resets the connection at once, and setting an
    // option on a reset socket fails: the test's reads say what happened.
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(SOON));
    s
}

/// A client through `proxy`, and the target's side of its connection.
pub fn pair(proxy: &Proxy, target: &TcpListener) -> (TcpStream, TcpStream) {
    let client = dial(proxy.addr());
    let server = accept(target);
    (client, server)
}

/// Reads exactly `n` bytes (within the stream's read timeout).
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// What a read sees within `within`: Ok(bytes) (empty: the peer closed),
/// or the error (WouldBlock when nothing came).
pub fn read_within(stream: &mut TcpStream, within: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(within))?;
    let mut buf = [0u8; 4096];
    let r = stream.read(&mut buf).map(|n| buf[..n].to_vec());
    let _ = stream.set_read_timeout(Some(SOON));
    r
}

/// Whether nothing arrives on `stream` for `QUIET`.
pub fn silent(stream: &mut TcpStream) -> bool {
    matches!(
        read_within(stream, QUIET),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    )
}

/// Whether the peer reset `stream` (seen within `SOON`): a read fails
/// with ECONNRESET. A bare EOF is not a reset.
pub fn was_reset(stream: &mut TcpStream) -> bool {
    matches!(
        read_within(stream, SOON),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset
    )
}

/// Whether a connection to `addr` is refused or reset (the reset can come
/// before the connect returns).
pub fn refused_or_reset(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, SOON) {
        Ok(mut s) => was_reset(&mut s),
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
        ),
    }
}

/// One byte there and one back, and how long it took.
pub fn round_trip(client: &mut TcpStream, server: &mut TcpStream) -> Duration {
    let start = Instant::now();
    client.write_all(b"?").unwrap();
    assert_eq!(read_n(server, 1), b"?");
    server.write_all(b"!").unwrap();
    assert_eq!(read_n(client, 1), b"!");
    start.elapsed()
}

/// A server on `ip` that answers every byte it reads with its own `id`,
/// on every connection, until dropped.
pub struct Node {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Node {
    pub fn start(ip: IpAddr, id: u8) -> Node {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            let mut conns = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let flag = Arc::clone(&flag);
                        conns.push(thread::spawn(move || answer(s, id, &flag)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                c.join().unwrap();
            }
        });
        Node {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

fn answer(mut s: TcpStream, id: u8, stop: &AtomicBool) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&vec![id; n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}
