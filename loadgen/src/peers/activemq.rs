//! ActiveMQ over STOMP (the `tokio-stomp-2` crate; Debian's ActiveMQ
//! ships no AMQP transport). One queue; messages `persistent:true` in both
//! modes (stored in KahaDB).
//!
//! - produce, `paper`: SEND without a receipt (asynchronous), the journal
//!   not fsynced (peers.sh); the run ends at the receipt of one last SEND,
//!   which ActiveMQ answers after every earlier frame of the connection.
//! - produce, `durable`: every SEND asks a receipt, sent once the message is
//!   stored with the journal fsynced; up to [`RECEIPT_WINDOW`] in flight,
//!   latency is send-to-receipt.
//! - consume: a queue subscription with ActiveMQ's STOMP default prefetch
//!   (1000 messages, as the paper's ~1000-message fetch), auto acknowledge.
//!
//! The crate takes each body as an owned `Vec<u8>`, so the payload is
//! cloned per message (a memcpy of 200 bytes).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use tokio_stomp_2::{client, FromServer, Message, ToServer};

use crate::{
    ours::payload,
    progress::Progress,
    results::{latency_histogram, Latency},
};

use super::PeerRun;

/// Sends awaiting their receipt at once in durable mode.
pub const RECEIPT_WINDOW: usize = 1000;
const QUEUE: &str = "/queue/loadgen";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn send(body: &[u8], receipt: Option<u64>) -> Message<ToServer> {
    // content-length is required: the payload holds NUL bytes, which
    // otherwise end a STOMP frame (the crate does not add the header).
    let mut headers = vec![
        ("persistent".to_owned(), "true".to_owned()),
        ("content-length".to_owned(), body.len().to_string()),
    ];
    if let Some(r) = receipt {
        headers.push(("receipt".to_owned(), r.to_string()));
    }
    ToServer::Send {
        destination: QUEUE.into(),
        transaction: None,
        headers: Some(headers),
        body: Some(body.to_vec()),
    }
    .into()
}

async fn next_receipt(transport: &mut client::ClientTransport) -> anyhow::Result<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(300), transport.next())
            .await
            .map_err(|_| anyhow!("no receipt from ActiveMQ for 300 s"))?
            .ok_or_else(|| anyhow!("ActiveMQ closed the connection"))??;
        match frame.content {
            FromServer::Receipt { receipt_id } => return Ok(receipt_id),
            FromServer::Error { message, .. } => bail!("ActiveMQ error: {message:?}"),
            _ => {}
        }
    }
}

/// Sends `messages` of `size` bytes in `mode`.
pub fn produce(addr: &str, messages: u64, size: usize, mode: &str) -> anyhow::Result<PeerRun> {
    let durable = mode == "durable";
    let body = payload(size);
    let progress = Progress::new(&format!("activemq produce {mode}"), messages);
    runtime()?.block_on(async {
        let mut t = client::connect(addr, None, None)
            .await
            .with_context(|| format!("connecting to ActiveMQ at {addr}"))?;
        let mut h = latency_histogram();
        let mut window: VecDeque<Instant> = VecDeque::with_capacity(RECEIPT_WINDOW);
        let start = Instant::now();
        for i in 0..messages {
            if durable {
                window.push_back(Instant::now());
                t.feed(send(&body, Some(i))).await?;
                if window.len() >= RECEIPT_WINDOW {
                    t.flush().await?;
                    // Receipts come back in send order: one frees the oldest.
                    while window.len() >= RECEIPT_WINDOW / 2 {
                        next_receipt(&mut t).await?;
                        if let Some(sent) = window.pop_front() {
                            h.saturating_record(sent.elapsed().as_nanos() as u64);
                        }
                    }
                }
            } else if i + 1 == messages {
                // The last one carries a receipt: it marks the end.
                t.send(send(&body, Some(i))).await?;
                next_receipt(&mut t).await?;
            } else {
                t.feed(send(&body, None)).await?;
            }
            if i % 1024 == 1023 {
                if !durable {
                    t.flush().await?;
                }
                progress
                    .done
                    .fetch_add(1024, std::sync::atomic::Ordering::Relaxed);
            }
        }
        t.flush().await?;
        while let Some(sent) = window.pop_front() {
            next_receipt(&mut t).await?;
            h.saturating_record(sent.elapsed().as_nanos() as u64);
        }
        let duration = start.elapsed();
        let _ = t.send(ToServer::Disconnect { receipt: None }.into()).await;
        Ok(PeerRun {
            duration,
            messages,
            latency: Latency::from_histogram("produce-to-ack", &h),
        })
    })
}

/// Consumes `messages` from the queue.
pub fn consume(addr: &str, messages: u64) -> anyhow::Result<PeerRun> {
    let progress = Progress::new("activemq consume", messages);
    runtime()?.block_on(async {
        let mut t = client::connect(addr, None, None)
            .await
            .with_context(|| format!("connecting to ActiveMQ at {addr}"))?;
        t.send(client::subscribe(QUEUE, "loadgen")).await?;
        let start = Instant::now();
        let mut n = 0u64;
        while n < messages {
            let frame = tokio::time::timeout(Duration::from_secs(60), t.next())
                .await
                .map_err(|_| anyhow!("no message from ActiveMQ for 60 s after {n}"))?
                .ok_or_else(|| anyhow!("ActiveMQ closed the connection after {n}"))??;
            match frame.content {
                FromServer::Message { .. } => n += 1,
                FromServer::Error { message, .. } => bail!("ActiveMQ error: {message:?}"),
                _ => {}
            }
            if n % 1024 == 0 {
                progress.done.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let duration = start.elapsed();
        let _ = t.send(ToServer::Disconnect { receipt: None }.into()).await;
        Ok(PeerRun {
            duration,
            messages: n,
            latency: None,
        })
    })
}
