//! [`Producer`]: records accumulate per partition into one record batch
//! ([`BatchBuilder`]); a background sender thread sends each batch as one
//! produce request to the partition's owning shard once the batch is full,
//! its linger has passed, or a flush asks for it. Each record's
//! [`DeliveryFuture`] resolves to its offset: the batch's base offset plus
//! the record's index in it.
//!
//! Partitioning: a record with an explicit partition goes there; a keyed
//! record to `partition_for_key` (Kafka's murmur2, see
//! [`super::partitioner`]); a record without key to the topic's "sticky"
//! partition, which moves round-robin each time a batch of it closes, so
//! keyless records fill whole batches (as Kafka's sticky partitioner).
//!
//! Invariants:
//! - Batches of one partition are sent in the order they were made, one at
//!   a time by the single sender thread, over the one connection to the
//!   partition's owner; the broker appends one connection's requests in
//!   arrival order. A batch is retried only after errors that also fail
//!   every later batch in flight to the same partition (routing errors and
//!   connection failures: same shard, same connection), and goes back in
//!   front of the later ones, so retries keep the order in practice. (As
//!   with Kafka's non-idempotent producer with several requests in flight,
//!   a reconnect racing a retry can still reorder; delivery is
//!   at-least-once.)
//! - Bounded: at most `max_in_flight` requests per connection, and `send`
//!   blocks while `buffer_bytes_max` bytes of records are unacknowledged.
//! - The producer's lock is never held while calling into a connection;
//!   completion callbacks take it, never the other way round.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rustc_hash::FxHashMap;

use super::admin::Client;
use super::connection::{lock, Cork, Response};
use super::error::{ClientError, ClientResult};
use super::partitioner::partition_for_key;
use super::ClientConfig;
use broker_format::{BatchBuilder, HEADER_LEN};
use broker_protocol::generated::ProduceResponse;
use broker_protocol::Acks;

/// The most a record's framing adds to its key, value and headers: a
/// length, attributes, timestamp and offset deltas, key and value lengths,
/// the header count (varints at their widest), and per header two lengths.
const RECORD_OVERHEAD_BYTES: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
const HEADER_OVERHEAD_BYTES: usize = 10;
/// What a new batch reserves (Kafka's default `batch.size`).
const INITIAL_BATCH_BYTES: usize = 16 << 10;

/// How a producer batches and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent (0: send
    /// as soon as the sender is free; records arriving meanwhile still
    /// share a batch).
    pub linger_ms: u64,
    /// A batch is sent once adding the next record would make it larger
    /// than this (a single larger record goes alone in its batch). Keep it
    /// under the broker's batch limit (8 MiB by default).
    pub batch_bytes_max: usize,
    /// What the broker acknowledges: `Leader` (the offset comes back) or
    /// `None` (fire and forget: no answer, offsets unknown).
    pub acks: Acks,
    /// Produce requests in flight per connection (per shard).
    pub max_in_flight: usize,
    /// Retries of a batch after a routing or connection error.
    pub retries: u32,
    /// Pause before a retry, in milliseconds.
    pub retry_backoff_ms: u64,
    /// Bytes of records sent but not yet acknowledged (or not yet sent) a
    /// producer holds; `send` blocks above it.
    pub buffer_bytes_max: usize,
    /// Connection settings.
    pub client: ClientConfig,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: 5,
            batch_bytes_max: 256 << 10,
            acks: Acks::Leader,
            max_in_flight: 5,
            retries: 5,
            retry_backoff_ms: 100,
            buffer_bytes_max: 64 << 20,
            client: ClientConfig::default(),
        }
    }
}

/// One record to send; borrowed, copied into its batch by `send`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// An explicit partition; `None`: by key hash, or sticky round-robin.
    pub partition: Option<u32>,
    /// The key, or none.
    pub key: Option<&'a [u8]>,
    /// The value (`None`: a null value).
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

/// Where a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Its partition.
    pub partition: u32,
    /// Its offset; `None` with acks = none, where the broker tells nothing.
    pub offset: Option<i64>,
}

/// The pending result of one record: resolves once its batch is
/// acknowledged or has failed for good.
#[derive(Debug, Clone)]
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    partition: u32,
    index: u32,
}

impl DeliveryFuture {
    /// The record's partition (known as soon as it is sent).
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Waits for the outcome.
    pub fn wait(&self) -> ClientResult<RecordMetadata> {
        let mut result = lock(&self.outcome.result);
        loop {
            if let Some(r) = result.as_ref() {
                return self.metadata(r);
            }
            result = self
                .outcome
                .done
                .wait(result)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits at most `timeout`; `None` if still pending.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ClientResult<RecordMetadata>> {
        let deadline = Instant::now() + timeout;
        let mut result = lock(&self.outcome.result);
        loop {
            if let Some(r) = result.as_ref() {
                return Some(self.metadata(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            result = self
                .outcome
                .done
                .wait_timeout(result, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The outcome if there is one yet.
    pub fn try_result(&self) -> Option<ClientResult<RecordMetadata>> {
        lock(&self.outcome.result)
            .as_ref()
            .map(|r| self.metadata(r))
    }

    fn metadata(&self, result: &ClientResult<Option<i64>>) -> ClientResult<RecordMetadata> {
        match result {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition,
                offset: base.map(|b| b + i64::from(self.index)),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// The shared outcome of one batch: its base offset (None: acks = none).
#[derive(Debug, Default)]
struct Outcome {
    result: Mutex<Option<ClientResult<Option<i64>>>>,
    done: Condvar,
}

impl Outcome {
    fn resolve(&self, result: ClientResult<Option<i64>>) {
        *lock(&self.result) = Some(result);
        self.done.notify_all();
    }
}

/// A producer. `Send + Sync`: share it between threads behind an `Arc`.
/// Dropping it flushes what was sent and stops its sender thread.
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Signalled on every change the sender, a flusher or a blocked `send`
    /// waits for.
    changed: Condvar,
}

impl Shared {
    /// Waits for a change (see [`Shared::notify`]).
    fn wait<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = self
            .changed
            .wait(st)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.waiters -= 1;
        st
    }

    /// Waits for a change or until `timeout` passes.
    fn wait_timeout<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = self
            .changed
            .wait_timeout(st, timeout)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        st.waiters -= 1;
        st
    }

    /// Signals a change made under the lock `st` to whoever waits. Every
    /// waiter counts itself under the lock before it waits and checks its
    /// condition before that, so nobody misses a change this skips.
    fn notify(&self, st: &State) {
        if st.waiters > 0 {
            self.changed.notify_all();
        }
    }
}

type TopicPartition = (Arc<str>, u32);

#[derive(Debug, Default)]
struct State {
    partitions: FxHashMap<TopicPartition, PartitionQueue>,
    /// Per topic, the partition keyless records go to.
    sticky: FxHashMap<Arc<str>, u32>,
    /// Produce requests awaiting an answer, per address.
    in_flight: HashMap<String, usize>,
    /// Bytes of batches made and not yet resolved (open ones included).
    buffered_bytes: usize,
    /// Sequence numbers of batches made and not yet resolved.
    unresolved: BTreeSet<u64>,
    next_seq: u64,
    /// Open batches with a lower sequence number are sent without lingering.
    flush_below: u64,
    closing: bool,
    /// Threads waiting on `changed` now (the sender, a blocked `send`, a
    /// flush): a change is signalled only when someone waits, so the
    /// common `send` makes no futex call.
    waiters: usize,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    /// Closed batches waiting to be sent, by sequence number.
    ready: VecDeque<ReadyBatch>,
    /// The topic's partition count when a record last came.
    topic_partitions: u32,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    seq: u64,
    outcome: Arc<Outcome>,
}

#[derive(Debug)]
struct ReadyBatch {
    topic: Arc<str>,
    partition: u32,
    /// Shared with the request in flight, kept for a retry.
    bytes: Arc<Vec<u8>>,
    seq: u64,
    outcome: Arc<Outcome>,
    attempts: u32,
    not_before: Option<Instant>,
}

impl Producer {
    /// A producer of the broker at `bootstrap`.
    pub fn connect(bootstrap: &str, config: ProducerConfig) -> ClientResult<Producer> {
        let client = Client::connect_with(bootstrap, config.client.clone())?;
        Producer::with_client(client, config)
    }

    /// A producer sharing `client`'s connections and metadata.
    pub fn with_client(client: Client, config: ProducerConfig) -> ClientResult<Producer> {
        if config.max_in_flight == 0 || config.batch_bytes_max == 0 {
            return Err(ClientError::InvalidArgument(
                "max_in_flight and batch_bytes_max must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            client,
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let for_sender = Arc::clone(&shared);
        let sender = thread::Builder::new()
            .name("broker-producer".into())
            .spawn(move || sender_loop(&for_sender))
            .map_err(|e| ClientError::InvalidArgument(format!("cannot start a thread: {e}")))?;
        Ok(Producer {
            shared,
            sender: Some(sender),
        })
    }

    /// The client this producer uses.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Sends `value` with an optional key to `topic`, partitioned by key.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> ClientResult<DeliveryFuture> {
        self.send_record(&ProducerRecord {
            topic,
            key,
            value: Some(value),
            ..ProducerRecord::default()
        })
    }

    /// Sends `value` to an explicit partition.
    pub fn send_to(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> ClientResult<DeliveryFuture> {
        self.send_record(&ProducerRecord {
            topic,
            partition: Some(partition),
            key,
            value: Some(value),
            ..ProducerRecord::default()
        })
    }

    /// Adds a record to its partition's batch. Blocks only to learn the
    /// topic's partitions (once per topic) or while the producer holds
    /// `buffer_bytes_max` unacknowledged bytes.
    pub fn send_record(&self, record: &ProducerRecord<'_>) -> ClientResult<DeliveryFuture> {
        let info = self.shared.client.topic(record.topic)?;
        let partitions = info.partitions.len() as u32;
        if partitions == 0 {
            return Err(ClientError::UnknownPartition {
                topic: record.topic.to_owned(),
                partition: record.partition.unwrap_or(0),
                partitions,
            });
        }
        if let Some(p) = record.partition.filter(|&p| p >= partitions) {
            return Err(ClientError::UnknownPartition {
                topic: record.topic.to_owned(),
                partition: p,
                partitions,
            });
        }
        let size = record_size(record);
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let config = &self.shared.config;
        let mut st = lock(&self.shared.state);
        while !st.closing
            && st.buffered_bytes > 0
            && st.buffered_bytes + size > config.buffer_bytes_max
        {
            st = self.shared.wait(st);
        }
        if st.closing {
            return Err(ClientError::Closed);
        }
        let topic: Arc<str> = match st.sticky.get_key_value(record.topic) {
            Some((t, _)) => Arc::clone(t),
            None => Arc::from(record.topic),
        };
        let partition = match (record.partition, record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => *st
                .sticky
                .entry(Arc::clone(&topic))
                .or_insert_with(|| (timestamp as u64 % u64::from(partitions)) as u32),
        };
        let st = &mut *st;
        let queue = st
            .partitions
            .entry((Arc::clone(&topic), partition))
            .or_default();
        queue.topic_partitions = partitions;
        let full = queue.open.as_ref().is_some_and(|open| {
            open.builder.len_records() > 0
                && open.builder.encoded_len() + size > config.batch_bytes_max
        });
        if full {
            close_open(queue, &topic, partition, &mut st.sticky);
        }
        let open = queue.open.get_or_insert_with(|| {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.unresolved.insert(seq);
            st.buffered_bytes += HEADER_LEN;
            OpenBatch {
                // Room for a few records at once (a batch that grows
                // record by record reallocates and copies itself each time
                // it doubles), never more than a batch may hold.
                builder: BatchBuilder::with_capacity(
                    timestamp,
                    (HEADER_LEN + size)
                        .max(INITIAL_BATCH_BYTES)
                        .min(config.batch_bytes_max),
                ),
                created: Instant::now(),
                seq,
                outcome: Arc::new(Outcome::default()),
            }
        });
        let before = open.builder.encoded_len();
        open.builder
            .push(timestamp, record.key, record.value, record.headers);
        st.buffered_bytes += open.builder.encoded_len() - before;
        let future = DeliveryFuture {
            outcome: Arc::clone(&open.outcome),
            partition,
            index: (open.builder.len_records() - 1) as u32,
        };
        let full_now = open.builder.encoded_len() >= config.batch_bytes_max;
        // A new batch: the sender must learn its linger deadline.
        let new_batch = open.builder.len_records() == 1;
        if full || full_now || config.linger_ms == 0 || new_batch {
            self.shared.notify(st);
        }
        Ok(future)
    }

    /// Sends every record given to `send` before this call at once, and
    /// waits until each has its outcome.
    pub fn flush(&self) {
        let mut st = lock(&self.shared.state);
        let target = st.next_seq;
        st.flush_below = st.flush_below.max(target);
        self.shared.notify(&st);
        while st.unresolved.first().is_some_and(|&seq| seq < target) {
            st = self.shared.wait(st);
        }
    }

    /// Flushes, then stops the sender thread. Later sends fail with
    /// [`ClientError::Closed`].
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.flush();
        let mut st = lock(&self.shared.state);
        st.closing = true;
        self.shared.notify(&st);
        drop(st);
        if let Some(sender) = self.sender.take() {
            // A panicked sender thread has nothing left to give back.
            let _ = sender.join();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.shutdown();
        }
    }
}

/// Upper bound of a record's bytes in a batch.
fn record_size(record: &ProducerRecord<'_>) -> usize {
    let mut size = RECORD_OVERHEAD_BYTES
        + record.key.map_or(0, <[u8]>::len)
        + record.value.map_or(0, <[u8]>::len);
    for (k, v) in record.headers {
        size += HEADER_OVERHEAD_BYTES + k.len() + v.map_or(0, <[u8]>::len);
    }
    size
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Moves a partition's open batch to its ready queue; a keyless topic's
/// sticky partition moves on when its batch closes.
fn close_open(
    queue: &mut PartitionQueue,
    topic: &Arc<str>,
    partition: u32,
    sticky: &mut FxHashMap<Arc<str>, u32>,
) {
    let partitions = queue.topic_partitions;
    let Some(open) = queue.open.take() else {
        return;
    };
    let ready = ReadyBatch {
        topic: Arc::clone(topic),
        partition,
        bytes: Arc::new(open.builder.finish()),
        seq: open.seq,
        outcome: open.outcome,
        attempts: 0,
        not_before: None,
    };
    queue.ready.push_back(ready);
    if let Some(p) = sticky.get_mut(topic) {
        if *p == partition && partitions > 0 {
            *p = (partition + 1) % partitions;
        }
    }
}

/// The sender thread: closes due batches, sends ready ones in order, sleeps
/// until the next linger deadline or a change.
fn sender_loop(shared: &Arc<Shared>) {
    let linger = Duration::from_millis(shared.config.linger_ms);
    loop {
        let batches = {
            let mut st = lock(&shared.state);
            loop {
                let now = Instant::now();
                let next_wake = collect_due(&mut st, now, linger);
                let batches = take_sendable(&mut st, now);
                if !batches.is_empty() {
                    break batches;
                }
                if st.closing && st.unresolved.is_empty() {
                    return;
                }
                st = match next_wake {
                    Some(at) => shared.wait_timeout(st, at.saturating_duration_since(now)),
                    None => shared.wait(st),
                };
            }
        };
        // The batches taken together leave in one send per connection.
        let mut corks = HashMap::new();
        for batch in batches {
            send_batch(shared, batch, &mut corks);
        }
        drop(corks);
    }
}

/// Closes open batches whose linger passed (or that a flush or close wants
/// now); returns when the next one will be due.
fn collect_due(st: &mut State, now: Instant, linger: Duration) -> Option<Instant> {
    let mut next_wake: Option<Instant> = None;
    let State {
        partitions,
        sticky,
        flush_below,
        closing,
        ..
    } = st;
    for ((topic, partition), queue) in partitions.iter_mut() {
        if let Some(open) = &queue.open {
            let due = open.created + linger;
            if due <= now || open.seq < *flush_below || *closing {
                close_open(queue, topic, *partition, sticky);
            } else {
                next_wake = Some(next_wake.map_or(due, |w| w.min(due)));
            }
        }
        if let Some(at) = queue.ready.front().and_then(|b| b.not_before) {
            if at > now {
                next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
            }
        }
    }
    next_wake
}

/// Takes every ready batch whose retry pause is over, in sequence order per
/// partition (a partition whose first batch waits keeps the rest waiting).
fn take_sendable(st: &mut State, now: Instant) -> Vec<ReadyBatch> {
    let mut out = Vec::new();
    for queue in st.partitions.values_mut() {
        while let Some(front) = queue.ready.front() {
            if front.not_before.is_some_and(|t| t > now) {
                break;
            }
            if let Some(batch) = queue.ready.pop_front() {
                out.push(batch);
            }
        }
    }
    out.sort_by_key(|b| b.seq);
    out
}

/// Routes and sends one batch; its outcome comes through [`complete`].
/// Requests go out under the connection's entry in `corks` (made here),
/// sent when the caller drops it or before this waits for a slot.
fn send_batch(shared: &Arc<Shared>, batch: ReadyBatch, corks: &mut HashMap<String, Cork>) {
    let client = &shared.client;
    let conn = client
        .partition_address(&batch.topic, batch.partition)
        .and_then(|addr| client.connection(&addr));
    let conn = match conn {
        Ok(conn) => conn,
        Err(e) => return complete(shared, batch, None, Err(e)),
    };
    let addr = conn.addr().to_owned();
    // Wait for an in-flight slot on this connection.
    {
        let mut st = lock(&shared.state);
        loop {
            let used = st.in_flight.get(&addr).copied().unwrap_or(0);
            if used < shared.config.max_in_flight {
                st.in_flight.insert(addr.clone(), used + 1);
                break;
            }
            if corks.contains_key(&addr) {
                // The answers that free a slot may be to requests still
                // held back: send them first (without the producer's lock,
                // which a failed send's callbacks take).
                drop(st);
                corks.remove(&addr);
                st = lock(&shared.state);
                continue;
            }
            st = shared.wait(st);
        }
    }
    corks.entry(addr.clone()).or_insert_with(|| conn.cork());
    let acks = shared.config.acks;
    let topic = Arc::clone(&batch.topic);
    let partition = batch.partition;
    let len = batch.bytes.len();
    let build = move |w: &mut broker_protocol::FrameWriter, out: &mut Vec<u8>, id| {
        w.produce_request(out, id, &topic, partition, acks, len)
    };
    if acks == Acks::None {
        let result = conn.send_only(build, &batch.bytes).map(|()| None);
        return complete(shared, batch, Some(addr), result);
    }
    let for_callback = Arc::clone(shared);
    let payload = Arc::clone(&batch.bytes);
    conn.request(
        shared.config.client.request_timeout,
        build,
        &payload,
        Box::new(move |result: ClientResult<Response>| {
            let result = result.and_then(|r| {
                let frame = r.decode::<ProduceResponse>()?;
                Ok(Some(frame.body.base_offset()))
            });
            complete(&for_callback, batch, Some(addr), result);
        }),
    );
}

/// Resolves a batch, or puts it back in front of its partition's queue for
/// a retry; releases its in-flight slot.
fn complete(
    shared: &Shared,
    mut batch: ReadyBatch,
    addr: Option<String>,
    result: ClientResult<Option<i64>>,
) {
    let retry = match &result {
        Err(e) => {
            (e.is_routing()
                || matches!(
                    e,
                    ClientError::Connect { .. }
                        | ClientError::Disconnected { .. }
                        | ClientError::TimedOut { .. }
                ))
                && batch.attempts < shared.config.retries
        }
        Ok(_) => false,
    };
    if retry {
        shared.client.forget(&batch.topic);
    }
    let mut st = lock(&shared.state);
    if let Some(addr) = addr {
        if let Some(n) = st.in_flight.get_mut(&addr) {
            *n = n.saturating_sub(1);
        }
    }
    if retry {
        batch.attempts += 1;
        batch.not_before = Some(
            Instant::now()
                + Duration::from_millis(shared.config.retry_backoff_ms) * batch.attempts.min(10),
        );
        let queue = st
            .partitions
            .entry((Arc::clone(&batch.topic), batch.partition))
            .or_default();
        let at = queue
            .ready
            .iter()
            .position(|b| b.seq > batch.seq)
            .unwrap_or(queue.ready.len());
        queue.ready.insert(at, batch);
    } else {
        st.unresolved.remove(&batch.seq);
        st.buffered_bytes = st.buffered_bytes.saturating_sub(batch.bytes.len());
        batch.outcome.resolve(result);
    }
    shared.notify(&st);
}
