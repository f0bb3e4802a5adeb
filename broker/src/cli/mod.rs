//! The `broker` command line: `serve` starts the broker, the other
//! subcommands are clients of a running broker, built on [`broker_client`].
//!
//! Each subcommand is one module holding its clap arguments and its `run`.
//! Errors are printed as one line on stderr and give exit code 1; a usage
//! error is clap's (exit code 2).

pub mod cluster;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod serve;
pub mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What a subcommand returns: any error is printed on stderr.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A thread-per-core Kafka-style log broker.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `broker`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: one pinned shard per core, data in --data-dir.
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics.
    Topic(topic::TopicArgs),
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print the values of a partition's records, one per line.
    Consume(consume::ConsumeArgs),
    /// List consumer groups; describe one (members, assignment, offsets, lag).
    Group(group::GroupArgs),
    /// Show the broker's effective configuration.
    Config(serve::ConfigArgs),
    /// Show the cluster: its controller quorum and its brokers.
    Cluster(cluster::ClusterArgs),
}

/// Runs a parsed command line and gives the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(args) => topic::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Group(args) => group::run(args),
        Command::Config(args) => serve::run_config(args),
        Command::Cluster(args) => cluster::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
