//! `broker produce`: placeholder until the client library lands.

use clap::Args;

use super::CliResult;

/// Arguments of `broker produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {}

/// Runs `broker produce`.
pub fn run(_args: ProduceArgs) -> CliResult {
    Err("not built yet".into())
}
