//! The cluster's metadata at one point of the log ([`MetadataImage`]):
//! brokers with their epochs and fencing, topics with their settings and
//! placement, the epoch counter. The queries brokers and controllers ask of
//! it, and the invariants every image satisfies (checked whenever one is
//! deserialized). Only [`MetadataImage::apply`] (command.rs) changes it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::validate_topic_name;
use crate::error::ClusterError;
use crate::ids::{BrokerEpoch, BrokerId, RequestId, ShardIndex};
use crate::limits::{MAX_CLUSTER_ID_LEN, MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LEN};
use crate::placement::{name_hash, Placement};
use crate::registration::BrokerRegistration;
use crate::replicas::{ImageBrokers, PartitionReplicas};

/// The internal topic holding committed offsets; a group's coordinator is
/// the owner of its partition of it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The settings of a topic, broker defaults resolved (broker-server's
/// `metadata::TopicConfig` is this one, and its `topic.json` holds it);
/// resolving a request's settings against defaults stays in the server,
/// so the image stores settings as the proposer resolved them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Delete closed segments whose newest record is older than this; None
    /// keeps them forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the partition is larger than
    /// this; None for no limit.
    pub retention_bytes: Option<u64>,
    /// Roll the active segment before it would exceed this many bytes.
    pub segment_bytes: u64,
    /// Kafka's `message.timestamp.type=LogAppendTime`: each batch's
    /// timestamp is the broker's time of append (its max timestamp is
    /// rewritten and its attributes say so), not the producer's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_append_time: bool,
    /// How many replicas each partition has, on distinct brokers
    /// (Kafka's `replication.factor`; default 1, Kafka's
    /// `default.replication.factor`). A topic written before replication
    /// existed reads as 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replication_factor: u16,
    /// Kafka's `min.insync.replicas` (default 1, Kafka's): an acks=all
    /// produce is refused (NOT_ENOUGH_REPLICAS) while the ISR is smaller,
    /// and the ELR is kept while it is. 1 to the replication factor.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub min_insync_replicas: u16,
    /// Kafka's `unclean.leader.election.enable` (default false): when no
    /// in-sync or eligible replica is unfenced, any unfenced replica may
    /// lead. This MAY LOSE ACKNOWLEDGED DATA: the new leader may lack
    /// records the old ISR acknowledged, and the others truncate to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unclean_leader_election: bool,
}

fn yes() -> bool {
    true
}

fn one() -> u16 {
    1
}

fn is_one(n: &u16) -> bool {
    *n == 1
}

/// Whether a broker may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Registered but not serving: not caught up yet, or its session
    /// expired. Its partitions are unavailable; new partitions avoid it.
    Fenced,
    /// Serving its partitions; new partitions may be placed on it.
    Unfenced,
    /// Fenced by a controlled shutdown: this incarnation is never unfenced
    /// again, even if it still heartbeats while it stops; only a new
    /// registration brings the broker back.
    ShutDown,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// Its current incarnation's registration.
    pub registration: BrokerRegistration,
    /// The epoch given to that registration.
    pub epoch: BrokerEpoch,
    /// Whether it may serve.
    pub state: BrokerState,
    /// The image's version once the registration was applied: the broker
    /// has caught up (and may be unfenced) once it has applied at least
    /// this version (KIP-631's "caught up to its registration").
    pub registered_at_version: u64,
    /// This registration has been unfenced (its replicas may have joined
    /// an ISR): broker-replication's clean-restart rule needs it.
    /// An image written before replication has no such flag: its brokers
    /// read as having served (with no `clean_floor` either, their clean
    /// restart is the same: presenting their current epoch, which no broker
    /// of that format recorded).
    #[serde(default = "yes")]
    pub served: bool,
    /// Until this registration serves, the oldest epoch a clean restart
    /// may present (that of the last registration that served); None: its
    /// own epoch (broker-replication's `BrokerRecord::clean_floor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_floor: Option<BrokerEpoch>,
}

impl BrokerRecord {
    /// Whether it may not serve (fenced or shut down).
    pub fn is_fenced(&self) -> bool {
        self.state != BrokerState::Unfenced
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Its settings.
    pub config: TopicConfig,
    /// `partitions[p]` is where partition `p`'s preferred (first) replica
    /// lives: with one replica, where the partition lives, as before
    /// replication. Always `replicas[p].replicas[0]`.
    pub partitions: Vec<Placement>,
    /// The request that created it: its retry is answered, not refused.
    pub created_by: RequestId,
    /// `replicas[p]` is partition `p`'s replication registration. Absent
    /// in an image written before replication: derived on load from
    /// `partitions` ([`PartitionReplicas::single`]).
    #[serde(default)]
    pub replicas: Vec<PartitionReplicas>,
}

/// The cluster's metadata. Every replica that starts from
/// [`MetadataImage::new`] with the same cluster id and applies the same
/// commands holds an equal image.
///
/// The cluster id is given at construction, not by a command: it is fixed
/// when the controllers' storage is formatted (as `kafka-storage format -t`
/// does), every replica knows it before reading the log, and an image never
/// exists without one, so no command has to be refused for coming before
/// an initialisation. A snapshot names its cluster, and a replica refuses a
/// snapshot of another cluster.
///
/// Deserializing checks the invariants every image holds (a valid cluster
/// id; each broker filed under its own id, validly registered, with an
/// epoch below the next one and distinct from every other broker's; each
/// topic validly named, each partition on an existing shard of a
/// registered broker), so an image read from disk is as sound as one built
/// by commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedImage")]
pub struct MetadataImage {
    // Changed only by `apply` (command.rs).
    pub(crate) cluster_id: String,
    pub(crate) version: u64,
    pub(crate) next_broker_epoch: BrokerEpoch,
    pub(crate) brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub(crate) topics: BTreeMap<String, TopicRecord>,
}

/// An image as deserialized, before its invariants are checked.
#[derive(Deserialize)]
struct UncheckedImage {
    cluster_id: String,
    version: u64,
    next_broker_epoch: BrokerEpoch,
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    topics: BTreeMap<String, TopicRecord>,
}

impl TryFrom<UncheckedImage> for MetadataImage {
    type Error = String;

    fn try_from(u: UncheckedImage) -> Result<MetadataImage, String> {
        let mut image = MetadataImage {
            cluster_id: u.cluster_id,
            version: u.version,
            next_broker_epoch: u.next_broker_epoch,
            brokers: u.brokers,
            topics: u.topics,
        };
        image.derive_old_registrations();
        image.check()?;
        Ok(image)
    }
}

/// One broker in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The broker.
    pub id: BrokerId,
    /// Its current epoch.
    pub epoch: BrokerEpoch,
    /// Whether it serves.
    pub state: BrokerState,
    /// Its shard count.
    pub shards: u16,
    /// How many partition replicas it holds (of every topic).
    pub partitions: u32,
    /// How many partitions it leads.
    #[serde(default)]
    pub leaders: u32,
}

/// What `cluster status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster_id: String,
    /// The image's version.
    pub version: u64,
    /// Every registered broker, by id.
    pub brokers: Vec<BrokerStatus>,
    /// How many topics exist.
    pub topics: usize,
    /// How many partitions they have in all.
    pub partitions: u64,
    /// Partitions whose ISR is smaller than their replica set.
    #[serde(default)]
    pub under_replicated: u64,
    /// Partitions with no leader.
    #[serde(default)]
    pub offline: u64,
}

impl MetadataImage {
    /// The empty image of cluster `cluster_id` (1 to
    /// [`MAX_CLUSTER_ID_LEN`] ASCII letters, digits, '-' or '_', as
    /// Kafka's base64url UUIDs are).
    pub fn new(cluster_id: &str) -> Result<MetadataImage, ClusterError> {
        validate_cluster_id(cluster_id)?;
        Ok(MetadataImage {
            cluster_id: cluster_id.to_owned(),
            version: 0,
            next_broker_epoch: BrokerEpoch(1),
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
        })
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// How many commands have changed the image (refused commands and
    /// retries answered from the image do not count): two replicas at the
    /// same version of the same log hold equal images.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The epoch the next registration will get: above every epoch ever
    /// given.
    pub fn next_broker_epoch(&self) -> BrokerEpoch {
        self.next_broker_epoch
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRecord> {
        &self.brokers
    }

    /// Every topic, by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicRecord> {
        &self.topics
    }

    /// A registered broker.
    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRecord> {
        self.brokers.get(&id)
    }

    /// A topic.
    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    /// Whether `id` may not serve: fenced, shut down, or never registered.
    pub fn is_fenced(&self, id: BrokerId) -> bool {
        self.broker(id).is_none_or(BrokerRecord::is_fenced)
    }

    /// Whether a request from broker `id` carrying `epoch` comes from its
    /// current incarnation; refuse it otherwise.
    pub fn check_epoch(&self, id: BrokerId, epoch: BrokerEpoch) -> Result<(), ClusterError> {
        let record = self.broker(id).ok_or(ClusterError::UnknownBroker { id })?;
        if record.epoch != epoch {
            return Err(ClusterError::StaleBrokerEpoch {
                id,
                given: epoch,
                current: record.epoch,
            });
        }
        Ok(())
    }

    /// Where partition `partition` of `topic` is served: its leader's
    /// replica. A partition with no leader, or whose leader's broker is
    /// fenced, is [`ClusterError::Unavailable`], naming that broker (the
    /// preferred replica's when there is no leader).
    pub fn partition_owner(&self, topic: &str, partition: u32) -> Result<Placement, ClusterError> {
        let reg = self.partition_replicas(topic, partition)?;
        let unavailable = |broker| ClusterError::Unavailable {
            topic: topic.to_owned(),
            partition,
            broker,
        };
        match reg.leader_replica() {
            Some(l) if !self.is_fenced(l.broker) => Ok(l),
            Some(l) => Err(unavailable(l.broker)),
            None => Err(unavailable(reg.replicas[0].broker)),
        }
    }

    /// Partition `partition` of `topic`'s replication registration.
    pub fn partition_replicas(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<&PartitionReplicas, ClusterError> {
        let record = self.topic(topic).ok_or_else(|| unknown_topic(topic))?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| record.replicas.get(p))
            .ok_or_else(|| ClusterError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: record.partitions.len() as u32,
            })
    }

    /// The partitions `broker` has a replica of, as (topic, partition,
    /// shard), by topic then partition; whether it is fenced or not.
    pub fn partitions_of(
        &self,
        broker: BrokerId,
    ) -> impl Iterator<Item = (&str, u32, ShardIndex)> + '_ {
        self.topics.iter().flat_map(move |(name, record)| {
            record
                .replicas
                .iter()
                .zip(0u32..)
                .filter_map(move |(reg, p)| {
                    reg.replica_on(broker).map(|r| (name.as_str(), p, r.shard))
                })
        })
    }

    /// The coordinator of group `group`: its partition of
    /// [`OFFSETS_TOPIC`] (`fnv1a(group) mod partitions`, as the server
    /// computes it) and that partition's owner.
    pub fn group_coordinator(&self, group: &str) -> Result<(u32, Placement), ClusterError> {
        let record = self
            .topic(OFFSETS_TOPIC)
            .ok_or_else(|| unknown_topic(OFFSETS_TOPIC))?;
        let count = (record.partitions.len() as u32).max(1);
        let partition = name_hash(group) % count;
        Ok((partition, self.partition_owner(OFFSETS_TOPIC, partition)?))
    }

    /// How many partitions a preferred-leader election would move: their
    /// first replica is unfenced and in the ISR but does not lead (Kafka's
    /// leader imbalance, which `auto.leader.rebalance.enable` corrects).
    pub fn preferred_leaders_off(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.replicas)
            .filter(|r| {
                r.replicas.first().is_some_and(|p| {
                    r.leader != Some(p.broker)
                        && r.isr.contains(&p.broker)
                        && !self.is_fenced(p.broker)
                })
            })
            .count()
    }

    /// The summary `cluster status` shows: per broker its epoch, state,
    /// shards and partition count.
    pub fn status(&self) -> ClusterStatus {
        let mut owned: BTreeMap<BrokerId, u32> = BTreeMap::new();
        let mut leading: BTreeMap<BrokerId, u32> = BTreeMap::new();
        let (mut under_replicated, mut offline) = (0, 0);
        for reg in self.topics.values().flat_map(|t| &t.replicas) {
            for r in &reg.replicas {
                *owned.entry(r.broker).or_default() += 1;
            }
            match reg.leader {
                Some(l) => *leading.entry(l).or_default() += 1,
                None => offline += 1,
            }
            if reg.under_replicated() {
                under_replicated += 1;
            }
        }
        ClusterStatus {
            cluster_id: self.cluster_id.clone(),
            version: self.version,
            brokers: self
                .brokers
                .iter()
                .map(|(&id, record)| BrokerStatus {
                    id,
                    epoch: record.epoch,
                    state: record.state,
                    shards: record.registration.shards,
                    partitions: owned.get(&id).copied().unwrap_or(0),
                    leaders: leading.get(&id).copied().unwrap_or(0),
                })
                .collect(),
            under_replicated,
            offline,
            topics: self.topics.len(),
            partitions: self
                .topics
                .values()
                .map(|t| t.partitions.len() as u64)
                .sum(),
        }
    }

    /// The invariants every image holds, naming the first one
    /// broken: a valid cluster id; each broker filed under its own id with
    /// a valid registration, a version not above the image's, and an epoch
    /// below the next one and distinct from every other broker's; each
    /// topic with a valid name and partition count, each partition on a
    /// registered broker's existing shard.
    fn check(&self) -> Result<(), String> {
        validate_cluster_id(&self.cluster_id).map_err(|e| e.to_string())?;
        let mut epochs = BTreeSet::new();
        for (&id, record) in &self.brokers {
            let broker = |what: &str| format!("broker {id}: {what}");
            if record.registration.id != id {
                return Err(broker("filed under another id"));
            }
            record
                .registration
                .validate()
                .map_err(|e| broker(&e.to_string()))?;
            if record.epoch >= self.next_broker_epoch || !epochs.insert(record.epoch) {
                return Err(broker(&format!(
                    "epoch {} is not below the next epoch {} or is another broker's",
                    record.epoch, self.next_broker_epoch
                )));
            }
            if record.registered_at_version > self.version {
                return Err(broker("registered after the image's version"));
            }
        }
        for (name, record) in &self.topics {
            validate_topic_name(name).map_err(|e| e.to_string())?;
            let count = record.partitions.len();
            if !(1..=MAX_PARTITIONS_PER_TOPIC as usize).contains(&count) {
                return Err(format!("topic {name:?}: {count} partitions"));
            }
            if record.replicas.len() != count {
                return Err(format!(
                    "topic {name:?}: {} registrations for {count} partitions",
                    record.replicas.len()
                ));
            }
            let rf = usize::from(record.config.replication_factor);
            let min_isr = record.config.min_insync_replicas;
            if min_isr == 0 || min_isr > record.config.replication_factor {
                return Err(format!("topic {name:?}: min.insync.replicas {min_isr}"));
            }
            for (p, (pl, reg)) in record.partitions.iter().zip(&record.replicas).enumerate() {
                reg.check()
                    .map_err(|e| format!("topic {name:?}: partition {p}: {e}"))?;
                // During a reassignment the replicas are the target (of the
                // replication factor) followed by those it drops.
                let moving = reg.target.as_ref().is_some_and(|t| {
                    t.len() == rf && reg.replicas.len() > rf && reg.replicas[..rf] == t[..]
                });
                let settled = reg.target.is_none() && reg.replicas.len() == rf;
                if !(moving || settled) || reg.replicas[0] != *pl {
                    return Err(format!("topic {name:?}: partition {p}: replicas differ from the replication factor or the placement"));
                }
                for r in &reg.replicas {
                    let registered = self.brokers.get(&r.broker);
                    if !registered.is_some_and(|b| b.registration.has_shard(r.shard)) {
                        return Err(format!(
                            "topic {name:?}: partition {p} on shard {} of broker {}, which it does not have",
                            r.shard, r.broker
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl MetadataImage {
    /// Gives each topic of an image written before replication (no
    /// `replicas`) the registration today's main implied: its placed broker
    /// leads, in sync, epochs 0; then, for a broker that is fenced in the
    /// image, what fencing it does now (broker-replication's `on_fenced`:
    /// out of the ISR into the ELR, no leader). Deterministic, so every
    /// replica loading the same snapshot derives the same image.
    fn derive_old_registrations(&mut self) {
        let view = ImageBrokers(&self.brokers);
        for record in self.topics.values_mut() {
            if !record.replicas.is_empty() {
                continue;
            }
            record.replicas = record
                .partitions
                .iter()
                .map(|pl| PartitionReplicas::single(*pl))
                .collect();
            for (p, reg) in (0u32..).zip(record.replicas.iter_mut()) {
                let broker = reg.replicas[0].broker;
                if view.0.get(&broker).is_none_or(BrokerRecord::is_fenced) {
                    let mut r = reg.to_registration(p, &record.config);
                    broker_replication::on_fenced(&mut r, crate::replicas::rb(broker), &view);
                    reg.set_from(&r);
                }
            }
        }
    }
}

/// Unknown topic, its name cut to a bounded length (it may come from a
/// client).
pub(crate) fn unknown_topic(name: &str) -> ClusterError {
    ClusterError::UnknownTopic {
        name: name.chars().take(MAX_TOPIC_NAME_LEN).collect(),
    }
}

fn validate_cluster_id(id: &str) -> Result<(), ClusterError> {
    let reason = if id.is_empty() || id.len() > MAX_CLUSTER_ID_LEN {
        "it must be 1 to 64 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "only ASCII letters, digits, '-' and '_' are allowed"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidClusterId { reason })
}
