//! Topic admin and metadata: list, describe, create and delete topics.
//!
//! A topic change runs on the topic's controller shard
//! ([`crate::metadata::controller`]), which serialises changes to that
//! topic. Create: commit `topic.json` (the commit point), every owner opens
//! its partitions, every shard routes the topic, then the answer: a topic
//! is fully usable once create answers. Delete: every shard stops routing
//! it, owners close its logs, then one rename moves it to the trash. A
//! failed create is undone before it answers.
//!
//! [`validate_create`] runs a create's checks without making it (Kafka's
//! `validate_only`); [`create_here`] runs the same checks first.

use std::{rc::Rc, sync::Arc};

use crate::error::{ErrorKind, ServiceError, ServiceResult};
use crate::metadata::{self, TopicMeta};
use crate::service::is_internal;
use crate::shard::{Shard, ShardMessage};
use broker_protocol::TopicSettings;

/// A topic to create, as a client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Its name.
    pub name: String,
    /// Its partition count; None for the broker's default.
    pub partitions: Option<u32>,
    /// The settings asked for (each may be left to the broker's default).
    pub settings: TopicSettings,
    /// Kafka's `message.timestamp.type`: Some(true) for LogAppendTime,
    /// None for the broker's default.
    pub log_append_time: Option<bool>,
    /// Replicas of each partition; None for the broker's default
    /// (`--default-replication-factor`). The native CreateTopic cannot
    /// carry it (its TopicSettings table has no such field): Kafka's
    /// CreateTopics can.
    pub replication_factor: Option<u16>,
    /// Kafka's `min.insync.replicas`; None for the broker's default (1).
    pub min_insync_replicas: Option<u16>,
    /// Kafka's `unclean.leader.election.enable`; None: false.
    pub unclean_leader_election: Option<bool>,
}

/// A topic as described by metadata: None for an unknown name.
pub struct TopicView {
    /// The name asked for.
    pub name: String,
    /// The topic, if it exists.
    pub topic: Option<Arc<TopicMeta>>,
}

/// The topics `names` (every client-visible topic when None or empty,
/// internal ones only when named), from this shard's table.
pub fn describe(shard: &Shard, names: Option<Vec<&str>>) -> Vec<TopicView> {
    let topics = shard.topics();
    match names {
        Some(names) if !names.is_empty() => names
            .into_iter()
            .map(|name| TopicView {
                name: name.to_owned(),
                topic: topics.get(name).cloned(),
            })
            .collect(),
        _ => topics
            .iter()
            .filter(|t| !is_internal(&t.name))
            .map(|t| TopicView {
                name: t.name.clone(),
                topic: Some(t.clone()),
            })
            .collect(),
    }
}

/// Every client-visible topic and its partition count, sorted by name.
pub fn list(shard: &Shard) -> Vec<(String, u32)> {
    shard
        .topics()
        .iter()
        .filter(|t| !is_internal(&t.name))
        .map(|t| (t.name.clone(), t.partition_count()))
        .collect()
}

/// Creates a topic, on its controller shard; a cluster member's, through
/// the cluster's controllers (`cluster::apply::create`).
pub async fn create(shard: &Rc<Shard>, request: CreateTopic) -> ServiceResult<Arc<TopicMeta>> {
    if shard.cluster().is_some() {
        let topic = plan(shard, &request)?;
        return crate::cluster::apply::create(shard, topic).await;
    }
    let controller = metadata::controller(&request.name, shard.shard_count());
    if controller == shard.id() {
        return create_here(shard, request).await;
    }
    shard
        .ask(controller, move |reply| ShardMessage::CreateTopic {
            request,
            reply,
        })
        .await
}

/// Deletes a topic, on its controller shard; a cluster member's, through
/// the cluster's controllers.
pub async fn delete(shard: &Rc<Shard>, name: &str) -> ServiceResult<()> {
    if shard.cluster().is_some() {
        if is_internal(name) {
            return Err(ServiceError::invalid(format!(
                "{name:?} is an internal topic and cannot be deleted"
            )));
        }
        return crate::cluster::apply::delete(shard, name).await;
    }
    let controller = metadata::controller(name, shard.shard_count());
    if controller == shard.id() {
        return delete_here(shard, name).await;
    }
    let name = name.to_owned();
    shard
        .ask(controller, move |reply| ShardMessage::DeleteTopic {
            name,
            reply,
        })
        .await
}

/// Checks a create without making it: what [`create`] would make of
/// `request` (the topic with its placement and resolved settings), or the
/// error it would answer (Kafka's `validate_only`). Nothing is committed or
/// opened; a topic that another request creates meanwhile is not seen.
pub fn validate_create(shard: &Shard, request: &CreateTopic) -> ServiceResult<TopicMeta> {
    let topic = plan(shard, request)?;
    if shard.topic(&topic.name).is_some() {
        return Err(exists(&topic.name));
    }
    Ok(topic)
}

/// The topic `r` asks for, checked: its name, partition count and
/// settings (broker defaults resolved), placed over this broker's shards.
fn plan(shard: &Shard, r: &CreateTopic) -> ServiceResult<TopicMeta> {
    metadata::validate_topic_name(&r.name)?;
    if is_internal(&r.name) {
        return Err(ServiceError::invalid(format!(
            "topic names starting with \"__\" are reserved for the broker: {:?}",
            r.name
        )));
    }
    let partitions = match r.partitions {
        None => shard.config().default_partitions,
        Some(0) => {
            return Err(ServiceError::invalid(
                "partitions = 0: must be at least 1, or -1 for the broker's default",
            ))
        }
        Some(n) => n,
    };
    let mut config = metadata::resolve_topic_config(&r.settings, &shard.config().topic_defaults)?;
    if let Some(l) = r.log_append_time {
        config.log_append_time = l;
    }
    if let Some(rf) = r.replication_factor {
        config.replication_factor = rf;
    }
    if let Some(m) = r.min_insync_replicas {
        config.min_insync_replicas = m;
    }
    if let Some(u) = r.unclean_leader_election {
        config.unclean_leader_election = u;
    }
    if config.replication_factor != 1 && shard.cluster().is_none() {
        return Err(ServiceError::new(
            ErrorKind::InvalidReplicationFactor,
            format!(
                "replication factor {}: a broker on its own keeps one copy of each partition \
                 (replication needs a cluster: --controllers)",
                config.replication_factor
            ),
        ));
    }
    // min.insync.replicas above the factor is the controllers' to refuse;
    // a default of 1 always fits.
    Ok(TopicMeta::new(
        &r.name,
        partitions,
        config,
        shard.shard_count(),
    ))
}

fn exists(name: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::TopicExists,
        format!("topic {name:?} already exists"),
    )
}

/// [`create`] on the controller shard: checks the request, commits the
/// topic's metadata, has every owner open its partitions, then routes it on
/// every shard.
pub async fn create_here(shard: &Rc<Shard>, r: CreateTopic) -> ServiceResult<Arc<TopicMeta>> {
    let topic = plan(shard, &r)?;
    if shard.topic(&topic.name).is_some() || !shard.begin_change(&topic.name) {
        return Err(exists(&r.name));
    }
    let result = commit_and_open(shard, topic).await;
    shard.end_change(&r.name);
    if let Err(e) = &result {
        tracing::error!(topic = %r.name, error = %e, "creating the topic failed");
        // Undo: nothing was routed yet, so the directory can go.
        close_everywhere(shard, &r.name).await;
        if let Err(e) = metadata::trash_topic(shard.data(), &r.name).await {
            tracing::error!(topic = %r.name, error = %e, "removing the failed topic's files failed");
        }
    }
    result
}

/// Commits `topic`'s metadata, has every owner open its partitions, then
/// routes it on every shard.
pub(crate) async fn commit_and_open(
    shard: &Rc<Shard>,
    topic: TopicMeta,
) -> ServiceResult<Arc<TopicMeta>> {
    metadata::commit_topic(shard.data(), &topic).await?;
    let topic = Arc::new(topic);
    let opened = shard
        .on_all_shards(
            |reply| ShardMessage::OpenPartitions {
                topic: topic.clone(),
                reply,
            },
            shard.open_partitions(&topic),
        )
        .await;
    for answer in opened {
        match answer {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(ServiceError::storage("a shard did not answer")),
        }
    }
    route_everywhere(shard, &topic).await;
    tracing::info!(topic = %topic.name, partitions = topic.partition_count(), "topic created");
    Ok(topic)
}

/// Routes `topic` on every shard.
async fn route_everywhere(shard: &Rc<Shard>, topic: &Arc<TopicMeta>) {
    shard
        .on_all_shards(
            |reply| ShardMessage::TopicAdded {
                topic: topic.clone(),
                reply,
            },
            async { shard.route_topic(topic.clone()) },
        )
        .await;
}

/// Records `topic` (`topic.json`) and routes it on every shard, its
/// partitions left open as they are (a replicated topic's leaders moved).
pub(crate) async fn commit_and_route(shard: &Rc<Shard>, topic: TopicMeta) -> ServiceResult<()> {
    metadata::commit_topic(shard.data(), &topic).await?;
    route_everywhere(shard, &Arc::new(topic)).await;
    Ok(())
}

/// [`delete`] on the controller shard: stops routing the topic on every
/// shard, closes its partitions, then moves its directory to the trash in
/// one rename and removes it.
pub async fn delete_here(shard: &Rc<Shard>, name: &str) -> ServiceResult<()> {
    if is_internal(name) {
        return Err(ServiceError::invalid(format!(
            "{name:?} is an internal topic and cannot be deleted"
        )));
    }
    if shard.topic(name).is_none() {
        return Err(ServiceError::unknown_topic(name));
    }
    if !shard.begin_change(name) {
        return Err(ServiceError::invalid(format!(
            "topic {name:?} is being created or deleted; retry"
        )));
    }
    let result = remove_topic(shard, name).await;
    shard.end_change(name);
    result
}

/// Stops routing `name` on every shard, closes its partitions, then moves
/// its directory to the trash in one rename.
pub(crate) async fn remove_topic(shard: &Rc<Shard>, name: &str) -> ServiceResult<()> {
    let owned = name.to_owned();
    shard
        .on_all_shards(
            |reply| ShardMessage::TopicRemoved {
                topic: owned.clone(),
                reply,
            },
            async { shard.unroute_topic(name) },
        )
        .await;
    close_everywhere(shard, name).await;
    match metadata::trash_topic(shard.data(), name).await {
        Ok(()) => {
            tracing::info!(topic = name, "topic deleted");
            Ok(())
        }
        Err(e) => {
            tracing::error!(topic = name, error = %e, "deleting the topic's files failed");
            Err(e.into())
        }
    }
}

/// Closes every shard's partitions of `name`.
pub(crate) async fn close_everywhere(shard: &Rc<Shard>, name: &str) {
    let owned = name.to_owned();
    shard
        .on_all_shards(
            |reply| ShardMessage::ClosePartitions {
                topic: owned.clone(),
                reply,
            },
            shard.close_partitions(name),
        )
        .await;
}
