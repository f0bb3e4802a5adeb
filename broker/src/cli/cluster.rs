//! `broker cluster status`: the controller quorum (each controller's view:
//! the leader it knows, its term, what it has applied) and the cluster's
//! brokers (epoch, fenced or not, shards, replicas held, partitions led;
//! the under-replicated and leaderless partition counts), as the leader's
//! image says. `broker cluster reassign`: move a partition's replicas
//! (KIP-455: the new replicas catch up and join the ISR, then the others
//! are dropped), through the controllers' leader.

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
    broker cluster status --controllers 127.0.0.1:9300 --json\n  \
    broker cluster reassign --controllers 127.0.0.1:9300 --topic events --partition 0 --replicas 2,3,4")]
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
    /// Move a partition's replicas to other brokers: the new ones catch up
    /// and join the in-sync replicas, then the old ones are dropped (a
    /// leader among them hands over). Returns once the controllers
    /// recorded the move (or, with --wait, once it completed).
    Reassign(ReassignArgs),
}

/// Arguments of `broker cluster reassign`.
#[derive(Debug, Args)]
pub struct ReassignArgs {
    /// The controllers, `HOST:PORT` or `ID@HOST:PORT`, comma separated.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controllers: String,
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The partition.
    #[arg(long)]
    pub partition: u32,
    /// The broker ids it moves to, in preference order (the first is the
    /// preferred leader), comma separated.
    #[arg(long, value_name = "ID,ID,...")]
    pub replicas: String,
    /// Wait (at most this many seconds) until the move completed.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
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
        ClusterCommand::Reassign(a) => reassign(a),
    }
}

/// The controllers' addresses from `--controllers`.
fn controller_addrs(list: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let addr = item.rsplit_once('@').map_or(item, |(_, addr)| addr);
        addrs.push(
            addr.parse::<SocketAddr>()
                .map_err(|e| format!("--controllers: {item:?}: {e}"))?,
        );
    }
    if addrs.is_empty() {
        return Err("--controllers: no address given".into());
    }
    Ok(addrs)
}

fn reassign(a: ReassignArgs) -> CliResult {
    use broker_cluster::BrokerId;
    use broker_controller::{Applied, ControllerClient, Done};
    let addrs = controller_addrs(&a.controllers)?;
    let mut replicas = Vec::new();
    for id in a
        .replicas
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        replicas.push(BrokerId(
            id.parse::<u32>()
                .map_err(|e| format!("--replicas: {id:?}: {e}"))?,
        ));
    }
    let mut client = ControllerClient::new(addrs, TIMEOUT);
    let request = Request::ReassignPartition {
        topic: a.topic.clone(),
        partition: a.partition,
        replicas: replicas.clone(),
    };
    match client.call(&request) {
        Ok(Response::Applied(Applied {
            result: Ok(Done::PartitionAltered { replicas: r }),
            ..
        })) => {
            let brokers = |ps: &[broker_cluster::Placement]| {
                ps.iter()
                    .map(|p| p.broker.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            match &r.target {
                Some(t) => println!(
                    "reassigning {}/{}: replicas {} -> {} (isr {})",
                    a.topic,
                    a.partition,
                    brokers(&r.replicas),
                    brokers(t),
                    r.isr
                        .iter()
                        .map(|b| b.0.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => println!(
                    "{}/{}: replicas {} (done)",
                    a.topic,
                    a.partition,
                    brokers(&r.replicas)
                ),
            }
        }
        Ok(Response::Applied(Applied {
            result: Err(refused),
            ..
        })) => return Err(format!("refused: {refused}").into()),
        Ok(other) => return Err(format!("unexpected answer {other:?}").into()),
        Err(e) => return Err(format!("the controllers did not answer: {e}").into()),
    }
    let Some(limit) = a.wait else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(limit);
    loop {
        if let Ok(Response::Image(Some(image))) =
            client.call(&Request::FetchImage { since_version: 0 })
        {
            if let Ok(r) = image.partition_replicas(&a.topic, a.partition) {
                let now: Vec<BrokerId> = r.replicas.iter().map(|p| p.broker).collect();
                if r.target.is_none() && now == replicas {
                    println!("{}/{}: moved", a.topic, a.partition);
                    return Ok(());
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("the move did not complete within {limit} s").into());
        }
        std::thread::sleep(Duration::from_millis(200));
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
    let addrs = controller_addrs(&a.controllers)?;
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
