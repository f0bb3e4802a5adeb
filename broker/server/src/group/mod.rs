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
    /// A generation is formed and every member knows its partitions.
    Stable,
}

impl Phase {
    /// The name shown by ListGroups and DescribeGroup.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Rebalancing { .. } => "Rebalancing",
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
        }
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
        let id = match member_id.filter(|m| !m.is_empty()) {
            Some(id) if self.members.contains_key(id) => id.to_owned(),
            Some(_) => return Err(GroupError::UnknownMember),
            None => new_member_id(&self.name),
        };
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let changed = match self.members.get(&id) {
            Some(m) => m.topics != topics,
            None => true,
        };
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                topics,
                session_timeout,
                last_seen: now,
                rejoined: true,
                answer: None,
            },
        );
        // A rejoin during a rebalance just counts; anything else (a new
        // member, a changed subscription, a rejoin of a stable member that
        // lost track) starts one.
        if changed || !matches!(self.phase, Phase::Rebalancing { .. }) {
            self.start_rebalance(now, Some(&id));
        }
        self.try_complete(now, counts);
        Ok(id)
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
        // A member waiting on its join cannot heartbeat: the rebalance
        // deadline, not its session, bounds its wait.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !(rebalancing && m.rejoined))
            .filter(|m| now.saturating_duration_since(m.last_seen) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
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
            .map(|m| m.session_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
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
        self.generation += 1;
        self.assigned_counts = self.subscription_counts(counts);
        self.assignment = range_assign(&self.members, &self.assigned_counts);
        self.phase = Phase::Stable;
        let members = self.members.len() as u32;
        for m in self.members.values_mut() {
            // Answering the joins is contact: sessions run from now.
            m.last_seen = now;
            m.answer = Some(JoinAnswer {
                generation: self.generation,
                partitions: self.assignment.get(&m.id).cloned().unwrap_or_default(),
                members,
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
