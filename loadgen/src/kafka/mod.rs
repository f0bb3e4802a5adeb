//! The Kafka target: the same produce and consume workloads as
//! [`crate::ours`], over the Apache Kafka wire protocol, so one harness
//! measures any Kafka-compatible broker (our Kafka listener, Tansu, Kafka).
//!
//! A client of loadgen's own, pure Rust: `kafka-protocol`'s request
//! encoders and response decoders (its `client` feature) over blocking
//! sockets, record batches (RecordBatch v2, uncompressed) packed by
//! `broker_format::BatchBuilder`. No librdkafka: the default build (and
//! CI's `cargo clippy/test --workspace`) compiles no C.
//!
//! Produce: K pinned threads, each with one connection per partition
//! leader it sends to. A thread packs `batch` records into one batch, one
//! batch per Produce request, the batches going round-robin over the
//! topic's partitions (thread i starts at partition i). Requests are
//! encoded into a buffer that is written when it holds 64 KiB, when the
//! window of `max_in_flight` unanswered requests is full, and at the end
//! (fixed-rate mode writes every request at once). With acks 1 or -1 a
//! reader thread per connection takes the answers in order and times each
//! record from its planned send time to its batch's answer, as the native
//! target does; with acks 0 the broker answers nothing and the run ends once
//! the partitions' end offsets (ListOffsets) show every message appended.
//!
//! Consume: K pinned threads, partition p read by thread p mod K from the
//! earliest offset, `fetch_bytes` per Fetch (per partition and in all), no
//! fetch session, read_committed and a 500 ms long poll (librdkafka's
//! defaults). The next fetch is sent as soon as an answer is in, before
//! its records are walked (fetch-ahead, as the native consumer does), from
//! the offsets that follow the answer's last whole batch. Every record is
//! walked (its offset checked, its value's bytes counted).

pub mod conn;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        fetch_request::{FetchPartition, FetchTopic},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest,
        ProduceRequest, TopicName,
    },
    protocol::StrBytes,
};

use crate::{
    ours::{payload, ConsumeSpec, ProduceSpec},
    pin,
    progress::Progress,
    results::{latency_histogram, CpuWindow, Latency, RunResult},
};
use conn::{Conn, Reader};

/// Kafka's error codes loadgen acts on.
mod code {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
}

/// Bytes of encoded requests a producer connection buffers before writing.
const WRITE_AT: usize = 64 << 10;

/// The acks value of `--acks`: none = 0, leader = 1, all = -1.
pub fn acks_value(acks: &str) -> anyhow::Result<i16> {
    Ok(match acks {
        "none" => 0,
        "leader" => 1,
        "all" => -1,
        other => bail!("--acks {other}: expected none, leader or all"),
    })
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Where each partition of a topic is led: `leaders[p]` is the address of
/// partition p's leader.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Leader address per partition, by partition index.
    pub leaders: Vec<String>,
}

/// Creates `topic` with `partitions` unless it exists: CreateTopics when the
/// broker speaks it, else a Metadata request that allows auto-creation (the
/// broker's default partition count). Then waits until every partition
/// has a leader and returns where they are.
pub fn ensure_topic(bootstrap: &str, topic: &str, partitions: u32) -> anyhow::Result<Layout> {
    let mut conn = Conn::connect(bootstrap)?;
    if conn.versions().has(ApiKey::CreateTopics) {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(i32::try_from(partitions).context("--partitions")?)
                .with_replication_factor(1)])
            .with_timeout_ms(30_000);
        let resp = conn.call(&req)?;
        for t in &resp.topics {
            if t.error_code != 0 && t.error_code != code::TOPIC_ALREADY_EXISTS {
                // Metadata's auto-creation is the fallback (a broker whose
                // CreateTopics must go to a controller elsewhere, say).
                eprintln!(
                    "loadgen: CreateTopics {topic}: error code {} ({}); trying auto-creation",
                    t.error_code,
                    t.error_message.as_deref().unwrap_or("")
                );
            }
        }
    }
    layout_with(&mut conn, topic, true)
}

/// Where `topic`'s partitions are led (no creation).
pub fn layout(bootstrap: &str, topic: &str) -> anyhow::Result<Layout> {
    let mut conn = Conn::connect(bootstrap)?;
    layout_with(&mut conn, topic, false)
}

fn layout_with(conn: &mut Conn, topic: &str, create: bool) -> anyhow::Result<Layout> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(create);
        let resp = conn.call(&req)?;
        let brokers: HashMap<BrokerId, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .with_context(|| format!("the metadata answer does not name topic {topic}"))?;
        let retry = match t.error_code {
            0 => {
                let mut parts: Vec<_> = t.partitions.iter().collect();
                parts.sort_by_key(|p| p.partition_index);
                let leaders: Option<Vec<String>> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        (p.partition_index as usize == i && p.error_code == 0)
                            .then(|| brokers.get(&p.leader_id).cloned())
                            .flatten()
                    })
                    .collect();
                match leaders {
                    Some(leaders) if !leaders.is_empty() => return Ok(Layout { leaders }),
                    _ => true,
                }
            }
            code::LEADER_NOT_AVAILABLE => true,
            code::UNKNOWN_TOPIC_OR_PARTITION if create => true,
            code::UNKNOWN_TOPIC_OR_PARTITION => bail!("topic {topic} does not exist"),
            other => bail!("metadata of topic {topic}: error code {other}"),
        };
        if retry && Instant::now() > deadline {
            bail!("topic {topic} has no leader for every partition after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Offsets of every partition: `which` = -1 latest (the end), -2 earliest.
fn offsets(layout: &Layout, topic: &str, which: i64) -> anyhow::Result<Vec<i64>> {
    let mut out = vec![0i64; layout.leaders.len()];
    let mut by_leader: HashMap<&str, Vec<i32>> = HashMap::new();
    for (p, addr) in layout.leaders.iter().enumerate() {
        by_leader.entry(addr).or_default().push(p as i32);
    }
    for (addr, parts) in by_leader {
        let mut conn = Conn::connect(addr)?;
        let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(which)
                    })
                    .collect(),
            )]);
        let resp = conn.call(&req)?;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "ListOffsets {topic}/{}: error code {}",
                        p.partition_index,
                        p.error_code
                    );
                }
                if let Some(slot) = out.get_mut(p.partition_index as usize) {
                    *slot = p.offset;
                }
            }
        }
    }
    Ok(out)
}

fn end_sum(layout: &Layout, topic: &str) -> anyhow::Result<u64> {
    Ok(offsets(layout, topic, -1)?
        .iter()
        .map(|&o| u64::try_from(o).unwrap_or(0))
        .sum())
}

fn annotate(result: &mut RunResult, acks: i16) {
    if let serde_json::Value::Object(m) = &mut result.parameters {
        m.insert("protocol".into(), "kafka".into());
        if acks != i16::MIN {
            m.insert("kafka_acks".into(), acks.into());
        }
    }
}

/// Runs a produce workload over Kafka; the result names `system`.
pub fn produce(
    spec: &ProduceSpec,
    scenario: &str,
    system: &str,
    broker_pid: Option<u32>,
) -> anyhow::Result<RunResult> {
    if spec.producers == 0 || spec.batch == 0 || spec.size == 0 || spec.max_in_flight == 0 {
        bail!("--producers, --batch, --size and --max-in-flight must be at least 1");
    }
    let acks = acks_value(&spec.acks)?;
    let layout = ensure_topic(&spec.bootstrap, &spec.topic, spec.partitions)?;
    let before = end_sum(&layout, &spec.topic)?;
    let value = Arc::new(payload(spec.size));
    let progress = Progress::new(&format!("produce batch {}", spec.batch), spec.messages);
    let cpu = CpuWindow::start(broker_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..spec.producers)
        .map(|i| {
            let share = spec.messages / spec.producers as u64
                + u64::from((i as u64) < spec.messages % spec.producers as u64);
            let rate = spec.rate.map(|r| r / spec.producers as f64);
            let (spec, layout, value) = (spec.clone(), layout.clone(), Arc::clone(&value));
            let done = Arc::clone(&progress.done);
            std::thread::Builder::new()
                .name(format!("loadgen-kafka-produce-{i}"))
                .spawn(move || {
                    pin::pin_loadgen_thread(i);
                    let job = ProduceJob {
                        spec: &spec,
                        layout: &layout,
                        value: &value,
                        acks,
                        first_partition: i,
                        messages: share,
                        rate,
                        start,
                    };
                    job.run(&done)
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
    // Done when the broker holds every message (acks = 0 tells nothing).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = end_sum(&layout, &spec.topic)?;
        if now.saturating_sub(before) >= spec.messages {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the broker holds {} of {} messages 60 s after the last was sent",
                now.saturating_sub(before),
                spec.messages
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    drop(progress);
    let mut result = RunResult::new(
        system,
        scenario,
        serde_json::to_value(spec)?,
        spec.messages,
        spec.size as u64,
        elapsed,
    );
    annotate(&mut result, acks);
    if let serde_json::Value::Object(m) = &mut result.parameters {
        m.insert("partitions".into(), layout.leaders.len().into());
    }
    result.latency = Latency::from_histogram("produce-to-ack", &histogram);
    cpu.finish(&mut result);
    result.pinning = pin::describe(system);
    Ok(result)
}

/// The answer a reader thread waits for: request `id`, carrying `count`
/// records planned at `first`, `first + step`, ...
struct InFlight {
    id: i32,
    first: Instant,
    step: Duration,
    count: u32,
}

/// One producer connection: its writing half here, its reader thread.
struct Pipe {
    writer: conn::Writer,
    window: Option<Sender<InFlight>>,
    reader: Option<JoinHandle<anyhow::Result<hdrhistogram::Histogram<u64>>>>,
}

impl Pipe {
    fn open(addr: &str, acked: bool, max_in_flight: usize) -> anyhow::Result<Pipe> {
        let Conn { writer, reader } = Conn::connect(addr)?;
        let (window, reader) = if acked {
            let (tx, rx) = crossbeam_channel::bounded(max_in_flight);
            let handle = std::thread::Builder::new()
                .name("loadgen-kafka-acks".into())
                .spawn(move || read_acks(reader, rx))?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        Ok(Pipe {
            writer,
            window,
            reader,
        })
    }

    /// Waits for every answer; the reader's latencies.
    fn finish(mut self) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        self.writer.flush()?;
        drop(self.window.take());
        match self.reader.take() {
            Some(r) => r
                .join()
                .map_err(|_| anyhow::anyhow!("the ack reader panicked"))?,
            None => Ok(latency_histogram()),
        }
    }

    /// The reader stopped (its channel is gone): its error.
    fn reader_error(&mut self) -> anyhow::Error {
        match self.reader.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => anyhow::anyhow!("the ack reader stopped"),
        }
    }
}

fn read_acks(
    mut reader: Reader,
    window: Receiver<InFlight>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut h = latency_histogram();
    for f in window {
        let resp = reader.read::<ProduceRequest>(f.id)?;
        let now = Instant::now();
        for t in &resp.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    bail!(
                        "produce to {}/{} failed: error code {}{}",
                        t.name.0.as_str(),
                        p.index,
                        p.error_code,
                        p.error_message
                            .as_ref()
                            .map_or(String::new(), |m| format!(" ({})", m.as_str()))
                    );
                }
            }
        }
        if f.step.is_zero() {
            let ns = now
                .duration_since(f.first)
                .as_nanos()
                .min(u128::from(u64::MAX)) as u64;
            h.saturating_record_n(ns.max(1_000), u64::from(f.count));
        } else {
            for k in 0..f.count {
                let planned = f.first + f.step * k;
                let ns = now
                    .duration_since(planned)
                    .as_nanos()
                    .min(u128::from(u64::MAX)) as u64;
                h.saturating_record(ns.max(1_000));
            }
        }
    }
    Ok(h)
}

struct ProduceJob<'a> {
    spec: &'a ProduceSpec,
    layout: &'a Layout,
    value: &'a [u8],
    acks: i16,
    first_partition: usize,
    messages: u64,
    rate: Option<f64>,
    start: Instant,
}

impl ProduceJob<'_> {
    fn run(&self, done: &AtomicU64) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let spec = self.spec;
        let acked = self.acks != 0;
        let parts = self.layout.leaders.len();
        let mut pipes: HashMap<&str, Pipe> = HashMap::new();
        let interval = self.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let name = topic_name(&spec.topic);
        let mut sent = 0u64;
        let mut next_partition = self.first_partition;
        let batch_capacity = broker_format::HEADER_LEN + spec.batch * (spec.size + 24);
        while sent < self.messages {
            let n = (spec.batch as u64).min(self.messages - sent);
            let (first, step) = match interval {
                Some(iv) => {
                    // The batch leaves when its last record is due.
                    let last = self.start + iv.mul_f64((sent + n - 1) as f64);
                    pace_until(last);
                    (self.start + iv.mul_f64(sent as f64), iv)
                }
                None if acked => (Instant::now(), Duration::ZERO),
                None => (self.start, Duration::ZERO),
            };
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let mut b = broker_format::BatchBuilder::with_capacity(ts, batch_capacity);
            for _ in 0..n {
                b.push(ts, None, Some(self.value), &[]);
            }
            let batch = Bytes::from(b.finish());
            let p = next_partition % parts;
            next_partition += 1;
            let addr = self.layout.leaders[p].as_str();
            let pipe = match pipes.entry(addr) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Pipe::open(addr, acked, spec.max_in_flight)?)
                }
            };
            let req = ProduceRequest::default()
                .with_acks(self.acks)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(p as i32)
                        .with_records(Some(batch))])]);
            let id = pipe.writer.encode(&req)?;
            if let Some(window) = &pipe.window {
                let f = InFlight {
                    id,
                    first,
                    step,
                    count: n as u32,
                };
                match window.try_send(f) {
                    Ok(()) => {}
                    Err(TrySendError::Full(f)) => {
                        // The window is full: what is buffered must go out
                        // before waiting for answers to it.
                        pipe.writer.flush()?;
                        if window.send(f).is_err() {
                            return Err(pipe.reader_error());
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(pipe.reader_error()),
                }
            }
            if interval.is_some() || pipe.writer.buffered() >= WRITE_AT {
                pipe.writer.flush()?;
            }
            sent += n;
            done.fetch_add(n, Ordering::Relaxed);
        }
        let mut h = latency_histogram();
        for (_, pipe) in pipes {
            h.add(&pipe.finish()?)?;
        }
        Ok(h)
    }
}

/// Sleeps, then yields, until `at` (the native target's pacer).
fn pace_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        let wait = at - now;
        if wait > Duration::from_micros(100) {
            std::thread::sleep(wait - Duration::from_micros(50));
        }
        while Instant::now() < at {
            std::thread::yield_now();
        }
    }
}

/// Runs a consume workload over Kafka; the result names `system`.
pub fn consume(
    spec: &ConsumeSpec,
    scenario: &str,
    system: &str,
    broker_pid: Option<u32>,
) -> anyhow::Result<RunResult> {
    if spec.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    if spec.group.is_some() {
        bail!("--group is not supported by the Kafka target yet: it assigns partitions itself");
    }
    let layout = layout(&spec.bootstrap, &spec.topic)?;
    let earliest = offsets(&layout, &spec.topic, -2)?;
    let partitions = layout.leaders.len();
    let threads = spec.consumers.min(partitions.max(1));
    let total = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let progress = Progress::new("consume", spec.messages);
    let cpu = CpuWindow::start(broker_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (spec, layout, earliest) = (spec.clone(), layout.clone(), earliest.clone());
            let (total, bytes) = (Arc::clone(&total), Arc::clone(&bytes));
            let done = Arc::clone(&progress.done);
            std::thread::Builder::new()
                .name(format!("loadgen-kafka-consume-{i}"))
                .spawn(move || {
                    pin::pin_loadgen_thread(i);
                    let mine: Vec<(usize, i64)> = (0..partitions)
                        .filter(|p| p % threads == i)
                        .map(|p| (p, earliest[p]))
                        .collect();
                    consume_thread(&spec, &layout, &mine, &total, &bytes, &done)
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
        system,
        scenario,
        serde_json::to_value(spec)?,
        messages,
        0,
        elapsed,
    );
    annotate(&mut result, i16::MIN);
    result.bytes = bytes.load(Ordering::Relaxed);
    result.mb_per_s = result.bytes as f64 / result.duration_s / 1e6;
    result.latency = Latency::from_histogram("produce-to-consume (ms resolution)", &histogram);
    cpu.finish(&mut result);
    result.pinning = pin::describe(system);
    Ok(result)
}

/// One fetch connection: the partitions it reads and their positions.
struct Fetcher {
    conn: Conn,
    /// (partition, next offset to read).
    positions: Vec<(i32, i64)>,
    pending: i32,
}

impl Fetcher {
    fn send(&mut self, topic: &TopicName, fetch_bytes: i32) -> anyhow::Result<()> {
        // librdkafka's defaults: read_committed (without transactions the
        // same records; Tansu serves read_uncommitted through a path 10x
        // slower, 53 k against 700 k msgs/s with rdkafka_performance here)
        // and a 500 ms long poll (Tansu sizes its storage reads by it).
        let req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_isolation_level(1)
            .with_max_bytes(fetch_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    self.positions
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(fetch_bytes)
                        })
                        .collect(),
                )]);
        self.pending = self.conn.writer.encode(&req)?;
        self.conn.writer.flush()
    }
}

/// A piece of an answer to walk: a partition's record bytes and the offset
/// below which its records were read before.
struct Piece {
    records: Bytes,
    from: i64,
}

fn consume_thread(
    spec: &ConsumeSpec,
    layout: &Layout,
    mine: &[(usize, i64)],
    total: &AtomicU64,
    bytes: &AtomicU64,
    done: &AtomicU64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let topic = topic_name(&spec.topic);
    let fetch_bytes = i32::try_from(spec.fetch_bytes).context("--fetch-bytes")?;
    let mut by_leader: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for &(p, offset) in mine {
        by_leader
            .entry(layout.leaders[p].as_str())
            .or_default()
            .push((p as i32, offset));
    }
    let mut fetchers = Vec::new();
    for (addr, positions) in by_leader {
        let mut f = Fetcher {
            conn: Conn::connect(addr)?,
            positions,
            pending: 0,
        };
        f.send(&topic, fetch_bytes)?;
        fetchers.push(f);
    }
    let mut h = latency_histogram();
    let mut idle_since: Option<Instant> = None;
    let mut pieces: Vec<Piece> = Vec::new();
    while total.load(Ordering::Relaxed) < spec.messages {
        let mut n = 0u64;
        let mut b = 0u64;
        for f in &mut fetchers {
            let resp = f.conn.reader.read::<FetchRequest>(f.pending)?;
            if resp.error_code != 0 {
                bail!("fetch failed: error code {}", resp.error_code);
            }
            pieces.clear();
            for t in &resp.responses {
                for part in &t.partitions {
                    if part.error_code != 0 {
                        bail!(
                            "fetch {}/{} failed: error code {}",
                            spec.topic,
                            part.partition_index,
                            part.error_code
                        );
                    }
                    let Some(records) = &part.records else {
                        continue;
                    };
                    let Some(pos) = f
                        .positions
                        .iter_mut()
                        .find(|(p, _)| *p == part.partition_index)
                    else {
                        continue;
                    };
                    let from = pos.1;
                    // The next position: after the last whole batch (a
                    // truncated one at the end is fetched again).
                    for (header, _) in broker_format::batches(records).map_while(Result::ok) {
                        pos.1 = pos.1.max(header.next_offset());
                    }
                    pieces.push(Piece {
                        records: records.clone(),
                        from,
                    });
                }
            }
            // Fetch ahead: the next request goes out before this answer's
            // records are walked.
            f.send(&topic, fetch_bytes)?;
            let now_ms = spec.e2e.then(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
            for piece in &pieces {
                let (pn, pb) = walk(piece, now_ms, &mut h)?;
                n += pn;
                b += pb;
            }
        }
        if n == 0 {
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
        bytes.fetch_add(b, Ordering::Relaxed);
        total.fetch_add(n, Ordering::Relaxed);
        done.fetch_add(n, Ordering::Relaxed);
    }
    Ok(h)
}

/// Counts the records of `piece` at or past its start offset and their value
/// bytes; records produce-to-consume latency when `now_ms` is given.
/// Compressed batches count by their header (their values are not opened).
fn walk(
    piece: &Piece,
    now_ms: Option<i64>,
    h: &mut hdrhistogram::Histogram<u64>,
) -> anyhow::Result<(u64, u64)> {
    let (mut n, mut b) = (0u64, 0u64);
    for item in broker_format::batches(&piece.records) {
        let Ok((header, batch)) = item else {
            break; // a truncated batch at the end: fetched again next time
        };
        if header.next_offset() <= piece.from {
            continue;
        }
        if header.compression() != 0 {
            n += u64::from(header.record_count());
            continue;
        }
        for r in broker_format::records(batch).context("a fetched batch")? {
            let r = r.context("a fetched record")?;
            if header.base_offset + i64::from(r.offset_delta) < piece.from {
                continue;
            }
            n += 1;
            b += r.value.map_or(0, |v| v.len() as u64);
            if let Some(now) = now_ms {
                let ts = r.timestamp(header.base_timestamp).unwrap_or(now);
                let ms = (now - ts).max(0) as u64;
                h.saturating_record((ms * 1_000_000).max(1_000));
            }
        }
    }
    Ok((n, b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing
mod tests {
    use super::*;

    fn batch(base_offset: i64, records: usize) -> Vec<u8> {
        let mut b = broker_format::BatchBuilder::new(1_000);
        for _ in 0..records {
            b.push(1_000, None, Some(&[7u8; 10]), &[]);
        }
        let mut bytes = b.finish();
        broker_format::set_base_offset(&mut bytes, base_offset);
        bytes
    }

    #[test]
    fn walking_an_answer_skips_records_before_the_position_and_a_truncated_tail() {
        let mut records = batch(0, 5);
        records.extend(batch(5, 5));
        let third = batch(10, 5);
        records.extend(&third[..third.len() - 3]);
        let piece = Piece {
            records: Bytes::from(records),
            from: 3,
        };
        let mut h = latency_histogram();
        // Records 3 and 4 of the first batch, all of the second; the third
        // is cut short.
        assert_eq!(walk(&piece, None, &mut h).unwrap(), (7, 70));
        assert!(h.is_empty());
        assert_eq!(walk(&piece, Some(2_000), &mut h).unwrap(), (7, 70));
        assert_eq!(h.len(), 7, "one latency per record walked");
    }

    #[test]
    fn acks_map_to_kafka_values() {
        assert_eq!(acks_value("none").unwrap(), 0);
        assert_eq!(acks_value("leader").unwrap(), 1);
        assert_eq!(acks_value("all").unwrap(), -1);
        assert!(acks_value("2").is_err());
    }
}
