//! Consumer groups on the server: which shard coordinates a group, serving
//! the group APIs there, and keeping committed offsets durable.
//!
//! Committed offsets live in the internal topic `__consumer_offsets`, a
//! topic like any other (placed on shards, persisted, recovered). A group's
//! offsets go to partition `fnv1a(group) % partitions`, and the shard that
//! owns that partition is the group's coordinator: coordinator and offsets
//! move together if placement changes. A commit is one record batch (one
//! record per partition: key = group, value = JSON `{"topic","partition",
//! "offset"}`), acknowledged after the log's fsync policy; at start the
//! coordinator replays its partitions to rebuild every group's offsets.
//!
//! Membership is in memory only: after a restart members rejoin (their
//! heartbeats get UnknownMember) and resume from the committed offsets.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::group::{Group, GroupError, TopicPartition};
use crate::handler::{error, Reply, Response};
use crate::metadata::{self, TopicConfig, TopicMeta};
use crate::metrics::GroupSnapshot;
use crate::partition::Arrivals;
use crate::shard::ShardState;
use broker_format::{self as batch, BatchBuilder};
use broker_protocol::generated::{
    DescribeGroupRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};
use broker_protocol::{
    ApiKey, ErrorCode, GroupSummary, MemberSummary, OffsetEntry, ResponseError, TopicAssignment,
};
use broker_shard::ShardId;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Partitions of the offsets topic (fixed when it is first created).
pub const OFFSETS_PARTITIONS: u32 = 16;

/// Segment size of the offsets topic.
const OFFSETS_SEGMENT_BYTES: u64 = 64 << 20;

/// How often sessions and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Whether `name` is an internal topic (clients may read it, not write,
/// create or delete it).
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// The offsets topic as first created.
pub fn offsets_topic(shard_count: u16) -> TopicMeta {
    TopicMeta::new(
        OFFSETS_TOPIC,
        OFFSETS_PARTITIONS,
        TopicConfig {
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: OFFSETS_SEGMENT_BYTES,
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

/// This shard's groups.
#[derive(Default)]
pub struct Groups {
    groups: RefCell<BTreeMap<String, Group>>,
    /// Bumped whenever a group may have formed a generation.
    changed: Arrivals,
}

impl Groups {
    /// Every group's summary, for ListGroups.
    pub fn summaries(&self) -> Vec<(String, String, u32, i32)> {
        self.groups
            .borrow()
            .values()
            .map(|g| {
                (
                    g.name.clone(),
                    g.phase.name().to_string(),
                    g.members.len() as u32,
                    g.generation,
                )
            })
            .collect()
    }
}

/// The offsets partition of `group` and the shard that owns it (the
/// coordinator), from this shard's topic table.
pub fn coordinator(shard: &ShardState, group: &str) -> Option<(ShardId, u32)> {
    let topics = shard.topics.borrow();
    let t = topics.get(OFFSETS_TOPIC)?;
    let p = metadata::name_hash(group) % t.partition_count().max(1);
    Some((t.owner(p)?, p))
}

/// Rebuilds committed offsets from this shard's offsets partitions.
pub async fn replay(shard: &ShardState) -> Result<usize, String> {
    let partitions: Vec<_> = shard
        .partitions
        .borrow()
        .get(OFFSETS_TOPIC)
        .map(|t| t.values().cloned().collect())
        .unwrap_or_default();
    let mut records = 0;
    for p in partitions {
        let mut at = p.log.log_start_offset();
        while at < p.log.high_watermark() {
            let read = p
                .log
                .read(at, 1 << 20)
                .await
                .map_err(|e| format!("replaying {OFFSETS_TOPIC}/{}: {e}", p.partition))?;
            if read.next_offset <= at {
                break;
            }
            for b in batch::batches(read.bytes.as_slice()) {
                let Ok(b) = b else { break };
                let Ok(recs) = batch::records(b.1) else {
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
                        .groups
                        .groups
                        .borrow_mut()
                        .entry(group.to_string())
                        .or_insert_with(|| Group::new(group))
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
pub async fn tick_forever(shard: Rc<ShardState>) {
    loop {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        let counts = |t: &str| partition_count(&shard, t);
        let mut changed = false;
        for g in shard.groups.groups.borrow_mut().values_mut() {
            changed |= g.tick(now, &counts);
        }
        if changed {
            shard.groups.changed.notify();
        }
        publish(&shard);
    }
}

/// Publishes what the metrics endpoint shows of this shard: its busy time
/// and its groups.
fn publish(shard: &ShardState) {
    // glommio hands out the runtime since the previous call (it takes the
    // stats), so the counter adds it up.
    let busy = glommio::executor().executor_stats().total_runtime();
    shard
        .metrics
        .busy_ns
        .fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    let snapshot = shard
        .groups
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
    shard.metrics.publish_groups(snapshot);
}

fn partition_count(shard: &ShardState, topic: &str) -> u32 {
    shard
        .topics
        .borrow()
        .get(topic)
        .map_or(0, |t| t.partition_count())
}

fn group_error(shard: &ShardState, api: ApiKey, id: u64, e: &GroupError) -> Response {
    let code = match e {
        GroupError::UnknownMember => ErrorCode::UnknownMember,
        GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
        GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        GroupError::NotAssigned(_) => ErrorCode::NotAssigned,
    };
    error(shard, api, id, &ResponseError::new(code, &e.to_string()))
}

fn invalid(shard: &ShardState, api: ApiKey, id: u64, message: &str) -> Response {
    error(
        shard,
        api,
        id,
        &ResponseError::new(ErrorCode::InvalidRequest, message),
    )
}

fn encoded(
    shard: &ShardState,
    api: ApiKey,
    id: u64,
    r: Result<(), broker_protocol::FrameError>,
    head: Vec<u8>,
) -> Reply {
    match r {
        Ok(()) => Reply::Send(Response::head(head)),
        Err(e) => Reply::Send(error(
            shard,
            api,
            id,
            &ResponseError::new(ErrorCode::Internal, &e.to_string()),
        )),
    }
}

/// FindCoordinator: answered by any shard.
pub fn find_coordinator(shard: &ShardState, id: u64, group: &str) -> Reply {
    let api = ApiKey::FindCoordinator;
    if group.is_empty() {
        return Reply::Send(invalid(shard, api, id, "a group name must not be empty"));
    }
    let Some((owner, _)) = coordinator(shard, group) else {
        return Reply::Send(error(
            shard,
            api,
            id,
            &ResponseError::new(ErrorCode::Internal, "the offsets topic is missing"),
        ));
    };
    let host = shard.config.advertised_host();
    let port = shard
        .endpoints
        .get(usize::from(owner))
        .map_or(0, |a| a.port());
    let mut head = Vec::with_capacity(96);
    let r = shard
        .writer
        .borrow_mut()
        .find_coordinator_response(&mut head, id, owner, &host, port)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// JoinGroup: answered once the generation the member joined forms.
pub async fn join(shard: &Rc<ShardState>, id: u64, r: JoinGroupRequest<'_>) -> Reply {
    let api = ApiKey::JoinGroup;
    let allowed =
        shard.config.group_min_session_timeout_ms..=shard.config.group_max_session_timeout_ms;
    if !allowed.contains(&r.session_timeout_ms()) {
        return Reply::Send(invalid(
            shard,
            api,
            id,
            &format!(
                "session_timeout_ms {} is outside {}..={} (the broker's \
                 group_min_session_timeout_ms and group_max_session_timeout_ms)",
                r.session_timeout_ms(),
                allowed.start(),
                allowed.end()
            ),
        ));
    }
    let topics: Vec<&str> = r.topics().map(|t| t.iter().collect()).unwrap_or_default();
    if topics.is_empty() {
        return Reply::Send(invalid(
            shard,
            api,
            id,
            "a member must subscribe to at least one topic",
        ));
    }
    let session = Duration::from_millis(u64::from(r.session_timeout_ms()));
    let counts = |t: &str| partition_count(shard, t);
    let joined = shard
        .groups
        .groups
        .borrow_mut()
        .entry(r.group().to_string())
        .or_insert_with(|| Group::new(r.group()))
        .join(r.member_id(), &topics, session, Instant::now(), &counts);
    let member = match joined {
        Ok(m) => m,
        Err(e) => return Reply::Send(group_error(shard, api, id, &e)),
    };
    shard.groups.changed.notify();
    loop {
        let seen = shard.groups.changed.generation();
        let answer = match shard.groups.groups.borrow().get(r.group()) {
            Some(g) => g.join_answer(&member),
            None => Err(GroupError::UnknownMember),
        };
        match answer {
            Ok(Some(a)) => {
                let by_topic = group_by_topic(&a.partitions);
                let assignment: Vec<TopicAssignment<'_>> = by_topic
                    .iter()
                    .map(|(t, ps)| TopicAssignment {
                        topic: t,
                        partitions: ps,
                    })
                    .collect();
                let mut head = Vec::with_capacity(128);
                let written = shard
                    .writer
                    .borrow_mut()
                    .join_group_response(
                        &mut head,
                        id,
                        a.generation,
                        &member,
                        &assignment,
                        a.members,
                    )
                    .map(|_| ());
                return encoded(shard, api, id, written, head);
            }
            Ok(None) => {
                // Woken by any group's change, or the tick's deadline check.
                shard.groups.changed.wait(seen, session).await;
            }
            Err(e) => return Reply::Send(group_error(shard, api, id, &e)),
        }
    }
}

fn group_by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<u32>> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    by_topic
}

/// Heartbeat.
pub fn heartbeat(shard: &ShardState, id: u64, r: HeartbeatRequest<'_>) -> Reply {
    let api = ApiKey::Heartbeat;
    let result = match shard.groups.groups.borrow_mut().get_mut(r.group()) {
        Some(g) => g.heartbeat(r.member_id(), r.generation(), Instant::now()),
        None => Err(GroupError::UnknownMember),
    };
    if let Err(e) = result {
        return Reply::Send(group_error(shard, api, id, &e));
    }
    let mut head = Vec::with_capacity(64);
    let r = shard
        .writer
        .borrow_mut()
        .heartbeat_response(&mut head, id)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// LeaveGroup.
pub fn leave(shard: &ShardState, id: u64, r: LeaveGroupRequest<'_>) -> Reply {
    let api = ApiKey::LeaveGroup;
    let counts = |t: &str| partition_count(shard, t);
    let result = match shard.groups.groups.borrow_mut().get_mut(r.group()) {
        Some(g) => g.leave(r.member_id(), Instant::now(), &counts),
        None => Err(GroupError::UnknownMember),
    };
    if let Err(e) = result {
        return Reply::Send(group_error(shard, api, id, &e));
    }
    shard.groups.changed.notify();
    let mut head = Vec::with_capacity(64);
    let r = shard
        .writer
        .borrow_mut()
        .leave_group_response(&mut head, id)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// OffsetCommit: checked against the generation and the assignment, made
/// durable in the offsets topic, then applied.
pub async fn commit(shard: &Rc<ShardState>, id: u64, r: OffsetCommitRequest<'_>) -> Reply {
    let api = ApiKey::OffsetCommit;
    let offsets: Vec<(TopicPartition, i64)> = r
        .offsets()
        .map(|o| {
            o.iter()
                .map(|e| {
                    (
                        (e.topic().unwrap_or("").to_string(), e.partition()),
                        e.offset(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if offsets.iter().any(|(_, o)| *o < 0) {
        return Reply::Send(invalid(
            shard,
            api,
            id,
            "a committed offset must not be negative",
        ));
    }
    let partitions: Vec<TopicPartition> = offsets.iter().map(|(tp, _)| tp.clone()).collect();
    let checked = match shard.groups.groups.borrow_mut().get_mut(r.group()) {
        Some(g) => g.check_commit(r.member_id(), r.generation(), &partitions, Instant::now()),
        None => Err(GroupError::UnknownMember),
    };
    if let Err(e) = checked {
        return Reply::Send(group_error(shard, api, id, &e));
    }
    if !offsets.is_empty() {
        if let Err(message) = persist(shard, r.group(), &offsets).await {
            return Reply::Send(error(
                shard,
                api,
                id,
                &ResponseError::new(ErrorCode::StorageError, &message),
            ));
        }
        if let Some(g) = shard.groups.groups.borrow_mut().get_mut(r.group()) {
            g.apply_commit(offsets);
        }
    }
    let mut head = Vec::with_capacity(64);
    let r = shard
        .writer
        .borrow_mut()
        .offset_commit_response(&mut head, id)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// Appends a commit to the group's offsets partition and waits until the
/// log acknowledges it (fsynced under policy `always`).
async fn persist(
    shard: &ShardState,
    group: &str,
    offsets: &[(TopicPartition, i64)],
) -> Result<(), String> {
    let Some((owner, p)) = coordinator(shard, group) else {
        return Err("the offsets topic is missing".into());
    };
    if owner != shard.id {
        return Err(format!(
            "shard {} no longer coordinates group {group:?}",
            shard.id
        ));
    }
    let Some(partition) = shard.partition(OFFSETS_TOPIC, p) else {
        return Err(format!("{OFFSETS_TOPIC}/{p} is not open"));
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
        .map_err(|e| e.to_string())?;
        b.push(now_ms, Some(group.as_bytes()), Some(&value), &[]);
    }
    let bytes = b.finish();
    partition
        .log
        .append(&bytes)
        .await
        .map_err(|e| format!("committing offsets of group {group:?}: {e}"))?;
    Ok(())
}

/// OffsetFetch.
pub fn fetch_offsets(shard: &ShardState, id: u64, r: OffsetFetchRequest<'_>) -> Reply {
    let api = ApiKey::OffsetFetch;
    let groups = shard.groups.groups.borrow();
    let committed = groups.get(r.group()).map(|g| &g.committed);
    let wanted: Vec<(String, u32)> = match r.partitions() {
        Some(list) if !list.is_empty() => list
            .iter()
            .flat_map(|t| {
                let topic = t.topic().unwrap_or("").to_string();
                t.partitions()
                    .map(|ps| ps.iter().map(|p| (topic.clone(), p)).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect(),
        _ => committed
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default(),
    };
    let entries: Vec<OffsetEntry<'_>> = wanted
        .iter()
        .map(|tp| OffsetEntry {
            topic: &tp.0,
            partition: tp.1,
            offset: committed.and_then(|c| c.get(tp)).copied().unwrap_or(-1),
        })
        .collect();
    let mut head = Vec::with_capacity(64 + 32 * entries.len());
    let r = shard
        .writer
        .borrow_mut()
        .offset_fetch_response(&mut head, id, &entries)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// DescribeGroup: an unknown group is described as Empty.
pub fn describe(shard: &ShardState, id: u64, r: DescribeGroupRequest<'_>) -> Reply {
    let api = ApiKey::DescribeGroup;
    let groups = shard.groups.groups.borrow();
    let empty = Group::new(r.group());
    let g = groups.get(r.group()).unwrap_or(&empty);
    type MemberRow<'a> = (String, Vec<&'a str>, BTreeMap<&'a str, Vec<u32>>);
    let by_member: Vec<MemberRow<'_>> = g
        .members
        .values()
        .map(|m| {
            let assignment = g
                .assignment
                .get(&m.id)
                .map(|a| group_by_topic(a))
                .unwrap_or_default();
            (
                m.id.clone(),
                m.topics.iter().map(String::as_str).collect(),
                assignment,
            )
        })
        .collect();
    let assignments: Vec<Vec<TopicAssignment<'_>>> = by_member
        .iter()
        .map(|(_, _, a)| {
            a.iter()
                .map(|(t, ps)| TopicAssignment {
                    topic: t,
                    partitions: ps,
                })
                .collect()
        })
        .collect();
    let members: Vec<MemberSummary<'_>> = by_member
        .iter()
        .zip(&assignments)
        .map(|((id, topics, _), a)| MemberSummary {
            member_id: id,
            topics,
            assignment: a,
        })
        .collect();
    let offsets: Vec<OffsetEntry<'_>> = g
        .committed
        .iter()
        .map(|((t, p), o)| OffsetEntry {
            topic: t,
            partition: *p,
            offset: *o,
        })
        .collect();
    let mut head = Vec::with_capacity(256);
    let r = shard
        .writer
        .borrow_mut()
        .describe_group_response(
            &mut head,
            id,
            g.phase.name(),
            g.generation,
            &members,
            &offsets,
        )
        .map(|_| ());
    encoded(shard, api, id, r, head)
}

/// ListGroups: every shard's groups, sorted by name.
pub async fn list(shard: &Rc<ShardState>, id: u64) -> Reply {
    let api = ApiKey::ListGroups;
    let mut rows = shard.all_group_summaries().await;
    rows.sort();
    let summaries: Vec<GroupSummary<'_>> = rows
        .iter()
        .map(|(g, s, m, gen)| GroupSummary {
            group: g,
            state: s,
            members: *m,
            generation: *gen,
        })
        .collect();
    let mut head = Vec::with_capacity(64 + 48 * summaries.len());
    let r = shard
        .writer
        .borrow_mut()
        .list_groups_response(&mut head, id, &summaries)
        .map(|_| ());
    encoded(shard, api, id, r, head)
}
