//! `broker consume`: print the values of a topic's records, one per line;
//! from chosen partitions and offsets, or as a member of a consumer group
//! (`--group`), which commits what it printed (at an interval, on every
//! rebalance and before it exits, also on SIGINT/SIGTERM).

use std::{
    io::{self, Write},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Args;

use super::output::ConnectArgs;
use super::CliResult;
use broker_client::{
    AutoOffsetReset, ClientConfig, ConsumedRecord, Consumer, ConsumerConfig, GroupConsumer,
    GroupConsumerConfig, StartOffset,
};

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
    broker consume events --offset latest\n  \
    broker consume events --group billing --timeout-ms 5000\n\n\
    With --group the partitions are those the group's coordinator assigns; each starts at \
    the group's committed offset, or at --offset (earliest or latest) when none is committed. \
    What was printed is committed every --auto-commit-interval-ms, before every rebalance \
    and on exit (also on SIGINT and SIGTERM): a consumer killed before it committed makes \
    the group print those records again, never skip them. Each new membership (generation \
    or member id) is reported on stderr."
)]
pub struct ConsumeArgs {
    /// The topic.
    pub topic: String,
    /// Consume only this partition [default: all partitions].
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Where to start in each partition: earliest, latest, or an offset
    /// (with --group: where a partition with no committed offset starts,
    /// earliest or latest).
    #[arg(long, value_name = "earliest|latest|N", default_value = "earliest")]
    pub offset: OffsetArg,
    /// Consume as a member of this consumer group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// With --group: the member is removed (its partitions move) when the
    /// coordinator hears nothing from it for this long.
    #[arg(long, value_name = "MS", default_value_t = 10_000, requires = "group")]
    pub session_timeout_ms: u32,
    /// With --group: commit what was printed at this interval.
    #[arg(long, value_name = "MS", default_value_t = 5_000, requires = "group")]
    pub auto_commit_interval_ms: u64,
    /// Print "PARTITION OFFSET " before each value (with --group:
    /// "GENERATION PARTITION OFFSET ").
    #[arg(long)]
    pub print_offsets: bool,
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
    if let Some(group) = args.group.clone() {
        return run_group(args, &group);
    }
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
    let mut limits = Limits::new(&args);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    while let Some(wait) = limits.next_wait() {
        let records = consumer.poll(wait)?;
        if records.is_empty() {
            continue;
        }
        let shown = &records[..records.len().min(limits.left())];
        if let Err(e) = print(&mut out, shown, None, args.print_offsets) {
            return quiet_on_closed_pipe(e);
        }
        limits.printed(shown.len());
    }
    out.flush().or_else(quiet_on_closed_pipe)?;
    Ok(())
}

/// When printing ends: after --max-messages records, or --timeout-ms
/// without a new one.
struct Limits {
    max_messages: Option<u64>,
    idle_max: Option<Duration>,
    printed: u64,
    last_data: Instant,
}

impl Limits {
    fn new(args: &ConsumeArgs) -> Limits {
        Limits {
            max_messages: args.max_messages,
            idle_max: args.timeout_ms.map(Duration::from_millis),
            printed: 0,
            last_data: Instant::now(),
        }
    }

    /// How long the next poll may wait; None when printing is over.
    fn next_wait(&self) -> Option<Duration> {
        if self.max_messages.is_some_and(|max| self.printed >= max) {
            return None;
        }
        match self.idle_max {
            Some(idle) => {
                let left = idle.saturating_sub(self.last_data.elapsed());
                (!left.is_zero()).then(|| left.min(POLL_SLICE))
            }
            None => Some(POLL_SLICE),
        }
    }

    /// How many more records may be printed.
    fn left(&self) -> usize {
        self.max_messages.map_or(usize::MAX, |max| {
            usize::try_from(max - self.printed).unwrap_or(usize::MAX)
        })
    }

    fn printed(&mut self, n: usize) {
        self.printed += n as u64;
        self.last_data = Instant::now();
    }
}

/// Writes each record's value and a newline (after its position with
/// `offsets`), then flushes.
fn print(
    out: &mut impl Write,
    records: &[ConsumedRecord],
    generation: Option<i32>,
    offsets: bool,
) -> io::Result<()> {
    for record in records {
        if offsets {
            if let Some(g) = generation {
                write!(out, "{g} ")?;
            }
            write!(out, "{} {} ", record.partition, record.offset)?;
        }
        out.write_all(record.value.as_deref().unwrap_or_default())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `broker consume --group`: the coordinator assigns the partitions; what
/// was printed (and flushed) is committed.
fn run_group(args: ConsumeArgs, group: &str) -> CliResult {
    if args.partition.is_some() {
        return Err("--partition cannot be used with --group: the group assigns partitions".into());
    }
    let auto_offset_reset = match args.offset.0 {
        StartOffset::Earliest => AutoOffsetReset::Earliest,
        StartOffset::Latest => AutoOffsetReset::Latest,
        _ => {
            return Err(
                "with --group, --offset is where partitions without a committed offset start: \
                 earliest or latest"
                    .into(),
            )
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM] {
            // A second signal exits at once, without committing.
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
    }
    let mut consumer = GroupConsumer::connect(
        &args.connect.bootstrap,
        group,
        &[&args.topic],
        GroupConsumerConfig {
            session_timeout_ms: args.session_timeout_ms,
            auto_offset_reset,
            auto_commit_interval_ms: Some(args.auto_commit_interval_ms),
            ..GroupConsumerConfig::default()
        },
    )?;
    let mut limits = Limits::new(&args);
    let mut generation = 0;
    let mut member_id = String::new();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    while !stop.load(Ordering::Relaxed) {
        let Some(wait) = limits.next_wait() else {
            break;
        };
        let records = consumer.poll_at_most(wait, limits.left())?;
        // A new member id in the same generation number is a new
        // membership too (the coordinator restarted and numbers again).
        if consumer.generation() != generation || consumer.member_id() != member_id {
            generation = consumer.generation();
            member_id = consumer.member_id();
            let partitions: Vec<String> = consumer
                .assignment()
                .iter()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect();
            eprintln!(
                "joined group {group} as member {member_id} in generation {generation}: \
                 partitions [{}]",
                partitions.join(", ")
            );
        }
        if records.is_empty() {
            continue;
        }
        if let Err(e) = print(&mut out, &records, Some(generation), args.print_offsets) {
            // Part of these records may not have reached the reader: exit
            // without committing them (they are delivered again).
            drop(consumer);
            return quiet_on_closed_pipe(e);
        }
        limits.printed(records.len());
    }
    out.flush().or_else(quiet_on_closed_pipe)?;
    consumer.close()?;
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
