//! The server's settings: where it listens, where its data lives, how many
//! shards it runs, and the defaults and limits it applies. Plain data,
//! checked once by [`ServerConfig::validate`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::metadata::TopicConfig;
use broker_log::{config as log_config, FsyncPolicy, LogConfig};
use broker_protocol::limits::DEFAULT_MAX_FRAME_BYTES;

/// Default main listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";

/// How far above the native main port the Kafka listener is by default:
/// Kafka's customary 9092 is the native protocol's (it came first), so
/// Kafka's is 9192.
pub const KAFKA_PORT_OFFSET: u16 = 100;

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Default partition count of a topic created without one.
pub const DEFAULT_PARTITIONS: u32 = 1;

/// Default bytes of requests a connection may have in flight (read but not
/// yet answered): the reader stops reading while it is over.
pub const DEFAULT_CONNECTION_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Default period of the retention check on every partition.
pub const DEFAULT_RETENTION_CHECK: Duration = Duration::from_secs(300);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The main address: every shard accepts on it (SO_REUSEPORT) and
    /// forwards requests for partitions it does not own. Port 0 picks a free
    /// port.
    pub listen: SocketAddr,
    /// Port of shard 0's shard-aware listener; shard `i` listens on
    /// `shard_port_base + i`. None: the main port + 1, or free ports when the
    /// main port is 0. Some(0): free ports.
    pub shard_port_base: Option<u16>,
    /// Host name or address that Metadata advertises for the shard ports.
    /// None: the listen address's IP (127.0.0.1 when it listens on all
    /// addresses).
    pub advertised_host: Option<String>,
    /// Number of shards; None: one per available CPU.
    pub shards: Option<usize>,
    /// Fsync policy of every partition log.
    pub fsync: FsyncPolicy,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Settings of a topic created without them.
    pub topic_defaults: TopicConfig,
    /// Largest frame accepted, prefix included.
    pub max_frame_bytes: usize,
    /// Largest record batch accepted.
    pub max_batch_bytes: usize,
    /// Bytes of requests a connection may have in flight.
    pub connection_in_flight_bytes: usize,
    /// How often retention runs on every partition.
    pub retention_check: Duration,
    /// Most client connections open at once (all ports, all shards); one
    /// more is accepted, told TooManyConnections and closed. None: from
    /// the descriptor limit (RLIMIT_NOFILE minus a reserve for files).
    pub max_connections: Option<usize>,
    /// The Kafka listener's main address (every shard accepts on it, like
    /// the native main port). Port 0: free ports.
    pub kafka_listen: KafkaListen,
    /// Port of shard 0's own Kafka listener; shard `i` uses this + `i`.
    /// None: the Kafka main port + 1 (free ports when it is 0). Some(0):
    /// free ports.
    pub kafka_shard_port_base: Option<u16>,
    /// Which Kafka nodes Metadata advertises.
    pub kafka_advertise: KafkaAdvertise,
    /// Whether a Kafka Metadata or Produce request naming a missing topic
    /// creates it (with `default_partitions`), as Kafka's
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// This broker's id: Kafka node ids are `broker_id * 1024 + shard`.
    pub broker_id: u32,
    /// Shortest session timeout a consumer-group member may ask for.
    pub group_min_session_timeout_ms: u32,
    /// Longest session timeout a consumer-group member may ask for.
    pub group_max_session_timeout_ms: u32,
    /// How long the first generation of a group with no members waits for
    /// more members (extended per new member, up to the rebalance
    /// timeout), as Kafka's `group.initial.rebalance.delay.ms`; 0: none.
    pub group_initial_rebalance_delay_ms: u32,
    /// This broker's part in a cluster; None: a broker on its own, with no
    /// controllers (its metadata is its data directory's).
    pub cluster: Option<ClusterConfig>,
}

/// How a broker takes part in a cluster (KRaft's combined mode: the
/// brokers named in `controllers` also run the metadata quorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Every controller's broker id and quorum address. A broker whose id
    /// is here is a controller and listens on its address.
    pub controllers: std::collections::BTreeMap<u32, SocketAddr>,
    /// The cluster's id; None: derived from `controllers` (the same on
    /// every node given the same list).
    pub cluster_id: Option<String>,
    /// A broker not heard from for longer is fenced (Kafka's
    /// `broker.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// How often a broker heartbeats (Kafka's `broker.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: u64,
}

/// Default of [`ClusterConfig::session_timeout_ms`] (Kafka's).
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: u64 = 9_000;
/// Default of [`ClusterConfig::heartbeat_interval_ms`] (Kafka's).
pub const DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS: u64 = 2_000;
/// Most controllers a cluster may have.
pub const MAX_CONTROLLERS: usize = 9;

impl ClusterConfig {
    /// Parses `--controllers`: `ID@HOST:PORT` separated by commas.
    pub fn parse_controllers(
        text: &str,
    ) -> Result<std::collections::BTreeMap<u32, SocketAddr>, ConfigError> {
        let mut controllers = std::collections::BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |why: String| {
                ConfigError(format!(
                    "controllers: {item:?} {why} (want ID@HOST:PORT,ID@HOST:PORT,...)"
                ))
            };
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| bad("has no '@'".into()))?;
            let id: u32 = id.parse().map_err(|e| bad(format!("has a bad id: {e}")))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| bad(format!("has a bad address: {e}")))?;
            if controllers.insert(id, addr).is_some() {
                return Err(bad("repeats an id".into()));
            }
        }
        Ok(controllers)
    }

    /// Checks the settings; the error names the setting.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.controllers.is_empty() || self.controllers.len() > MAX_CONTROLLERS {
            return Err(ConfigError(format!(
                "controllers: {} given, a cluster has 1 to {MAX_CONTROLLERS}",
                self.controllers.len()
            )));
        }
        for (id, addr) in &self.controllers {
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(ConfigError(format!(
                    "controllers: {id}@{addr} is not an address other brokers can dial"
                )));
            }
        }
        let mut addrs: Vec<_> = self.controllers.values().collect();
        addrs.sort();
        if addrs.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError(
                "controllers: two controllers share an address".into(),
            ));
        }
        if self.heartbeat_interval_ms == 0
            || self.session_timeout_ms < self.heartbeat_interval_ms.saturating_mul(2)
        {
            return Err(ConfigError(format!(
                "broker session timeout {} ms must be at least twice the heartbeat interval {} ms (and that above 0)",
                self.session_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        Ok(())
    }
}

/// Where the Kafka listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaListen {
    /// None.
    Off,
    /// The main address's IP, its port + [`KAFKA_PORT_OFFSET`] (a free port
    /// when the main port is 0): 127.0.0.1:9192 by default.
    BesideMain,
    /// This address.
    At(SocketAddr),
}

/// Which Kafka nodes Metadata advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaAdvertise {
    /// Every shard as its own node on its own port: clients reach each
    /// partition's owning core directly.
    Shards,
    /// One node per broker, the Kafka main port: requests for another
    /// shard's partitions are forwarded inside the broker (for hosts where
    /// many ports are a problem).
    Broker,
}

/// Most shards a broker may run: Kafka node ids are `broker_id * 1024 +
/// shard`, so a broker's ids never collide with another's.
pub const MAX_SHARDS_PER_BROKER: u16 = 1024;

/// The Kafka node id of shard `shard` of broker `broker` (checked to fit an
/// i32 by [`ServerConfig::validate`] and the registration's checks).
pub fn node_id(broker: u32, shard: u16) -> i32 {
    (broker * u32::from(MAX_SHARDS_PER_BROKER) + u32::from(shard)) as i32
}

/// Default of [`ServerConfig::group_min_session_timeout_ms`].
pub const DEFAULT_GROUP_MIN_SESSION_TIMEOUT_MS: u32 = 100;
/// Default of [`ServerConfig::group_max_session_timeout_ms`] (5 minutes).
pub const DEFAULT_GROUP_MAX_SESSION_TIMEOUT_MS: u32 = 300_000;
/// Default of [`ServerConfig::group_initial_rebalance_delay_ms`] (Kafka's).
pub const DEFAULT_GROUP_INITIAL_REBALANCE_DELAY_MS: u32 = 3_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            shard_port_base: None,
            advertised_host: None,
            shards: None,
            fsync: FsyncPolicy::Always,
            default_partitions: DEFAULT_PARTITIONS,
            topic_defaults: TopicConfig {
                retention_ms: Some(log_config::DEFAULT_RETENTION_MS),
                retention_bytes: None,
                segment_bytes: log_config::DEFAULT_SEGMENT_BYTES,
                log_append_time: false,
                replication_factor: 1,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            },
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: log_config::DEFAULT_BATCH_BYTES_MAX,
            connection_in_flight_bytes: DEFAULT_CONNECTION_IN_FLIGHT_BYTES,
            retention_check: DEFAULT_RETENTION_CHECK,
            max_connections: None,
            kafka_listen: KafkaListen::BesideMain,
            kafka_shard_port_base: None,
            kafka_advertise: KafkaAdvertise::Shards,
            auto_create_topics: true,
            broker_id: 0,
            group_min_session_timeout_ms: DEFAULT_GROUP_MIN_SESSION_TIMEOUT_MS,
            group_max_session_timeout_ms: DEFAULT_GROUP_MAX_SESSION_TIMEOUT_MS,
            group_initial_rebalance_delay_ms: DEFAULT_GROUP_INITIAL_REBALANCE_DELAY_MS,
            cluster: None,
        }
    }
}

/// A setting that is out of range or inconsistent with another; the
/// message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ServerConfig {
    /// Checks the settings; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == Some(0) {
            return Err(ConfigError("shards must be at least 1".into()));
        }
        let rf = self.topic_defaults.replication_factor;
        if rf == 0 || usize::from(rf) > broker_replication_max_replicas() {
            return Err(ConfigError(format!(
                "default_replication_factor = {rf}: must be 1 to {}",
                broker_replication_max_replicas()
            )));
        }
        if rf > 1 && self.cluster.is_none() {
            return Err(ConfigError(format!(
                "default_replication_factor = {rf}: a broker on its own keeps one copy of each \
                 partition; replication needs --controllers"
            )));
        }
        if rf > 1 && self.fsync != FsyncPolicy::Always {
            return Err(ConfigError(format!(
                "default_replication_factor = {rf} with fsync {:?}: replicated topics are durable \
                 before ack on every replica, so they need --fsync always",
                self.fsync
            )));
        }
        if self.group_min_session_timeout_ms == 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(ConfigError(format!(
                "group_min_session_timeout_ms = {} and group_max_session_timeout_ms = {}: \
                 the minimum must be at least 1 and at most the maximum",
                self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
            )));
        }
        if let Some(n) = self.shards {
            if n > usize::from(MAX_SHARDS_PER_BROKER) {
                return Err(ConfigError(format!(
                    "shards = {n}: at most {MAX_SHARDS_PER_BROKER} (Kafka node ids are broker_id * {MAX_SHARDS_PER_BROKER} + shard)"
                )));
            }
        }
        if self.broker_id > (i32::MAX as u32) / u32::from(MAX_SHARDS_PER_BROKER) - 1 {
            return Err(ConfigError(format!(
                "broker id {} is too large: Kafka node ids (broker_id * {MAX_SHARDS_PER_BROKER} + shard) must fit an i32",
                self.broker_id
            )));
        }
        if let Some(k) = self.kafka_addr() {
            if k == self.listen && k.port() != 0 {
                return Err(ConfigError(format!(
                    "the Kafka listener and the native listener are both {k}"
                )));
            }
        }
        if self.default_partitions == 0 {
            return Err(ConfigError("default partitions must be at least 1".into()));
        }
        if self.max_frame_bytes < 4096 {
            return Err(ConfigError(format!(
                "max frame bytes {} is below 4096",
                self.max_frame_bytes
            )));
        }
        if self.connection_in_flight_bytes < self.max_frame_bytes {
            return Err(ConfigError(format!(
                "connection in-flight bytes {} is below the max frame bytes {}: a largest frame could never be read",
                self.connection_in_flight_bytes, self.max_frame_bytes
            )));
        }
        if self.retention_check.is_zero() {
            return Err(ConfigError(
                "retention check interval must be above 0".into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.log_config(&self.topic_defaults)
            .validate()
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The log settings of a partition of a topic with `topic` settings.
    pub fn log_config(&self, topic: &TopicConfig) -> LogConfig {
        LogConfig {
            segment_bytes_max: topic.segment_bytes,
            fsync: self.fsync,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            batch_bytes_max: self.max_batch_bytes,
            ..LogConfig::default()
        }
    }

    /// The connection limit in effect.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            // SAFETY: getrlimit writes into the struct it is given.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            let nofile = if rc == 0 { lim.rlim_cur as usize } else { 1024 };
            // Keep a quarter (at least 256) for segment files and the rest.
            nofile.saturating_sub((nofile / 4).max(256)).max(16)
        })
    }

    /// The host Metadata advertises.
    pub fn advertised_host(&self) -> String {
        match &self.advertised_host {
            Some(h) => h.clone(),
            None if self.listen.ip().is_unspecified() => "127.0.0.1".into(),
            None => self.listen.ip().to_string(),
        }
    }

    /// The Kafka port of shard `shard` (0: any free port).
    pub fn kafka_shard_port(&self, shard: u16, main_port: u16) -> u16 {
        match self.kafka_shard_port_base {
            Some(0) => 0,
            Some(base) => base.saturating_add(shard),
            None if self.kafka_addr().is_some_and(|a| a.port() == 0) => 0,
            None => main_port.saturating_add(1).saturating_add(shard),
        }
    }

    /// The Kafka main address asked for, if Kafka is on.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        match self.kafka_listen {
            KafkaListen::Off => None,
            KafkaListen::At(a) => Some(a),
            KafkaListen::BesideMain => Some(SocketAddr::new(
                self.listen.ip(),
                match self.listen.port() {
                    0 => 0,
                    p => p.checked_add(KAFKA_PORT_OFFSET)?,
                },
            )),
        }
    }

    /// The Kafka node id of `shard` on this broker.
    pub fn kafka_node_id(&self, shard: u16) -> i32 {
        node_id(self.broker_id, shard)
    }

    /// The port shard `shard` listens on (0: any free port).
    pub fn shard_port(&self, shard: u16, main_port: u16) -> u16 {
        match self.shard_port_base {
            Some(0) => 0,
            Some(base) => base.saturating_add(shard),
            None if self.listen.port() == 0 => 0,
            None => main_port.saturating_add(1).saturating_add(shard),
        }
    }
}

/// Most replicas of one partition (broker-replication's bound).
fn broker_replication_max_replicas() -> usize {
    broker_cluster::MAX_REPLICAS
}
