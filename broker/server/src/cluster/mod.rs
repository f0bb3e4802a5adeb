//! This broker's part in a cluster (`ServerConfig::cluster`): the
//! controller it runs when its id is among the controllers, and its
//! membership (registration, heartbeats, the committed metadata image
//! followed) with the controller quorum.
//!
//! Start-up order ([`crate::start`]): the controller starts before the
//! shards (its quorum address must answer the other controllers while this
//! broker recovers); the broker registers once every shard is bound (the
//! registration carries every shard's ports) and is ready once the leader
//! has unfenced it. A graceful stop is a controlled shutdown: the leader
//! fences this incarnation at once instead of after its session expires.
//!
//! Invariants, as absences: the controller and the membership never run
//! on a shard thread (they have threads of their own); a shard never
//! blocks on the controllers (its calls go through [`Link`]'s thread and
//! come back on a oneshot). `apply.rs`: the image applied on the shards,
//! and the topic commands that go through the controllers.

pub mod apply;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use broker_cluster::MetadataImage;
use broker_cluster::{BrokerId, BrokerRegistration, Incarnation, Listener};
use broker_controller::{
    AsyncCaller, BrokerStanding, Controller, ControllerConfig, Member, MemberConfig, Refresher,
    Standing,
};

use crate::config::{ClusterConfig, ServerConfig};
use crate::error::StartError;
use crate::metadata::{self, DataDir};

/// How long start-up waits for the controllers to admit this broker
/// (register and unfence it) before it gives up.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one call to a controller may take: longer than the quorum's
/// propose timeout (5 s), so that a slow commit is answered rather than
/// sent again.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(8);

/// The directory under the data directory where a controller keeps its
/// quorum's vote, log and snapshots.
pub const QUORUM_DIR: &str = "quorum";

/// What the shards of a cluster member share: the way to the controllers
/// (their calls on a thread of their own), the membership's refresh, and
/// a source of request ids.
pub struct Link {
    /// Controller calls for the shards.
    pub caller: AsyncCaller,
    refresher: OnceLock<Refresher>,
    seed: u128,
    next: AtomicU64,
}

impl Link {
    /// A link to `cluster`'s controllers, for broker `me`.
    pub fn new(cluster: &ClusterConfig, me: u32) -> Result<Link, StartError> {
        let caller = AsyncCaller::start(controllers_for(cluster, me), RPC_TIMEOUT)
            .map_err(|e| StartError::Cluster(format!("the controller calls' thread: {e}")))?;
        Ok(Link {
            caller,
            refresher: OnceLock::new(),
            seed: u128::from_be_bytes(metadata::random_16()?),
            next: AtomicU64::new(0),
        })
    }

    /// Gives the link the membership's refresh (once it runs).
    pub fn attach(&self, refresher: Refresher) {
        let _ = self.refresher.set(refresher);
    }

    /// Has the membership fetch the image now (once it runs).
    pub fn refresh(&self) {
        if let Some(r) = self.refresher.get() {
            r.now();
        }
    }

    /// A request id no other request draws: a random seed of this process
    /// plus a counter.
    pub fn request_id(&self) -> u128 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.seed
            .wrapping_add(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// This broker's running part in the cluster.
pub struct Membership {
    member: Member,
    controller: Option<Controller>,
}

/// The cluster id this member uses: configured, or derived from the
/// controllers; checked against (or written to) the data directory.
pub fn cluster_id(cluster: &ClusterConfig, data: &DataDir) -> Result<String, StartError> {
    let expected = match &cluster.cluster_id {
        Some(id) => id.clone(),
        None => metadata::derived_cluster_id(&cluster.controllers),
    };
    Ok(metadata::member_cluster_id(data, &expected)?)
}

/// Starts this broker's controller if its id is a controller's.
pub fn start_controller(
    config: &ServerConfig,
    cluster: &ClusterConfig,
    data: &DataDir,
    cluster_id: &str,
) -> Result<Option<Controller>, StartError> {
    if !cluster.controllers.contains_key(&config.broker_id) {
        return Ok(None);
    }
    let controller = Controller::start(ControllerConfig {
        node_id: u64::from(config.broker_id),
        voters: cluster
            .controllers
            .iter()
            .map(|(&id, &addr)| (u64::from(id), addr))
            .collect(),
        dir: data.root().join(QUORUM_DIR),
        cluster_id: cluster_id.to_owned(),
        session_timeout_ms: cluster.session_timeout_ms,
    })
    .map_err(|e| StartError::Cluster(format!("the controller did not start: {e}")))?;
    tracing::info!(node = config.broker_id, "controller started");
    Ok(Some(controller))
}

/// Where this broker's shards listen, for its registration.
pub struct Endpoints<'a> {
    /// The native main address.
    pub native: SocketAddr,
    /// Each shard's native port.
    pub native_shards: &'a [SocketAddr],
    /// The Kafka main address, if any.
    pub kafka: Option<SocketAddr>,
    /// Each shard's Kafka port.
    pub kafka_shards: &'a [SocketAddr],
}

/// Registers this broker with `cluster_id`'s controllers and waits (at
/// most [`JOIN_TIMEOUT`]) until they have unfenced it. `evicted` runs
/// (once, on the membership's thread) if this process is later evicted:
/// another process took its broker id, or it was shut down.
pub fn join(
    config: &ServerConfig,
    cluster: &ClusterConfig,
    cluster_id: &str,
    endpoints: Endpoints<'_>,
    controller: Option<Controller>,
    on_image: impl Fn(Arc<MetadataImage>) + Send + 'static,
    evicted: impl Fn(String) + Send + 'static,
) -> Result<Membership, StartError> {
    let host = config.advertised_host();
    let listener = |main: SocketAddr, shards: &[SocketAddr]| Listener {
        addr: host_port(&host, main.port()),
        shard_ports: shards.iter().map(SocketAddr::port).collect(),
    };
    let incarnation = u128::from_be_bytes(metadata::random_16()?);
    let registration = BrokerRegistration {
        id: BrokerId(config.broker_id),
        incarnation: Incarnation(incarnation),
        shards: endpoints.native_shards.len() as u16,
        native: listener(endpoints.native, endpoints.native_shards),
        kafka: endpoints.kafka.map(|k| listener(k, endpoints.kafka_shards)),
        previous_epoch: metadata::broker_epoch(&metadata::DataDir::new(&config.data_dir))
            .map_err(|e| StartError::Cluster(format!("this broker's recorded epoch: {e}")))?,
        fsync_every_write: config.fsync == broker_log::FsyncPolicy::Always,
    };
    registration
        .validate()
        .map_err(|e| StartError::Cluster(format!("this broker's registration: {e}")))?;
    let member = Member::start(
        MemberConfig {
            registration,
            cluster_id: cluster_id.to_owned(),
            controllers: controllers_for(cluster, config.broker_id),
            heartbeat_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
            rpc_timeout: RPC_TIMEOUT,
        },
        on_image,
        evicted,
    )
    .map_err(|e| StartError::Cluster(format!("the membership thread did not start: {e}")))?;
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    loop {
        let step = Duration::from_secs(10).min(JOIN_TIMEOUT.saturating_sub(waited));
        let standing = member.wait_for(step, |s| {
            matches!(
                s.standing,
                Some(
                    BrokerStanding::Unfenced
                        | BrokerStanding::StaleEpoch { .. }
                        | BrokerStanding::ShutDown
                )
            )
        });
        match standing {
            Some(Standing {
                standing: Some(BrokerStanding::Unfenced),
                epoch: Some(epoch),
                ..
            }) => {
                tracing::info!(node = config.broker_id, %epoch, "admitted to the cluster");
                // Recorded before serving: the next registration presents
                // it, so the controllers know the restart clean.
                metadata::record_broker_epoch(&metadata::DataDir::new(&config.data_dir), epoch)
                    .map_err(|e| StartError::Cluster(format!("recording the broker epoch: {e}")))?;
                return Ok(Membership { member, controller });
            }
            Some(s) => {
                return Err(StartError::Cluster(format!(
                    "the controllers refused this broker: {:?}",
                    s.standing
                )))
            }
            None => {
                waited = started.elapsed();
                if waited >= JOIN_TIMEOUT {
                    return Err(StartError::Cluster(format!(
                        "not admitted by the controllers within {JOIN_TIMEOUT:?}: {:?}",
                        member.standing()
                    )));
                }
                tracing::info!(standing = ?member.standing(), "waiting for the controllers");
            }
        }
    }
}

impl Membership {
    /// A handle asking the membership to fetch the image now.
    pub fn refresher(&self) -> Refresher {
        self.member.refresher()
    }

    /// This broker's epoch and standing.
    pub fn standing(&self) -> Standing {
        self.member.standing()
    }

    /// Leaves the cluster: a controlled shutdown (this incarnation is
    /// fenced at once), then this broker's controller stops.
    pub fn leave(self) {
        self.member.stop(true);
        if let Some(c) = self.controller {
            c.shutdown();
        }
    }
}

/// One shard's address of a broker of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardAddr {
    /// The broker.
    pub broker: u32,
    /// Its shard.
    pub shard: u16,
    /// Where to connect.
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// Every registered broker's native shard ports, by broker id then shard
/// (fenced ones too: their partitions keep their place).
pub fn native_shards(image: &MetadataImage) -> Vec<ShardAddr> {
    image
        .brokers()
        .iter()
        .flat_map(|(id, record)| {
            let l = &record.registration.native;
            let (host, _) = split_host_port(&l.addr);
            l.shard_ports
                .iter()
                .enumerate()
                .map(move |(s, &port)| ShardAddr {
                    broker: id.0,
                    shard: s as u16,
                    host: host.clone(),
                    port,
                })
        })
        .collect()
}

/// The Kafka nodes of the unfenced brokers: each shard its own node on its
/// own port (`per_shard`), or one node per broker on its main port.
pub fn kafka_nodes(image: &MetadataImage, per_shard: bool) -> Vec<(i32, String, u16)> {
    let mut nodes = Vec::new();
    for (id, record) in image.brokers() {
        let Some(l) = &record.registration.kafka else {
            continue;
        };
        if record.is_fenced() {
            continue;
        }
        let (host, main) = split_host_port(&l.addr);
        if per_shard {
            for (s, &port) in l.shard_ports.iter().enumerate() {
                nodes.push((crate::config::node_id(id.0, s as u16), host.clone(), port));
            }
        } else {
            nodes.push((crate::config::node_id(id.0, 0), host, main));
        }
    }
    nodes
}

/// The host and port of `host:port` (an IPv6 host without its brackets).
pub(crate) fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse().unwrap_or(0),
        ),
        None => (addr.to_owned(), 0),
    }
}

/// The controllers in the order broker `me` asks them: its own controller
/// first (always reachable, it names the leader), then the others.
fn controllers_for(cluster: &ClusterConfig, me: u32) -> Vec<SocketAddr> {
    let own = cluster.controllers.get(&me).copied();
    own.into_iter()
        .chain(
            cluster
                .controllers
                .iter()
                .filter(|(&id, _)| id != me)
                .map(|(_, &a)| a),
        )
        .collect()
}

/// `host:port`, an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
