//! The produce and consume workloads against our broker, through the
//! project's client library (`broker_client`).
//!
//! Produce: K pinned threads, each with its own `Producer` (its own
//! connection and sender thread), send N/K messages of one payload made
//! once, through one `PartitionHandle` per partition resolved before the
//! run. Batches hold `batch` records: the producer's byte limit is set so
//! that exactly that many of these records fit. Open loop (no `--rate`):
//! as fast as the producer accepts, which measures the maximum: each
//! `send_batch` call hands over one batch's worth of records, thread k's
//! j-th batch to partition (k + j) mod P. Fixed rate: each message has a
//! planned send time and is sent alone when it is due (`batch` consecutive
//! messages to one partition), and latency counts from that plan (so a
//! stall is charged to every message it delayed, not hidden). With acks =
//! leader a collector thread per producer records produce-to-ack latency,
//! once per call for all its records (open loop: from the call, which
//! hands over all of them at once); with acks = none the run ends once the
//! broker's high watermarks show every message appended (so the figure is
//! the broker's, not the client's buffer's). The CPU time of loadgen's own
//! process is reported next to the broker's, per message.
//!
//! Consume: K pinned threads, partition p read by thread p mod K, from the
//! earliest offset with `fetch_bytes` per fetch of a partition (default
//! 1 MiB, Kafka's max.partition.fetch.bytes), until N messages came.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use broker_client::{
    Acks, BatchDelivery, Client, ConsumedRecord, Consumer, ConsumerConfig, ErrorCode,
    GroupConsumer, GroupConsumerConfig, OffsetQuery, PartitionHandle, Producer, ProducerConfig,
    Record, StartOffset, TopicSettings,
};
use serde::Serialize;

use crate::{
    pin,
    progress::Progress,
    results::{latency_histogram, CpuWindow, Latency, RunResult},
};

/// Settings of a produce run.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceSpec {
    /// Broker address.
    pub bootstrap: String,
    /// Topic (created with `partitions` if missing).
    pub topic: String,
    /// Messages in all.
    pub messages: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Records per batch (per produce request).
    pub batch: usize,
    /// Producer threads.
    pub producers: usize,
    /// Partitions of the topic.
    pub partitions: u32,
    /// "none" or "leader".
    pub acks: String,
    /// Messages per second in all; `None`: open loop.
    pub rate: Option<f64>,
    /// Linger of a batch, in milliseconds.
    pub linger_ms: u64,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
}

/// Settings of a consume run.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumeSpec {
    /// Broker address.
    pub bootstrap: String,
    /// Topic.
    pub topic: String,
    /// Messages to read in all.
    pub messages: u64,
    /// Byte budget of one fetch.
    pub fetch_bytes: u32,
    /// Consumer threads.
    pub consumers: usize,
    /// Record produce-to-consume latency from the records' timestamps
    /// (millisecond resolution; meaningful while a producer runs).
    pub e2e: bool,
    /// Consume as members of this consumer group (each thread one member;
    /// the coordinator assigns the partitions and positions start from the
    /// group's committed offsets) instead of assigning partitions directly.
    pub group: Option<String>,
}

/// Creates `topic` with `partitions` unless it exists.
pub fn ensure_topic(bootstrap: &str, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let client = Client::connect(bootstrap).context("connecting to the broker")?;
    match client.create_topic(topic, partitions, &TopicSettings::default()) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::TopicExists) => Ok(()),
        Err(e) => Err(e).context("creating the topic"),
    }
}

/// The batch byte limit at which exactly `batch` records of `size` bytes
/// fit in one batch, given how the client estimates a record (its size
/// plus the widest framing) against what a record really takes.
pub fn batch_bytes_for(batch: usize, size: usize) -> usize {
    let payload = vec![0u8; size];
    let mut b = broker_format::BatchBuilder::new(0);
    b.push(0, None, Some(&payload), &[]);
    let one = b.encoded_len();
    b.push(1, None, Some(&payload), &[]);
    let per_record = b.encoded_len() - one;
    // The client's estimate of the record about to be added: the payload and
    // at most 36 bytes of framing (varints at their widest).
    let estimate = size + 36;
    // Two spare bytes per record absorb offset and timestamp deltas growing
    // their varints (one byte below 64, two below 8192); exact while
    // 2 * (batch - 1) stays below a record (batch 50 of 200 bytes: 98 < 206).
    broker_format::HEADER_LEN + (batch.saturating_sub(1)) * (per_record + 2) + estimate
}

/// One payload of `size` bytes, made once: a fixed pseudo-random pattern so
/// nothing along the way can compress it to nothing.
pub fn payload(size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn end_offsets(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<u64> {
    let mut sum = 0u64;
    for p in 0..partitions {
        let o = client.list_offsets(topic, p, OffsetQuery::Latest)?;
        sum += u64::try_from(o.high_watermark).unwrap_or(0);
    }
    Ok(sum)
}

/// Runs a produce workload; `broker_pid` gives the broker's CPU time.
pub fn produce(
    spec: &ProduceSpec,
    scenario: &str,
    broker_pid: Option<u32>,
) -> anyhow::Result<RunResult> {
    if spec.producers == 0 || spec.batch == 0 || spec.size == 0 {
        bail!("--producers, --batch and --size must be at least 1");
    }
    let acks = match spec.acks.as_str() {
        "none" => Acks::None,
        "leader" => Acks::Leader,
        "all" => Acks::All,
        other => bail!("--acks {other}: expected none, leader or all"),
    };
    ensure_topic(&spec.bootstrap, &spec.topic, spec.partitions)?;
    let admin = Client::connect(&spec.bootstrap)?;
    let partitions = admin.topic(&spec.topic)?.partitions.len() as u32;
    let before = end_offsets(&admin, &spec.topic, partitions)?;
    let value = Arc::new(payload(spec.size));
    let config = ProducerConfig {
        linger_ms: spec.linger_ms,
        batch_bytes_max: batch_bytes_for(spec.batch, spec.size),
        acks,
        max_in_flight: spec.max_in_flight,
        ..ProducerConfig::default()
    };
    let progress = Progress::new(&format!("produce batch {}", spec.batch), spec.messages);
    let cpu = CpuWindow::start(broker_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..spec.producers)
        .map(|i| {
            let share = spec.messages / spec.producers as u64
                + u64::from((i as u64) < spec.messages % spec.producers as u64);
            let rate = spec.rate.map(|r| r / spec.producers as f64);
            let (spec, config, value) = (spec.clone(), config.clone(), Arc::clone(&value));
            let done = Arc::clone(&progress.done);
            std::thread::Builder::new()
                .name(format!("loadgen-produce-{i}"))
                .spawn(move || {
                    pin::pin_loadgen_thread(i);
                    let job = ProduceJob {
                        spec: &spec,
                        value: &value,
                        partitions,
                        first_partition: i as u32,
                        messages: share,
                        rate,
                        start,
                    };
                    job.run(config, &done)
                })
        })
        .collect::<Result<_, _>>()?;
    let mut histogram = latency_histogram();
    for w in workers {
        let h = w
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        histogram.add(&h)?;
    }
    // Done when the broker holds every message (acks = none tells nothing).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = end_offsets(&admin, &spec.topic, partitions)?;
        if now - before >= spec.messages {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the broker holds {} of {} messages 60 s after the last was sent",
                now - before,
                spec.messages
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    drop(progress);
    let mut result = RunResult::new(
        "broker",
        scenario,
        serde_json::to_value(spec)?,
        spec.messages,
        spec.size as u64,
        elapsed,
    );
    cpu.finish(&mut result);
    result.latency = Latency::from_histogram("produce-to-ack", &histogram);
    result.pinning = pin::describe("broker");
    Ok(result)
}

/// One producer thread's share of a produce run.
struct ProduceJob<'a> {
    spec: &'a ProduceSpec,
    value: &'a [u8],
    /// The topic's partitions.
    partitions: u32,
    /// The partition of this thread's first batch.
    first_partition: u32,
    messages: u64,
    /// This thread's messages per second; `None`: open loop.
    rate: Option<f64>,
    start: Instant,
}

impl ProduceJob<'_> {
    fn run(
        &self,
        config: ProducerConfig,
        done: &AtomicU64,
    ) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let acked = config.acks != Acks::None;
        let producer = Producer::connect(&self.spec.bootstrap, config)?;
        let handles = (0..self.partitions)
            .map(|p| producer.partition_handle(&self.spec.topic, p))
            .collect::<Result<Vec<PartitionHandle>, _>>()?;
        // Acks are awaited off the sending thread, in send order, so sending
        // never waits for an answer (the paper's producer did not either).
        let (tx, rx) = crossbeam_channel::bounded::<(Instant, BatchDelivery)>(1 << 16);
        let collector = acked.then(|| {
            std::thread::spawn(move || -> anyhow::Result<hdrhistogram::Histogram<u64>> {
                let mut h = latency_histogram();
                for (sent, delivery) in rx {
                    delivery.wait().context("a produce failed")?;
                    let ns = sent.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                    h.saturating_record_n(ns.max(1_000), delivery.len() as u64);
                }
                Ok(h)
            })
        });
        let record = Record::value(self.value);
        let batch = self.spec.batch as u64;
        let handle = |nth_batch: u64| {
            let p = (u64::from(self.first_partition) + nth_batch) % handles.len() as u64;
            &handles[p as usize]
        };
        let mut sent = 0u64;
        match self.rate.map(|r| Duration::from_secs_f64(1.0 / r)) {
            None => {
                while sent < self.messages {
                    let n = (self.messages - sent).min(batch);
                    // Read only when an ack will be timed against it.
                    let at = if acked { Instant::now() } else { self.start };
                    let delivery = producer.send_batch(
                        handle(sent / batch),
                        std::iter::repeat_n(record, n as usize),
                    )?;
                    if acked {
                        tx.send((at, delivery))
                            .map_err(|_| anyhow::anyhow!("the ack collector stopped"))?;
                    }
                    sent += n;
                    done.fetch_add(n, Ordering::Relaxed);
                }
            }
            Some(interval) => {
                while sent < self.messages {
                    let at = self.start + interval.mul_f64(sent as f64);
                    pace_until(at);
                    let delivery = producer.send_batch(handle(sent / batch), [record])?;
                    if acked {
                        tx.send((at, delivery))
                            .map_err(|_| anyhow::anyhow!("the ack collector stopped"))?;
                    }
                    sent += 1;
                    if sent % 1024 == 0 {
                        done.fetch_add(1024, Ordering::Relaxed);
                    }
                }
            }
        }
        producer.flush();
        drop(tx);
        let h = match collector {
            Some(c) => c
                .join()
                .map_err(|_| anyhow::anyhow!("the ack collector panicked"))??,
            None => latency_histogram(),
        };
        producer.close();
        Ok(h)
    }
}

/// Waits until `at`: sleeps while it is far, then yields, not spins: the
/// producer's sender and reader threads share this core, and a spinning
/// pacer would hold them off until the scheduler's tick.
fn pace_until(at: Instant) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    let wait = at - now;
    if wait > Duration::from_micros(100) {
        std::thread::sleep(wait - Duration::from_micros(50));
    }
    while Instant::now() < at {
        std::thread::yield_now();
    }
}

/// Runs a consume workload; `broker_pid` gives the broker's CPU time.
pub fn consume(
    spec: &ConsumeSpec,
    scenario: &str,
    broker_pid: Option<u32>,
) -> anyhow::Result<RunResult> {
    if spec.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    let admin = Client::connect(&spec.bootstrap).context("connecting to the broker")?;
    let partitions = admin
        .topic(&spec.topic)
        .with_context(|| format!("topic {}", spec.topic))?
        .partitions
        .len() as u32;
    let total = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let progress = Progress::new("consume", spec.messages);
    let cpu = CpuWindow::start(broker_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..spec.consumers.min(partitions.max(1) as usize))
        .map(|i| {
            let spec = spec.clone();
            let (total, bytes) = (Arc::clone(&total), Arc::clone(&bytes));
            let done = Arc::clone(&progress.done);
            std::thread::Builder::new()
                .name(format!("loadgen-consume-{i}"))
                .spawn(move || {
                    pin::pin_loadgen_thread(i);
                    consume_thread(&spec, i, partitions, &total, &bytes, &done)
                })
        })
        .collect::<Result<_, _>>()?;
    let mut histogram = latency_histogram();
    for w in workers {
        let h = w
            .join()
            .map_err(|_| anyhow::anyhow!("a consumer thread panicked"))??;
        histogram.add(&h)?;
    }
    let elapsed = start.elapsed();
    drop(progress);
    let messages = total.load(Ordering::Relaxed);
    let mut result = RunResult::new(
        "broker",
        scenario,
        serde_json::to_value(spec)?,
        messages,
        0,
        elapsed,
    );
    // Real payload bytes, whatever the producer's size was.
    result.bytes = bytes.load(Ordering::Relaxed);
    result.mb_per_s = result.bytes as f64 / result.duration_s / 1e6;
    cpu.finish(&mut result);
    result.latency = Latency::from_histogram("produce-to-consume (ms resolution)", &histogram);
    result.pinning = pin::describe("broker");
    Ok(result)
}

fn consume_thread(
    spec: &ConsumeSpec,
    index: usize,
    partitions: u32,
    total: &AtomicU64,
    bytes: &AtomicU64,
    done: &AtomicU64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let config = ConsumerConfig {
        fetch_max_bytes: spec.fetch_bytes,
        // The long poll is Kafka's fetch.max.wait.ms (500), the client's
        // default; a run with data waits for none.
        ..ConsumerConfig::default()
    };
    let mut source = match &spec.group {
        Some(group) => Source::Group(Box::new(GroupConsumer::connect(
            &spec.bootstrap,
            group,
            &[spec.topic.as_str()],
            GroupConsumerConfig {
                // Everything a fetch brought, as the plain consumer does.
                max_poll_records: usize::MAX,
                consumer: config,
                ..GroupConsumerConfig::default()
            },
        )?)),
        None => {
            let mut consumer = Consumer::connect(&spec.bootstrap, config)?;
            let threads = spec.consumers.min(partitions.max(1) as usize) as u32;
            for p in (0..partitions).filter(|p| p % threads == index as u32) {
                consumer.assign(&spec.topic, p, StartOffset::Earliest)?;
            }
            Source::Plain(consumer)
        }
    };
    let mut h = latency_histogram();
    let mut idle_since: Option<Instant> = None;
    while total.load(Ordering::Relaxed) < spec.messages {
        let records = source.poll(Duration::from_millis(200))?;
        if records.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                bail!(
                    "no message for 30 s after {} of {}",
                    total.load(Ordering::Relaxed),
                    spec.messages
                );
            }
            continue;
        }
        idle_since = None;
        let n = records.len() as u64;
        let b: usize = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        if spec.e2e {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for r in &records {
                let ms = (now_ms - r.timestamp).max(0) as u64;
                h.saturating_record((ms * 1_000_000).max(1_000));
            }
        }
        bytes.fetch_add(b as u64, Ordering::Relaxed);
        total.fetch_add(n, Ordering::Relaxed);
        done.fetch_add(n, Ordering::Relaxed);
    }
    if let Source::Group(member) = source {
        // Commits its positions and leaves, so the group ends clean.
        member.close()?;
    }
    Ok(h)
}

/// Where a consumer thread's records come from.
enum Source {
    /// Partitions assigned by the thread itself.
    Plain(Consumer),
    /// A consumer-group member: the coordinator assigns.
    Group(Box<GroupConsumer>),
}

impl Source {
    fn poll(&mut self, timeout: Duration) -> anyhow::Result<Vec<ConsumedRecord>> {
        Ok(match self {
            Source::Plain(c) => c.poll(timeout)?,
            Source::Group(g) => g.poll(timeout)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn batch_limit_holds_exactly_the_asked_number_of_records() {
        for &(batch, size) in &[(1usize, 200usize), (50, 200), (7, 10), (100, 200)] {
            let limit = batch_bytes_for(batch, size);
            let value = payload(size);
            // Replays the client's rule: add while encoded + estimate <= limit.
            let mut b = broker_format::BatchBuilder::new(0);
            let mut n = 0;
            while b.len_records() == 0 || b.encoded_len() + size + 36 <= limit {
                b.push(n, None, Some(&value), &[]);
                n += 1;
                assert!(n <= 10 * batch as i64 + 10);
            }
            assert_eq!(b.len_records(), batch, "batch {batch} size {size}");
        }
    }

    #[test]
    fn payload_is_made_once_and_not_constant() {
        let p = payload(200);
        assert_eq!(p.len(), 200);
        assert_eq!(p, payload(200));
        assert!(p.windows(2).any(|w| w[0] != w[1]));
    }
}
