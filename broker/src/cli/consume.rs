//! `broker consume`: print the values of a topic's records, one per line.

use std::{
    io::{self, Write},
    str::FromStr,
    time::{Duration, Instant},
};

use clap::Args;

use super::output::ConnectArgs;
use super::CliResult;
use crate::client::{ClientConfig, Consumer, ConsumerConfig, StartOffset};

/// Where consumption starts: `earliest`, `latest` or an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetArg(pub StartOffset);

impl FromStr for OffsetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(OffsetArg(StartOffset::Earliest)),
            "latest" => Ok(OffsetArg(StartOffset::Latest)),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|&n| n >= 0)
                .map(|n| OffsetArg(StartOffset::Offset(n)))
                .ok_or_else(|| format!("{n:?} is not earliest, latest or an offset >= 0")),
        }
    }
}

/// Arguments of `broker consume`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints each record's value followed by a newline (a null value as an \
    empty line). Without --max-messages or --timeout-ms it follows the topic until interrupted; \
    with --max-messages alone it waits as long as it takes for that many.\n\n\
    Examples:\n  \
    broker consume events --max-messages 10\n  \
    broker consume events --partition 2 --offset 1500 --timeout-ms 2000\n  \
    broker consume events --offset latest"
)]
pub struct ConsumeArgs {
    /// The topic.
    pub topic: String,
    /// Consume only this partition [default: all partitions].
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Where to start in each partition: earliest, latest, or an offset.
    #[arg(long, value_name = "earliest|latest|N", default_value = "earliest")]
    pub offset: OffsetArg,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop once no record came for this many milliseconds.
    #[arg(long, value_name = "T")]
    pub timeout_ms: Option<u64>,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Longest single poll, so the timeout is checked often enough.
const POLL_SLICE: Duration = Duration::from_millis(500);

/// Runs `broker consume`.
pub fn run(args: ConsumeArgs) -> CliResult {
    let mut consumer = Consumer::connect(
        &args.connect.bootstrap,
        ConsumerConfig {
            client: ClientConfig::default(),
            ..ConsumerConfig::default()
        },
    )?;
    let start = args.offset.0;
    match args.partition {
        Some(p) => consumer.assign(&args.topic, p, start)?,
        None => consumer.assign_all(&args.topic, start)?,
    }
    let idle_max = args.timeout_ms.map(Duration::from_millis);
    let mut printed: u64 = 0;
    let mut last_data = Instant::now();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        let wait = match idle_max {
            Some(idle) => {
                let left = idle.saturating_sub(last_data.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(POLL_SLICE)
            }
            None => POLL_SLICE,
        };
        let records = consumer.poll(wait)?;
        if records.is_empty() {
            continue;
        }
        last_data = Instant::now();
        for record in records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            let written = out
                .write_all(record.value.as_deref().unwrap_or_default())
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = written {
                return quiet_on_closed_pipe(e);
            }
            printed += 1;
        }
        if let Err(e) = out.flush() {
            return quiet_on_closed_pipe(e);
        }
    }
    out.flush().or_else(quiet_on_closed_pipe)?;
    Ok(())
}

/// A reader that went away (`| head`) ends the command without an error.
fn quiet_on_closed_pipe(e: io::Error) -> CliResult {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e.into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_documented() {
        assert_eq!(
            "earliest".parse::<OffsetArg>().unwrap().0,
            StartOffset::Earliest
        );
        assert_eq!(
            "latest".parse::<OffsetArg>().unwrap().0,
            StartOffset::Latest
        );
        assert_eq!(
            "42".parse::<OffsetArg>().unwrap().0,
            StartOffset::Offset(42)
        );
        assert!("-1".parse::<OffsetArg>().is_err());
        assert!("soon".parse::<OffsetArg>().is_err());
    }
}
