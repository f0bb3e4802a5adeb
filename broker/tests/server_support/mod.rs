//! Helpers for tests of the real `broker` binary: start it on free ports
//! with a temp data dir, kill it on drop, and talk the wire protocol to it
//! frame by frame (no client library: these tests check the server alone).
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use broker_protocol::{decode_as, decode_frame, Body, FrameWriter, Message};

pub mod hostile;

/// How long `Broker::start` waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A `broker serve` child process.
pub struct Broker {
    pub child: Child,
    pub listen: SocketAddr,
    pub shards: Vec<SocketAddr>,
    /// The metrics endpoint, when started with `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// The Kafka-protocol bootstrap address every shard accepts on (`kafka=`
    /// in the ready line); None from a broker without a Kafka listener.
    pub kafka: Option<SocketAddr>,
    /// Each shard's own Kafka port (`kafka_shards=`), which Metadata
    /// advertises as that shard's node; empty without a Kafka listener.
    pub kafka_shards: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl Broker {
    /// Starts `broker serve` with `--shards shards` on free ports over
    /// `data_dir`, plus `extra` arguments, and waits for its ready line.
    pub fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> Broker {
        let stderr_path = data_dir.with_extension(format!("stderr-{}", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start broker");
        // The ready line, read on a thread so that a broker that never
        // gets ready fails the test instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!(
                    "broker printed no ready line in {READY_TIMEOUT:?} (killed); stderr:\n{log}"
                );
            }
        };
        let Some(rest) = line.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("broker did not start: stdout {line:?}, stderr:\n{log}");
        };
        let mut listen = None;
        let mut shard_addrs = Vec::new();
        let mut metrics = None;
        let mut kafka = None;
        let mut kafka_shards = Vec::new();
        for field in rest.split(' ') {
            if let Some(a) = field.strip_prefix("kafka=") {
                kafka = Some(a.parse().unwrap());
            } else if let Some(list) = field.strip_prefix("kafka_shards=") {
                kafka_shards = list.split(',').map(|a| a.parse().unwrap()).collect();
            }
            if let Some(a) = field.strip_prefix("metrics=") {
                metrics = Some(a.parse().unwrap());
            }
            if let Some(a) = field.strip_prefix("listen=") {
                listen = Some(a.parse().unwrap());
            } else if let Some(list) = field.strip_prefix("shards=") {
                shard_addrs = list.split(',').map(|a| a.parse().unwrap()).collect();
            }
        }
        Broker {
            child,
            listen: listen.expect("listen= in the ready line"),
            shards: shard_addrs,
            metrics,
            kafka,
            kafka_shards,
            data_dir: data_dir.to_owned(),
            stderr_path,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status once the process is gone.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What the broker logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the lines a child writes to `pipe`, on a thread, as they come.
/// A line without its newline (the process was killed mid-write) is not
/// counted.
pub fn collect_lines(
    pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let handle = thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") {
                line.pop();
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&line).into_owned());
            }
            line.clear();
        }
    });
    (lines, handle)
}

/// One raw protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    writer: FrameWriter,
    next_id: u64,
}

/// A response frame as read: its bytes.
pub struct RawFrame(pub Vec<u8>);

impl RawFrame {
    /// Decodes it as `M` (panics with the error frame's message otherwise).
    pub fn decode<'a, M: Message<'a>>(&'a self) -> broker_protocol::Frame<'a, M> {
        decode_as::<M>(&self.0, 1 << 30).unwrap()
    }

    /// The (code, message) of its `error` field, whatever response it is.
    pub fn error(&self) -> Option<(broker_protocol::ErrorCode, String)> {
        if self.0[6..8] == [0, 0] {
            // A connection-level refusal (api key 0, request id 0): a bare
            // ErrorResponse that no api's decoder claims.
            let header_len = u32::from_be_bytes(self.0[16..20].try_into().unwrap()) as usize;
            let e = flatbuffers::root::<broker_protocol::generated::ErrorResponse>(
                &self.0[20..20 + header_len],
            )
            .unwrap()
            .error()?;
            return Some((e.code(), e.message().unwrap_or("").to_string()));
        }
        let f = decode_frame(&self.0, 1 << 30).unwrap();
        let e = match f.body {
            Body::ProduceResponse(r) => r.error(),
            Body::FetchResponse(r) => r.error(),
            Body::ListOffsetsResponse(r) => r.error(),
            Body::CreateTopicResponse(r) => r.error(),
            Body::DeleteTopicResponse(r) => r.error(),
            Body::ListTopicsResponse(r) => r.error(),
            Body::MetadataResponse(r) => r.error(),
            Body::FindCoordinatorResponse(r) => r.error(),
            Body::JoinGroupResponse(r) => r.error(),
            Body::HeartbeatResponse(r) => r.error(),
            Body::LeaveGroupResponse(r) => r.error(),
            Body::OffsetCommitResponse(r) => r.error(),
            Body::OffsetFetchResponse(r) => r.error(),
            Body::ListGroupsResponse(r) => r.error(),
            Body::DescribeGroupResponse(r) => r.error(),
            other => panic!("not a response: {}", other.name()),
        };
        e.map(|e| (e.code(), e.message().unwrap_or("").to_string()))
    }

    /// The request id of the frame.
    pub fn request_id(&self) -> u64 {
        u64::from_be_bytes(self.0[8..16].try_into().unwrap())
    }
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn {
            stream,
            writer: FrameWriter::new(),
            next_id: 1,
        }
    }

    /// Sends a request built by `build` (given the buffer and the request
    /// id), followed by `payload`; returns the request id.
    pub fn send(
        &mut self,
        payload: &[u8],
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64),
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        build(&mut self.writer, &mut out, id);
        out.extend_from_slice(payload);
        self.stream.write_all(&out).unwrap();
        id
    }

    /// Reads one frame; None when the broker closed the connection.
    pub fn recv(&mut self) -> Option<RawFrame> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let n = u32::from_be_bytes(len) as usize;
        assert!(n < 256 << 20, "absurd frame length {n}");
        let mut frame = vec![0u8; 4 + n];
        frame[..4].copy_from_slice(&len);
        self.stream.read_exact(&mut frame[4..]).ok()?;
        Some(RawFrame(frame))
    }

    /// Sends a request and reads its response.
    pub fn call(
        &mut self,
        payload: &[u8],
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64),
    ) -> RawFrame {
        let id = self.send(payload, build);
        let frame = self.recv().expect("the broker closed the connection");
        assert_eq!(frame.request_id(), id);
        frame
    }

    /// Whether the broker closed the connection (reads until EOF or error).
    pub fn is_closed_by_peer(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = [0u8; 4096];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    )
                }
            }
        }
    }
}

/// GET `path` over HTTP/1.0: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
