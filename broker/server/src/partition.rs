//! A partition as its owning shard serves it: the log, plus the signal that
//! wakes long-polling fetches when new data is acknowledged.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::Duration,
};

use futures_lite::FutureExt;

use crate::config::ServerConfig;
use crate::metadata::{DataDir, TopicMeta};
use crate::metrics::{PartitionMetrics, ShardMetrics};
use broker_log::Log;
use broker_shard::ShardId;

/// One partition owned by this shard.
pub struct Partition {
    /// The topic's name.
    pub topic: Rc<str>,
    /// The partition's number.
    pub partition: u32,
    /// Its log; only this shard touches it.
    pub log: Log,
    /// Signalled each time appended data becomes readable.
    pub arrivals: Arrivals,
    /// Its metrics series.
    pub metrics: Arc<PartitionMetrics>,
}

impl Partition {
    /// Refreshes the gauges (offsets, size, segments) from the log.
    pub fn update_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        m.start_offset.store(self.log.log_start_offset(), Relaxed);
        m.end_offset.store(self.log.high_watermark(), Relaxed);
        m.size_bytes.store(self.log.size_bytes(), Relaxed);
        m.segments.store(self.log.segment_count() as u64, Relaxed);
    }
}

/// A wake-up for long-polling readers: a generation counter bumped on every
/// arrival, and the wakers of the tasks waiting for it to move. A reader
/// takes the generation before it reads, so an arrival between its read and
/// its wait is never missed. A waiter that gives up (timeout, dropped
/// request) takes its waker out, so idle partitions collect no wakers.
#[derive(Default)]
pub struct Arrivals {
    generation: Cell<u64>,
    next_waiter: Cell<u64>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Arrivals {
    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// New data is readable: wake every waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// The number of registered waiters.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Waits until the generation differs from `seen`, or `wait` elapsed.
    /// Returns whether new data arrived.
    pub async fn wait(&self, seen: u64, wait: Duration) -> bool {
        let id = self.next_waiter.get();
        self.next_waiter.set(id.wrapping_add(1));
        let _registration = Registration { arrivals: self, id };
        let arrived = poll_fn(|cx| {
            if self.generation.get() != seen {
                return Poll::Ready(true);
            }
            let mut waiters = self.waiters.borrow_mut();
            match waiters.iter_mut().find(|(i, _)| *i == id) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => waiters.push((id, cx.waker().clone())),
            }
            Poll::Pending
        });
        let expired = async {
            glommio::timer::sleep(wait).await;
            false
        };
        arrived.or(expired).await
    }
}

/// Removes a waiter's waker when its wait ends, however it ends.
struct Registration<'a> {
    arrivals: &'a Arrivals,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.arrivals
            .waiters
            .borrow_mut()
            .retain(|(i, _)| *i != self.id);
    }
}

/// Opens (recovering) every partition of `topic` that shard `shard` owns,
/// logging what recovery did.
pub async fn open_owned(
    shard: ShardId,
    metrics: &ShardMetrics,
    config: &ServerConfig,
    data: &DataDir,
    topic: &TopicMeta,
) -> Result<Vec<Partition>, String> {
    let cfg = config.log_config(&topic.config);
    let name: Rc<str> = Rc::from(topic.name.as_str());
    let mut opened = Vec::new();
    for (p, &owner) in topic.shards.iter().enumerate() {
        if owner != shard {
            continue;
        }
        let p = p as u32;
        let dir = data.partition_dir(&topic.name, p);
        let (log, report) = Log::open(&dir, cfg.clone())
            .await
            .map_err(|e| format!("partition {}/{p}: {e}", topic.name))?;
        if report.truncated_bytes > 0 {
            tracing::warn!(topic = %topic.name, partition = p,
                truncated_bytes = report.truncated_bytes,
                reason = report.truncation_reason.as_deref().unwrap_or(""),
                "recovery truncated the partition's torn tail");
        } else {
            tracing::info!(topic = %topic.name, partition = p, shard,
                end_offset = log.log_end_offset(), segments = report.segments,
                "partition open");
        }
        let series = Arc::new(PartitionMetrics::new(&topic.name, p, log.io_stats()));
        metrics.add_partition(series.clone());
        let partition = Partition {
            topic: name.clone(),
            partition: p,
            log,
            arrivals: Arrivals::default(),
            metrics: series,
        };
        partition.update_gauges();
        opened.push(partition);
    }
    Ok(opened)
}
