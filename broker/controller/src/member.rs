//! A broker's membership of the cluster ([`Member`]): a thread that
//! registers this process with the controllers, heartbeats to the leader,
//! and follows the committed metadata image, handing each newer image to
//! the broker (`on_image`).
//!
//! The broker's standing is what the leader last answered. A heartbeat
//! answered `StaleEpoch` with a newer epoch than this process's means
//! another process registered this broker id since, and one answered
//! `ShutDown` that this incarnation was shut down: either way this process
//! is evicted for good (`on_evicted`, once; the broker stops) and the
//! thread ends. (`StaleEpoch` with an older epoch comes from a leader that
//! has not applied this process's registration yet: it passes.) A
//! heartbeat that gets no answer leaves the standing as it was; the
//! leader fences the broker when its session expires. An image of another
//! cluster is never handed over.
//!
//! Invariants:
//! - Images are handed over in increasing version order, never an older
//!   or equal one twice.
//! - Every wait is bounded (the rpc timeout, the heartbeat interval); the
//!   thread stops within one interval of [`Member::stop`].

use std::{
    net::SocketAddr,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use broker_cluster::{BrokerEpoch, BrokerRegistration, MetadataImage};

use crate::client::ControllerClient;
use crate::machine::{Applied, Done, RefusalKind};
use crate::rpc::{BrokerStanding, Request, Response};

/// How a broker takes part in the cluster.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// What it registers (its incarnation drawn at this process's start).
    pub registration: BrokerRegistration,
    /// The cluster it belongs to: the controllers refuse it otherwise, and
    /// it takes no image of another.
    pub cluster_id: String,
    /// The controllers' addresses.
    pub controllers: Vec<SocketAddr>,
    /// How often it heartbeats.
    pub heartbeat_interval: Duration,
    /// How long one controller call may take.
    pub rpc_timeout: Duration,
}

/// Where the broker stands, as the membership thread last learnt it.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// Its epoch, once registered.
    pub epoch: Option<BrokerEpoch>,
    /// What the leader last answered to a heartbeat.
    pub standing: Option<BrokerStanding>,
    /// The version of the last image handed over (0: none yet).
    pub version: u64,
    /// The leader last heard from.
    pub leader: Option<SocketAddr>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    standing: Standing,
    image: Option<Arc<MetadataImage>>,
    /// Fetch the image now instead of at the next heartbeat.
    refresh: bool,
    stop: Stop,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// Stop, after telling the leader (a controlled shutdown).
    Shutdown,
    /// Stop at once.
    Now,
}

/// The running membership of this broker.
pub struct Member {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    /// Starts the membership thread. `on_image` runs on it, once per newer
    /// image, in version order; keep it short (hand the image over).
    /// `on_evicted` runs on it once if this process is evicted (another one
    /// took its broker id, or it was shut down), with the reason.
    pub fn start(
        config: MemberConfig,
        on_image: impl Fn(Arc<MetadataImage>) + Send + 'static,
        on_evicted: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Member> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                standing: Standing {
                    epoch: None,
                    standing: None,
                    version: 0,
                    leader: None,
                },
                image: None,
                refresh: false,
                stop: Stop::Run,
            }),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("cluster-member".into())
                .spawn(move || run(config, &shared, &on_image, &on_evicted))?
        };
        Ok(Member {
            shared,
            thread: Some(thread),
        })
    }

    /// Where the broker stands now.
    pub fn standing(&self) -> Standing {
        self.lock().standing.clone()
    }

    /// The last image handed over.
    pub fn image(&self) -> Option<Arc<MetadataImage>> {
        self.lock().image.clone()
    }

    /// Waits (at most `timeout`) until `done` holds of the standing; returns
    /// the standing then, or None on timeout.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Standing) -> bool,
    ) -> Option<Standing> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state.standing) {
                return Some(state.standing.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Fetches the image now rather than at the next heartbeat (after a
    /// topic command, say).
    pub fn refresh(&self) {
        self.refresher().now();
    }

    /// A handle that asks for [`Member::refresh`] from any thread.
    pub fn refresher(&self) -> Refresher {
        Refresher(Arc::clone(&self.shared))
    }

    /// Stops the thread; with `shutdown`, first tells the leader this
    /// incarnation is going (it is fenced at once rather than after its
    /// session expires). Waits for the thread.
    pub fn stop(mut self, shutdown: bool) {
        self.stop_thread(if shutdown { Stop::Shutdown } else { Stop::Now });
    }

    fn stop_thread(&mut self, how: Stop) {
        {
            let mut state = self.lock();
            if state.stop == Stop::Run {
                state.stop = how;
            }
        }
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Asks a [`Member`] to fetch the image now; usable from any thread.
#[derive(Clone)]
pub struct Refresher(Arc<Shared>);

impl Refresher {
    /// Fetch the image now rather than at the next heartbeat.
    pub fn now(&self) {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refresh = true;
        self.0.changed.notify_all();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop_thread(Stop::Now);
    }
}

/// The membership thread.
fn run(
    config: MemberConfig,
    shared: &Shared,
    on_image: &dyn Fn(Arc<MetadataImage>),
    on_evicted: &dyn Fn(String),
) {
    let mut client = ControllerClient::new(config.controllers.clone(), config.rpc_timeout);
    let id = config.registration.id;
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let update = |f: &dyn Fn(&mut Standing)| {
        f(&mut lock().standing);
        shared.changed.notify_all();
    };
    loop {
        let (stop, epoch, version) = {
            let s = lock();
            (s.stop, s.standing.epoch, s.standing.version)
        };
        match stop {
            Stop::Now => return,
            Stop::Shutdown => {
                if let Some(epoch) = epoch {
                    match client.call(&Request::Shutdown { id, epoch }) {
                        Ok(Response::Applied(Applied { result: Ok(_), .. })) => {
                            tracing::info!(broker = %id, %epoch, "controlled shutdown acknowledged");
                            // The image with this broker fenced: its
                            // leaderships have moved, and its replicas,
                            // still running, learn it before they stop.
                            if let Ok(Response::Image(Some(image))) =
                                client.call(&Request::FetchImage {
                                    since_version: version,
                                })
                            {
                                let image: Arc<MetadataImage> = Arc::from(image);
                                if image.cluster_id() == config.cluster_id
                                    && image.version() > version
                                {
                                    on_image(image);
                                }
                            }
                        }
                        other => {
                            tracing::warn!(broker = %id, answer = ?other, "controlled shutdown not acknowledged")
                        }
                    }
                }
                return;
            }
            Stop::Run => {}
        }
        let mut leader_version = None;
        match epoch {
            None => match client.call(&Request::Register {
                registration: config.registration.clone(),
                cluster_id: config.cluster_id.clone(),
            }) {
                Ok(Response::Applied(Applied {
                    result: Ok(Done::Registered { epoch }),
                    version,
                })) => {
                    tracing::info!(broker = %id, %epoch, "registered with the controllers");
                    update(&|s| s.epoch = Some(epoch));
                    leader_version = Some(version);
                }
                Ok(Response::Applied(Applied { result: Err(e), .. }))
                    if e.kind == RefusalKind::DuplicateBrokerRegistration =>
                {
                    tracing::info!(broker = %id, "waiting for the previous incarnation's session to expire");
                }
                other => {
                    tracing::warn!(broker = %id, answer = ?other, "registration not accepted yet")
                }
            },
            Some(epoch) => match client.call(&Request::Heartbeat {
                id,
                epoch,
                applied_version: version,
            }) {
                Ok(Response::Heartbeat { state, version }) => {
                    let evicted = match state {
                        BrokerStanding::StaleEpoch { current } if current > epoch => Some(format!(
                            "another process registered broker {id} (epoch {current}; this one has {epoch})"
                        )),
                        BrokerStanding::ShutDown => {
                            Some(format!("broker {id} epoch {epoch} was shut down"))
                        }
                        _ => None,
                    };
                    if let Some(why) = evicted {
                        tracing::error!(broker = %id, %epoch, "evicted from the cluster: {why}");
                        update(&|s| s.standing = Some(state));
                        on_evicted(why);
                        return;
                    }
                    if let BrokerStanding::StaleEpoch { current } = state {
                        // A leader that has not applied this registration
                        // yet: the standing stays as it was.
                        tracing::debug!(broker = %id, %epoch, %current, "heartbeat answered by a lagging leader");
                    } else {
                        if state == BrokerStanding::UnknownBroker {
                            update(&|s| s.epoch = None);
                        }
                        let leader = client.leader();
                        update(&|s| {
                            s.standing = Some(state);
                            s.leader = leader;
                        });
                        leader_version = Some(version);
                    }
                }
                other => tracing::warn!(broker = %id, answer = ?other, "heartbeat not answered"),
            },
        }
        let refresh = std::mem::take(&mut lock().refresh);
        if refresh || leader_version.is_some_and(|v| v > version) {
            if let Ok(Response::Image(Some(image))) = client.call(&Request::FetchImage {
                since_version: version,
            }) {
                let image: Arc<MetadataImage> = Arc::from(image);
                let ours = image.cluster_id() == config.cluster_id;
                if !ours {
                    tracing::error!(broker = %id, theirs = image.cluster_id(), ours = %config.cluster_id,
                        "the controllers serve another cluster's metadata: not taken");
                }
                let newer = ours && {
                    let mut s = lock();
                    let newer = image.version() > s.standing.version;
                    if newer {
                        s.standing.version = image.version();
                        s.image = Some(Arc::clone(&image));
                    }
                    newer
                };
                if newer {
                    on_image(image);
                    shared.changed.notify_all();
                }
            }
        }
        // Sleep until the next heartbeat, or until woken (stop, refresh).
        let s = lock();
        if s.stop == Stop::Run && !s.refresh {
            let _ = shared.changed.wait_timeout(s, config.heartbeat_interval);
        }
    }
}
