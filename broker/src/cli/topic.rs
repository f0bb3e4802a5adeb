//! `broker topic`: placeholder until the client library lands.

use clap::Args;

use super::CliResult;

/// Arguments of `broker topic`.
#[derive(Debug, Args)]
pub struct TopicArgs {}

/// Runs `broker topic`.
pub fn run(_args: TopicArgs) -> CliResult {
    Err("not built yet".into())
}
