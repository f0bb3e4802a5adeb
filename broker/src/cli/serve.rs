//! `broker serve`: run the broker in the foreground until it is killed.

use std::{io::Write, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use super::CliResult;
use crate::log::FsyncPolicy;
use crate::server::{self, config, ServerConfig};

/// When a partition's appends are fdatasynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// Before every acknowledgement (group commit shares one fsync among
    /// the appends that arrive while one is in flight).
    Always,
    /// Every --fsync-interval-ms; acknowledged data may be lost on power
    /// failure (not on a process crash).
    Interval,
    /// Never (only at shutdown): the page cache decides.
    Never,
}

/// Arguments of `broker serve`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    broker serve                                   # data in ./data, listens on 127.0.0.1:9092\n  \
    broker serve --data-dir /var/lib/broker --listen 0.0.0.0:9092 --shards 4\n  \
    broker serve --listen 127.0.0.1:0 --fsync never # free port, printed on stdout\n\n\
    Once every shard serves, one line goes to stdout:\n  \
    ready listen=127.0.0.1:9092 shards=127.0.0.1:9093,127.0.0.1:9094")]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Main address: accepts every request and forwards to the owning shard.
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Port of shard 0's shard-aware listener; shard i uses this + i.
    /// Default: the main port + 1 (free ports when the main port is 0).
    /// 0: free ports.
    #[arg(long)]
    pub shard_port_base: Option<u16>,
    /// Host that metadata advertises for the shard ports (default: the
    /// listen address, 127.0.0.1 if it is 0.0.0.0).
    #[arg(long)]
    pub advertised_host: Option<String>,
    /// Number of shards, each pinned to its own CPU (default: every CPU).
    #[arg(long)]
    pub shards: Option<usize>,
    /// When appends are fdatasynced.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,
    /// Period of --fsync interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub fsync_interval_ms: u64,
    /// Partitions of a topic created without a count.
    #[arg(long, default_value_t = config::DEFAULT_PARTITIONS)]
    pub default_partitions: u32,
    /// Default segment size in bytes.
    #[arg(long, default_value_t = crate::log::config::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Default retention time in milliseconds (-1: keep forever).
    #[arg(long, default_value_t = crate::log::config::DEFAULT_RETENTION_MS as i64, allow_negative_numbers = true)]
    pub retention_ms: i64,
    /// Default retention size per partition in bytes (-1: no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub retention_bytes: i64,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = crate::protocol::limits::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Largest record batch accepted, in bytes.
    #[arg(long, default_value_t = crate::log::config::DEFAULT_BATCH_BYTES_MAX)]
    pub max_batch_bytes: usize,
    /// How often retention runs, in milliseconds.
    #[arg(long, default_value_t = config::DEFAULT_RETENTION_CHECK.as_millis() as u64)]
    pub retention_check_ms: u64,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter such
    /// as `broker=debug`); the RUST_LOG variable is used when not given.
    #[arg(long)]
    pub log_level: Option<String>,
}

impl ServeArgs {
    /// The server settings these arguments ask for.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let limit = |name: &str, v: i64| match v {
            -1 => Ok(None),
            v if v >= 1 => Ok(Some(v as u64)),
            v => Err(format!(
                "--{name} {v}: must be at least 1, or -1 for no limit"
            )),
        };
        let mut cfg = ServerConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            shard_port_base: self.shard_port_base,
            advertised_host: self.advertised_host.clone(),
            shards: self.shards,
            fsync: match self.fsync {
                Fsync::Always => FsyncPolicy::Always,
                Fsync::Interval => {
                    if self.fsync_interval_ms == 0 {
                        return Err("--fsync-interval-ms must be above 0".into());
                    }
                    FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
                }
                Fsync::Never => FsyncPolicy::Never,
            },
            default_partitions: self.default_partitions,
            max_frame_bytes: self.max_frame_bytes,
            max_batch_bytes: self.max_batch_bytes,
            retention_check: Duration::from_millis(self.retention_check_ms),
            ..ServerConfig::default()
        };
        cfg.topic_defaults.segment_bytes = self.segment_bytes;
        cfg.topic_defaults.retention_ms = limit("retention-ms", self.retention_ms)?;
        cfg.topic_defaults.retention_bytes = limit("retention-bytes", self.retention_bytes)?;
        cfg.connection_in_flight_bytes = cfg.connection_in_flight_bytes.max(cfg.max_frame_bytes);
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs the broker until it is stopped.
pub fn run(args: ServeArgs) -> CliResult {
    init_logging(args.log_level.as_deref());
    let config = args.to_config()?;
    let running = server::start(config)?;
    stop_on_signals(running.stopper())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", running.ready_line())?;
    out.flush()?;
    drop(out);
    running.wait()?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT stops the broker gracefully (stop accepting, finish
/// in-flight requests, flush and fsync every partition, exit 0); a second
/// one exits at once (status 130), as an impatient operator expects.
fn stop_on_signals(stopper: server::Stopper) -> Result<(), String> {
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
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
