//! `broker topic`: create, list, describe and delete topics.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{setting, table, ConnectArgs, OutputFormat};
use super::CliResult;
use broker_client::{OffsetQuery, PartitionInfo, TopicSettings, BROKER_DEFAULT};

/// Arguments of `broker topic`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    broker topic create events --partitions 4 --retention-ms 86400000\n  \
    broker topic list\n  \
    broker topic describe events --output json\n  \
    broker topic delete events")]
pub struct TopicArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// The `broker topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic; its partitions are spread over the broker's shards.
    Create(CreateArgs),
    /// List every topic with its partition count.
    List(ListArgs),
    /// Show a topic's settings and, per partition, its owning shard, that
    /// shard's address and the earliest and latest offsets.
    Describe(DescribeArgs),
    /// Delete a topic and all its data.
    Delete(DeleteArgs),
}

/// Arguments of `broker topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic's name: 1 to 249 bytes of [a-zA-Z0-9._-].
    pub name: String,
    /// Number of partitions [default: the broker's].
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Delete closed segments whose newest record is older than this; -2:
    /// keep forever [default: the broker's, 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while a partition is larger than
    /// this; -2: no size limit [default: the broker's].
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Roll a partition's segment before it exceeds this many bytes
    /// [default: the broker's, 1 GiB].
    #[arg(long, value_name = "B")]
    pub segment_bytes: Option<i64>,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `broker topic list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `broker topic describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The topic.
    pub name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of `broker topic delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The topic.
    pub name: String,
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `broker topic`.
pub fn run(args: TopicArgs) -> CliResult {
    match args.command {
        TopicCommand::Create(a) => create(a),
        TopicCommand::List(a) => list(a),
        TopicCommand::Describe(a) => describe(a),
        TopicCommand::Delete(a) => delete(a),
    }
}

fn create(a: CreateArgs) -> CliResult {
    let client = a.connect.client()?;
    let settings = TopicSettings {
        retention_ms: a.retention_ms.unwrap_or(BROKER_DEFAULT),
        retention_bytes: a.retention_bytes.unwrap_or(BROKER_DEFAULT),
        segment_bytes: a.segment_bytes.unwrap_or(BROKER_DEFAULT),
    };
    let created = client.create_topic(&a.name, a.partitions.unwrap_or(0), &settings)?;
    println!(
        "created topic {} with {} partitions",
        a.name, created.partitions
    );
    Ok(())
}

fn list(a: ListArgs) -> CliResult {
    let topics = a.connect.client()?.list_topics()?;
    match a.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&topics)?),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| vec![t.name.clone(), t.partitions.to_string()])
                .collect();
            print!("{}", table(&["NAME", "PARTITIONS"], &rows));
        }
    }
    Ok(())
}

/// One partition of `topic describe`.
#[derive(Debug, Serialize)]
struct PartitionRow {
    #[serde(flatten)]
    placement: PartitionInfo,
    earliest: i64,
    latest: i64,
}

/// The JSON of `topic describe`.
#[derive(Debug, Serialize)]
struct Description {
    name: String,
    retention_ms: i64,
    retention_bytes: i64,
    segment_bytes: i64,
    partitions: Vec<PartitionRow>,
}

fn describe(a: DescribeArgs) -> CliResult {
    let client = a.connect.client()?;
    let info = client.describe_topic(&a.name)?;
    let mut partitions = Vec::with_capacity(info.partitions.len());
    for p in &info.partitions {
        let earliest = client.list_offsets(&a.name, p.partition, OffsetQuery::Earliest)?;
        partitions.push(PartitionRow {
            placement: p.clone(),
            earliest: earliest.log_start_offset,
            latest: earliest.high_watermark,
        });
    }
    let d = Description {
        name: info.name,
        retention_ms: info.settings.retention_ms,
        retention_bytes: info.settings.retention_bytes,
        segment_bytes: info.settings.segment_bytes,
        partitions,
    };
    match a.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&d)?),
        OutputFormat::Table => {
            println!(
                "topic {}: {} partitions, retention.ms {}, retention.bytes {}, segment.bytes {}",
                d.name,
                d.partitions.len(),
                setting(d.retention_ms),
                setting(d.retention_bytes),
                setting(d.segment_bytes)
            );
            let rows: Vec<Vec<String>> = d
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.placement.partition.to_string(),
                        p.placement.shard.to_string(),
                        p.placement.address.clone(),
                        p.earliest.to_string(),
                        p.latest.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["PARTITION", "SHARD", "ADDRESS", "EARLIEST", "LATEST"],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn delete(a: DeleteArgs) -> CliResult {
    a.connect.client()?.delete_topic(&a.name)?;
    println!("deleted topic {}", a.name);
    Ok(())
}
