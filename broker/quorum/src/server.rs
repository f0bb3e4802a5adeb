//! The server side of the Raft transport: accepts peers' connections and
//! hands their requests to openraft, one request/response at a time per
//! connection.
//!
//! A bad frame (too long, undecodable) is logged and closes its connection;
//! nothing a peer sends can panic the controller. Connections beyond
//! `MAX_INBOUND_CONNECTIONS`, and connections idle for
//! `INBOUND_IDLE_TIMEOUT_MS`, are closed, and so is one whose snapshot
//! chunks reach past `MAX_SNAPSHOT_BYTES`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::limits::{INBOUND_IDLE_TIMEOUT_MS, MAX_INBOUND_CONNECTIONS, MAX_SNAPSHOT_BYTES};
use crate::rpc::{self, Request, Response};
use crate::types::Raft;
use crate::ClientService;

/// Accepts connections until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft,
    clients: Option<Arc<dyn ClientService>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                tracing::warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_INBOUND_CONNECTIONS, "too many raft connections; closing a new one");
            continue;
        };
        let raft = raft.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            connection(stream, raft, clients).await;
            drop(slot);
        });
    }
}

async fn connection(mut stream: TcpStream, raft: Raft, clients: Option<Arc<dyn ClientService>>) {
    let peer = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?peer, error = %e, "set_nodelay");
    }
    loop {
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
