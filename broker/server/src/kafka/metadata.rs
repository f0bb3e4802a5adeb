//! Metadata (key 3), versions 1-12: the nodes, the cluster id, the
//! controller, and each topic's partitions with their leader.
//!
//! Nodes: with `--kafka-advertise shards` (the default) every shard is a
//! node on its own Kafka port, and a partition's leader is the node of the
//! shard that owns it, so a client sends each partition's requests straight
//! to its core; with `broker`, one node (the Kafka main port) leads
//! everything and the shards forward among themselves. The controller is
//! shard 0's node. A single copy of each partition means replicas and ISR
//! are the leader alone; leader epochs are not tracked yet (-1, so clients
//! skip their epoch validation).
//!
//! Topic auto-creation: a name that does not exist is created with the
//! broker's default partition count when `--auto-create-topics` is on and
//! the request allows it (v4+: `allow_auto_topic_creation`; always before
//! v4), as Kafka's `auto.create.topics.enable`.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::config::KafkaAdvertise;
use crate::error::{ErrorKind, ServiceError};
use crate::metadata::{validate_topic_name, TopicMeta};
use crate::service::{is_internal, topics};
use crate::shard::Shard;

/// One Kafka node this broker advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its node id.
    pub id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// The nodes Metadata advertises: this broker's, or a cluster member's
/// every unfenced broker's.
pub fn nodes(shard: &Shard) -> Vec<Node> {
    let config = shard.config();
    if let Some(image) = shard.image() {
        let per_shard = config.kafka_advertise == KafkaAdvertise::Shards;
        return crate::cluster::kafka_nodes(&image, per_shard)
            .into_iter()
            .map(|(id, host, port)| Node { id, host, port })
            .collect();
    }
    let Some(main) = shard.kafka_main() else {
        return Vec::new();
    };
    let host = config
        .advertised_host
        .clone()
        .unwrap_or_else(|| match main.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".into(),
            ip => ip.to_string(),
        });
    match config.kafka_advertise {
        KafkaAdvertise::Shards => shard
            .kafka_endpoints()
            .iter()
            .enumerate()
            .map(|(i, addr)| Node {
                id: config.kafka_node_id(i as u16),
                host: host.clone(),
                port: addr.port(),
            })
            .collect(),
        KafkaAdvertise::Broker => vec![Node {
            id: config.kafka_node_id(0),
            host,
            port: main.port(),
        }],
    }
}

/// The node that leads a partition owned by shard `owner` of `broker`
/// (None: this broker).
pub fn leader_of(shard: &Shard, broker: Option<u32>, owner: u16) -> i32 {
    let config = shard.config();
    let broker = broker.unwrap_or(config.broker_id);
    match config.kafka_advertise {
        KafkaAdvertise::Shards => crate::config::node_id(broker, owner),
        KafkaAdvertise::Broker => crate::config::node_id(broker, 0),
    }
}

/// A decoded Metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest<'a> {
    /// The topics asked for; None: every topic.
    pub topics: Option<Vec<&'a str>>,
    /// Whether a missing topic may be created (v4+; always before).
    pub allow_auto_create: bool,
}

/// Decodes a Metadata request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<MetadataRequest<'a>> {
    // Each entry is at least a length (or a 16-byte topic id, v10+).
    let min = if v >= 10 { 17 } else { 1 };
    let topics = match d.array_len(flex, min)? {
        None => None,
        Some(n) => {
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                if v >= 10 {
                    d.uuid()?;
                }
                // v10+: a null name asks by topic id, which this broker does
                // not have (topic ids are not supported): no such topic.
                if let Some(name) = d.nullable_string(flex)? {
                    names.push(name);
                }
                d.tagged_fields(flex)?;
            }
            Some(names)
        }
    };
    let allow_auto_create = if v >= 4 { d.bool()? } else { true };
    if (8..=10).contains(&v) {
        d.bool()?; // include_cluster_authorized_operations
    }
    if v >= 8 {
        d.bool()?; // include_topic_authorized_operations
    }
    d.tagged_fields(flex)?;
    Ok(MetadataRequest {
        topics,
        allow_auto_create,
    })
}

/// Answers a Metadata request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let v = request.version;
    let mut topics_out = Vec::new();
    let views = match asked.topics {
        Some(names) if names.is_empty() => Vec::new(),
        names => topics::describe(shard, names),
    };
    let nodes = nodes(shard);
    // A cluster member's partitions whose broker is fenced (not among the
    // nodes) have no leader to advertise.
    let live: Option<Vec<i32>> = shard.image().map(|_| nodes.iter().map(|n| n.id).collect());
    for view in views {
        let (error, meta) = match view.topic {
            Some(meta) => (errors::NONE, Some(meta)),
            None => match auto_create(shard, &view.name, asked.allow_auto_create).await {
                Ok(Some(meta)) => (errors::NONE, Some(meta)),
                Ok(None) => (errors::UNKNOWN_TOPIC_OR_PARTITION, None),
                Err(e) => (create_error(&e), None),
            },
        };
        topics_out.push(topic_entry(
            shard,
            &view.name,
            error,
            meta.as_deref(),
            live.as_deref(),
        ));
    }
    let config = shard.config();
    let brokers = nodes
        .into_iter()
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(n.id))
                .with_host(StrBytes::from_string(n.host))
                .with_port(i32::from(n.port))
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_controller_id(BrokerId(config.kafka_node_id(0)))
        .with_topics(topics_out);
    if v >= 2 {
        response =
            response.with_cluster_id(Some(StrBytes::from_string(shard.cluster_id().to_owned())));
    }
    Ok(encode_with(&request, &response))
}

/// Creates `name` if auto-creation is on and allowed; Ok(None) when it is
/// not (the topic stays unknown).
async fn auto_create(
    shard: &Rc<Shard>,
    name: &str,
    allowed: bool,
) -> Result<Option<std::sync::Arc<TopicMeta>>, ServiceError> {
    if !allowed || !shard.config().auto_create_topics || is_internal(name) {
        return Ok(None);
    }
    validate_topic_name(name)?;
    let created = topics::create(
        shard,
        topics::CreateTopic {
            replication_factor: None,
            min_insync_replicas: None,
            unclean_leader_election: None,
            name: name.to_owned(),
            partitions: None,
            settings: Default::default(),
            log_append_time: None,
        },
    )
    .await;
    match created {
        Ok(meta) => {
            tracing::info!(
                topic = name,
                partitions = meta.partition_count(),
                "topic auto-created"
            );
            Ok(Some(meta))
        }
        // Created meanwhile by someone else: describe it.
        Err(e) if e.kind == ErrorKind::TopicExists => Ok(shard.topic(name)),
        Err(e) => Err(e),
    }
}

fn create_error(e: &ServiceError) -> i16 {
    match e.kind {
        ErrorKind::InvalidRequest => errors::INVALID_TOPIC_EXCEPTION,
        _ => errors::code(e),
    }
}

fn topic_entry(
    shard: &Shard,
    name: &str,
    error: i16,
    meta: Option<&TopicMeta>,
    live: Option<&[i32]>,
) -> MetadataResponseTopic {
    let image = shard.image();
    let partitions = meta
        .map(|m| {
            (0..m.partition_count())
                .map(|p| {
                    if m.config.replication_factor > 1 {
                        if let Some(reg) = image
                            .as_ref()
                            .and_then(|i| i.partition_replicas(name, p).ok())
                        {
                            return replicated_partition(shard, p, reg, live);
                        }
                    }
                    let id = leader_of(shard, m.broker_of(p), m.owner(p).unwrap_or(0));
                    let leader = BrokerId(id);
                    let up = live.is_none_or(|live| live.contains(&id));
                    MetadataResponsePartition::default()
                        .with_error_code(if up {
                            errors::NONE
                        } else {
                            errors::LEADER_NOT_AVAILABLE
                        })
                        .with_partition_index(p as i32)
                        .with_leader_id(if up { leader } else { BrokerId(-1) })
                        .with_replica_nodes(vec![leader])
                        .with_isr_nodes(if up { vec![leader] } else { Vec::new() })
                })
                .collect()
        })
        .unwrap_or_default();
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
        .with_is_internal(is_internal(name))
        .with_partitions(partitions)
}

/// A replicated partition's entry, from its registration in the image:
/// its leader (none while it has none or its broker is not among the live
/// nodes: LEADER_NOT_AVAILABLE), every replica, the ISR, and the leader
/// epoch (v7+). Node ids are each replica's (broker, shard).
fn replicated_partition(
    shard: &Shard,
    p: u32,
    reg: &broker_cluster::PartitionReplicas,
    live: Option<&[i32]>,
) -> MetadataResponsePartition {
    let node =
        |pl: &broker_cluster::Placement| BrokerId(leader_of(shard, Some(pl.broker.0), pl.shard.0));
    let leader = reg
        .leader_replica()
        .map(|pl| node(&pl))
        .filter(|id| live.is_none_or(|live| live.contains(&id.0)));
    let isr = reg
        .replicas
        .iter()
        .filter(|r| reg.isr.contains(&r.broker))
        .map(node)
        .collect();
    MetadataResponsePartition::default()
        .with_error_code(if leader.is_some() {
            errors::NONE
        } else {
            errors::LEADER_NOT_AVAILABLE
        })
        .with_partition_index(p as i32)
        .with_leader_id(leader.unwrap_or(BrokerId(-1)))
        .with_leader_epoch(reg.leader_epoch as i32)
        .with_replica_nodes(reg.replicas.iter().map(node).collect())
        .with_isr_nodes(isr)
}
