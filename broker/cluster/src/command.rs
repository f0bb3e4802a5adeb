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
use crate::placement::{fit_to_shards, place, Placement};
use crate::registration::BrokerRegistration;

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
        let epoch = self.next_broker_epoch;
        let next = epoch
            .0
            .checked_add(1)
            .ok_or(ClusterError::EpochsExhausted)?;
        self.next_broker_epoch = BrokerEpoch(next);
        if shrunk {
            for (name, topic) in &mut self.topics {
                fit_to_shards(name, &mut topic.partitions, id, registration.shards);
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
            },
        );
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
        let unfenced: Vec<(BrokerId, u16)> = self
            .brokers
            .iter()
            .filter(|(_, record)| !record.is_fenced())
            .map(|(&id, record)| (id, record.registration.shards))
            .collect();
        if unfenced.is_empty() {
            return Err(ClusterError::NoUnfencedBroker);
        }
        let placement = place(name, partitions, &unfenced);
        self.topics.insert(
            name.to_owned(),
            TopicRecord {
                config: *config,
                partitions: placement.clone(),
                created_by: request_id,
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
