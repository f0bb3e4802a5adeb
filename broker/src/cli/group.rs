//! `broker group`: list consumer groups, and describe one: its members,
//! what each owns, and per partition the committed offset and the lag
//! (high watermark minus committed offset).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{emit, table, ConnectArgs, OutputFormat};
use super::CliResult;
use broker_client::{Client, ErrorCode, GroupDescription, OffsetQuery};

/// Arguments of `broker group`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    broker group list\n  \
    broker group describe billing\n  \
    broker group describe billing --output json")]
pub struct GroupArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// The `broker group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List every consumer group with its state, members and generation.
    List(ListArgs),
    /// Show a group's members and their partitions, and per partition of
    /// the subscribed topics its owner, committed offset, high watermark
    /// and lag.
    Describe(DescribeArgs),
}

/// Arguments of `broker group list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `broker group describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The group.
    pub group: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `broker group`.
pub fn run(args: GroupArgs) -> CliResult {
    match args.command {
        GroupCommand::List(a) => list(a),
        GroupCommand::Describe(a) => describe(a),
    }
}

fn list(a: ListArgs) -> CliResult {
    let groups = a.connect.client()?.list_groups()?;
    match a.output {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&groups)?)),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.clone(),
                        g.state.clone(),
                        g.members.to_string(),
                        g.generation.to_string(),
                    ]
                })
                .collect();
            emit(&table(&["GROUP", "STATE", "MEMBERS", "GENERATION"], &rows))
        }
    }
}

/// Prints `text`; a reader that went away (`| head`) is not an error.
/// One member of `group describe`.
#[derive(Debug, Serialize)]
struct MemberRow {
    member_id: String,
    topics: Vec<String>,
    /// Topic -> partitions owned.
    assignment: BTreeMap<String, Vec<u32>>,
}

/// One partition of `group describe`.
#[derive(Debug, Serialize)]
struct PartitionRow {
    topic: String,
    partition: u32,
    /// The member owning it in the current generation.
    owner: Option<String>,
    /// The next offset the group consumes; none committed: null.
    committed: Option<i64>,
    /// None when the topic is gone.
    high_watermark: Option<i64>,
    /// high_watermark - committed, when both are known.
    lag: Option<i64>,
}

/// The JSON of `group describe`.
#[derive(Debug, Serialize)]
struct Description {
    group: String,
    state: String,
    generation: i32,
    members: Vec<MemberRow>,
    partitions: Vec<PartitionRow>,
    /// The sum of the known lags.
    total_lag: i64,
}

fn describe(a: DescribeArgs) -> CliResult {
    let client = a.connect.client()?;
    let g = client.describe_group(&a.group)?;
    let d = description(&client, g)?;
    match a.output {
        OutputFormat::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&d)?)),
        OutputFormat::Table => {
            let mut text = String::new();
            writeln!(
                text,
                "group {}: {}, generation {}, {} members, total lag {}",
                d.group,
                d.state,
                d.generation,
                d.members.len(),
                d.total_lag
            )?;
            let rows: Vec<Vec<String>> = d
                .members
                .iter()
                .map(|m| {
                    let owned: Vec<String> = m
                        .assignment
                        .iter()
                        .map(|(t, ps)| {
                            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
                            format!("{t}:{}", ps.join(","))
                        })
                        .collect();
                    vec![m.member_id.clone(), m.topics.join(","), owned.join(" ")]
                })
                .collect();
            text.push_str(&table(&["MEMBER", "TOPICS", "PARTITIONS"], &rows));
            text.push('\n');
            let dash = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let rows: Vec<Vec<String>> = d
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.topic.clone(),
                        p.partition.to_string(),
                        p.owner.clone().unwrap_or_else(|| "-".into()),
                        dash(p.committed),
                        dash(p.high_watermark),
                        dash(p.lag),
                    ]
                })
                .collect();
            text.push_str(&table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "OWNER",
                    "COMMITTED",
                    "HIGH-WATERMARK",
                    "LAG",
                ],
                &rows,
            ));
            emit(&text)
        }
    }
}

/// Joins the group's description with every partition's high watermark:
/// rows for every partition of the subscribed topics and every committed
/// one.
fn description(
    client: &Client,
    g: GroupDescription,
) -> Result<Description, broker_client::ClientError> {
    let mut topics: BTreeSet<String> = g
        .members
        .iter()
        .flat_map(|m| m.topics.iter().cloned())
        .collect();
    topics.extend(g.offsets.iter().map(|o| o.topic.clone()));
    let mut partitions = Vec::new();
    for topic in &topics {
        let numbers: Vec<u32> = match client.describe_topic(topic) {
            Ok(info) => info.partitions.iter().map(|p| p.partition).collect(),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => Vec::new(),
            Err(e) => return Err(e),
        };
        let committed_only = g
            .offsets
            .iter()
            .filter(|o| &o.topic == topic && !numbers.contains(&o.partition))
            .map(|o| o.partition);
        let all: BTreeSet<u32> = numbers.iter().copied().chain(committed_only).collect();
        for partition in all {
            let committed = g
                .offsets
                .iter()
                .find(|o| &o.topic == topic && o.partition == partition && o.offset >= 0)
                .map(|o| o.offset);
            let high_watermark = if numbers.contains(&partition) {
                Some(
                    client
                        .list_offsets(topic, partition, OffsetQuery::Latest)?
                        .high_watermark,
                )
            } else {
                None
            };
            let lag = match (high_watermark, committed) {
                (Some(h), Some(c)) => Some(h - c),
                _ => None,
            };
            partitions.push(PartitionRow {
                topic: topic.clone(),
                partition,
                owner: g.owner(topic, partition).map(str::to_owned),
                committed,
                high_watermark,
                lag,
            });
        }
    }
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let mut assignment: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for (t, p) in m.assignment {
                assignment.entry(t).or_default().push(p);
            }
            MemberRow {
                member_id: m.member_id,
                topics: m.topics,
                assignment,
            }
        })
        .collect();
    Ok(Description {
        group: g.group,
        state: g.state,
        generation: g.generation,
        members,
        total_lag: partitions.iter().filter_map(|p| p.lag).sum(),
        partitions,
    })
}
