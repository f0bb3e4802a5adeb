//! A seeded deterministic simulator of one replicated partition: N
//! brokers each running a [`Replica`] over a simulated log and disk, the
//! [`Controller`] as one linearizable actor (the metadata quorum is Raft
//! and exists; only its message delay is modelled), producers with acks=all
//! and acks=1, and consumers reading below the high watermark, all over a
//! network that delays, reorders, loses, duplicates and partitions
//! (two-way, one-way, bridges). Brokers crash (losing everything not
//! durable: the log above its durable end and all memory), restart with a
//! new broker epoch, and pause. A run is a pure function of its
//! [`SimConfig`]: the same seed replays the same run.
//!
//! After every millisecond step the [`checker`] checks the invariants; at
//! the end every fault is healed and the run must converge. See
//! [`run`] and the scenarios in [`Scenario`].

pub mod checker;
mod rng;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    Acks, Action, BatchMeta, BrokerEpoch, BrokerId, Controller, ControllerConfig, ControllerError,
    Event, Flaw, LeaderEpoch, Millis, Offset, PartitionId, PartitionState, ProduceError, ProduceId,
    ProduceRequest, Recovered, Replica, ReplicaConfig, RoleKind,
};
use crate::{AlterPartitionRequest, AlterPartitionResponse, EpochCache, EpochEntry};
use crate::{FetchRequest, FetchResponse};

pub use checker::Checker;
pub use rng::Rng;

/// The partition every simulated broker replicates.
pub const PARTITION: PartitionId = PartitionId(0);

/// Which faults a run injects (besides the network's constant loss,
/// duplication and reordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The leader crashes (losing its unsynced tail) and restarts.
    LeaderCrash,
    /// A follower crashes and restarts.
    FollowerCrash,
    /// The leader is cut off from every broker and the controller.
    LeaderIsolation,
    /// Links fail in one direction only.
    OneWay,
    /// Two brokers cannot reach each other, a third reaches both.
    Bridge,
    /// Links and the leader go up and down quickly.
    Flapping,
    /// A broker is paused past the ISR lag and session timeouts.
    PausedBroker,
    /// Every broker crashes at once (a power loss), then restarts.
    Outage,
    /// A broker shuts down cleanly (controlled shutdown: leadership moves
    /// first, everything is fsynced), then restarts; preferred-leader
    /// elections move leadership back.
    ControlledShutdown,
    /// A broker's fsyncs take 50-400 ms for a while (a degraded disk): its
    /// fetch offset, or as leader its durable end, falls behind.
    SlowDisk,
    /// A topic with unclean leader election allowed and min.insync=1,
    /// under isolation and crashes: the only scenario that may lose data.
    Unclean,
    /// All of the above at random.
    Mixed,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 12] = [
        Scenario::LeaderCrash,
        Scenario::FollowerCrash,
        Scenario::LeaderIsolation,
        Scenario::OneWay,
        Scenario::Bridge,
        Scenario::Flapping,
        Scenario::PausedBroker,
        Scenario::Outage,
        Scenario::ControlledShutdown,
        Scenario::SlowDisk,
        Scenario::Unclean,
        Scenario::Mixed,
    ];

    /// Its name, as the script takes it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderCrash => "leader-crash",
            Scenario::FollowerCrash => "follower-crash",
            Scenario::LeaderIsolation => "leader-isolation",
            Scenario::OneWay => "one-way",
            Scenario::Bridge => "bridge",
            Scenario::Flapping => "flapping",
            Scenario::PausedBroker => "paused-broker",
            Scenario::Outage => "outage",
            Scenario::ControlledShutdown => "controlled-shutdown",
            Scenario::SlowDisk => "slow-disk",
            Scenario::Unclean => "unclean",
            Scenario::Mixed => "mixed",
        }
    }

    /// The scenario of that name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: everything else random derives from it.
    pub seed: u64,
    /// The faults.
    pub scenario: Scenario,
    /// Brokers, each a replica (the replication factor).
    pub brokers: u32,
    /// Simulated milliseconds of faults and traffic.
    pub fault_ms: u64,
    /// Simulated milliseconds allowed to converge once healed.
    pub heal_ms: u64,
    /// A deliberate protocol flaw, in every replica and the controller.
    pub flaw: Option<Flaw>,
    /// Print what happens (for replaying a seed).
    pub trace: bool,
    /// Check only what clients see (acknowledgements, reads, leaders'
    /// committed prefixes, the final log), not the internal invariants.
    pub client_view_only: bool,
}

impl SimConfig {
    /// The suite's settings for a scenario and seed.
    pub fn new(scenario: Scenario, seed: u64) -> SimConfig {
        SimConfig {
            seed,
            scenario,
            brokers: 3,
            fault_ms: 2_500,
            heal_ms: 3_000,
            flaw: None,
            trace: false,
            client_view_only: false,
        }
    }

    fn min_insync_replicas(&self) -> usize {
        match self.scenario {
            Scenario::Unclean => 1,
            _ => 2,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The first invariant violated, if any (the run stops there).
    pub failure: Option<String>,
    /// acks=all produces acknowledged.
    pub acked_all: u64,
    /// acks=1 produces acknowledged.
    pub acked_one: u64,
    /// acks=1 records acknowledged but absent at the end (allowed).
    pub lost_acks_one: u64,
    /// acks=all records acknowledged but absent or changed at the end:
    /// only allowed after an unclean election.
    pub lost_acks_all: u64,
    /// Losses the checker saw (only after unclean elections).
    pub loss_events: u64,
    /// Unclean elections the controller made.
    pub unclean_elections: u64,
    /// Leader epochs reached.
    pub leader_epochs: u32,
    /// Committed records at the end.
    pub committed: u64,
    /// Faults injected.
    pub faults: u64,
}

// Timing of the simulated cluster, in milliseconds.
const TICK_MS: u64 = 5;
const HEARTBEAT_MS: u64 = 30;
const SESSION_TIMEOUT_MS: u64 = 150;
const REPLICA_LAG_MAX_MS: u64 = 200;
const REGISTER_RETRY_MS: u64 = 25;
const MAX_DELAY_MS: u64 = 8;
const LOSS_PERCENT: u64 = 2;
const DUPLICATE_PERCENT: u64 = 2;
const PRODUCE_CLIENT_TIMEOUT_MS: u64 = 300;
const READ_TIMEOUT_MS: u64 = 200;
const CONSUMERS: usize = 2;
const MAX_PRODUCES_IN_FLIGHT: usize = 32;
const SERVE_RECORDS_PER_BATCH: usize = 4;
const SERVE_BATCHES: usize = 8;

/// A node of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Broker(usize),
    Controller,
    Client,
}

#[derive(Debug, Clone)]
enum Payload {
    Fetch(FetchRequest),
    FetchAnswer(FetchResponse, Vec<u64>),
    AlterPartition(AlterPartitionRequest),
    AlterPartitionAnswer(AlterPartitionResponse),
    Register {
        incarnation: u64,
        previous_epoch: Option<BrokerEpoch>,
    },
    RegisterAnswer {
        incarnation: u64,
        result: Result<BrokerEpoch, ControllerError>,
    },
    Heartbeat(BrokerEpoch),
    ControlledShutdown(BrokerEpoch),
    HeartbeatAnswer(BrokerEpoch, Option<PartitionState>, BTreeSet<BrokerId>),
    Metadata(PartitionState),
    Produce(ProduceRequest, Vec<u64>),
    ProduceAnswer(ProduceId, Result<Offset, ProduceError>),
    Read {
        consumer: usize,
        id: u64,
        epoch: Option<LeaderEpoch>,
        from: Offset,
    },
    ReadAnswer {
        consumer: usize,
        id: u64,
        answer: Option<(LeaderEpoch, Offset, Vec<u64>)>,
    },
}

#[derive(Debug, Clone)]
struct Envelope {
    from: Node,
    to: Node,
    payload: Payload,
}

/// The network: messages by delivery time, and the cut links.
#[derive(Debug, Default)]
struct Network {
    queue: BTreeMap<(u64, u64), Envelope>,
    seq: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(Node, Node)>,
}

/// A record in a simulated log: its value (unique per run) and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// The value.
    pub value: u64,
    /// The leader epoch stamped.
    pub epoch: LeaderEpoch,
}

/// One simulated broker: process state (lost on crash) and disk.
#[derive(Debug)]
pub struct SimBroker {
    id: BrokerId,
    up: bool,
    paused_until: Millis,
    restart_at: Option<Millis>,
    /// A controlled shutdown under way: the process stops then.
    stopping_at: Option<Millis>,
    /// The disk is slow until then.
    slow_disk_until: Millis,
    incarnation: u64,
    epoch: Option<BrokerEpoch>,
    next_register: Millis,
    next_heartbeat: Millis,
    replica: Option<Replica>,
    produce_values: BTreeMap<ProduceId, Vec<u64>>,
    incoming: Vec<u64>,
    syncs: Vec<(Millis, Offset)>,
    // The disk: survives crashes.
    /// The log.
    pub log: Vec<Rec>,
    /// Its durable end.
    pub durable: usize,
    checkpoint: Vec<EpochEntry>,
    persisted_epoch: Option<BrokerEpoch>,
    /// The lowest end the log was truncated to since the last check
    /// (`usize::MAX`: none), for the checker's incremental checks.
    pub(crate) truncated_to: usize,
}

impl SimBroker {
    /// Whether its process is running.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Its replica, if running and registered.
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }
}

#[derive(Debug, Default)]
struct Consumer {
    epoch: Option<LeaderEpoch>,
    next: Offset,
    max_hw: Offset,
    in_flight: Option<(u64, Millis)>,
    next_id: u64,
}

/// The whole simulated world.
pub struct World {
    config: SimConfig,
    rng: Rng,
    now: Millis,
    net: Network,
    controller: Controller,
    published_epoch: Option<crate::PartitionEpoch>,
    /// The brokers.
    pub brokers: Vec<SimBroker>,
    consumers: Vec<Consumer>,
    produces: BTreeMap<ProduceId, (Vec<u64>, Acks, Millis)>,
    next_produce: u64,
    next_value: u64,
    next_incarnation: u64,
    checker: Checker,
    healing: bool,
    faults: u64,
    outcome: Outcome,
    actions: Vec<Action>,
}

/// Runs one simulation to its end. An assertion that fails inside (the
/// replica's, the controller's or the simulator's own: appends not
/// contiguous, epochs going back along a log, a recovered epoch cache that
/// differs from the log) is a failure of the run, with its seed, like a
/// checker's.
pub fn run(config: SimConfig) -> Outcome {
    let (seed, scenario) = (config.seed, config.scenario);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut world = World::new(config);
        world.run_to_end();
        world.outcome
    }));
    outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Outcome {
            failure: Some(format!(
                "seed {seed} scenario {} panicked: {what}",
                scenario.name()
            )),
            ..Outcome::default()
        }
    })
}

impl World {
    fn new(config: SimConfig) -> World {
        let rng = Rng::new(config.seed);
        let mut controller_config = ControllerConfig::new(SESSION_TIMEOUT_MS);
        controller_config.flaw = config.flaw;
        let controller = Controller::new(controller_config);
        let brokers = (0..config.brokers)
            .map(|i| SimBroker {
                id: BrokerId(i + 1),
                up: true,
                paused_until: Millis(0),
                restart_at: None,
                stopping_at: None,
                slow_disk_until: Millis(0),
                incarnation: 0,
                epoch: None,
                next_register: Millis(0),
                next_heartbeat: Millis(0),
                replica: None,
                produce_values: BTreeMap::new(),
                incoming: Vec::new(),
                syncs: Vec::new(),
                log: Vec::new(),
                durable: 0,
                checkpoint: Vec::new(),
                persisted_epoch: None,
                truncated_to: usize::MAX,
            })
            .collect::<Vec<_>>();
        let mut checker = Checker::new(brokers.len(), config.scenario == Scenario::Unclean);
        if config.client_view_only {
            checker.client_view_only();
        }
        let mut world = World {
            rng,
            now: Millis(0),
            net: Network::default(),
            controller,
            published_epoch: None,
            brokers,
            consumers: (0..CONSUMERS).map(|_| Consumer::default()).collect(),
            produces: BTreeMap::new(),
            next_produce: 1,
            next_value: 1,
            next_incarnation: 1,
            checker,
            healing: false,
            faults: 0,
            outcome: Outcome::default(),
            actions: Vec::new(),
            config,
        };
        // Register every broker before the partition exists, as a cluster
        // starts: then every replica is in the first ISR.
        for b in 0..world.brokers.len() {
            world.brokers[b].incarnation = world.next_incarnation;
            world.next_incarnation += 1;
            let (id, inc) = (world.brokers[b].id, world.brokers[b].incarnation);
            if let Ok(epoch) = world.controller.register_broker(id, inc, None, Millis(0)) {
                let _ = world.controller.heartbeat(id, epoch, Millis(0));
                world.on_registered(b, epoch);
            }
        }
        let replicas = world.brokers.iter().map(|b| b.id).collect();
        let min_isr = world.config.min_insync_replicas();
        let unclean = world.config.scenario == Scenario::Unclean;
        world
            .controller
            .create_partition(PARTITION, replicas, min_isr, unclean)
            .expect("a valid partition");
        world.publish_if_changed();
        world
    }

    /// The controller.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The simulated time.
    pub fn now(&self) -> Millis {
        self.now
    }

    fn run_to_end(&mut self) {
        let end = self.config.fault_ms;
        let heal_end = end + self.config.heal_ms;
        while self.now.0 < heal_end {
            self.now = self.now.plus(1);
            if self.now.0 == end {
                self.heal_all();
            }
            if !self.healing {
                self.inject_faults();
            }
            self.step();
            let truncated: Vec<usize> = self.brokers.iter().map(|b| b.truncated_to).collect();
            let checked = self
                .checker
                .check(&self.brokers, &truncated, &self.controller);
            for b in &mut self.brokers {
                b.truncated_to = usize::MAX;
            }
            if let Err(e) = checked {
                self.fail(e);
            }
            if self.outcome.failure.is_some() {
                break;
            }
            if self.healing && self.now.0 % 50 == 0 && self.converged() {
                break;
            }
        }
        if self.outcome.failure.is_none() {
            if let Err(e) = self.final_check() {
                self.fail(e);
            }
        }
        self.outcome.unclean_elections = self.controller.unclean_elections();
        self.outcome.loss_events = self.checker.losses();
        self.outcome.faults = self.faults;
        self.outcome.committed = self.checker.committed().len() as u64;
        self.outcome.leader_epochs = self
            .controller
            .partition(PARTITION)
            .map_or(0, |p| p.leader_epoch.0);
    }

    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.config.trace {
            println!("{:>6} {what}", self.now.0);
        }
    }

    fn fail(&mut self, e: String) {
        if self.outcome.failure.is_some() {
            return;
        }
        self.outcome.failure = Some(format!(
            "seed {} scenario {} at {} ms: {e}",
            self.config.seed,
            self.config.scenario.name(),
            self.now
        ));
    }

    fn step(&mut self) {
        // Messages due now.
        while let Some(entry) = self.net.queue.first_entry() {
            if entry.key().0 > self.now.0 {
                break;
            }
            let envelope = entry.remove();
            self.deliver(envelope);
        }
        // Disks.
        for b in 0..self.brokers.len() {
            self.complete_syncs(b);
        }
        // Timers.
        if self.now.0 % TICK_MS == 0 {
            self.controller.tick(self.now);
            self.publish_if_changed();
            for b in 0..self.brokers.len() {
                self.broker_timers(b);
            }
        }
        if !self.healing {
            self.clients();
        }
        self.client_timeouts();
    }

    // ---- the network ----

    fn send(&mut self, from: Node, to: Node, payload: Payload) {
        if self.net.cut.contains(&(from, to)) || self.rng.chance(LOSS_PERCENT) {
            return;
        }
        // Produces are not retried (no idempotent producer here), so the
        // clients' links never duplicate; peers' and the controller's do.
        let client = from == Node::Client || to == Node::Client;
        let copies = if !client && self.rng.chance(DUPLICATE_PERCENT) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now.0 + self.rng.range(1, MAX_DELAY_MS);
            self.net.seq += 1;
            self.net.queue.insert(
                (at, self.net.seq),
                Envelope {
                    from,
                    to,
                    payload: payload.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        if self.net.cut.contains(&(envelope.from, envelope.to)) {
            return;
        }
        match envelope.to {
            Node::Controller => self.controller_receive(envelope.from, envelope.payload),
            Node::Client => self.client_receive(envelope.payload),
            Node::Broker(b) => {
                let broker = &self.brokers[b];
                if !broker.up {
                    return;
                }
                if broker.paused_until > self.now {
                    // Held in the socket until it runs again.
                    self.net.seq += 1;
                    self.net
                        .queue
                        .insert((broker.paused_until.0, self.net.seq), envelope);
                    return;
                }
                self.broker_receive(b, envelope.from, envelope.payload);
            }
        }
    }

    // ---- the controller ----

    fn controller_receive(&mut self, from: Node, payload: Payload) {
        let Node::Broker(b) = from else {
            return;
        };
        let id = self.brokers[b].id;
        let now = self.now;
        match payload {
            Payload::Register {
                incarnation,
                previous_epoch,
            } => {
                let result = self
                    .controller
                    .register_broker(id, incarnation, previous_epoch, now);
                self.send(
                    Node::Controller,
                    from,
                    Payload::RegisterAnswer {
                        incarnation,
                        result,
                    },
                );
            }
            Payload::Heartbeat(epoch) => {
                let accepted = self.controller.heartbeat(id, epoch, now).is_ok();
                let state = self
                    .controller
                    .partition(PARTITION)
                    .map(|p| p.broker_view());
                if accepted {
                    let ineligible = self.controller.ineligible(PARTITION);
                    self.send(
                        Node::Controller,
                        from,
                        Payload::HeartbeatAnswer(epoch, state, ineligible),
                    );
                }
            }
            Payload::ControlledShutdown(epoch) => {
                let _ = self.controller.controlled_shutdown(id, epoch);
            }
            Payload::AlterPartition(request) => {
                let answer = self.controller.alter_partition(&request);
                self.send(
                    Node::Controller,
                    from,
                    Payload::AlterPartitionAnswer(answer),
                );
            }
            _ => {}
        }
        self.publish_if_changed();
    }

    /// Sends the registration to every broker when it changed.
    fn publish_if_changed(&mut self) {
        let Some(reg) = self.controller.partition(PARTITION) else {
            return;
        };
        if self.published_epoch == Some(reg.partition_epoch) {
            return;
        }
        self.published_epoch = Some(reg.partition_epoch);
        let state = reg.broker_view();
        self.trace(format_args!(
            "registration: leader {:?} epoch {} isr {:?} elr {:?} (partition epoch {})",
            reg.leader, reg.leader_epoch, reg.isr, reg.elr, reg.partition_epoch
        ));
        let reg = reg.clone();
        if let Err(e) = self.checker.on_registration(&reg, &self.brokers) {
            self.fail(e);
        }
        for b in 0..self.brokers.len() {
            self.send(
                Node::Controller,
                Node::Broker(b),
                Payload::Metadata(state.clone()),
            );
        }
    }

    // ---- brokers ----

    fn on_registered(&mut self, b: usize, epoch: BrokerEpoch) {
        self.trace(format_args!(
            "broker {} registered with epoch {epoch}",
            self.brokers[b].id
        ));
        let broker = &mut self.brokers[b];
        broker.epoch = Some(epoch);
        // Written at registration: every replica's counted data is durable
        // (the fsync decision), so a restart is always a clean one.
        broker.persisted_epoch = Some(epoch);
        let mut config =
            ReplicaConfig::new(broker.id, PARTITION, self.config.min_insync_replicas());
        config.replica_lag_time_max_ms = REPLICA_LAG_MAX_MS;
        config.fetch_timeout_ms = 60;
        config.fetch_max_wait_ms = 40;
        config.fetch_backoff_ms = 10;
        config.alter_partition_retry_ms = 40;
        config.produce_timeout_ms = 1_000;
        config.flaw = self.config.flaw;
        let recovered = Recovered {
            log_end: Offset(broker.log.len() as u64),
            epochs: broker.checkpoint.clone(),
        };
        let replica =
            Replica::new(config, epoch, recovered).expect("the simulator's checkpoint is valid");
        assert_eq!(
            replica.epochs(),
            &derived_epochs(&broker.log),
            "recovered epoch cache differs from the log's epochs"
        );
        broker.replica = Some(replica);
        broker.next_heartbeat = self.now;
    }

    fn broker_receive(&mut self, b: usize, from: Node, payload: Payload) {
        match payload {
            Payload::RegisterAnswer {
                incarnation,
                result: Ok(epoch),
            } if incarnation == self.brokers[b].incarnation && self.brokers[b].epoch.is_none() => {
                self.on_registered(b, epoch);
            }
            Payload::HeartbeatAnswer(epoch, Some(state), ineligible)
                if Some(epoch) == self.brokers[b].epoch =>
            {
                self.replica_event(b, Event::Ineligible(ineligible));
                self.replica_event(b, Event::Metadata(state));
            }
            Payload::Metadata(state) => self.replica_event(b, Event::Metadata(state)),
            Payload::Fetch(request) => self.replica_event(b, Event::Fetch(request)),
            Payload::FetchAnswer(response, values) => {
                self.brokers[b].incoming = values;
                self.replica_event(b, Event::FetchAnswer(response));
                self.brokers[b].incoming.clear();
            }
            Payload::AlterPartitionAnswer(answer) => {
                self.replica_event(b, Event::AlterPartitionAnswer(answer))
            }
            Payload::Produce(request, values) => {
                if self.brokers[b].replica.is_none() {
                    self.send(
                        Node::Broker(b),
                        from,
                        Payload::ProduceAnswer(request.id, Err(ProduceError::NotLeader)),
                    );
                    return;
                }
                self.brokers[b].produce_values.insert(request.id, values);
                self.replica_event(b, Event::Produce(request));
                self.brokers[b].produce_values.remove(&request.id);
            }
            Payload::Read {
                consumer,
                id,
                epoch,
                from: offset,
            } => {
                let broker = &self.brokers[b];
                let answer = broker
                    .replica
                    .as_ref()
                    .and_then(|r| r.reader_view(epoch).ok())
                    .map(|view| {
                        let start = (offset.0 as usize).min(view.high_watermark.0 as usize);
                        let stop = (view.high_watermark.0 as usize).min(start + 16);
                        let values = broker.log[start..stop].iter().map(|r| r.value).collect();
                        (view.leader_epoch, view.high_watermark, values)
                    });
                self.send(
                    Node::Broker(b),
                    from,
                    Payload::ReadAnswer {
                        consumer,
                        id,
                        answer,
                    },
                );
            }
            _ => {}
        }
    }

    fn replica_event(&mut self, b: usize, event: Event) {
        let now = self.now;
        let Some(replica) = self.brokers[b].replica.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.actions);
        replica.handle(now, event, &mut out);
        for action in out.drain(..) {
            self.apply(b, action);
        }
        self.actions = out;
        let broker = &self.brokers[b];
        if let Some(r) = &broker.replica {
            assert_eq!(
                r.log_end().0 as usize,
                broker.log.len(),
                "replica and log disagree on the end"
            );
            assert!(
                r.durable_end().0 as usize <= broker.durable,
                "replica counts more durable than the disk has"
            );
        }
    }

    fn apply(&mut self, b: usize, action: Action) {
        let from = Node::Broker(b);
        if self.config.trace
            && !matches!(
                action,
                Action::SendFetch { .. }
                    | Action::ServeFetch { .. }
                    | Action::Sync { .. }
                    | Action::ProduceAnswer { .. }
            )
        {
            self.trace(format_args!("broker {}: {action:?}", self.brokers[b].id));
        }
        match action {
            Action::SendFetch { to, request } => {
                if let Some(t) = self.broker_index(to) {
                    self.send(from, Node::Broker(t), Payload::Fetch(request));
                }
            }
            Action::ServeFetch {
                to,
                mut response,
                read_from,
            } => {
                let mut values = Vec::new();
                if let Some(start) = read_from {
                    response.batches = serve(&self.brokers[b].log, start, &mut values);
                }
                if let Some(t) = self.broker_index(to) {
                    self.send(
                        from,
                        Node::Broker(t),
                        Payload::FetchAnswer(response, values),
                    );
                }
            }
            Action::SendAlterPartition(request) => {
                self.send(from, Node::Controller, Payload::AlterPartition(request))
            }
            Action::AppendAsLeader {
                produce,
                base_offset,
                last_offset,
                epoch,
            } => {
                let broker = &mut self.brokers[b];
                let values = broker
                    .produce_values
                    .get(&produce)
                    .cloned()
                    .expect("values of the produce being handled");
                assert_eq!(
                    base_offset.0 as usize,
                    broker.log.len(),
                    "leader append not at the end"
                );
                assert_eq!(values.len() as u64, last_offset.0 - base_offset.0 + 1);
                append(broker, values.into_iter().map(|value| Rec { value, epoch }));
            }
            Action::AppendAsFollower { batches } => {
                let broker = &mut self.brokers[b];
                let incoming = std::mem::take(&mut broker.incoming);
                let mut records = Vec::new();
                let mut next = broker.log.len() as u64;
                let mut i = 0;
                for batch in &batches {
                    assert_eq!(batch.base_offset.0, next, "follower append not contiguous");
                    for _ in batch.base_offset.0..=batch.last_offset.0 {
                        records.push(Rec {
                            value: incoming[i],
                            epoch: batch.epoch,
                        });
                        i += 1;
                    }
                    next = batch.end().0;
                }
                append(broker, records.into_iter());
            }
            Action::TruncateTo { end } => {
                let broker = &mut self.brokers[b];
                let end = end.0 as usize;
                assert!(end <= broker.log.len());
                broker.log.truncate(end);
                broker.durable = broker.durable.min(end);
                broker.truncated_to = broker.truncated_to.min(end);
            }
            Action::Sync { up_to } => {
                let slow = self.brokers[b].slow_disk_until > self.now;
                let due = if slow {
                    self.now.plus(self.rng.range(50, 400))
                } else {
                    self.now.plus(self.rng.range(1, 4))
                };
                self.brokers[b].syncs.push((due, up_to));
            }
            Action::WriteEpochCheckpoint { entries } => self.brokers[b].checkpoint = entries,
            Action::ProduceAnswer { produce, result } => {
                self.send(from, Node::Client, Payload::ProduceAnswer(produce, result))
            }
            Action::HighWatermark { hw } => {
                let checked = self
                    .checker
                    .leader_high_watermark(&self.brokers, b, hw.0 as usize);
                if let Err(e) = checked {
                    self.fail(e);
                }
            }
        }
    }

    fn broker_index(&self, id: BrokerId) -> Option<usize> {
        self.brokers.iter().position(|b| b.id == id)
    }

    fn complete_syncs(&mut self, b: usize) {
        let now = self.now;
        let broker = &mut self.brokers[b];
        if !broker.up || broker.paused_until > now || broker.syncs.is_empty() {
            return;
        }
        let mut done = None;
        broker.syncs.retain(|(due, up_to)| {
            if *due <= now {
                done = Some(done.map_or(*up_to, |d: Offset| d.max(*up_to)));
                false
            } else {
                true
            }
        });
        if let Some(up_to) = done {
            // fdatasync flushes what the file holds when it runs.
            let end = (up_to.0 as usize).min(broker.log.len());
            broker.durable = broker.durable.max(end);
            let durable = Offset(broker.durable as u64);
            self.replica_event(b, Event::Durable { end: durable });
        }
    }

    fn broker_timers(&mut self, b: usize) {
        let now = self.now;
        let broker = &self.brokers[b];
        if !broker.up {
            if broker.restart_at.is_some_and(|t| t <= now) {
                self.restart(b);
            }
            return;
        }
        if broker.paused_until > now {
            return;
        }
        if broker.stopping_at.is_some_and(|t| t <= now) {
            // Clean: everything is fsynced before the process exits.
            let broker = &mut self.brokers[b];
            broker.durable = broker.log.len();
            broker.stopping_at = None;
            let down = self.rng.range(20, 200);
            self.crash(b, down);
            return;
        }
        match broker.epoch {
            None => {
                if broker.next_register <= now {
                    let payload = Payload::Register {
                        incarnation: broker.incarnation,
                        previous_epoch: broker.persisted_epoch,
                    };
                    self.brokers[b].next_register = now.plus(REGISTER_RETRY_MS);
                    self.send(Node::Broker(b), Node::Controller, payload);
                }
            }
            Some(epoch) => {
                if broker.next_heartbeat <= now {
                    self.brokers[b].next_heartbeat = now.plus(HEARTBEAT_MS);
                    self.send(Node::Broker(b), Node::Controller, Payload::Heartbeat(epoch));
                }
                self.replica_event(b, Event::Tick);
            }
        }
    }

    /// A crash: the process and everything not durable are gone.
    pub fn crash(&mut self, b: usize, down_ms: u64) {
        let now = self.now;
        let broker = &mut self.brokers[b];
        if !broker.up {
            return;
        }
        broker.up = false;
        broker.replica = None;
        broker.epoch = None;
        broker.syncs.clear();
        broker.produce_values.clear();
        broker.paused_until = Millis(0);
        broker.stopping_at = None;
        if broker.log.len() > broker.durable {
            broker.log.truncate(broker.durable);
            broker.truncated_to = broker.truncated_to.min(broker.durable);
        }
        broker.restart_at = Some(now.plus(down_ms));
        self.faults += 1;
        let (id, end) = (self.brokers[b].id, self.brokers[b].log.len());
        self.trace(format_args!(
            "broker {id} crashes, log back to its durable end {end}"
        ));
    }

    fn restart(&mut self, b: usize) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let now = self.now;
        let broker = &mut self.brokers[b];
        broker.up = true;
        broker.restart_at = None;
        broker.incarnation = incarnation;
        broker.next_register = now;
    }

    // ---- clients ----

    fn clients(&mut self) {
        let leader = self
            .controller
            .partition(PARTITION)
            .and_then(|p| p.leader)
            .and_then(|l| self.broker_index(l));
        if self.rng.chance(20) && self.produces.len() < MAX_PRODUCES_IN_FLIGHT {
            // Mostly the leader as the metadata has it, sometimes a stale one.
            let target = if self.rng.chance(85) {
                leader
            } else {
                Some(self.rng.index(self.brokers.len()))
            };
            if let Some(t) = target {
                let records = self.rng.range(1, 3);
                let values: Vec<u64> = (0..records)
                    .map(|_| {
                        self.next_value += 1;
                        self.next_value
                    })
                    .collect();
                let acks = if self.rng.chance(70) {
                    Acks::All
                } else {
                    Acks::Leader
                };
                let id = ProduceId(self.next_produce);
                self.next_produce += 1;
                self.produces.insert(id, (values.clone(), acks, self.now));
                let request = ProduceRequest {
                    id,
                    records: records as u32,
                    acks,
                };
                self.send(
                    Node::Client,
                    Node::Broker(t),
                    Payload::Produce(request, values),
                );
            }
        }
        for c in 0..self.consumers.len() {
            if self.consumers[c].in_flight.is_some() || !self.rng.chance(10) {
                continue;
            }
            let target = if self.rng.chance(80) {
                leader
            } else {
                Some(self.rng.index(self.brokers.len()))
            };
            let Some(t) = target else { continue };
            let consumer = &mut self.consumers[c];
            consumer.next_id += 1;
            let id = consumer.next_id;
            consumer.in_flight = Some((id, self.now));
            let payload = Payload::Read {
                consumer: c,
                id,
                epoch: consumer.epoch,
                from: consumer.next,
            };
            self.send(Node::Client, Node::Broker(t), payload);
        }
    }

    fn client_timeouts(&mut self) {
        let now = self.now;
        self.produces
            .retain(|_, (_, _, sent)| now.since(*sent) < PRODUCE_CLIENT_TIMEOUT_MS);
        for c in &mut self.consumers {
            if c.in_flight
                .is_some_and(|(_, sent)| now.since(sent) >= READ_TIMEOUT_MS)
            {
                c.in_flight = None;
            }
        }
    }

    fn client_receive(&mut self, payload: Payload) {
        match payload {
            Payload::ProduceAnswer(id, result) => {
                let Some((values, acks, _)) = self.produces.remove(&id) else {
                    return;
                };
                if let Ok(base) = result {
                    match acks {
                        Acks::All => self.outcome.acked_all += 1,
                        Acks::Leader => self.outcome.acked_one += 1,
                    }
                    if let Err(e) = self.checker.on_ack(base, &values, acks) {
                        self.fail(e);
                    }
                }
            }
            Payload::ReadAnswer {
                consumer,
                id,
                answer,
            } => {
                let c = &mut self.consumers[consumer];
                if c.in_flight.map(|(i, _)| i) != Some(id) {
                    return;
                }
                c.in_flight = None;
                let Some((epoch, hw, values)) = answer else {
                    return;
                };
                let from = c.next;
                let before = c.max_hw;
                c.max_hw = c.max_hw.max(hw);
                c.epoch = Some(c.epoch.map_or(epoch, |e| e.max(epoch)));
                c.next = c.next.plus(values.len() as u64);
                if let Err(e) = self.checker.on_read(consumer, before, hw, from, &values) {
                    self.fail(e);
                }
            }
            _ => {}
        }
    }

    // ---- faults ----

    fn leader(&self) -> Option<usize> {
        self.controller
            .partition(PARTITION)
            .and_then(|p| p.leader)
            .and_then(|l| self.broker_index(l))
    }

    fn random_broker(&mut self) -> usize {
        self.rng.index(self.brokers.len())
    }

    fn isolate(&mut self, b: usize) {
        let n = Node::Broker(b);
        for other in (0..self.brokers.len())
            .map(Node::Broker)
            .chain([Node::Controller])
        {
            if other != n {
                self.net.cut.insert((n, other));
                self.net.cut.insert((other, n));
            }
        }
    }

    fn heal_network(&mut self) {
        self.net.cut.clear();
    }

    fn inject_faults(&mut self) {
        let scenario = match self.config.scenario {
            Scenario::Mixed => {
                // Another scenario's fault each time, chosen at random.
                let i = self.rng.index(Scenario::ALL.len() - 2);
                Scenario::ALL[i]
            }
            s => s,
        };
        // One decision per 10 ms keeps fault rates independent of steps.
        if self.now.0 % 10 != 0 {
            return;
        }
        let n = self.brokers.len();
        match scenario {
            Scenario::LeaderCrash => {
                if self.rng.chance(1) {
                    if let Some(l) = self.leader() {
                        let down = self.rng.range(20, 300);
                        self.crash(l, down);
                    }
                }
            }
            Scenario::FollowerCrash => {
                if self.rng.chance(2) {
                    let leader = self.leader();
                    let b = self.random_broker();
                    if Some(b) != leader {
                        let down = self.rng.range(20, 400);
                        self.crash(b, down);
                    }
                }
            }
            Scenario::LeaderIsolation => {
                if self.net.cut.is_empty() && self.rng.chance(4) {
                    if let Some(l) = self.leader() {
                        self.isolate(l);
                        self.faults += 1;
                    }
                } else if !self.net.cut.is_empty() && self.rng.chance(4) {
                    self.heal_network();
                }
            }
            Scenario::OneWay => {
                if self.rng.chance(6) {
                    let from = self.random_broker();
                    let to = if self.rng.chance(30) {
                        Node::Controller
                    } else {
                        Node::Broker(self.rng.index(n))
                    };
                    let (a, z) = if self.rng.chance(50) {
                        (Node::Broker(from), to)
                    } else {
                        (to, Node::Broker(from))
                    };
                    if a != z {
                        self.net.cut.insert((a, z));
                        self.faults += 1;
                    }
                }
                if self.rng.chance(4) {
                    self.heal_network();
                }
            }
            Scenario::Bridge => {
                if self.net.cut.is_empty() && self.rng.chance(4) {
                    let bridge = self.random_broker();
                    let sides: Vec<usize> = (0..n).filter(|b| *b != bridge).collect();
                    for (i, a) in sides.iter().enumerate() {
                        for z in &sides[i + 1..] {
                            self.net.cut.insert((Node::Broker(*a), Node::Broker(*z)));
                            self.net.cut.insert((Node::Broker(*z), Node::Broker(*a)));
                        }
                    }
                    // Sometimes one side loses the controller too.
                    if self.rng.chance(50) {
                        let side = sides[self.rng.index(sides.len())];
                        self.net.cut.insert((Node::Broker(side), Node::Controller));
                        self.net.cut.insert((Node::Controller, Node::Broker(side)));
                    }
                    self.faults += 1;
                } else if !self.net.cut.is_empty() && self.rng.chance(3) {
                    self.heal_network();
                }
            }
            Scenario::Flapping => {
                if self.rng.chance(15) {
                    if self.rng.chance(50) {
                        self.heal_network();
                    } else if let (true, Some(l)) = (self.rng.chance(50), self.leader()) {
                        self.isolate(l);
                        self.faults += 1;
                    } else {
                        let a = Node::Broker(self.random_broker());
                        let z = if self.rng.chance(30) {
                            Node::Controller
                        } else {
                            Node::Broker(self.rng.index(n))
                        };
                        if a != z {
                            self.net.cut.insert((a, z));
                            self.net.cut.insert((z, a));
                            self.faults += 1;
                        }
                    }
                }
            }
            Scenario::PausedBroker => {
                if self.rng.chance(3) {
                    let b = if self.rng.chance(50) {
                        self.leader().unwrap_or(0)
                    } else {
                        self.random_broker()
                    };
                    if self.brokers[b].up && self.brokers[b].paused_until <= self.now {
                        let pause = self.rng.range(100, 600);
                        self.brokers[b].paused_until = self.now.plus(pause);
                        self.faults += 1;
                    }
                }
            }
            Scenario::Outage => {
                if self.rng.chance(1) {
                    for b in 0..n {
                        let down = self.rng.range(10, 300);
                        self.crash(b, down);
                    }
                }
            }
            Scenario::ControlledShutdown => {
                if self.rng.chance(5) && self.controller.elect_preferred_leader(PARTITION) {
                    self.faults += 1;
                    self.publish_if_changed();
                }
                if self.rng.chance(2) {
                    let b = if self.rng.chance(60) {
                        self.leader().unwrap_or(0)
                    } else {
                        self.random_broker()
                    };
                    let broker = &mut self.brokers[b];
                    if let (true, None, Some(epoch)) = (broker.up, broker.stopping_at, broker.epoch)
                    {
                        broker.stopping_at = Some(self.now.plus(60));
                        self.faults += 1;
                        self.send(
                            Node::Broker(b),
                            Node::Controller,
                            Payload::ControlledShutdown(epoch),
                        );
                    }
                }
            }
            Scenario::SlowDisk => {
                if self.rng.chance(3) {
                    let b = self.random_broker();
                    let until = self.now.plus(self.rng.range(200, 800));
                    self.brokers[b].slow_disk_until = until;
                    self.faults += 1;
                }
            }
            Scenario::Unclean => {
                // Followers cut off (the ISR shrinks to the leader), then the
                // leader isolated or crashed, then anything heals.
                if self.rng.chance(5) {
                    match self.rng.index(4) {
                        0 => {
                            if let Some(l) = self.leader() {
                                for f in (0..n).filter(|f| *f != l) {
                                    self.net.cut.insert((Node::Broker(l), Node::Broker(f)));
                                    self.net.cut.insert((Node::Broker(f), Node::Broker(l)));
                                }
                                self.faults += 1;
                            }
                        }
                        1 => {
                            if let Some(l) = self.leader() {
                                self.isolate(l);
                                self.faults += 1;
                            }
                        }
                        2 => {
                            if let Some(l) = self.leader() {
                                let down = self.rng.range(50, 400);
                                self.crash(l, down);
                            }
                        }
                        _ => self.heal_network(),
                    }
                }
            }
            Scenario::Mixed => {}
        }
    }

    fn heal_all(&mut self) {
        self.healing = true;
        self.heal_network();
        let now = self.now;
        for b in 0..self.brokers.len() {
            let broker = &mut self.brokers[b];
            broker.paused_until = broker.paused_until.min(now);
            broker.slow_disk_until = broker.slow_disk_until.min(now);
            if !broker.up {
                broker.restart_at = Some(now);
            }
        }
    }

    /// Every replica in the ISR, all identical to the leader, which has
    /// its high watermark at its log end, and nothing in flight.
    fn converged(&self) -> bool {
        let Some(reg) = self.controller.partition(PARTITION) else {
            return false;
        };
        let Some(l) = self.leader() else {
            return false;
        };
        if reg.isr.len() != self.brokers.len() || !self.produces.is_empty() {
            return false;
        }
        let leader = &self.brokers[l];
        let Some(lr) = leader.replica.as_ref() else {
            return false;
        };
        if lr.role() != RoleKind::Leader
            || lr.leader_epoch() != Some(reg.leader_epoch)
            || lr.high_watermark().0 as usize != leader.log.len()
        {
            return false;
        }
        self.brokers
            .iter()
            .all(|b| b.up && b.replica.is_some() && b.log == leader.log && b.durable == b.log.len())
    }

    fn final_check(&mut self) -> Result<(), String> {
        if !self.converged() {
            let reg = self.controller.partition(PARTITION);
            let ends: Vec<(usize, usize, Option<RoleKind>)> = self
                .brokers
                .iter()
                .map(|b| (b.log.len(), b.durable, b.replica.as_ref().map(|r| r.role())))
                .collect();
            return Err(format!(
                "not converged {} ms after healing: registration {reg:?}, logs (end, durable, role) {ends:?}",
                self.config.heal_ms
            ));
        }
        let l = self.leader().ok_or("no leader after healing")?;
        let log = &self.brokers[l].log;
        let (lost_all, lost_one) = self.checker.final_check(log)?;
        self.outcome.lost_acks_all = lost_all;
        self.outcome.lost_acks_one = lost_one;
        Ok(())
    }
}

fn append(broker: &mut SimBroker, records: impl Iterator<Item = Rec>) {
    for r in records {
        if let Some(last) = broker.log.last() {
            assert!(r.epoch >= last.epoch, "epochs decrease along the log");
        }
        broker.log.push(r);
    }
    if let Some(replica) = &broker.replica {
        debug_assert_eq!(replica.epochs(), &derived_epochs(&broker.log));
    }
}

/// The epoch cache the log's records imply.
pub fn derived_epochs(log: &[Rec]) -> EpochCache {
    let mut cache = EpochCache::new();
    for (offset, r) in log.iter().enumerate() {
        let _ = cache.assign(r.epoch, Offset(offset as u64));
    }
    cache
}

/// Reads whole simulated batches (runs of one epoch, a few records each)
/// from `start`, as a leader's log read would.
fn serve(log: &[Rec], start: Offset, values: &mut Vec<u64>) -> Vec<BatchMeta> {
    let mut batches = Vec::new();
    let mut at = start.0 as usize;
    while at < log.len() && batches.len() < SERVE_BATCHES {
        let epoch = log[at].epoch;
        let mut end = at;
        while end < log.len() && end - at < SERVE_RECORDS_PER_BATCH && log[end].epoch == epoch {
            values.push(log[end].value);
            end += 1;
        }
        batches.push(BatchMeta {
            base_offset: Offset(at as u64),
            last_offset: Offset(end as u64 - 1),
            epoch,
        });
        at = end;
    }
    batches
}
