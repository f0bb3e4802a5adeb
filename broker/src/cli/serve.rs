//! `broker serve`: placeholder until the server lands.

use clap::Args;

use super::CliResult;

/// Arguments of `broker serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs the broker until it is stopped.
pub fn run(_args: ServeArgs) -> CliResult {
    Err("not built yet".into())
}
