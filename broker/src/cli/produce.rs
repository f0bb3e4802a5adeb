//! `broker produce`: one record per line of stdin.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
};

use clap::{Args, ValueEnum};

use super::output::ConnectArgs;
use super::CliResult;
use broker_client::{Acks, ClientConfig, DeliveryFuture, Producer, ProducerConfig};

/// What the broker acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Once the partition's log has the batch (written; fsynced with
    /// `--fsync always`). Failed records are reported.
    Leader,
    /// Once every in-sync replica has the batch on disk (a replicated
    /// topic; for one replica, as `leader`).
    All,
    /// Nothing: fire and forget. Only a lost connection is noticed.
    None,
}

/// Arguments of `broker produce`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each line of stdin, without its trailing newline, is one record's value \
    (bytes, not necessarily UTF-8). Prints nothing on success; exit code 1 if any record failed.\n\n\
    Examples:\n  \
    printf 'one\\ntwo\\n' | broker produce events\n  \
    printf 'user-1=hello\\n' | broker produce events --key-separator =\n  \
    seq 1000 | broker produce events --partition 2 --bootstrap 10.0.0.5:9092"
)]
pub struct ProduceArgs {
    /// The topic.
    pub topic: String,
    /// Send every record to this partition [default: by key hash (murmur2,
    /// as Kafka), or round-robin per batch without a key].
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Split each line at the first S: the part before is the key, the
    /// rest the value. A line without S has no key.
    #[arg(long, value_name = "S")]
    pub key_separator: Option<String>,
    /// What the broker acknowledges.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// How long a batch waits for more lines before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    pub linger_ms: u64,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Outcomes not yet looked at beyond this many are checked as they come,
/// so memory stays bounded however long stdin is.
const UNCHECKED_MAX: usize = 100_000;

/// Runs `broker produce`.
pub fn run(args: ProduceArgs) -> CliResult {
    let producer = Producer::connect(
        &args.connect.bootstrap,
        ProducerConfig {
            linger_ms: args.linger_ms,
            acks: match args.acks {
                AcksArg::Leader => Acks::Leader,
                AcksArg::All => Acks::All,
                AcksArg::None => Acks::None,
            },
            client: ClientConfig::default(),
            ..ProducerConfig::default()
        },
    )?;
    // Learn the topic before reading stdin, so a typo fails at once.
    producer.client().topic(&args.topic)?;
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut tally = Tally::default();
    let mut unchecked: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (key, value) = split_line(&line, separator);
        let sent = match args.partition {
            Some(p) => producer.send_to(&args.topic, p, key, value),
            None => producer.send(&args.topic, key, value),
        };
        match sent {
            Ok(future) => unchecked.push_back(future),
            Err(e) => tally.fail(e.to_string()),
        }
        while unchecked.front().is_some_and(|f| f.try_result().is_some()) {
            if let Some(f) = unchecked.pop_front() {
                tally.check(&f);
            }
        }
        if unchecked.len() > UNCHECKED_MAX {
            if let Some(f) = unchecked.pop_front() {
                tally.check(&f);
            }
        }
    }
    producer.flush();
    for f in unchecked {
        tally.check(&f);
    }
    producer.close();
    match tally.first_error {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {} records failed; the first: {first}",
            tally.failed, tally.total
        )
        .into()),
    }
}

/// Key and value of a line.
fn split_line<'a>(line: &'a [u8], separator: Option<&[u8]>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(sep) = separator.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => (Some(&line[..at]), &line[at + sep.len()..]),
        None => (None, line),
    }
}

#[derive(Debug, Default)]
struct Tally {
    total: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn check(&mut self, future: &DeliveryFuture) {
        match future.wait() {
            Ok(_) => self.total += 1,
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, error: String) {
        self.total += 1;
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_at_the_first_separator_only() {
        assert_eq!(
            split_line(b"k=v=w", Some(b"=")),
            (Some(&b"k"[..]), &b"v=w"[..])
        );
        assert_eq!(split_line(b"=v", Some(b"=")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_line(b"no key", Some(b"::")), (None, &b"no key"[..]));
        assert_eq!(
            split_line(b"a::b", Some(b"::")),
            (Some(&b"a"[..]), &b"b"[..])
        );
        assert_eq!(split_line(b"k=v", None), (None, &b"k=v"[..]));
    }
}
