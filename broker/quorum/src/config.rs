//! `QuorumConfig`: who the voters are, where this node keeps its files, and
//! the Raft timings; defaults and validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::limits::MAX_VOTERS;

/// Default heartbeat: a leader's AppendEntries to each follower this often.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Default lower bound of the randomized election timeout.
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 500;
/// Default upper bound of the randomized election timeout.
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 1000;
/// Default snapshot policy: a snapshot after this many applied entries.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
/// Default entries kept in the log below the snapshot, so a follower a
/// little behind catches up from the log rather than by a snapshot.
pub const DEFAULT_LOG_KEEP_AFTER_SNAPSHOT_ENTRIES: u64 = 100;
/// Default time a proposal may take to commit and apply.
pub const DEFAULT_PROPOSE_TIMEOUT_MS: u64 = 5000;

/// The configuration of one controller of the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// This controller's id; must be a key of `voters`.
    pub node_id: u64,
    /// Every controller of the quorum, this one included, and the address
    /// each listens on for Raft RPCs (this node binds its own). The same map
    /// on every controller. The addresses here are authoritative: the ones
    /// recorded in the Raft membership serve only as a fallback.
    pub voters: BTreeMap<u64, SocketAddr>,
    /// Where this controller keeps its vote, log and snapshot (created if
    /// missing; one directory per controller).
    pub dir: PathBuf,
    /// The leader's heartbeat interval.
    pub heartbeat_ms: u64,
    /// The election timeout is drawn in `[min, max)` at each timer reset.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries applied since the last.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log below the last snapshot before they are
    /// purged (0: purge everything the snapshot covers).
    pub log_keep_after_snapshot_entries: u64,
    /// A proposal not committed and applied within this time answers
    /// `ProposeError::Timeout` (its outcome is then unknown).
    pub propose_timeout_ms: u64,
}

impl QuorumConfig {
    /// A configuration with the default timings and snapshot policy.
    pub fn new(node_id: u64, voters: BTreeMap<u64, SocketAddr>, dir: impl Into<PathBuf>) -> Self {
        QuorumConfig {
            node_id,
            voters,
            dir: dir.into(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            log_keep_after_snapshot_entries: DEFAULT_LOG_KEEP_AFTER_SNAPSHOT_ENTRIES,
            propose_timeout_ms: DEFAULT_PROPOSE_TIMEOUT_MS,
        }
    }

    /// Checks the configuration; `Quorum::start` calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        if self.voters.len() > MAX_VOTERS {
            return Err(ConfigError::TooManyVoters {
                count: self.voters.len(),
                max: MAX_VOTERS,
            });
        }
        if !self.voters.contains_key(&self.node_id) {
            return Err(ConfigError::NotAVoter {
                node_id: self.node_id,
            });
        }
        let mut seen = BTreeSet::new();
        for addr in self.voters.values() {
            if !seen.insert(*addr) {
                return Err(ConfigError::DuplicateAddress { addr: *addr });
            }
        }
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::NoDir);
        }
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::Zero {
                field: "heartbeat_ms",
            });
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_timeout_min_ms: self.election_timeout_min_ms,
                heartbeat_ms: self.heartbeat_ms,
            });
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(ConfigError::ElectionRange {
                min_ms: self.election_timeout_min_ms,
                max_ms: self.election_timeout_max_ms,
            });
        }
        if self.snapshot_every_entries == 0 {
            return Err(ConfigError::Zero {
                field: "snapshot_every_entries",
            });
        }
        if self.propose_timeout_ms == 0 {
            return Err(ConfigError::Zero {
                field: "propose_timeout_ms",
            });
        }
        Ok(())
    }

    /// openraft's configuration for this one.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let config = openraft::Config {
            cluster_name: "broker-quorum".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Per snapshot chunk; a chunk is one RPC, bounded like any other.
            install_snapshot_timeout: self.election_timeout_max_ms,
            max_payload_entries: crate::limits::MAX_ENTRIES_PER_APPEND,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            snapshot_max_chunk_size: crate::limits::SNAPSHOT_CHUNK_BYTES,
            max_in_snapshot_log_to_keep: self.log_keep_after_snapshot_entries,
            // One rewrite of the log file per snapshot, not one per entry.
            purge_batch_size: self.snapshot_every_entries,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Raft(e.to_string()))
    }
}

/// What is wrong with a `QuorumConfig`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `voters` is empty.
    #[error("no voters: a quorum needs at least one controller")]
    NoVoters,
    /// More voters than `MAX_VOTERS`.
    #[error("{count} voters, at most {max}")]
    TooManyVoters {
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// `node_id` is not a key of `voters`.
    #[error("node {node_id} is not among the voters")]
    NotAVoter {
        /// This node's id.
        node_id: u64,
    },
    /// Two voters share an address.
    #[error("two voters share the address {addr}")]
    DuplicateAddress {
        /// The shared address.
        addr: SocketAddr,
    },
    /// `dir` is empty.
    #[error("no directory given for the quorum's files")]
    NoDir,
    /// A field that must be positive is 0.
    #[error("{field} must be > 0")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// The election timeout does not exceed the heartbeat.
    #[error("election_timeout_min_ms ({election_timeout_min_ms}) must be > heartbeat_ms ({heartbeat_ms})")]
    ElectionNotAboveHeartbeat {
        /// The lower election bound.
        election_timeout_min_ms: u64,
        /// The heartbeat.
        heartbeat_ms: u64,
    },
    /// The election range is empty.
    #[error("election_timeout_min_ms ({min_ms}) must be < election_timeout_max_ms ({max_ms})")]
    ElectionRange {
        /// The lower bound.
        min_ms: u64,
        /// The upper bound.
        max_ms: u64,
    },
    /// openraft refused the derived configuration.
    #[error("openraft refused the configuration: {0}")]
    Raft(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(n: u64) -> BTreeMap<u64, SocketAddr> {
        (1..=n)
            .map(|i| (i, SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))))
            .collect()
    }

    #[test]
    fn defaults_validate_and_map_to_openraft() {
        let config = QuorumConfig::new(1, voters(3), "/tmp/q");
        assert_eq!(config.validate(), Ok(()));
        let raft = config.raft_config().expect("valid");
        assert_eq!(raft.heartbeat_interval, 100);
        assert_eq!(raft.election_timeout_min, 500);
        assert_eq!(raft.election_timeout_max, 1000);
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let good = QuorumConfig::new(1, voters(3), "/tmp/q");
        let mut c = good.clone();
        c.node_id = 4;
        assert_eq!(c.validate(), Err(ConfigError::NotAVoter { node_id: 4 }));
        let mut c = good.clone();
        c.voters.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoVoters));
        let mut c = good.clone();
        let addr = c.voters[&1];
        c.voters.insert(2, addr);
        assert_eq!(c.validate(), Err(ConfigError::DuplicateAddress { addr }));
        let mut c = good.clone();
        c.election_timeout_min_ms = 100;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionNotAboveHeartbeat { .. })
        ));
        let mut c = good.clone();
        c.election_timeout_max_ms = 500;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionRange { .. })
        ));
        let mut c = good.clone();
        c.snapshot_every_entries = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                field: "snapshot_every_entries"
            })
        );
        let mut c = good;
        c.voters = voters(10);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooManyVoters { count: 10, .. })
        ));
    }
}
