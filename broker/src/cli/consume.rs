//! `broker consume`: placeholder until the client library lands.

use clap::Args;

use super::CliResult;

/// Arguments of `broker consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {}

/// Runs `broker consume`.
pub fn run(_args: ConsumeArgs) -> CliResult {
    Err("not built yet".into())
}
