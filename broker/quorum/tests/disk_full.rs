//! A full disk under a single-voter quorum: its directory on a small tmpfs
//! (mounted by the test; needs root, and reports itself not run when the
//! mount is refused), filled until writes fail. The failed append stops the
//! node (openraft treats any storage error as fatal): proposals fail, the
//! status says it is not running, nothing is acknowledged that is not on
//! disk. Once space returns, a restart over the same directory recovers
//! every acknowledged proposal and takes new ones. Every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_quorum::{ProposeError, Quorum, QuorumConfig, StateMachine};
use futures_lite::future::block_on;

#[derive(Debug, Default)]
struct Journal(Vec<String>);

impl StateMachine for Journal {
    type Command = String;
    type Response = u64;

    fn apply(&mut self, command: &String) -> u64 {
        self.0.push(command.clone());
        self.0.len() as u64 - 1
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A tmpfs of `mb` MiB mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mb: u32) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Fills what is left (dd stops at ENOSPC).
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.0.join("filler").display()))
            .stderr(Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_disk_stops_the_node_without_losing_what_it_acknowledged() {
    let mount = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(mount.path(), 2) {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!("not run: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let dir = mount.path().join("quorum");
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let voters: BTreeMap<u64, SocketAddr> = [(1, addr)].into();
    let config = QuorumConfig {
        propose_timeout_ms: 3000,
        ..QuorumConfig::new(1, voters, &dir)
    };

    let q = Quorum::start(config.clone(), Journal::default()).unwrap();
    wait_for("the single voter to lead", || q.status().leader == Some(1));
    let pad = "x".repeat(1000);
    let mut acked = Vec::new();
    for i in 0..10 {
        let command = format!("{i}-{pad}");
        block_on(q.propose(command.clone())).unwrap();
        acked.push(command);
    }

    disk.fill();
    // Appends fill the log file's last page, then need a new one and fail.
    let mut failure = None;
    for i in 10..400 {
        let command = format!("{i}-{pad}");
        match block_on(q.propose(command.clone())) {
            Ok(_) => acked.push(command),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a proposal fails on the full disk");
    // The log's append failed (the committed file is best effort and must
    // not be what stops the node).
    assert!(
        matches!(&failure, ProposeError::Fatal(why) if why.contains("Logs")),
        "{failure:?}"
    );
    wait_for("the node to report that it stopped", || !q.status().running);
    assert!(matches!(
        block_on(q.propose("refused".to_string())),
        Err(ProposeError::Fatal(_)) | Err(ProposeError::Shutdown)
    ));
    q.shutdown();

    disk.free();
    let q = Quorum::start(config, Journal::default()).unwrap();
    wait_for("the restarted voter to lead", || {
        q.status().leader == Some(1)
    });
    wait_for("every acknowledged proposal back", || {
        let journal = q.read(|j| j.0.clone()).1;
        journal.len() >= acked.len() && journal[..acked.len()] == acked[..]
    });
    block_on(q.propose("after the disk was freed".to_string())).unwrap();
    q.shutdown();
}
