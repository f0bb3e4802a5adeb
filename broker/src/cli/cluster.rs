//! `broker cluster status`: the controller quorum (each controller's view:
//! the leader it knows, its term, what it has applied) and the cluster's
//! brokers (epoch, fenced or not, shards, replicas held, partitions led;
//! the under-replicated and leaderless partition counts), as the leader's
//! image says.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{emit, table, OutputFormat};
use super::CliResult;
use broker_controller::{ControllerStatus, Request, Response};

/// Arguments of `broker cluster`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    broker cluster status --controllers 1@127.0.0.1:9300,2@127.0.0.2:9300,3@127.0.0.3:9300\n  \
    broker cluster status --controllers 127.0.0.1:9300 --json")]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `broker cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the controller quorum and the cluster's brokers.
    Status(StatusArgs),
}

/// Arguments of `broker cluster status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The controllers to ask, `HOST:PORT` or `ID@HOST:PORT` (as
    /// `broker serve --controllers` takes them), comma separated.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controllers: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Shorthand for `--output json`.
    #[arg(long)]
    pub json: bool,
}

/// How long each controller may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One controller's view, asked of it alone.
fn ask(address: SocketAddr) -> View {
    let request = match serde_json::to_string(&Request::Status) {
        Ok(r) => r,
        Err(e) => {
            return View {
                address,
                status: None,
                error: Some(e.to_string()),
            }
        }
    };
    let answer = broker_quorum::client::call(address, &request, TIMEOUT)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<Response>(&text).map_err(|e| e.to_string()));
    match answer {
        Ok(Response::Status(s)) => View {
            address,
            status: Some(*s),
            error: None,
        },
        Ok(other) => View {
            address,
            status: None,
            error: Some(format!("unexpected answer {other:?}")),
        },
        Err(e) => View {
            address,
            status: None,
            error: Some(e),
        },
    }
}

/// Runs `broker cluster`.
pub fn run(args: ClusterArgs) -> CliResult {
    match args.command {
        ClusterCommand::Status(a) => status(a),
    }
}

/// One controller's answer.
#[derive(Debug, Serialize)]
struct View {
    address: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ControllerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn status(a: StatusArgs) -> CliResult {
    let mut addrs = Vec::new();
    for item in a
        .controllers
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let addr = item.rsplit_once('@').map_or(item, |(_, addr)| addr);
        addrs.push(
            addr.parse::<SocketAddr>()
                .map_err(|e| format!("--controllers: {item:?}: {e}"))?,
        );
    }
    if addrs.is_empty() {
        return Err("--controllers: no address given".into());
    }
    // Each controller asked once (no leader following: every view counts),
    // all at the same time, so that down ones cost one timeout in all.
    let views: Vec<View> = std::thread::scope(|scope| {
        let asks: Vec<_> = addrs
            .iter()
            .map(|&address| scope.spawn(move || ask(address)))
            .collect();
        asks.into_iter()
            .zip(&addrs)
            .map(|(ask, &address)| {
                ask.join().unwrap_or_else(|_| View {
                    address,
                    status: None,
                    error: Some("the asking thread panicked".into()),
                })
            })
            .collect()
    });
    // The cluster as the leader of the newest term sees it (else the most
    // advanced view): a deposed leader that has not heard of the new term
    // loses to the new one.
    let best = views
        .iter()
        .filter_map(|v| v.status.as_ref())
        .max_by_key(|s| (s.term, s.leader == Some(s.node_id), s.last_applied));
    let Some(best) = best else {
        let errors: Vec<String> = views
            .iter()
            .map(|v| format!("{}: {}", v.address, v.error.as_deref().unwrap_or("?")))
            .collect();
        return Err(format!("no controller answered: {}", errors.join("; ")).into());
    };
    let output = if a.json { OutputFormat::Json } else { a.output };
    match output {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Doc<'a> {
                leader: Option<u64>,
                term: u64,
                controllers: &'a [View],
                cluster: &'a broker_cluster::ClusterStatus,
            }
            let doc = Doc {
                leader: best.leader,
                term: best.term,
                controllers: &views,
                cluster: &best.cluster,
            };
            emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))
        }
        OutputFormat::Table => {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| match &v.status {
                    Some(s) => vec![
                        s.node_id.to_string(),
                        v.address.to_string(),
                        opt(s.leader),
                        s.term.to_string(),
                        opt(s.last_applied),
                    ],
                    None => vec![
                        "?".into(),
                        v.address.to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ],
                })
                .collect();
            let mut text = table(
                &["CONTROLLER", "ADDRESS", "LEADER", "TERM", "APPLIED"],
                &rows,
            );
            for v in &views {
                if let Some(e) = &v.error {
                    text.push_str(&format!("{} unreachable: {e}\n", v.address));
                }
            }
            let c = &best.cluster;
            text.push_str(&format!(
                "\ncluster {}: metadata version {}, {} topics, {} partitions \
                 ({} under-replicated, {} without a leader)\n",
                c.cluster_id, c.version, c.topics, c.partitions, c.under_replicated, c.offline
            ));
            let rows: Vec<Vec<String>> = c
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.epoch.to_string(),
                        serde_json::to_value(b.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        b.shards.to_string(),
                        b.partitions.to_string(),
                        b.leaders.to_string(),
                    ]
                })
                .collect();
            text.push_str(&table(
                &["BROKER", "EPOCH", "STATE", "SHARDS", "REPLICAS", "LEADERS"],
                &rows,
            ));
            emit(&text)
        }
    }
}
