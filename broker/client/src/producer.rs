//! [`Producer`]: records accumulate per partition into one record batch
//! ([`BatchBuilder`]); a background sender thread sends each batch as one
//! produce request to the partition's owning shard once the batch is full,
//! its linger has passed, or a flush asks for it.
//!
//! Two ways in:
//! - By topic name ([`Producer::send`], [`Producer::send_to`],
//!   [`Producer::send_record`]): the topic is looked up and the record
//!   partitioned on every call, and every record gets its own
//!   [`DeliveryFuture`] (its batch's outcome and its index in the batch).
//! - By a [`PartitionHandle`] resolved once ([`Producer::partition_handle`])
//!   and [`Producer::send_batch`]: records go straight into that
//!   partition's open batch with no lookup, string compare, clock read or
//!   allocation per record, and the call returns one [`BatchDelivery`] for
//!   all its records (per-record futures only when asked for, with
//!   [`BatchDelivery::record`]).
//!
//! A record without a timestamp takes its batch's, read from the clock once
//! when the batch opens (so its timestamp delta is 0): records are stamped
//! with the time their batch began, at most a linger or a full batch
//! earlier than their own send.
//!
//! Partitioning by name: a record with an explicit partition goes there; a
//! keyed record to `partition_for_key` (Kafka's murmur2, see
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
//! - A record's outcome is its batch's: it resolves Ok only once the broker
//!   acknowledged the batch (or, with acks = none, the batch was sent), and
//!   a batch's error reaches every record of it, through every handle.
//! - Bounded: at most `max_in_flight` requests per connection, and a send
//!   blocks while `buffer_bytes_max` bytes of records are unacknowledged.
//! - The producer's lock is never held while calling into a connection;
//!   completion callbacks take it, never the other way round.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
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
/// What a partition's first batch reserves (Kafka's default `batch.size`);
/// later ones reserve as much as the one before took.
const INITIAL_BATCH_BYTES: usize = 16 << 10;

/// Tells producers apart, so a handle is only used with its own.
static NEXT_PRODUCER_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Retries of a batch after a routing or connection error. With the
    /// default backoff, 10 retries span about 7.5 s: longer than a cluster
    /// member takes to apply a topic created at another broker (within a
    /// heartbeat, 2 s by default) or a metadata refresh after a move.
    pub retries: u32,
    /// Pause before the first retry, in milliseconds; it doubles at each
    /// retry up to `retry_backoff_max_ms` (Kafka's `retry.backoff.ms` and
    /// `retry.backoff.max.ms`, KIP-580).
    pub retry_backoff_ms: u64,
    /// The longest pause between retries, in milliseconds.
    pub retry_backoff_max_ms: u64,
    /// Bytes of records sent but not yet acknowledged (or not yet sent) a
    /// producer holds; a send blocks above it.
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
            retries: 10,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1000,
            buffer_bytes_max: 64 << 20,
            client: ClientConfig::default(),
        }
    }
}

/// One record to send by topic name; borrowed, copied into its batch.
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
    /// Milliseconds since the epoch; `None`: the batch's (see the module
    /// comment).
    pub timestamp: Option<i64>,
}

/// One record to send through a [`PartitionHandle`] (its topic and
/// partition are the handle's); borrowed, copied into its batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    /// The key, or none.
    pub key: Option<&'a [u8]>,
    /// The value (`None`: a null value).
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Milliseconds since the epoch; `None`: the batch's (see the module
    /// comment).
    pub timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record with this value, no key, no headers, the batch's timestamp.
    pub fn value(value: &'a [u8]) -> Record<'a> {
        Record {
            value: Some(value),
            ..Record::default()
        }
    }
}

/// A topic partition resolved once by [`Producer::partition_handle`]:
/// what [`Producer::send_batch`] needs to reach the partition's open batch
/// without a lookup. Valid for the producer that made it only.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    producer: u64,
    slot: usize,
    topic: Arc<str>,
    partition: u32,
}

impl PartitionHandle {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }
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
        self.metadata(&self.outcome.wait())
    }

    /// Waits at most `timeout`; `None` if still pending.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ClientResult<RecordMetadata>> {
        let deadline = Instant::now() + timeout;
        self.outcome.wait_until(deadline).map(|r| self.metadata(&r))
    }

    /// The outcome if there is one yet.
    pub fn try_result(&self) -> Option<ClientResult<RecordMetadata>> {
        self.outcome.try_result().map(|r| self.metadata(&r))
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

/// Where the records of one [`Producer::send_batch`] call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Their partition.
    pub partition: u32,
    /// How many records the call sent.
    pub records: usize,
    /// The first record's offset; `None` with acks = none or no record.
    pub first_offset: Option<i64>,
    /// The last record's offset. The offsets between rise in the call's
    /// order; they are consecutive unless the records spanned more than
    /// one batch and another producer's batch came between (ask
    /// [`BatchDelivery::record`] for one record's own offset).
    pub last_offset: Option<i64>,
}

/// The pending result of the records of one [`Producer::send_batch`] call:
/// one handle for all of them, resolved once every batch they went into is
/// acknowledged or has failed for good.
#[derive(Debug, Clone)]
pub struct BatchDelivery {
    partition: u32,
    records: usize,
    /// The records' runs, one per batch they went into, in order; almost
    /// always one, so the first is kept inline.
    first: Option<Run>,
    rest: Vec<Run>,
}

/// Records of one call that went into one batch.
#[derive(Debug, Clone)]
struct Run {
    outcome: Arc<Outcome>,
    seq: u64,
    /// The first record's index in the batch.
    index: u32,
    records: u32,
}

impl BatchDelivery {
    fn new(partition: u32) -> BatchDelivery {
        BatchDelivery {
            partition,
            records: 0,
            first: None,
            rest: Vec::new(),
        }
    }

    /// Counts one more record, at `index` of the open batch `open`.
    fn add(&mut self, open: &OpenBatch, index: u32) {
        self.records += 1;
        let last = self.rest.last_mut().or(self.first.as_mut());
        match last {
            Some(run) if run.seq == open.seq => run.records += 1,
            _ => {
                let run = Run {
                    outcome: Arc::clone(&open.outcome),
                    seq: open.seq,
                    index,
                    records: 1,
                };
                if self.first.is_none() {
                    self.first = Some(run);
                } else {
                    self.rest.push(run);
                }
            }
        }
    }

    fn runs(&self) -> impl Iterator<Item = &Run> {
        self.first.iter().chain(&self.rest)
    }

    /// The records' partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// How many records the call sent.
    pub fn len(&self) -> usize {
        self.records
    }

    /// True when the call sent no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Waits until every record has its outcome: the first error of their
    /// batches, or where they went.
    pub fn wait(&self) -> ClientResult<BatchMetadata> {
        for run in self.runs() {
            run.outcome.wait()?;
        }
        self.metadata()
    }

    /// Waits at most `timeout`; `None` if some record is still pending.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ClientResult<BatchMetadata>> {
        let deadline = Instant::now() + timeout;
        for run in self.runs() {
            if let Err(e) = run.outcome.wait_until(deadline)? {
                return Some(Err(e));
            }
        }
        Some(self.metadata())
    }

    /// The outcome if every record has one yet.
    pub fn try_result(&self) -> Option<ClientResult<BatchMetadata>> {
        for run in self.runs() {
            if let Err(e) = run.outcome.try_result()? {
                return Some(Err(e));
            }
        }
        Some(self.metadata())
    }

    /// The future of record `i` of the call (0-based, in the call's
    /// order); `None` past the last.
    pub fn record(&self, i: usize) -> Option<DeliveryFuture> {
        let mut skip = i;
        for run in self.runs() {
            let n = run.records as usize;
            if skip < n {
                return Some(DeliveryFuture {
                    outcome: Arc::clone(&run.outcome),
                    partition: self.partition,
                    // Below a batch's record count, which is a u32.
                    index: run.index + skip as u32,
                });
            }
            skip -= n;
        }
        None
    }

    /// Offsets once every run resolved Ok (checked by the callers).
    fn metadata(&self) -> ClientResult<BatchMetadata> {
        let offset_of = |run: &Run, at: u32| -> ClientResult<Option<i64>> {
            Ok(run
                .outcome
                .try_result()
                .transpose()?
                .flatten()
                .map(|base| base + i64::from(at)))
        };
        let first_offset = match &self.first {
            Some(run) => offset_of(run, run.index)?,
            None => None,
        };
        let last_offset = match self.rest.last().or(self.first.as_ref()) {
            Some(run) => offset_of(run, run.index + run.records - 1)?,
            None => None,
        };
        Ok(BatchMetadata {
            partition: self.partition,
            records: self.records,
            first_offset,
            last_offset,
        })
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

    fn wait(&self) -> ClientResult<Option<i64>> {
        let mut result = lock(&self.result);
        loop {
            if let Some(r) = result.as_ref() {
                return r.clone();
            }
            result = self
                .done
                .wait(result)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn wait_until(&self, deadline: Instant) -> Option<ClientResult<Option<i64>>> {
        let mut result = lock(&self.result);
        loop {
            if let Some(r) = result.as_ref() {
                return Some(r.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            result = self
                .done
                .wait_timeout(result, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn try_result(&self) -> Option<ClientResult<Option<i64>>> {
        lock(&self.result).clone()
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
    id: u64,
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Signalled on every change the sender, a flusher or a blocked send
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

    /// Waits (under `st`) until `size` more bytes fit in the buffer; an
    /// empty buffer takes any record. Signals first what the caller
    /// changed, so the sender can free the room.
    fn room_for<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        size: usize,
    ) -> ClientResult<MutexGuard<'a, State>> {
        let max = self.config.buffer_bytes_max;
        while !st.closing && st.buffered_bytes > 0 && st.buffered_bytes + size > max {
            self.notify(&st);
            st = self.wait(st);
        }
        if st.closing {
            return Err(ClientError::Closed);
        }
        Ok(st)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Every partition records were sent to, in the order first used; a
    /// [`PartitionHandle`] holds its index here.
    queues: Vec<PartitionQueue>,
    /// Every topic records were sent to, in the order first used.
    topics: Vec<TopicEntry>,
    /// Topic name -> index in `topics`: looked up by the by-name sends and
    /// when a handle is made, never by [`Producer::send_batch`].
    topic_index: FxHashMap<Arc<str>, usize>,
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
    /// Threads waiting on `changed` now (the sender, a blocked send, a
    /// flush): a change is signalled only when someone waits, so the
    /// common send makes no futex call.
    waiters: usize,
}

#[derive(Debug)]
struct TopicEntry {
    name: Arc<str>,
    /// Its partition count when a record or a handle last asked.
    partitions: u32,
    /// The partition keyless records go to, once one came.
    sticky: Option<u32>,
    /// Per partition, the index of its queue in `State::queues`.
    slots: Vec<Option<usize>>,
}

#[derive(Debug)]
struct PartitionQueue {
    /// Index in `State::topics`.
    topic: usize,
    name: Arc<str>,
    partition: u32,
    open: Option<OpenBatch>,
    /// Closed batches waiting to be sent, by sequence number.
    ready: VecDeque<ReadyBatch>,
    /// Bytes of the last batch closed: what the next one reserves.
    last_batch_bytes: usize,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    seq: u64,
    outcome: Arc<Outcome>,
    /// The clock when the first record without a timestamp came: the
    /// timestamp of every such record of the batch.
    now_ms: Option<i64>,
}

#[derive(Debug)]
struct ReadyBatch {
    /// Index of its queue in `State::queues`.
    slot: usize,
    topic: Arc<str>,
    partition: u32,
    /// Shared with the request in flight, kept for a retry.
    bytes: Arc<Vec<u8>>,
    seq: u64,
    outcome: Arc<Outcome>,
    attempts: u32,
    not_before: Option<Instant>,
}

impl State {
    /// The index of `topic` in `topics` (added if new), its partition
    /// count set to `partitions`.
    fn topic(&mut self, topic: &str, partitions: u32) -> usize {
        let t = match self.topic_index.get(topic) {
            Some(&t) => t,
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.topics.push(TopicEntry {
                    name: Arc::clone(&name),
                    partitions,
                    sticky: None,
                    slots: Vec::new(),
                });
                self.topic_index.insert(name, self.topics.len() - 1);
                self.topics.len() - 1
            }
        };
        self.topics[t].partitions = partitions;
        t
    }

    /// The queue of partition `partition` of topic `t` (made if new).
    fn slot(&mut self, t: usize, partition: u32) -> usize {
        let entry = &mut self.topics[t];
        let p = partition as usize;
        if entry.slots.len() <= p {
            entry.slots.resize(p + 1, None);
        }
        if let Some(slot) = entry.slots[p] {
            return slot;
        }
        let slot = self.queues.len();
        entry.slots[p] = Some(slot);
        self.queues.push(PartitionQueue {
            topic: t,
            name: Arc::clone(&entry.name),
            partition,
            open: None,
            ready: VecDeque::new(),
            last_batch_bytes: INITIAL_BATCH_BYTES,
        });
        slot
    }

    /// Appends `record` (of at most `size` bytes) to queue `slot`'s open
    /// batch, closing it first if the record would overfill it; returns
    /// the batch, the record's index in it, and whether the sender must
    /// hear of it (a new or full batch, or no linger).
    fn append(
        &mut self,
        config: &ProducerConfig,
        slot: usize,
        record: &Record<'_>,
        size: usize,
    ) -> (&OpenBatch, u32, bool) {
        let State {
            queues,
            topics,
            buffered_bytes,
            unresolved,
            next_seq,
            ..
        } = self;
        let queue = &mut queues[slot];
        let full = queue.open.as_ref().is_some_and(|open| {
            open.builder.len_records() > 0
                && open.builder.encoded_len() + size > config.batch_bytes_max
        });
        if full {
            close_open(queue, slot, topics);
        }
        let new_batch = queue.open.is_none();
        let reserve = queue.last_batch_bytes;
        let open = queue.open.get_or_insert_with(|| {
            let seq = *next_seq;
            *next_seq += 1;
            unresolved.insert(seq);
            *buffered_bytes += HEADER_LEN;
            let now_ms = record.timestamp.is_none().then(now_ms);
            OpenBatch {
                // Room for as much as the last batch took (a batch that
                // grows record by record reallocates and copies itself
                // each time it doubles: 2.6% of loadgen's instructions with
                // 100 KB batches), never more than a batch may hold.
                builder: BatchBuilder::with_capacity(
                    record.timestamp.or(now_ms).unwrap_or(0),
                    (HEADER_LEN + size).max(reserve).min(config.batch_bytes_max),
                ),
                created: Instant::now(),
                seq,
                outcome: Arc::new(Outcome::default()),
                now_ms,
            }
        });
        let timestamp = match record.timestamp {
            Some(t) => t,
            None => *open.now_ms.get_or_insert_with(now_ms),
        };
        let before = open.builder.encoded_len();
        open.builder
            .push(timestamp, record.key, record.value, record.headers);
        *buffered_bytes += open.builder.encoded_len() - before;
        // Below a batch's record count, which is a u32.
        let index = (open.builder.len_records() - 1) as u32;
        let full_now = open.builder.encoded_len() >= config.batch_bytes_max;
        let notify = full || full_now || config.linger_ms == 0 || new_batch;
        (open, index, notify)
    }
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
            id: NEXT_PRODUCER_ID.fetch_add(1, Ordering::Relaxed),
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

    /// `topic`'s partition count, checking that it has `partition`.
    fn partitions_of(&self, topic: &str, partition: Option<u32>) -> ClientResult<u32> {
        let info = self.shared.client.topic(topic)?;
        let partitions = info.partitions.len() as u32;
        match partition {
            Some(p) if p >= partitions => Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition: p,
                partitions,
            }),
            None if partitions == 0 => Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition: 0,
                partitions,
            }),
            _ => Ok(partitions),
        }
    }

    /// A handle on `topic`/`partition` for [`Producer::send_batch`]: the
    /// topic is looked up (and its metadata fetched if need be) once, here.
    pub fn partition_handle(&self, topic: &str, partition: u32) -> ClientResult<PartitionHandle> {
        let partitions = self.partitions_of(topic, Some(partition))?;
        let mut st = lock(&self.shared.state);
        let t = st.topic(topic, partitions);
        let slot = st.slot(t, partition);
        Ok(PartitionHandle {
            producer: self.shared.id,
            slot,
            topic: Arc::clone(&st.topics[t].name),
            partition,
        })
    }

    /// Appends `records`, in order, to the open batch of `to`'s partition
    /// (closing it and opening the next whenever it is full) and returns
    /// one handle for all of them. No lookup, clock read or allocation per
    /// record. Blocks only while the producer holds `buffer_bytes_max`
    /// unacknowledged bytes; records already appended by then stay
    /// appended.
    pub fn send_batch<'r, I>(&self, to: &PartitionHandle, records: I) -> ClientResult<BatchDelivery>
    where
        I: IntoIterator<Item = Record<'r>>,
    {
        if to.producer != self.shared.id {
            return Err(ClientError::InvalidArgument(
                "a partition handle of another producer".into(),
            ));
        }
        let config = &self.shared.config;
        let mut delivery = BatchDelivery::new(to.partition);
        let mut notify = false;
        let mut st = lock(&self.shared.state);
        for record in records {
            let size = record_size(record.key, record.value, record.headers);
            if st.buffered_bytes + size > config.buffer_bytes_max || st.closing {
                st = self.shared.room_for(st, size)?;
            }
            let (open, index, n) = st.append(config, to.slot, &record, size);
            delivery.add(open, index);
            notify |= n;
        }
        if notify {
            self.shared.notify(&st);
        }
        Ok(delivery)
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

    /// Adds a record to its partition's batch, looking its topic up by
    /// name. Blocks only to learn the topic's partitions (once per topic)
    /// or while the producer holds `buffer_bytes_max` unacknowledged bytes.
    pub fn send_record(&self, record: &ProducerRecord<'_>) -> ClientResult<DeliveryFuture> {
        let partitions = self.partitions_of(record.topic, record.partition)?;
        let rec = Record {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp,
        };
        let size = record_size(rec.key, rec.value, rec.headers);
        let st = lock(&self.shared.state);
        let mut st = self.shared.room_for(st, size)?;
        let t = st.topic(record.topic, partitions);
        let partition = match (record.partition, record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => *st.topics[t]
                .sticky
                .get_or_insert_with(|| (now_ms() as u64 % u64::from(partitions)) as u32),
        };
        let slot = st.slot(t, partition);
        let (open, index, notify) = st.append(&self.shared.config, slot, &rec, size);
        let future = DeliveryFuture {
            outcome: Arc::clone(&open.outcome),
            partition,
            index,
        };
        if notify {
            self.shared.notify(&st);
        }
        Ok(future)
    }

    /// Sends every record given to a send before this call at once, and
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
fn record_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> usize {
    let mut size =
        RECORD_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    for (k, v) in headers {
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
fn close_open(queue: &mut PartitionQueue, slot: usize, topics: &mut [TopicEntry]) {
    let Some(open) = queue.open.take() else {
        return;
    };
    queue.last_batch_bytes = open.builder.encoded_len().max(INITIAL_BATCH_BYTES);
    let ready = ReadyBatch {
        slot,
        topic: Arc::clone(&queue.name),
        partition: queue.partition,
        bytes: Arc::new(open.builder.finish()),
        seq: open.seq,
        outcome: open.outcome,
        attempts: 0,
        not_before: None,
    };
    queue.ready.push_back(ready);
    let topic = &mut topics[queue.topic];
    if topic.sticky == Some(queue.partition) && topic.partitions > 0 {
        topic.sticky = Some((queue.partition + 1) % topic.partitions);
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
            send_ready(shared, batch, &mut corks);
        }
        drop(corks);
    }
}

/// Closes open batches whose linger passed (or that a flush or close wants
/// now); returns when the next one will be due.
fn collect_due(st: &mut State, now: Instant, linger: Duration) -> Option<Instant> {
    let mut next_wake: Option<Instant> = None;
    let State {
        queues,
        topics,
        flush_below,
        closing,
        ..
    } = st;
    for (slot, queue) in queues.iter_mut().enumerate() {
        if let Some(open) = &queue.open {
            let due = open.created + linger;
            if due <= now || open.seq < *flush_below || *closing {
                close_open(queue, slot, topics);
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
    for queue in &mut st.queues {
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
fn send_ready(shared: &Arc<Shared>, batch: ReadyBatch, corks: &mut HashMap<String, Cork>) {
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
/// The pause before retry number `attempt` (1 for the first): the
/// configured backoff doubled per earlier retry, at most the maximum.
pub(crate) fn retry_backoff(config: &ProducerConfig, attempt: u32) -> Duration {
    let doubled = config
        .retry_backoff_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    Duration::from_millis(doubled.min(config.retry_backoff_max_ms.max(config.retry_backoff_ms)))
}

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
        batch.not_before = Some(Instant::now() + retry_backoff(&shared.config, batch.attempts));
        let queue = &mut st.queues[batch.slot];
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
