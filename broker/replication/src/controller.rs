//! The controller's side of replication as a pure state machine: brokers'
//! epochs and fencing as far as replication needs them, and each
//! partition's registration {replicas, leader, leader epoch, partition
//! epoch, ISR, ELR}, changed by broker fencing and unfencing, registration,
//! controlled shutdown and the leaders' AlterPartition requests. In the
//! server it runs inside the metadata quorum's state machine (every change
//! one committed record); here it is one linearizable actor.
//!
//! Follows kafka-tlaplus `kafka_data_replication/kraft/kip-966`:
//! - fencing: `HandleBrokerFenced` (the broker leaves the ISR; moved to
//!   the ELR if the ISR falls below MinISR; a new leader from the ISR, else
//!   an unfenced ELR member, else none), `kip_966_functions.tla`
//!   `MaybeUpdatePartitionOnBrokerChange`, `UpdateElr`;
//!   `description/2_replication_algorithm.md` §2.8, §2.9.1;
//! - unfencing: `HandleBrokerUnfenced` (no leader: elect from the ELR);
//! - registration: `ReceiveBrokerRegRequest`, `ProcessUncleanBroker` (a
//!   broker that comes back without its clean-shutdown epoch leaves the
//!   ELR: Unclean Exclusion, `5_recovery.md` §5.2);
//! - AlterPartition: `ReceiveAlterPartitionRequest`,
//!   `ValidateAlterPartitionRequest` (leader and its broker epoch, partition
//!   epoch compare-and-set, every added member's broker epoch: KIP-903).
//!
//! Not in the model, added here: unclean leader election, only for a
//! partition whose topic sets the flag. When no ISR or ELR member is
//! unfenced, any unfenced replica is made leader with an ISR of itself and
//! the ELR cleared. That can LOSE COMMITTED DATA: the new leader may lack
//! acknowledged records, and the others truncate to it. It is Kafka's
//! `unclean.leader.election.enable` (and KIP-966's "proactive" recovery
//! without its log inspection). Counted in [`Controller::unclean_elections`].
//! Also not in the model: a preferred-leader election
//! ([`Controller::elect_preferred_leader`], the rebalance after a broker
//! returns), a clean leader change to the first replica when it is in the
//! ISR. Not here: reassignment (adding/removing replicas), KIP-966's
//! balanced unclean recovery with LastKnownELR.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{BrokerEpoch, BrokerId, LeaderEpoch, Millis, PartitionEpoch, PartitionId};
use crate::limits::MAX_REPLICAS;
use crate::message::{
    AlterPartitionError, AlterPartitionRequest, AlterPartitionResponse, PartitionState,
};
use crate::replica::flawed;

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A broker silent for longer is fenced.
    pub session_timeout_ms: u64,
    /// Test-only: a deliberate protocol flaw.
    #[cfg(any(test, feature = "sim"))]
    pub flaw: Option<crate::Flaw>,
}

impl ControllerConfig {
    /// With a session timeout.
    pub fn new(session_timeout_ms: u64) -> Self {
        ControllerConfig {
            session_timeout_ms,
            #[cfg(any(test, feature = "sim"))]
            flaw: None,
        }
    }
}

/// A partition's registration at the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    /// The partition.
    pub partition: PartitionId,
    /// Replicas in preference order.
    pub replicas: Vec<BrokerId>,
    /// The leader, if any.
    pub leader: Option<BrokerId>,
    /// The leader's term.
    pub leader_epoch: LeaderEpoch,
    /// The registration's version.
    pub partition_epoch: PartitionEpoch,
    /// In-sync replicas.
    pub isr: BTreeSet<BrokerId>,
    /// Eligible leader replicas (KIP-966): out of the ISR but still
    /// holding the whole committed log, because the high watermark cannot
    /// advance while the ISR is below MinISR.
    pub elr: BTreeSet<BrokerId>,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// The topic allows unclean leader election (may lose data).
    pub unclean_leader_election: bool,
}

impl PartitionRegistration {
    /// What brokers see.
    pub fn broker_view(&self) -> PartitionState {
        PartitionState {
            partition: self.partition,
            replicas: self.replicas.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: self.isr.clone(),
        }
    }
}

/// A broker as the controller has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    /// Its current epoch.
    pub epoch: BrokerEpoch,
    /// The driver's id of the process that registered (retries match it).
    pub incarnation: u64,
    /// Fenced: no leadership, no ISR membership.
    pub fenced: bool,
    /// In controlled shutdown: stays fenced until it registers again.
    pub shutting_down: bool,
    /// Its last heartbeat.
    pub last_heartbeat: Millis,
    /// This registration has been unfenced (so its replicas may have
    /// joined an ISR).
    pub served: bool,
    /// Until this registration serves: the oldest epoch a clean restart
    /// may present, that of the last registration that served (those since
    /// never served, so their data is that one's). Once it serves, its own
    /// epoch is.
    pub clean_floor: BrokerEpoch,
}

/// Why the controller refused a broker's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// Another incarnation of that broker is still registered and not yet
    /// fenced (retry later).
    #[error("the broker's previous registration is still live")]
    StillRegistered,
    /// The request carries a broker epoch that is not the current one.
    #[error("stale broker epoch")]
    StaleBrokerEpoch,
    /// No such broker.
    #[error("unknown broker")]
    UnknownBroker,
    /// A partition with no replicas, too many, duplicates, or a MinISR of
    /// 0 or above the replica count.
    #[error("invalid partition")]
    InvalidPartition,
    /// The partition exists.
    #[error("partition exists")]
    PartitionExists,
}

/// The controller.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    partitions: BTreeMap<PartitionId, PartitionRegistration>,
    next_broker_epoch: u64,
    unclean_elections: u64,
}

impl Controller {
    /// An empty controller.
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            brokers: BTreeMap::new(),
            partitions: BTreeMap::new(),
            next_broker_epoch: 1,
            unclean_elections: 0,
        }
    }

    /// The replicas of `partition` that may not join its ISR now: fenced,
    /// shutting down or unknown (what a broker learns from the metadata,
    /// [`crate::Event::Ineligible`]).
    pub fn ineligible(&self, partition: PartitionId) -> BTreeSet<BrokerId> {
        let view = Brokers(&self.brokers);
        self.partitions
            .get(&partition)
            .map(|p| {
                p.replicas
                    .iter()
                    .copied()
                    .filter(|b| !view.is_unfenced(*b))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A partition's registration.
    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionRegistration> {
        self.partitions.get(&partition)
    }

    /// Every partition.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionRegistration> {
        self.partitions.values()
    }

    /// A broker's record.
    pub fn broker(&self, broker: BrokerId) -> Option<&BrokerRecord> {
        self.brokers.get(&broker)
    }

    /// How many unclean elections were made (each may have lost data).
    pub fn unclean_elections(&self) -> u64 {
        self.unclean_elections
    }

    /// Creates a partition ([`new_partition`] over this controller's
    /// brokers).
    pub fn create_partition(
        &mut self,
        partition: PartitionId,
        replicas: Vec<BrokerId>,
        min_insync_replicas: usize,
        unclean_leader_election: bool,
    ) -> Result<&PartitionRegistration, ControllerError> {
        if self.partitions.contains_key(&partition) {
            return Err(ControllerError::PartitionExists);
        }
        let registration = new_partition(
            partition,
            replicas,
            min_insync_replicas,
            unclean_leader_election,
            &Brokers(&self.brokers),
        )?;
        Ok(self.partitions.entry(partition).or_insert(registration))
    }

    /// Registers a broker process. `previous_epoch` is the last epoch the
    /// broker recorded durably (`None`: none, e.g. a new disk). It is a clean
    /// restart if that epoch is the current registration's, or one since the
    /// last registration that served (a registration whose answer was lost
    /// never served, so the broker could not know it); otherwise its
    /// replicas leave the ELR (KIP-966's unclean restart). The broker starts
    /// fenced; its next heartbeat unfences it. A retry of the same
    /// incarnation gets its epoch back.
    pub fn register_broker(
        &mut self,
        broker: BrokerId,
        incarnation: u64,
        previous_epoch: Option<BrokerEpoch>,
        now: Millis,
    ) -> Result<BrokerEpoch, ControllerError> {
        let epoch = BrokerEpoch(self.next_broker_epoch);
        let mut clean = false;
        let mut clean_floor = epoch;
        if let Some(existing) = self.brokers.get(&broker) {
            if existing.incarnation == incarnation {
                return Ok(existing.epoch);
            }
            if !existing.fenced {
                return Err(ControllerError::StillRegistered);
            }
            clean = restart_is_clean(
                existing.epoch,
                existing.served,
                existing.clean_floor,
                previous_epoch,
            );
            if clean {
                clean_floor =
                    next_clean_floor(existing.epoch, existing.served, existing.clean_floor);
            }
        }
        self.next_broker_epoch += 1;
        self.brokers.insert(
            broker,
            BrokerRecord {
                epoch,
                incarnation,
                fenced: true,
                shutting_down: false,
                last_heartbeat: now,
                served: false,
                clean_floor,
            },
        );
        if !clean {
            let view = Brokers(&self.brokers);
            for reg in self.partitions.values_mut() {
                self.unclean_elections += u64::from(on_unclean_restart(reg, broker, &view).unclean);
            }
        }
        Ok(epoch)
    }

    /// A heartbeat: keeps the session; unfences a fenced broker of the
    /// current epoch (then a leaderless partition may elect it from the
    /// ELR). Returns whether the broker is fenced after it.
    pub fn heartbeat(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
        now: Millis,
    ) -> Result<bool, ControllerError> {
        let record = self.current(broker, epoch)?;
        record.last_heartbeat = now;
        if record.fenced && !record.shutting_down {
            record.fenced = false;
            record.served = true;
            let view = Brokers(&self.brokers);
            for reg in self.partitions.values_mut() {
                self.unclean_elections += u64::from(on_unfenced(reg, &view).unclean);
            }
        }
        Ok(self.brokers.get(&broker).is_some_and(|r| r.fenced))
    }

    /// The broker's record, if `epoch` is its current one.
    fn current(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<&mut BrokerRecord, ControllerError> {
        let record = self
            .brokers
            .get_mut(&broker)
            .ok_or(ControllerError::UnknownBroker)?;
        if record.epoch != epoch {
            return Err(ControllerError::StaleBrokerEpoch);
        }
        Ok(record)
    }

    /// Fences every broker silent for longer than the session timeout.
    pub fn tick(&mut self, now: Millis) {
        let timeout = self.config.session_timeout_ms;
        let expired: Vec<BrokerId> = self
            .brokers
            .iter()
            .filter(|(_, r)| !r.fenced && now.since(r.last_heartbeat) > timeout)
            .map(|(b, _)| *b)
            .collect();
        for b in expired {
            self.fence(b);
        }
    }

    /// A controlled shutdown: the broker is fenced at once (its leadership
    /// moves) and stays so until it registers again.
    pub fn controlled_shutdown(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<(), ControllerError> {
        self.current(broker, epoch)?.shutting_down = true;
        self.fence(broker);
        Ok(())
    }

    /// A preferred-leader election (Kafka's `ElectLeaders` with
    /// `PREFERRED`, the rebalance after a broker returns): the first replica
    /// becomes leader in a new epoch if it is in the ISR and unfenced. A
    /// clean election (the ISR and ELR do not change). Returns whether the
    /// leader changed.
    pub fn elect_preferred_leader(&mut self, partition: PartitionId) -> bool {
        let view = Brokers(&self.brokers);
        self.partitions
            .get_mut(&partition)
            .is_some_and(|reg| elect_preferred_leader(reg, &view))
    }

    /// Fences a broker (`HandleBrokerFenced` for each of its partitions).
    pub fn fence(&mut self, broker: BrokerId) {
        let Some(record) = self.brokers.get_mut(&broker) else {
            return;
        };
        record.fenced = true;
        let outside = flawed!(self.config, ElectOutsideIsr);
        let view = Brokers(&self.brokers);
        for reg in self.partitions.values_mut() {
            self.unclean_elections += u64::from(fenced_inner(reg, broker, &view, outside).unclean);
        }
    }

    /// Handles a leader's AlterPartition (`ReceiveAlterPartitionRequest`).
    pub fn alter_partition(&mut self, request: &AlterPartitionRequest) -> AlterPartitionResponse {
        let view = Brokers(&self.brokers);
        let result = match self.partitions.get_mut(&request.partition) {
            Some(reg) => alter_partition(reg, request, &view),
            None => Err(AlterPartitionError::UnknownPartition),
        };
        AlterPartitionResponse {
            partition: request.partition,
            request_partition_epoch: request.partition_epoch,
            result,
        }
    }
}

/// The brokers as a partition's transitions see them: the controller's
/// records ([`Controller`]) or the metadata image's (broker-cluster), which
/// implement this so that one set of rules decides both.
pub trait BrokerView {
    /// Whether the broker may lead or be added to an ISR: registered,
    /// unfenced and not in controlled shutdown.
    fn is_unfenced(&self, broker: BrokerId) -> bool;
    /// The broker's current epoch, if it is registered.
    fn broker_epoch(&self, broker: BrokerId) -> Option<BrokerEpoch>;
}

/// What a transition did to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transition {
    /// The registration changed (its partition epoch was bumped).
    pub changed: bool,
    /// It was an unclean election (the topic's flag allowed it): the new
    /// leader may lack acknowledged records.
    pub unclean: bool,
}

struct Brokers<'a>(&'a BTreeMap<BrokerId, BrokerRecord>);

impl BrokerView for Brokers<'_> {
    fn is_unfenced(&self, b: BrokerId) -> bool {
        self.0
            .get(&b)
            .is_some_and(|r| !r.fenced && !r.shutting_down)
    }

    fn broker_epoch(&self, b: BrokerId) -> Option<BrokerEpoch> {
        self.0.get(&b).map(|r| r.epoch)
    }
}

/// A new partition's registration: every unfenced replica in the ISR
/// (their logs are empty, so all complete), the first of them leader, both
/// epochs 0. Refused ([`ControllerError::InvalidPartition`]) with no
/// replicas, more than [`MAX_REPLICAS`], duplicates, or a MinISR of 0 or
/// above the replica count.
pub fn new_partition(
    partition: PartitionId,
    replicas: Vec<BrokerId>,
    min_insync_replicas: usize,
    unclean_leader_election: bool,
    brokers: &impl BrokerView,
) -> Result<PartitionRegistration, ControllerError> {
    let distinct: BTreeSet<BrokerId> = replicas.iter().copied().collect();
    if replicas.is_empty()
        || replicas.len() > MAX_REPLICAS
        || distinct.len() != replicas.len()
        || min_insync_replicas == 0
        || min_insync_replicas > replicas.len()
    {
        return Err(ControllerError::InvalidPartition);
    }
    let isr: BTreeSet<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|b| brokers.is_unfenced(*b))
        .collect();
    let leader = replicas.iter().copied().find(|b| isr.contains(b));
    Ok(PartitionRegistration {
        partition,
        replicas,
        leader,
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
        isr,
        elr: BTreeSet::new(),
        min_insync_replicas,
        unclean_leader_election,
    })
}

/// Whether a registration presenting `previous` (the last epoch the
/// broker recorded durably; `None` for a new or wiped disk) is a clean
/// restart of a broker whose registration on record has `epoch`, `served`
/// and `clean_floor` ([`BrokerRecord`]): `previous` is that epoch, or one
/// since the last registration that served (a registration whose answer
/// was lost never served, so the broker could not know it).
pub fn restart_is_clean(
    epoch: BrokerEpoch,
    served: bool,
    clean_floor: BrokerEpoch,
    previous: Option<BrokerEpoch>,
) -> bool {
    let floor = next_clean_floor(epoch, served, clean_floor);
    previous.is_some_and(|p| p >= floor && p <= epoch)
}

/// The clean floor a clean restart's new registration inherits: the
/// epoch on record if it served, else its own floor.
pub fn next_clean_floor(epoch: BrokerEpoch, served: bool, clean_floor: BrokerEpoch) -> BrokerEpoch {
    if served {
        epoch
    } else {
        clean_floor
    }
}

/// `HandleBrokerFenced` for one partition: `broker` (already fenced in
/// `brokers`) leaves the ISR (into the ELR while the ISR is below MinISR);
/// a leader outside the ISR is replaced from the ISR, else an unfenced ELR
/// member, else none (or an unclean election if the topic allows it).
/// Nothing changes for a partition `broker` is not a replica of.
pub fn on_fenced(
    reg: &mut PartitionRegistration,
    broker: BrokerId,
    brokers: &impl BrokerView,
) -> Transition {
    fenced_inner(reg, broker, brokers, false)
}

fn fenced_inner(
    reg: &mut PartitionRegistration,
    broker: BrokerId,
    brokers: &impl BrokerView,
    elect_outside_isr: bool,
) -> Transition {
    if !reg.replicas.contains(&broker) {
        return Transition::default();
    }
    let mut isr = reg.isr.clone();
    isr.remove(&broker);
    let elr = update_elr(reg, &isr);
    change_on_broker_change(reg, isr, elr, brokers, elect_outside_isr)
}

/// `HandleBrokerUnfenced` for one partition: a leaderless partition elects
/// from its ELR (or uncleanly, if its topic allows); others do not change.
pub fn on_unfenced(reg: &mut PartitionRegistration, brokers: &impl BrokerView) -> Transition {
    if reg.leader.is_some() {
        return Transition::default();
    }
    let (isr, elr) = (reg.isr.clone(), reg.elr.clone());
    change_on_broker_change(reg, isr, elr, brokers, false)
}

/// `ProcessUncleanBroker` for one partition: a broker that registered
/// without a clean restart ([`restart_is_clean`]) leaves the ELR (and the
/// ISR, which its fencing already did).
pub fn on_unclean_restart(
    reg: &mut PartitionRegistration,
    broker: BrokerId,
    brokers: &impl BrokerView,
) -> Transition {
    if !reg.elr.contains(&broker) && !reg.isr.contains(&broker) {
        return Transition::default();
    }
    let mut isr = reg.isr.clone();
    isr.remove(&broker);
    let mut elr = reg.elr.clone();
    elr.remove(&broker);
    change_on_broker_change(reg, isr, elr, brokers, false)
}

/// A preferred-leader election for one partition (Kafka's `ElectLeaders`
/// with `PREFERRED`): the first replica becomes leader in a new epoch if it
/// is in the ISR and unfenced; the ISR and ELR do not change. Returns
/// whether the leader changed.
pub fn elect_preferred_leader(reg: &mut PartitionRegistration, brokers: &impl BrokerView) -> bool {
    let Some(preferred) = reg.replicas.first().copied() else {
        return false;
    };
    if reg.leader == Some(preferred)
        || !reg.isr.contains(&preferred)
        || !brokers.is_unfenced(preferred)
    {
        return false;
    }
    let (isr, elr) = (reg.isr.clone(), reg.elr.clone());
    let (leader_epoch, partition_epoch) = (reg.leader_epoch.next(), reg.partition_epoch.next());
    set(
        reg,
        Some(preferred),
        isr,
        elr,
        leader_epoch,
        partition_epoch,
    );
    true
}

/// KIP-455's reassignment, begun: the replicas become `target` followed by
/// the current replicas it drops (those keep replicating, and stay in the
/// ISR, until the target is in sync); the leader, ISR and ELR do not change;
/// a new partition epoch. Target replicas not yet in the ISR fetch from the
/// leader and join it as any follower does (the leader's AlterPartition,
/// once caught up). Refused ([`ControllerError::InvalidPartition`]) for an
/// empty target, duplicates, more than [`MAX_REPLICAS`] replicas in all
/// during the move, or a MinISR above the target's size;
/// [`ControllerError::UnknownBroker`] for a target broker not registered.
pub fn begin_reassignment(
    reg: &mut PartitionRegistration,
    target: &[BrokerId],
    brokers: &impl BrokerView,
) -> Result<(), ControllerError> {
    let distinct: BTreeSet<BrokerId> = target.iter().copied().collect();
    let dropped: Vec<BrokerId> = reg
        .replicas
        .iter()
        .copied()
        .filter(|b| !distinct.contains(b))
        .collect();
    if target.is_empty()
        || distinct.len() != target.len()
        || target.len() + dropped.len() > MAX_REPLICAS
        || reg.min_insync_replicas > target.len()
    {
        return Err(ControllerError::InvalidPartition);
    }
    if target.iter().any(|b| brokers.broker_epoch(*b).is_none()) {
        return Err(ControllerError::UnknownBroker);
    }
    reg.replicas = target.iter().copied().chain(dropped).collect();
    let (leader, isr, elr) = (reg.leader, reg.isr.clone(), reg.elr.clone());
    let (leader_epoch, partition_epoch) = (reg.leader_epoch, reg.partition_epoch.next());
    set(reg, leader, isr, elr, leader_epoch, partition_epoch);
    Ok(())
}

/// KIP-455's reassignment, completed once every replica of `target` is in
/// the ISR: the replicas become `target`, the dropped ones leave the ISR
/// and the ELR, and a leader among them hands over to the first target
/// replica that is unfenced (in the ISR, so holding every committed
/// record: a clean election, in a new leader epoch); already complete,
/// nothing (false). Shrinking the ISR to
/// members that are all in sync keeps the high watermark's guarantee: it
/// never counted on the dropped replicas alone. Returns whether it
/// completed (nothing changes otherwise).
pub fn complete_reassignment(
    reg: &mut PartitionRegistration,
    target: &[BrokerId],
    brokers: &impl BrokerView,
) -> bool {
    if target.is_empty() || reg.replicas == target || !target.iter().all(|b| reg.isr.contains(b)) {
        return false;
    }
    let keep: BTreeSet<BrokerId> = target.iter().copied().collect();
    let leader = match reg.leader {
        Some(l) if keep.contains(&l) => Some(l),
        _ => match target.iter().copied().find(|b| brokers.is_unfenced(*b)) {
            Some(b) => Some(b),
            None => return false,
        },
    };
    let isr: BTreeSet<BrokerId> = reg.isr.intersection(&keep).copied().collect();
    let elr: BTreeSet<BrokerId> = reg
        .elr
        .intersection(&keep)
        .copied()
        .filter(|b| !isr.contains(b))
        .collect();
    let leader_epoch = if leader == reg.leader {
        reg.leader_epoch
    } else {
        reg.leader_epoch.next()
    };
    reg.replicas = target.to_vec();
    let partition_epoch = reg.partition_epoch.next();
    set(reg, leader, isr, elr, leader_epoch, partition_epoch);
    true
}

/// `MaybeUpdatePartitionOnBrokerChange`: applies a new ISR and ELR,
/// electing a leader if the current one is out of the ISR.
fn change_on_broker_change(
    reg: &mut PartitionRegistration,
    isr: BTreeSet<BrokerId>,
    elr: BTreeSet<BrokerId>,
    brokers: &impl BrokerView,
    elect_outside_isr: bool,
) -> Transition {
    let changed = Transition {
        changed: true,
        unclean: false,
    };
    let leader_stays = reg.leader.is_some_and(|l| isr.contains(&l));
    let elr_candidate = reg
        .replicas
        .iter()
        .copied()
        .find(|b| elr.contains(b) && brokers.is_unfenced(*b));
    if leader_stays || (reg.leader.is_none() && isr.is_empty() && elr_candidate.is_none()) {
        let unclean = reg.leader.is_none() && reg.unclean_leader_election;
        if unclean {
            if let Some(b) = reg
                .replicas
                .iter()
                .copied()
                .find(|b| brokers.is_unfenced(*b))
            {
                let (leader_epoch, partition_epoch) = (reg.leader_epoch, reg.partition_epoch);
                set(
                    reg,
                    Some(b),
                    BTreeSet::from([b]),
                    BTreeSet::new(),
                    leader_epoch.next(),
                    partition_epoch.next(),
                );
                return Transition {
                    changed: true,
                    unclean: true,
                };
            }
        }
        if isr != reg.isr || elr != reg.elr {
            let (leader, leader_epoch, partition_epoch) =
                (reg.leader, reg.leader_epoch, reg.partition_epoch);
            set(reg, leader, isr, elr, leader_epoch, partition_epoch.next());
            return changed;
        }
        return Transition::default();
    }
    let (leader_epoch, partition_epoch) = (reg.leader_epoch.next(), reg.partition_epoch.next());
    let outside = if elect_outside_isr {
        reg.replicas
            .iter()
            .copied()
            .find(|b| Some(*b) != reg.leader && brokers.is_unfenced(*b))
    } else {
        None
    };
    if let Some(b) = outside {
        let mut isr = isr;
        isr.insert(b);
        let mut elr = elr;
        elr.remove(&b);
        if isr.len() >= reg.min_insync_replicas {
            elr.clear();
        }
        set(reg, Some(b), isr, elr, leader_epoch, partition_epoch);
        changed
    } else if let Some(b) = reg.replicas.iter().copied().find(|b| isr.contains(b)) {
        set(reg, Some(b), isr, elr, leader_epoch, partition_epoch);
        changed
    } else if let Some(b) = elr_candidate {
        let mut isr = isr;
        isr.insert(b);
        let mut elr = elr;
        elr.remove(&b);
        set(reg, Some(b), isr, elr, leader_epoch, partition_epoch);
        changed
    } else {
        set(reg, None, isr, elr, leader_epoch, partition_epoch);
        // A leaderless partition of an unclean topic: try at once.
        if reg.unclean_leader_election {
            let (isr, elr) = (reg.isr.clone(), reg.elr.clone());
            let again = change_on_broker_change(reg, isr, elr, brokers, elect_outside_isr);
            return Transition {
                changed: true,
                unclean: again.unclean,
            };
        }
        changed
    }
}

fn set(
    reg: &mut PartitionRegistration,
    leader: Option<BrokerId>,
    isr: BTreeSet<BrokerId>,
    elr: BTreeSet<BrokerId>,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
) {
    assert!(
        leader.is_none_or(|l| isr.contains(&l)),
        "leader outside the ISR"
    );
    assert!(isr.is_disjoint(&elr), "a broker in both ISR and ELR");
    assert!(partition_epoch > reg.partition_epoch);
    assert!(leader_epoch >= reg.leader_epoch);
    reg.leader = leader;
    reg.isr = isr;
    reg.elr = elr;
    reg.leader_epoch = leader_epoch;
    reg.partition_epoch = partition_epoch;
}

/// A leader's AlterPartition for one partition
/// (`ReceiveAlterPartitionRequest`, `ValidateAlterPartitionRequest`): the
/// leader and its broker epoch and leader epoch must be current
/// ([`AlterPartitionError::FencedLeaderEpoch`]), the partition epoch must
/// be the registration's (compare-and-set,
/// [`AlterPartitionError::InvalidUpdateVersion`]), every member a replica
/// once, unfenced, and a member not already in the ISR given with its
/// current broker epoch (KIP-903, [`AlterPartitionError::IneligibleReplica`]).
/// On success the ISR (and ELR) change and the partition epoch is bumped;
/// refused, nothing changes.
pub fn alter_partition(
    reg: &mut PartitionRegistration,
    request: &AlterPartitionRequest,
    brokers: &impl BrokerView,
) -> Result<PartitionState, AlterPartitionError> {
    if reg.partition != request.partition {
        return Err(AlterPartitionError::UnknownPartition);
    }
    let leader_epoch_ok = brokers.broker_epoch(request.leader) == Some(request.leader_broker_epoch);
    if reg.leader != Some(request.leader)
        || reg.leader_epoch != request.leader_epoch
        || !leader_epoch_ok
    {
        return Err(AlterPartitionError::FencedLeaderEpoch);
    }
    if reg.partition_epoch != request.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion);
    }
    let mut isr = BTreeSet::new();
    for m in &request.new_isr {
        if !reg.replicas.contains(&m.broker) || !isr.insert(m.broker) {
            return Err(AlterPartitionError::InvalidRequest);
        }
        match m.broker_epoch {
            None if !reg.isr.contains(&m.broker) => {
                return Err(AlterPartitionError::InvalidRequest)
            }
            Some(e) if brokers.broker_epoch(m.broker) != Some(e) => {
                return Err(AlterPartitionError::IneligibleReplica)
            }
            _ => {}
        }
        if !brokers.is_unfenced(m.broker) {
            return Err(AlterPartitionError::IneligibleReplica);
        }
    }
    if !isr.contains(&request.leader) {
        return Err(AlterPartitionError::InvalidRequest);
    }
    let mut elr = update_elr(reg, &isr);
    elr.retain(|b| !isr.contains(b));
    let (leader, leader_epoch, partition_epoch) =
        (reg.leader, reg.leader_epoch, reg.partition_epoch.next());
    set(reg, leader, isr, elr, leader_epoch, partition_epoch);
    Ok(reg.broker_view())
}

/// KIP-966's ELR after the ISR changes to `new_isr` (`UpdateElr`): empty
/// once the ISR reaches MinISR (the high watermark can advance again, so
/// those out of it are no longer known complete); otherwise the ELR keeps
/// its members and gains those just removed from the ISR (the high
/// watermark cannot advance, so they stay complete).
pub fn update_elr(reg: &PartitionRegistration, new_isr: &BTreeSet<BrokerId>) -> BTreeSet<BrokerId> {
    if new_isr.len() >= reg.min_insync_replicas {
        return BTreeSet::new();
    }
    let replicas: BTreeSet<BrokerId> = reg.replicas.iter().copied().collect();
    let removed = reg.isr.difference(new_isr).copied();
    reg.elr
        .iter()
        .copied()
        .chain(removed)
        .filter(|b| replicas.contains(b) && !new_isr.contains(b))
        .collect()
}

#[cfg(test)]
mod tests;
