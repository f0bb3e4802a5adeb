//! What the client subcommands share: the `--bootstrap` address, the
//! `--output` format and plain-text tables.

use clap::{Args, ValueEnum};

use broker_client::{Client, ClientConfig, DEFAULT_BOOTSTRAP};

/// How to reach the broker.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Broker address, HOST:PORT (several: comma separated, tried in order).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
}

impl ConnectArgs {
    /// A client of the broker, connected.
    pub fn client(&self) -> Result<Client, broker_client::ClientError> {
        Client::connect_with(&self.bootstrap, ClientConfig::default())
    }
}

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> super::CliResult {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Renders rows under a header as left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A topic setting for people: the broker's sentinel values named.
pub fn setting(value: i64) -> String {
    match value {
        broker_client::BROKER_DEFAULT => "default".into(),
        broker_client::NO_LIMIT => "none".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let t = table(
            &["NAME", "PARTITIONS"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer-name".into(), "12".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         PARTITIONS\na            1\nlonger-name  12\n"
        );
    }
}
