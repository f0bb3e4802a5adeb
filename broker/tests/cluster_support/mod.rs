//! Several real `broker serve` processes for one test: broker `i` on its
//! own loopback address 127.0.0.(i+1), on fixed ports and its own data
//! directory, so that a killed or stopped broker is restarted where it was;
//! signals per broker (SIGKILL, SIGSTOP/SIGCONT, SIGTERM); every child
//! killed when the cluster is dropped, a panicking test included.
//!
//! [`Cluster::start`] runs independent single-node brokers;
//! [`Cluster::start_members`] runs the members of one cluster: broker `i`
//! has node id `i + 1`, the first `controllers` brokers run the metadata
//! quorum (each on a port of its own block), and every broker registers
//! with them. Its session timeout and heartbeat are short
//! ([`SESSION_TIMEOUT_MS`], [`HEARTBEAT_MS`]) so that tests see fencing
//! quickly.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

pub mod records;

/// The metadata image a controller of `controllers` has applied.
pub fn image(controllers: &[SocketAddr]) -> Option<broker_cluster::MetadataImage> {
    use broker_controller::{ControllerClient, Request, Response};
    let mut client = ControllerClient::new(controllers.to_vec(), Duration::from_secs(2));
    match client
        .call(&Request::FetchImage { since_version: 0 })
        .ok()?
    {
        Response::Image(Some(image)) => Some(*image),
        _ => None,
    }
}

/// Polls `f` every 100 ms until it gives Some (at most `limit`, then the
/// test fails naming `what`).
pub fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// `broker cluster status --json` of the controllers `controllers` (asked
/// directly, never through proxies).
pub fn status(controllers: &str) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_broker"), "cluster", "status"])
        .args(["--controllers", controllers, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// How long a broker may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERMed broker may take to exit.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGSTOPped broker may take until all its threads stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lowest fixed port handed out; the highest is below the kernel's
/// ephemeral range.
const FIXED_PORT_LOW: u32 = 20_000;
/// The members' broker session timeout.
pub const SESSION_TIMEOUT_MS: u64 = 2_000;
/// The members' heartbeat interval.
pub const HEARTBEAT_MS: u64 = 200;

/// `n` brokers, each on its own loopback IP, fixed ports and data dir.
pub struct Cluster {
    nodes: Vec<Node>,
    /// How many of the nodes (the first ones) are controllers; 0: the
    /// nodes are independent brokers.
    controllers: usize,
    /// Proxies between the controllers (`start_members_behind_proxies`):
    /// controller `i` reaches controller `j` through `mesh.addr(i, j)`.
    mesh: Option<broker_netfault::Mesh>,
    extra_args: Box<dyn Fn(usize) -> Vec<String>>,
    // Dropped after the nodes: `Drop for Cluster` kills them first.
    _dir: tempfile::TempDir,
}

/// One broker's place: where it listens and keeps its data, whether it runs.
struct Node {
    ip: IpAddr,
    /// The main port; the shards' ports follow it, then the Kafka main
    /// port and the shards' Kafka ports.
    port: u16,
    shards: usize,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn shard_addrs(&self) -> Vec<SocketAddr> {
        (1..=self.shards)
            .map(|k| SocketAddr::new(self.ip, self.port + k as u16))
            .collect()
    }

    fn kafka(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port + self.shards as u16 + 1)
    }

    /// The controller (quorum) address, after the Kafka ports.
    fn controller(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port + 2 * self.shards as u16 + 2)
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

impl Cluster {
    /// Starts `n` brokers of `shards` shards each, broker `i` on
    /// 127.0.0.(i+1) with `extra_args(i)` after its own arguments, and
    /// waits until every one printed its ready line.
    pub fn start(
        n: usize,
        shards: usize,
        extra_args: impl Fn(usize) -> Vec<String> + 'static,
    ) -> Cluster {
        Cluster::start_with(n, shards, 0, None, extra_args)
    }

    /// Starts the `n` members of one cluster (`shards` shards each), the
    /// first `controllers` of them controllers, and waits until every one
    /// is admitted (its ready line comes once the controllers unfenced it).
    pub fn start_members(
        n: usize,
        shards: usize,
        controllers: usize,
        extra_args: impl Fn(usize) -> Vec<String> + 'static,
    ) -> Cluster {
        assert!((1..=n).contains(&controllers), "1 to {n} controllers");
        Cluster::start_with(n, shards, controllers, None, extra_args)
    }

    /// [`Cluster::start_members`] with a seeded netfault proxy on every
    /// directed link between controllers ([`Cluster::mesh`]), for faults
    /// between them; brokers that are not controllers reach them directly.
    /// The members are given the cluster id `proxied` (each sees the
    /// controllers at other addresses, so none can derive it).
    pub fn start_members_behind_proxies(
        n: usize,
        shards: usize,
        controllers: usize,
        seed: u64,
    ) -> Cluster {
        assert!((1..=n).contains(&controllers), "1 to {n} controllers");
        Cluster::start_with(n, shards, controllers, Some(seed), |_| vec![])
    }

    fn start_with(
        n: usize,
        shards: usize,
        controllers: usize,
        proxies: Option<u64>,
        extra_args: impl Fn(usize) -> Vec<String> + 'static,
    ) -> Cluster {
        assert!(
            (1..=254).contains(&n),
            "{n} brokers do not fit 127.0.0.1..254"
        );
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1));
                Node {
                    ip,
                    // Main, shards, Kafka main, Kafka shards, controller.
                    port: reserve_ports(ip, 3 + 2 * shards as u32),
                    shards,
                    data_dir: dir.path().join(format!("broker-{i}")),
                    stderr_path: dir.path().join(format!("broker-{i}.stderr")),
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let mesh = proxies.map(|seed| {
            let addrs: Vec<SocketAddr> =
                nodes[..controllers].iter().map(Node::controller).collect();
            broker_netfault::Mesh::start(&addrs, seed).unwrap()
        });
        let mut cluster = Cluster {
            nodes,
            controllers,
            mesh,
            extra_args: Box::new(extra_args),
            _dir: dir,
        };
        // All spawned first, then awaited: they start side by side.
        let pending: Vec<_> = (0..n).map(|i| cluster.spawn(i)).collect();
        for (i, ready) in pending.into_iter().enumerate() {
            cluster.await_ready(i, ready);
        }
        cluster
    }

    /// How many brokers it has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Broker `i`'s main address (the same after a restart).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].listen()
    }

    /// Broker `i`'s Kafka main address.
    pub fn kafka_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].kafka()
    }

    /// Broker `i`'s shard-aware addresses (the same after a restart).
    pub fn shard_addrs(&self, i: usize) -> Vec<SocketAddr> {
        self.nodes[i].shard_addrs()
    }

    /// The controllers' quorum addresses, by broker index.
    pub fn controller_addrs(&self) -> Vec<SocketAddr> {
        self.nodes[..self.controllers]
            .iter()
            .map(Node::controller)
            .collect()
    }

    /// The controllers' addresses but broker `i`'s.
    pub fn controller_addrs_but(&self, i: usize) -> Vec<SocketAddr> {
        let mut addrs = self.controller_addrs();
        if i < addrs.len() {
            addrs.remove(i);
        }
        addrs
    }

    /// Broker `i`'s data directory (the same after a restart).
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.nodes[i].data_dir
    }

    /// Broker `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// What broker `i` logged so far, over all its runs.
    pub fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].stderr_path).unwrap_or_default()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGSTOP, and wait until every thread of the process has stopped
    /// (kill(2) returns before they do: a busy broker may answer one more
    /// request meanwhile). It stays, answering nothing; the kernel still
    /// completes TCP handshakes into its listen backlog.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.signal(libc::SIGSTOP);
        node.paused = true;
        let pid = node.child.as_ref().expect("pause a broker that runs").id();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "broker {i} did not stop");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// SIGTERM (after a SIGCONT if paused), and the exit status once the
    /// process is gone; panics (after a SIGKILL) when it takes longer than
    /// [`TERMINATE_TIMEOUT`].
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        if self.nodes[i].paused {
            self.resume(i);
        }
        self.nodes[i].signal(libc::SIGTERM);
        let node = &mut self.nodes[i];
        let mut child = node.child.take().expect("terminate a broker that runs");
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker {i} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills broker `i` if it runs, then starts it again on the same
    /// ports and data directory, and waits for its ready line.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        let ready = self.spawn(i);
        self.await_ready(i, ready);
    }

    /// Kills every broker, then starts them all again side by side (a
    /// cluster's members need one another to be ready).
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let pending: Vec<_> = (0..self.nodes.len()).map(|i| self.spawn(i)).collect();
        for (i, ready) in pending.into_iter().enumerate() {
            self.await_ready(i, ready);
        }
    }

    /// The controllers, as `broker serve --controllers` and `broker
    /// cluster status --controllers` take them (empty: independent
    /// brokers).
    pub fn controllers(&self) -> String {
        self.nodes[..self.controllers]
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}@{}", i + 1, n.controller()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The proxies between the controllers, if the cluster has them.
    pub fn mesh(&self) -> Option<&broker_netfault::Mesh> {
        self.mesh.as_ref()
    }

    /// The controllers as broker `i` is given them: through the proxies
    /// from a controller to the others, if there are proxies.
    fn controllers_seen_by(&self, i: usize) -> String {
        let Some(mesh) = &self.mesh else {
            return self.controllers();
        };
        (0..self.controllers)
            .map(|j| {
                let addr = if i < self.controllers && i != j {
                    mesh.addr(i, j)
                } else {
                    self.nodes[j].controller()
                };
                format!("{}@{addr}", j + 1)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every argument of broker `i`'s `broker serve`: its own place, its
    /// cluster's flags, then the test's `extra_args(i)`.
    fn node_args(&self, i: usize) -> Vec<String> {
        let node = &self.nodes[i];
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--listen".into(),
            node.listen().to_string(),
            "--shards".into(),
            node.shards.to_string(),
            "--shard-port-base".into(),
            (node.port + 1).to_string(),
            "--kafka-listen".into(),
            node.kafka().to_string(),
            "--kafka-shard-port-base".into(),
            (node.kafka().port() + 1).to_string(),
        ];
        if self.controllers > 0 {
            args.extend([
                "--node-id".into(),
                (i + 1).to_string(),
                "--controllers".into(),
                self.controllers_seen_by(i),
                "--broker-session-timeout-ms".into(),
                SESSION_TIMEOUT_MS.to_string(),
                "--broker-heartbeat-interval-ms".into(),
                HEARTBEAT_MS.to_string(),
            ]);
            if self.mesh.is_some() {
                args.extend(["--cluster-id".into(), "proxied".into()]);
            }
        }
        args.extend((self.extra_args)(i));
        args
    }

    /// Starts broker `i`'s process; its ready line comes on the receiver.
    fn spawn(&mut self, i: usize) -> mpsc::Receiver<String> {
        let args = self.node_args(i);
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "broker {i} already runs");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.stderr_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start broker");
        // Read on a thread, so that a broker that never gets ready fails
        // the test instead of hanging it (the thread ends with the process).
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        node.child = Some(child);
        rx
    }

    /// Waits for broker `i`'s ready line and checks that it listens where
    /// it was put.
    fn await_ready(&mut self, i: usize, ready: mpsc::Receiver<String>) {
        let line = ready.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        let Some(fields) = line.trim().strip_prefix("ready ") else {
            self.nodes[i].kill();
            panic!(
                "broker {i} printed no ready line within {READY_TIMEOUT:?} (stdout {line:?}); stderr:\n{}",
                self.stderr(i)
            );
        };
        let node = &self.nodes[i];
        // `ready listen=A shards=A,A kafka=A kafka_shards=A,A`, as
        // server_support reads it.
        let field = |name: &str| {
            fields
                .split(' ')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        let join = |addrs: Vec<SocketAddr>| {
            addrs
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(field("listen"), node.listen().to_string(), "broker {i}");
        assert_eq!(field("shards"), join(node.shard_addrs()), "broker {i}");
        assert_eq!(field("kafka"), node.kafka().to_string(), "broker {i}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if node.paused {
                node.signal(libc::SIGCONT);
            }
            node.kill();
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in its
/// /proc stat line, after the command's closing parenthesis).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('T')))
            // A thread that exited meanwhile runs no more.
            .unwrap_or(true)
    })
}

/// The first of `len` consecutive ports free on `ip`, below the kernel's
/// ephemeral range: no connection's local port and no port-0 listener
/// lands there, so the ports stay free for a restart after the probe
/// releases them. A cursor shared by the test binary's clusters (starting
/// at a place drawn from the pid, apart from other test processes) hands
/// each block out once.
fn reserve_ports(ip: IpAddr, len: u32) -> u16 {
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    assert!(
        high > FIXED_PORT_LOW + 1000,
        "ephemeral ports start at {high}"
    );
    let span = high - FIXED_PORT_LOW - len;
    let _ = CURSOR.compare_exchange(
        0,
        std::process::id().wrapping_mul(7919) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..1000 {
        let start = FIXED_PORT_LOW + CURSOR.fetch_add(len, Ordering::Relaxed) % span;
        let probes: Vec<_> = (start..start + len)
            .map_while(|p| TcpListener::bind(SocketAddr::new(ip, p as u16)).ok())
            .collect();
        if probes.len() == len as usize {
            return start as u16;
        }
    }
    panic!("no {len} consecutive free ports on {ip} below {high}");
}
