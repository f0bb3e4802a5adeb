//! The committed metadata image applied by a cluster member, and the topic
//! commands that go through the controllers.
//!
//! Images arrive from the membership thread in version order and are
//! applied one at a time on shard 0: the topics of the image become this
//! broker's topic table (each partition's broker and shard as placed), the
//! partitions placed on this broker are opened on their shards (a new
//! topic's `topic.json` committed first, as a cache the next start
//! recovers from), topics the image no longer has (or has again under
//! another creating request) are closed and trashed, and then every shard
//! takes the image (for routing answers and for version waits).
//!
//! A topic create or delete asked of any shard is proposed to the
//! controllers; once committed, the asking shard waits until this broker
//! has applied the image that holds it, so a topic is usable here once
//! create answers (other brokers apply it within a heartbeat).

use std::{rc::Rc, sync::Arc, time::Duration};

use broker_cluster::{MetadataImage, RequestId, TopicRecord};
use broker_controller::{Applied, RefusalKind, Refused, Request, Response};

use crate::error::{ErrorKind, ServiceError, ServiceResult};
use crate::metadata::TopicMeta;
use crate::service::topics;
use crate::shard::{Shard, ShardMessage};

/// How long a topic command waits for this broker to apply its image.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How often a topic command is tried while the controllers cannot decide.
const ATTEMPTS: u32 = 5;
/// The pause between those tries.
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// The topic as this broker's table holds it, from the image's record:
/// each partition's broker and shard are its leader's replica (the
/// preferred replica's while it has none; with one replica, its placement,
/// as before replication). A leader change is a new table entry (the
/// partition opens on the new leader's shard).
pub fn topic_meta(name: &str, record: &TopicRecord) -> TopicMeta {
    let serving: Vec<broker_cluster::Placement> = record
        .partitions
        .iter()
        .zip(&record.replicas)
        .map(|(pl, reg)| reg.leader_replica().unwrap_or(*pl))
        .collect();
    let replicated = record.replicas.iter().any(|r| r.replicas.len() > 1);
    TopicMeta {
        name: name.to_owned(),
        config: record.config,
        shards: serving.iter().map(|p| p.shard.0).collect(),
        brokers: serving.iter().map(|p| p.broker.0).collect(),
        created_by: Some(record.created_by.0),
        replicas: if replicated {
            record
                .replicas
                .iter()
                .map(|r| {
                    r.replicas
                        .iter()
                        .map(|p| crate::metadata::ReplicaAt {
                            broker: p.broker.0,
                            shard: p.shard.0,
                        })
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Applies `image` on shard 0 (see the module's doc).
pub async fn apply(shard: &Rc<Shard>, image: Arc<MetadataImage>) {
    let current: Vec<Arc<TopicMeta>> = shard.topics().iter().cloned().collect();
    for have in current {
        let keep = image
            .topic(&have.name)
            .is_some_and(|r| have.created_by == Some(r.created_by.0));
        if !keep {
            tracing::info!(topic = %have.name, version = image.version(),
                "topic gone from the cluster's metadata: closing and removing it here");
            if let Err(e) = topics::remove_topic(shard, &have.name).await {
                tracing::error!(topic = %have.name, error = %e, "removing the topic here failed");
            }
        }
    }
    for (name, record) in image.topics() {
        let want = topic_meta(name, record);
        match shard.topic(name) {
            Some(have) if *have == want => {}
            // A replicated topic whose leaders moved: its replicas stay
            // open where they are; only the routing changes.
            Some(have) if have.same_but_routing(&want) => {
                if let Err(e) = topics::commit_and_route(shard, want).await {
                    tracing::error!(topic = %name, error = %e,
                        "recording the topic's new leaders failed");
                }
            }
            // A reassignment moved replicas: the partitions placed here now
            // open, those dropped from here close (their files removed);
            // the others are not touched.
            Some(have) if have.same_but_replicas(&want) => {
                if let Err(e) = topics::commit_and_open(shard, want).await {
                    tracing::error!(topic = %name, error = %e,
                        "applying the topic's new replicas failed");
                }
            }
            have => {
                if have.is_some() {
                    // Placed again (its broker came back with fewer
                    // shards): the partitions move between this broker's
                    // shards, their files stay.
                    tracing::info!(topic = %name, "topic placed again: reopening its partitions");
                    topics::close_everywhere(shard, name).await;
                }
                if let Err(e) = topics::commit_and_open(shard, want).await {
                    tracing::error!(topic = %name, error = %e,
                        "applying the topic failed; its partitions here are not served");
                }
            }
        }
    }
    ensure_offsets_topic(shard, &image);
    shard
        .on_all_shards(
            |reply| ShardMessage::Image {
                image: Arc::clone(&image),
                reply,
            },
            async { shard.set_image(Arc::clone(&image)) },
        )
        .await;
}

/// The request id every member creates the offsets topic with: the same
/// command from each, so that the first one creates it and the others'
/// are answered with its placement.
const OFFSETS_REQUEST_ID: u128 = u128::from_be_bytes(*b"__consumer_offse");

thread_local! {
    /// Whether this shard has an offsets topic creation in flight.
    static CREATING_OFFSETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Has the controllers create `__consumer_offsets` when the image lacks it
/// and some broker can take its partitions (once at a time; again at a
/// later image if it failed).
fn ensure_offsets_topic(shard: &Rc<Shard>, image: &MetadataImage) {
    use crate::service::groups;
    let can = image.brokers().values().any(|b| !b.is_fenced());
    if image.topic(groups::OFFSETS_TOPIC).is_some() || !can || CREATING_OFFSETS.get() {
        return;
    }
    CREATING_OFFSETS.set(true);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let meta = groups::offsets_topic(1);
        let request = Request::CreateTopic {
            name: meta.name.clone(),
            partitions: meta.partition_count(),
            config: meta.config,
            request_id: RequestId(OFFSETS_REQUEST_ID),
        };
        match propose(&shard, request).await {
            Ok(version) => tracing::info!(version, "the offsets topic is created"),
            Err(e) => {
                tracing::warn!(error = %e, "creating the offsets topic failed; trying again later")
            }
        }
        CREATING_OFFSETS.set(false);
    })
    .detach();
}

/// Creates a topic through the controllers (a cluster member's
/// [`topics::create`]): `topic`'s name, partitions and settings, checked
/// and resolved by this broker; its placement is the controllers'.
pub async fn create(shard: &Shard, topic: TopicMeta) -> ServiceResult<Arc<TopicMeta>> {
    let Some(link) = shard.cluster() else {
        return Err(ServiceError::internal("not a cluster member"));
    };
    let request = Request::CreateTopic {
        name: topic.name.clone(),
        partitions: topic.partition_count(),
        config: topic.config,
        // One id for every try of this request: a retry after a timeout
        // (which may have committed) is answered, not refused.
        request_id: RequestId(link.request_id()),
    };
    let version = propose(shard, request).await?;
    shard
        .topic(&topic.name)
        .filter(|_| shard.image().is_some_and(|i| i.version() >= version))
        .ok_or_else(|| ServiceError::storage("the created topic is not applied here yet"))
}

/// Deletes a topic through the controllers. A refusal as unknown of a
/// topic this broker had when asked counts as done: a try of this request
/// whose answer was lost (a controller that timed out, then the next one
/// asked) may have deleted it, and the topic is gone either way. (The
/// cluster chaos run, seed 73512, had a committed delete answered
/// UNKNOWN_TOPIC.) Answered once this broker no longer routes it.
pub async fn delete(shard: &Shard, name: &str) -> ServiceResult<()> {
    let existed = shard.topic(name).is_some();
    let proposed = propose(
        shard,
        Request::DeleteTopic {
            name: name.to_owned(),
        },
    )
    .await;
    match proposed {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::UnknownTopic && existed => {
            if let Some(link) = shard.cluster() {
                link.refresh();
            }
            let deadline = std::time::Instant::now() + APPLY_WAIT;
            while shard.topic(name).is_some() {
                let next = shard.image().map_or(0, |i| i.version() + 1);
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || !shard.wait_image(next, left).await {
                    return Err(ServiceError::storage(format!(
                        "topic {name:?} is deleted by the controllers but still routed here"
                    )));
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Proposes a topic command, tries again while the controllers cannot
/// decide, and waits until this broker has applied its outcome; the
/// image's version then.
async fn propose(shard: &Shard, request: Request) -> ServiceResult<u64> {
    let Some(link) = shard.cluster() else {
        return Err(ServiceError::internal("not a cluster member"));
    };
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
        match link.caller.call(request.clone()).await {
            Ok(Response::Applied(Applied {
                version,
                result: Ok(_),
            })) => {
                link.refresh();
                if !shard.wait_image(version, APPLY_WAIT).await {
                    return Err(ServiceError::storage(format!(
                        "committed by the controllers (metadata version {version}) but not \
                         applied here within {APPLY_WAIT:?}"
                    )));
                }
                return Ok(version);
            }
            Ok(Response::Applied(Applied {
                result: Err(refused),
                ..
            })) => return Err(refusal(refused)),
            Ok(Response::Unavailable { reason }) => last = reason,
            Ok(other) => last = format!("unexpected answer {other:?}"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(ServiceError::storage(format!(
        "the controllers did not decide after {ATTEMPTS} tries: {last}"
    )))
}

/// A refusal of the image as the service's error.
fn refusal(r: Refused) -> ServiceError {
    let kind = match r.kind {
        RefusalKind::TopicExists => ErrorKind::TopicExists,
        RefusalKind::UnknownTopic => ErrorKind::UnknownTopic,
        RefusalKind::UnknownPartition => ErrorKind::UnknownPartition,
        RefusalKind::Invalid => ErrorKind::InvalidRequest,
        RefusalKind::InvalidReplicationFactor => ErrorKind::InvalidReplicationFactor,
        // Answers to AlterPartition, which topic commands never get.
        RefusalKind::FencedLeaderEpoch
        | RefusalKind::InvalidUpdateVersion
        | RefusalKind::IneligibleReplica => ErrorKind::Internal,
        RefusalKind::UnknownBroker
        | RefusalKind::StaleBrokerEpoch
        | RefusalKind::DuplicateBrokerRegistration
        | RefusalKind::BrokerShutDown
        | RefusalKind::Unavailable => ErrorKind::Storage,
    };
    ServiceError::new(kind, r.message)
}
