//! The server side of the Raft transport: accepts peers' connections and
//! hands their requests to openraft, one request/response at a time per
//! connection.
//!
//! A bad frame (too long, undecodable) is logged and closes its connection;
//! nothing a peer sends can panic the controller. Connections idle for
//! `INBOUND_IDLE_TIMEOUT_MS` are closed, and so is one whose snapshot
//! chunks reach past `MAX_SNAPSHOT_BYTES`. At most
//! `MAX_INBOUND_CONNECTIONS` are open: a new one beyond them takes the
//! place of the one that has waited longest for a request, if that one
//! has waited `EVICTABLE_AFTER_MS` (a black-holed link leaves connections
//! that never send again: a peer that times out an RPC abandons its
//! connection and dials a new one, and a partition that swallows the FIN
//! keeps every abandoned one open here; they must not lock out the
//! healthy peers and the brokers' calls, which the cluster test of a
//! cut-off leader saw for up to a minute). Otherwise the new one is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::limits::{
    EVICTABLE_AFTER_MS, INBOUND_IDLE_TIMEOUT_MS, MAX_INBOUND_CONNECTIONS, MAX_SNAPSHOT_BYTES,
};
use crate::rpc::{self, Request, Response};
use crate::types::Raft;
use crate::ClientService;

/// An open connection as the acceptor sees it.
struct Slot {
    /// Since when it waits for its next request (None: one is being
    /// answered).
    waiting_since: Option<Instant>,
    /// Told to close.
    close: Arc<Notify>,
}

/// The open connections, by a number of their own.
#[derive(Default)]
struct Slots {
    open: Mutex<HashMap<u64, Slot>>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for connection `id`, evicting the longest-waiting
    /// connection when all are taken and it has waited long enough; None
    /// when none can be freed.
    fn take(&self, id: u64, now: Instant) -> Option<Arc<Notify>> {
        let mut open = self.lock();
        if open.len() >= MAX_INBOUND_CONNECTIONS {
            let evictable = Duration::from_millis(EVICTABLE_AFTER_MS);
            let (&oldest, since) = open
                .iter()
                .filter_map(|(k, s)| s.waiting_since.map(|t| (k, t)))
                .min_by_key(|&(_, t)| t)?;
            if now.saturating_duration_since(since) < evictable {
                return None;
            }
            if let Some(evicted) = open.remove(&oldest) {
                evicted.close.notify_one();
            }
        }
        let close = Arc::new(Notify::new());
        open.insert(
            id,
            Slot {
                waiting_since: Some(now),
                close: Arc::clone(&close),
            },
        );
        Some(close)
    }

    fn waiting(&self, id: u64, since: Option<Instant>) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.waiting_since = since;
        }
    }

    fn release(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Accepts connections until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft,
    clients: Option<Arc<dyn ClientService>>,
) {
    let slots = Arc::new(Slots::default());
    for id in 0u64.. {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                tracing::warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(close) = slots.take(id, Instant::now()) else {
            tracing::warn!(%peer, max = MAX_INBOUND_CONNECTIONS, "too many raft connections; closing a new one");
            continue;
        };
        let raft = raft.clone();
        let clients = clients.clone();
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            tokio::select! {
                () = connection(stream, raft, clients, &slots, id) => {}
                () = close.notified() => {
                    tracing::debug!(%peer, "raft connection evicted: the longest waiting for a request when all were taken");
                }
            }
            slots.release(id);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    raft: Raft,
    clients: Option<Arc<dyn ClientService>>,
    slots: &Slots,
    id: u64,
) {
    let peer = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?peer, error = %e, "set_nodelay");
    }
    loop {
        slots.waiting(id, Some(Instant::now()));
        let idle = Duration::from_millis(INBOUND_IDLE_TIMEOUT_MS);
        let request =
            match tokio::time::timeout(idle, rpc::read_frame::<Request>(&mut stream)).await {
                Err(_) => return,
                Ok(Ok(None)) => return,
                Ok(Ok(Some(request))) => request,
                Ok(Err(e)) => {
                    tracing::error!(?peer, error = %e, "bad raft frame; closing the connection");
                    return;
                }
            };
        slots.waiting(id, None);
        // The receiving side gathers a snapshot's chunks in memory before
        // installing it: refuse one that would pass the bound (the leader
        // retries, and the node stays behind, loudly).
        if let Request::InstallSnapshot(r) = &request {
            let end = r.offset.saturating_add(r.data.len() as u64);
            if end > MAX_SNAPSHOT_BYTES as u64 {
                tracing::error!(
                    ?peer,
                    end,
                    max = MAX_SNAPSHOT_BYTES,
                    "snapshot chunk past the snapshot bound; closing the connection"
                );
                return;
            }
        }
        let response = match request {
            Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(raft.install_snapshot(r).await)
            }
            Request::Client(text) => match &clients {
                Some(c) => Response::Client(Arc::clone(c).call(text).await),
                None => Response::NoClientService,
            },
        };
        if let Err(e) = rpc::write_frame(&mut stream, &response).await {
            tracing::debug!(?peer, error = %e, "raft response not sent; closing the connection");
            return;
        }
    }
}
