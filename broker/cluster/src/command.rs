//! The commands the controller quorum replicates ([`MetadataCommand`]) and
//! how an image applies them ([`MetadataImage::apply`]): deterministic
//! (everything a decision needs is in the command or the image), and a
//! refused command leaves the image exactly as it was.

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::ids::{BrokerEpoch, BrokerId, RequestId};
use crate::image::{
    unknown_topic, BrokerRecord, BrokerState, MetadataImage, TopicConfig, TopicRecord,
};
use crate::limits::{MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LEN};
use crate::placement::{fit_to_shards, place_replicas, Placement};
use crate::registration::BrokerRegistration;
use crate::replicas::{rb, re, ImageBrokers, IsrMember, PartitionReplicas};

use broker_replication as repl;

/// One change to the cluster's metadata, as the log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker process started (or retries its registration). Answered
    /// with the incarnation's epoch; the broker is fenced until
    /// [`MetadataCommand::UnfenceBroker`].
    RegisterBroker(BrokerRegistration),
    /// The broker has caught up and heartbeats: it may serve.
    UnfenceBroker {
        /// The broker.
        id: BrokerId,
        /// Its current epoch.
        epoch: BrokerEpoch,
    },
    /// The broker's session expired: its partitions become unavailable.
    FenceBroker {
        /// The broker.
        id: BrokerId,
        /// Its current epoch.
        epoch: BrokerEpoch,
    },
    /// Controlled shutdown: fenced at once, and this incarnation is never
    /// unfenced again.
    ShutdownBroker {
        /// The broker.
        id: BrokerId,
        /// Its current epoch.
        epoch: BrokerEpoch,
    },
    /// Create a topic, placed over the unfenced brokers.
    CreateTopic {
        /// Its name (Kafka's rules).
        name: String,
        /// How many partitions, `1..=`[`MAX_PARTITIONS_PER_TOPIC`].
        partitions: u32,
        /// Its settings, resolved by the proposer.
        config: TopicConfig,
        /// The client request's id: a retry of the request that created
        /// the topic is answered with its placement.
        request_id: RequestId,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Its name.
        name: String,
    },
    /// A partition leader's ISR change ([`AlterPartition`]).
    AlterPartition(AlterPartition),
    /// Preferred-leader elections (Kafka's ElectLeaders, PREFERRED): every
    /// partition of `topic` (of every topic: None) whose first replica is
    /// in the ISR, unfenced and not leading gets it as leader in a new
    /// leader epoch.
    ElectPreferredLeaders {
        /// The topic, or every one.
        topic: Option<String>,
    },
    /// Move a partition's replicas to `replicas` (KIP-455): the new ones
    /// are added and catch up, then, once every one of `replicas` is in
    /// the ISR, the others are dropped (and a leader among them hands
    /// over). Asking again for the same target is a retry.
    ReassignPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas it moves to, in preference order.
        replicas: Vec<BrokerId>,
    },
}

/// A partition leader's ISR change (KIP-497's AlterPartition): a
/// compare-and-set on the partition epoch, the leader's broker and
/// leader epochs current, every added member's broker epoch current
/// (KIP-903), every member unfenced. Decided by broker-replication's
/// `alter_partition`; refused with its typed reason
/// ([`ClusterError::AlterPartitionRefused`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The leader asking.
    pub leader: BrokerId,
    /// Its broker epoch.
    pub leader_broker_epoch: BrokerEpoch,
    /// The leader epoch it leads in.
    pub leader_epoch: u32,
    /// The partition epoch its proposal starts from.
    pub partition_epoch: u32,
    /// The ISR it proposes.
    pub new_isr: Vec<IsrMember>,
}

/// What an applied command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The registration's epoch (the one on record for a retry).
    Registered {
        /// The incarnation's epoch.
        epoch: BrokerEpoch,
    },
    /// The topic's placement (the one on record for a retry).
    TopicCreated {
        /// `placement[p]` is where partition `p` lives.
        placement: Vec<Placement>,
    },
    /// The partition's registration after an accepted AlterPartition.
    PartitionAltered {
        /// Its registration.
        replicas: PartitionReplicas,
    },
    /// How many partitions changed leader in preferred-leader elections.
    LeadersElected {
        /// The count.
        partitions: u32,
    },
    /// Done (or already so: fencing a fenced broker changes nothing).
    Done,
}

/// What applying a command gives.
pub type CommandResult = Result<Outcome, ClusterError>;

impl MetadataImage {
    /// Applies `command`: the same command on equal images gives equal
    /// results and equal images. On an error the image is unchanged; the
    /// version grows by one exactly when the image changes.
    pub fn apply(&mut self, command: &MetadataCommand) -> CommandResult {
        match command {
            MetadataCommand::RegisterBroker(registration) => self.register(registration),
            MetadataCommand::UnfenceBroker { id, epoch } => {
                self.transition(*id, *epoch, BrokerState::Unfenced)
            }
            MetadataCommand::FenceBroker { id, epoch } => {
                self.transition(*id, *epoch, BrokerState::Fenced)
            }
            MetadataCommand::ShutdownBroker { id, epoch } => {
                self.transition(*id, *epoch, BrokerState::ShutDown)
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                config,
                request_id,
            } => self.create_topic(name, *partitions, config, *request_id),
            MetadataCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => {
                    self.bump();
                    Ok(Outcome::Done)
                }
                None => Err(unknown_topic(name)),
            },
            MetadataCommand::AlterPartition(a) => {
                let request = repl::AlterPartitionRequest {
                    partition: repl::PartitionId(a.partition),
                    leader: rb(a.leader),
                    leader_broker_epoch: re(a.leader_broker_epoch),
                    leader_epoch: repl::LeaderEpoch(a.leader_epoch),
                    partition_epoch: repl::PartitionEpoch(a.partition_epoch),
                    new_isr: a
                        .new_isr
                        .iter()
                        .map(|m| repl::IsrMember {
                            broker: rb(m.broker),
                            broker_epoch: m.broker_epoch.map(re),
                        })
                        .collect(),
                };
                self.alter_partition(&a.topic, a.partition, &request)
            }
            MetadataCommand::ElectPreferredLeaders { topic } => {
                self.elect_preferred(topic.as_deref())
            }
            MetadataCommand::ReassignPartition {
                topic,
                partition,
                replicas,
            } => self.reassign(topic, *partition, replicas),
        }
    }

    fn reassign(&mut self, topic: &str, partition: u32, target: &[BrokerId]) -> CommandResult {
        let invalid = |reason: String| ClusterError::InvalidReassignment {
            topic: topic.to_owned(),
            partition,
            reason,
        };
        let view = ImageBrokers(&self.brokers);
        let (record, index) = partition_of(&mut self.topics, topic, partition)?;
        let reg = &record.replicas[index];
        let ids = |ps: &[Placement]| ps.iter().map(|p| p.broker).collect::<Vec<_>>();
        match &reg.target {
            Some(t) if ids(t) == target => {
                return Ok(Outcome::PartitionAltered {
                    replicas: reg.clone(),
                })
            }
            Some(t) => {
                return Err(invalid(format!(
                    "a reassignment to {:?} is in progress",
                    ids(t)
                )))
            }
            None if ids(&reg.replicas) == target => {
                return Ok(Outcome::PartitionAltered {
                    replicas: reg.clone(),
                })
            }
            None => {}
        }
        // Each target replica's shard: where it is now, or (a new one) the
        // shard of its broker holding the fewest of the topic's replicas.
        let mut placements = Vec::with_capacity(target.len());
        for b in target {
            if let Some(p) = reg.replica_on(*b) {
                placements.push(p);
                continue;
            }
            let Some(broker) = self.brokers.get(b) else {
                return Err(invalid(format!("broker {b} is not registered")));
            };
            let shard =
                least_loaded_shard(topic, partition, record, *b, broker.registration.shards);
            placements.push(Placement { broker: *b, shard });
        }
        if target.len() != usize::from(record.config.replication_factor) {
            return Err(invalid(format!(
                "{} replicas for a topic of replication factor {} (a reassignment keeps it)",
                target.len(),
                record.config.replication_factor
            )));
        }
        let mut r = reg.to_registration(partition, &record.config);
        let wanted: Vec<repl::BrokerId> = target.iter().copied().map(rb).collect();
        repl::begin_reassignment(&mut r, &wanted, &view).map_err(|e| invalid(e.to_string()))?;
        let reg = &mut record.replicas[index];
        let dropped: Vec<Placement> = reg
            .replicas
            .iter()
            .copied()
            .filter(|p| !target.contains(&p.broker))
            .collect();
        reg.replicas = placements.iter().copied().chain(dropped).collect();
        // The partition's placement is its preferred replica's.
        record.partitions[index] = placements[0];
        reg.target = Some(placements);
        reg.set_from(&r);
        reg.settle_reassignment(partition, &record.config, &view);
        let replicas = reg.clone();
        self.bump();
        Ok(Outcome::PartitionAltered { replicas })
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: u32,
        request: &repl::AlterPartitionRequest,
    ) -> CommandResult {
        let view = ImageBrokers(&self.brokers);
        let (record, index) = partition_of(&mut self.topics, topic, partition)?;
        let reg = &mut record.replicas[index];
        let mut r = reg.to_registration(partition, &record.config);
        repl::alter_partition(&mut r, request, &view).map_err(|reason| {
            ClusterError::AlterPartitionRefused {
                topic: topic.to_owned(),
                partition,
                reason,
            }
        })?;
        reg.set_from(&r);
        // A reassignment completes once its target is in the ISR.
        reg.settle_reassignment(partition, &record.config, &view);
        let replicas = reg.clone();
        self.bump();
        Ok(Outcome::PartitionAltered { replicas })
    }

    fn elect_preferred(&mut self, topic: Option<&str>) -> CommandResult {
        if let Some(t) = topic {
            if !self.topics.contains_key(t) {
                return Err(unknown_topic(t));
            }
        }
        let view = ImageBrokers(&self.brokers);
        let mut elected = 0u32;
        for (name, record) in &mut self.topics {
            if topic.is_some_and(|t| t != name) {
                continue;
            }
            for (p, reg) in (0u32..).zip(record.replicas.iter_mut()) {
                let mut r = reg.to_registration(p, &record.config);
                if repl::elect_preferred_leader(&mut r, &view) {
                    reg.set_from(&r);
                    elected += 1;
                }
            }
        }
        if elected > 0 {
            self.bump();
        }
        Ok(Outcome::LeadersElected {
            partitions: elected,
        })
    }

    /// Runs `transition` (one of broker-replication's) over every
    /// partition of every topic, writing back those it changed.
    fn each_partition(
        &mut self,
        mut transition: impl FnMut(&mut repl::PartitionRegistration, &ImageBrokers<'_>) -> bool,
    ) {
        let view = ImageBrokers(&self.brokers);
        for record in self.topics.values_mut() {
            for (p, reg) in (0u32..).zip(record.replicas.iter_mut()) {
                let mut r = reg.to_registration(p, &record.config);
                if transition(&mut r, &view) {
                    reg.set_from(&r);
                    reg.settle_reassignment(p, &record.config, &view);
                }
            }
        }
    }

    /// A registration. The incarnation on record registering again with
    /// the same contents is a retry: its epoch, nothing changes. Any other
    /// incarnation gets the next epoch and starts fenced. If it has fewer
    /// shards than the previous one, its partitions on the shards gone
    /// move to its remaining shards (`placement::fit_to_shards`); with more
    /// shards nothing moves (the new shards get new topics' partitions).
    fn register(&mut self, registration: &BrokerRegistration) -> CommandResult {
        registration.validate()?;
        let id = registration.id;
        let previous = self.brokers.get(&id);
        if let Some(record) = previous {
            if record.registration.incarnation == registration.incarnation {
                if record.registration != *registration {
                    return Err(ClusterError::IncarnationConflict { id });
                }
                return Ok(Outcome::Registered {
                    epoch: record.epoch,
                });
            }
        }
        let shrunk = previous.is_some_and(|r| r.registration.shards > registration.shards);
        let was_serving = previous.is_some_and(|r| !r.is_fenced());
        // broker-replication's clean-restart rule (KIP-966's Unclean
        // Exclusion): the epoch the broker presents must be its last
        // registration's, or one since the last that served.
        let (clean, clean_floor) = match previous {
            Some(r) => {
                let floor = r.clean_floor.unwrap_or(r.epoch);
                let clean = repl::restart_is_clean(
                    re(r.epoch),
                    r.served,
                    re(floor),
                    registration.previous_epoch.map(re),
                );
                let next = repl::next_clean_floor(re(r.epoch), r.served, re(floor));
                (clean, clean.then_some(BrokerEpoch(next.0)))
            }
            None => (false, None),
        };
        let epoch = self.next_broker_epoch;
        let next = epoch
            .0
            .checked_add(1)
            .ok_or(ClusterError::EpochsExhausted)?;
        self.next_broker_epoch = BrokerEpoch(next);
        if shrunk {
            for (name, topic) in &mut self.topics {
                fit_replicas_to_shards(name, topic, id, registration.shards);
            }
        }
        self.bump();
        self.brokers.insert(
            id,
            BrokerRecord {
                registration: registration.clone(),
                epoch,
                state: BrokerState::Fenced,
                registered_at_version: self.version,
                served: false,
                clean_floor,
            },
        );
        let broker = rb(id);
        if was_serving {
            // The previous incarnation was still unfenced (the leader's
            // session tracker refuses that, but the log may hold it): it is
            // fenced now, so out of its ISRs first.
            self.each_partition(|r, view| repl::on_fenced(r, broker, view).changed);
        }
        if !clean {
            self.each_partition(|r, view| repl::on_unclean_restart(r, broker, view).changed);
        }
        Ok(Outcome::Registered { epoch })
    }

    /// Unfence, fence or shut down the broker's current incarnation.
    fn transition(&mut self, id: BrokerId, epoch: BrokerEpoch, to: BrokerState) -> CommandResult {
        self.check_epoch(id, epoch)?;
        let Some(record) = self.brokers.get_mut(&id) else {
            return Err(ClusterError::UnknownBroker { id });
        };
        record.state = match (record.state, to) {
            (BrokerState::ShutDown, BrokerState::Unfenced) => {
                return Err(ClusterError::BrokerShutDown { id })
            }
            // A shut-down broker is already fenced.
            (BrokerState::ShutDown, BrokerState::Fenced) => return Ok(Outcome::Done),
            (from, to) if from == to => return Ok(Outcome::Done),
            (_, to) => to,
        };
        let broker = rb(id);
        match to {
            BrokerState::Unfenced => {
                record.served = true;
                self.each_partition(|r, view| repl::on_unfenced(r, view).changed);
            }
            BrokerState::Fenced | BrokerState::ShutDown => {
                // Fenced from unfenced, or shut down from either: leaving
                // an ISR it is not in changes nothing.
                self.each_partition(|r, view| repl::on_fenced(r, broker, view).changed);
            }
        }
        self.bump();
        Ok(Outcome::Done)
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: &TopicConfig,
        request_id: RequestId,
    ) -> CommandResult {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(ClusterError::InvalidPartitionCount { partitions });
        }
        if let Some(topic) = self.topics.get(name) {
            let retry = topic.created_by == request_id
                && topic.partitions.len() == partitions as usize
                && topic.config == *config;
            if retry {
                return Ok(Outcome::TopicCreated {
                    placement: topic.partitions.clone(),
                });
            }
            return Err(ClusterError::TopicAlreadyExists {
                name: name.to_owned(),
            });
        }
        let rf = config.replication_factor;
        if config.min_insync_replicas == 0 || config.min_insync_replicas > rf.max(1) {
            return Err(ClusterError::InvalidMinInsyncReplicas {
                min_insync_replicas: config.min_insync_replicas,
                replication_factor: rf,
            });
        }
        let unfenced: Vec<(BrokerId, u16, bool)> = self
            .brokers
            .iter()
            .filter(|(_, record)| !record.is_fenced())
            .map(|(&id, record)| {
                let r = &record.registration;
                (id, r.shards, r.fsync_every_write)
            })
            .collect();
        if unfenced.is_empty() {
            return Err(ClusterError::NoUnfencedBroker);
        }
        let invalid = |reason, eligible| ClusterError::InvalidReplicationFactor {
            replication_factor: rf,
            registered: self.brokers.len(),
            eligible,
            reason,
        };
        if rf == 0 || usize::from(rf) > repl::limits::MAX_REPLICAS {
            return Err(invalid("it must be 1 to 16", unfenced.len()));
        }
        if usize::from(rf) > self.brokers.len() {
            return Err(invalid(
                "more replicas than registered brokers",
                unfenced.len(),
            ));
        }
        if usize::from(rf) > unfenced.len() {
            return Err(invalid(
                "more replicas than unfenced brokers",
                unfenced.len(),
            ));
        }
        let eligible: Vec<(BrokerId, u16)> = unfenced
            .iter()
            .filter(|(_, _, durable)| rf == 1 || *durable)
            .map(|&(id, shards, _)| (id, shards))
            .collect();
        if usize::from(rf) > eligible.len() {
            return Err(ClusterError::ReplicationNeedsFsync {
                replication_factor: rf,
                durable: eligible.len(),
            });
        }
        let view = ImageBrokers(&self.brokers);
        let mut replicas = Vec::with_capacity(partitions as usize);
        for (p, set) in (0u32..).zip(place_replicas(name, partitions, rf, &eligible)) {
            let brokers = set.iter().map(|r| rb(r.broker)).collect();
            let single = set.len() == 1;
            let reg = repl::new_partition(
                repl::PartitionId(p),
                brokers,
                usize::from(config.min_insync_replicas),
                config.unclean_leader_election || single,
                &view,
            )
            .map_err(|_| invalid("the replica set is invalid", eligible.len()))?;
            let mut record = PartitionReplicas::single(set[0]);
            record.replicas = set;
            record.set_from(&reg);
            replicas.push(record);
        }
        let placement: Vec<Placement> = replicas.iter().map(|r| r.replicas[0]).collect();
        self.topics.insert(
            name.to_owned(),
            TopicRecord {
                config: *config,
                partitions: placement.clone(),
                created_by: request_id,
                replicas,
            },
        );
        self.bump();
        Ok(Outcome::TopicCreated { placement })
    }

    fn bump(&mut self) {
        // 2^64 changes cannot happen; saturating keeps a forged snapshot
        // at u64::MAX from panicking.
        self.version = self.version.saturating_add(1);
    }
}

/// Moves `broker`'s replicas of `topic` off the shards it no longer has
/// (`placement::fit_to_shards` over each replica position in turn: with
/// one replica, exactly the partitions' move), keeping `partitions` the
/// first replicas.
fn fit_replicas_to_shards(name: &str, topic: &mut TopicRecord, broker: BrokerId, shards: u16) {
    let positions = topic
        .replicas
        .iter()
        .map(|r| r.replicas.len())
        .max()
        .unwrap_or(0);
    for i in 0..positions {
        let mut column: Vec<Placement> = topic
            .replicas
            .iter()
            .filter_map(|r| r.replicas.get(i).copied())
            .collect();
        fit_to_shards(name, &mut column, broker, shards);
        let mut moved = column.into_iter();
        for r in topic.replicas.iter_mut() {
            if let (Some(slot), Some(pl)) = (r.replicas.get_mut(i), moved.next()) {
                *slot = pl;
            }
        }
    }
    topic.partitions = topic.replicas.iter().map(|r| r.replicas[0]).collect();
}

/// Checks a topic name by Kafka's rules: 1 to [`MAX_TOPIC_NAME_LEN`]
/// characters of `[a-zA-Z0-9._-]`, and not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), ClusterError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        "it is longer than 249 characters"
    } else if name == "." || name == ".." {
        "\".\" and \"..\" are not topic names"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "only ASCII letters, digits, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidTopicName { reason })
}

/// The shard of `broker` (of `shards`) holding the fewest replicas of
/// `topic`, ties to the first from `(h + partition) mod shards` on: where
/// a reassignment puts a new replica.
fn least_loaded_shard(
    topic: &str,
    partition: u32,
    record: &TopicRecord,
    broker: BrokerId,
    shards: u16,
) -> crate::ids::ShardIndex {
    let shards = shards.max(1);
    let mut count = vec![0u64; usize::from(shards)];
    for p in record.replicas.iter().flat_map(|r| &r.replicas) {
        if p.broker == broker && p.shard.0 < shards {
            count[usize::from(p.shard.0)] += 1;
        }
    }
    let start =
        (u64::from(crate::placement::name_hash(topic)) + u64::from(partition)) % u64::from(shards);
    let best = (0..u64::from(shards))
        .map(|k| ((start + k) % u64::from(shards)) as usize)
        .min_by_key(|s| count[*s])
        .unwrap_or(0);
    crate::ids::ShardIndex(best as u16)
}

/// The topic's record and the index of its partition `partition`, or
/// UnknownTopic / UnknownPartition.
fn partition_of<'a>(
    topics: &'a mut std::collections::BTreeMap<String, TopicRecord>,
    topic: &str,
    partition: u32,
) -> Result<(&'a mut TopicRecord, usize), ClusterError> {
    let record = topics.get_mut(topic).ok_or_else(|| unknown_topic(topic))?;
    let count = record.replicas.len();
    match usize::try_from(partition).ok().filter(|p| *p < count) {
        Some(index) => Ok((record, index)),
        None => Err(ClusterError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions: count as u32,
        }),
    }
}
