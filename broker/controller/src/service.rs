//! The controller service: what a controller answers brokers
//! ([`crate::rpc`]) and what its leader does on its own (fencing brokers
//! whose sessions expired).
//!
//! It runs beside the quorum on the controller thread (requests arrive as
//! the quorum's client frames, [`broker_quorum::ClientService`]) and on a
//! ticker thread of its own. The liveness view ([`SessionTracker`]) is the
//! leader's alone and is not replicated: a controller that becomes leader
//! starts every broker's session afresh, so it never fences a broker for
//! time it did not observe. Every decision that changes the cluster is a
//! command proposed to the quorum and decided by the image when applied.
//!
//! Invariants:
//! - Only the leader registers, unfences, fences, shuts down or places:
//!   a follower answers `NotLeader`.
//! - A new leader answers brokers and fences nobody until it has applied
//!   its own term's first entry (so everything earlier terms committed):
//!   until then it answers `Unavailable`.
//! - No lock is held across an await; the tracker's lock is held only to
//!   read or update it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use broker_cluster::{HeartbeatAnswer, MetadataCommand, MetadataImage, SessionTracker};
use broker_quorum::{ProposeError, Quorum};

use crate::machine::{Applied, MetadataMachine};
use crate::rpc::{BrokerStanding, ControllerStatus, Request, Response};

/// How often the leader looks for expired sessions.
pub const TICK: Duration = Duration::from_millis(100);

/// How often the leader moves leaderships back to their preferred replicas
/// (Kafka's `auto.leader.rebalance.enable`, checked every
/// `leader.imbalance.check.interval.seconds`; shorter here, since a
/// returning broker's leaderships are the whole point).
pub const LEADER_REBALANCE_INTERVAL: Duration = Duration::from_secs(5);

/// One controller's service.
pub struct ControllerService {
    quorum: OnceLock<Quorum<MetadataMachine>>,
    sessions: Mutex<Sessions>,
    started: Instant,
    /// When the leader last looked for leaderships off their preferred
    /// replica.
    rebalanced: Mutex<Instant>,
}

/// The leader's liveness view, and the term it was built in.
struct Sessions {
    tracker: SessionTracker,
    /// The term in which this controller last became leader (None: not
    /// leading as far as the tracker knows).
    leading_term: Option<u64>,
}

impl ControllerService {
    /// A service that fences brokers silent for `session_timeout_ms`. It
    /// answers `Unavailable` until [`ControllerService::attach`] gives it
    /// its quorum.
    pub fn new(session_timeout_ms: u64) -> Arc<ControllerService> {
        Arc::new(ControllerService {
            quorum: OnceLock::new(),
            sessions: Mutex::new(Sessions {
                tracker: SessionTracker::new(session_timeout_ms),
                leading_term: None,
            }),
            started: Instant::now(),
            rebalanced: Mutex::new(Instant::now()),
        })
    }

    /// Gives the service its quorum (once; later calls are ignored).
    pub fn attach(&self, quorum: Quorum<MetadataMachine>) {
        let _ = self.quorum.set(quorum);
    }

    /// Milliseconds on this process's monotonic clock.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The applied image (a copy).
    fn image(quorum: &Quorum<MetadataMachine>) -> MetadataImage {
        quorum.read(|m| m.image().clone()).1
    }

    /// The quorum if this controller leads, with the tracker rebuilt when
    /// it has just become leader; otherwise the answer to give instead.
    fn leading(&self) -> Result<&Quorum<MetadataMachine>, Response> {
        let Some(quorum) = self.quorum.get() else {
            return Err(unavailable("the controller is starting"));
        };
        let status = quorum.status();
        if status.leader != Some(status.node_id) {
            if let Ok(mut s) = self.sessions.lock() {
                s.leading_term = None;
            }
            return Err(Response::NotLeader {
                leader: status
                    .leader
                    .and_then(|id| status.voters.get(&id).map(|addr| (id, *addr))),
            });
        }
        // A new leader's applied image may still lack what the previous
        // term committed until it applies its own term's first entry: the
        // tracker and the answers are built from that image only then (a
        // broker registered just before the failover would otherwise be
        // told it is unknown and register again under a new epoch).
        if status.last_applied_term != Some(status.term) {
            return Err(unavailable(
                "the new leader is still applying what earlier terms committed",
            ));
        }
        let mut s = self
            .sessions
            .lock()
            .map_err(|_| unavailable("the session tracker's lock is poisoned"))?;
        if s.leading_term != Some(status.term) {
            s.tracker
                .on_became_leader(&Self::image(quorum), self.now_ms());
            s.leading_term = Some(status.term);
            tracing::info!(
                node = status.node_id,
                term = status.term,
                "leading the controllers"
            );
        }
        Ok(quorum)
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::FetchImage { since_version } => match self.quorum.get() {
                None => unavailable("the controller is starting"),
                Some(q) => {
                    let image = q
                        .read(|m| (m.image().version() > since_version).then(|| m.image().clone()));
                    Response::Image(image.1.map(Box::new))
                }
            },
            Request::Status => match self.quorum.get() {
                None => unavailable("the controller is starting"),
                Some(q) => {
                    let status = q.status();
                    Response::Status(Box::new(ControllerStatus {
                        node_id: status.node_id,
                        leader: status.leader,
                        term: status.term,
                        last_applied: status.last_applied,
                        voters: status.voters.into_iter().collect(),
                        cluster: q.read(|m| m.image().status()).1,
                    }))
                }
            },
            Request::Register {
                registration,
                cluster_id,
            } => {
                let quorum = match self.leading() {
                    Ok(q) => q,
                    Err(answer) => return answer,
                };
                let ours = quorum.read(|m| m.image().cluster_id() == cluster_id).1;
                if !ours {
                    return Response::BadRequest {
                        reason: format!(
                            "broker {} belongs to cluster {cluster_id:?}, these controllers to another",
                            registration.id
                        ),
                    };
                }
                let checked = match self.sessions.lock() {
                    Ok(mut s) => s.tracker.check_registration(
                        &Self::image(quorum),
                        &registration,
                        self.now_ms(),
                    ),
                    Err(_) => return unavailable("the session tracker's lock is poisoned"),
                };
                if let Err(e) = checked {
                    return Response::Applied(Applied {
                        version: Self::image(quorum).version(),
                        result: Err((&e).into()),
                    });
                }
                propose(quorum, MetadataCommand::RegisterBroker(registration)).await
            }
            Request::Heartbeat {
                id,
                epoch,
                applied_version,
            } => {
                let quorum = match self.leading() {
                    Ok(q) => q,
                    Err(answer) => return answer,
                };
                let image = Self::image(quorum);
                let answer = match self.sessions.lock() {
                    Ok(mut s) => {
                        s.tracker
                            .heartbeat(&image, id, epoch, applied_version, self.now_ms())
                    }
                    Err(_) => return unavailable("the session tracker's lock is poisoned"),
                };
                let state = match answer {
                    HeartbeatAnswer::Ok => BrokerStanding::Unfenced,
                    HeartbeatAnswer::CatchingUp {
                        registered_at_version,
                    } => BrokerStanding::CatchingUp {
                        registered_at_version,
                    },
                    HeartbeatAnswer::Unfence(command) => match propose(quorum, command).await {
                        Response::Applied(Applied { result: Ok(_), .. }) => {
                            tracing::info!(broker = %id, %epoch, "broker unfenced");
                            BrokerStanding::Unfenced
                        }
                        _ => BrokerStanding::Fenced,
                    },
                    HeartbeatAnswer::ShutDown => BrokerStanding::ShutDown,
                    HeartbeatAnswer::StaleEpoch { current } => {
                        BrokerStanding::StaleEpoch { current }
                    }
                    HeartbeatAnswer::UnknownBroker => BrokerStanding::UnknownBroker,
                };
                Response::Heartbeat {
                    state,
                    version: quorum.read(|m| m.image().version()).1,
                }
            }
            Request::Shutdown { id, epoch } => match self.leading() {
                Ok(q) => propose(q, MetadataCommand::ShutdownBroker { id, epoch }).await,
                Err(answer) => answer,
            },
            Request::CreateTopic {
                name,
                partitions,
                config,
                request_id,
            } => match self.leading() {
                Ok(q) => {
                    let command = MetadataCommand::CreateTopic {
                        name,
                        partitions,
                        config,
                        request_id,
                    };
                    propose(q, command).await
                }
                Err(answer) => answer,
            },
            Request::DeleteTopic { name } => match self.leading() {
                Ok(q) => propose(q, MetadataCommand::DeleteTopic { name }).await,
                Err(answer) => answer,
            },
            Request::AlterPartition(a) => match self.leading() {
                Ok(q) => propose(q, MetadataCommand::AlterPartition(a)).await,
                Err(answer) => answer,
            },
            Request::ElectPreferredLeaders { topic } => match self.leading() {
                Ok(q) => propose(q, MetadataCommand::ElectPreferredLeaders { topic }).await,
                Err(answer) => answer,
            },
            Request::ReassignPartition {
                topic,
                partition,
                replicas,
            } => match self.leading() {
                Ok(q) => {
                    let command = MetadataCommand::ReassignPartition {
                        topic,
                        partition,
                        replicas,
                    };
                    propose(q, command).await
                }
                Err(answer) => answer,
            },
        }
    }

    /// The leader's periodic work: fences the brokers whose sessions
    /// expired, and every [`LEADER_REBALANCE_INTERVAL`] moves leaderships
    /// back to preferred replicas that are in sync. A follower does nothing.
    pub async fn tick(&self) {
        let Ok(quorum) = self.leading() else {
            return;
        };
        let image = Self::image(quorum);
        let expired = match self.sessions.lock() {
            Ok(mut s) => s.tracker.expired(&image, self.now_ms()),
            Err(_) => return,
        };
        for command in expired {
            let MetadataCommand::FenceBroker { id, epoch } = command else {
                continue;
            };
            let command = MetadataCommand::FenceBroker { id, epoch };
            tracing::warn!(broker = %id, %epoch, "broker session expired: fencing it");
            match propose(quorum, command).await {
                Response::Applied(Applied { result: Ok(_), .. }) => {}
                Response::Applied(Applied { result: Err(e), .. }) => {
                    tracing::warn!(broker = %id, error = %e, "fencing refused")
                }
                other => {
                    // Not committed (a timeout, leadership lost): the next
                    // tick proposes it again.
                    tracing::warn!(broker = %id, answer = ?other, "fencing not committed; retrying");
                    if let Ok(mut s) = self.sessions.lock() {
                        s.tracker.fence_failed(id, epoch);
                    }
                }
            }
        }
        let due = self.rebalanced.lock().is_ok_and(|mut last| {
            let due = last.elapsed() >= LEADER_REBALANCE_INTERVAL;
            if due {
                *last = Instant::now();
            }
            due
        });
        if due && image.preferred_leaders_off() > 0 {
            let command = MetadataCommand::ElectPreferredLeaders { topic: None };
            match propose(quorum, command).await {
                Response::Applied(Applied {
                    result: Ok(done), ..
                }) => {
                    tracing::info!(result = ?done, "leaderships moved back to preferred replicas")
                }
                other => tracing::warn!(answer = ?other, "preferred-leader election not done"),
            }
        }
    }

    /// Runs [`ControllerService::tick`] every [`TICK`] on a thread of its
    /// own until the returned ticker is stopped or dropped.
    pub fn start_ticker(self: &Arc<Self>) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let service = Arc::clone(self);
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("controller-tick".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    futures_lite::future::block_on(service.tick());
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

/// The thread running the leader's periodic work.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl broker_quorum::ClientService for ControllerService {
    fn call(
        self: Arc<Self>,
        request: String,
    ) -> Pin<Box<dyn Future<Output = String> + Send + 'static>> {
        Box::pin(async move {
            let response = match serde_json::from_str::<Request>(&request) {
                Ok(request) => self.handle(request).await,
                Err(e) => Response::BadRequest {
                    reason: format!("undecodable controller request: {e}"),
                },
            };
            serde_json::to_string(&response).unwrap_or_else(|e| {
                format!("{{\"BadRequest\":{{\"reason\":\"unencodable answer: {e}\"}}}}")
            })
        })
    }
}

/// Proposes `command` and answers with what the image made of it.
async fn propose(quorum: &Quorum<MetadataMachine>, command: MetadataCommand) -> Response {
    match quorum.propose(command).await {
        Ok(applied) => Response::Applied(applied),
        Err(ProposeError::NotLeader { leader }) => Response::NotLeader { leader },
        Err(e) => unavailable(&e.to_string()),
    }
}

fn unavailable(reason: &str) -> Response {
    Response::Unavailable {
        reason: reason.to_owned(),
    }
}
