//! The cluster's control plane at run time, over the pure metadata of
//! `broker-cluster` and the Raft quorum of `broker-quorum`:
//! - on a controller, [`Controller`]: the quorum replicating the metadata
//!   image ([`MetadataMachine`]) and the controller service brokers talk
//!   to ([`ControllerService`]: registration, heartbeats, fencing of
//!   expired sessions, topic commands, the image, the status);
//! - on every broker, [`Member`]: registration, heartbeats and the
//!   committed image followed, on a thread of its own;
//! - [`ControllerClient`]: a blocking client of the controllers that
//!   follows the leader.
//!
//! The wire between them is [`rpc`]: JSON messages in the quorum's client
//! frames, on each controller's quorum address (one port per controller).
//!
//! Invariants, as absences: this crate never touches a partition or a
//! shard (the broker applies the image it is handed); it never decides
//! anything itself that changes the cluster: every change is a command the
//! quorum commits and the image applies.
//!
//! Module map:
//! - `machine.rs`: [`MetadataMachine`], [`Applied`], [`Refused`].
//! - `rpc.rs`: [`Request`], [`Response`], [`BrokerStanding`], [`ControllerStatus`].
//! - `service.rs`: [`ControllerService`], its ticker.
//! - `client.rs`: [`ControllerClient`].
//! - `member.rs`: [`Member`], [`MemberConfig`], [`Standing`].

mod client;
mod machine;
mod member;
pub mod rpc;
mod service;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc};

use broker_cluster::MetadataImage;
use broker_quorum::{Quorum, QuorumConfig, QuorumError, QuorumStatus};

pub use client::{AsyncCaller, ClientError, ControllerClient};
pub use machine::{Applied, Done, MetadataMachine, RefusalKind, Refused};
pub use member::{Member, MemberConfig, Refresher, Standing};
pub use rpc::{BrokerStanding, ControllerStatus, Request, Response};
pub use service::{ControllerService, Ticker};

/// How one controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This controller's id (its broker's id).
    pub node_id: u64,
    /// Every controller's id and quorum address (this one's included).
    pub voters: BTreeMap<u64, SocketAddr>,
    /// Where the quorum keeps its vote, log and snapshots.
    pub dir: PathBuf,
    /// The cluster's id: the same on every controller.
    pub cluster_id: String,
    /// A broker not heard from for longer is fenced.
    pub session_timeout_ms: u64,
}

/// Why a controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The cluster id is not one an image takes.
    #[error("cluster id: {0}")]
    ClusterId(#[from] broker_cluster::ClusterError),
    /// The quorum did not start.
    #[error("quorum: {0}")]
    Quorum(#[from] QuorumError),
    /// The ticker thread did not start.
    #[error("controller ticker: {0}")]
    Ticker(#[from] std::io::Error),
}

/// A running controller: its quorum member and its service.
pub struct Controller {
    quorum: Quorum<MetadataMachine>,
    _ticker: Ticker,
}

impl Controller {
    /// Recovers the quorum's state from `config.dir` and starts serving
    /// (blocking: disk recovery, binding the quorum address).
    pub fn start(config: ControllerConfig) -> Result<Controller, ControllerError> {
        let image = MetadataImage::new(&config.cluster_id)?;
        let service = ControllerService::new(config.session_timeout_ms);
        let quorum = Quorum::start_with_clients(
            QuorumConfig::new(config.node_id, config.voters, config.dir),
            MetadataMachine::new(image),
            Arc::clone(&service) as Arc<dyn broker_quorum::ClientService>,
        )?;
        service.attach(quorum.clone());
        let ticker = service.start_ticker()?;
        Ok(Controller {
            quorum,
            _ticker: ticker,
        })
    }

    /// What this controller knows of the quorum.
    pub fn status(&self) -> QuorumStatus {
        self.quorum.status()
    }

    /// Stops the quorum member (idempotent; also when dropped: the
    /// service holds a handle of its own, so the last one never drops by
    /// itself).
    pub fn shutdown(&self) {
        self.quorum.shutdown();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.quorum.shutdown();
    }
}
