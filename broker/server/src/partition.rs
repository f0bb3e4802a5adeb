//! A partition as its owning shard serves it: the log, the high watermark
//! (what readers may see), and the readers waiting for it to move.
//!
//! The log knows its local end (every offset assigned) and its durable end
//! (what an acknowledgement promises under its fsync policy). The partition
//! decides what readers see: today the durable end; with replication, the
//! smallest durable offset over the in-sync replicas. Every append goes
//! through [`Partition::append`] or [`Partition::append_batches`], whoever
//! sends it (a producer, the group coordinator), and once the log
//! acknowledges it the partition advances its high watermark and wakes its
//! long polls itself.
//!
//! A replicated partition ([`Partition::set_replicated`]) is driven by its
//! replica (`crate::replication`): its appends go through the replica, and
//! its high watermark is the replica's (the smallest durable end over the
//! in-sync replicas), published with [`Partition::advance`], never the
//! log's durable end alone.
//!
//! Invariants:
//! - The high watermark never passes the log's durable end: no reader sees
//!   a batch that is not acknowledged. It only grows, except when the log
//!   gives back acknowledged but unsynced bytes after a failed fsync (fsync
//!   policy `interval`), which the log's own contract allows.
//! - Readers are woken whenever the high watermark moves, and when the
//!   partition closes (so long polls answer at once).

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::atomic::Ordering::Relaxed,
    sync::Arc,
};

use broker_format::Validated;
use broker_log::{Appended, Log, LogError, LogRead};

use crate::arrivals::Arrivals;
use crate::config::ServerConfig;
use crate::error::StartError;
use crate::metadata::{DataDir, TopicMeta};
use crate::metrics::{PartitionMetrics, ShardMetrics};
use crate::producers::{BatchIds, Producers};
use broker_shard::ShardId;

/// One partition owned by this shard.
pub struct Partition {
    topic: Rc<str>,
    number: u32,
    log: Log,
    /// One past the last offset readers may see.
    high_watermark: Cell<u64>,
    /// Signalled each time the high watermark moves (or the partition
    /// closes).
    arrivals: Arrivals,
    metrics: Arc<PartitionMetrics>,
    /// Idempotent producers' sequences (Kafka's producer state).
    producers: RefCell<Producers>,
    /// Replicated (a [`crate::replication::Replicated`] drives it): the
    /// high watermark is the replica's, never the log's durable end.
    replicated: Cell<bool>,
}

impl Partition {
    /// Serves `log` as partition `number` of `topic`: everything the log
    /// acknowledged (recovered) is readable.
    pub fn new(topic: Rc<str>, number: u32, log: Log, metrics: Arc<PartitionMetrics>) -> Partition {
        let partition = Partition {
            topic,
            number,
            high_watermark: Cell::new(log.durable_end()),
            log,
            arrivals: Arrivals::default(),
            metrics,
            producers: RefCell::new(Producers::default()),
            replicated: Cell::new(false),
        };
        partition.update_gauges();
        partition
    }

    /// Makes the partition a replica's: from now on only the replica moves
    /// its high watermark, which starts again from nothing readable (a
    /// replica's is known true only once it leads and reached its epoch's
    /// start).
    pub fn set_replicated(&self) {
        self.replicated.set(true);
        self.high_watermark.set(0);
        self.metrics.end_offset.store(0, Relaxed);
    }

    /// Whether a replica drives the partition.
    pub fn is_replicated(&self) -> bool {
        self.replicated.get()
    }

    /// Counts a follower's append of `bytes` (whole batches) in the metrics.
    pub fn count_appended(&self, bytes: &[u8]) {
        let records: u64 = broker_format::batches(bytes)
            .map_while(Result::ok)
            .map(|(h, _)| h.records_count.max(0) as u64)
            .sum();
        self.count(records, bytes.len());
    }

    /// Records the idempotent producers' batches a follower appended (the
    /// leader's sequence checks, so that a new leader knows them).
    pub fn replicated_producers(&self, bytes: &[u8]) {
        let mut producers = self.producers.borrow_mut();
        for (header, _) in broker_format::batches(bytes).map_while(Result::ok) {
            if let Some(ids) = BatchIds::of(&header) {
                let base = header.base_offset as u64;
                producers.recovered(&ids, base, base + header.records_count.max(0) as u64);
            }
        }
    }

    /// Counts a leader's append of `[base, next)` in `bytes` bytes.
    pub fn count_appended_len(&self, base: u64, next: u64, bytes: usize) {
        self.count(next - base, bytes);
    }

    fn count(&self, records: u64, bytes: usize) {
        let m = &self.metrics;
        m.records_in.fetch_add(records, Relaxed);
        m.bytes_in.fetch_add(bytes as u64, Relaxed);
        m.size_bytes.store(self.log.size_bytes(), Relaxed);
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The log (for retention, closing, and tests); appends and reads go
    /// through the partition.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// One past the last offset readers may see: never past the log's
    /// durable end, even in the moment after the log gave back an unsynced
    /// tail and before [`Partition::advance`] noticed.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.get().min(self.log.durable_end())
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// Its metrics series.
    pub fn metrics(&self) -> &PartitionMetrics {
        &self.metrics
    }

    /// The idempotent producers' state (borrow it only between awaits).
    pub fn producers(&self) -> &RefCell<Producers> {
        &self.producers
    }

    /// Rebuilds the idempotent producers' state from the batches of the
    /// log's active segment (a producer retries only its latest batches).
    pub async fn recover_producers(&self) -> Result<usize, LogError> {
        let mut offset = self
            .log
            .active_segment_base()
            .max(self.log.log_start_offset());
        let end = self.log.durable_end();
        let mut producers = Producers::default();
        while offset < end {
            let read = self.log.read_below(offset, 1 << 20, end).await?;
            if read.next_offset <= offset {
                break;
            }
            for (header, _) in broker_format::batches(read.bytes.as_slice()).flatten() {
                if let Some(ids) = BatchIds::of(&header) {
                    let base = header.base_offset as u64;
                    producers.recovered(&ids, base, base + header.records_count.max(0) as u64);
                }
            }
            offset = read.next_offset;
        }
        let n = producers.len();
        *self.producers.borrow_mut() = producers;
        Ok(n)
    }

    /// The wake-up of readers waiting for the high watermark to move: take
    /// its generation before reading, wait on it after an empty read.
    pub fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }

    /// Appends one validated record batch and, once the log acknowledged
    /// it, makes it readable.
    pub async fn append(&self, batch: Validated<'_>) -> Result<Appended, LogError> {
        let appended = self.log.append_validated(batch).await?;
        self.appended(
            appended.base_offset,
            appended.next_offset,
            batch.bytes().len(),
        );
        Ok(appended)
    }

    /// Appends several validated batches (validated together first, so that
    /// a bad one appends nothing): every append is placed in the log, in
    /// order, before any is awaited, so they share write cycles and get
    /// consecutive offsets. Returns the first base offset and the last next
    /// offset; the first error fails the whole call.
    pub async fn append_batches(&self, batches: &[Validated<'_>]) -> Result<(u64, u64), LogError> {
        if let [only] = batches {
            let a = self.append(*only).await?;
            return Ok((a.base_offset, a.next_offset));
        }
        // Every append is polled once, in payload order, before any is
        // awaited: the first poll places it in the log.
        let mut pending = Vec::with_capacity(batches.len());
        for b in batches {
            let mut append = Box::pin(self.log.append_validated(*b));
            pending.push(match futures_lite::future::poll_once(&mut append).await {
                Some(done) => PendingAppend::Done(done),
                None => PendingAppend::Waiting(append),
            });
        }
        let mut first = None;
        let mut last = 0;
        let mut failure = None;
        for p in pending {
            let r = match p {
                PendingAppend::Done(r) => r,
                PendingAppend::Waiting(a) => a.await,
            };
            match r {
                Ok(a) => {
                    first.get_or_insert(a.base_offset);
                    last = a.next_offset;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(first) = first {
            // Whatever succeeded is acknowledged by the log: readable, even
            // when a later batch of the request failed.
            let bytes = batches.iter().map(|b| b.bytes().len()).sum();
            self.appended(first, last, bytes);
        }
        match (failure, first) {
            (Some(e), _) => Err(e),
            (None, Some(first)) => Ok((first, last)),
            (None, None) => Err(LogError::Closed),
        }
    }

    /// Bookkeeping after the log acknowledged `[base, next)`.
    fn appended(&self, base: u64, next: u64, bytes: usize) {
        self.count(next - base, bytes);
        if !self.replicated.get() {
            self.advance(self.log.durable_end());
        }
    }

    /// Moves the high watermark up to `to` (never past the log's durable
    /// end, never down) and wakes the readers if it moved.
    pub fn advance(&self, to: u64) {
        let durable = self.log.durable_end();
        let current = self.high_watermark.get();
        if current > durable {
            // The log gave back acknowledged but unsynced bytes after a
            // failed fsync (fsync policy `interval`): readers must not see
            // offsets it no longer holds.
            tracing::warn!(topic = %self.topic, partition = self.number,
                high_watermark = current, durable_end = durable,
                "the log lost its unsynced tail; the high watermark moves back");
            self.high_watermark.set(durable);
        }
        let to = to.min(durable);
        if to > self.high_watermark.get() {
            self.high_watermark.set(to);
            self.metrics.end_offset.store(to, Relaxed);
            self.arrivals.notify();
        }
    }

    /// Reads whole batches from `offset` up to `max_bytes` (at least one
    /// batch), below the high watermark only. The read's `high_watermark`
    /// is the partition's.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead, LogError> {
        let high_watermark = self.high_watermark();
        let mut read = self
            .log
            .read_below(offset, max_bytes, high_watermark)
            .await?;
        read.high_watermark = high_watermark;
        Ok(read)
    }

    /// Wakes every reader (the partition is closing, or the shard stopping).
    pub fn wake_readers(&self) {
        self.arrivals.notify();
    }

    /// Refreshes the gauges (offsets, size, segments) from the log.
    pub fn update_gauges(&self) {
        let m = &self.metrics;
        m.start_offset.store(self.log.log_start_offset(), Relaxed);
        m.end_offset.store(self.high_watermark(), Relaxed);
        m.size_bytes.store(self.log.size_bytes(), Relaxed);
        m.segments.store(self.log.segment_count() as u64, Relaxed);
    }
}

enum PendingAppend<F> {
    Done(Result<Appended, LogError>),
    Waiting(F),
}

/// Opens (recovering) every partition of `topic` that shard `shard` owns,
/// but those in `already_open`, logging what recovery did.
pub async fn open_owned(
    shard: ShardId,
    metrics: &ShardMetrics,
    config: &ServerConfig,
    data: &DataDir,
    topic: &TopicMeta,
    already_open: &[u32],
) -> Result<Vec<Partition>, StartError> {
    let cfg = config.log_config(&topic.config);
    let name: Rc<str> = Rc::from(topic.name.as_str());
    let mut opened = Vec::new();
    for p in 0..topic.partition_count() {
        if !topic.lives_on(p, config.broker_id, shard) || already_open.contains(&p) {
            continue;
        }
        let dir = data.partition_dir(&topic.name, p);
        let failed = |source| StartError::Partition {
            topic: topic.name.clone(),
            partition: p,
            source,
        };
        let (log, report) = Log::open(&dir, cfg.clone()).await.map_err(failed)?;
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
        let partition = Partition::new(name.clone(), p, log, series);
        let producers = partition.recover_producers().await.map_err(failed)?;
        if producers > 0 {
            tracing::info!(topic = %topic.name, partition = p, producers,
                "idempotent producers' state rebuilt");
        }
        opened.push(partition);
    }
    Ok(opened)
}
