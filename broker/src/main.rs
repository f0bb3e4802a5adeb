//! The `broker` command: `broker serve` runs the broker; every other
//! subcommand is a client of a running broker (see `broker --help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    broker::cli::run(broker::cli::Cli::parse())
}
