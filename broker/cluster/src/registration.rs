//! What a broker tells the controller when it starts: its id, its
//! incarnation, its shard count and where each shard listens, and the
//! checks a registration must pass before it enters the image.

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::ids::{BrokerEpoch, BrokerId, Incarnation, ShardIndex};
use crate::limits::{MAX_BROKER_ID, MAX_HOST_LEN, MAX_SHARDS_PER_BROKER};

/// One broker process's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// The broker's id, at most [`MAX_BROKER_ID`].
    pub id: BrokerId,
    /// This process start: the same incarnation registering again is a
    /// retry, another one a restart (a new epoch).
    pub incarnation: Incarnation,
    /// How many shards it runs, `1..=`[`MAX_SHARDS_PER_BROKER`].
    pub shards: u16,
    /// The native protocol's listener.
    pub native: Listener,
    /// The Kafka protocol's listener, if the broker runs one.
    pub kafka: Option<Listener>,
    /// The last broker epoch this broker recorded durably (its data
    /// directory's `broker-epoch`), None for a new or wiped disk:
    /// broker-replication's clean-restart rule (a restart without it, or
    /// with one older than its last registration that served, leaves every
    /// ELR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_epoch: Option<BrokerEpoch>,
    /// The broker fsyncs every write before acknowledging it (`--fsync
    /// always`): only such brokers take replicas of replicated topics (the
    /// fsync decision). Absent (false) in registrations written before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fsync_every_write: bool,
}

/// Where one protocol is served: a main address that forwards to the
/// owning shard, and one port per shard (on the same host) served by that
/// shard alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `host:port` as clients should dial it (an IPv6 host in brackets).
    pub addr: String,
    /// `shard_ports[s]` is shard `s`'s port; one per shard.
    pub shard_ports: Vec<u16>,
}

impl BrokerRegistration {
    /// Checks the registration: the id's range, the shard count's, and
    /// each listener's address and one port per shard.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.id.0 > MAX_BROKER_ID {
            return Err(ClusterError::BrokerIdOutOfRange { id: self.id });
        }
        if !(1..=MAX_SHARDS_PER_BROKER).contains(&self.shards) {
            return Err(ClusterError::ShardCountOutOfRange {
                shards: self.shards,
            });
        }
        self.native.validate("native", self.shards)?;
        if let Some(kafka) = &self.kafka {
            kafka.validate("kafka", self.shards)?;
        }
        Ok(())
    }

    /// Whether the broker has `shard`.
    pub fn has_shard(&self, shard: ShardIndex) -> bool {
        shard.0 < self.shards
    }
}

impl Listener {
    fn validate(&self, listener: &'static str, shards: u16) -> Result<(), ClusterError> {
        if let Err(reason) = check_addr(&self.addr) {
            return Err(ClusterError::InvalidEndpoint {
                listener,
                reason,
                addr: self.addr.chars().take(MAX_HOST_LEN + 7).collect(),
            });
        }
        if self.shard_ports.len() != usize::from(shards) {
            return Err(ClusterError::ShardPortCount {
                listener,
                given: self.shard_ports.len(),
                shards,
            });
        }
        if let Some(s) = self.shard_ports.iter().position(|&port| port == 0) {
            return Err(ClusterError::InvalidEndpoint {
                listener,
                reason: "a shard's port is 0",
                addr: format!("shard {s}"),
            });
        }
        Ok(())
    }
}

/// Checks `host:port`: a host of printable ASCII without ':' (or an IPv6
/// address in brackets), at most [`MAX_HOST_LEN`] bytes, and a port in
/// 1..=65535. Names are not resolved: the controller does no I/O.
fn check_addr(addr: &str) -> Result<(), &'static str> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("not host:port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("the port is not in 1..=65535"),
        Ok(_) => {}
    }
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err("the host is empty or longer than 253 bytes");
    }
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the host has a byte that is not printable ASCII");
    }
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if (host.contains(':') || host.contains('[') || host.contains(']')) && !bracketed {
        return Err("an IPv6 host must be in brackets, and only it");
    }
    Ok(())
}
