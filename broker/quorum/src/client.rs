//! The application's client frames, sender side: a blocking call (std
//! sockets, bounded by a timeout) that any thread can make to a node's
//! Raft address, answered there by the node's [`crate::ClientService`].
//!
//! The frames are the Raft transport's (`rpc`): a 4-byte little-endian
//! length, then JSON, the length checked against `MAX_FRAME_BYTES` before
//! the answer's buffer is allocated.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::limits::MAX_FRAME_BYTES;
use crate::rpc::{Request, Response};

/// Sends `request` to the node at `addr` and returns its service's answer,
/// all within `timeout` (connecting included). A socket timeout is
/// reported as `TimedOut` (std reports an expired read timeout as
/// `WouldBlock`, "Resource temporarily unavailable").
pub fn call(addr: SocketAddr, request: &str, timeout: Duration) -> io::Result<String> {
    exchange(addr, request, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("controller call timed out after {timeout:?}"),
        ),
        _ => e,
    })
}

fn exchange(addr: SocketAddr, request: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "controller call timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_nodelay(true)?;
    let json = serde_json::to_vec(&Request::Client(request.to_owned()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if json.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("request of {} bytes, above {MAX_FRAME_BYTES}", json.len()),
        ));
    }
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("answer of {len} bytes, above {MAX_FRAME_BYTES}"),
        ));
    }
    let mut payload = vec![0u8; len];
    stream.set_read_timeout(Some(left()?))?;
    stream.read_exact(&mut payload)?;
    match serde_json::from_slice::<Response>(&payload) {
        Ok(Response::Client(answer)) => Ok(answer),
        Ok(Response::NoClientService) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{addr} serves no client requests"),
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{addr} answered a client request with a Raft response"),
        )),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}
