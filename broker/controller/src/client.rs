//! A blocking client of the controllers: sends a [`Request`] to the leader,
//! following `NotLeader` answers and trying the controllers in their
//! configured order (the broker's own first) when none is known, within a
//! bounded number of attempts; one that does not answer is not asked
//! again in the same call. Used by the broker's membership thread and its
//! shards' [`AsyncCaller`].

use std::{net::SocketAddr, time::Duration};

use crate::rpc::{Request, Response};

/// How many controllers one call tries (hops to a named leader included)
/// before it gives up.
pub const MAX_ATTEMPTS: usize = 8;

/// The most a read or a heartbeat waits for one controller: a controller
/// that does not answer (a black-holed link) costs this, not the longer
/// timeout a proposal is given, before the next one is tried.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No controller answered within the attempts.
    #[error("no controller answered ({attempts} attempts); last error: {last}")]
    NoAnswer {
        /// How many were made.
        attempts: usize,
        /// What the last one gave.
        last: String,
    },
}

/// The controllers, and the leader last heard of.
pub struct ControllerClient {
    controllers: Vec<SocketAddr>,
    leader: Option<SocketAddr>,
    timeout: Duration,
}

impl ControllerClient {
    /// A client of `controllers` (tried in this order until one names the
    /// leader), each proposal waiting at most `timeout` per controller
    /// tried, and each read or heartbeat at most [`QUICK_TIMEOUT`].
    pub fn new(controllers: Vec<SocketAddr>, timeout: Duration) -> ControllerClient {
        ControllerClient {
            controllers,
            leader: None,
            timeout,
        }
    }

    /// The leader this client last heard of.
    pub fn leader(&self) -> Option<SocketAddr> {
        self.leader
    }

    /// Sends `request` to the leader (or, not knowing it, to each
    /// controller in turn) and returns the first answer that is not
    /// `NotLeader` (an `Unavailable` answer included: the caller decides
    /// whether to retry).
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let text = serde_json::to_string(request).map_err(|e| ClientError::NoAnswer {
            attempts: 0,
            last: format!("unencodable request: {e}"),
        })?;
        let timeout = match request {
            Request::Heartbeat { .. } | Request::FetchImage { .. } | Request::Status => {
                self.timeout.min(QUICK_TIMEOUT)
            }
            _ => self.timeout,
        };
        let mut last = String::from("no controller configured");
        // Controllers that did not answer this call are not asked again by
        // it: a black-holed one costs one timeout, not one per attempt.
        let mut dead: Vec<SocketAddr> = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            let next = self
                .leader
                .filter(|a| !dead.contains(a))
                .or_else(|| self.first_alive(&dead));
            let Some(addr) = next else {
                break;
            };
            match broker_quorum::client::call(addr, &text, timeout) {
                Ok(answer) => match serde_json::from_str::<Response>(&answer) {
                    Ok(Response::NotLeader { leader }) => {
                        self.leader = leader.map(|(_, a)| a).filter(|&a| a != addr);
                        if self.leader.is_none() {
                            // Nobody leads yet (an election): ask again
                            // after a pause.
                            std::thread::sleep(self.timeout.min(Duration::from_millis(100)));
                        }
                        last = format!("{addr}: not the leader");
                    }
                    Ok(response) => {
                        self.leader = Some(addr);
                        return Ok(response);
                    }
                    Err(e) => {
                        self.leader = None;
                        dead.push(addr);
                        last = format!("{addr}: undecodable answer: {e}");
                    }
                },
                Err(e) => {
                    self.leader = None;
                    dead.push(addr);
                    last = format!("{addr}: {e}");
                }
            }
            if attempt + 1 == MAX_ATTEMPTS {
                return Err(ClientError::NoAnswer {
                    attempts: MAX_ATTEMPTS,
                    last,
                });
            }
        }
        Err(ClientError::NoAnswer {
            attempts: dead.len(),
            last,
        })
    }

    /// The first controller, in the configured order, that did not fail
    /// this call.
    fn first_alive(&self, dead: &[SocketAddr]) -> Option<SocketAddr> {
        self.controllers.iter().copied().find(|a| !dead.contains(a))
    }
}

/// Most calls an [`AsyncCaller`] queues before it refuses more.
pub const MAX_QUEUED_CALLS: usize = 256;

/// Controller calls for callers that must not block (a glommio shard):
/// each call is queued to a thread of its own, which makes it with a
/// [`ControllerClient`] and answers on a oneshot the caller awaits.
pub struct AsyncCaller {
    calls: Option<crossbeam_channel::Sender<Call>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Call = (
    Request,
    futures_channel::oneshot::Sender<Result<Response, ClientError>>,
);

impl AsyncCaller {
    /// Starts the calling thread, a client of `controllers`.
    pub fn start(controllers: Vec<SocketAddr>, timeout: Duration) -> std::io::Result<AsyncCaller> {
        let (tx, rx) = crossbeam_channel::bounded::<Call>(MAX_QUEUED_CALLS);
        let thread = std::thread::Builder::new()
            .name("controller-calls".into())
            .spawn(move || {
                let mut client = ControllerClient::new(controllers, timeout);
                for (request, reply) in rx {
                    let _ = reply.send(client.call(&request));
                }
            })?;
        Ok(AsyncCaller {
            calls: Some(tx),
            thread: Some(thread),
        })
    }

    /// Makes `request`; the answer comes on the future (an error at once
    /// when too many calls are queued or the thread is gone).
    pub fn call(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Response, ClientError>> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let queued = match &self.calls {
            Some(calls) => calls.try_send((request, reply)).map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => "too many controller calls queued",
                crossbeam_channel::TrySendError::Disconnected(_) => "the calling thread is gone",
            }),
            None => Err("the calling thread is gone"),
        };
        async move {
            queued.map_err(|why| ClientError::NoAnswer {
                attempts: 0,
                last: why.to_owned(),
            })?;
            answer.await.unwrap_or_else(|_| {
                Err(ClientError::NoAnswer {
                    attempts: 0,
                    last: "the calling thread stopped".to_owned(),
                })
            })
        }
    }
}

impl Drop for AsyncCaller {
    fn drop(&mut self) {
        // Closing the queue ends the thread once its current call returns.
        self.calls.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
