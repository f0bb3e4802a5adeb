//! The Kafka paper's peers, RabbitMQ and ActiveMQ, started locally by
//! `scripts/peers.sh` (which installs them from Debian's packages when
//! missing) and driven through their own protocols' client crates.
//!
//! Each peer runs in one of two modes, named in every result:
//! - `paper`: as the paper ran them: persistent messages, sent without a
//!   per-message acknowledgement, the store flushing asynchronously.
//! - `durable`: every message acknowledged to the producer only once stored
//!   (RabbitMQ publisher confirms, ActiveMQ STOMP receipts with the journal
//!   fsynced on every store), comparable to our broker's acks=leader with
//!   fsync=always.
//!
//! A peer process runs in its own process group, pinned to the system core;
//! its CPU time is the sum over that group (RabbitMQ's start script forks
//! the Erlang VM).

pub mod activemq;
pub mod rabbitmq;

use std::{
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::pin;

/// How long a peer may take to accept connections (RabbitMQ takes ~20 s
/// here on its first start).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running peer.
#[derive(Debug)]
pub struct PeerProcess {
    child: Child,
    /// Its client address.
    pub addr: String,
    /// Where its files (and its log, `out.log`) are.
    pub dir: tempfile::TempDir,
}

impl PeerProcess {
    /// Starts `peer` ("rabbitmq" or "activemq") in `mode` ("paper" or
    /// "durable") with `script` (scripts/peers.sh) on a free port.
    pub fn start(script: &Path, peer: &str, mode: &str) -> anyhow::Result<PeerProcess> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("loadgen-{peer}-"))
            .tempdir()?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("out.log"))?;
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .arg("start")
            .arg(peer)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        pin::pin_command(&mut cmd, pin::SYSTEM_CORE);
        let child = cmd
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        let mut peer_process = PeerProcess {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        let start = Instant::now();
        loop {
            if TcpStream::connect(&peer_process.addr).is_ok() {
                return Ok(peer_process);
            }
            if let Ok(Some(status)) = peer_process.child.try_wait() {
                bail!(
                    "{peer} exited ({status}) before accepting connections; its log ends:\n{}",
                    peer_process.log_tail()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                let tail = peer_process.log_tail();
                peer_process.terminate();
                bail!("{peer} did not accept connections within {START_TIMEOUT:?}; its log ends:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of the peer's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The process group's id (the script's pid).
    pub fn pgid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of every live process of the peer's group.
    pub fn cpu_time(&self) -> Option<Duration> {
        crate::results::group_cpu_time(self.pgid())
    }

    /// Stops the peer: SIGTERM to its group, SIGKILL after 20 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the group is the one
        // our child leads (process_group(0)), not yet reaped.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if crate::results::group_cpu_time(self.child.id()).is_none() {
                break;
            }
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(200));
        }
        // SAFETY: as above; members left after the grace period are killed.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Bound then released: a small window in which another process could
    // take it, acceptable on a benchmark machine.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What a peer workload measured; the caller adds the rest of the result.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// Wall time of the measured part.
    pub duration: Duration,
    /// Messages moved.
    pub messages: u64,
    /// Produce-to-ack latency, in durable mode.
    pub latency: Option<crate::results::Latency>,
}
