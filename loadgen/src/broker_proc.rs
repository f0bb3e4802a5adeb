//! Starting our broker as a child process for a run: a temporary data
//! directory, one shard pinned to the system core, a free port, and the
//! `ready` line it prints once serving. The process is stopped (SIGTERM,
//! then SIGKILL) when the handle drops.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::pin;

/// How long a broker may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running broker.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    /// The main address from the ready line.
    pub addr: String,
    /// The Kafka listener's main address (`kafka=` of the ready line), when
    /// the broker has one.
    pub kafka_addr: Option<String>,
    _data: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts `binary serve` with `fsync` ("always", "interval" or "never")
    /// and one shard on [`pin::SYSTEM_CORE`], data in a temp dir under
    /// `tmp_root` (the system temp dir when `None`).
    pub fn start(
        binary: &BrokerBinary,
        fsync: &str,
        tmp_root: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let data = match tmp_root {
            Some(root) => tempfile::Builder::new()
                .prefix("loadgen-broker-")
                .tempdir_in(root)?,
            None => tempfile::Builder::new()
                .prefix("loadgen-broker-")
                .tempdir()?,
        };
        let mut cmd = Command::new(&binary.path);
        if binary.via_loadgen {
            cmd.arg("broker");
        }
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--fsync",
        ])
        .arg(fsync)
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        pin::pin_command(&mut cmd, pin::SYSTEM_CORE);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.path.display()))?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the broker printed no ready line within {READY_TIMEOUT:?}");
            }
        };
        let Some(addr) = parse_ready(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unexpected first line from the broker: {line:?}");
        };
        Ok(BrokerProcess {
            child,
            addr,
            kafka_addr: parse_ready_field(&line, "kafka"),
            _data: data,
        })
    }

    /// The broker's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the broker: SIGTERM (it flushes and exits), SIGKILL after 10 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; pid is our own child,
        // not yet reaped, so it cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The main address of a `ready listen=ADDR shards=...` line.
pub fn parse_ready(line: &str) -> Option<String> {
    parse_ready_field(line, "listen")
}

/// Field `key` of a `ready listen=A shards=A,B kafka=K kafka_shards=K0,K1`
/// line.
pub fn parse_ready_field(line: &str, key: &str) -> Option<String> {
    let rest = line.strip_prefix("ready ")?;
    rest.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// How to run the broker.
#[derive(Debug, Clone)]
pub struct BrokerBinary {
    /// The executable.
    pub path: PathBuf,
    /// It is loadgen itself, which runs the broker's CLI after `broker`.
    pub via_loadgen: bool,
}

/// The broker to start: `explicit` if given, else this loadgen executable,
/// which links the broker's code (`loadgen broker serve`), so a benchmark
/// never runs a stale separately built binary.
pub fn find_broker_binary(explicit: Option<&Path>) -> anyhow::Result<BrokerBinary> {
    Ok(match explicit {
        Some(p) => BrokerBinary {
            path: p.to_owned(),
            via_loadgen: false,
        },
        None => BrokerBinary {
            path: std::env::current_exe().context("locating the loadgen executable")?,
            via_loadgen: true,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_the_main_address() {
        assert_eq!(
            parse_ready("ready listen=127.0.0.1:4000 shards=127.0.0.1:4001").as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(parse_ready("starting"), None);
        let line = "ready listen=127.0.0.1:4000 shards=127.0.0.1:4001 kafka=127.0.0.1:4100 \
                    kafka_shards=127.0.0.1:4101";
        assert_eq!(parse_ready(line).as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(
            parse_ready_field(line, "kafka").as_deref(),
            Some("127.0.0.1:4100")
        );
        assert_eq!(
            parse_ready_field(line, "kafka_shards").as_deref(),
            Some("127.0.0.1:4101")
        );
        assert_eq!(parse_ready_field("ready listen=a", "kafka"), None);
    }
}
