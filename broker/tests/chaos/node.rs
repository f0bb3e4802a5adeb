//! The broker under test, on fixed ports so that clients find it again
//! after a restart, and the size-limited filesystem it writes to.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `broker serve` process with 2 shards and fsync=always, restarted on
/// the same ports and data directory.
pub struct Node {
    child: Option<Child>,
    /// The broker binary (a copy taken at the start of the run).
    bin: PathBuf,
    data: PathBuf,
    pub listen: SocketAddr,
    shard_base: u16,
    /// The Kafka main port; the shards' own Kafka ports follow it.
    kafka_base: u16,
    log: PathBuf,
    /// Run the deliberately broken build's fault (acks before writes).
    broken: bool,
    paused: bool,
}

impl Node {
    /// A node running `bin` over `data`, logging to `log`, not started yet.
    pub fn new(bin: PathBuf, data: PathBuf, log: PathBuf, broken: bool) -> Node {
        let mut shard_base = free_port();
        // Two consecutive free ports for the shards: retry until the pair is.
        while TcpListener::bind(("127.0.0.1", shard_base + 1)).is_err() {
            shard_base = free_port();
        }
        // Three consecutive free ports for Kafka: the main one, then the
        // shards'.
        let mut kafka_base = free_port();
        while (1..3).any(|i| TcpListener::bind(("127.0.0.1", kafka_base + i)).is_err()) {
            kafka_base = free_port();
        }
        Node {
            kafka_base,
            child: None,
            bin,
            data,
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            shard_base,
            log,
            broken,
            paused: false,
        }
    }

    /// The Kafka bootstrap address.
    pub fn kafka(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_base))
    }

    /// The shards' own addresses.
    pub fn shard_addrs(&self) -> [SocketAddr; 2] {
        [0, 1].map(|i| SocketAddr::from(([127, 0, 0, 1], self.shard_base + i)))
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen", &self.listen.to_string()])
            .args(["--shard-port-base", &self.shard_base.to_string()])
            .args(["--kafka-listen", &self.kafka().to_string()])
            .args(["--shards", "2", "--fsync", "always"])
            .args(["--segment-bytes", "1048576"])
            .args(["--group-min-session-timeout-ms", "500"])
            .env(
                "BROKER_FAULT_ACK_BEFORE_DURABLE",
                if self.broken { "1" } else { "0" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "broker did not start: {line:?}");
        self.child = Some(child);
        self.paused = false;
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The broker's resident memory in KiB (0 when it is not running).
    pub fn rss_kib(&self) -> u64 {
        let Some(c) = &self.child else { return 0 };
        std::fs::read_to_string(format!("/proc/{}/status", c.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A tmpfs of `mb` MiB at `dir`, unmounted on drop.
pub struct Tmpfs(PathBuf, u32);

impl Tmpfs {
    pub fn mount(dir: &Path, mb: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_owned(), mb))
    }

    /// Fills what is left of it (the write stops at ENOSPC).
    pub fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", &format!("count={}", self.1)])
            .arg(format!("of={}", self.filler().display()))
            .stderr(Stdio::null())
            .status();
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
