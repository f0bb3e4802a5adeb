//! Consumer groups: the coordinator's state machine for one group, with no
//! I/O. Members, generations, the range assignment, and the fencing rules
//! that decide whether a heartbeat or an offset commit is accepted. The
//! server (`service/groups.rs`) feeds it requests and the clock, persists
//! the commits it accepts, and wakes joins when a generation forms.
//!
//! The protocol (Kafka's "eager" rebalance, with the assignment computed by
//! the coordinator):
//! - A join from a new member, a leave, an expired session, or a change in
//!   the partition count of a subscribed topic starts a rebalance: the group
//!   becomes `Rebalancing`, every member's heartbeat answers
//!   RebalanceInProgress, and each member commits what it consumed (commits
//!   of the current generation are still accepted) and joins again.
//! - Once every member has rejoined, or the rebalance deadline (the longest
//!   session timeout) passed and the laggards were removed, the generation
//!   is bumped, partitions are assigned by range, and every pending join is
//!   answered with its member's partitions. Each answer is fixed when the
//!   generation forms: if the next rebalance starts before a join task has
//!   sent it, the member still gets it, then learns of the rebalance from
//!   its heartbeat and rejoins (blocked in its join, it could not before).
//! - A commit is accepted only from a current member, in the current
//!   generation, for partitions assigned to it. A member fenced by a
//!   rebalance can therefore never overwrite the new owner's progress: the
//!   ownership race the 2011 paper left to ZooKeeper timing is closed.
//!
//! The same machine runs Apache Kafka's classic group protocol (a group
//! whose members joined with a `protocol_type`, see [`ClassicJoin`]), where
//! the assignment is computed by the group's LEADER, a client:
//! - Each member joins with its protocols (assignor names, each with opaque
//!   metadata, in order of preference). When the generation forms, the
//!   coordinator picks the protocol every member supports that most members
//!   prefer, keeps the leader if it is still a member (else takes the
//!   smallest id), and answers the leader's join with every member's
//!   metadata for that protocol. The group is then `AwaitingSync`.
//! - The leader's SyncGroup carries an opaque assignment per member; the
//!   coordinator stores it, the group becomes `Stable`, and every member's
//!   SyncGroup is answered with its own bytes. The bytes are never
//!   interpreted, so any client assignor (range, roundrobin,
//!   cooperative-sticky) works. Members that have not synced when the
//!   rebalance timeout passes (a leader that died) are removed and the
//!   group rebalances again.
//! - Heartbeats are answered while `AwaitingSync`; commits are checked
//!   against member and generation only (the client owns the assignment),
//!   and a "simple" commit (generation -1, no member) is accepted for a
//!   group with no members, as Kafka does.
//! - A new member may be asked to join again with an id handed out first
//!   ([`Group::pending_member`], Kafka's MEMBER_ID_REQUIRED).
//!
//! Initial rebalance delay (Kafka's `group.initial.rebalance.delay.ms`): when
//! a group with no members gets its first one, the first generation forms
//! no sooner than [`Group::initial_delay`] later, extended by another delay
//! for each new member that joins meanwhile, but never past the rebalance
//! timeout: consumers started together share the partitions from the first
//! generation instead of one taking all and then giving them up.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No members.
    Empty,
    /// Waiting for members to rejoin until the deadline.
    Rebalancing {
        /// When members that have not rejoined are removed.
        deadline: Instant,
    },
    /// Classic protocol only: the generation formed and the leader is
    /// computing the assignment (Kafka's CompletingRebalance).
    AwaitingSync {
        /// When members that have not sent their SyncGroup are removed.
        deadline: Instant,
    },
    /// A generation is formed and every member knows its partitions.
    Stable,
}

impl Phase {
    /// The name shown by ListGroups and DescribeGroup.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Rebalancing { .. } => "Rebalancing",
            Phase::AwaitingSync { .. } => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id, assigned by the coordinator at its first join.
    pub id: String,
    /// The topics it consumes, sorted.
    pub topics: Vec<String>,
    /// It is removed when nothing is heard from it for this long.
    pub session_timeout: Duration,
    /// How long a rebalance waits for it to rejoin (the session timeout for
    /// a native member).
    pub rebalance_timeout: Duration,
    /// Classic protocol: its protocols (name, opaque metadata), in order
    /// of preference; empty for a native member.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// The client's id and host, as DescribeGroups shows them.
    pub client: (String, String),
    /// Classic protocol: it has sent its SyncGroup for the generation
    /// being completed.
    pub synced: bool,
    /// Classic protocol: its assignment (opaque bytes from the leader) and
    /// the generation it is for.
    pub sync: Option<(i32, Vec<u8>)>,
    /// When it was last heard from (join, heartbeat, commit).
    pub last_seen: Instant,
    /// Whether it has joined the generation being formed.
    pub rejoined: bool,
    /// The answer to its pending join, set when a generation including it
    /// forms and kept until it joins again: a rebalance that starts before
    /// the join is answered does not take it back.
    pub answer: Option<JoinAnswer>,
}

/// A partition of a topic.
pub type TopicPartition = (String, u32);

/// A classic member's protocols: assignor name and opaque metadata, in
/// order of preference.
pub type Protocols = Vec<(String, Vec<u8>)>;

/// Why a group request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// The member is not in the group (never joined, left, or expired).
    UnknownMember,
    /// The request's generation is not the group's current one.
    IllegalGeneration {
        /// What the request carried.
        given: i32,
        /// The group's generation.
        current: i32,
    },
    /// A rebalance is in progress: commit, then rejoin.
    RebalanceInProgress,
    /// The member does not own this partition in this generation.
    NotAssigned(TopicPartition),
    /// The member's protocol type, or every protocol it supports, differs
    /// from the group's (or a native member joins a classic group, or the
    /// other way round).
    InconsistentProtocol,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::UnknownMember => {
                write!(
                    f,
                    "unknown member: its session expired or it left; join again"
                )
            }
            GroupError::IllegalGeneration { given, current } => write!(
                f,
                "generation {given} is not the group's current generation {current}: rejoin"
            ),
            GroupError::RebalanceInProgress => {
                write!(f, "the group is rebalancing: commit, then rejoin")
            }
            GroupError::NotAssigned((t, p)) => write!(
                f,
                "partition {t}/{p} is not assigned to this member in this generation"
            ),
            GroupError::InconsistentProtocol => write!(
                f,
                "the member's protocol type or protocols are not the group's: no protocol \
                 every member supports (or a native client in a Kafka group, or the reverse)"
            ),
        }
    }
}

/// A member id never handed out before, by this process or an earlier
/// run: the group's name, this process's incarnation (its start time in
/// nanoseconds, hex) and a count kept for the whole process (ten digits). Generations
/// start again from 1 after a restart, so an id reused across restarts (or
/// by a group emptied and created again) could give a zombie member, one
/// that has not heard of the restart, the id and generation of a live one:
/// its commits would pass the fencing and its client could not tell the
/// memberships apart. Kafka's member ids are a client id plus a UUID for
/// the same reason.
fn new_member_id(group: &str) -> String {
    static INCARNATION: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let incarnation = *INCARNATION.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    // Zero-padded so that ids sort in the order they were given (the range
    // assignor orders members by id).
    format!(
        "{group}-{incarnation:x}-{:010}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The coordinator's view of one group.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The current generation: 0 before the first one forms. Bumped when a
    /// rebalance completes and when the last member goes.
    pub generation: i32,
    /// Where the group is.
    pub phase: Phase,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Each member's partitions in the current generation.
    pub assignment: BTreeMap<String, Vec<TopicPartition>>,
    /// Partition counts of the subscribed topics when the current
    /// generation formed: a change starts a rebalance.
    pub assigned_counts: BTreeMap<String, u32>,
    /// Committed offsets (the next offset to consume).
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Classic protocol: the members' protocol type ("consumer"), set by
    /// the first member and kept while the group has members; None for a
    /// native group.
    pub protocol_type: Option<String>,
    /// Classic protocol: the protocol chosen for the current generation.
    pub protocol: Option<String>,
    /// Classic protocol: the member that computes the assignment.
    pub leader: Option<String>,
    /// Kafka's `group.initial.rebalance.delay.ms` (zero: none).
    pub initial_delay: Duration,
    /// While the first generation waits out the initial delay: no sooner
    /// than the first instant, never later than the second.
    pub delayed: Option<(Instant, Instant)>,
    /// Member ids handed out by [`Group::pending_member`], not joined yet,
    /// with when they lapse.
    pub pending: BTreeMap<String, Instant>,
}

/// What a classic (Kafka protocol) member joins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoin {
    /// "consumer" for Kafka's consumers (any non-empty name).
    pub protocol_type: String,
    /// Its protocols: assignor name and opaque metadata, by preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Its session timeout.
    pub session_timeout: Duration,
    /// How long a rebalance waits for it.
    pub rebalance_timeout: Duration,
    /// Client id and host, for DescribeGroups.
    pub client: (String, String),
}

impl Group {
    /// A group with no members and nothing committed.
    pub fn new(name: &str) -> Group {
        Group {
            name: name.to_owned(),
            generation: 0,
            phase: Phase::Empty,
            members: BTreeMap::new(),
            assignment: BTreeMap::new(),
            assigned_counts: BTreeMap::new(),
            committed: BTreeMap::new(),
            protocol_type: None,
            protocol: None,
            leader: None,
            initial_delay: Duration::ZERO,
            delayed: None,
            pending: BTreeMap::new(),
        }
    }

    /// The same group with an initial rebalance delay.
    pub fn with_initial_delay(mut self, delay: Duration) -> Group {
        self.initial_delay = delay;
        self
    }

    /// Whether its members speak Kafka's classic protocol.
    pub fn is_classic(&self) -> bool {
        self.protocol_type.is_some()
    }

    /// A member id for a new member that must join again with it (Kafka's
    /// MEMBER_ID_REQUIRED, JoinGroup v4+); it lapses after `session_timeout`.
    pub fn pending_member(&mut self, session_timeout: Duration, now: Instant) -> String {
        let id = new_member_id(&self.name);
        self.pending.insert(id.clone(), now + session_timeout);
        id
    }

    /// A member joins (a new one with `member_id` None or empty). Returns
    /// its id; the join is answered once [`Group::join_answer`] has one.
    /// `counts` gives a topic's partition count (0: no such topic).
    pub fn join(
        &mut self,
        member_id: Option<&str>,
        topics: &[&str],
        session_timeout: Duration,
        now: Instant,
        counts: &dyn Fn(&str) -> u32,
    ) -> Result<String, GroupError> {
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let joining = Joining {
            topics,
            classic: None,
            session_timeout,
            rebalance_timeout: session_timeout,
            client: (String::new(), String::new()),
        };
        self.join_member(member_id, joining, now, counts)
    }

    /// A classic (Kafka protocol) member joins: as [`Group::join`], with
    /// its protocols instead of topics.
    pub fn join_classic(
        &mut self,
        member_id: Option<&str>,
        join: ClassicJoin,
        now: Instant,
        counts: &dyn Fn(&str) -> u32,
    ) -> Result<String, GroupError> {
        let joining = Joining {
            topics: Vec::new(),
            session_timeout: join.session_timeout,
            rebalance_timeout: join.rebalance_timeout,
            client: join.client,
            classic: Some((join.protocol_type, join.protocols)),
        };
        self.join_member(member_id, joining, now, counts)
    }

    fn join_member(
        &mut self,
        member_id: Option<&str>,
        joining: Joining,
        now: Instant,
        counts: &dyn Fn(&str) -> u32,
    ) -> Result<String, GroupError> {
        let (id, new) = match member_id.filter(|m| !m.is_empty()) {
            Some(id) if self.members.contains_key(id) => (id.to_owned(), false),
            Some(id) if self.pending.contains_key(id) => (id.to_owned(), true),
            Some(_) => return Err(GroupError::UnknownMember),
            None => (new_member_id(&self.name), true),
        };
        self.check_protocols(&id, joining.classic.as_ref())?;
        self.pending.remove(&id);
        let (protocol_type, protocols) = match joining.classic {
            Some((t, p)) => (Some(t), p),
            None => (None, Vec::new()),
        };
        let changed = match self.members.get(&id) {
            Some(m) => m.topics != joining.topics || m.protocols != protocols,
            None => true,
        };
        if self.members.keys().all(|k| *k == id) {
            self.protocol_type = protocol_type;
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                topics: joining.topics,
                session_timeout: joining.session_timeout,
                rebalance_timeout: joining.rebalance_timeout,
                protocols,
                client: joining.client,
                synced: false,
                sync: None,
                last_seen: now,
                rejoined: true,
                answer: None,
            },
        );
        // A new member during the initial delay extends it (up to the
        // rebalance timeout).
        if let Some((until, limit)) = &mut self.delayed {
            if new {
                *until = (now + self.initial_delay).min(*limit).max(*until);
            }
        }
        // A rejoin during a rebalance just counts; anything else (a new
        // member, a changed subscription, a rejoin of a stable member that
        // lost track) starts one.
        if changed || !matches!(self.phase, Phase::Rebalancing { .. }) {
            self.start_rebalance(now, Some(&id));
        }
        self.try_complete(now, counts);
        Ok(id)
    }

    /// Whether a member joining with `classic` (None: native) fits the
    /// group's other members: the same protocol type, and a protocol they
    /// all support.
    fn check_protocols(
        &self,
        id: &str,
        classic: Option<&(String, Protocols)>,
    ) -> Result<(), GroupError> {
        let others = || self.members.values().filter(|m| m.id != id);
        if let Some((t, protocols)) = classic {
            if t.is_empty() || protocols.is_empty() {
                return Err(GroupError::InconsistentProtocol);
            }
        }
        if others().next().is_none() {
            return Ok(());
        }
        match (classic, &self.protocol_type) {
            (None, None) => Ok(()),
            (Some((t, protocols)), Some(group_type)) if t == group_type => {
                let common = protocols
                    .iter()
                    .any(|(name, _)| others().all(|m| m.protocols.iter().any(|(n, _)| n == name)));
                if common {
                    Ok(())
                } else {
                    Err(GroupError::InconsistentProtocol)
                }
            }
            _ => Err(GroupError::InconsistentProtocol),
        }
    }

    /// The answer to `member_id`'s pending join, once the generation it
    /// joined for has formed: (generation, its partitions, member count).
    /// None while the rebalance goes on; Err if the member was removed.
    /// If the next rebalance has started meanwhile, the answer is still the
    /// generation that formed: the member learns of the rebalance from its
    /// heartbeat and rejoins (it could not while its join was pending).
    pub fn join_answer(&self, member_id: &str) -> Result<Option<JoinAnswer>, GroupError> {
        match self.members.get(member_id) {
            Some(member) => Ok(member.answer.clone()),
            None => Err(GroupError::UnknownMember),
        }
    }

    /// A heartbeat from `member_id` in `generation`.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen = now;
        if matches!(self.phase, Phase::Rebalancing { .. }) {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                given: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    /// `member_id` leaves: its partitions move at once.
    pub fn leave(
        &mut self,
        member_id: &str,
        now: Instant,
        counts: &dyn Fn(&str) -> u32,
    ) -> Result<(), GroupError> {
        self.members
            .remove(member_id)
            .ok_or(GroupError::UnknownMember)?;
        self.start_rebalance(now, None);
        self.try_complete(now, counts);
        Ok(())
    }

    /// Checks a commit: from a current member, in the current generation,
    /// for partitions it owns. Does not apply it (the caller persists it
    /// first, then calls [`Group::apply_commit`]).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        partitions: &[TopicPartition],
        now: Instant,
    ) -> Result<(), GroupError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen = now;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                given: generation,
                current: self.generation,
            });
        }
        let owned = self.assignment.get(member_id);
        for tp in partitions {
            if !owned.is_some_and(|o| o.contains(tp)) {
                return Err(GroupError::NotAssigned(tp.clone()));
            }
        }
        Ok(())
    }

    /// Classic protocol: `member_id`'s SyncGroup for `generation`; the
    /// leader's carries every member's assignment. Answered once
    /// [`Group::sync_answer`] has one.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: &[(String, Vec<u8>)],
        now: Instant,
    ) -> Result<(), GroupError> {
        if !self.is_classic() {
            return Err(GroupError::InconsistentProtocol);
        }
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen = now;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                given: generation,
                current: self.generation,
            });
        }
        match self.phase {
            Phase::Rebalancing { .. } => return Err(GroupError::RebalanceInProgress),
            Phase::AwaitingSync { .. } => member.synced = true,
            Phase::Stable | Phase::Empty => return Ok(()),
        }
        if self.leader.as_deref() == Some(member_id) {
            for m in self.members.values_mut() {
                let bytes = assignments
                    .iter()
                    .find(|(id, _)| *id == m.id)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                m.sync = Some((generation, bytes));
            }
            self.phase = Phase::Stable;
        }
        Ok(())
    }

    /// Classic protocol: the answer to `member_id`'s pending SyncGroup of
    /// `generation`: its assignment once the leader sent it; None while the
    /// leader has not; RebalanceInProgress if the group moved on first.
    pub fn sync_answer(
        &self,
        member_id: &str,
        generation: i32,
    ) -> Result<Option<Vec<u8>>, GroupError> {
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMember)?;
        match &member.sync {
            Some((g, bytes)) if *g == generation => Ok(Some(bytes.clone())),
            _ if generation != self.generation => Err(GroupError::RebalanceInProgress),
            _ if matches!(self.phase, Phase::Rebalancing { .. }) => {
                Err(GroupError::RebalanceInProgress)
            }
            _ => Ok(None),
        }
    }

    /// Checks a commit by Kafka's rules: a simple commit (generation < 0,
    /// no member id) only while the group has no members; otherwise from
    /// a current member in the current generation, not while the leader
    /// is computing the assignment (commits of the generation ending are
    /// accepted during a rebalance). Which partitions is the client's
    /// business: its leader assigned them.
    pub fn check_classic_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMember)
            };
        }
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMember)?;
        member.last_seen = now;
        if matches!(self.phase, Phase::AwaitingSync { .. }) {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                given: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    /// Records committed offsets (after they were made durable, or when
    /// replaying them at start).
    pub fn apply_commit(&mut self, offsets: impl IntoIterator<Item = (TopicPartition, i64)>) {
        self.committed.extend(offsets);
    }

    /// Advances time: removes members whose session expired, starts a
    /// rebalance when a subscribed topic's partition count changed, and
    /// completes a rebalance whose deadline passed. Returns whether
    /// anything changed (pending joins may have answers).
    pub fn tick(&mut self, now: Instant, counts: &dyn Fn(&str) -> u32) -> bool {
        let before = (self.generation, self.phase, self.members.len());
        let rebalancing = matches!(self.phase, Phase::Rebalancing { .. });
        let awaiting_sync = matches!(self.phase, Phase::AwaitingSync { .. });
        self.pending.retain(|_, lapses| now < *lapses);
        // A member waiting on its join (or its SyncGroup) cannot heartbeat:
        // the rebalance deadline, not its session, bounds its wait.
        let mut expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !(rebalancing && m.rejoined || awaiting_sync && m.synced))
            .filter(|m| now.saturating_duration_since(m.last_seen) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        if let Phase::AwaitingSync { deadline } = self.phase {
            if now >= deadline {
                expired.extend(
                    self.members
                        .values()
                        .filter(|m| !m.synced)
                        .map(|m| m.id.clone()),
                );
            }
        }
        for id in &expired {
            self.members.remove(id);
        }
        let resized =
            self.phase == Phase::Stable && self.subscription_counts(counts) != self.assigned_counts;
        if !expired.is_empty() || resized {
            self.start_rebalance(now, None);
        }
        if let Phase::Rebalancing { deadline } = self.phase {
            if now >= deadline {
                self.members.retain(|_, m| m.rejoined);
            }
        }
        self.try_complete(now, counts);
        before != (self.generation, self.phase, self.members.len())
    }

    /// Starts a rebalance: every member but `joined` must rejoin.
    fn start_rebalance(&mut self, now: Instant, joined: Option<&str>) {
        if self.members.is_empty() {
            if self.phase != Phase::Empty {
                self.generation += 1;
                self.phase = Phase::Empty;
                self.assignment.clear();
                self.assigned_counts.clear();
                self.protocol_type = None;
                self.protocol = None;
                self.leader = None;
                self.delayed = None;
            }
            return;
        }
        if !matches!(self.phase, Phase::Rebalancing { .. }) {
            for m in self.members.values_mut() {
                m.rejoined = Some(m.id.as_str()) == joined;
            }
        }
        let wait = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        if self.phase == Phase::Empty && !self.initial_delay.is_zero() {
            let limit = now + wait;
            self.delayed = Some(((now + self.initial_delay).min(limit), limit));
        }
        self.phase = Phase::Rebalancing {
            deadline: now + wait,
        };
    }

    /// Forms the next generation if every member has rejoined.
    fn try_complete(&mut self, now: Instant, counts: &dyn Fn(&str) -> u32) {
        if !matches!(self.phase, Phase::Rebalancing { .. }) {
            return;
        }
        if self.members.is_empty() {
            self.start_rebalance(now, None);
            return;
        }
        if !self.members.values().all(|m| m.rejoined) {
            return;
        }
        if let Some((until, _)) = self.delayed {
            if now < until {
                return;
            }
        }
        self.delayed = None;
        self.generation += 1;
        self.assigned_counts = self.subscription_counts(counts);
        self.assignment = range_assign(&self.members, &self.assigned_counts);
        let members = self.members.len() as u32;
        let mut metadata = Vec::new();
        if self.is_classic() {
            self.protocol = select_protocol(&self.members);
            if !self
                .leader
                .as_ref()
                .is_some_and(|l| self.members.contains_key(l))
            {
                self.leader = self.members.keys().next().cloned();
            }
            let chosen = self.protocol.as_deref().unwrap_or_default();
            metadata = self
                .members
                .values()
                .map(|m| {
                    let bytes = m.protocols.iter().find(|(n, _)| n == chosen);
                    (
                        m.id.clone(),
                        bytes.map(|(_, b)| b.clone()).unwrap_or_default(),
                    )
                })
                .collect();
            let wait = self.members.values().map(|m| m.rebalance_timeout).max();
            self.phase = Phase::AwaitingSync {
                deadline: now + wait.unwrap_or(Duration::ZERO),
            };
        } else {
            self.phase = Phase::Stable;
        }
        for m in self.members.values_mut() {
            // Answering the joins is contact: sessions run from now.
            m.last_seen = now;
            m.synced = false;
            let leads = self.leader.as_deref() == Some(m.id.as_str());
            m.answer = Some(JoinAnswer {
                generation: self.generation,
                partitions: self.assignment.get(&m.id).cloned().unwrap_or_default(),
                members,
                protocol: self.protocol.clone(),
                leader: self.leader.clone().unwrap_or_default(),
                metadata: if leads { metadata.clone() } else { Vec::new() },
            });
        }
    }

    fn subscription_counts(&self, counts: &dyn Fn(&str) -> u32) -> BTreeMap<String, u32> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|t| (t.clone(), counts(t)))
            .collect()
    }
}

/// What a join is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    /// The generation formed.
    pub generation: i32,
    /// The member's partitions, sorted.
    pub partitions: Vec<TopicPartition>,
    /// Members in the generation.
    pub members: u32,
    /// Classic protocol: the protocol chosen.
    pub protocol: Option<String>,
    /// Classic protocol: the leader's id ("" in a native group).
    pub leader: String,
    /// Classic protocol, the leader only: every member's metadata for the
    /// chosen protocol, by member id.
    pub metadata: Vec<(String, Vec<u8>)>,
}

/// What a joining member brings, native or classic.
struct Joining {
    topics: Vec<String>,
    classic: Option<(String, Protocols)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    client: (String, String),
}

/// Kafka's protocol selection: among the protocols every member supports,
/// the one most members list first (of those); ties go to the name that
/// sorts first. None if the members share none (joins are refused before
/// that can happen).
pub fn select_protocol(members: &BTreeMap<String, Member>) -> Option<String> {
    let first = members.values().next()?;
    let candidates: Vec<&str> = first
        .protocols
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| {
            members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == n))
        })
        .collect();
    let mut votes: BTreeMap<&str, usize> = candidates.iter().map(|c| (*c, 0)).collect();
    for m in members.values() {
        if let Some((n, _)) = m
            .protocols
            .iter()
            .find(|(n, _)| candidates.contains(&n.as_str()))
        {
            *votes.entry(n.as_str()).or_default() += 1;
        }
    }
    let best = votes.values().copied().max()?;
    votes
        .into_iter()
        .find(|(_, v)| *v == best)
        .map(|(n, _)| n.to_owned())
}

/// The range assignment (Kafka's RangeAssignor, the 2011 paper's
/// algorithm): for each topic, its subscribers sorted by id split the
/// partitions into contiguous ranges; the first `partitions % members`
/// subscribers get one more.
pub fn range_assign(
    members: &BTreeMap<String, Member>,
    counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|id| (id.clone(), Vec::new())).collect();
    for (topic, &n) in counts {
        let subscribers: Vec<&String> = members
            .values()
            .filter(|m| m.topics.iter().any(|t| t == topic))
            .map(|m| &m.id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let k = subscribers.len() as u32;
        let (each, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, id) in subscribers.into_iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            if let Some(list) = out.get_mut(id) {
                list.extend((next..next + take).map(|p| (topic.clone(), p)));
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests;
