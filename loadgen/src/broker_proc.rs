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
    _data: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts `binary serve` with `fsync` ("always", "interval" or "never")
    /// and one shard on [`pin::SYSTEM_CORE`], data in a temp dir under
    /// `tmp_root` (the system temp dir when `None`).
    pub fn start(binary: &Path, fsync: &str, tmp_root: Option<&Path>) -> anyhow::Result<Self> {
        let data = match tmp_root {
            Some(root) => tempfile::Builder::new()
                .prefix("loadgen-broker-")
                .tempdir_in(root)?,
            None => tempfile::Builder::new()
                .prefix("loadgen-broker-")
                .tempdir()?,
        };
        let mut cmd = Command::new(binary);
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
            .with_context(|| format!("starting {}", binary.display()))?;
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
    let rest = line.strip_prefix("ready ")?;
    rest.split_whitespace()
        .find_map(|kv| kv.strip_prefix("listen="))
        .map(str::to_owned)
}

/// The `broker` binary: `explicit` if given, else the one next to this
/// executable (cargo puts both in target/<profile>/), else `broker` on PATH.
pub fn find_broker_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let candidate = dir.join("broker");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("broker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_the_main_address() {
        assert_eq!(
            parse_ready("ready listen=127.0.0.1:4000 shards=127.0.0.1:4001").as_deref(),
            Some("127.0.0.1:4000")
        );
        assert_eq!(parse_ready("starting"), None);
    }
}
