//! Consumer groups on the client side: the group requests as [`Client`]
//! methods, and [`GroupConsumer`], a consumer whose partitions the group's
//! coordinator assigns.
//!
//! The protocol is Kafka's eager rebalance with the assignment computed by
//! the coordinator (see `group/`): a member joins (the answer is a long poll
//! that comes when the generation forms) and heartbeats; a heartbeat
//! answered RebalanceInProgress, IllegalGeneration or UnknownMember means
//! "rejoin". Before rejoining, a member commits what it consumed (the
//! current generation's commits are still accepted while the group
//! rebalances), so the partition's next owner resumes where it stopped.
//!
//! Invariants:
//! - At-least-once: a position is committed only after `poll` handed out
//!   the records before it, and only in the member's generation; whatever a
//!   member handed out and did not commit (a crash, a commit fenced by a
//!   rebalance) is delivered again from the last committed offset. Nothing
//!   is ever skipped: a partition starts from its committed offset, or, when
//!   none is committed, from `auto_offset_reset`.
//! - A commit the coordinator refuses because the member was fenced
//!   (IllegalGeneration, UnknownMember, NotAssigned) is not an error of the
//!   consumer: it rejoins and resumes from the committed offsets.
//! - Records handed out by one `poll` all belong to the generation
//!   [`GroupConsumer::generation`] reports after it; a rejoin drops every
//!   record fetched and not handed out.
//! - The heartbeat thread never touches positions or the fetcher: it only
//!   reports that a rejoin is due; the consumer's own thread acts on it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::admin::Client;
use super::connection::{lock, Response};
use super::consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
use super::error::{ClientError, ClientResult};
use broker_protocol::generated::{
    DescribeGroupResponse, FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, OffsetCommitResponse, OffsetFetchResponse,
};
use broker_protocol::TopicAssignment;
use broker_protocol::{ErrorCode, FrameError, FrameHeader, FrameWriter, OffsetEntry};

/// The longest a join may wait for its generation on top of the request
/// timeout: the coordinator's longest session timeout (a rebalance waits at
/// most that long for members to rejoin).
const JOIN_WAIT_MAX: Duration = Duration::from_secs(300);

/// Longest slice of a `poll` spent fetching before the consumer looks at
/// the heartbeat thread's news again.
const POLL_SLICE_MAX: Duration = Duration::from_millis(200);

/// Pause before trying the coordinator again after a connection failure.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A topic and partition.
pub type TopicPartition = (String, u32);

/// The coordinator of a group: the shard that owns its offsets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Coordinator {
    /// The coordinating shard.
    pub shard: u16,
    /// Its shard-aware address, "host:port".
    pub address: String,
}

/// A member's place in a newly formed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The generation: commits must carry it.
    pub generation: i32,
    /// The member's id: send it with every later request.
    pub member_id: String,
    /// The partitions this member owns in the generation, sorted.
    pub assignment: Vec<TopicPartition>,
    /// Members in the generation.
    pub members: u32,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupListing {
    /// The group's name.
    pub group: String,
    /// "Empty", "Rebalancing" or "Stable".
    pub state: String,
    /// Members now.
    pub members: u32,
    /// The current generation.
    pub generation: i32,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupMemberInfo {
    /// The member's id.
    pub member_id: String,
    /// The topics it subscribed to.
    pub topics: Vec<String>,
    /// What it owns in the current generation, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to consume; -1 when none is committed.
    pub offset: i64,
}

/// A group as DescribeGroup reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// "Empty", "Rebalancing" or "Stable".
    pub state: String,
    /// The current generation.
    pub generation: i32,
    /// The members, by id.
    pub members: Vec<GroupMemberInfo>,
    /// Every committed offset, by topic and partition.
    pub offsets: Vec<CommittedOffset>,
}

impl GroupDescription {
    /// The member owning `topic`/`partition` in the current generation.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<&str> {
        self.members
            .iter()
            .find(|m| {
                m.assignment
                    .iter()
                    .any(|(t, p)| t == topic && *p == partition)
            })
            .map(|m| m.member_id.as_str())
    }
}

/// Whether a group request was refused because the member was fenced: it
/// must rejoin (and, for UnknownMember, as a new member).
pub fn is_fenced(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(
            ErrorCode::RebalanceInProgress
                | ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMember
                | ErrorCode::NotAssigned
        )
    )
}

fn partitions_of<'a>(
    list: Option<
        flatbuffers::Vector<
            'a,
            flatbuffers::ForwardsUOffset<broker_protocol::generated::TopicPartitions<'a>>,
        >,
    >,
) -> Vec<TopicPartition> {
    let mut out: Vec<TopicPartition> = list
        .iter()
        .flatten()
        .flat_map(|t| {
            let topic = t.topic().unwrap_or_default().to_owned();
            let partitions: Vec<u32> = t.partitions().iter().flatten().collect();
            partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect();
    out.sort();
    out
}

/// The committed offsets of a response, sorted.
fn committed_offsets<'a>(
    list: Option<
        flatbuffers::Vector<
            'a,
            flatbuffers::ForwardsUOffset<broker_protocol::generated::PartitionOffset<'a>>,
        >,
    >,
) -> Vec<CommittedOffset> {
    let mut offsets: Vec<CommittedOffset> = list
        .iter()
        .flatten()
        .map(|o| CommittedOffset {
            topic: o.topic().unwrap_or_default().to_owned(),
            partition: o.partition(),
            offset: o.offset(),
        })
        .collect();
    offsets.sort();
    offsets
}

/// Groups partitions by topic, for the wire.
fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<u32>> {
    let mut out: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in partitions {
        out.entry(t.as_str()).or_default().push(*p);
    }
    out
}

impl Client {
    /// Finds the coordinator of `group` (any broker port answers).
    pub fn find_coordinator(&self, group: &str) -> ClientResult<Coordinator> {
        let response =
            self.control_call(|w, out, id| w.find_coordinator_request(out, id, group))?;
        let frame = response.decode::<FindCoordinatorResponse>()?;
        let b = frame.body;
        Ok(Coordinator {
            shard: b.shard(),
            address: self.advertised_address(b.host().unwrap_or_default(), b.port()),
        })
    }

    /// Sends a group request to the coordinator and waits up to `timeout`.
    fn group_call(
        &self,
        coordinator: &Coordinator,
        timeout: Duration,
        build: impl FnOnce(&mut FrameWriter, &mut Vec<u8>, u64) -> Result<FrameHeader, FrameError>,
    ) -> ClientResult<Response> {
        self.connection(&coordinator.address)?
            .call(timeout, build, &[])
    }

    /// Joins `group` (`member_id` empty for a new member) and waits until
    /// the generation forms: that may take until every member has rejoined
    /// or the rebalance deadline (the longest session timeout) has passed.
    pub fn join_group(
        &self,
        coordinator: &Coordinator,
        group: &str,
        member_id: &str,
        topics: &[&str],
        session_timeout_ms: u32,
    ) -> ClientResult<Joined> {
        let timeout = self.config().request_timeout + JOIN_WAIT_MAX;
        let response = self.group_call(coordinator, timeout, |w, out, id| {
            w.join_group_request(out, id, group, member_id, topics, session_timeout_ms)
        })?;
        let frame = response.decode::<JoinGroupResponse>()?;
        let b = frame.body;
        Ok(Joined {
            generation: b.generation(),
            member_id: b.member_id().unwrap_or_default().to_owned(),
            assignment: partitions_of(b.assignment()),
            members: b.members(),
        })
    }

    /// Keeps a membership alive. Fails with RebalanceInProgress (commit,
    /// then rejoin), IllegalGeneration or UnknownMember (rejoin).
    pub fn heartbeat(
        &self,
        coordinator: &Coordinator,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> ClientResult<()> {
        let timeout = self.config().request_timeout;
        let response = self.group_call(coordinator, timeout, |w, out, id| {
            w.heartbeat_request(out, id, group, member_id, generation)
        })?;
        response.decode::<HeartbeatResponse>()?;
        Ok(())
    }

    /// Leaves `group` now: the member's partitions move at once.
    pub fn leave_group(
        &self,
        coordinator: &Coordinator,
        group: &str,
        member_id: &str,
    ) -> ClientResult<()> {
        let timeout = self.config().request_timeout;
        let response = self.group_call(coordinator, timeout, |w, out, id| {
            w.leave_group_request(out, id, group, member_id)
        })?;
        response.decode::<LeaveGroupResponse>()?;
        Ok(())
    }

    /// Commits offsets (each the next offset to consume) of partitions the
    /// member owns in `generation`: all are durable on success, none
    /// otherwise. Refused with IllegalGeneration, UnknownMember or
    /// NotAssigned when the member was fenced.
    pub fn commit_offsets(
        &self,
        coordinator: &Coordinator,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: &[(TopicPartition, i64)],
    ) -> ClientResult<()> {
        let entries: Vec<OffsetEntry<'_>> = offsets
            .iter()
            .map(|((topic, partition), offset)| OffsetEntry {
                topic,
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let timeout = self.config().request_timeout;
        let response = self.group_call(coordinator, timeout, |w, out, id| {
            w.offset_commit_request(out, id, group, member_id, generation, &entries)
        })?;
        response.decode::<OffsetCommitResponse>()?;
        Ok(())
    }

    /// The committed offsets of `partitions` (every committed one when
    /// empty); -1 where none is committed.
    pub fn fetch_offsets(
        &self,
        coordinator: &Coordinator,
        group: &str,
        partitions: &[TopicPartition],
    ) -> ClientResult<Vec<CommittedOffset>> {
        let grouped = by_topic(partitions);
        let wanted: Vec<TopicAssignment<'_>> = grouped
            .iter()
            .map(|(topic, partitions)| TopicAssignment { topic, partitions })
            .collect();
        let timeout = self.config().request_timeout;
        let response = self.group_call(coordinator, timeout, |w, out, id| {
            w.offset_fetch_request(out, id, group, &wanted)
        })?;
        let frame = response.decode::<OffsetFetchResponse>()?;
        Ok(committed_offsets(frame.body.offsets()))
    }

    /// Every group of the broker, sorted by name.
    pub fn list_groups(&self) -> ClientResult<Vec<GroupListing>> {
        let response = self.control_call(|w, out, id| w.list_groups_request(out, id))?;
        let frame = response.decode::<ListGroupsResponse>()?;
        let mut groups: Vec<GroupListing> = frame
            .body
            .groups()
            .iter()
            .flatten()
            .map(|g| GroupListing {
                group: g.group().unwrap_or_default().to_owned(),
                state: g.state().unwrap_or_default().to_owned(),
                members: g.members(),
                generation: g.generation(),
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// A group's state, members, assignment and committed offsets (an
    /// unknown group is described as Empty).
    pub fn describe_group(&self, group: &str) -> ClientResult<GroupDescription> {
        let response = self.control_call(|w, out, id| w.describe_group_request(out, id, group))?;
        let frame = response.decode::<DescribeGroupResponse>()?;
        let b = frame.body;
        let mut members: Vec<GroupMemberInfo> = b
            .members()
            .iter()
            .flatten()
            .map(|m| GroupMemberInfo {
                member_id: m.member_id().unwrap_or_default().to_owned(),
                topics: m.topics().iter().flatten().map(str::to_owned).collect(),
                assignment: partitions_of(m.assignment()),
            })
            .collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        let offsets = committed_offsets(b.offsets());
        Ok(GroupDescription {
            group: group.to_owned(),
            state: b.state().unwrap_or_default().to_owned(),
            generation: b.generation(),
            members,
            offsets,
        })
    }
}

/// Where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// Its first readable offset: nothing already in the log is missed.
    #[default]
    Earliest,
    /// Its high watermark when first assigned: only new records.
    Latest,
}

/// How a [`GroupConsumer`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConsumerConfig {
    /// The member is removed (and its partitions move) when the coordinator
    /// hears nothing from it for this long. Heartbeats go every third of it.
    pub session_timeout_ms: u32,
    /// Where partitions without a committed offset start.
    pub auto_offset_reset: AutoOffsetReset,
    /// Commit positions at this interval, from `poll` (None: only on
    /// [`GroupConsumer::commit`], before a rejoin and on close).
    pub auto_commit_interval_ms: Option<u64>,
    /// Most records one `poll` hands out; the rest wait for the next.
    pub max_poll_records: usize,
    /// How long the coordinator may stay unreachable (connection failures,
    /// timeouts) before `poll` reports it.
    pub coordinator_retry_ms: u64,
    /// How partitions are fetched.
    pub consumer: ConsumerConfig,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        GroupConsumerConfig {
            session_timeout_ms: 10_000,
            auto_offset_reset: AutoOffsetReset::Earliest,
            auto_commit_interval_ms: Some(5_000),
            max_poll_records: 500,
            coordinator_retry_ms: 30_000,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// The membership the heartbeat thread keeps alive, and what it found out.
#[derive(Debug, Default)]
struct Membership {
    coordinator: Option<Coordinator>,
    member_id: String,
    generation: i32,
    /// Whether the member is in a formed generation (heartbeats go only
    /// then; not while a join is pending).
    joined: bool,
    /// Set by the heartbeat thread: why the member must rejoin.
    rejoin: Option<ErrorCode>,
}

/// A member of a consumer group: joins, heartbeats from a background
/// thread, fetches the partitions the coordinator assigns it from their
/// committed offsets, and commits what `poll` handed out (at an interval,
/// on [`GroupConsumer::commit`], before every rejoin and on
/// [`GroupConsumer::close`]). Used from one thread.
///
/// Dropping it without `close` is a crash: nothing is committed and the
/// member does not leave; its partitions move after its session timeout
/// and what it handed out since its last commit is delivered again.
#[derive(Debug)]
pub struct GroupConsumer {
    group: String,
    topics: Vec<String>,
    config: GroupConsumerConfig,
    client: Client,
    consumer: Consumer,
    membership: Arc<Mutex<Membership>>,
    /// Dropped to stop the heartbeat thread.
    stop: Option<Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
    /// The assigned partitions in the current generation.
    assignment: Vec<TopicPartition>,
    /// Per assigned partition: the offset after the last record handed out
    /// (or where fetching started): what a commit sends.
    positions: BTreeMap<TopicPartition, i64>,
    /// What the coordinator is known to hold for the assigned partitions.
    committed: BTreeMap<TopicPartition, i64>,
    /// Fetched in this generation, not handed out yet.
    buffered: VecDeque<ConsumedRecord>,
    last_commit: Instant,
    /// Since when the coordinator or the partitions are unreachable.
    failing_since: Option<Instant>,
}

impl GroupConsumer {
    /// A member of `group` consuming `topics`, bootstrapped from
    /// `bootstrap`. It joins on the first `poll`.
    pub fn connect(
        bootstrap: &str,
        group: &str,
        topics: &[&str],
        config: GroupConsumerConfig,
    ) -> ClientResult<GroupConsumer> {
        let client = Client::connect_with(bootstrap, config.consumer.client.clone())?;
        GroupConsumer::with_client(client, group, topics, config)
    }

    /// Like [`GroupConsumer::connect`], sharing `client`'s connections.
    pub fn with_client(
        client: Client,
        group: &str,
        topics: &[&str],
        config: GroupConsumerConfig,
    ) -> ClientResult<GroupConsumer> {
        if group.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group name is needed".into(),
            ));
        }
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group member needs at least one topic".into(),
            ));
        }
        if config.max_poll_records == 0 {
            return Err(ClientError::InvalidArgument(
                "max_poll_records must be at least 1".into(),
            ));
        }
        let membership = Arc::new(Mutex::new(Membership::default()));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let interval = Duration::from_millis(u64::from(config.session_timeout_ms / 3).max(1));
        let heartbeat = {
            let client = client.clone();
            let membership = Arc::clone(&membership);
            let group = group.to_owned();
            thread::Builder::new()
                .name(format!("broker-group-heartbeat {group}"))
                .spawn(move || loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    heartbeat_once(&client, &membership, &group);
                })
                .map_err(|e| ClientError::InvalidArgument(format!("cannot start a thread: {e}")))?
        };
        let consumer = Consumer::with_client(client.clone(), config.consumer.clone());
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        Ok(GroupConsumer {
            group: group.to_owned(),
            topics,
            config,
            client,
            consumer,
            membership,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
            assignment: Vec::new(),
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            buffered: VecDeque::new(),
            last_commit: Instant::now(),
            failing_since: None,
        })
    }

    /// The client this consumer uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The member id (empty before the first join).
    pub fn member_id(&self) -> String {
        lock(&self.membership).member_id.clone()
    }

    /// The generation the member is in (0 before the first join).
    pub fn generation(&self) -> i32 {
        lock(&self.membership).generation
    }

    /// The partitions assigned in the current generation.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// The offset after the last record handed out of an assigned partition
    /// (where the next commit puts it).
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions.get(&(topic.to_owned(), partition)).copied()
    }

    /// Waits up to `timeout` for records of the assigned partitions and
    /// returns up to `max_poll_records` of them (empty if none came), in
    /// offset order per partition. Joins first if needed and rejoins when a
    /// rebalance is due; a join waits for the generation to form, which may
    /// take longer than `timeout` (up to the longest session timeout).
    pub fn poll(&mut self, timeout: Duration) -> ClientResult<Vec<ConsumedRecord>> {
        let max = self.config.max_poll_records;
        self.poll_at_most(timeout, max)
    }

    /// Like [`GroupConsumer::poll`], handing out at most `max` records (at
    /// least 1): only those count as consumed.
    pub fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> ClientResult<Vec<ConsumedRecord>> {
        let max = max.max(1);
        let deadline = Instant::now() + timeout;
        loop {
            let due = {
                let m = lock(&self.membership);
                if m.joined {
                    m.rejoin
                } else {
                    Some(ErrorCode::None)
                }
            };
            if let Some(reason) = due {
                if let Err(e) = self.rejoin(reason) {
                    self.transient(e)?;
                    thread::sleep(
                        RETRY_BACKOFF.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                    continue;
                }
            }
            if self.maybe_auto_commit()? {
                continue; // Fenced: rejoin before handing anything out.
            }
            if !self.buffered.is_empty() {
                return Ok(self.hand_out(max));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(self.poll_slice());
            match self.consumer.poll(slice) {
                Ok(records) => {
                    self.failing_since = None;
                    self.buffered.extend(records);
                    if !self.buffered.is_empty() {
                        return Ok(self.hand_out(max));
                    }
                }
                Err(e) => self.transient(e)?,
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Commits the positions of every assigned partition (the offsets after
    /// the records `poll` handed out), and waits until they are durable.
    /// `Ok(false)`: the coordinator refused them because a rebalance fenced
    /// this member; it rejoins on the next `poll`, and the records handed
    /// out since the last commit will be delivered again.
    pub fn commit(&mut self) -> ClientResult<bool> {
        let pending: Vec<(TopicPartition, i64)> = self
            .positions
            .iter()
            .filter(|(tp, &at)| self.committed.get(*tp) != Some(&at))
            .map(|(tp, &at)| (tp.clone(), at))
            .collect();
        self.last_commit = Instant::now();
        if pending.is_empty() {
            return Ok(true);
        }
        let (coordinator, member_id, generation) = {
            let m = lock(&self.membership);
            match (&m.coordinator, m.joined) {
                (Some(c), true) => (c.clone(), m.member_id.clone(), m.generation),
                _ => return Ok(false),
            }
        };
        match self.client.commit_offsets(
            &coordinator,
            &self.group,
            &member_id,
            generation,
            &pending,
        ) {
            Ok(()) => {
                self.committed.extend(pending);
                Ok(true)
            }
            Err(e) if is_fenced(&e) => {
                let mut m = lock(&self.membership);
                if m.generation == generation && m.member_id == member_id {
                    m.rejoin = worse(m.rejoin, e.code());
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Commits the positions, leaves the group (its partitions move at
    /// once) and stops the heartbeat thread.
    pub fn close(mut self) -> ClientResult<()> {
        let committed = self.commit();
        let (coordinator, member_id, joined) = {
            let mut m = lock(&self.membership);
            let joined = m.joined;
            m.joined = false;
            (m.coordinator.clone(), m.member_id.clone(), joined)
        };
        self.stop_heartbeat();
        let left = match coordinator {
            Some(c) if joined || !member_id.is_empty() => {
                match self.client.leave_group(&c, &self.group, &member_id) {
                    Err(e) if e.code() == Some(ErrorCode::UnknownMember) => Ok(()),
                    other => other,
                }
            }
            _ => Ok(()),
        };
        committed?;
        left
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            // The thread only ends by itself; a panic in it is not ours.
            let _ = h.join();
        }
    }

    /// How long one fetch slice of `poll` lasts: short enough that a rebalance
    /// the heartbeat thread reports is acted on well within the session.
    fn poll_slice(&self) -> Duration {
        let sixth = Duration::from_millis(u64::from(self.config.session_timeout_ms / 6));
        sixth.clamp(Duration::from_millis(10), POLL_SLICE_MAX)
    }

    /// A failure of the coordinator or of fetching: connection-level ones
    /// are retried (`Ok`) until `coordinator_retry_ms` has passed.
    fn transient(&mut self, e: ClientError) -> ClientResult<()> {
        if !e.is_retriable() {
            return Err(e);
        }
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_millis(self.config.coordinator_retry_ms) {
            self.failing_since = None;
            return Err(e);
        }
        Ok(())
    }

    /// Commits if the interval has passed; `Ok(true)`: the commit was
    /// refused because the member was fenced.
    fn maybe_auto_commit(&mut self) -> ClientResult<bool> {
        let Some(interval) = self.config.auto_commit_interval_ms else {
            return Ok(false);
        };
        if self.last_commit.elapsed() < Duration::from_millis(interval) {
            return Ok(false);
        }
        match self.commit() {
            Ok(done) => Ok(!done),
            // The next interval tries again.
            Err(e) => self.transient(e).map(|()| false),
        }
    }

    /// Hands out up to `max` buffered records, advancing the positions.
    fn hand_out(&mut self, max: usize) -> Vec<ConsumedRecord> {
        let n = max.min(self.buffered.len());
        let out: Vec<ConsumedRecord> = self.buffered.drain(..n).collect();
        for r in &out {
            let at = self
                .positions
                .entry((r.topic.to_string(), r.partition))
                .or_insert(r.offset + 1);
            debug_assert!(r.offset >= *at - 1, "records of a partition go forward");
            *at = r.offset + 1;
        }
        out
    }

    /// Commits what can still be committed, joins the next generation and
    /// takes up its partitions from their committed offsets. `reason`:
    /// what the heartbeat (or a commit) was answered; `ErrorCode::None`
    /// when the member is not in a generation (first join, or a join that
    /// failed and is tried again).
    fn rejoin(&mut self, reason: ErrorCode) -> ClientResult<()> {
        let was_joined = lock(&self.membership).joined;
        if was_joined
            && !matches!(
                reason,
                ErrorCode::IllegalGeneration | ErrorCode::UnknownMember
            )
        {
            // Revocation: the generation is still current while the group
            // rebalances, so the next owner starts where this one stopped.
            match self.commit() {
                Ok(_) => {}
                Err(e) if e.is_retriable() => {}
                Err(e) => return Err(e),
            }
        }
        let member_id = {
            let mut m = lock(&self.membership);
            m.joined = false;
            m.rejoin = None;
            if reason == ErrorCode::UnknownMember {
                m.member_id.clear();
            }
            m.member_id.clone()
        };
        self.drop_assignment();
        let coordinator = self.client.find_coordinator(&self.group)?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let joined = match self.client.join_group(
            &coordinator,
            &self.group,
            &member_id,
            &topics,
            self.config.session_timeout_ms,
        ) {
            Err(e) if e.code() == Some(ErrorCode::UnknownMember) && !member_id.is_empty() => {
                // Removed meanwhile (session expired, broker restarted).
                lock(&self.membership).member_id.clear();
                self.client.join_group(
                    &coordinator,
                    &self.group,
                    "",
                    &topics,
                    self.config.session_timeout_ms,
                )?
            }
            other => other?,
        };
        {
            let mut m = lock(&self.membership);
            m.coordinator = Some(coordinator.clone());
            m.member_id = joined.member_id.clone();
            m.generation = joined.generation;
        }
        let committed = self
            .client
            .fetch_offsets(&coordinator, &self.group, &joined.assignment)?;
        let reset = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => StartOffset::Earliest,
            AutoOffsetReset::Latest => StartOffset::Latest,
        };
        for tp in &joined.assignment {
            let at = committed
                .iter()
                .find(|c| c.topic == tp.0 && c.partition == tp.1 && c.offset >= 0)
                .map(|c| c.offset);
            let start = at.map_or(reset, StartOffset::Offset);
            self.consumer.assign(&tp.0, tp.1, start)?;
            let position = self.consumer.position(&tp.0, tp.1).unwrap_or(0);
            self.positions.insert(tp.clone(), position);
            if let Some(at) = at {
                self.committed.insert(tp.clone(), at);
            }
        }
        self.assignment = joined.assignment;
        self.last_commit = Instant::now();
        self.failing_since = None;
        lock(&self.membership).joined = true;
        Ok(())
    }

    /// Forgets the current generation's partitions and what was fetched:
    /// every partition the fetcher has, which after a rejoin that failed
    /// half-way (the join answered, then a fetch of the committed offsets
    /// or an assign failed) includes partitions `assignment` never got.
    fn drop_assignment(&mut self) {
        self.assignment.clear();
        for (t, p) in self.consumer.assignment() {
            self.consumer.unassign(&t, p);
        }
        self.positions.clear();
        self.committed.clear();
        self.buffered.clear();
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Like a crash: no commit, no leave. The thread sees the channel
        // close and ends; it is not waited for.
        drop(self.stop.take());
    }
}

/// Of two reasons to rejoin, the one that says more: UnknownMember (join
/// as a new member) over the others.
fn worse(known: Option<ErrorCode>, new: Option<ErrorCode>) -> Option<ErrorCode> {
    match (known, new) {
        (_, Some(ErrorCode::UnknownMember)) | (None, _) => new,
        _ => known,
    }
}

/// One heartbeat of the current membership; a fencing answer for the
/// generation it was sent in tells the consumer to rejoin. Connection
/// failures are left to the next heartbeat (the pool reconnects), and a
/// coordinator that lost the member answers UnknownMember then.
fn heartbeat_once(client: &Client, membership: &Mutex<Membership>, group: &str) {
    let (coordinator, member_id, generation) = {
        let m = lock(membership);
        // Heartbeats go on while a rejoin is due: they keep the session
        // alive until the consumer's thread gets to it.
        match (&m.coordinator, m.joined) {
            (Some(c), true) => (c.clone(), m.member_id.clone(), m.generation),
            _ => return,
        }
    };
    if let Err(e) = client.heartbeat(&coordinator, group, &member_id, generation) {
        if is_fenced(&e) {
            let mut m = lock(membership);
            if m.joined && m.generation == generation && m.member_id == member_id {
                m.rejoin = worse(m.rejoin, e.code());
            }
        }
    }
}
