//! `loadgen paper`: the Kafka paper's experiments in one command, against
//! our broker and the paper's own peers, each in two modes:
//!
//! - `paper`: as the paper ran them. Ours: fsync never (O_DIRECT writes, no
//!   fsync before the ack) and acks=none (the paper's producer did not wait
//!   for acks). Peers: persistent messages without per-message acks, the
//!   store flushing asynchronously.
//! - `durable`: fsync before every ack. Ours: fsync always, acks=leader.
//!   Peers: publisher confirms / receipts, journal fsynced.
//!
//! Workloads (200-byte messages): producer with batch 1 and batch 50 (the
//! peers have no batching: the paper ran them with batch 1, and so do we),
//! then the consumer reading what the batch-50 run wrote with ~200 KB
//! (about 1000 messages) per fetch. Each is repeated `--runs` times; the
//! summary quotes medians. The system under test runs on core 0, loadgen on
//! core 1 (see `pin`).
//!
//! Over the Kafka protocol (loadgen's Kafka target, [`crate::kafka`]), the
//! same workloads against our broker's Kafka listener (`broker-kafka`, the
//! same broker process as the native rows, each mode; acks 0 in `paper`
//! mode, -1 in `durable`) and against Tansu (`tansu`, nisshi built and
//! started by scripts/peers.sh on its memory:// engine: not durable, so
//! only a `paper` row, produced with acks 1). Tansu is a peer: skipped with
//! `--no-peers`, and a failure to build or start it is reported, not fatal.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::{
    broker_proc::{find_broker_binary, BrokerProcess},
    chart, kafka, ours,
    peers::{self, PeerProcess, PeerRun},
    pin,
    results::{CpuWindow, RunResult},
};

/// Message size of the paper's experiments.
pub const PAPER_SIZE: usize = 200;
/// The consumer's fetch size: the paper's ~1000 messages of 200 bytes.
pub const PAPER_FETCH_BYTES: u32 = 204_800;

/// Options of `loadgen paper`.
#[derive(Debug, clap::Args)]
pub struct PaperArgs {
    /// Messages per run against our broker (the paper: 10 million).
    #[arg(long, default_value_t = 10_000_000)]
    pub messages: u64,
    /// Messages per run against our broker in durable mode (fsync before
    /// every ack: batch 1 runs at tens of thousands of messages/s, so the
    /// paper's count would take minutes per run).
    #[arg(long, default_value_t = 1_000_000)]
    pub durable_messages: u64,
    /// Messages per run against each peer (they are 10-1000x slower; the
    /// paper's count would take hours in durable mode).
    #[arg(long, default_value_t = 200_000)]
    pub peer_messages: u64,
    /// Repetitions of every workload; the summary quotes the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the JSON files, summary.md and chart.svg go.
    #[arg(long, default_value = "bench-results/paper")]
    pub out_dir: PathBuf,
    /// A broker binary to run instead of the broker linked into loadgen.
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// The peers' start script.
    #[arg(long, default_value = "scripts/peers.sh")]
    pub peers_script: PathBuf,
    /// Messages per run against Tansu (it keeps them in memory; it is
    /// restarted, so emptied, before every run).
    #[arg(long, default_value_t = 1_000_000)]
    pub tansu_messages: u64,
    /// Run only our broker (the summary says the peers were not run).
    #[arg(long)]
    pub no_peers: bool,
    /// Leave out the Kafka-protocol rows (our Kafka listener and Tansu).
    #[arg(long)]
    pub no_kafka: bool,
    /// The peers to run, of rabbitmq, activemq and tansu.
    #[arg(long, value_delimiter = ',', default_value = "rabbitmq,activemq,tansu")]
    pub peers: Vec<String>,
}

/// The workloads, in the summary's order.
pub const WORKLOADS: [&str; 3] = ["produce-batch1", "produce-batch50", "consume"];
/// The systems and modes, in the summary's order.
pub const SYSTEMS: [(&str, &str); 9] = [
    ("broker", "paper"),
    ("broker", "durable"),
    ("broker-kafka", "paper"),
    ("broker-kafka", "durable"),
    ("tansu", "paper"),
    ("rabbitmq", "paper"),
    ("rabbitmq", "durable"),
    ("activemq", "paper"),
    ("activemq", "durable"),
];

/// Systems that batch (the others have no batch-50 figure of their own).
fn batches(system: &str) -> bool {
    matches!(system, "broker" | "broker-kafka" | "tansu")
}

/// The paper's published figures for Kafka (2011), msgs/s, per workload.
pub const PAPER_KAFKA: [f64; 3] = [50_000.0, 400_000.0, 22_000.0];

/// Runs everything and writes the results.
pub fn run(args: &PaperArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let mut all: Vec<RunResult> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let binary = find_broker_binary(args.broker_bin.as_deref())?;
    for mode in ["paper", "durable"] {
        let fsync = if mode == "paper" { "never" } else { "always" };
        let acks = if mode == "paper" { "none" } else { "leader" };
        let messages = if mode == "paper" {
            args.messages
        } else {
            args.durable_messages
        };
        let broker = BrokerProcess::start(&binary, fsync, None)
            .with_context(|| format!("starting our broker ({})", binary.path.display()))?;
        for r in 1..=args.runs {
            for batch in [1usize, 50] {
                let spec = ours::ProduceSpec {
                    bootstrap: broker.addr.clone(),
                    topic: format!("paper-b{batch}-r{r}"),
                    messages,
                    size: PAPER_SIZE,
                    batch,
                    producers: 1,
                    partitions: 1,
                    acks: acks.into(),
                    rate: None,
                    linger_ms: 5,
                    max_in_flight: 256,
                };
                let mut res = ours::produce(
                    &spec,
                    &format!("produce-batch{batch}-{mode}"),
                    Some(broker.pid()),
                )?;
                annotate(&mut res, mode, &format!("fsync={fsync}"));
                save(&args.out_dir, &res, r)?;
                all.push(res);
            }
            let spec = ours::ConsumeSpec {
                bootstrap: broker.addr.clone(),
                topic: format!("paper-b50-r{r}"),
                messages,
                fetch_bytes: PAPER_FETCH_BYTES,
                consumers: 1,
                e2e: false,
                group: None,
            };
            let mut res = ours::consume(&spec, &format!("consume-{mode}"), Some(broker.pid()))?;
            annotate(&mut res, mode, &format!("fsync={fsync}"));
            save(&args.out_dir, &res, r)?;
            all.push(res);
            if !args.no_kafka {
                let kafka_addr = broker
                    .kafka_addr
                    .clone()
                    .context("the broker's ready line names no Kafka listener")?;
                let kafka_acks = if mode == "paper" { "none" } else { "all" };
                let durability = format!("fsync={fsync}, Kafka acks={kafka_acks}");
                let topics = KafkaTopics {
                    native: Some(&broker.addr),
                    prefix: format!("paper-kafka-r{r}"),
                };
                kafka_runs(
                    &KafkaTarget {
                        system: "broker-kafka",
                        addr: &kafka_addr,
                        mode,
                        acks: kafka_acks,
                        durability: &durability,
                        messages,
                        pid: Some(broker.pid()),
                    },
                    &topics,
                    args,
                    r,
                    &mut all,
                )?;
            }
        }
        broker.stop();
    }
    if !args.no_kafka && !args.no_peers && args.peers.iter().any(|p| p == "tansu") {
        if let Err(e) = run_tansu(args, &mut all) {
            let msg = format!("tansu (paper): {e:#}");
            eprintln!("loadgen paper: {msg}");
            failures.push(msg);
        }
    }
    if args.no_peers {
        failures.push("peers not run (--no-peers)".into());
    } else {
        for (peer, mode) in SYSTEMS
            .iter()
            .filter(|(s, _)| matches!(*s, "rabbitmq" | "activemq"))
            .filter(|(s, _)| args.peers.iter().any(|p| p == s))
        {
            match run_peer(args, peer, mode, &mut all) {
                Ok(()) => {}
                Err(e) => {
                    let msg = format!("{peer} ({mode}): {e:#}");
                    eprintln!("loadgen paper: {msg}");
                    failures.push(msg);
                }
            }
        }
    }
    let summary = summary_markdown(&all, &failures, args);
    std::fs::write(args.out_dir.join("summary.md"), &summary)?;
    chart::draw(&args.out_dir.join("chart.svg"), &medians(&all))?;
    print!("{summary}");
    Ok(())
}

/// A system measured through loadgen's Kafka target.
struct KafkaTarget<'a> {
    system: &'a str,
    addr: &'a str,
    mode: &'a str,
    acks: &'a str,
    durability: &'a str,
    messages: u64,
    pid: Option<u32>,
}

/// Where the Kafka runs' topics come from: created over our native
/// protocol (one partition, as the native rows) when `native` is given,
/// else by the Kafka target itself (CreateTopics, one partition).
struct KafkaTopics<'a> {
    native: Option<&'a str>,
    prefix: String,
}

/// Produce batch 1 and 50, then consume what batch 50 wrote, over Kafka.
fn kafka_runs(
    t: &KafkaTarget<'_>,
    topics: &KafkaTopics<'_>,
    args: &PaperArgs,
    r: usize,
    all: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    for batch in [1usize, 50] {
        let topic = format!("{}-b{batch}", topics.prefix);
        if let Some(native) = topics.native {
            ours::ensure_topic(native, &topic, 1)?;
        }
        let spec = ours::ProduceSpec {
            bootstrap: t.addr.to_owned(),
            topic,
            messages: t.messages,
            size: PAPER_SIZE,
            batch,
            producers: 1,
            partitions: 1,
            acks: t.acks.into(),
            rate: None,
            linger_ms: 5,
            max_in_flight: 256,
        };
        let scenario = format!("produce-batch{batch}-{}", t.mode);
        let mut res = kafka::produce(&spec, &scenario, t.system, t.pid)?;
        annotate(&mut res, t.mode, t.durability);
        save(&args.out_dir, &res, r)?;
        eprintln!(
            "{} {}: {:.0} msgs/s",
            t.system, res.scenario, res.msgs_per_s
        );
        all.push(res);
    }
    let spec = ours::ConsumeSpec {
        bootstrap: t.addr.to_owned(),
        topic: format!("{}-b50", topics.prefix),
        messages: t.messages,
        fetch_bytes: PAPER_FETCH_BYTES,
        consumers: 1,
        e2e: false,
        group: None,
    };
    let mut res = kafka::consume(&spec, &format!("consume-{}", t.mode), t.system, t.pid)?;
    annotate(&mut res, t.mode, t.durability);
    save(&args.out_dir, &res, r)?;
    eprintln!(
        "{} {}: {:.0} msgs/s",
        t.system, res.scenario, res.msgs_per_s
    );
    all.push(res);
    Ok(())
}

/// Tansu on its memory:// engine, restarted (so emptied) before every run.
fn run_tansu(args: &PaperArgs, all: &mut Vec<RunResult>) -> anyhow::Result<()> {
    for r in 1..=args.runs {
        let process = PeerProcess::start(&args.peers_script, "tansu", "paper")
            .context("tansu could not be started")?;
        kafka_runs(
            &KafkaTarget {
                system: "tansu",
                addr: &process.addr,
                mode: "paper",
                acks: "leader",
                durability: "memory:// engine, not durable; Kafka acks=1",
                messages: args.tansu_messages,
                pid: Some(process.pgid()),
            },
            &KafkaTopics {
                native: None,
                prefix: format!("paper-tansu-r{r}"),
            },
            args,
            r,
            all,
        )?;
        process.stop();
    }
    Ok(())
}

fn annotate(res: &mut RunResult, mode: &str, durability: &str) {
    if let serde_json::Value::Object(m) = &mut res.parameters {
        m.insert("mode".into(), mode.into());
        m.insert("durability".into(), durability.into());
    }
}

fn save(dir: &Path, res: &RunResult, run: usize) -> anyhow::Result<()> {
    res.write(&dir.join(format!("{}-{}-run{run}.json", res.system, res.scenario)))
}

fn run_peer(
    args: &PaperArgs,
    peer: &str,
    mode: &str,
    all: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    let process = PeerProcess::start(&args.peers_script, peer, mode)
        .with_context(|| format!("{peer} could not be started"))?;
    let n = args.peer_messages;
    for r in 1..=args.runs {
        if peer == "rabbitmq" {
            peers::rabbitmq::purge(&process.addr)?;
        }
        for (workload, scenario) in [("produce", "produce-batch1"), ("consume", "consume")] {
            let cpu_before = process.cpu_time();
            let own_cpu = CpuWindow::start(None);
            let addr = process.addr.clone();
            let mode_owned = mode.to_owned();
            let peer_owned = peer.to_owned();
            // A pinned thread of its own, like our broker's workloads.
            let measured: PeerRun = std::thread::spawn(move || {
                pin::pin_loadgen_thread(0);
                match (peer_owned.as_str(), workload) {
                    ("rabbitmq", "produce") => {
                        peers::rabbitmq::produce(&addr, n, PAPER_SIZE, &mode_owned)
                    }
                    ("rabbitmq", _) => peers::rabbitmq::consume(&addr, n),
                    (_, "produce") => peers::activemq::produce(&addr, n, PAPER_SIZE, &mode_owned),
                    _ => peers::activemq::consume(&addr, n),
                }
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the {peer} {workload} thread panicked"))??;
            let cpu_after = process.cpu_time();
            let durability = match (peer, mode) {
                ("rabbitmq", "paper") => "persistent, no publisher confirms",
                ("rabbitmq", _) => "persistent, publisher confirms (window 1000)",
                (_, "paper") => "persistent, async send, journal fsync never",
                _ => "persistent, receipt per send (window 1000), journal fsync always",
            };
            let mut res = RunResult::new(
                peer,
                &format!("{scenario}-{mode}"),
                serde_json::json!({
                    "messages": n, "size": PAPER_SIZE, "batch": 1,
                    "prefetch": 1000, "mode": mode, "durability": durability,
                    "address": process.addr,
                }),
                measured.messages,
                PAPER_SIZE as u64,
                measured.duration,
            );
            res.latency = measured.latency;
            own_cpu.finish(&mut res);
            res.set_broker_cpu(
                cpu_after
                    .zip(cpu_before)
                    .map(|(a, b)| a.saturating_sub(b).as_secs_f64()),
            );
            res.pinning = pin::describe(peer);
            save(&args.out_dir, &res, r)?;
            eprintln!("{peer} {}: {:.0} msgs/s", res.scenario, res.msgs_per_s);
            all.push(res);
        }
    }
    process.stop();
    Ok(())
}

/// Median msgs/s per (system, mode, workload): `[system index][workload]`.
pub fn medians(all: &[RunResult]) -> Vec<[Option<f64>; 3]> {
    medians_of(all, |r| Some(r.msgs_per_s))
}

/// Median of `figure` per (system, mode, workload), over the runs that
/// have it.
fn medians_of(
    all: &[RunResult],
    figure: impl Fn(&RunResult) -> Option<f64>,
) -> Vec<[Option<f64>; 3]> {
    SYSTEMS
        .iter()
        .map(|(system, mode)| {
            let mut row = [None; 3];
            for (w, workload) in WORKLOADS.iter().enumerate() {
                let scenario = format!("{workload}-{mode}");
                let mut v: Vec<f64> = all
                    .iter()
                    .filter(|r| r.system == *system && r.scenario == scenario)
                    .filter_map(&figure)
                    .collect();
                row[w] = median(&mut v);
            }
            row
        })
        .collect()
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or("not run".into(), |x| format!("{:.0}", x))
}

/// The summary table: medians, the paper's figures, ratios in the same run.
pub fn summary_markdown(all: &[RunResult], failures: &[String], args: &PaperArgs) -> String {
    let med = medians(all);
    let mut s = String::new();
    let first = all.first();
    let _ = writeln!(s, "# The Kafka paper's experiments, reproduced\n");
    if let Some(r) = first {
        let _ = writeln!(
            s,
            "Machine: {} cores ({}), {:.1} GiB, kernel {}; revision {}; {}.\n",
            r.machine.cores,
            r.machine.cpu_model,
            r.machine.memory_bytes as f64 / (1u64 << 30) as f64,
            r.machine.kernel,
            r.git_revision,
            r.timestamp
        );
        let _ = writeln!(s, "Placement: {}.\n", r.pinning);
    }
    let _ = writeln!(
        s,
        "200-byte messages; {} messages per run against our broker in paper mode, {} in \
         durable mode, {} against each of the paper's peers, {} against Tansu; median msgs/s of {} runs. \
         `broker-kafka`: the same broker through its Kafka listener (loadgen's Kafka target; \
         Kafka acks 0 in paper mode, -1 in durable mode); `tansu`: nisshi on its memory:// \
         engine (not durable), acks 1. `paper` mode: as the paper ran (no fsync before the ack, \
         no per-message ack); `durable`: fsync before every ack (ours: fsync=always, \
         acks=leader; RabbitMQ: publisher confirms; ActiveMQ: receipts, journal fsync). \
         Peers have no batching: their batch-50 column is their batch-1 figure's workload, \
         not run separately.\n",
        args.messages, args.durable_messages, args.peer_messages, args.tansu_messages, args.runs
    );
    let _ = writeln!(
        s,
        "| system | mode | produce batch 1 | produce batch 50 | consume (200 KB fetch) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| Kafka, as published (2011) | paper | {} | {} | {} |",
        PAPER_KAFKA[0], PAPER_KAFKA[1], PAPER_KAFKA[2]
    );
    for (i, (system, mode)) in SYSTEMS.iter().enumerate() {
        let row = med[i];
        let b50 = if batches(system) {
            fmt_rate(row[1])
        } else {
            "(no batching)".into()
        };
        let _ = writeln!(
            s,
            "| {system} | {mode} | {} | {b50} | {} |",
            fmt_rate(row[0]),
            fmt_rate(row[2])
        );
    }
    let _ = writeln!(
        s,
        "\nCPU per message, median ns: loadgen's own process / the system's (`-`: \
         not known), so a row shows whether loadgen could have been the limit:\n"
    );
    let _ = writeln!(
        s,
        "| system | mode | produce batch 1 | produce batch 50 | consume (200 KB fetch) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    let own = medians_of(all, |r| r.loadgen_cpu_ns_per_msg);
    let system = medians_of(all, |r| r.broker_cpu_ns_per_msg);
    let ns = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.0}"));
    for (i, (name, mode)) in SYSTEMS.iter().enumerate() {
        if med[i].iter().all(Option::is_none) {
            continue;
        }
        let cells: Vec<String> = (0..3)
            .map(|w| format!("{} / {}", ns(own[i][w]), ns(system[i][w])))
            .collect();
        let _ = writeln!(
            s,
            "| {name} | {mode} | {} | {} | {} |",
            cells[0], cells[1], cells[2]
        );
    }
    let _ = writeln!(
        s,
        "\nRatios, same run (ours / better peer in the same mode):\n"
    );
    let at = |system: &str, mode: &str| -> [Option<f64>; 3] {
        SYSTEMS
            .iter()
            .position(|&(s, m)| s == system && m == mode)
            .map_or([None; 3], |i| med[i])
    };
    for mode in ["paper", "durable"] {
        let ours = at("broker", mode);
        let rabbit = at("rabbitmq", mode);
        let amq = at("activemq", mode);
        for (w, workload) in WORKLOADS.iter().enumerate() {
            // The peers' batch-50 workload is their batch-1 run.
            let pw = if w == 1 { 0 } else { w };
            let best = rabbit[pw]
                .into_iter()
                .chain(amq[pw])
                .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
            let ratio = ours[w].zip(best).map(|(o, b)| o / b);
            let _ = writeln!(
                s,
                "- {workload} ({mode}): {}",
                ratio.map_or("no peer figure".into(), |r| format!("{r:.1}x"))
            );
        }
        let ratio = ours[0].map(|o| o / PAPER_KAFKA[0]);
        let _ = writeln!(
            s,
            "- produce-batch1 ({mode}) vs the paper's Kafka: {}",
            ratio.map_or("-".into(), |r| format!("{r:.1}x"))
        );
    }
    let _ = writeln!(
        s,
        "\nOver the Kafka protocol (loadgen's Kafka target), same run: our Kafka listener / \
         our native protocol, and our Kafka listener / Tansu (memory://, not durable):\n"
    );
    for mode in ["paper", "durable"] {
        let kafka = at("broker-kafka", mode);
        let native = at("broker", mode);
        let tansu = at("tansu", "paper");
        for (w, workload) in WORKLOADS.iter().enumerate() {
            let ratio = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .map_or("-".to_owned(), |(a, b)| format!("{:.2}", a / b))
            };
            let vs_tansu = if mode == "paper" {
                format!(", / tansu {}", ratio(kafka[w], tansu[w]))
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "- {workload} ({mode}): / native {}{vs_tansu}",
                ratio(kafka[w], native[w])
            );
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\nNot measured:\n");
        for f in failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " "));
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn the_summary_puts_loadgens_cpu_per_message_beside_the_systems() {
        let mut r = RunResult::new(
            "broker",
            "produce-batch50-paper",
            serde_json::json!({}),
            1_000_000,
            200,
            std::time::Duration::from_secs(1),
        );
        r.loadgen_cpu_ns_per_msg = Some(120.4);
        r.broker_cpu_ns_per_msg = Some(300.0);
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: PaperArgs,
        }
        let args = <Cli as clap::Parser>::try_parse_from(["paper"])
            .unwrap()
            .args;
        let md = summary_markdown(&[r], &[], &args);
        assert!(
            md.contains("| broker | paper | - / - | 120 / 300 | - / - |"),
            "{md}"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
