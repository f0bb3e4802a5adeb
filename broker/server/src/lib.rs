//! The broker server: one shard per core, each serving the partitions it
//! owns on its own shard-aware port, and every shard accepting on the main
//! port (SO_REUSEPORT: the kernel spreads connections) and forwarding what
//! it does not own.
//!
//! Start-up ([`start`]), on the calling thread then on the shards:
//! 1. the data directory is opened and every topic's metadata loaded
//!    (blocking I/O; nothing runs yet);
//! 2. one pinned executor per shard opens (recovers) the partitions it
//!    owns;
//! 3. shard 0 binds the main address (a port 0 becomes a real port), then
//!    the others bind the same one; each binds its shard-aware port;
//! 4. the addresses are gathered and handed to every shard, the shards join
//!    the channel mesh, and start serving;
//! 5. [`start`] returns once every shard serves: the broker is ready.

pub mod arrivals;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod copy_stats;
pub mod error;
pub mod group;
pub mod kafka;
pub mod metadata;
pub mod metrics;
pub mod native;
pub mod partition;
pub mod producers;
pub mod replication;
pub mod service;
pub mod shard;

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender};
use glommio::{
    channels::channel_mesh::{Full, MeshBuilder},
    net::TcpListener,
    ExecutorJoinHandle,
};

pub use config::ServerConfig;
pub use error::{ErrorKind, ServiceError, ServiceResult, StartError};
use native::Via;
use service::groups;
use shard::{Shard, ShardMessage, ShardParts};

use crate::metadata::{DataDir, TopicTable};
use crate::metrics::Metrics;
use broker_shard::{self as shards, ShardId};

/// A running broker.
pub struct RunningServer {
    /// The main address (its real port when 0 was asked for).
    pub listen: SocketAddr,
    /// Each shard's shard-aware address.
    pub shard_addrs: Vec<SocketAddr>,
    /// The Kafka main address (None: no Kafka listener).
    pub kafka_listen: Option<SocketAddr>,
    /// Each shard's own Kafka address (empty: no Kafka listener).
    pub kafka_shard_addrs: Vec<SocketAddr>,
    /// This broker's id.
    pub node_id: u32,
    handles: Vec<ExecutorJoinHandle<Result<(), StartError>>>,
    stop: Arc<AtomicBool>,
    /// This broker's part in its cluster (None: a broker on its own, or
    /// once it left).
    membership: Arc<std::sync::Mutex<Option<cluster::Membership>>>,
    /// A cluster member's leaving thread: once asked to stop, a controlled
    /// shutdown (its leaderships move), then `left` for the shards.
    leaver: Option<std::thread::JoinHandle<()>>,
    /// Why this broker was evicted from its cluster, if it was (it then
    /// stops).
    evicted: Arc<std::sync::Mutex<Option<String>>>,
    /// Held (flock) while the broker runs: no second broker on this data dir.
    _lock: std::fs::File,
}

/// Asks a running broker to stop gracefully; usable from any thread (a
/// signal handler's thread, a test).
#[derive(Clone)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    /// Stop accepting, finish in-flight requests, flush and fsync every
    /// partition, then let [`RunningServer::wait`] return.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl RunningServer {
    /// A handle that stops this broker gracefully.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Waits until the shards stop (they run until the process ends, or one
    /// fails), and returns the first failure. A cluster member then leaves
    /// its cluster (a controlled shutdown) and stops its controller.
    pub fn wait(self) -> Result<(), StartError> {
        let mut result = Ok(());
        for (i, h) in self.handles.into_iter().enumerate() {
            let r = match h.join() {
                Ok(r) => r,
                Err(e) => Err(StartError::Shards(format!("shard {i} stopped: {e}"))),
            };
            if result.is_ok() {
                result = r;
            }
        }
        // Shards that stopped on their own (a failure) release the leaver.
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.leaver {
            let _ = t.join();
        }
        if let Some(m) = self.membership.lock().ok().and_then(|mut m| m.take()) {
            m.leave();
        }
        if let Some(why) = self.evicted.lock().ok().and_then(|mut w| w.take()) {
            return Err(StartError::Cluster(format!("evicted: {why}")));
        }
        result
    }

    /// The line `broker serve` prints once ready:
    /// `ready listen=ADDR shards=ADDR,ADDR,...`, then, with the Kafka
    /// listener, ` kafka=ADDR kafka_shards=ADDR,ADDR,...`, then, in a
    /// cluster, ` node=ID epoch=EPOCH`.
    pub fn ready_line(&self) -> String {
        let join = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut line = format!(
            "ready listen={} shards={}",
            self.listen,
            join(&self.shard_addrs)
        );
        if let Some(kafka) = self.kafka_listen {
            line.push_str(&format!(
                " kafka={kafka} kafka_shards={}",
                join(&self.kafka_shard_addrs)
            ));
        }
        let epoch = self
            .membership
            .lock()
            .ok()
            .and_then(|m| m.as_ref().and_then(|m| m.standing().epoch));
        if let Some(epoch) = epoch {
            line.push_str(&format!(" node={} epoch={epoch}", self.node_id));
        }
        line
    }
}

/// How often a shard checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long a stopping cluster member waits for its controlled shutdown
/// (its leaderships moved) before it stops serving anyway.
const LEAVE_WAIT: Duration = Duration::from_secs(20);

/// How long a stopping shard waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the data directory's lock file, so that two brokers never open the
/// same partitions. The lock (flock) is released when the process ends,
/// however it ends.
fn lock_data_dir(data: &DataDir) -> Result<std::fs::File, StartError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = data.root().join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StartError::DataDir {
            what: "open",
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this File owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(StartError::InUse {
            path: data.root().to_path_buf(),
            pid: holder.trim().to_owned(),
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// What a shard tells the starting thread.
enum BootEvent {
    /// Shard 0 bound the main addresses (native, Kafka).
    MainBound(MainAddrs),
    /// A shard bound its shard-aware port and its own Kafka port.
    ShardBound(ShardId, SocketAddr, Option<SocketAddr>),
    /// A shard serves.
    Ready,
    /// A shard could not start.
    Failed(ShardId, String),
}

/// The main addresses every shard accepts on.
#[derive(Debug, Clone, Copy)]
struct MainAddrs {
    native: SocketAddr,
    kafka: Option<SocketAddr>,
}

/// Every shard's own addresses, by shard.
#[derive(Debug, Clone)]
struct Endpoints {
    native: Vec<SocketAddr>,
    kafka: Vec<SocketAddr>,
}

/// What the starting thread gives every shard.
#[derive(Clone)]
struct Boot {
    config: Arc<ServerConfig>,
    data: DataDir,
    topics: TopicTable,
    shard_count: u16,
    events: Sender<BootEvent>,
    main_addr: Receiver<MainAddrs>,
    endpoints: Receiver<Endpoints>,
    cluster_id: Arc<str>,
    producer_ids: Option<i64>,
    /// A cluster member's way to the controllers.
    link: Option<Arc<cluster::Link>>,
    /// The images the membership hands over, for shard 0 to apply (taken
    /// by it).
    images: Arc<
        std::sync::Mutex<
            Option<futures_channel::mpsc::UnboundedReceiver<Arc<broker_cluster::MetadataImage>>>,
        >,
    >,
    /// One message per shard once the broker may serve (a cluster member:
    /// once the controllers admitted it; at once otherwise).
    admitted: Receiver<()>,
    stop: Arc<AtomicBool>,
    /// Set once a stopping cluster member's controlled shutdown is done.
    left: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    open_connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts the broker and returns once every shard serves.
pub fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    start_with_metrics(config, Metrics::new())
}

/// [`start`], recording into `metrics` (whose HTTP endpoint may already
/// serve: it reports ready once this returns).
pub fn start_with_metrics(
    config: ServerConfig,
    metrics: Arc<Metrics>,
) -> Result<RunningServer, StartError> {
    config.validate()?;
    let cpus = shards::online_cpus()
        .map_err(|e| StartError::Cpus(format!("cannot list the CPUs: {e}")))?;
    let shard_count = config.shards.unwrap_or(cpus.len());
    if shard_count > cpus.len() {
        return Err(StartError::Cpus(format!(
            "{shard_count} shards asked for, but only {} CPUs are available: a shard is pinned to its own core",
            cpus.len()
        )));
    }
    if shard_count > usize::from(u16::MAX) {
        return Err(StartError::Cpus(format!(
            "{shard_count} shards is too many"
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        what: "create data directory",
        path: config.data_dir.clone(),
        source,
    })?;
    // Absolute: glommio's io_uring opens fail on relative paths (EBADF).
    let root = std::fs::canonicalize(&config.data_dir).map_err(|source| StartError::DataDir {
        what: "resolve data directory",
        path: config.data_dir.clone(),
        source,
    })?;
    let data = DataDir::new(root);
    let lock = lock_data_dir(&data)?;
    let (cluster_id, controller) = match &config.cluster {
        None => (metadata::cluster_id(&data)?, None),
        Some(c) => {
            let id = cluster::cluster_id(c, &data)?;
            let controller = cluster::start_controller(&config, c, &data, &id)?;
            (id, controller)
        }
    };
    let cluster_id: Arc<str> = cluster_id.into();
    let producer_ids = metadata::reserve_producer_ids(&data)?;
    let mut topics = metadata::open_data_dir(&data)?;
    // A cluster member's topics are the controllers' (their placement and
    // the offsets topic come with the image); its topic.json files are a
    // cache of them, recovered at start.
    let member = config.cluster.is_some();
    let moved = if member {
        Vec::new()
    } else {
        metadata::fit_to_shards(&data, &mut topics, shard_count as u16)?
    };
    for moved in moved {
        tracing::warn!(topic = %moved, shards = shard_count,
            "partitions on shards that no longer exist were placed again");
    }
    if !member && topics.get(groups::OFFSETS_TOPIC).is_none() {
        let meta = groups::offsets_topic(shard_count as u16);
        metadata::create_topic_blocking(&data, &meta)?;
        topics.insert(Arc::new(meta));
    }
    tracing::info!(
        data_dir = %data.root().display(),
        shards = shard_count,
        topics = topics.len(),
        "starting"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let left = Arc::new(AtomicBool::new(false));
    let (events_tx, events) = crossbeam_channel::unbounded();
    let (main_addr_tx, main_addr) = crossbeam_channel::unbounded();
    let (endpoints_tx, endpoints) = crossbeam_channel::unbounded();
    let (admitted_tx, admitted) = crossbeam_channel::unbounded();
    let admit = || {
        for _ in 0..shard_count {
            let _ = admitted_tx.send(());
        }
    };
    if config.cluster.is_none() {
        admit();
    }
    let config = Arc::new(config);
    let link = match &config.cluster {
        Some(c) => Some(Arc::new(cluster::Link::new(c, config.broker_id)?)),
        None => None,
    };
    let (images_tx, images) = futures_channel::mpsc::unbounded();
    let boot = Boot {
        link: link.clone(),
        images: Arc::new(std::sync::Mutex::new(Some(images))),
        config: config.clone(),
        data,
        topics,
        shard_count: shard_count as u16,
        events: events_tx,
        main_addr,
        endpoints,
        cluster_id: cluster_id.clone(),
        producer_ids,
        admitted,
        stop: stop.clone(),
        left: left.clone(),
        metrics: metrics.clone(),
        open_connections: Arc::default(),
    };
    let handles = shards::spawn(
        &cpus[..shard_count],
        move |id, mesh: MeshBuilder<ShardMessage, Full>| {
            let boot = boot.clone();
            async move {
                let events = boot.events.clone();
                let result = run_shard(id, mesh, boot).await;
                if let Err(e) = &result {
                    let _ = events.send(BootEvent::Failed(id, e.to_string()));
                }
                result
            }
        },
    )
    .map_err(|e| StartError::Shards(e.to_string()))?;

    let mut listen: Option<MainAddrs> = None;
    let mut shard_addrs = vec![None; shard_count];
    let mut kafka_addrs = vec![None; shard_count];
    let mut ready = 0;
    while ready < shard_count {
        match events.recv() {
            Ok(BootEvent::MainBound(addr)) => {
                listen = Some(addr);
                for _ in 1..shard_count {
                    let _ = main_addr_tx.send(addr);
                }
            }
            Ok(BootEvent::ShardBound(id, addr, kafka)) => {
                shard_addrs[usize::from(id)] = Some(addr);
                kafka_addrs[usize::from(id)] = kafka;
                if shard_addrs.iter().all(Option::is_some) {
                    let all = Endpoints {
                        native: shard_addrs.iter().flatten().copied().collect(),
                        kafka: kafka_addrs.iter().flatten().copied().collect(),
                    };
                    for _ in 0..shard_count {
                        let _ = endpoints_tx.send(all.clone());
                    }
                }
            }
            Ok(BootEvent::Ready) => ready += 1,
            Ok(BootEvent::Failed(id, e)) => {
                return Err(StartError::Shards(format!("shard {id}: {e}")))
            }
            Err(_) => {
                return Err(StartError::Shards(
                    "the shards stopped during start-up".into(),
                ))
            }
        }
    }
    let listen =
        listen.ok_or_else(|| StartError::Shards("shard 0 never bound the main address".into()))?;
    let shard_addrs: Vec<SocketAddr> = shard_addrs.into_iter().flatten().collect();
    let kafka_shard_addrs: Vec<SocketAddr> = kafka_addrs.into_iter().flatten().collect();
    let evicted: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let membership = match &config.cluster {
        None => None,
        Some(c) => {
            let (why, stopping) = (evicted.clone(), stop.clone());
            let joined = cluster::join(
                &config,
                c,
                &cluster_id,
                cluster::Endpoints {
                    native: listen.native,
                    native_shards: &shard_addrs,
                    kafka: listen.kafka,
                    kafka_shards: &kafka_shard_addrs,
                },
                controller,
                move |image| {
                    let _ = images_tx.unbounded_send(image);
                },
                move |reason| {
                    if let Ok(mut w) = why.lock() {
                        *w = Some(reason);
                    }
                    stopping.store(true, Ordering::Release);
                },
            );
            match joined {
                Ok(m) => {
                    if let Some(link) = &link {
                        link.attach(m.refresher());
                    }
                    admit();
                    Some(m)
                }
                Err(e) => {
                    // The shards, waiting to be admitted, stop.
                    stop.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
    };
    let membership = Arc::new(std::sync::Mutex::new(membership));
    let leaver = match membership.lock().ok().is_some_and(|m| m.is_some()) {
        false => {
            left.store(true, Ordering::Release);
            None
        }
        true => {
            let (stop, left, membership) = (stop.clone(), left.clone(), membership.clone());
            let leave = move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(STOP_POLL);
                }
                if let Some(m) = membership.lock().ok().and_then(|mut m| m.take()) {
                    m.leave();
                }
                left.store(true, Ordering::Release);
            };
            Some(
                std::thread::Builder::new()
                    .name("cluster-leave".into())
                    .spawn(leave)
                    .map_err(|e| StartError::Cluster(format!("the leaving thread: {e}")))?,
            )
        }
    };
    metrics.set_ready();
    Ok(RunningServer {
        listen: listen.native,
        shard_addrs,
        kafka_listen: listen.kafka,
        kafka_shard_addrs,
        node_id: config.broker_id,
        handles,
        stop,
        membership,
        leaver,
        evicted,
        _lock: lock,
    })
}

/// A shard's life: open its partitions, bind, join the mesh, serve.
async fn run_shard(
    id: ShardId,
    mesh: MeshBuilder<ShardMessage, Full>,
    boot: Boot,
) -> Result<(), StartError> {
    let config = boot.config.clone();
    // Recover this shard's partitions before accepting anyone.
    let metrics = boot.metrics.shard(id);
    let partitions = shard::open_all(id, &metrics, &config, &boot.data, &boot.topics).await?;
    let abandoned = || StartError::Shards("start-up was abandoned".into());

    let asked = if id == 0 {
        MainAddrs {
            native: config.listen,
            kafka: config.kafka_addr(),
        }
    } else {
        boot.main_addr.recv().map_err(|_| abandoned())?
    };
    let main_addr = asked.native;
    let listen_error = |addr, what: String| {
        move |e: glommio::GlommioError<()>| StartError::Listen {
            addr,
            what,
            source: e.into(),
        }
    };
    let main = TcpListener::bind(main_addr).map_err(listen_error(main_addr, String::new()))?;
    let main_addr = main
        .local_addr()
        .map_err(listen_error(main_addr, String::new()))?;
    let kafka_main = match asked.kafka {
        Some(addr) => {
            let what = " (Kafka)".to_string();
            let l = TcpListener::bind(addr).map_err(listen_error(addr, what.clone()))?;
            let bound = l.local_addr().map_err(listen_error(addr, what))?;
            Some((l, bound))
        }
        None => None,
    };
    if id == 0 {
        let _ = boot.events.send(BootEvent::MainBound(MainAddrs {
            native: main_addr,
            kafka: kafka_main.as_ref().map(|(_, a)| *a),
        }));
    }
    let kafka_own = match &kafka_main {
        Some((_, main)) => {
            let addr = SocketAddr::new(main.ip(), config.kafka_shard_port(id, main.port()));
            let what = format!(" (shard {id}'s Kafka port)");
            let l = TcpListener::bind(addr).map_err(listen_error(addr, what.clone()))?;
            let bound = l.local_addr().map_err(listen_error(addr, what))?;
            Some((l, bound))
        }
        None => None,
    };
    let shard_addr = SocketAddr::new(config.listen.ip(), config.shard_port(id, main_addr.port()));
    let own_port = format!(" (shard {id}'s port)");
    let own = TcpListener::bind(shard_addr).map_err(listen_error(shard_addr, own_port.clone()))?;
    let shard_addr = own
        .local_addr()
        .map_err(listen_error(shard_addr, own_port))?;
    let _ = boot.events.send(BootEvent::ShardBound(
        id,
        shard_addr,
        kafka_own.as_ref().map(|(_, a)| *a),
    ));
    let endpoints = boot.endpoints.recv().map_err(|_| abandoned())?;

    let mesh = shards::join_mesh(mesh)
        .await
        .map_err(|e| StartError::Shards(e.to_string()))?;
    let shard = Rc::new(Shard::new(ShardParts {
        id,
        shard_count: boot.shard_count,
        config: config.clone(),
        data: boot.data.clone(),
        endpoints: endpoints.native,
        kafka_endpoints: endpoints.kafka,
        kafka_main: kafka_main.as_ref().map(|(_, a)| *a),
        cluster_id: boot.cluster_id.clone(),
        producer_ids: boot.producer_ids,
        topics: boot.topics.clone(),
        partitions,
        peers: mesh.senders,
        metrics,
        open_connections: boot.open_connections.clone(),
        cluster: boot.link.clone(),
    }));
    let replayed = groups::replay(&shard).await.map_err(StartError::Replay)?;
    if replayed > 0 {
        tracing::info!(shard = id, offsets = replayed, "committed offsets replayed");
    }
    glommio::spawn_local(groups::tick_forever(shard.clone())).detach();

    let mut receivers = mesh.receivers;
    for (_, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let receiver = receiver;
            while let Some(msg) = receiver.recv().await {
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.on_message(msg).await }).detach();
            }
        })
        .detach();
    }
    let retention = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(shard.config().retention_check).await;
                shard.enforce_retention().await;
            }
        })
    };
    retention.detach();
    if id == 0 && boot.link.is_some() {
        // The committed images, applied in order from here on (before the
        // broker serves: it catches up first).
        let images = boot.images.lock().ok().and_then(|mut i| i.take());
        if let Some(mut images) = images {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                use futures_lite::StreamExt;
                while let Some(image) = images.next().await {
                    cluster::apply::apply(&shard, image).await;
                }
            })
            .detach();
        }
    }
    let _ = boot.events.send(BootEvent::Ready);
    // A cluster member serves once the controllers admitted it: a second
    // process given a live broker's id never answers a client.
    loop {
        match boot.admitted.try_recv() {
            Ok(()) => break,
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(abandoned()),
            Err(crossbeam_channel::TryRecvError::Empty) => {
                if boot.stop.load(Ordering::Acquire) {
                    return Err(abandoned());
                }
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tracing::info!(shard = id, main = %main_addr, port = %shard_addr, "shard serving");

    // Each accept loop is a task of its own, woken only by its listener.
    // (Racing them against the stop poll in one task re-polled them every
    // 50 ms, and glommio kept every waker clone: its refcount overflowed
    // after about 15 minutes and the shard panicked.)
    let main_loop = glommio::spawn_local(accept_loop(
        shard.clone(),
        main,
        Via::Main,
        Protocol::Native,
    ));
    let own_loop = glommio::spawn_local(accept_loop(
        shard.clone(),
        own,
        Via::ShardPort,
        Protocol::Native,
    ));
    let mut kafka_loops = Vec::new();
    for (listener, via) in [
        (kafka_main.map(|(l, _)| l), Via::Main),
        (kafka_own.map(|(l, _)| l), Via::ShardPort),
    ] {
        if let Some(listener) = listener {
            kafka_loops.push(glommio::spawn_local(accept_loop(
                shard.clone(),
                listener,
                via,
                Protocol::Kafka,
            )));
        }
    }
    while !boot.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    // A cluster member keeps serving until its controlled shutdown moved
    // its leaderships and this shard's replicas saw it: produces in flight
    // are answered (by the new leaders, after a client's retry) rather than
    // cut off.
    let leaving = std::time::Instant::now() + LEAVE_WAIT;
    while std::time::Instant::now() < leaving
        && (!boot.left.load(Ordering::Acquire)
            || shard
                .replication()
                .all()
                .iter()
                .any(|r| r.role() == broker_replication::RoleKind::Leader))
    {
        glommio::timer::sleep(STOP_POLL).await;
    }
    // Cancelling drops both listeners: no new connection from here on.
    main_loop.cancel().await;
    own_loop.cancel().await;
    for l in kafka_loops {
        l.cancel().await;
    }
    shard.shut_down(DRAIN_TIMEOUT).await;
    Ok(())
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Native,
    Kafka,
}

/// Accepts connections forever, each served by its own task.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, via: Via, protocol: Protocol) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let open = shard.open_connections();
                if open.fetch_add(1, Ordering::AcqRel) >= shard.config().max_connections() {
                    open.fetch_sub(1, Ordering::AcqRel);
                    if protocol == Protocol::Native {
                        glommio::spawn_local(connection::refuse(shard.clone(), stream)).detach();
                    }
                    // A Kafka peer has no frame for it: the connection is
                    // closed (dropped) at once.
                    continue;
                }
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    match protocol {
                        Protocol::Native => connection::serve(shard.clone(), stream, via).await,
                        Protocol::Kafka => kafka::connection::serve(shard.clone(), stream).await,
                    }
                    shard.open_connections().fetch_sub(1, Ordering::AcqRel);
                })
                .detach();
                // An accept that is ready at once does not yield: under a
                // storm of connections this loop would starve every other
                // task of the shard (seen: thousands of sockets left in
                // CLOSE-WAIT, well-behaved clients unserved). Go to the back
                // of the queue after each one.
                futures_lite::future::yield_now().await;
            }
            Err(e) => {
                // Out of descriptors, most likely: back off rather than spin.
                tracing::warn!(shard = shard.id(), error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
