//! Consumer groups: which shard coordinates a group, the group operations
//! there, and committed offsets kept durable.
//!
//! Committed offsets live in the internal topic `__consumer_offsets`, a
//! topic like any other (placed on shards, persisted, recovered). A group's
//! offsets go to partition `fnv1a(group) % partitions`, and the shard that
//! owns that partition is the group's coordinator: coordinator and offsets
//! move together if placement changes. A commit is one record batch (one
//! record per partition: key = group, value = JSON `{"topic","partition",
//! "offset"}`, see schemas/consumer-offsets.md), appended through the
//! partition (so long polls on the offsets topic wake) and acknowledged
//! under the log's fsync policy; at start the coordinator replays its
//! partitions to rebuild every group's offsets.
//!
//! Membership is in memory only: after a restart members rejoin (their
//! heartbeats get UnknownMember) and resume from the committed offsets.
//!
//! Both codecs land here: the native one (the coordinator assigns ranges)
//! and the Kafka one (the classic protocol: [`GroupRequest::KafkaJoin`] and
//! [`GroupRequest::Sync`], the group's leader assigns). Their offsets are
//! the same records in the same topic, so each sees what the other
//! committed.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::arrivals::Arrivals;
use crate::error::{ErrorKind, ServiceError, ServiceResult};
use crate::group::{ClassicJoin, Group, GroupError, TopicPartition};
use crate::metadata::{self, TopicConfig, TopicMeta};
use crate::metrics::GroupSnapshot;
use crate::shard::{Shard, ShardMessage};
use broker_format::BatchBuilder;
use broker_shard::ShardId;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Partitions of the offsets topic (fixed when it is first created).
pub const OFFSETS_PARTITIONS: u32 = 16;

/// Segment size of the offsets topic.
const OFFSETS_SEGMENT_BYTES: u64 = 64 << 20;

/// How often sessions and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// The offsets topic as first created.
pub fn offsets_topic(shard_count: u16) -> TopicMeta {
    TopicMeta::new(
        OFFSETS_TOPIC,
        OFFSETS_PARTITIONS,
        TopicConfig {
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: OFFSETS_SEGMENT_BYTES,
            log_append_time: false,
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        },
        shard_count,
    )
}

/// One committed offset as stored in the offsets topic.
#[derive(Debug, Serialize, Deserialize)]
struct StoredOffset<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
}

/// A group operation, as it crosses to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Join (or rejoin) the group; answered once the generation forms.
    Join {
        /// The group.
        group: String,
        /// The member's id; empty for a new member.
        member_id: String,
        /// The topics it subscribes to.
        topics: Vec<String>,
        /// Its session timeout.
        session_timeout_ms: u32,
    },
    /// A member is alive.
    Heartbeat {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
        /// The generation it is in.
        generation: i32,
    },
    /// A member leaves.
    Leave {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
    },
    /// Commit offsets (checked against the generation and the assignment).
    Commit {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
        /// The generation it is in.
        generation: i32,
        /// Next offsets to consume, per partition.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// The committed offsets of some partitions (all committed when None).
    FetchOffsets {
        /// The group.
        group: String,
        /// The partitions asked for.
        partitions: Option<Vec<TopicPartition>>,
    },
    /// Describe the group.
    Describe {
        /// The group.
        group: String,
    },
    /// Kafka's JoinGroup (the classic protocol); answered once the
    /// generation forms.
    KafkaJoin(KafkaJoin),
    /// Kafka's SyncGroup: the leader's carries every member's assignment;
    /// answered with the member's own once the leader's arrived.
    Sync {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
        /// The generation it joined.
        generation: i32,
        /// The leader's assignments (member id, opaque bytes); empty from
        /// the others.
        assignments: Vec<(String, Vec<u8>)>,
    },
    /// Kafka's OffsetCommit: checked against member and generation only
    /// (generation -1 and no member: a simple commit, for a group with no
    /// members).
    KafkaCommit {
        /// The group.
        group: String,
        /// The member ("" for a simple commit).
        member_id: String,
        /// Its generation (-1 for a simple commit).
        generation: i32,
        /// Next offsets to consume, per partition.
        offsets: Vec<(TopicPartition, i64)>,
    },
}

/// A Kafka JoinGroup, as it crosses to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaJoin {
    /// The group.
    pub group: String,
    /// The member's id; empty for a new member.
    pub member_id: String,
    /// A new member must first get an id (JoinGroup v4+: the answer is
    /// MEMBER_ID_REQUIRED with a fresh id).
    pub require_member_id: bool,
    /// The member's protocol type, protocols, timeouts and client.
    pub join: ClassicJoin,
}

impl GroupRequest {
    /// The group it is for.
    pub fn group(&self) -> &str {
        match self {
            GroupRequest::Join { group, .. }
            | GroupRequest::Heartbeat { group, .. }
            | GroupRequest::Leave { group, .. }
            | GroupRequest::Commit { group, .. }
            | GroupRequest::FetchOffsets { group, .. }
            | GroupRequest::Describe { group }
            | GroupRequest::KafkaJoin(KafkaJoin { group, .. })
            | GroupRequest::Sync { group, .. }
            | GroupRequest::KafkaCommit { group, .. } => group,
        }
    }
}

/// The answer to a [`GroupRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAnswer {
    /// Join: the member's generation and assignment.
    Joined(Joined),
    /// Heartbeat, leave, commit: done.
    Done,
    /// FetchOffsets: the offset of each partition asked for (-1: none).
    Offsets(Vec<(TopicPartition, i64)>),
    /// Describe.
    Described(GroupDescription),
    /// Kafka JoinGroup: the generation formed.
    KafkaJoined(KafkaJoined),
    /// Kafka JoinGroup v4+ of a new member: join again with this id.
    MemberIdRequired(String),
    /// Kafka SyncGroup: the member's assignment, opaque.
    Synced(Vec<u8>),
}

/// A classic member's place in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaJoined {
    /// The member's id.
    pub member_id: String,
    /// The generation formed.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol: String,
    /// The leader's id.
    pub leader: String,
    /// For the leader, every member's metadata for the chosen protocol.
    pub members: Vec<(String, Vec<u8>)>,
}

/// A classic member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMember {
    /// Its id.
    pub member_id: String,
    /// The client's id and host.
    pub client: (String, String),
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Its assignment in the current generation (empty if none yet).
    pub assignment: Vec<u8>,
}

/// A member's place in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The member's id (assigned at its first join).
    pub member_id: String,
    /// The generation it joined.
    pub generation: i32,
    /// Its partitions in that generation.
    pub partitions: Vec<TopicPartition>,
    /// Members in that generation.
    pub members: u32,
}

/// A group as DescribeGroup shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// "Empty", "Rebalancing" or "Stable".
    pub state: &'static str,
    /// Current generation.
    pub generation: i32,
    /// Each member: id, subscribed topics, assigned partitions.
    pub members: Vec<(String, Vec<String>, Vec<TopicPartition>)>,
    /// Every committed offset.
    pub committed: Vec<(TopicPartition, i64)>,
    /// The protocol type ("" for a native group).
    pub protocol_type: String,
    /// The protocol chosen ("" for a native group).
    pub protocol: String,
    /// The members of a classic group, with their opaque bytes.
    pub classic_members: Vec<ClassicMember>,
}

/// One group of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupListing {
    /// The group.
    pub group: String,
    /// "Empty", "Rebalancing" or "Stable".
    pub state: String,
    /// Members now.
    pub members: u32,
    /// Current generation.
    pub generation: i32,
    /// The protocol type ("" for a native group).
    pub protocol_type: String,
}

/// Where a group's coordinator listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// Its shard.
    pub shard: ShardId,
    /// The advertised host.
    pub host: String,
    /// The shard's own port.
    pub port: u16,
}

/// This shard's groups.
#[derive(Default)]
pub struct Groups {
    groups: RefCell<BTreeMap<String, Group>>,
    /// Bumped whenever a group may have formed a generation.
    changed: Arrivals,
}

impl Groups {
    /// Every group's listing, for ListGroups.
    pub fn listings(&self) -> Vec<GroupListing> {
        self.groups
            .borrow()
            .values()
            .map(|g| GroupListing {
                group: g.name.clone(),
                state: g.phase.name().to_string(),
                members: g.members.len() as u32,
                generation: g.generation,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
            })
            .collect()
    }

    fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Group) -> Result<T, GroupError>,
    ) -> ServiceResult<T> {
        match self.groups.borrow_mut().get_mut(group) {
            Some(g) => f(g).map_err(Into::into),
            None => Err(GroupError::UnknownMember.into()),
        }
    }
}

/// The offsets partition of `group` and the shard of this broker that owns
/// it (the coordinator), from this shard's topic table; `NotOwner` when a
/// cluster places it on another broker.
pub fn coordinator_of(shard: &Shard, group: &str) -> ServiceResult<(ShardId, u32)> {
    let (broker, owner, p) = coordinator_location(shard, group)?;
    match broker {
        Some(b) if b != shard.config().broker_id => Err(ServiceError::new(
            ErrorKind::NotOwner,
            format!("group {group:?} is coordinated by broker {b}"),
        )),
        _ => Ok((owner, p)),
    }
}

/// Where `group`'s coordinator is: its broker (None: this broker, not a
/// cluster member), its shard, and the offsets partition.
pub fn coordinator_location(
    shard: &Shard,
    group: &str,
) -> ServiceResult<(Option<u32>, ShardId, u32)> {
    let missing = || ServiceError::internal("the offsets topic is missing");
    let topics = shard.topics();
    let t = topics.get(OFFSETS_TOPIC).ok_or_else(missing)?;
    let p = metadata::name_hash(group) % t.partition_count().max(1);
    Ok((t.broker_of(p), t.owner(p).ok_or_else(missing)?, p))
}

fn check_name(group: &str) -> ServiceResult<()> {
    if group.is_empty() {
        return Err(ServiceError::invalid("a group name must not be empty"));
    }
    Ok(())
}

/// FindCoordinator: answered by any shard.
pub fn find_coordinator(shard: &Shard, group: &str) -> ServiceResult<Coordinator> {
    check_name(group)?;
    let (broker, owner, _) = coordinator_location(shard, group)?;
    if let (Some(b), Some(image)) = (broker, shard.image()) {
        let at = crate::cluster::native_shards(&image)
            .into_iter()
            .find(|a| a.broker == b && a.shard == owner)
            .ok_or_else(|| {
                ServiceError::internal(format!("the coordinator's broker {b} is not registered"))
            })?;
        return Ok(Coordinator {
            shard: owner,
            host: at.host,
            port: at.port,
        });
    }
    Ok(Coordinator {
        shard: owner,
        host: shard.config().advertised_host(),
        port: shard
            .endpoints()
            .get(usize::from(owner))
            .map_or(0, |a| a.port()),
    })
}

/// Serves a group operation on the group's coordinator (from any port: the
/// client finds the coordinator's own port with FindCoordinator).
pub async fn call(shard: &Rc<Shard>, request: GroupRequest) -> ServiceResult<GroupAnswer> {
    check_name(request.group())?;
    let (owner, _) = coordinator_of(shard, request.group())?;
    if owner == shard.id() {
        return serve_here(shard, request).await;
    }
    shard
        .ask(owner, move |reply| ShardMessage::Group { request, reply })
        .await
}

/// [`call`] on the coordinator.
pub async fn serve_here(shard: &Shard, request: GroupRequest) -> ServiceResult<GroupAnswer> {
    match request {
        GroupRequest::Join {
            group,
            member_id,
            topics,
            session_timeout_ms,
        } => join(shard, &group, &member_id, &topics, session_timeout_ms)
            .await
            .map(GroupAnswer::Joined),
        GroupRequest::Heartbeat {
            group,
            member_id,
            generation,
        } => {
            shard.groups().with_group(&group, |g| {
                g.heartbeat(&member_id, generation, Instant::now())
            })?;
            Ok(GroupAnswer::Done)
        }
        GroupRequest::Leave { group, member_id } => {
            let counts = |t: &str| partition_count(shard, t);
            shard
                .groups()
                .with_group(&group, |g| g.leave(&member_id, Instant::now(), &counts))?;
            shard.groups().changed.notify();
            Ok(GroupAnswer::Done)
        }
        GroupRequest::Commit {
            group,
            member_id,
            generation,
            offsets,
        } => Box::pin(commit(shard, &group, &member_id, generation, offsets))
            .await
            .map(|()| GroupAnswer::Done),
        GroupRequest::FetchOffsets { group, partitions } => Ok(GroupAnswer::Offsets(
            fetch_offsets(shard, &group, partitions),
        )),
        GroupRequest::Describe { group } => Ok(GroupAnswer::Described(describe(shard, &group))),
        GroupRequest::KafkaJoin(join) => kafka_join(shard, join).await,
        GroupRequest::Sync {
            group,
            member_id,
            generation,
            assignments,
        } => sync(shard, &group, &member_id, generation, &assignments)
            .await
            .map(GroupAnswer::Synced),
        GroupRequest::KafkaCommit {
            group,
            member_id,
            generation,
            offsets,
        } => Box::pin(kafka_commit(shard, &group, &member_id, generation, offsets))
            .await
            .map(|()| GroupAnswer::Done),
    }
}

/// A new group as this broker creates them.
fn new_group(shard: &Shard, name: &str) -> Group {
    let delay = u64::from(shard.config().group_initial_rebalance_delay_ms);
    Group::new(name).with_initial_delay(Duration::from_millis(delay))
}

/// Kafka's JoinGroup: MEMBER_ID_REQUIRED for a new member of v4+, else
/// answered once the generation forms.
async fn kafka_join(shard: &Shard, request: KafkaJoin) -> ServiceResult<GroupAnswer> {
    let KafkaJoin {
        group,
        member_id,
        require_member_id,
        join,
    } = request;
    let session = join.session_timeout;
    let counts = |t: &str| partition_count(shard, t);
    let groups = shard.groups();
    let member = {
        let mut all = groups.groups.borrow_mut();
        let g = all
            .entry(group.clone())
            .or_insert_with(|| new_group(shard, &group));
        if member_id.is_empty() && require_member_id {
            return Ok(GroupAnswer::MemberIdRequired(
                g.pending_member(session, Instant::now()),
            ));
        }
        g.join_classic(Some(&member_id), join, Instant::now(), &counts)?
    };
    groups.changed.notify();
    loop {
        let seen = groups.changed.generation();
        let found = match groups.groups.borrow().get(&group) {
            Some(g) => g
                .join_answer(&member)
                .map(|a| a.map(|a| (a, g.protocol_type.clone().unwrap_or_default()))),
            None => Err(GroupError::UnknownMember),
        }?;
        match found {
            Some((a, protocol_type)) => {
                return Ok(GroupAnswer::KafkaJoined(KafkaJoined {
                    member_id: member,
                    generation: a.generation,
                    protocol_type,
                    protocol: a.protocol.unwrap_or_default(),
                    leader: a.leader,
                    members: a.metadata,
                }))
            }
            None => {
                groups.changed.wait(seen, session).await;
            }
        }
    }
}

/// Kafka's SyncGroup: answered with the member's assignment once the
/// leader's SyncGroup brought it.
async fn sync(
    shard: &Shard,
    group: &str,
    member_id: &str,
    generation: i32,
    assignments: &[(String, Vec<u8>)],
) -> ServiceResult<Vec<u8>> {
    let groups = shard.groups();
    groups.with_group(group, |g| {
        g.sync(member_id, generation, assignments, Instant::now())
    })?;
    groups.changed.notify();
    loop {
        let seen = groups.changed.generation();
        let answer = groups.with_group(group, |g| g.sync_answer(member_id, generation))?;
        match answer {
            Some(bytes) => return Ok(bytes),
            // Woken by the leader's sync, or the tick's deadline check.
            None => {
                groups.changed.wait(seen, TICK * 10).await;
            }
        }
    }
}

/// Kafka's OffsetCommit: checked by Kafka's rules, made durable, applied.
async fn kafka_commit(
    shard: &Shard,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: Vec<(TopicPartition, i64)>,
) -> ServiceResult<()> {
    if offsets.iter().any(|(_, o)| *o < 0) {
        return Err(ServiceError::invalid(
            "a committed offset must not be negative",
        ));
    }
    shard
        .groups()
        .groups
        .borrow_mut()
        .entry(group.to_string())
        .or_insert_with(|| new_group(shard, group))
        .check_classic_commit(member_id, generation, Instant::now())?;
    if offsets.is_empty() {
        return Ok(());
    }
    persist(shard, group, &offsets).await?;
    if let Some(g) = shard.groups().groups.borrow_mut().get_mut(group) {
        g.apply_commit(offsets);
    }
    Ok(())
}

/// Rebuilds committed offsets from this shard's offsets partitions.
pub async fn replay(shard: &Shard) -> ServiceResult<usize> {
    let mut records = 0;
    for p in shard.partitions_of(OFFSETS_TOPIC) {
        let mut at = p.log_start_offset();
        while at < p.high_watermark() {
            let read = p.read(at, 1 << 20).await.map_err(|e| {
                ServiceError::from(e).context(format!("replaying {OFFSETS_TOPIC}/{}", p.number()))
            })?;
            if read.next_offset <= at {
                break;
            }
            for b in broker_format::batches(read.bytes.as_slice()) {
                let Ok(b) = b else { break };
                let Ok(recs) = broker_format::records(b.1) else {
                    continue;
                };
                for r in recs.flatten() {
                    let (Some(key), Some(value)) = (r.key, r.value) else {
                        continue;
                    };
                    let Ok(group) = std::str::from_utf8(key) else {
                        continue;
                    };
                    let Ok(o) = serde_json::from_slice::<StoredOffset<'_>>(value) else {
                        continue;
                    };
                    shard
                        .groups()
                        .groups
                        .borrow_mut()
                        .entry(group.to_string())
                        .or_insert_with(|| new_group(shard, group))
                        .apply_commit([((o.topic.to_string(), o.partition), o.offset)]);
                    records += 1;
                }
            }
            at = read.next_offset;
        }
    }
    Ok(records)
}

/// Checks sessions and rebalance deadlines of every group, forever.
pub async fn tick_forever(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        let counts = |t: &str| partition_count(&shard, t);
        let mut changed = false;
        for g in shard.groups().groups.borrow_mut().values_mut() {
            changed |= g.tick(now, &counts);
        }
        if changed {
            shard.groups().changed.notify();
        }
        publish(&shard);
    }
}

/// Publishes what the metrics endpoint shows of this shard: its busy time
/// and its groups.
fn publish(shard: &Shard) {
    // glommio hands out the runtime since the previous call (it takes the
    // stats), so the counter adds it up.
    let busy = glommio::executor().executor_stats().total_runtime();
    shard
        .metrics()
        .busy_ns
        .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    let snapshot = shard
        .groups()
        .groups
        .borrow()
        .values()
        .map(|g| {
            (
                g.name.clone(),
                GroupSnapshot {
                    members: g.members.len() as u32,
                    generation: g.generation,
                    committed: g.committed.clone(),
                },
            )
        })
        .collect();
    shard.metrics().publish_groups(snapshot);
}

fn partition_count(shard: &Shard, topic: &str) -> u32 {
    shard.topic(topic).map_or(0, |t| t.partition_count())
}

/// JoinGroup: answered once the generation the member joined forms.
async fn join(
    shard: &Shard,
    group: &str,
    member_id: &str,
    topics: &[String],
    session_timeout_ms: u32,
) -> ServiceResult<Joined> {
    let allowed =
        shard.config().group_min_session_timeout_ms..=shard.config().group_max_session_timeout_ms;
    if !allowed.contains(&session_timeout_ms) {
        return Err(ServiceError::invalid(format!(
            "session_timeout_ms {session_timeout_ms} is outside {}..={} (the broker's \
             group_min_session_timeout_ms and group_max_session_timeout_ms)",
            allowed.start(),
            allowed.end()
        )));
    }
    if topics.is_empty() {
        return Err(ServiceError::invalid(
            "a member must subscribe to at least one topic",
        ));
    }
    let session = Duration::from_millis(u64::from(session_timeout_ms));
    let counts = |t: &str| partition_count(shard, t);
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let member = shard
        .groups()
        .groups
        .borrow_mut()
        .entry(group.to_string())
        .or_insert_with(|| new_group(shard, group))
        .join(
            Some(member_id),
            &topic_names,
            session,
            Instant::now(),
            &counts,
        )?;
    let groups = shard.groups();
    groups.changed.notify();
    loop {
        let seen = groups.changed.generation();
        let answer = match groups.groups.borrow().get(group) {
            Some(g) => g.join_answer(&member),
            None => Err(GroupError::UnknownMember),
        }?;
        match answer {
            Some(a) => {
                return Ok(Joined {
                    member_id: member,
                    generation: a.generation,
                    partitions: a.partitions,
                    members: a.members,
                })
            }
            // Woken by any group's change, or the tick's deadline check.
            None => {
                groups.changed.wait(seen, session).await;
            }
        }
    }
}

/// OffsetCommit: checked against the generation and the assignment, made
/// durable in the offsets topic, then applied.
async fn commit(
    shard: &Shard,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: Vec<(TopicPartition, i64)>,
) -> ServiceResult<()> {
    if offsets.iter().any(|(_, o)| *o < 0) {
        return Err(ServiceError::invalid(
            "a committed offset must not be negative",
        ));
    }
    let partitions: Vec<TopicPartition> = offsets.iter().map(|(tp, _)| tp.clone()).collect();
    shard.groups().with_group(group, |g| {
        g.check_commit(member_id, generation, &partitions, Instant::now())
    })?;
    if offsets.is_empty() {
        return Ok(());
    }
    persist(shard, group, &offsets).await?;
    if let Some(g) = shard.groups().groups.borrow_mut().get_mut(group) {
        g.apply_commit(offsets);
    }
    Ok(())
}

/// Appends a commit to the group's offsets partition and waits until the
/// partition acknowledges it (fsynced under policy `always`); the append
/// wakes long polls on the offsets partition like any other.
async fn persist(
    shard: &Shard,
    group: &str,
    offsets: &[(TopicPartition, i64)],
) -> ServiceResult<()> {
    let (owner, p) = coordinator_of(shard, group)?;
    if owner != shard.id() {
        return Err(ServiceError::internal(format!(
            "shard {} no longer coordinates group {group:?}",
            shard.id()
        )));
    }
    let Some(partition) = shard.partition(OFFSETS_TOPIC, p) else {
        return Err(ServiceError::not_open(OFFSETS_TOPIC, p));
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut b = BatchBuilder::new(now_ms);
    for ((topic, partition), offset) in offsets {
        let value = serde_json::to_vec(&StoredOffset {
            topic,
            partition: *partition,
            offset: *offset,
        })
        .map_err(|e| ServiceError::internal(e.to_string()))?;
        b.push(now_ms, Some(group.as_bytes()), Some(&value), &[]);
    }
    let batch = b.finish();
    let batch = broker_format::Validated::check(&batch)
        .map_err(|e| ServiceError::internal(format!("an offsets batch we built: {e}")))?;
    partition.append(batch).await.map_err(|e| {
        ServiceError::from(e).context(format!("committing offsets of group {group:?}"))
    })?;
    Ok(())
}

/// OffsetFetch: the offset of each partition asked for (-1: none committed);
/// every committed one when none is named.
fn fetch_offsets(
    shard: &Shard,
    group: &str,
    partitions: Option<Vec<TopicPartition>>,
) -> Vec<(TopicPartition, i64)> {
    let groups = shard.groups().groups.borrow();
    let committed = groups.get(group).map(|g| &g.committed);
    let wanted: Vec<TopicPartition> = match partitions {
        Some(list) if !list.is_empty() => list,
        _ => committed
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default(),
    };
    wanted
        .into_iter()
        .map(|tp| {
            let offset = committed.and_then(|c| c.get(&tp)).copied().unwrap_or(-1);
            (tp, offset)
        })
        .collect()
}

/// DescribeGroup: an unknown group is described as Empty.
fn describe(shard: &Shard, group: &str) -> GroupDescription {
    let groups = shard.groups().groups.borrow();
    let empty = Group::new(group);
    let g = groups.get(group).unwrap_or(&empty);
    GroupDescription {
        state: g.phase.name(),
        generation: g.generation,
        members: g
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.topics.clone(),
                    g.assignment.get(&m.id).cloned().unwrap_or_default(),
                )
            })
            .collect(),
        committed: g.committed.iter().map(|(tp, o)| (tp.clone(), *o)).collect(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: g.protocol.clone().unwrap_or_default(),
        classic_members: if g.is_classic() {
            let chosen = g.protocol.as_deref().unwrap_or_default();
            g.members
                .values()
                .map(|m| ClassicMember {
                    member_id: m.id.clone(),
                    client: m.client.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| n == chosen)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m
                        .sync
                        .as_ref()
                        .filter(|(gen, _)| *gen == g.generation)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// ListGroups: every shard's groups, sorted by name.
pub async fn list(shard: &Rc<Shard>) -> Vec<GroupListing> {
    let mut rows: Vec<GroupListing> = shard
        .on_all_shards(|reply| ShardMessage::ListGroups { reply }, async {
            shard.groups().listings()
        })
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    rows.sort();
    rows
}
