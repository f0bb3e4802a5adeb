//! Each partition's replication registration as the image holds it
//! ([`PartitionReplicas`]: replicas with their shards, leader, leader
//! epoch, partition epoch, ISR, ELR), and the bridge to broker-replication,
//! whose functions decide every change: the image converts a partition to
//! a [`broker_replication::PartitionRegistration`], runs the crate's
//! transition over its brokers ([`ImageBrokers`], a
//! [`broker_replication::BrokerView`]) and writes the result back. No rule
//! of replication is written here.
//!
//! A topic of one replica is always allowed an "unclean" election of that
//! replica: it is the only copy there is, so electing it when it returns
//! is what a standalone broker does (the broker comes back with its data),
//! never a choice between copies. Only topics of two or more replicas
//! honour `unclean_leader_election` as set.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use broker_replication as repl;

use crate::ids::{BrokerEpoch, BrokerId};
use crate::image::{BrokerRecord, BrokerState, TopicConfig};
use crate::placement::Placement;

/// One partition's replication registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReplicas {
    /// The replicas in preference order (the first is the preferred
    /// leader), each on a distinct broker, with the shard there that owns
    /// its log.
    pub replicas: Vec<Placement>,
    /// The leader, if any: a member of the ISR.
    pub leader: Option<BrokerId>,
    /// The leader's term, bumped by every election.
    pub leader_epoch: u32,
    /// The registration's version, bumped by every change (the
    /// compare-and-set of AlterPartition).
    pub partition_epoch: u32,
    /// The in-sync replicas.
    pub isr: BTreeSet<BrokerId>,
    /// KIP-966's eligible leader replicas: out of the ISR while it was below
    /// `min.insync.replicas`, so still holding every committed record.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub elr: BTreeSet<BrokerId>,
    /// A reassignment in progress (KIP-455): the replicas it moves to, in
    /// preference order. `replicas` is then these followed by the ones it
    /// drops, which stay until every target replica is in the ISR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<Placement>>,
}

impl PartitionReplicas {
    /// The registration of a partition placed on `placement` alone, as
    /// today's main (no replication fields) held it: the broker leads, in
    /// sync, both epochs 0. An image of that format is read this way, then
    /// brought to what the fencing of its broker would have made of it
    /// (see `MetadataImage`'s deserialization).
    pub fn single(placement: Placement) -> PartitionReplicas {
        PartitionReplicas {
            replicas: vec![placement],
            leader: Some(placement.broker),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: BTreeSet::from([placement.broker]),
            elr: BTreeSet::new(),
            target: None,
        }
    }

    /// Where broker `broker`'s replica is.
    pub fn replica_on(&self, broker: BrokerId) -> Option<Placement> {
        self.replicas.iter().copied().find(|r| r.broker == broker)
    }

    /// The leader's replica.
    pub fn leader_replica(&self) -> Option<Placement> {
        self.leader.and_then(|l| self.replica_on(l))
    }

    /// Whether the ISR is smaller than the replica set.
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    /// As broker-replication's registration, for a transition.
    pub(crate) fn to_registration(
        &self,
        index: u32,
        config: &TopicConfig,
    ) -> repl::PartitionRegistration {
        repl::PartitionRegistration {
            partition: repl::PartitionId(index),
            replicas: self.replicas.iter().map(|r| rb(r.broker)).collect(),
            leader: self.leader.map(rb),
            leader_epoch: repl::LeaderEpoch(self.leader_epoch),
            partition_epoch: repl::PartitionEpoch(self.partition_epoch),
            isr: self.isr.iter().copied().map(rb).collect(),
            elr: self.elr.iter().copied().map(rb).collect(),
            min_insync_replicas: usize::from(config.min_insync_replicas),
            unclean_leader_election: config.unclean_leader_election || self.replicas.len() == 1,
        }
    }

    /// Completes a reassignment in progress once its target is in sync
    /// (broker-replication's `complete_reassignment`); whether it did.
    pub(crate) fn settle_reassignment(
        &mut self,
        index: u32,
        config: &TopicConfig,
        brokers: &impl repl::BrokerView,
    ) -> bool {
        let Some(target) = self.target.clone() else {
            return false;
        };
        let mut r = self.to_registration(index, config);
        let ids: Vec<repl::BrokerId> = target.iter().map(|p| rb(p.broker)).collect();
        if !repl::complete_reassignment(&mut r, &ids, brokers) {
            return false;
        }
        self.replicas = target;
        self.target = None;
        self.set_from(&r);
        true
    }

    /// Takes a transition's result (the replica set does not change).
    pub(crate) fn set_from(&mut self, reg: &repl::PartitionRegistration) {
        self.leader = reg.leader.map(cb);
        self.leader_epoch = reg.leader_epoch.0;
        self.partition_epoch = reg.partition_epoch.0;
        self.isr = reg.isr.iter().copied().map(cb).collect();
        self.elr = reg.elr.iter().copied().map(cb).collect();
    }

    /// The structural invariants (the replication crate's own, as its
    /// `set` asserts them): distinct replicas, the leader in the ISR, ISR
    /// and ELR among the replicas and disjoint.
    pub(crate) fn check(&self) -> Result<(), String> {
        let brokers: BTreeSet<BrokerId> = self.replicas.iter().map(|r| r.broker).collect();
        if self.replicas.is_empty()
            || self.replicas.len() > repl::limits::MAX_REPLICAS
            || brokers.len() != self.replicas.len()
        {
            return Err("replicas empty, too many, or not on distinct brokers".into());
        }
        if self.leader.is_some_and(|l| !self.isr.contains(&l)) {
            return Err("leader outside the ISR".into());
        }
        if !self.isr.is_subset(&brokers) || !self.elr.is_subset(&brokers) {
            return Err("ISR or ELR member that is no replica".into());
        }
        if !self.isr.is_disjoint(&self.elr) {
            return Err("a broker in both ISR and ELR".into());
        }
        Ok(())
    }
}

/// A member of a proposed ISR ([`crate::MetadataCommand::AlterPartition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrMember {
    /// The broker.
    pub broker: BrokerId,
    /// Its broker epoch as the leader knows it (KIP-903): required for a
    /// member the ISR does not have yet, checked against the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_epoch: Option<BrokerEpoch>,
}

/// The image's brokers as broker-replication sees them: unfenced means
/// [`BrokerState::Unfenced`] (a fenced or shut-down broker may neither
/// lead nor join an ISR).
pub(crate) struct ImageBrokers<'a>(pub(crate) &'a BTreeMap<BrokerId, BrokerRecord>);

impl repl::BrokerView for ImageBrokers<'_> {
    fn is_unfenced(&self, broker: repl::BrokerId) -> bool {
        self.0
            .get(&cb(broker))
            .is_some_and(|r| r.state == BrokerState::Unfenced)
    }

    fn broker_epoch(&self, broker: repl::BrokerId) -> Option<repl::BrokerEpoch> {
        self.0.get(&cb(broker)).map(|r| re(r.epoch))
    }
}

/// A cluster broker id as replication's.
pub(crate) fn rb(b: BrokerId) -> repl::BrokerId {
    repl::BrokerId(b.0)
}

/// A replication broker id as the cluster's.
pub(crate) fn cb(b: repl::BrokerId) -> BrokerId {
    BrokerId(b.0)
}

/// A cluster broker epoch as replication's.
pub(crate) fn re(e: BrokerEpoch) -> repl::BrokerEpoch {
    repl::BrokerEpoch(e.0)
}
