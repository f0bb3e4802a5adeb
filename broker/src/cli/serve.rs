//! `broker serve`: run the broker in the foreground until SIGTERM/SIGINT;
//! and `broker config print`: the effective configuration.
//!
//! Every setting can come from a flag or from the TOML file given with
//! `--config`; a flag wins over the file, the file over the default. The
//! file's keys are the flags' names with `_` for `-` (`data_dir`,
//! `fsync_interval_ms`, ...); an unknown key or a bad value is an error that
//! names it.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use super::CliResult;
use broker_log::{config as log_config, FsyncPolicy};
use broker_server::{self, ServerConfig};

/// When a partition's appends are fdatasynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every acknowledgement (group commit shares one fsync among
    /// the appends that arrive while one is in flight).
    Always,
    /// Every fsync-interval-ms; acknowledged data may be lost on power
    /// failure (not on a process crash).
    Interval,
    /// Never (only at a graceful stop): the page cache decides.
    Never,
}

/// Which Kafka nodes Metadata advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaAdvertise {
    /// Every shard as its own node on its own port: clients reach the
    /// owning core directly.
    Shards,
    /// One node, the Kafka main port: the shards forward among themselves.
    Broker,
}

/// The broker's settings, each optional: from flags or from the file.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Data directory, created if missing [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Main address: accepts every request and forwards to the owning shard
    /// [default: 127.0.0.1:9092].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Port of shard 0's shard-aware listener; shard i uses this + i.
    /// Default: the main port + 1 (free ports when the main port is 0).
    /// 0: free ports.
    #[arg(long)]
    pub shard_port_base: Option<u16>,
    /// Host that metadata advertises for the shard ports (default: the
    /// listen address, 127.0.0.1 if it is 0.0.0.0).
    #[arg(long)]
    pub advertised_host: Option<String>,
    /// Number of shards, each pinned to its own CPU [default: every CPU].
    #[arg(long)]
    pub shards: Option<usize>,
    /// When appends are fdatasynced [default: always].
    #[arg(long, value_enum)]
    pub fsync: Option<Fsync>,
    /// Period of `--fsync interval`, in milliseconds [default: 100].
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Partitions of a topic created without a count [default: 1].
    #[arg(long)]
    pub default_partitions: Option<u32>,
    /// Replicas of each partition of a topic created without a replication
    /// factor (Kafka's default.replication.factor) [default: 1]. Above 1
    /// needs --controllers and --fsync always.
    #[arg(long)]
    pub default_replication_factor: Option<u16>,
    /// Default segment size in bytes [default: 1073741824].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Default retention time in milliseconds; -1 keeps forever
    /// [default: 604800000, 7 days].
    #[arg(long, allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Default retention size per partition in bytes; -1: no limit
    /// [default: -1].
    #[arg(long, allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Largest frame accepted, in bytes [default: 67108864].
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Largest record batch accepted, in bytes [default: 8388608].
    #[arg(long)]
    pub max_batch_bytes: Option<usize>,
    /// How often retention runs, in milliseconds [default: 300000].
    #[arg(long)]
    pub retention_check_ms: Option<u64>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter such
    /// as `broker=debug`) [default: RUST_LOG, else info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Most client connections open at once; one more is told
    /// TooManyConnections and closed [default: 3/4 of the descriptor limit].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Serve Prometheus metrics (/metrics) and readiness (/health) over HTTP
    /// on this address; port 0 picks one, shown as `metrics=` in the ready
    /// line [default: off].
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// The Apache Kafka protocol's listener: every shard accepts on it, and
    /// each shard also listens on its own Kafka port (advertised as its own
    /// Kafka node); `off` for none [default: the --listen IP, its port +
    /// 100: 127.0.0.1:9192; free ports when --listen's port is 0].
    #[arg(long, value_name = "HOST:PORT|off")]
    pub kafka_listen: Option<String>,
    /// Port of shard 0's own Kafka listener; shard i uses this + i.
    /// Default: the Kafka port + 1 (free ports when it is 0). 0: free ports.
    #[arg(long)]
    pub kafka_shard_port_base: Option<u16>,
    /// Which Kafka nodes Metadata advertises: every shard on its own port,
    /// or one node per broker [default: shards].
    #[arg(long, value_enum)]
    pub kafka_advertise: Option<KafkaAdvertise>,
    /// Whether a Kafka client's Metadata request creates a topic it names
    /// that does not exist (with --default-partitions) [default: true].
    #[arg(long, value_name = "true|false")]
    pub auto_create_topics: Option<bool>,
    /// Shortest session timeout a consumer-group member may ask for, in
    /// milliseconds; a join asking for less is refused [default: 100].
    #[arg(long)]
    pub group_min_session_timeout_ms: Option<u32>,
    /// Longest session timeout a consumer-group member may ask for, in
    /// milliseconds [default: 300000].
    #[arg(long)]
    pub group_max_session_timeout_ms: Option<u32>,
    /// How long a group with no members waits for more before its first
    /// generation forms, in milliseconds, extended per new member up to the
    /// rebalance timeout (Kafka's group.initial.rebalance.delay.ms); 0: no
    /// wait [default: 3000].
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u32>,
    /// This broker's id in its cluster; Kafka node ids are id * 1024 +
    /// shard [default: 0].
    #[arg(long)]
    pub node_id: Option<u32>,
    /// The cluster's controllers, `ID@HOST:PORT,...`: the brokers with these
    /// ids run the metadata quorum on these addresses, and every broker
    /// registers with them. Without it the broker runs on its own.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controllers: Option<String>,
    /// The cluster's id (the same on every member) [default: derived from
    /// --controllers].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// A cluster member not heard from for longer is fenced, in
    /// milliseconds [default: 9000].
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// How often a cluster member heartbeats to the controllers, in
    /// milliseconds [default: 2000].
    #[arg(long)]
    pub broker_heartbeat_interval_ms: Option<u64>,
}

/// Arguments of `broker serve`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    broker serve                                   # data in ./data, listens on 127.0.0.1:9092\n  \
    broker serve --data-dir /var/lib/broker --listen 0.0.0.0:9092 --shards 4\n  \
    broker serve --config broker.toml --fsync never # a flag overrides the file\n  \
    broker serve --listen 127.0.0.1:0               # free port, printed on stdout\n\n\
    Once every shard serves, one line goes to stdout:\n  \
    ready listen=127.0.0.1:9092 shards=127.0.0.1:9093,127.0.0.1:9094 kafka=127.0.0.1:9192 kafka_shards=127.0.0.1:9193,127.0.0.1:9194\n\
    SIGTERM or SIGINT stops it gracefully (a second one exits at once).")]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys: the flag names with
    /// `_` for `-`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Arguments of `broker config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `broker config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file, flags and defaults merged)
    /// as TOML, usable as a --config file.
    #[command(after_help = "Example:\n  broker config print --config broker.toml --shards 2")]
    Print(ServeArgs),
}

/// Every setting, resolved: what `broker config print` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    data_dir: PathBuf,
    listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard_port_base: Option<u16>,
    kafka_listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_shard_port_base: Option<u16>,
    kafka_advertise: KafkaAdvertise,
    auto_create_topics: bool,
    advertised_host: String,
    shards: usize,
    fsync: Fsync,
    fsync_interval_ms: u64,
    default_partitions: u32,
    default_replication_factor: u16,
    segment_bytes: u64,
    retention_ms: i64,
    retention_bytes: i64,
    max_frame_bytes: usize,
    max_batch_bytes: usize,
    retention_check_ms: u64,
    log_level: String,
    max_connections: usize,
    group_min_session_timeout_ms: u32,
    group_max_session_timeout_ms: u32,
    group_initial_rebalance_delay_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<SocketAddr>,
    node_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    controllers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_session_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_heartbeat_interval_ms: Option<u64>,
}

impl ServeArgs {
    /// The settings of the file (if any) overridden by the flags.
    pub fn merged(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let f = &self.settings;
        macro_rules! pick {
            ($($field:ident),*) => {
                Settings { $( $field: f.$field.clone().or(file.$field), )* }
            };
        }
        Ok(pick!(
            data_dir,
            listen,
            shard_port_base,
            advertised_host,
            shards,
            fsync,
            fsync_interval_ms,
            default_partitions,
            default_replication_factor,
            segment_bytes,
            retention_ms,
            retention_bytes,
            max_frame_bytes,
            max_batch_bytes,
            retention_check_ms,
            log_level,
            max_connections,
            metrics,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms,
            kafka_listen,
            kafka_shard_port_base,
            kafka_advertise,
            auto_create_topics,
            node_id,
            controllers,
            cluster_id,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms
        ))
    }

    /// Every setting resolved, defaults included, and checked.
    pub fn effective(&self) -> Result<(Effective, ServerConfig), String> {
        let s = self.merged()?;
        let d = ServerConfig::default();
        let fsync = s.fsync.unwrap_or(Fsync::Always);
        let fsync_interval_ms = s.fsync_interval_ms.unwrap_or(100);
        let retention_ms = s
            .retention_ms
            .unwrap_or(log_config::DEFAULT_RETENTION_MS as i64);
        let retention_bytes = s.retention_bytes.unwrap_or(-1);
        let limit = |name: &str, v: i64| match v {
            -1 => Ok(None),
            v if v >= 1 => Ok(Some(v as u64)),
            v => Err(format!(
                "{name} = {v}: must be at least 1, or -1 for no limit"
            )),
        };
        use broker_server::config::KafkaListen;
        let kafka_listen =
            match s.kafka_listen.as_deref() {
                None => d.kafka_listen,
                Some("off") => KafkaListen::Off,
                Some(addr) => KafkaListen::At(addr.parse::<SocketAddr>().map_err(|e| {
                    format!("kafka_listen = {addr:?}: {e} (want HOST:PORT, or off)")
                })?),
            };
        let kafka_advertise = s.kafka_advertise.unwrap_or(KafkaAdvertise::Shards);
        let mut cfg = ServerConfig {
            kafka_listen,
            kafka_shard_port_base: s.kafka_shard_port_base,
            kafka_advertise: match kafka_advertise {
                KafkaAdvertise::Shards => broker_server::config::KafkaAdvertise::Shards,
                KafkaAdvertise::Broker => broker_server::config::KafkaAdvertise::Broker,
            },
            auto_create_topics: s.auto_create_topics.unwrap_or(d.auto_create_topics),
            data_dir: s.data_dir.clone().unwrap_or(d.data_dir),
            listen: s.listen.unwrap_or(d.listen),
            shard_port_base: s.shard_port_base,
            advertised_host: s.advertised_host.clone(),
            shards: s.shards,
            fsync: match fsync {
                Fsync::Always => FsyncPolicy::Always,
                Fsync::Interval if fsync_interval_ms == 0 => {
                    return Err("fsync_interval_ms = 0: must be above 0".into())
                }
                Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(fsync_interval_ms)),
                Fsync::Never => FsyncPolicy::Never,
            },
            default_partitions: s.default_partitions.unwrap_or(d.default_partitions),
            max_frame_bytes: s.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_batch_bytes: s.max_batch_bytes.unwrap_or(d.max_batch_bytes),
            retention_check: s
                .retention_check_ms
                .map_or(d.retention_check, Duration::from_millis),
            max_connections: s.max_connections,
            group_min_session_timeout_ms: s
                .group_min_session_timeout_ms
                .unwrap_or(d.group_min_session_timeout_ms),
            group_max_session_timeout_ms: s
                .group_max_session_timeout_ms
                .unwrap_or(d.group_max_session_timeout_ms),
            group_initial_rebalance_delay_ms: s
                .group_initial_rebalance_delay_ms
                .unwrap_or(d.group_initial_rebalance_delay_ms),
            broker_id: s.node_id.unwrap_or(d.broker_id),
            cluster: match &s.controllers {
                None => {
                    if s.cluster_id.is_some()
                        || s.broker_session_timeout_ms.is_some()
                        || s.broker_heartbeat_interval_ms.is_some()
                    {
                        return Err("cluster_id, broker_session_timeout_ms and \
                             broker_heartbeat_interval_ms need --controllers"
                            .into());
                    }
                    None
                }
                Some(text) => Some(broker_server::config::ClusterConfig {
                    controllers: broker_server::config::ClusterConfig::parse_controllers(text)
                        .map_err(|e| e.to_string())?,
                    cluster_id: s.cluster_id.clone(),
                    session_timeout_ms: s
                        .broker_session_timeout_ms
                        .unwrap_or(broker_server::config::DEFAULT_BROKER_SESSION_TIMEOUT_MS),
                    heartbeat_interval_ms: s
                        .broker_heartbeat_interval_ms
                        .unwrap_or(broker_server::config::DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS),
                }),
            },
            ..ServerConfig::default()
        };
        cfg.topic_defaults.segment_bytes =
            s.segment_bytes.unwrap_or(d.topic_defaults.segment_bytes);
        cfg.topic_defaults.replication_factor = s
            .default_replication_factor
            .unwrap_or(d.topic_defaults.replication_factor);
        cfg.topic_defaults.retention_ms = limit("retention_ms", retention_ms)?;
        cfg.topic_defaults.retention_bytes = limit("retention_bytes", retention_bytes)?;
        cfg.connection_in_flight_bytes = cfg.connection_in_flight_bytes.max(cfg.max_frame_bytes);
        cfg.validate().map_err(|e| e.to_string())?;
        let shards = match cfg.shards {
            Some(n) => n,
            None => broker_shard::online_cpus().map_or(1, |c| c.len()),
        };
        let effective = Effective {
            data_dir: cfg.data_dir.clone(),
            listen: cfg.listen,
            shard_port_base: cfg.shard_port_base,
            kafka_listen: cfg
                .kafka_addr()
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            kafka_shard_port_base: cfg.kafka_shard_port_base,
            kafka_advertise,
            auto_create_topics: cfg.auto_create_topics,
            advertised_host: cfg.advertised_host(),
            shards,
            fsync,
            fsync_interval_ms,
            default_partitions: cfg.default_partitions,
            default_replication_factor: cfg.topic_defaults.replication_factor,
            segment_bytes: cfg.topic_defaults.segment_bytes,
            retention_ms,
            retention_bytes,
            max_frame_bytes: cfg.max_frame_bytes,
            max_batch_bytes: cfg.max_batch_bytes,
            retention_check_ms: cfg.retention_check.as_millis() as u64,
            log_level: s.log_level.clone().unwrap_or_else(|| "info".into()),
            metrics: s.metrics,
            max_connections: cfg.max_connections(),
            group_min_session_timeout_ms: cfg.group_min_session_timeout_ms,
            group_max_session_timeout_ms: cfg.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms: cfg.group_initial_rebalance_delay_ms,
            node_id: cfg.broker_id,
            controllers: s.controllers.clone(),
            cluster_id: cfg.cluster.as_ref().map(|c| {
                c.cluster_id
                    .clone()
                    .unwrap_or_else(|| broker_server::metadata::derived_cluster_id(&c.controllers))
            }),
            broker_session_timeout_ms: cfg.cluster.as_ref().map(|c| c.session_timeout_ms),
            broker_heartbeat_interval_ms: cfg.cluster.as_ref().map(|c| c.heartbeat_interval_ms),
        };
        Ok((effective, cfg))
    }
}

fn read_file(path: &Path) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Runs the broker until it is stopped.
pub fn run(args: ServeArgs) -> CliResult {
    let (effective, config) = args.effective()?;
    init_logging(args.merged()?.log_level.as_deref());
    let metrics = broker_server::metrics::Metrics::new();
    // Up before recovery, so /health can say "starting" meanwhile.
    let metrics_addr = match effective.metrics {
        Some(addr) => Some(broker_server::metrics::serve_http(addr, metrics.clone())?),
        None => None,
    };
    let running = broker_server::start_with_metrics(config, metrics)?;
    stop_on_signals(running.stopper())?;
    let mut out = std::io::stdout().lock();
    match metrics_addr {
        Some(addr) => writeln!(out, "{} metrics={addr}", running.ready_line())?,
        None => writeln!(out, "{}", running.ready_line())?,
    }
    out.flush()?;
    drop(out);
    running.wait()?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `broker config ...`.
pub fn run_config(args: ConfigArgs) -> CliResult {
    match args.command {
        ConfigCommand::Print(serve) => {
            let (effective, _) = serve.effective()?;
            let text = toml::to_string(&effective)?;
            print!("{text}");
            Ok(())
        }
    }
}

/// SIGTERM or SIGINT stops the broker gracefully (stop accepting, finish
/// in-flight requests, flush and fsync every partition, exit 0); a second
/// one exits at once (status 130), as an impatient operator expects.
fn stop_on_signals(stopper: broker_server::Stopper) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                received += 1;
                if received == 1 {
                    tracing::info!(signal, "stopping: finishing in-flight requests and flushing partitions (signal again to exit now)");
                    stopper.stop();
                } else {
                    tracing::warn!(signal, "second signal: exiting without a graceful stop");
                    std::process::exit(130);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

/// Structured logs on stderr, filtered by `level` or RUST_LOG (default info).
fn init_logging(level: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let spec = match level {
        Some(l) => l.to_owned(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
    };
    // openraft logs every vote and election at info: a broker's log at a
    // plain level is about the broker (`openraft=info` shows them).
    let spec = if matches!(spec.trim(), "info" | "debug" | "trace") {
        format!("{spec},openraft=warn")
    } else {
        spec
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("serve").chain(args.iter().copied())).serve
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("broker.toml");
        std::fs::write(
            &file,
            "shards = 1\nfsync = \"never\"\nsegment_bytes = 1048576\nlisten = \"127.0.0.1:7000\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let (e, cfg) = parse(&["--config", path, "--fsync", "interval"])
            .effective()
            .unwrap();
        assert_eq!(e.fsync, Fsync::Interval, "the flag wins");
        assert_eq!(cfg.fsync, FsyncPolicy::Interval(Duration::from_millis(100)));
        assert_eq!(e.segment_bytes, 1 << 20, "the file wins over the default");
        assert_eq!(e.listen.port(), 7000);
        assert_eq!(
            e.max_frame_bytes,
            broker_protocol::limits::DEFAULT_MAX_FRAME_BYTES,
            "default"
        );
        // What `config print` shows reads back as a config file.
        let printed = toml::to_string(&e).unwrap();
        let again: Settings = toml::from_str(&printed).unwrap();
        assert_eq!(again.fsync, Some(Fsync::Interval));
        assert_eq!(again.group_max_session_timeout_ms, Some(300_000));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, key) in [
            ("shardz = 2\n", "shardz"),
            ("fsync = \"sometimes\"\n", "fsync"),
            ("retention_ms = -5\n", "retention_ms"),
            ("shards = \"two\"\n", "shards"),
            (
                "group_min_session_timeout_ms = 5000\ngroup_max_session_timeout_ms = 1000\n",
                "group_min_session_timeout_ms",
            ),
        ] {
            let file = tmp.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let err = parse(&["--config", file.to_str().unwrap()])
                .effective()
                .unwrap_err();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_default_replication_factor_above_one_needs_a_cluster_and_fsync_always() {
        let controllers = ["--node-id", "1", "--controllers", "1@127.0.0.1:9300"];
        let err = parse(&["--default-replication-factor", "3"])
            .effective()
            .unwrap_err();
        assert!(err.contains("--controllers"), "{err}");
        let mut args = controllers.to_vec();
        args.extend(["--default-replication-factor", "3", "--fsync", "interval"]);
        let err = parse(&args).effective().unwrap_err();
        assert!(err.contains("--fsync always"), "{err}");
        let mut args = controllers.to_vec();
        args.extend(["--default-replication-factor", "3"]);
        let (e, cfg) = parse(&args).effective().unwrap();
        assert_eq!(e.default_replication_factor, 3);
        assert_eq!(cfg.topic_defaults.replication_factor, 3);
        let err = parse(&["--default-replication-factor", "0"])
            .effective()
            .unwrap_err();
        assert!(err.contains("default_replication_factor"), "{err}");
    }
}
