//! [`Consumer`]: reads chosen partitions from chosen offsets. Each assigned
//! partition has at most one fetch in flight, sent to its owning shard with
//! a long poll; `poll` returns as soon as any partition has records.
//!
//! A fetch answer is whole batches, and its first batch may start before
//! the position (batches are never split): records below the position are
//! skipped. Every batch is checked (CRC, framing, records) before any of its
//! records is handed out.
//!
//! Invariants:
//! - Records of a partition come out in offset order, each once, from the
//!   position on; a seek discards whatever a fetch in flight brings back
//!   for the old position.
//! - At most one fetch per partition is in flight, so what a consumer
//!   buffers is bounded by `fetch_max_bytes` per partition.
//! - Routing and connection errors are retried (after a metadata refresh)
//!   `retries` times in a row before `poll` reports them; OffsetOutOfRange
//!   is reported at once, with the valid range.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::admin::Client;
use super::connection::Response;
use super::error::{ClientError, ClientResult};
use super::ClientConfig;
use broker_format::{self as batch, BatchError, ATTR_LOG_APPEND_TIME};
use broker_protocol::generated::FetchResponse;
use broker_protocol::{FetchParams, OffsetQuery};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first readable offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset.
    Offset(i64),
    /// The first record at or after this time (ms since the epoch); the
    /// high watermark if there is none.
    Timestamp(i64),
}

/// How a consumer fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Byte budget of one fetch of one partition (at least one batch comes
    /// back even if larger).
    pub fetch_max_bytes: u32,
    /// Longest long poll of one fetch, in milliseconds (capped by the time
    /// left in `poll`).
    pub fetch_max_wait_ms: u32,
    /// Consecutive routing or connection failures of a partition retried
    /// silently before `poll` reports one.
    pub retries: u32,
    /// Pause before fetching again after such a failure, in milliseconds.
    pub retry_backoff_ms: u64,
    /// Connection settings.
    pub client: ClientConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_bytes: 1 << 20,
            fetch_max_wait_ms: 500,
            retries: 10,
            retry_backoff_ms: 100,
            client: ClientConfig::default(),
        }
    }
}

/// A record as consumed, with everything the batch says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Milliseconds since the epoch: the producer's create time, or the
    /// broker's append time if the batch says so.
    pub timestamp: i64,
    /// The key, or none. Keys, values and headers are slices of the fetch
    /// response they came in (no copy; the response lives as long as any
    /// of them does).
    pub key: Option<Bytes>,
    /// The value (`None`: a null value).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

type TopicPartition = (Arc<str>, u32);

#[derive(Debug)]
struct PartitionState {
    position: i64,
    /// The id of the fetch in flight for this partition.
    fetch: Option<u64>,
    high_watermark: Option<i64>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// A completed fetch, as the connection's reader thread hands it over.
struct FetchDone {
    key: TopicPartition,
    id: u64,
    offset: i64,
    result: ClientResult<Response>,
}

/// A consumer of assigned partitions. Used from one thread.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    done_tx: Sender<FetchDone>,
    done_rx: Receiver<FetchDone>,
    next_fetch: u64,
    /// Records decoded but not handed out (a poll that ended in an error).
    buffered: Vec<ConsumedRecord>,
}

impl std::fmt::Debug for FetchDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchDone")
            .field("key", &self.key)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of the broker at `bootstrap`, with nothing assigned.
    pub fn connect(bootstrap: &str, config: ConsumerConfig) -> ClientResult<Consumer> {
        let client = Client::connect_with(bootstrap, config.client.clone())?;
        Ok(Consumer::with_client(client, config))
    }

    /// A consumer sharing `client`'s connections and metadata.
    pub fn with_client(client: Client, config: ConsumerConfig) -> Consumer {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            done_tx,
            done_rx,
            next_fetch: 0,
            buffered: Vec::new(),
        }
    }

    /// The client this consumer uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts consuming `topic`/`partition` from `start` (resolved now, on
    /// the owning shard). Assigning an assigned partition moves it.
    pub fn assign(&mut self, topic: &str, partition: u32, start: StartOffset) -> ClientResult<()> {
        let info = self.client.topic(topic)?;
        if !info.partitions.iter().any(|p| p.partition == partition) {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: info.partitions.len() as u32,
            });
        }
        let position = self.resolve(topic, partition, start)?;
        let key = (Arc::from(topic), partition);
        self.partitions.insert(
            key,
            PartitionState {
                position,
                fetch: None,
                high_watermark: None,
                failures: 0,
                retry_at: None,
            },
        );
        Ok(())
    }

    /// Assigns every partition of `topic`, each from `start`.
    pub fn assign_all(&mut self, topic: &str, start: StartOffset) -> ClientResult<()> {
        let info = self.client.describe_topic(topic)?;
        for p in &info.partitions {
            self.assign(topic, p.partition, start)?;
        }
        Ok(())
    }

    /// Stops consuming a partition.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        self.partitions
            .retain(|(t, p), _| !(&**t == topic && *p == partition));
        self.buffered
            .retain(|r| !(&*r.topic == topic && r.partition == partition));
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.partitions
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect()
    }

    /// Moves a partition's position to `offset`: the next record handed out
    /// is the one at `offset`.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) -> ClientResult<()> {
        let state = self.state_mut(topic, partition)?;
        state.position = offset;
        state.failures = 0;
        state.retry_at = None;
        self.buffered
            .retain(|r| !(&*r.topic == topic && r.partition == partition));
        Ok(())
    }

    /// Moves a partition to the offset `start` resolves to now.
    pub fn seek_to(&mut self, topic: &str, partition: u32, start: StartOffset) -> ClientResult<()> {
        self.state_mut(topic, partition)?;
        let offset = self.resolve(topic, partition, start)?;
        self.seek(topic, partition, offset)
    }

    /// The offset of the next record `poll` will hand out for a partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        let position = self.partition(topic, partition)?.position;
        // Records buffered after an error come before the position.
        let first_buffered = self
            .buffered
            .iter()
            .find(|r| &*r.topic == topic && r.partition == partition)
            .map(|r| r.offset);
        Some(first_buffered.unwrap_or(position))
    }

    /// The partition's high watermark as of its last fetch.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<i64> {
        self.partition(topic, partition)?.high_watermark
    }

    /// Waits up to `timeout` for records of the assigned partitions and
    /// returns those that came (empty if none did), in offset order per
    /// partition.
    pub fn poll(&mut self, timeout: Duration) -> ClientResult<Vec<ConsumedRecord>> {
        if !self.buffered.is_empty() {
            return Ok(std::mem::take(&mut self.buffered));
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            self.start_fetches(now, left);
            let done = if out.is_empty() {
                // Wake for the next retry too, so a backoff ends on time.
                let wait = self
                    .next_retry()
                    .map_or(left, |at| left.min(at.saturating_duration_since(now)));
                match self.done_rx.recv_timeout(wait) {
                    Ok(done) => done,
                    Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
                    Err(_) => return Ok(out),
                }
            } else {
                match self.done_rx.try_recv() {
                    Ok(done) => done,
                    Err(_) => return Ok(out),
                }
            };
            // The next fetch of the partition goes out before its records
            // are decoded, so the broker reads on while this thread decodes.
            let taken = self.accept(done).and_then(|fetched| {
                let Some(fetched) = fetched else {
                    return Ok(());
                };
                let now = Instant::now();
                self.start_fetches(now, deadline.saturating_duration_since(now));
                self.decode(fetched, &mut out)
            });
            if let Err(e) = taken {
                self.buffered = out;
                return Err(e);
            }
            // Past the deadline every idle partition is fetched with a zero
            // wait, answered at once: without this the loop could go on as
            // long as one answer is always ready.
            if Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    /// When the earliest backoff ends.
    fn next_retry(&self) -> Option<Instant> {
        self.partitions.values().filter_map(|s| s.retry_at).min()
    }

    fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.partitions
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map(|(_, s)| s)
    }

    fn state_mut(&mut self, topic: &str, partition: u32) -> ClientResult<&mut PartitionState> {
        self.partitions
            .iter_mut()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("{topic}/{partition} is not assigned"))
            })
    }

    fn resolve(&self, topic: &str, partition: u32, start: StartOffset) -> ClientResult<i64> {
        let query = match start {
            StartOffset::Offset(n) => return Ok(n),
            StartOffset::Earliest => OffsetQuery::Earliest,
            StartOffset::Latest => OffsetQuery::Latest,
            StartOffset::Timestamp(t) => OffsetQuery::Timestamp(t),
        };
        Ok(self.client.list_offsets(topic, partition, query)?.offset)
    }

    /// Sends a fetch for every partition that has none in flight.
    fn start_fetches(&mut self, now: Instant, left: Duration) {
        let max_wait_ms = u32::try_from(left.as_millis())
            .unwrap_or(u32::MAX)
            .min(self.config.fetch_max_wait_ms);
        let timeout =
            self.config.client.request_timeout + Duration::from_millis(max_wait_ms.into());
        for (key, state) in &mut self.partitions {
            if state.fetch.is_some() || state.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            state.retry_at = None;
            let id = self.next_fetch;
            self.next_fetch += 1;
            state.fetch = Some(id);
            let offset = state.position;
            let tx = self.done_tx.clone();
            let done_key = key.clone();
            let conn = self
                .client
                .partition_address(&key.0, key.1)
                .and_then(|addr| self.client.connection(&addr));
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(FetchDone {
                        key: done_key,
                        id,
                        offset,
                        result: Err(e),
                    });
                    continue;
                }
            };
            let params = FetchParams {
                topic: &key.0,
                partition: key.1,
                offset,
                max_bytes: self.config.fetch_max_bytes,
                max_wait_ms,
            };
            conn.request(
                timeout,
                |w, out, rid| w.fetch_request(out, rid, &params),
                &[],
                Box::new(move |result| {
                    // The consumer may be gone; nobody to tell then.
                    let _ = tx.send(FetchDone {
                        key: done_key,
                        id,
                        offset,
                        result,
                    });
                }),
            );
        }
    }

    /// Takes in one completed fetch. When it carries data, the partition's
    /// position moves to where the data ends (so the next fetch can go out
    /// before these records are decoded) and the data is returned, to be
    /// decoded by [`Consumer::decode`].
    fn accept(&mut self, done: FetchDone) -> ClientResult<Option<Fetched>> {
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let retries = self.config.retries;
        let Some(state) = self.partitions.get_mut(&done.key) else {
            return Ok(None); // Unassigned meanwhile.
        };
        if state.fetch != Some(done.id) {
            return Ok(None); // Reassigned meanwhile: a fetch of the old one.
        }
        state.fetch = None;
        if state.position != done.offset {
            return Ok(None); // Sought meanwhile.
        }
        let topic = &done.key.0;
        let response = match done.result {
            Ok(response) => response,
            Err(e) => {
                return retry_or_fail(&self.client, state, topic, e, backoff, retries)
                    .map(|()| None)
            }
        };
        let frame = match response.decode::<FetchResponse>() {
            Ok(frame) => frame,
            Err(e) => {
                return retry_or_fail(&self.client, state, topic, e, backoff, retries)
                    .map(|()| None)
            }
        };
        state.failures = 0;
        state.high_watermark = Some(frame.body.high_watermark());
        let next = frame.body.next_offset();
        // Where the data resumes (records are dense, so this is also the
        // offset after the last record returned, checked by `decode`).
        state.position = state.position.max(next);
        if frame.payload.is_empty() {
            return Ok(None);
        }
        let at = frame.payload.as_ptr() as usize - response.bytes().as_ptr() as usize;
        let payload = at..at + frame.payload.len();
        Ok(Some(Fetched {
            key: done.key,
            from: done.offset,
            next,
            payload,
            response,
        }))
    }

    /// Decodes what [`Consumer::accept`] took in into `out`: the records at
    /// or after the offset it was fetched from. If the data does not end
    /// where the broker said (or a batch is corrupt), the position is put
    /// back after the last record handed out and a fetch already sent from
    /// the announced end is disowned.
    fn decode(&mut self, f: Fetched, out: &mut Vec<ConsumedRecord>) -> ClientResult<()> {
        let (topic, partition) = (&f.key.0, f.key.1);
        let corrupt = |error| ClientError::CorruptBatch {
            topic: topic.to_string(),
            partition,
            offset: f.from,
            error,
        };
        let whole = f.response.shared();
        let mut position = f.from;
        let mut handed_out = false;
        let mut walk = || -> ClientResult<()> {
            for item in batch::batches(&whole[f.payload.clone()]) {
                let (header, bytes) = item.map_err(corrupt)?;
                // The broker validated every record when it appended the
                // batch; a matching CRC shows these are those bytes (Kafka's
                // consumer checks the same, check.crcs), so the records are
                // walked once, below, where a malformed one is still an error.
                batch::verify_crc(bytes).map_err(corrupt)?;
                if header.compression() != 0 {
                    return Err(corrupt(BatchError::UnsupportedCompression(
                        header.compression(),
                    )));
                }
                if header.next_offset() <= position {
                    continue;
                }
                let log_append = header.attributes & ATTR_LOG_APPEND_TIME != 0;
                for record in batch::records(bytes).map_err(corrupt)? {
                    let record = record.map_err(corrupt)?;
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    if offset < position {
                        continue;
                    }
                    let timestamp = if log_append {
                        header.max_timestamp
                    } else {
                        record.timestamp(header.base_timestamp).unwrap_or(i64::MIN)
                    };
                    let mut headers = Vec::with_capacity(record.headers_count() as usize);
                    for h in record.headers() {
                        let (k, v) = h.map_err(corrupt)?;
                        headers.push((whole.slice_ref(k), v.map(|v| whole.slice_ref(v))));
                    }
                    out.push(ConsumedRecord {
                        topic: Arc::clone(topic),
                        partition,
                        offset,
                        timestamp,
                        key: record.key.map(|k| whole.slice_ref(k)),
                        value: record.value.map(|v| whole.slice_ref(v)),
                        headers,
                    });
                    position = offset + 1;
                    handed_out = true;
                }
            }
            Ok(())
        };
        let walked = walk();
        let end = if walked.is_ok() && !handed_out {
            // Nothing for us, but the broker says the data resumes later
            // (e.g. batches that hold no records for us).
            f.next.max(position)
        } else {
            position
        };
        if let Some(state) = self.partitions.get_mut(&f.key) {
            let moved_to = f.from.max(f.next);
            if end != moved_to && state.position == moved_to {
                state.position = end;
                state.fetch = None; // Its answer is ignored when it comes.
            }
        }
        walked
    }
}

/// A fetch's data, taken in by `accept` and not yet decoded.
struct Fetched {
    key: TopicPartition,
    /// The offset it was fetched from.
    from: i64,
    /// Where the broker said its data ends.
    next: i64,
    /// Where the record batches are in the response.
    payload: std::ops::Range<usize>,
    response: Response,
}

/// Routing and connection failures back off and retry (up to `retries` in
/// a row); anything else is the caller's.
fn retry_or_fail(
    client: &Client,
    state: &mut PartitionState,
    topic: &str,
    error: ClientError,
    backoff: Duration,
    retries: u32,
) -> ClientResult<()> {
    let transient = error.is_routing()
        || matches!(
            error,
            ClientError::Connect { .. }
                | ClientError::Disconnected { .. }
                | ClientError::TimedOut { .. }
        );
    if transient {
        client.forget(topic);
        state.failures += 1;
        state.retry_at = Some(Instant::now() + backoff);
        if state.failures <= retries {
            return Ok(());
        }
        state.failures = 0;
    }
    Err(error)
}
