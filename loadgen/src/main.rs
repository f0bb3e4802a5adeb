//! loadgen: the benchmark harness. It drives our broker through the
//! project's client (`produce`, `consume`), or any Kafka-compatible broker
//! over the Kafka protocol (`--protocol kafka`), reproduces the Kafka paper's
//! experiments against our broker and the paper's own peers (`paper`), and
//! turns two result files into a regression verdict (`compare`).

mod broker_proc;
mod chart;
mod compare;
mod kafka;
mod ours;
mod paper;
mod peers;
mod pin;
mod progress;
mod results;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The broker's load generator and benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Where loadgen's threads run: others (every core but core 0, the
    /// system's), all (round-robin over every core), none (not pinned), or
    /// a list of cores such as 1 or 0,1.
    #[arg(long, global = true, default_value = "others")]
    loadgen_cores: pin::Placement,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce N messages to a running broker and report throughput and
    /// produce-to-ack latency.
    ///
    /// Example: loadgen produce --bootstrap 127.0.0.1:9092 --topic t --messages 1000000 --size 200 --batch 50
    Produce(ProduceArgs),
    /// Consume N messages from a running broker (from the earliest offset)
    /// and report throughput.
    ///
    /// Example: loadgen consume --bootstrap 127.0.0.1:9092 --topic t --messages 1000000 --fetch-bytes 204800
    Consume(ConsumeArgs),
    /// Compare two result files: a table of every figure with its ratio;
    /// exits 1 when a throughput fell or a latency rose by more than the
    /// threshold.
    ///
    /// Example: loadgen compare bench-results/baseline-produce.json new.json --max-regression 10
    Compare {
        /// The reference result.
        baseline: PathBuf,
        /// The result to judge.
        new: PathBuf,
        /// Largest tolerated regression, in percent.
        #[arg(long, default_value_t = 10.0)]
        max_regression: f64,
    },
    /// The whole reproduction of the paper's experiments: starts our broker
    /// (temp data dir, pinned), runs the producer (batch 1 and 50) and
    /// consumer experiments, then the same against RabbitMQ and ActiveMQ
    /// (installed and started by scripts/peers.sh), each as the paper ran
    /// and durable. Writes one JSON per run, summary.md and chart.svg.
    ///
    /// Example: loadgen paper --messages 1000000 --out-dir bench-results/paper-2026-11-23
    Paper(paper::PaperArgs),
    /// Runs the broker's own command line (`loadgen broker serve ...` is
    /// `broker serve ...`), so loadgen can start the exact broker it was
    /// built with, without looking for a separate binary.
    #[command(hide = true)]
    Broker {
        /// The broker's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ProduceArgs {
    /// The wire protocol: native (our broker's, through broker-client) or
    /// kafka (Apache Kafka's, loadgen's own client: any Kafka-compatible
    /// broker; --bootstrap is then a Kafka listener, ours on the native
    /// port + 100).
    #[arg(long, default_value = "native", value_parser = ["native", "kafka"])]
    protocol: String,
    /// The system named in the result (default: broker for native, kafka
    /// for the Kafka protocol).
    #[arg(long)]
    system: Option<String>,
    /// Broker address.
    #[arg(long, default_value = broker_client::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Topic (created if missing).
    #[arg(long)]
    topic: String,
    /// Messages in all.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Records per batch (one produce request each).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Producer threads, each with its own connection (per shard) and
    /// sender thread: with more producers and partitions than the broker
    /// can take, the run measures the broker, not loadgen.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Acknowledgements: none (fire and forget, as the paper's producer) or
    /// leader (the broker answers after its fsync policy is met); over Kafka
    /// none, leader and all are acks 0, 1 and -1.
    #[arg(long, default_value = "leader", value_parser = ["none", "leader", "all"])]
    acks: String,
    /// Messages per second in all (fixed-rate mode, for latency at a given
    /// load); without it: open loop, as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Milliseconds a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    /// Scenario name in the result.
    #[arg(long, default_value = "produce")]
    scenario: String,
    /// Pid of the broker process, to report its CPU time.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Write the result JSON here (it is printed on stdout in any case).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ConsumeArgs {
    /// The wire protocol: native (our broker's, through broker-client) or
    /// kafka (Apache Kafka's, loadgen's own client: any Kafka-compatible
    /// broker; --bootstrap is then a Kafka listener, ours on the native
    /// port + 100).
    #[arg(long, default_value = "native", value_parser = ["native", "kafka"])]
    protocol: String,
    /// The system named in the result (default: broker for native, kafka
    /// for the Kafka protocol).
    #[arg(long)]
    system: Option<String>,
    /// Broker address.
    #[arg(long, default_value = broker_client::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Topic.
    #[arg(long)]
    topic: String,
    /// Messages to read.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Byte budget of one fetch of one partition. The default is what a
    /// user of Kafka's clients gets (max.partition.fetch.bytes, 1 MiB); the
    /// paper's consumer fetched ~1000 messages, about 200 KB (`loadgen
    /// paper` passes that).
    #[arg(long, default_value_t = 1 << 20)]
    fetch_bytes: u32,
    /// Consumer threads (partitions are split among them).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Record produce-to-consume latency from record timestamps
    /// (millisecond resolution; meaningful while a producer runs).
    #[arg(long)]
    e2e: bool,
    /// Consume as members of this consumer group, one per thread (the
    /// coordinator assigns partitions; positions start from the group's
    /// committed offsets, so use a fresh group name for each run).
    #[arg(long)]
    group: Option<String>,
    /// Scenario name in the result.
    #[arg(long, default_value = "consume")]
    scenario: String,
    /// Pid of the broker process, to report its CPU time.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Write the result JSON here (it is printed on stdout in any case).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn emit(result: &results::RunResult, out: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(result)?);
    eprintln!(
        "{} {}: {} messages in {:.3} s: {:.0} msgs/s, {:.1} MB/s{}",
        result.system,
        result.scenario,
        result.messages,
        result.duration_s,
        result.msgs_per_s,
        result.mb_per_s,
        result.latency.as_ref().map_or(String::new(), |l| format!(
            ", {} p50 {:.0} us p99 {:.0} us",
            l.kind, l.p50_us, l.p99_us
        ))
    );
    eprintln!("{}", cpu_line(result));
    if let Some(path) = out {
        result.write(path)?;
    }
    Ok(())
}

/// CPU per message of loadgen and of the broker, and the cores each kept
/// busy (CPU seconds over wall seconds), as far as they are known.
fn cpu_line(r: &results::RunResult) -> String {
    let part = |who: &str, ns: Option<f64>, s: Option<f64>| match ns.zip(s) {
        Some((ns, s)) => format!("{who} {ns:.0} ns ({:.2} cores)", s / r.duration_s),
        None => format!("{who} unknown"),
    };
    format!(
        "CPU per message: {}, {}",
        part("loadgen", r.loadgen_cpu_ns_per_msg, r.loadgen_cpu_s),
        part(&r.system, r.broker_cpu_ns_per_msg, r.broker_cpu_s)
    )
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    pin::set_placement(cli.loadgen_cores);
    match cli.command {
        Command::Produce(a) => {
            let spec = ours::ProduceSpec {
                bootstrap: a.bootstrap,
                topic: a.topic,
                messages: a.messages,
                size: a.size,
                batch: a.batch,
                producers: a.producers,
                partitions: a.partitions,
                acks: a.acks,
                rate: a.rate,
                linger_ms: a.linger_ms,
                max_in_flight: a.max_in_flight,
            };
            let result = match a.protocol.as_str() {
                "kafka" => kafka::produce(
                    &spec,
                    &a.scenario,
                    a.system.as_deref().unwrap_or("kafka"),
                    a.broker_pid,
                )?,
                _ => {
                    let mut r = ours::produce(&spec, &a.scenario, a.broker_pid)?;
                    if let Some(system) = a.system {
                        r.system = system;
                    }
                    r
                }
            };
            emit(&result, a.out.as_ref())?;
        }
        Command::Consume(a) => {
            let spec = ours::ConsumeSpec {
                bootstrap: a.bootstrap,
                topic: a.topic,
                messages: a.messages,
                fetch_bytes: a.fetch_bytes,
                consumers: a.consumers,
                e2e: a.e2e,
                group: a.group,
            };
            let result = match a.protocol.as_str() {
                "kafka" => kafka::consume(
                    &spec,
                    &a.scenario,
                    a.system.as_deref().unwrap_or("kafka"),
                    a.broker_pid,
                )?,
                _ => {
                    let mut r = ours::consume(&spec, &a.scenario, a.broker_pid)?;
                    if let Some(system) = a.system {
                        r.system = system;
                    }
                    r
                }
            };
            emit(&result, a.out.as_ref())?;
        }
        Command::Compare {
            baseline,
            new,
            max_regression,
        } => {
            let b = results::RunResult::read(&baseline)?;
            let n = results::RunResult::read(&new)?;
            let c = compare::compare(&b, &n, max_regression);
            print!("{}", c.table(max_regression));
            if c.regressed() {
                println!("verdict: REGRESSION beyond {max_regression}%");
                return Ok(std::process::ExitCode::from(1));
            }
            println!("verdict: ok (within {max_regression}%)");
        }
        Command::Broker { args } => {
            use clap::Parser as _;
            let cli =
                broker::cli::Cli::parse_from(std::iter::once("broker".to_owned()).chain(args));
            return Ok(broker::cli::run(cli));
        }
        Command::Paper(a) => {
            paper::run(&a).context("the paper reproduction")?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
