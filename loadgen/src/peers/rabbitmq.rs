//! RabbitMQ over AMQP 0-9-1 (the `lapin` crate). One durable queue;
//! messages persistent (delivery mode 2) in both modes.
//!
//! - produce, `paper`: publish without confirms (RabbitMQ writes to its
//!   store asynchronously); the run ends when the queue holds every message.
//! - produce, `durable`: publisher confirms, which RabbitMQ sends for a
//!   persistent message only after it is fsynced; up to [`CONFIRM_WINDOW`]
//!   publishes in flight (pipelined, as our producer), latency is
//!   publish-to-confirm.
//! - consume: prefetch of [`PREFETCH`] messages (the paper's consumer took
//!   ~1000 messages a request), acknowledged in groups (`multiple`).
//!
//! The paper sent batch 1 to both peers: neither batches publishes.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures_lite::{future::block_on, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
    },
    types::FieldTable,
    BasicProperties, Channel, Connection, ConnectionProperties,
};

use crate::{
    ours::payload,
    progress::Progress,
    results::{latency_histogram, Latency},
};

use super::PeerRun;

/// Publishes awaiting their confirm at once in durable mode.
pub const CONFIRM_WINDOW: usize = 1000;
/// Messages a consumer may hold unacknowledged.
pub const PREFETCH: u16 = 1000;
const QUEUE: &str = "loadgen";

async fn channel(addr: &str) -> anyhow::Result<(Connection, Channel)> {
    let uri = format!("amqp://guest:guest@{addr}/%2f");
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {addr}"))?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        QUEUE,
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok((conn, ch))
}

/// Empties the queue (between runs).
pub fn purge(addr: &str) -> anyhow::Result<()> {
    block_on(async {
        let (_conn, ch) = channel(addr).await?;
        ch.queue_purge(QUEUE, QueuePurgeOptions::default()).await?;
        Ok(())
    })
}

/// Publishes `messages` of `size` bytes in `mode`.
pub fn produce(addr: &str, messages: u64, size: usize, mode: &str) -> anyhow::Result<PeerRun> {
    let durable = mode == "durable";
    let body = payload(size);
    let progress = Progress::new(&format!("rabbitmq produce {mode}"), messages);
    block_on(async {
        let (_conn, ch) = channel(addr).await?;
        if durable {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        let props = BasicProperties::default().with_delivery_mode(2);
        let mut h = latency_histogram();
        let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
        let start = Instant::now();
        for i in 0..messages {
            let sent = Instant::now();
            let confirm = ch
                .basic_publish(
                    "",
                    QUEUE,
                    BasicPublishOptions::default(),
                    &body,
                    props.clone(),
                )
                .await?;
            if durable {
                window.push_back((sent, confirm));
                if window.len() >= CONFIRM_WINDOW {
                    if let Some((sent, c)) = window.pop_front() {
                        if !c.await?.is_ack() {
                            bail!("RabbitMQ refused message {i}");
                        }
                        h.saturating_record(sent.elapsed().as_nanos() as u64);
                    }
                }
            }
            if i % 1024 == 1023 {
                progress
                    .done
                    .fetch_add(1024, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for (sent, c) in window {
            if !c.await?.is_ack() {
                bail!("RabbitMQ refused a message");
            }
            h.saturating_record(sent.elapsed().as_nanos() as u64);
        }
        if !durable {
            // Done when the queue holds every message.
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let q = ch
                    .queue_declare(
                        QUEUE,
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                if u64::from(q.message_count()) >= messages {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "RabbitMQ holds {} of {messages} messages 300 s after the last publish",
                        q.message_count()
                    );
                }
                async_io_sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(PeerRun {
            duration: start.elapsed(),
            messages,
            latency: Latency::from_histogram("produce-to-ack", &h),
        })
    })
}

async fn async_io_sleep(d: Duration) {
    // A plain thread sleep: this task is the only one on its thread.
    std::thread::sleep(d);
}

/// Consumes `messages` from the queue.
pub fn consume(addr: &str, messages: u64) -> anyhow::Result<PeerRun> {
    let progress = Progress::new("rabbitmq consume", messages);
    block_on(async {
        let (_conn, ch) = channel(addr).await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                QUEUE,
                "loadgen",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let start = Instant::now();
        let mut n = 0u64;
        while n < messages {
            let Some(delivery) = consumer.next().await else {
                bail!("RabbitMQ closed the consumer after {n} of {messages}");
            };
            let delivery = delivery?;
            n += 1;
            // Acknowledge half a prefetch at a time, all up to this one.
            if n % u64::from(PREFETCH / 2) == 0 || n == messages {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
                progress.done.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(PeerRun {
            duration: start.elapsed(),
            messages: n,
            latency: None,
        })
    })
}
