//! `Quorum`: starts the controller thread (a tokio current-thread runtime
//! running openraft, the Raft server and the proposals), and the handle the
//! rest of the broker uses from any executor.
//!
//! The handle never needs a runtime of its own: a proposal crosses into the
//! controller thread by a bounded tokio mpsc channel (`try_send`, no
//! waiting) and comes back by a futures-channel oneshot; every timeout runs
//! on the controller thread. tokio's channels and watches do not need a
//! tokio runtime on the side that awaits them, so a glommio task can await
//! `propose` and `wait_applied`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures_channel::oneshot;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::QuorumConfig;
use crate::error::{ProposeError, QuorumError};
use crate::limits::{MAX_COMMAND_BYTES, MAX_PENDING_PROPOSALS, STARTUP_TIMEOUT_MS};
use crate::log_store::LogStore;
use crate::network::Network;
use crate::server;
use crate::sm_store::{self, Shared, SmStore};
use crate::types::Raft;
use crate::{ClientService, StateMachine};

/// A handle on this node's member of the quorum. Clones share it; it is
/// `Send + Sync` and usable from any async runtime. Dropping the last clone
/// shuts the quorum down, as `shutdown` does (and blocks as it does).
pub struct Quorum<SM: StateMachine> {
    inner: Arc<Inner<SM>>,
}

impl<SM: StateMachine> Clone for Quorum<SM> {
    fn clone(&self) -> Self {
        Quorum {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// What this node knows of the quorum, as of openraft's last published
/// metrics (from `start` on, they show the recovered state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    /// This node's id.
    pub node_id: u64,
    /// The leader this node knows of (itself if it leads).
    pub leader: Option<u64>,
    /// This node's current term.
    pub term: u64,
    /// The index of the last entry of this node's log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry applied to this node's state machine.
    pub last_applied: Option<u64>,
    /// The term in which that entry was proposed. A leader whose
    /// `last_applied_term` is its `term` has applied the entry it commits
    /// on election, and with it everything earlier terms committed: only
    /// then does its applied state hold every committed entry (Raft's
    /// read rule, thesis section 6.4).
    pub last_applied_term: Option<u64>,
    /// The index of the last entry the latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The index of the last entry purged from the log (covered by a
    /// snapshot).
    pub purged_index: Option<u64>,
    /// The configured voters and their Raft addresses.
    pub voters: BTreeMap<u64, SocketAddr>,
    /// False once the quorum is shut down or openraft stopped on an error.
    pub running: bool,
}

struct Proposal {
    command: String,
    reply: oneshot::Sender<Result<String, ProposeError>>,
}

struct Inner<SM: StateMachine> {
    node_id: u64,
    voters: Arc<BTreeMap<u64, SocketAddr>>,
    proposals: mpsc::Sender<Proposal>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    applied: watch::Receiver<Option<u64>>,
    shared: Shared<SM>,
}

/// What the controller thread needs besides its channels.
struct Controller {
    node_id: u64,
    voters: Arc<BTreeMap<u64, SocketAddr>>,
    raft_config: Arc<openraft::Config>,
    propose_timeout: Duration,
    /// Nothing on disk: this node takes part in initializing the cluster.
    pristine: bool,
    /// Who answers the application's client frames on the Raft address.
    clients: Option<Arc<dyn ClientService>>,
}

type Ready = Result<watch::Receiver<RaftMetrics<u64, BasicNode>>, QuorumError>;

impl<SM: StateMachine> Quorum<SM> {
    /// Recovers this node's vote, log and snapshot from `config.dir`
    /// (creating it if needed), binds its Raft address, and starts the
    /// controller thread. Blocks on disk recovery and until the thread is up
    /// (at most `STARTUP_TIMEOUT_MS`): call it where blocking is allowed.
    /// A directory another quorum holds is refused (`QuorumError::InUse`)
    /// before anything in it is read.
    ///
    /// On a directory with nothing in it, the node initializes the cluster
    /// with every configured voter: each voter does so on its first start,
    /// and as they all write the same membership entry at the same (first)
    /// log position, this is the documented-safe way to bootstrap openraft;
    /// on an initialized node it is never attempted.
    pub fn start(config: QuorumConfig, sm: SM) -> Result<Quorum<SM>, QuorumError> {
        Quorum::start_serving(config, sm, None)
    }

    /// [`Quorum::start`], with `clients` answering the application's
    /// client frames ([`crate::client::call`]) that arrive on this node's
    /// Raft address, beside the Raft RPCs: one port per controller.
    pub fn start_with_clients(
        config: QuorumConfig,
        sm: SM,
        clients: Arc<dyn ClientService>,
    ) -> Result<Quorum<SM>, QuorumError> {
        Quorum::start_serving(config, sm, Some(clients))
    }

    fn start_serving(
        config: QuorumConfig,
        sm: SM,
        clients: Option<Arc<dyn ClientService>>,
    ) -> Result<Quorum<SM>, QuorumError> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let (log, recovery) = LogStore::open(&config.dir)?;
        if recovery.dropped_bytes > 0 {
            tracing::warn!(
                node = config.node_id,
                entries = recovery.entries,
                dropped_bytes = recovery.dropped_bytes,
                reason = recovery.stopped.as_deref().unwrap_or(""),
                "the quorum log's tail was cut on recovery"
            );
        }
        let (sm_store, applied) = SmStore::open(&config.dir, sm)?;
        let pristine = log.is_pristine() && !sm_store.has_snapshot();
        let shared = sm_store.shared();
        let addr =
            *config
                .voters
                .get(&config.node_id)
                .ok_or(crate::config::ConfigError::NotAVoter {
                    node_id: config.node_id,
                })?;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| QuorumError::Bind { addr, source })?;

        let voters = Arc::new(config.voters.clone());
        let (proposals_tx, proposals_rx) = mpsc::channel(MAX_PENDING_PROPOSALS);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Ready>(1);
        let controller = Controller {
            node_id: config.node_id,
            voters: Arc::clone(&voters),
            raft_config,
            propose_timeout: Duration::from_millis(config.propose_timeout_ms),
            pristine,
            clients,
        };
        let thread = thread::Builder::new()
            .name("controller".to_string())
            .spawn(move || controller.run(log, sm_store, listener, proposals_rx, stop_rx, ready_tx))
            .map_err(|e| QuorumError::Thread(e.to_string()))?;
        let metrics = match ready_rx.recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS)) {
            Ok(Ok(metrics)) => metrics,
            Ok(Err(e)) => {
                if thread.join().is_err() {
                    tracing::error!("the controller thread panicked while failing to start");
                }
                return Err(e);
            }
            Err(_) => {
                // Dropping stop_tx tells the thread to stop when it can.
                return Err(QuorumError::Thread(format!(
                    "not up within {STARTUP_TIMEOUT_MS} ms"
                )));
            }
        };
        tracing::info!(node = config.node_id, %addr, pristine, "quorum started");
        Ok(Quorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                voters,
                proposals: proposals_tx,
                stop: Mutex::new(Some(stop_tx)),
                thread: Mutex::new(Some(thread)),
                metrics,
                applied,
                shared,
            }),
        })
    }

    /// Proposes `command`: resolves to the state machine's response once the
    /// command is committed and applied on this node (the leader). On a
    /// follower, `ProposeError::NotLeader` names the leader to forward to;
    /// nothing is appended. On `Timeout` or `Shutdown` the outcome is
    /// unknown: a command should be safe to apply twice, or carry its own
    /// deduplication.
    pub async fn propose(&self, command: SM::Command) -> Result<SM::Response, ProposeError> {
        let command =
            serde_json::to_string(&command).map_err(|e| ProposeError::Encoding(e.to_string()))?;
        if command.len() > MAX_COMMAND_BYTES {
            return Err(ProposeError::TooLarge {
                bytes: command.len(),
                max: MAX_COMMAND_BYTES,
            });
        }
        let (reply, response) = oneshot::channel();
        self.inner
            .proposals
            .try_send(Proposal { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => ProposeError::Shutdown,
            })?;
        let text = response.await.map_err(|_| ProposeError::Shutdown)??;
        serde_json::from_str(&text).map_err(|e| ProposeError::Encoding(e.to_string()))
    }

    /// What this node knows of the quorum now.
    pub fn status(&self) -> QuorumStatus {
        let running = self
            .inner
            .thread
            .lock()
            .map(|t| t.is_some())
            .unwrap_or(false);
        let m = self.inner.metrics.borrow();
        let running = running && m.running_state.is_ok();
        QuorumStatus {
            node_id: self.inner.node_id,
            leader: if running { m.current_leader } else { None },
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            last_applied_term: m.last_applied.map(|l| l.leader_id.term),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: (*self.inner.voters).clone(),
            running,
        }
    }

    /// Runs `f` on the applied state machine; returns the index of the last
    /// entry applied to it (None: nothing yet) with `f`'s result, both read
    /// under one lock. Holds the state machine's lock while `f` runs, which
    /// stalls the controller's applies: keep `f` short (clone what you need)
    /// and never let it panic (a poisoned lock stops the node's applies).
    pub fn read<R>(&self, f: impl FnOnce(&SM) -> R) -> (Option<u64>, R) {
        let applied = sm_store::lock(&self.inner.shared);
        (applied.last_applied.map(|l| l.index), f(&applied.sm))
    }

    /// Resolves once this node has applied the entry at `index` (or a later
    /// one), with the last applied index; `QuorumError::Shutdown` if the
    /// quorum stops first. With `read`, a follower of the committed state
    /// loops: `let (i, s) = q.read(..); q.wait_applied(i.map_or(0, |i| i + 1))`.
    /// Has no timeout of its own: race it with the caller's timer.
    pub async fn wait_applied(&self, index: u64) -> Result<u64, QuorumError> {
        let mut applied = self.inner.applied.clone();
        let got = *applied
            .wait_for(|a| a.is_some_and(|a| a >= index))
            .await
            .map_err(|_| QuorumError::Shutdown)?;
        Ok(got.unwrap_or(index))
    }

    /// Stops the controller thread (openraft, the Raft server, pending
    /// proposals, which answer `Shutdown`) and waits for it. Idempotent.
    /// Blocks until openraft has stopped, which is quick (no I/O to drain
    /// but an fsync in progress): call it where blocking is allowed.
    pub fn shutdown(&self) {
        self.inner.stop_and_join();
    }
}

impl<SM: StateMachine> Inner<SM> {
    fn stop_and_join(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            // Sending or dropping both wake the controller's stop arm.
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            if thread.thread().id() == thread::current().id() {
                return;
            }
            if thread.join().is_err() {
                tracing::error!(node = self.node_id, "the controller thread panicked");
            }
        }
    }
}

impl<SM: StateMachine> Drop for Inner<SM> {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl Controller {
    fn run<SM: StateMachine>(
        self,
        log: LogStore,
        sm_store: SmStore<SM>,
        listener: std::net::TcpListener,
        mut proposals: mpsc::Receiver<Proposal>,
        mut stop: oneshot::Receiver<()>,
        ready: std_mpsc::SyncSender<Ready>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(QuorumError::Thread(format!("tokio runtime: {e}"))));
                return;
            }
        };
        runtime.block_on(async move {
            let network = Network::new(self.node_id, Arc::clone(&self.voters));
            let raft = match Raft::new(self.node_id, Arc::clone(&self.raft_config), network, log, sm_store).await {
                Ok(raft) => raft,
                Err(e) => {
                    let _ = ready.send(Err(QuorumError::Raft(e.to_string())));
                    return;
                }
            };
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(QuorumError::Thread(format!("raft listener: {e}"))));
                    stop_raft(&raft).await;
                    return;
                }
            };
            let server = tokio::spawn(server::serve(listener, raft.clone(), self.clients.clone()));
            if self.pristine {
                let members: BTreeMap<u64, BasicNode> =
                    self.voters.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect();
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!(node = self.node_id, "initialized the cluster's membership"),
                    Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                        tracing::info!(node = self.node_id, %e, "already initialized")
                    }
                    Err(e) => {
                        let _ = ready.send(Err(QuorumError::Raft(format!("initialize: {e}"))));
                        server.abort();
                        stop_raft(&raft).await;
                        return;
                    }
                }
            }
            // Hand back metrics that show the recovered (or just
            // initialized) state, not openraft's initial zeros: an
            // initialized node always has a membership with a log id.
            let published = raft
                .wait(Some(Duration::from_millis(STARTUP_TIMEOUT_MS / 2)))
                .metrics(|m| m.membership_config.log_id().is_some(), "the recovered state in the metrics")
                .await;
            if let Err(e) = published {
                tracing::warn!(node = self.node_id, error = %e, "metrics not published yet");
            }
            if ready.send(Ok(raft.metrics())).is_err() {
                // start() gave up waiting.
                server.abort();
                stop_raft(&raft).await;
                return;
            }
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    proposal = proposals.recv() => match proposal {
                        Some(p) => {
                            tokio::spawn(propose(raft.clone(), p, self.propose_timeout, Arc::clone(&self.voters)));
                        }
                        None => break,
                    },
                }
            }
            server.abort();
            stop_raft(&raft).await;
            tracing::info!(node = self.node_id, "quorum stopped");
        });
    }
}

async fn stop_raft(raft: &Raft) {
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
}

async fn propose(
    raft: Raft,
    proposal: Proposal,
    timeout: Duration,
    voters: Arc<BTreeMap<u64, SocketAddr>>,
) {
    let result = match tokio::time::timeout(timeout, raft.client_write(proposal.command)).await {
        Err(_) => Err(ProposeError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Ok(written)) => Ok(written.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            let leader = f.leader_id.and_then(|id| {
                let addr = voters
                    .get(&id)
                    .copied()
                    .or_else(|| f.leader_node.as_ref().and_then(|n| n.addr.parse().ok()));
                addr.map(|addr| (id, addr))
            });
            Err(ProposeError::NotLeader { leader })
        }
        Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Fatal(e.to_string())),
        Ok(Err(RaftError::Fatal(Fatal::Stopped))) => Err(ProposeError::Shutdown),
        Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
    };
    // The proposer may have stopped waiting; the outcome stands regardless.
    let _ = proposal.reply.send(result);
}
