//! Replicated partitions on their shards: the driver of broker-replication's
//! pure [`Replica`] (tracker issue 17).
//!
//! A partition of a topic with more than one replica is opened on every
//! broker that holds a replica, on the shard its placement names. Each has
//! a [`Replicated`]: the partition, its `Replica`, and what carrying out the
//! replica's actions needs. Events reach it from:
//! - the metadata image each shard takes ([`on_image`]: the partition's
//!   registration, `Event::Metadata`);
//! - produces ([`Replicated::append_batches`], through the service: the
//!   only way a replicated partition's log is written as leader);
//! - followers' fetches (`serve.rs`: the native ReplicaFetch api) and the
//!   answers to this replica's own fetches (`fetcher.rs`: one long-poll
//!   session per leader shard for every partition the pair shares);
//! - the controllers' answers to AlterPartition;
//! - a ticker per shard (`Event::Tick`, every [`TICK`]).
//!
//! Invariants:
//! - One event at a time per partition: an event and the actions it
//!   answers with run under the partition's lock (`turn`), in order; a
//!   truncation, a follower append and the epoch checkpoint are durable
//!   before the next action (the log's calls resolve once they are).
//! - The replica's view of the log and the log agree: every leader append
//!   is placed at the offset the replica assigned (checked; a mismatch
//!   closes the replica, which then serves nothing), a follower appends
//!   exactly the batches the replica accepted.
//! - Readers see only the replica's high watermark, and only once it is
//!   known true (`Replica::reader_view`, §6.4.2); the partition's own
//!   bookkeeping never advances it to the log's durable end.
//! - A leader's log stamps its epoch (`Log::set_leader_epoch`) before its
//!   first append in that epoch; the log keeps its own epoch checkpoint,
//!   which the replica's cache mirrors.

pub mod fetcher;
pub mod serve;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use broker_cluster::{MetadataImage, PartitionReplicas};
use broker_format::Validated;
use broker_replication::{
    Acks as ReplicaAcks, Action, AlterPartitionError, AlterPartitionRequest,
    AlterPartitionResponse, BrokerEpoch, BrokerId, EpochEntry, Event, FetchRequest, FetchResponse,
    LeaderEpoch, Millis, Offset, PartitionEpoch, PartitionId, PartitionState, ProduceError,
    ProduceId, ProduceRequest, Recovered, Replica, ReplicaConfig, RoleKind,
};
use futures_channel::oneshot;
use glommio::sync::Semaphore;

use crate::arrivals::Arrivals;
use crate::error::{ErrorKind, ServiceError, ServiceResult};
use crate::partition::Partition;
use crate::shard::Shard;

/// How often every replica of a shard is ticked (timeouts, parked fetches,
/// ISR checks).
pub const TICK: Duration = Duration::from_millis(50);

/// A follower's answer from the leader, as the session hands it over: the
/// response (with its batches' offsets and epochs) and the batches' bytes.
pub struct FetchedBatches {
    /// The answer.
    pub response: FetchResponse,
    /// The whole batches `response.batches` describes, back to back.
    pub bytes: bytes::Bytes,
}

/// An answer to a follower's fetch the leader has decided and not yet sent:
/// its session collects it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The answer, without its batches.
    pub response: FetchResponse,
    /// Where its batches start; None: none.
    pub read_from: Option<Offset>,
}

/// One replicated partition on its shard.
pub struct Replicated {
    partition: Rc<Partition>,
    replica: RefCell<Replica>,
    /// One event and its actions at a time.
    turn: Semaphore,
    /// Produces waiting for their answer.
    waiters: RefCell<HashMap<u64, oneshot::Sender<Result<Offset, ProduceError>>>>,
    next_produce: Cell<u64>,
    /// Follower side: the fetch to send to the leader, once.
    outgoing: RefCell<Option<(BrokerId, FetchRequest)>>,
    /// Follower side: the leader's shard (its session's), by the last
    /// registration seen.
    leader_shard: Cell<Option<u16>>,
    /// Leader side: answers to followers' fetches not yet sent, by follower.
    served: RefCell<HashMap<BrokerId, Served>>,
    /// Leader side: the shard of each follower's replica (its session's).
    follower_shards: RefCell<HashMap<BrokerId, u16>>,
    /// Set when the log and the replica disagreed or the log failed: the
    /// replica takes no more events and serves nothing.
    broken: Cell<bool>,
}

/// The replicated partitions of one shard, and what their sessions share.
pub struct ShardReplication {
    started: Instant,
    replicas: RefCell<HashMap<(String, u32), Rc<Replicated>>>,
    /// Signalled when a follower replica has a fetch to send.
    pub(crate) fetch_wanted: Arrivals,
    /// Signalled when a leader replica decided an answer to a follower.
    pub(crate) served_ready: Arrivals,
    /// The follower sessions running, by leader broker and shard.
    pub(crate) sessions: RefCell<std::collections::HashSet<(u32, u16)>>,
    ticker: Cell<bool>,
}

impl Default for ShardReplication {
    fn default() -> Self {
        ShardReplication {
            started: Instant::now(),
            replicas: RefCell::new(HashMap::new()),
            fetch_wanted: Arrivals::default(),
            served_ready: Arrivals::default(),
            sessions: RefCell::new(Default::default()),
            ticker: Cell::new(false),
        }
    }
}

impl ShardReplication {
    /// Milliseconds since this shard started: the replicas' clock.
    pub fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// The replicated partition `partition` of `topic` on this shard.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Rc<Replicated>> {
        self.replicas
            .borrow()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Every replicated partition of this shard.
    pub fn all(&self) -> Vec<Rc<Replicated>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// Forgets one replica (its partition is closing: reassigned away).
    pub fn remove_partition(&self, topic: &str, partition: u32) {
        let gone = self
            .replicas
            .borrow_mut()
            .remove(&(topic.to_owned(), partition));
        if let Some(r) = gone {
            r.broken.set(true);
            r.waiters.borrow_mut().clear();
        }
    }

    /// Forgets `topic`'s replicas (its partitions are closing): their
    /// waiting produces fail as indeterminate.
    pub fn remove_topic(&self, topic: &str) {
        let gone: Vec<Rc<Replicated>> = {
            let mut map = self.replicas.borrow_mut();
            let keys: Vec<_> = map.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for r in gone {
            r.broken.set(true);
            r.waiters.borrow_mut().clear();
        }
    }
}

/// A produce's failure as the service's error. Only `NotLeader`,
/// `NotEnoughReplicas`, `Busy` and `InvalidRequest` say nothing was
/// written; the others are indeterminate: the batch may yet be committed.
fn produce_error(e: ProduceError, what: &ProduceTo<'_>) -> ServiceError {
    match e {
        ProduceError::NotLeader => ServiceError::new(
            ErrorKind::NotOwner,
            format!("{what}: this broker is not the partition's leader (nothing was written)"),
        ),
        ProduceError::NotEnoughReplicas => ServiceError::new(
            ErrorKind::NotEnoughReplicas,
            format!(
                "{what}: the in-sync replicas are fewer than min.insync.replicas \
                 (nothing was written)"
            ),
        ),
        ProduceError::NotEnoughReplicasAfterAppend => ServiceError::new(
            ErrorKind::NotEnoughReplicasAfterAppend,
            format!(
                "{what}: written, but the in-sync replicas fell below min.insync.replicas \
                 before it was committed: the outcome is unknown"
            ),
        ),
        ProduceError::LeadershipLost => ServiceError::new(
            ErrorKind::Indeterminate,
            format!(
                "{what}: written, but this broker lost the leadership before it was \
                 committed: the outcome is unknown"
            ),
        ),
        ProduceError::TimedOut => ServiceError::new(
            ErrorKind::Indeterminate,
            format!(
                "{what}: written, but not committed within the produce timeout: the \
                 outcome is unknown"
            ),
        ),
        ProduceError::Busy => ServiceError::new(
            ErrorKind::Storage,
            format!("{what}: too many produces wait for the replicas (nothing was written)"),
        ),
        ProduceError::InvalidRequest => {
            ServiceError::invalid(format!("{what}: no records (nothing was written)"))
        }
    }
}

/// "produce to TOPIC/PARTITION", formatted only when an error says it.
struct ProduceTo<'a>(&'a Partition);

impl std::fmt::Display for ProduceTo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "produce to {}/{}", self.0.topic(), self.0.number())
    }
}

/// The registration of `partition` of `topic` as the replica sees it.
pub fn partition_state(index: u32, r: &PartitionReplicas) -> PartitionState {
    PartitionState {
        partition: PartitionId(index),
        replicas: r.replicas.iter().map(|p| BrokerId(p.broker.0)).collect(),
        leader: r.leader.map(|b| BrokerId(b.0)),
        leader_epoch: LeaderEpoch(r.leader_epoch),
        partition_epoch: PartitionEpoch(r.partition_epoch),
        isr: r.isr.iter().map(|b| BrokerId(b.0)).collect(),
    }
}

fn log_epochs(partition: &Partition) -> Vec<EpochEntry> {
    partition
        .log()
        .epoch_entries()
        .into_iter()
        .map(|e| EpochEntry {
            epoch: LeaderEpoch(e.epoch.max(0) as u32),
            start_offset: Offset(e.start_offset),
        })
        .collect()
}

impl Replicated {
    /// A replica over the open `partition` (recovered), for broker `me`
    /// running as `epoch`.
    pub fn new(
        partition: Rc<Partition>,
        me: u32,
        epoch: u64,
        min_insync_replicas: usize,
    ) -> Result<Replicated, String> {
        let recovered = Recovered {
            log_end: Offset(partition.log().log_end_offset()),
            epochs: log_epochs(&partition),
        };
        let config = ReplicaConfig::new(
            BrokerId(me),
            PartitionId(partition.number()),
            min_insync_replicas,
        );
        let replica = Replica::new(config, BrokerEpoch(epoch), recovered)
            .map_err(|e| format!("{}/{}: {e}", partition.topic(), partition.number()))?;
        partition.set_replicated();
        Ok(Replicated {
            partition,
            replica: RefCell::new(replica),
            turn: Semaphore::new(1),
            waiters: RefCell::new(HashMap::new()),
            next_produce: Cell::new(1),
            outgoing: RefCell::new(None),
            leader_shard: Cell::new(None),
            served: RefCell::new(HashMap::new()),
            follower_shards: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
        })
    }

    /// The partition.
    pub fn partition(&self) -> &Rc<Partition> {
        &self.partition
    }

    /// The replica's role.
    pub fn role(&self) -> RoleKind {
        self.replica.borrow().role()
    }

    /// The leader's shard while following.
    pub fn leader_shard(&self) -> Option<u16> {
        self.leader_shard.get()
    }

    /// Takes the fetch to send to `leader`, if there is one.
    pub fn take_outgoing(&self, leader: u32) -> Option<FetchRequest> {
        let mut out = self.outgoing.borrow_mut();
        match &*out {
            Some((to, _)) if to.0 == leader => out.take().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Whether this replica follows `leader`'s shard `shard`.
    pub fn follows(&self, leader: u32, shard: u16) -> bool {
        !self.broken.get()
            && self.role() == RoleKind::Follower(BrokerId(leader))
            && self.leader_shard.get() == Some(shard)
    }

    /// Takes the decided answer for follower `replica` on shard `shard`.
    pub fn take_served(&self, replica: u32, shard: u16) -> Option<Served> {
        let ours = self.follower_shards.borrow().get(&BrokerId(replica)) == Some(&shard);
        ours.then(|| self.served.borrow_mut().remove(&BrokerId(replica)))
            .flatten()
    }

    /// Whether an answer for follower `replica` waits here.
    pub fn has_served(&self, replica: u32) -> bool {
        self.served.borrow().contains_key(&BrokerId(replica))
    }

    /// Handles `event` and carries out what it asks, one event at a time.
    pub async fn handle(self: &Rc<Self>, shard: &Rc<Shard>, event: Event) {
        let Ok(_turn) = self.turn.acquire_permit(1).await else {
            return;
        };
        self.handle_locked(shard, event, None).await;
    }

    /// A follower's fetch: remembers its session's shard, then handles it.
    pub async fn on_fetch(self: &Rc<Self>, shard: &Rc<Shard>, request: FetchRequest, from: u16) {
        self.follower_shards
            .borrow_mut()
            .insert(request.replica, from);
        self.handle(shard, Event::Fetch(request)).await;
    }

    /// The leader's answer to this replica's fetch, with its batches.
    pub async fn on_fetched(self: &Rc<Self>, shard: &Rc<Shard>, fetched: FetchedBatches) {
        let Ok(_turn) = self.turn.acquire_permit(1).await else {
            return;
        };
        let bytes = fetched.bytes;
        self.handle_locked(shard, Event::FetchAnswer(fetched.response), Some(&bytes))
            .await;
    }

    async fn handle_locked(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        event: Event,
        fetched: Option<&bytes::Bytes>,
    ) {
        if self.broken.get() {
            return;
        }
        let mut events = std::collections::VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let now = shard.replication().now();
            let mut actions = Vec::new();
            self.replica.borrow_mut().handle(now, event, &mut actions);
            for action in actions {
                if let Err(e) = self.carry_out(shard, action, fetched, &mut events).await {
                    self.break_down(&e);
                    return;
                }
            }
        }
        self.publish_high_watermark();
    }

    /// Stops this replica after the log failed or disagreed.
    fn break_down(&self, why: &str) {
        tracing::error!(
            topic = self.partition.topic(),
            partition = self.partition.number(),
            error = why,
            "replica stopped: it serves nothing until the partition is reopened"
        );
        self.broken.set(true);
        for (_, w) in self.waiters.borrow_mut().drain() {
            let _ = w.send(Err(ProduceError::LeadershipLost));
        }
    }

    /// Moves the partition's readable end to the replica's high watermark,
    /// once that is known true.
    fn publish_high_watermark(&self) {
        if let Ok(view) = self.replica.borrow().reader_view(None) {
            self.partition.advance(view.high_watermark.0);
        }
    }

    async fn carry_out(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        action: Action,
        fetched: Option<&bytes::Bytes>,
        events: &mut std::collections::VecDeque<Event>,
    ) -> Result<(), String> {
        let log = self.partition.log();
        match action {
            Action::SendFetch { to, request } => {
                *self.outgoing.borrow_mut() = Some((to, request));
                fetcher::ensure_session(shard, self);
                shard.replication().fetch_wanted.notify();
            }
            Action::ServeFetch {
                to,
                response,
                read_from,
            } => {
                self.served.borrow_mut().insert(
                    to,
                    Served {
                        response,
                        read_from,
                    },
                );
                shard.replication().served_ready.notify();
            }
            Action::SendAlterPartition(request) => self.send_alter_partition(shard, request),
            Action::AppendAsLeader { .. } => {
                // Placed by `append_batches`, which made the produce.
                return Err("a leader append outside a produce".into());
            }
            Action::AppendAsFollower { batches } => {
                let Some(bytes) = fetched else {
                    return Err("a follower append without fetched batches".into());
                };
                let end = batches.last().map_or(0, |b| b.end().0);
                let len = fetcher::prefix_len(bytes, batches.len());
                let appended = log
                    .append_replica(&bytes[..len])
                    .await
                    .map_err(|e| format!("follower append: {e}"))?;
                if appended.next_offset != end {
                    return Err(format!(
                        "follower append ended at {}, the replica expected {end}",
                        appended.next_offset
                    ));
                }
                self.partition.count_appended(&bytes[..len]);
                self.partition.replicated_producers(&bytes[..len]);
            }
            Action::TruncateTo { end } => {
                log.truncate_to(end.0)
                    .await
                    .map_err(|e| format!("truncating to {}: {e}", end.0))?;
                // What the producers' state knew of the cut tail is gone.
                self.partition
                    .recover_producers()
                    .await
                    .map_err(|e| format!("rebuilding producers after truncation: {e}"))?;
                tracing::info!(
                    topic = self.partition.topic(),
                    partition = self.partition.number(),
                    end = end.0,
                    "replica truncated by the leader's diverging epoch"
                );
            }
            Action::Sync { up_to } => {
                if log.durable_end() >= up_to.0 {
                    events.push_back(Event::Durable {
                        end: Offset(log.durable_end()),
                    });
                } else {
                    self.wait_durable(shard, up_to);
                }
            }
            Action::WriteEpochCheckpoint { entries } => {
                // The log keeps its own checkpoint: truncations and
                // follower appends write it; a leader's new epoch is set
                // here, before its first append.
                if let Some(last) = entries.last() {
                    let epoch = last.epoch.0 as i32;
                    if self.role() == RoleKind::Leader
                        && log.latest_epoch().is_none_or(|l| l < epoch)
                    {
                        log.set_leader_epoch(epoch)
                            .await
                            .map_err(|e| format!("setting leader epoch {epoch}: {e}"))?;
                    }
                }
            }
            Action::ProduceAnswer { produce, result } => {
                if let Some(w) = self.waiters.borrow_mut().remove(&produce.0) {
                    let _ = w.send(result);
                }
            }
            Action::HighWatermark { .. } => {}
        }
        Ok(())
    }

    /// Feeds `Event::Durable` once the log is durable up to `up_to` (a
    /// leader's pending appends complete on their own; this only covers a
    /// sync asked while appends of another turn are in flight).
    fn wait_durable(self: &Rc<Self>, shard: &Rc<Shard>, up_to: Offset) {
        let me = Rc::clone(self);
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while me.partition.log().durable_end() < up_to.0 && Instant::now() < deadline {
                if me.broken.get() || shard.stopping() {
                    return;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let end = Offset(me.partition.log().durable_end());
            me.handle(&shard, Event::Durable { end }).await;
        })
        .detach();
    }

    fn send_alter_partition(self: &Rc<Self>, shard: &Rc<Shard>, request: AlterPartitionRequest) {
        let Some(link) = shard.cluster().cloned() else {
            return;
        };
        let me = Rc::clone(self);
        let shard = Rc::clone(shard);
        let command = broker_cluster::AlterPartition {
            topic: self.partition.topic().to_owned(),
            partition: self.partition.number(),
            leader: broker_cluster::BrokerId(request.leader.0),
            leader_broker_epoch: broker_cluster::BrokerEpoch(request.leader_broker_epoch.0),
            leader_epoch: request.leader_epoch.0,
            partition_epoch: request.partition_epoch.0,
            new_isr: request
                .new_isr
                .iter()
                .map(|m| broker_cluster::IsrMember {
                    broker: broker_cluster::BrokerId(m.broker.0),
                    broker_epoch: m.broker_epoch.map(|e| broker_cluster::BrokerEpoch(e.0)),
                })
                .collect(),
        };
        glommio::spawn_local(async move {
            use broker_controller::{Applied, Done, RefusalKind, Request, Response};
            let answer = link.caller.call(Request::AlterPartition(command)).await;
            let result = match answer {
                Ok(Response::Applied(Applied {
                    result: Ok(Done::PartitionAltered { replicas }),
                    ..
                })) => Ok(partition_state(request.partition.0, &replicas)),
                Ok(Response::Applied(Applied {
                    result: Err(refused),
                    ..
                })) => Err(match refused.kind {
                    RefusalKind::FencedLeaderEpoch | RefusalKind::StaleBrokerEpoch => {
                        AlterPartitionError::FencedLeaderEpoch
                    }
                    RefusalKind::InvalidUpdateVersion => AlterPartitionError::InvalidUpdateVersion,
                    RefusalKind::IneligibleReplica => AlterPartitionError::IneligibleReplica,
                    RefusalKind::UnknownPartition | RefusalKind::UnknownTopic => {
                        AlterPartitionError::UnknownPartition
                    }
                    _ => AlterPartitionError::InvalidRequest,
                }),
                // No decision: the replica sends it again after a pause.
                Ok(other) => {
                    tracing::debug!(answer = ?other, "AlterPartition not decided");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "AlterPartition not answered");
                    return;
                }
            };
            tracing::info!(topic = me.partition.topic(), partition = me.partition.number(),
                result = ?result, "AlterPartition answered");
            link.refresh();
            let answer = AlterPartitionResponse {
                partition: request.partition,
                request_partition_epoch: request.partition_epoch,
                result,
            };
            me.handle(&shard, Event::AlterPartitionAnswer(answer)).await;
        })
        .detach();
    }

    /// Appends a produce's validated batches as leader: the replica assigns
    /// their offsets, the log places them there in the same turn, and the
    /// answer comes once they are as durable as `all` asks (every in-sync
    /// replica: the high watermark passed them; otherwise the leader's
    /// disk). Returns the first base offset and the last next offset.
    pub async fn append_batches(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        batches: &[Validated<'_>],
        all: bool,
    ) -> ServiceResult<(u64, u64)> {
        let what = ProduceTo(&self.partition);
        let records: u64 = batches
            .iter()
            .map(|b| b.header().records_count.max(0) as u64)
            .sum();
        let Ok(records) = u32::try_from(records) else {
            return Err(ServiceError::invalid(format!("{what}: too many records")));
        };
        let id = self.next_produce.get();
        self.next_produce.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        let turn = self
            .turn
            .acquire_permit(1)
            .await
            .map_err(|_| ServiceError::internal("the replica is closing"))?;
        if self.broken.get() {
            self.waiters.borrow_mut().remove(&id);
            return Err(produce_error(ProduceError::NotLeader, &what));
        }
        let now = shard.replication().now();
        let mut actions = Vec::new();
        let request = ProduceRequest {
            id: ProduceId(id),
            records,
            acks: if all {
                ReplicaAcks::All
            } else {
                ReplicaAcks::Leader
            },
        };
        self.replica
            .borrow_mut()
            .handle(now, Event::Produce(request), &mut actions);
        let mut placed = Vec::new();
        let mut events = std::collections::VecDeque::new();
        let mut expected = None;
        for action in actions {
            match action {
                Action::AppendAsLeader {
                    produce,
                    base_offset,
                    last_offset,
                    ..
                } if produce.0 == id => {
                    if self.partition.log().log_end_offset() != base_offset.0 {
                        self.break_down(&format!(
                            "the replica placed a produce at {} but the log ends at {}",
                            base_offset.0,
                            self.partition.log().log_end_offset()
                        ));
                        return Err(produce_error(ProduceError::NotLeader, &what));
                    }
                    expected = Some((base_offset.0, last_offset.0 + 1));
                    for b in batches {
                        let mut append = Box::pin(self.partition.log().append_validated(*b));
                        let first = futures_lite::future::poll_once(&mut append).await;
                        placed.push((first, append));
                    }
                }
                other => {
                    if let Err(e) = self.carry_out(shard, other, None, &mut events).await {
                        self.break_down(&e);
                        return Err(produce_error(ProduceError::LeadershipLost, &what));
                    }
                }
            }
        }
        // Further events (a sync already satisfied) in the same turn.
        while let Some(event) = events.pop_front() {
            let now = shard.replication().now();
            let mut actions = Vec::new();
            self.replica.borrow_mut().handle(now, event, &mut actions);
            for action in actions {
                if let Err(e) = self.carry_out(shard, action, None, &mut events).await {
                    self.break_down(&e);
                    return Err(produce_error(ProduceError::LeadershipLost, &what));
                }
            }
        }
        self.publish_high_watermark();
        drop(turn);
        let Some((base, next)) = expected else {
            // Refused before any append: the answer is among the actions.
            return match rx.await {
                Ok(Ok(_)) => Err(ServiceError::internal(format!(
                    "{what}: answered without an append"
                ))),
                Ok(Err(e)) => Err(produce_error(e, &what)),
                Err(_) => Err(produce_error(ProduceError::NotLeader, &what)),
            };
        };
        let mut failure = None;
        for (first, append) in placed {
            let result = match first {
                Some(r) => r,
                None => append.await,
            };
            if let Err(e) = result {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            // The log could not make its part durable: the replica's view
            // of it is no longer true.
            self.break_down(&format!("leader append: {e}"));
            return Err(e.into());
        }
        let bytes: usize = batches.iter().map(|b| b.bytes().len()).sum();
        self.partition.count_appended_len(base, next, bytes);
        let end = Offset(self.partition.log().durable_end());
        self.handle(shard, Event::Durable { end }).await;
        // Followers' polls waiting for these batches to be durable.
        shard.replication().served_ready.notify();
        match rx.await {
            Ok(Ok(b)) if b.0 == base => Ok((base, next)),
            Ok(Ok(b)) => Err(ServiceError::internal(format!(
                "{what}: answered at {} but placed at {base}",
                b.0
            ))),
            Ok(Err(e)) => Err(produce_error(e, &what)),
            Err(_) => Err(produce_error(ProduceError::LeadershipLost, &what)),
        }
    }
}

/// Takes a newly applied image on `shard`: creates the replicas of the
/// replicated partitions this shard opened and feeds every replica its
/// partition's registration; starts the shard's ticker.
pub async fn on_image(shard: Rc<Shard>, image: Arc<MetadataImage>) {
    let me = shard.config().broker_id;
    let Some(record) = image.broker(broker_cluster::BrokerId(me)) else {
        return;
    };
    let epoch = record.epoch.0;
    let repl = shard.replication();
    let mut feed = Vec::new();
    for (name, topic) in image.topics() {
        if topic.replicas.first().is_none_or(|r| r.replicas.len() < 2) {
            continue;
        }
        for (index, reg) in topic.replicas.iter().enumerate() {
            let index = index as u32;
            let Some(here) = reg.replica_on(broker_cluster::BrokerId(me)) else {
                continue;
            };
            if here.shard.0 != shard.id() {
                continue;
            }
            let existing = repl.get(name, index);
            let replicated = match existing {
                Some(r) => r,
                None => {
                    let Some(partition) = shard.partition(name, index) else {
                        continue;
                    };
                    let min_isr = usize::from(topic.config.min_insync_replicas);
                    match Replicated::new(partition, me, epoch, min_isr) {
                        Ok(r) => {
                            let r = Rc::new(r);
                            repl.replicas
                                .borrow_mut()
                                .insert((name.clone(), index), Rc::clone(&r));
                            r
                        }
                        Err(e) => {
                            tracing::error!(topic = %name, partition = index, error = %e,
                                "the replica cannot start");
                            continue;
                        }
                    }
                }
            };
            replicated
                .leader_shard
                .set(reg.leader_replica().map(|p| p.shard.0));
            let ineligible = reg
                .replicas
                .iter()
                .filter(|p| image.broker(p.broker).is_none_or(|b| b.is_fenced()))
                .map(|p| BrokerId(p.broker.0))
                .collect();
            feed.push((replicated, ineligible, partition_state(index, reg)));
        }
    }
    for (replicated, ineligible, state) in feed {
        replicated
            .handle(&shard, Event::Ineligible(ineligible))
            .await;
        replicated.handle(&shard, Event::Metadata(state)).await;
    }
    if !repl.ticker.replace(true) {
        glommio::spawn_local(tick(Rc::clone(&shard))).detach();
    }
}

/// Ticks every replica of `shard` every [`TICK`] until it stops.
async fn tick(shard: Rc<Shard>) {
    while !shard.stopping() {
        glommio::timer::sleep(TICK).await;
        for r in shard.replication().all() {
            r.handle(&shard, Event::Tick).await;
        }
    }
}
