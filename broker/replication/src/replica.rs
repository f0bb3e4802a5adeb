//! One broker's replica of one partition, as a pure state machine: the
//! leader's side (produce, serving fetches, the high watermark, ISR
//! changes proposed to the controller) and the follower's (fetching,
//! truncating by diverging epoch, appending keeping offsets and epochs).
//!
//! Driven by [`Replica::handle`] with an [`Event`] and the time it happens
//! at; answers with [`Action`]s for the driver to carry out in order. No
//! I/O, no clock, no randomness.
//!
//! Follows kafka-tlaplus `kafka_data_replication/kraft/kip-966`:
//! - role transitions on a metadata update: `ReceiveMetadataUpdate`
//!   (`BecomeLeaderInNewEpoch`, `RemainLeader`, `BecomeFollowerInNewEpoch`,
//!   `WaitForLeaderChange`), `description/2_replication_algorithm.md`
//!   §2.10;
//! - serving a fetch, the diverging-epoch check and the high watermark:
//!   `ReceiveFetchRequest`, `kip_966_functions.tla` `GetCommitOffset`,
//!   `CanAdvanceHwm` (ISR >= MinISR, counted over the Maximal ISR), §2.7;
//! - the follower's side: `ReceiveFetchResponse`, `FindTruncatePoint`;
//! - ISR changes: `SendAlterPartitionRequest`, `FollowerIsCaughtUp`
//!   (HWM, Leader Epoch Start Offset, fetched in this epoch),
//!   `ReceiveAlterPartitionResponse`, `6_replication_correctness.md`
//!   §6.5.2-6.5.4;
//! - applied-HWM monotonicity for readers: §6.4.2.
//!
//! Deviations, each on purpose:
//! - A follower's fetch offset is its durable end: it fetches again only
//!   once what it appended is fsynced ([`Action::Sync`], [`Event::Durable`]),
//!   and the leader counts its own durable end, not its log end, in the
//!   high watermark. So every offset below the high watermark is durable on
//!   every member of the Maximal ISR, and a crash takes from a replica only
//!   what no one counted (see the crate header).
//! - A refused AlterPartition does not roll the Maximal ISR back: the
//!   Maximal ISR stays the committed ISR united with every ISR proposed
//!   from the same partition epoch, until a metadata update or an accepted
//!   answer with a newer partition epoch tells what the controller has. The
//!   TLA+ model sends each request once over a network that neither loses
//!   nor duplicates; here a request is retried when its answer is lost and
//!   may arrive twice, so a refusal of one copy says nothing of another,
//!   which may have been applied. Rolling back then let a leader count
//!   fewer replicas than the controller could elect: the simulator found
//!   it (leader-isolation seed 3935 in the suite's first 10,000 seeds: an
//!   expansion applied, its answer lost, the retry refused with
//!   FencedLeaderEpoch, the high watermark advanced without the added
//!   member, which was then elected without the committed tail).
//! - Fetches the leader cannot answer with data yet are parked (a long
//!   poll) and answered on the next append or after `fetch_max_wait_ms`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::epoch_cache::{truncation_point, EpochCache, EpochEnd, EpochEntry};
use crate::ids::{BrokerEpoch, BrokerId, LeaderEpoch, Millis, Offset, PartitionId, ProduceId};
use crate::limits::{MAX_FETCH_BATCHES, MAX_PENDING_PRODUCES};
use crate::message::{
    Acks, AlterPartitionRequest, AlterPartitionResponse, BatchMeta, FetchError, FetchRequest,
    FetchResponse, IsrMember, PartitionState, ProduceError, ProduceRequest,
};

/// A replica's settings.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This broker.
    pub broker: BrokerId,
    /// The partition.
    pub partition: PartitionId,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// Kafka's `replica.lag.time.max.ms`: an ISR member not caught up for
    /// longer is proposed out of the ISR.
    pub replica_lag_time_max_ms: u64,
    /// A follower's fetch unanswered for this long is sent again.
    pub fetch_timeout_ms: u64,
    /// How long the leader parks a fetch it has no data for.
    pub fetch_max_wait_ms: u64,
    /// A follower's pause after a refused fetch.
    pub fetch_backoff_ms: u64,
    /// An unanswered AlterPartition is sent again after this long; a
    /// refused one is not proposed again before it either.
    pub alter_partition_retry_ms: u64,
    /// A produce not answered within this long fails (`TimedOut`).
    pub produce_timeout_ms: u64,
    /// Test-only: a deliberate protocol flaw.
    #[cfg(any(test, feature = "sim"))]
    pub flaw: Option<crate::Flaw>,
}

impl ReplicaConfig {
    /// Kafka's defaults where it has them, scaled to the simulator's
    /// milliseconds elsewhere.
    pub fn new(broker: BrokerId, partition: PartitionId, min_insync_replicas: usize) -> Self {
        ReplicaConfig {
            broker,
            partition,
            min_insync_replicas,
            replica_lag_time_max_ms: 30_000,
            fetch_timeout_ms: 1_000,
            fetch_max_wait_ms: 500,
            fetch_backoff_ms: 100,
            alter_partition_retry_ms: 500,
            produce_timeout_ms: 30_000,
            #[cfg(any(test, feature = "sim"))]
            flaw: None,
        }
    }
}

/// Is `$flaw` switched on in `$config`? Always false outside tests and
/// the `sim` feature.
macro_rules! flawed {
    ($config:expr, $flaw:ident) => {{
        #[cfg(any(test, feature = "sim"))]
        let on = $config.flaw == Some(crate::Flaw::$flaw);
        #[cfg(not(any(test, feature = "sim")))]
        let on = false;
        on
    }};
}
pub(crate) use flawed;

/// What the driver recovered from disk for this replica: the log's end
/// after recovery (everything below it durable) and the epoch checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The recovered log's end; the log is durable up to it.
    pub log_end: Offset,
    /// The leader-epoch checkpoint as last written.
    pub epochs: Vec<EpochEntry>,
}

/// Why a replica cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// The epoch checkpoint breaks the cache's invariants.
    #[error("the leader-epoch checkpoint is corrupt")]
    CorruptEpochCheckpoint,
}

/// Something that happened to the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The partition's registration, from the metadata (any order, any
    /// number of times: older partition epochs are ignored).
    Metadata(PartitionState),
    /// A follower's fetch.
    Fetch(FetchRequest),
    /// The leader's answer to this replica's fetch, with its batches.
    FetchAnswer(FetchResponse),
    /// The controller's answer to this replica's AlterPartition.
    AlterPartitionAnswer(AlterPartitionResponse),
    /// A produce.
    Produce(ProduceRequest),
    /// The log is durable up to `end` (an fsync completed).
    Durable {
        /// The durable end.
        end: Offset,
    },
    /// The brokers that may not join an ISR now (fenced or shutting down,
    /// by the metadata; KIP-841): the leader proposes none of them.
    Ineligible(BTreeSet<BrokerId>),
    /// Time passed.
    Tick,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a fetch to the leader's broker.
    SendFetch {
        /// The leader's broker.
        to: BrokerId,
        /// The fetch.
        request: FetchRequest,
    },
    /// Answer a follower's fetch: read batches from `read_from` (at most
    /// [`MAX_FETCH_BATCHES`], whole batches, from the log as it is now) into
    /// `response.batches`, then send it.
    ServeFetch {
        /// The follower's broker.
        to: BrokerId,
        /// The answer, without its batches.
        response: FetchResponse,
        /// Where to read from; `None`: send no batches.
        read_from: Option<Offset>,
    },
    /// Send an AlterPartition to the controller.
    SendAlterPartition(AlterPartitionRequest),
    /// Append the produce's batch at `base_offset..=last_offset`, stamped
    /// with `epoch`.
    AppendAsLeader {
        /// The produce.
        produce: ProduceId,
        /// First offset.
        base_offset: Offset,
        /// Last offset.
        last_offset: Offset,
        /// Leader epoch to stamp.
        epoch: LeaderEpoch,
    },
    /// Append the batches of the fetch answer just handled, keeping their
    /// offsets and epochs (they are checked contiguous from the log end).
    AppendAsFollower {
        /// The batches.
        batches: Vec<BatchMeta>,
    },
    /// Truncate the log to `end` (exclusive), durably.
    TruncateTo {
        /// The new log end.
        end: Offset,
    },
    /// Make the log durable up to at least `up_to`; answer with
    /// [`Event::Durable`].
    Sync {
        /// The end to make durable.
        up_to: Offset,
    },
    /// Write the leader-epoch checkpoint (fsynced) before going on.
    WriteEpochCheckpoint {
        /// The whole cache.
        entries: Vec<EpochEntry>,
    },
    /// Answer a produce.
    ProduceAnswer {
        /// The produce.
        produce: ProduceId,
        /// Its base offset, or why not.
        result: Result<Offset, ProduceError>,
    },
    /// The high watermark moved (readers may be woken).
    HighWatermark {
        /// The new value.
        hw: Offset,
    },
}

/// The replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// Neither: no leader, not a replica, or no metadata yet.
    None,
    /// The leader.
    Leader,
    /// A follower of that broker.
    Follower(BrokerId),
}

/// What a reader may read from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderView {
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// Read below this.
    pub high_watermark: Offset,
}

/// Why a reader may not read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Not the leader.
    NotLeader,
    /// The reader knows a newer leader epoch than this replica.
    UnknownLeaderEpoch,
    /// A new leader whose high watermark has not yet reached its Leader
    /// Epoch Start Offset: it may be below the true one (§6.4.2).
    HighWatermarkNotYetKnown,
}

#[derive(Debug, Clone)]
struct FollowerProgress {
    /// Its last fetch offset in this leader epoch: durable there.
    fetch_offset: Offset,
    broker_epoch: BrokerEpoch,
    last_caught_up: Millis,
    /// The leader's log end and the time at its previous fetch (Kafka's
    /// `lastFetchLeaderLogEndOffset`, `lastFetchTimeMs`).
    leader_end_at_last_fetch: Offset,
    last_fetch: Millis,
}

#[derive(Debug, Clone)]
struct PendingProduce {
    id: ProduceId,
    base_offset: Offset,
    last_offset: Offset,
    acks: Acks,
    deadline: Millis,
}

#[derive(Debug, Clone)]
struct PendingAlter {
    request: AlterPartitionRequest,
    sent_at: Millis,
}

#[derive(Debug, Clone)]
struct Leadership {
    /// Leader Epoch Start Offset: the log end when this epoch began.
    leso: Offset,
    became_leader_at: Millis,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// The committed ISR united with every ISR proposed from its partition
    /// epoch (any of them may have been applied).
    maximal_isr: BTreeSet<BrokerId>,
    pending_alter: Option<PendingAlter>,
    alter_backoff_until: Millis,
    produces: VecDeque<PendingProduce>,
    /// Fetches with nothing to read yet, by follower, with their deadline.
    parked: BTreeMap<BrokerId, (FetchRequest, Millis)>,
}

#[derive(Debug, Clone)]
struct Following {
    leader: BrokerId,
    in_flight: Option<(u64, Millis)>,
    backoff_until: Millis,
}

#[derive(Debug, Clone)]
enum Role {
    None,
    Leader(Box<Leadership>),
    Follower(Following),
}

/// One replica of one partition.
#[derive(Debug, Clone)]
pub struct Replica {
    config: ReplicaConfig,
    broker_epoch: BrokerEpoch,
    log_end: Offset,
    durable_end: Offset,
    sync_requested: Offset,
    epochs: EpochCache,
    hw: Offset,
    state: Option<PartitionState>,
    role: Role,
    next_fetch_id: u64,
    /// Brokers the metadata says are fenced or shutting down.
    ineligible: BTreeSet<BrokerId>,
}

/// The high watermark a leader may move to (kafka-tlaplus
/// `GetCommitOffset` + `CanAdvanceHwm`): the smallest of its own durable
/// end and the fetch offsets of the other members counted (`None`: no
/// fetch in this epoch yet), if the committed ISR has at least
/// `min_insync_replicas` members; never below `current`.
pub fn next_high_watermark(
    current: Offset,
    leader_durable_end: Offset,
    committed_isr_len: usize,
    min_insync_replicas: usize,
    others: impl IntoIterator<Item = Option<Offset>>,
) -> Offset {
    if committed_isr_len < min_insync_replicas {
        return current;
    }
    let mut candidate = leader_durable_end;
    for fetch_offset in others {
        match fetch_offset {
            None => return current,
            Some(o) => candidate = candidate.min(o),
        }
    }
    candidate.max(current)
}

impl Replica {
    /// A replica over a recovered log, waiting for its first metadata.
    pub fn new(
        config: ReplicaConfig,
        broker_epoch: BrokerEpoch,
        recovered: Recovered,
    ) -> Result<Replica, RecoveryError> {
        let epochs = EpochCache::from_checkpoint(&recovered.epochs, recovered.log_end)
            .ok_or(RecoveryError::CorruptEpochCheckpoint)?;
        Ok(Replica {
            config,
            broker_epoch,
            log_end: recovered.log_end,
            durable_end: recovered.log_end,
            sync_requested: recovered.log_end,
            epochs,
            hw: Offset(0),
            state: None,
            role: Role::None,
            next_fetch_id: 1,
            ineligible: BTreeSet::new(),
        })
    }

    /// The log end as this replica has it (appended, durable or not).
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// The durable end.
    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }

    /// The local high watermark (a follower's may be stale).
    pub fn high_watermark(&self) -> Offset {
        self.hw
    }

    /// The leader-epoch cache.
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// The partition's registration as this replica last saw it.
    pub fn partition_state(&self) -> Option<&PartitionState> {
        self.state.as_ref()
    }

    /// The broker epoch this replica runs under.
    pub fn broker_epoch(&self) -> BrokerEpoch {
        self.broker_epoch
    }

    /// The role.
    pub fn role(&self) -> RoleKind {
        match &self.role {
            Role::None => RoleKind::None,
            Role::Leader(_) => RoleKind::Leader,
            Role::Follower(f) => RoleKind::Follower(f.leader),
        }
    }

    /// The leader epoch this replica knows.
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        self.state.as_ref().map(|s| s.leader_epoch)
    }

    /// While leader: the Maximal ISR the high watermark counts.
    pub fn maximal_isr(&self) -> Option<&BTreeSet<BrokerId>> {
        match &self.role {
            Role::Leader(l) => Some(&l.maximal_isr),
            _ => None,
        }
    }

    /// What a reader that knows `reader_epoch` may read here: only the
    /// leader serves reads, only below a high watermark known to be the
    /// true one (reached the Leader Epoch Start Offset, §6.4.2), and not to
    /// a reader that knows a newer epoch (KIP-320).
    pub fn reader_view(&self, reader_epoch: Option<LeaderEpoch>) -> Result<ReaderView, ReadError> {
        let (Role::Leader(l), Some(state)) = (&self.role, &self.state) else {
            return Err(ReadError::NotLeader);
        };
        if reader_epoch.is_some_and(|e| e > state.leader_epoch) {
            return Err(ReadError::UnknownLeaderEpoch);
        }
        if self.hw < l.leso {
            return Err(ReadError::HighWatermarkNotYetKnown);
        }
        Ok(ReaderView {
            leader_epoch: state.leader_epoch,
            high_watermark: self.hw,
        })
    }

    /// Handles one event at `now`, appending what to do to `out`.
    pub fn handle(&mut self, now: Millis, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Metadata(state) => self.on_metadata(now, state, out),
            Event::Fetch(request) => self.on_fetch(now, request, out),
            Event::FetchAnswer(response) => self.on_fetch_answer(now, response, out),
            Event::AlterPartitionAnswer(answer) => self.on_alter_answer(now, answer, out),
            Event::Produce(request) => self.on_produce(now, request, out),
            Event::Durable { end } => self.on_durable(now, end, out),
            Event::Ineligible(brokers) => self.ineligible = brokers,
            Event::Tick => self.on_tick(now, out),
        }
        debug_assert!(self.hw <= self.log_end);
        debug_assert!(self.durable_end <= self.log_end);
    }

    fn me(&self) -> BrokerId {
        self.config.broker
    }

    fn on_metadata(&mut self, now: Millis, new: PartitionState, out: &mut Vec<Action>) {
        if new.partition != self.config.partition {
            return;
        }
        let new_epoch = match &self.state {
            Some(current) if new.partition_epoch <= current.partition_epoch => return,
            Some(current) => new.leader_epoch > current.leader_epoch,
            None => true,
        };
        let me = self.me();
        if !new.replicas.contains(&me) {
            self.renounce(out);
            self.state = Some(new);
            return;
        }
        match new.leader {
            Some(leader) if leader == me => {
                if new_epoch || !matches!(self.role, Role::Leader(_)) {
                    self.become_leader(now, new, out);
                } else {
                    self.remain_leader(new, out);
                }
            }
            Some(leader) => {
                let following = matches!(&self.role, Role::Follower(f) if f.leader == leader);
                self.state = Some(new);
                if new_epoch || !following {
                    self.become_follower(now, leader, out);
                }
            }
            None => {
                self.renounce(out);
                self.state = Some(new);
            }
        }
    }

    /// Fails what a leader had pending and drops its role.
    fn renounce(&mut self, out: &mut Vec<Action>) {
        if let Role::Leader(l) = &mut self.role {
            for p in l.produces.drain(..) {
                out.push(Action::ProduceAnswer {
                    produce: p.id,
                    result: Err(ProduceError::LeadershipLost),
                });
            }
        }
        self.role = Role::None;
    }

    fn become_leader(&mut self, now: Millis, new: PartitionState, out: &mut Vec<Action>) {
        self.renounce(out);
        let maximal_isr = new.isr.clone();
        self.state = Some(new);
        self.role = Role::Leader(Box::new(Leadership {
            leso: self.log_end,
            became_leader_at: now,
            followers: BTreeMap::new(),
            maximal_isr,
            pending_alter: None,
            alter_backoff_until: now,
            produces: VecDeque::new(),
            parked: BTreeMap::new(),
        }));
        self.request_sync(out);
        self.advance_high_watermark(out);
    }

    fn remain_leader(&mut self, new: PartitionState, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // Any newer registration settles every change proposed from an older
        // partition epoch: it was either applied (and this includes it) or
        // will be refused.
        l.pending_alter = None;
        l.maximal_isr = new.isr.clone();
        self.state = Some(new);
        self.after_isr_change(out);
    }

    fn after_isr_change(&mut self, out: &mut Vec<Action>) {
        self.advance_high_watermark(out);
        let min_isr = self.config.min_insync_replicas;
        let (Role::Leader(l), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        if state.isr.len() < min_isr {
            let hw = self.hw;
            l.produces.retain(|p| {
                if p.acks == Acks::All && p.last_offset >= hw {
                    out.push(Action::ProduceAnswer {
                        produce: p.id,
                        result: Err(ProduceError::NotEnoughReplicasAfterAppend),
                    });
                    false
                } else {
                    true
                }
            });
        }
    }

    fn become_follower(&mut self, now: Millis, leader: BrokerId, out: &mut Vec<Action>) {
        self.renounce(out);
        self.role = Role::Follower(Following {
            leader,
            in_flight: None,
            backoff_until: now,
        });
        if flawed!(self.config, TruncateToHighWatermark) {
            let hw = self.hw;
            self.truncate(hw, out);
        }
        self.try_fetch(now, out);
    }

    fn request_sync(&mut self, out: &mut Vec<Action>) {
        if self.durable_end < self.log_end && self.sync_requested < self.log_end {
            self.sync_requested = self.log_end;
            out.push(Action::Sync {
                up_to: self.log_end,
            });
        }
    }

    fn truncate(&mut self, end: Offset, out: &mut Vec<Action>) {
        assert!(end <= self.log_end, "truncation past the log end");
        if end == self.log_end {
            return;
        }
        self.log_end = end;
        self.durable_end = self.durable_end.min(end);
        self.sync_requested = self.sync_requested.min(end);
        self.hw = self.hw.min(end);
        out.push(Action::TruncateTo { end });
        if self.epochs.truncate_to(end) {
            out.push(Action::WriteEpochCheckpoint {
                entries: self.epochs.entries().to_vec(),
            });
        }
    }

    fn fetch_error(&self, request: &FetchRequest) -> Option<FetchError> {
        let (Role::Leader(_), Some(state)) = (&self.role, &self.state) else {
            return Some(FetchError::NotLeaderOrFollower);
        };
        if request.leader_epoch < state.leader_epoch {
            return Some(FetchError::FencedLeaderEpoch);
        }
        if request.leader_epoch > state.leader_epoch {
            return Some(FetchError::UnknownLeaderEpoch);
        }
        if request.replica == self.me() || !state.replicas.contains(&request.replica) {
            return Some(FetchError::UnknownReplica);
        }
        None
    }

    fn response_to(&self, request: &FetchRequest) -> FetchResponse {
        FetchResponse {
            partition: request.partition,
            leader: self.me(),
            leader_epoch: request.leader_epoch,
            fetch_id: request.fetch_id,
            fetch_offset: request.fetch_offset,
            replica_epoch: request.replica_epoch,
            error: None,
            diverging_epoch: None,
            high_watermark: self.hw,
            batches: Vec::new(),
        }
    }

    /// The diverging epoch for a fetch, if the follower's log diverges
    /// from this leader's (`ReceiveFetchRequest`'s second case).
    fn divergence(&self, request: &FetchRequest, leader_epoch: LeaderEpoch) -> Option<EpochEnd> {
        match request.last_fetched_epoch {
            Some(last) => {
                let found = self
                    .epochs
                    .end_offset_for(last, self.log_end, Some(leader_epoch));
                (found.epoch < last || found.end_offset < request.fetch_offset).then_some(found)
            }
            // An empty log cannot diverge; a fetch offset past 0 with no
            // epoch is malformed: truncate it all.
            None => (request.fetch_offset > Offset(0)).then_some(EpochEnd {
                epoch: leader_epoch,
                end_offset: Offset(0),
            }),
        }
    }

    fn on_fetch(&mut self, now: Millis, request: FetchRequest, out: &mut Vec<Action>) {
        if request.partition != self.config.partition {
            return;
        }
        let to = request.replica;
        let error = self.fetch_error(&request);
        let diverging = error
            .is_none()
            .then(|| self.divergence(&request, request.leader_epoch))
            .flatten();
        if error.is_some() || diverging.is_some() {
            let mut response = self.response_to(&request);
            response.error = error;
            response.diverging_epoch = diverging;
            out.push(Action::ServeFetch {
                to,
                response,
                read_from: None,
            });
            return;
        }
        let log_end = self.log_end;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let progress = l.followers.entry(to).or_insert(FollowerProgress {
            fetch_offset: request.fetch_offset,
            broker_epoch: request.replica_epoch,
            last_caught_up: l.became_leader_at,
            leader_end_at_last_fetch: Offset(0),
            last_fetch: now,
        });
        // Kafka's Replica.updateFetchState: caught up now if at the log
        // end, caught up as of the last fetch if at the end of then.
        if request.fetch_offset >= log_end {
            progress.last_caught_up = now;
        } else if request.fetch_offset >= progress.leader_end_at_last_fetch {
            progress.last_caught_up = progress.last_caught_up.max(progress.last_fetch);
        }
        progress.fetch_offset = request.fetch_offset;
        progress.broker_epoch = request.replica_epoch;
        progress.leader_end_at_last_fetch = log_end;
        progress.last_fetch = now;
        l.parked.remove(&to);
        self.advance_high_watermark(out);
        self.propose_isr(now, out);
        if request.fetch_offset < self.log_end {
            let response = self.response_to(&request);
            out.push(Action::ServeFetch {
                to,
                response,
                read_from: Some(request.fetch_offset),
            });
        } else if let Role::Leader(l) = &mut self.role {
            let deadline = now.plus(self.config.fetch_max_wait_ms);
            l.parked.insert(to, (request, deadline));
        }
    }

    /// Answers parked fetches: all of them (`expired_only` false, after an
    /// append) or those past their deadline.
    fn serve_parked(&mut self, now: Millis, expired_only: bool, out: &mut Vec<Action>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let ready: Vec<BrokerId> = l
            .parked
            .iter()
            .filter(|(_, (_, deadline))| !expired_only || *deadline <= now)
            .map(|(b, _)| *b)
            .collect();
        let mut answers = Vec::new();
        for b in ready {
            if let Some((request, _)) = l.parked.remove(&b) {
                answers.push(request);
            }
        }
        for request in answers {
            let response = self.response_to(&request);
            let read_from = (request.fetch_offset < self.log_end).then_some(request.fetch_offset);
            out.push(Action::ServeFetch {
                to: request.replica,
                response,
                read_from,
            });
        }
    }

    fn advance_high_watermark(&mut self, out: &mut Vec<Action>) {
        let me = self.me();
        let (Role::Leader(l), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        let counted = if flawed!(self.config, NoMaximalIsr) {
            &state.isr
        } else {
            &l.maximal_isr
        };
        let others = counted
            .iter()
            .filter(|b| **b != me)
            .map(|b| l.followers.get(b).map(|f| f.fetch_offset));
        let new = next_high_watermark(
            self.hw,
            self.durable_end,
            state.isr.len(),
            self.config.min_insync_replicas,
            others,
        );
        assert!(
            new <= self.durable_end || new == self.hw,
            "high watermark past the leader's durable end"
        );
        if new > self.hw {
            self.hw = new;
            out.push(Action::HighWatermark { hw: new });
        }
        self.answer_produces(out);
    }

    fn answer_produces(&mut self, out: &mut Vec<Action>) {
        let (hw, durable) = (self.hw, self.durable_end);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        l.produces.retain(|p| {
            let done = match p.acks {
                Acks::All => p.last_offset < hw,
                Acks::Leader => p.last_offset < durable,
            };
            if done {
                out.push(Action::ProduceAnswer {
                    produce: p.id,
                    result: Ok(p.base_offset),
                });
            }
            !done
        });
    }

    /// Proposes a new ISR if members lag or non-members caught up
    /// (`SendAlterPartitionRequest`, `FollowerIsCaughtUp`), never with a
    /// broker the metadata says is fenced or shutting down (KIP-841's
    /// eligibility; the controller would refuse it). One change in flight at
    /// a time. After a refusal, while the Maximal ISR still counts members
    /// the committed ISR lacks, the committed ISR itself is proposed (a
    /// compare-and-set that changes nothing): accepted, it proves that no
    /// other proposal from that partition epoch was or will be applied, and
    /// the Maximal ISR falls back to the committed one; otherwise the
    /// Maximal ISR would keep counting a member that never joined, and the
    /// high watermark would wait for it forever.
    fn propose_isr(&mut self, now: Millis, out: &mut Vec<Action>) {
        let me = self.me();
        let (hw, lag_max) = (self.hw, self.config.replica_lag_time_max_ms);
        let (Role::Leader(l), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        if l.pending_alter.is_some() || now < l.alter_backoff_until {
            return;
        }
        let mut proposed = BTreeSet::from([me]);
        let ineligible = &self.ineligible;
        for r in state
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != me && !ineligible.contains(r))
        {
            let progress = l.followers.get(&r);
            if state.isr.contains(&r) {
                let caught_up = progress.map_or(l.became_leader_at, |p| p.last_caught_up);
                if now.since(caught_up) <= lag_max {
                    proposed.insert(r);
                }
            } else if let Some(p) = progress {
                if p.fetch_offset >= hw
                    && p.fetch_offset >= l.leso
                    && now.since(p.last_caught_up) <= lag_max
                {
                    proposed.insert(r);
                }
            }
        }
        if proposed == state.isr && l.maximal_isr == state.isr {
            return;
        }
        let new_isr = proposed
            .iter()
            .map(|b| IsrMember {
                broker: *b,
                broker_epoch: if *b == me {
                    Some(self.broker_epoch)
                } else if state.isr.contains(b) {
                    None
                } else {
                    l.followers.get(b).map(|p| p.broker_epoch)
                },
            })
            .collect();
        let request = AlterPartitionRequest {
            partition: state.partition,
            leader: me,
            leader_broker_epoch: self.broker_epoch,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr,
        };
        l.maximal_isr.extend(proposed.iter().copied());
        l.pending_alter = Some(PendingAlter {
            request: request.clone(),
            sent_at: now,
        });
        out.push(Action::SendAlterPartition(request));
    }

    fn on_alter_answer(
        &mut self,
        now: Millis,
        answer: AlterPartitionResponse,
        out: &mut Vec<Action>,
    ) {
        let retry_ms = self.config.alter_partition_retry_ms;
        let (Role::Leader(l), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        let Some(pending) = &l.pending_alter else {
            return;
        };
        if answer.request_partition_epoch != pending.request.partition_epoch {
            return;
        }
        match answer.result {
            Ok(new) => {
                if new.partition_epoch > state.partition_epoch
                    && new.leader_epoch == state.leader_epoch
                {
                    l.pending_alter = None;
                    l.maximal_isr = new.isr.clone();
                    self.state = Some(new);
                    self.after_isr_change(out);
                }
            }
            // This copy was refused; another may have been applied. Keep
            // counting every proposal until the metadata settles it, and
            // propose again (with fresh epochs) after a pause.
            Err(_) => {
                l.pending_alter = None;
                l.alter_backoff_until = now.plus(retry_ms);
            }
        }
    }

    fn on_produce(&mut self, now: Millis, request: ProduceRequest, out: &mut Vec<Action>) {
        let refuse = |out: &mut Vec<Action>, e| {
            out.push(Action::ProduceAnswer {
                produce: request.id,
                result: Err(e),
            })
        };
        let (Role::Leader(l), Some(state)) = (&mut self.role, &self.state) else {
            return refuse(out, ProduceError::NotLeader);
        };
        if request.records == 0 {
            return refuse(out, ProduceError::InvalidRequest);
        }
        if request.acks == Acks::All && state.isr.len() < self.config.min_insync_replicas {
            return refuse(out, ProduceError::NotEnoughReplicas);
        }
        if l.produces.len() >= MAX_PENDING_PRODUCES {
            return refuse(out, ProduceError::Busy);
        }
        let epoch = state.leader_epoch;
        let base_offset = self.log_end;
        let last_offset = base_offset.plus(u64::from(request.records) - 1);
        // A leader's epoch is the newest in its log unless the metadata went
        // back; refuse rather than stamp a batch out of order.
        let Ok(changed) = self.epochs.assign(epoch, base_offset) else {
            return refuse(out, ProduceError::NotLeader);
        };
        if changed {
            out.push(Action::WriteEpochCheckpoint {
                entries: self.epochs.entries().to_vec(),
            });
        }
        out.push(Action::AppendAsLeader {
            produce: request.id,
            base_offset,
            last_offset,
            epoch,
        });
        self.log_end = last_offset.plus(1);
        l.produces.push_back(PendingProduce {
            id: request.id,
            base_offset,
            last_offset,
            acks: request.acks,
            deadline: now.plus(self.config.produce_timeout_ms),
        });
        self.request_sync(out);
        self.serve_parked(now, false, out);
    }

    fn on_durable(&mut self, now: Millis, end: Offset, out: &mut Vec<Action>) {
        let end = end.min(self.log_end);
        if end <= self.durable_end {
            return;
        }
        self.durable_end = end;
        match self.role {
            Role::Leader(_) => self.advance_high_watermark(out),
            Role::Follower(_) => self.try_fetch(now, out),
            Role::None => {}
        }
    }

    fn try_fetch(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.request_sync(out);
        let may_fetch =
            self.durable_end == self.log_end || flawed!(self.config, FollowerAcksBeforeFsync);
        let (Role::Follower(f), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        if f.in_flight.is_some() || now < f.backoff_until || !may_fetch {
            return;
        }
        let fetch_id = self.next_fetch_id;
        self.next_fetch_id += 1;
        f.in_flight = Some((fetch_id, now));
        out.push(Action::SendFetch {
            to: f.leader,
            request: FetchRequest {
                partition: state.partition,
                replica: self.config.broker,
                replica_epoch: self.broker_epoch,
                leader_epoch: state.leader_epoch,
                fetch_offset: self.log_end,
                last_fetched_epoch: self.epochs.latest_epoch(),
                fetch_id,
            },
        });
    }

    /// Whether `batches` may be appended at the log end: contiguous from
    /// it, whole, epochs not decreasing and not past the leader's.
    fn valid_batches(&self, batches: &[BatchMeta], leader_epoch: LeaderEpoch) -> bool {
        if batches.len() > MAX_FETCH_BATCHES {
            return false;
        }
        let mut next = self.log_end;
        let mut epoch = self.epochs.latest_epoch().unwrap_or_default();
        for b in batches {
            if b.base_offset != next
                || b.last_offset < b.base_offset
                || b.epoch < epoch
                || b.epoch > leader_epoch
            {
                return false;
            }
            next = b.end();
            epoch = b.epoch;
        }
        true
    }

    fn on_fetch_answer(&mut self, now: Millis, response: FetchResponse, out: &mut Vec<Action>) {
        let backoff = self.config.fetch_backoff_ms;
        let (Role::Follower(f), Some(state)) = (&mut self.role, &self.state) else {
            return;
        };
        let expected = f.in_flight.map(|(id, _)| id);
        if response.partition != state.partition
            || response.leader != f.leader
            || Some(response.fetch_id) != expected
            || response.leader_epoch != state.leader_epoch
            || response.replica_epoch != self.broker_epoch
            || response.fetch_offset != self.log_end
        {
            return;
        }
        f.in_flight = None;
        if response.error.is_some() {
            f.backoff_until = now.plus(backoff);
            return;
        }
        if let Some(diverging) = response.diverging_epoch {
            let to = truncation_point(&self.epochs, self.log_end, diverging);
            self.truncate(to, out);
            self.try_fetch(now, out);
            return;
        }
        if !self.valid_batches(&response.batches, state.leader_epoch) {
            if let Role::Follower(f) = &mut self.role {
                f.backoff_until = now.plus(backoff);
            }
            return;
        }
        let mut changed = false;
        for b in &response.batches {
            changed |= self
                .epochs
                .assign(b.epoch, b.base_offset)
                .expect("checked by valid_batches");
        }
        if changed {
            out.push(Action::WriteEpochCheckpoint {
                entries: self.epochs.entries().to_vec(),
            });
        }
        if let Some(last) = response.batches.last() {
            self.log_end = last.end();
            out.push(Action::AppendAsFollower {
                batches: response.batches.clone(),
            });
        }
        if response.high_watermark <= self.log_end {
            self.hw = response.high_watermark;
        }
        self.try_fetch(now, out);
    }

    fn on_tick(&mut self, now: Millis, out: &mut Vec<Action>) {
        match &mut self.role {
            Role::Leader(l) => {
                l.produces.retain(|p| {
                    let expired = p.deadline <= now;
                    if expired {
                        out.push(Action::ProduceAnswer {
                            produce: p.id,
                            result: Err(ProduceError::TimedOut),
                        });
                    }
                    !expired
                });
                if let Some(pending) = &mut l.pending_alter {
                    if now.since(pending.sent_at) >= self.config.alter_partition_retry_ms {
                        pending.sent_at = now;
                        out.push(Action::SendAlterPartition(pending.request.clone()));
                    }
                }
                self.serve_parked(now, true, out);
                self.propose_isr(now, out);
                self.request_sync(out);
            }
            Role::Follower(f) => {
                if let Some((_, sent_at)) = f.in_flight {
                    if now.since(sent_at) >= self.config.fetch_timeout_ms {
                        f.in_flight = None;
                    }
                }
                self.try_fetch(now, out);
            }
            Role::None => self.request_sync(out),
        }
    }
}

#[cfg(test)]
mod tests;
