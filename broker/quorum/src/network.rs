//! The client side of the Raft transport: openraft's `RaftNetworkFactory`
//! and `RaftNetwork` over TCP (frames of `rpc.rs`).
//!
//! One connection per peer client (openraft makes one client per
//! replication stream and per election), one RPC on it at a time. Every RPC
//! (connect, write, read) is bounded by the TTL openraft gives it, the
//! connect alone by `CONNECT_TIMEOUT_MS` too. Any failure drops the
//! connection, so the next RPC reconnects: a restarted peer is reached again
//! without anything else to do.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use tokio::net::TcpStream;

use crate::limits::CONNECT_TIMEOUT_MS;
use crate::rpc::{self, FrameError, Request, Response};
use crate::types::TypeConfig;

/// Makes clients to peers; addresses come from the configuration.
pub(crate) struct Network {
    node_id: u64,
    voters: Arc<BTreeMap<u64, SocketAddr>>,
}

impl Network {
    pub(crate) fn new(node_id: u64, voters: Arc<BTreeMap<u64, SocketAddr>>) -> Self {
        Network { node_id, voters }
    }
}

/// A client to one peer.
pub(crate) struct Peer {
    node_id: u64,
    target: u64,
    /// None if neither the configuration nor the membership gives one.
    addr: Option<SocketAddr>,
    stream: Option<TcpStream>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let addr = self
            .voters
            .get(&target)
            .copied()
            .or_else(|| node.addr.parse().ok());
        Peer {
            node_id: self.node_id,
            target,
            addr,
            stream: None,
        }
    }
}

/// Why one call failed, before it is mapped to openraft's error.
#[derive(Debug)]
enum CallError {
    /// The peer could not be reached (no address, refused, connect timeout).
    Unreachable(String),
    /// The call did not finish within its TTL.
    Timeout,
    /// The connection failed or carried a bad frame.
    Frame(FrameError),
    /// The peer answered with a response of another kind.
    Mismatch,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Frame(e) => write!(f, "{e}"),
            CallError::Mismatch => write!(f, "a response of another kind"),
        }
    }
}

impl std::error::Error for CallError {}

impl Peer {
    /// Sends `request` and reads its response within `ttl`.
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Response, CallError> {
        let result = tokio::time::timeout(ttl, self.exchange(&request, ttl))
            .await
            .unwrap_or(Err(CallError::Timeout));
        if let Err(e) = &result {
            tracing::debug!(target_node = self.target, error = %e, "raft rpc failed; reconnecting on the next");
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &Request, ttl: Duration) -> Result<Response, CallError> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let addr = self.addr.ok_or_else(|| {
                    CallError::Unreachable(format!("no address for node {}", self.target))
                })?;
                let limit = ttl.min(Duration::from_millis(CONNECT_TIMEOUT_MS));
                let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(CallError::Unreachable(format!("connect {addr}: {e}")))
                    }
                    Err(_) => {
                        return Err(CallError::Unreachable(format!("connect {addr}: timed out")))
                    }
                };
                // Small frames (heartbeats, votes) must not wait for Nagle.
                stream
                    .set_nodelay(true)
                    .map_err(|e| CallError::Frame(FrameError::Io(e)))?;
                self.stream.insert(stream)
            }
        };
        rpc::write_frame(stream, request)
            .await
            .map_err(CallError::Frame)?;
        match rpc::read_frame::<Response>(stream).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(CallError::Frame(FrameError::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ))),
            Err(e) => Err(CallError::Frame(e)),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<u64, BasicNode, E> {
        match e {
            CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Frame(_) | CallError::Mismatch => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let ttl = option.hard_ttl();
        match self.call(Request::AppendEntries(rpc), ttl).await {
            Ok(Response::AppendEntries(Ok(r))) => Ok(r),
            Ok(Response::AppendEntries(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, RPCTypes::AppendEntries, ttl)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let ttl = option.hard_ttl();
        match self.call(Request::InstallSnapshot(rpc), ttl).await {
            Ok(Response::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Response::InstallSnapshot(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, RPCTypes::InstallSnapshot, ttl)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let ttl = option.hard_ttl();
        match self.call(Request::Vote(rpc), ttl).await {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, RPCTypes::Vote, ttl)),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }
}
