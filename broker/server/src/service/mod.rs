//! The protocol-neutral service: every operation the broker serves, on
//! domain types (topic and partition, batches as `Bytes`, offsets, typed
//! errors), whatever protocol asked. A codec ([`crate::native`] today, the
//! Kafka protocol next) decodes a request, calls one of these, and encodes
//! the answer or the [`ServiceError`]; it holds no logic of its own.
//!
//! Routing lives here too: an operation on a partition (or a group, or a
//! topic change) runs where its owner is. Called on another shard, it is
//! sent there as a typed [`ShardMessage`] with [`Route::Forward`], or
//! refused with [`ErrorKind::NotOwner`] with [`Route::OwnerOnly`] (a
//! shard-aware port: the client learns to refresh its metadata).
//! [`produce_many`] scatters a multi-partition request over the owning
//! shards and gathers the answers in request order.
//!
//! What it never does: parse or build a wire frame, or see a socket.

pub mod groups;
pub mod topics;

use std::{rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration};

use bytes::Bytes;

use crate::error::{ErrorKind, ServiceError, ServiceResult};
use crate::partition::Partition;
use crate::shard::{Shard, ShardMessage};
use broker_format::Validated;
use broker_log::ReadBytes;
use broker_shard::ShardId;

/// How a request for a partition another shard owns is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Send it to the owner and relay the answer (the main port).
    Forward,
    /// Refuse it with [`ErrorKind::NotOwner`] (a shard-aware port).
    OwnerOnly,
}

/// When a producer wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Never: fire and forget (a failure closes the connection instead).
    None,
    /// Once the partition's log acknowledged the append (written, and
    /// fdatasynced under fsync policy `always`).
    Leader,
    /// Once every in-sync replica has it durable (the high watermark passed
    /// it); for a partition of one replica, as `Leader`.
    All,
}

/// A produce answer: the offsets the batches got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// The first record's offset.
    pub base_offset: u64,
    /// The last record's offset.
    pub last_offset: u64,
    /// The broker's time of append (ms since the epoch), written into the
    /// batches, on a topic with `log_append_time`; None otherwise.
    pub log_append_time: Option<i64>,
    /// The partition's log start offset once the batches were appended.
    pub log_start_offset: u64,
}

/// One partition's part of a produce request.
#[derive(Debug, Clone)]
pub struct ProducePartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its record batches, back to back, as received.
    pub batches: Bytes,
}

/// A fetch of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The first offset wanted (negative is refused as out of range).
    pub offset: i64,
    /// The byte budget of the answer (at least one batch comes back).
    pub max_bytes: usize,
    /// How long to wait when nothing is readable at `offset`.
    pub max_wait: Duration,
}

/// The record bytes of a fetch answer.
pub enum Records {
    /// Nothing.
    Empty,
    /// The owner's log buffer (a DMA read or the written tail): written to
    /// the socket as it is, the zero-copy fetch.
    Log(ReadBytes),
    /// A copy made by the owner for another shard (log buffers are `!Send`).
    Copied(Bytes),
}

impl Records {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Records::Empty => &[],
            Records::Log(r) => r.as_slice(),
            Records::Copied(b) => b,
        }
    }
}

/// Where a fetch leaves the partition and the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// The first readable offset.
    pub log_start_offset: u64,
    /// Where the next fetch starts (past the answer's last record).
    pub next_offset: u64,
}

/// A fetch answer.
pub struct Fetched {
    /// Whole batches, the first holding the offset asked for.
    pub records: Records,
    /// Where it leaves the reader.
    pub position: FetchPosition,
}

/// A fetch answer that crosses shards.
#[derive(Debug)]
pub struct RemoteFetched {
    /// The record bytes, copied once out of the owner's log buffer.
    pub records: Bytes,
    /// Where it leaves the reader.
    pub position: FetchPosition,
}

impl Fetched {
    /// The answer as it crosses to another shard: the one copy of a
    /// forwarded fetch.
    pub fn into_remote(self) -> RemoteFetched {
        let bytes = self.records.as_slice();
        crate::copy_stats::forwarded(bytes.len());
        RemoteFetched {
            records: Bytes::copy_from_slice(bytes),
            position: self.position,
        }
    }

    fn from_remote(r: RemoteFetched) -> Fetched {
        Fetched {
            records: if r.records.is_empty() {
                Records::Empty
            } else {
                Records::Copied(r.records)
            },
            position: r.position,
        }
    }
}

/// What ListOffsets looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset whose timestamp (ms since the epoch) is at or after this.
    Timestamp(i64),
}

/// A ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// The offset found; None when no record has a timestamp that late.
    pub offset: Option<u64>,
    /// The log start offset.
    pub log_start_offset: u64,
    /// The high watermark.
    pub high_watermark: u64,
}

/// Whether `name` is an internal topic (clients may read it, not write,
/// create or delete it).
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// The shard of this broker that owns `topic`/`partition`, or why there
/// is none: an unknown topic or partition, or (in a cluster) a partition
/// of another broker, `NotOwner` (the client asks the metadata again).
pub fn owner(shard: &Shard, topic: &str, partition: u32) -> ServiceResult<ShardId> {
    let topics = shard.topics();
    let Some(meta) = topics.get(topic) else {
        return Err(ServiceError::unknown_topic(topic));
    };
    let owner = meta.owner(partition).ok_or_else(|| {
        ServiceError::new(
            ErrorKind::UnknownPartition,
            format!(
                "topic {topic:?} has {} partitions; there is no partition {partition}",
                meta.partition_count()
            ),
        )
    })?;
    match meta.broker_of(partition) {
        Some(broker) if broker != shard.config().broker_id => Err(ServiceError::new(
            ErrorKind::NotOwner,
            format!(
                "partition {topic}/{partition} lives on broker {broker}, not on broker {}",
                shard.config().broker_id
            ),
        )),
        // A cluster member's cached placement on a shard it no longer runs,
        // until the controllers place the partition again.
        _ if owner >= shard.shard_count() => Err(ServiceError::new(
            ErrorKind::NotOwner,
            format!(
                "partition {topic}/{partition} is placed on shard {owner}, which this broker \
                 does not run; the controllers place it again"
            ),
        )),
        // A replicated partition is served by its leader only: the table
        // names the preferred replica while there is none (RF 1 never
        // looks: its table entry is its only copy, as before).
        _ if meta.config.replication_factor > 1 && !leads(shard, topic, partition) => {
            Err(ServiceError::new(
                ErrorKind::NotOwner,
                format!("partition {topic}/{partition} has no leader now"),
            ))
        }
        _ => Ok(owner),
    }
}

/// Whether this broker leads `partition` of `topic` by the image applied.
fn leads(shard: &Shard, topic: &str, partition: u32) -> bool {
    let me = broker_cluster::BrokerId(shard.config().broker_id);
    shard.image().is_some_and(|image| {
        image
            .partition_replicas(topic, partition)
            .is_ok_and(|r| r.leader == Some(me) && !image.is_fenced(me))
    })
}

/// Where a partition request runs: here, on another shard, or nowhere.
fn route(shard: &Shard, topic: &str, partition: u32, route: Route) -> ServiceResult<ShardId> {
    let owner = owner(shard, topic, partition)?;
    if owner != shard.id() && route == Route::OwnerOnly {
        return Err(ServiceError::new(
            ErrorKind::NotOwner,
            format!(
                "partition {topic}/{partition} is owned by shard {owner}, not shard {}",
                shard.id()
            ),
        ));
    }
    Ok(owner)
}

/// Appends a produce request's batches to `topic`/`partition`, where it
/// lives. All are checked (framing, size, CRC) before any is appended; they
/// get consecutive offsets in payload order.
pub async fn produce(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    batches: Bytes,
    acks: Acks,
    via: Route,
) -> ServiceResult<Produced> {
    let owner = route(shard, topic, partition, via)?;
    if owner == shard.id() {
        return produce_here(shard, topic, partition, &batches, acks).await;
    }
    let topic = topic.to_owned();
    shard
        .ask(owner, move |reply| ShardMessage::Produce {
            topic,
            partition,
            batches,
            acks,
            reply,
        })
        .await
}

/// Produces to several partitions at once: each part goes to its owner,
/// and the answers come back in request order. Parts are started strictly
/// in request order before any answer is awaited, so the shards work in
/// parallel and each partition gets its parts in the order sent: a local
/// part is placed in its log by its first poll; a remote part's message is
/// handed to the owner's channel (waiting only for room in it, never for an
/// answer), and the owner handles its messages in order.
pub async fn produce_many(
    shard: &Rc<Shard>,
    parts: Vec<ProducePartition>,
    acks: Acks,
    via: Route,
) -> Vec<ServiceResult<Produced>> {
    let mut pending = Vec::with_capacity(parts.len());
    for p in parts {
        let owner = match route(shard, &p.topic, p.partition, via) {
            Ok(owner) => owner,
            Err(e) => {
                pending.push(Part::Done(Err(e)));
                continue;
            }
        };
        if owner == shard.id() {
            let mut call = Box::pin(async move {
                produce_here(shard, &p.topic, p.partition, &p.batches, acks).await
            });
            pending.push(match futures_lite::future::poll_once(&mut call).await {
                Some(done) => Part::Done(done),
                None => Part::Local(call),
            });
            continue;
        }
        let sent = shard
            .send(owner, move |reply| ShardMessage::Produce {
                topic: p.topic,
                partition: p.partition,
                batches: p.batches,
                acks,
                reply,
            })
            .await;
        pending.push(match sent {
            Ok(answer) => Part::Remote(answer),
            Err(e) => Part::Done(Err(e)),
        });
    }
    let mut answers = Vec::with_capacity(pending.len());
    for p in pending {
        answers.push(match p {
            Part::Done(done) => done,
            Part::Local(call) => call.await,
            Part::Remote(answer) => answer.wait().await,
        });
    }
    answers
}

/// A part of [`produce_many`] once started.
enum Part<F> {
    /// Answered at once.
    Done(ServiceResult<Produced>),
    /// Placed in this shard's log, awaiting its acknowledgement.
    Local(F),
    /// Sent to its owner, awaiting the answer.
    Remote(crate::shard::Answer<Produced>),
}

/// [`produce`] on the owning shard.
pub async fn produce_here(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    payload: &[u8],
    acks: Acks,
) -> ServiceResult<Produced> {
    if is_internal(topic) {
        return Err(ServiceError::invalid(format!(
            "{topic:?} is an internal topic: only the broker writes it"
        )));
    }
    let Some(p) = shard.partition(topic, partition) else {
        return Err(ServiceError::not_open(topic, partition));
    };
    let replica = shard.replication().get(topic, partition);
    let to = Appender {
        partition: &p,
        replica: replica.as_ref().map(|r| (shard, r, acks == Acks::All)),
    };
    if to.replica.is_none() && p.is_replicated() {
        return Err(ServiceError::new(
            ErrorKind::NotOwner,
            format!("partition {topic}/{partition} has no replica running here"),
        ));
    }
    let max_batch = shard.config().max_batch_bytes;
    let produced = if shard.topic(topic).is_some_and(|t| t.config.log_append_time) {
        produce_log_append_time(to, payload, max_batch).await?
    } else {
        append_validated(to, &validate_batches(payload, max_batch)?).await?
    };
    Ok(Produced {
        log_start_offset: p.log_start_offset(),
        ..produced
    })
}

/// Where a produce's batches go: the partition's log, or (a replicated
/// partition) its replica, which places them and answers once they are as
/// durable as asked (`all`: every in-sync replica).
#[derive(Clone, Copy)]
struct Appender<'a> {
    partition: &'a Partition,
    replica: Option<(&'a Rc<Shard>, &'a Rc<crate::replication::Replicated>, bool)>,
}

impl Appender<'_> {
    /// Appends one batch: its base offset and next offset.
    async fn append(&self, batch: Validated<'_>) -> ServiceResult<(u64, u64)> {
        match self.replica {
            None => {
                let a = self.partition.append(batch).await?;
                Ok((a.base_offset, a.next_offset))
            }
            Some((shard, r, all)) => r.append_batches(shard, &[batch], all).await,
        }
    }

    /// Appends batches with consecutive offsets (see
    /// [`Partition::append_batches`]).
    async fn append_batches(&self, batches: &[Validated<'_>]) -> ServiceResult<(u64, u64)> {
        match self.replica {
            None => Ok(self.partition.append_batches(batches).await?),
            Some((shard, r, all)) => r.append_batches(shard, batches, all).await,
        }
    }
}

/// Appends a request's validated batches: through the producers' sequence
/// checks ([`produce_idempotent`]) when any carries a producer id.
async fn append_validated(to: Appender<'_>, batches: &[Validated<'_>]) -> ServiceResult<Produced> {
    if batches.iter().any(is_idempotent) {
        return produce_idempotent(to, batches).await;
    }
    let (base, next) = to.append_batches(batches).await?;
    Ok(Produced {
        base_offset: base,
        last_offset: next - 1,
        log_append_time: None,
        log_start_offset: 0,
    })
}

/// Appends to a topic with `log_append_time`: each batch is checked (CRC
/// and records) as it came, then gets the broker's clock as its max
/// timestamp and the LogAppendTime attribute, and a new CRC
/// ([`Validated::stamp_log_append_time`]). (A copy of the payload: the
/// request's bytes are shared and immutable.)
async fn produce_log_append_time(
    to: Appender<'_>,
    payload: &[u8],
    max_batch: usize,
) -> ServiceResult<Produced> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut owned = payload.to_vec();
    let mut rest = owned.as_mut_slice();
    let mut batches = Vec::with_capacity(1);
    for batch in split_batches(payload, max_batch) {
        let (this, tail) = std::mem::take(&mut rest).split_at_mut(batch?.len());
        rest = tail;
        batches.push(Validated::stamp_log_append_time(this, now).map_err(corrupt_batch)?);
    }
    let mut produced = append_validated(to, &batches).await?;
    produced.log_append_time = Some(now);
    Ok(produced)
}

/// Whether a batch carries a producer id (Kafka's idempotent producers).
fn is_idempotent(batch: &Validated<'_>) -> bool {
    batch.header().producer_id >= 0
}

/// How long a retried batch waits for its original, still in flight, to be
/// acknowledged before the retry is told to try again.
const DUPLICATE_WAIT: Duration = Duration::from_secs(30);

/// Appends batches of which some carry a producer id, one at a time in
/// payload order, each checked against its producer's sequence first
/// ([`crate::producers`]): a retry of a batch already in the log is not
/// appended again and gets the original's offsets; a gap, a reordering or
/// a fenced epoch is refused. Transactions are not supported.
async fn produce_idempotent(
    to: Appender<'_>,
    batches: &[Validated<'_>],
) -> ServiceResult<Produced> {
    use crate::producers::{BatchIds, Check, Refusal};
    let p = to.partition;
    let mut first = None;
    let mut last = 0;
    for &batch in batches {
        let header = batch.header();
        if header.is_transactional() || header.is_control() {
            return Err(ServiceError::invalid(
                "transactional batches are not supported (transactions are not implemented)",
            ));
        }
        let (base, next) = match BatchIds::of(header) {
            None => to.append(batch).await?,
            Some(ids) => {
                let check = p.producers().borrow().check(&ids);
                match check {
                    Check::Append => {
                        // Recorded before the append is first polled (which
                        // places it): a pipelined next batch checks against it.
                        p.producers().borrow_mut().placed(&ids);
                        match to.append(batch).await {
                            Ok((base, next)) => {
                                p.producers().borrow_mut().acked(&ids, base, next);
                                if p.arrivals().waiting() > 0 {
                                    // A retry may be waiting for these offsets.
                                    p.wake_readers();
                                }
                                (base, next)
                            }
                            Err(e) => {
                                p.producers().borrow_mut().failed(&ids);
                                p.wake_readers();
                                return Err(e);
                            }
                        }
                    }
                    Check::Duplicate(Some(offsets)) => offsets,
                    Check::Duplicate(None) => wait_for_original(p, &ids).await?,
                    Check::Refuse(Refusal::Fenced { current }) => {
                        return Err(ServiceError::new(
                            ErrorKind::ProducerFenced,
                            format!(
                                "producer {} epoch {} is fenced: the current epoch is {current}",
                                ids.producer_id, ids.epoch
                            ),
                        ))
                    }
                    Check::Refuse(Refusal::OutOfOrder { expected }) => {
                        return Err(ServiceError::new(
                            ErrorKind::OutOfOrderSequence,
                            format!(
                                "producer {} sent sequence {}, expected {expected}",
                                ids.producer_id, ids.first_sequence
                            ),
                        ))
                    }
                    Check::Refuse(Refusal::UnknownProducer) => {
                        return Err(ServiceError::new(
                            ErrorKind::UnknownProducer,
                            format!(
                                "producer {} is not known to this partition and sent sequence {}",
                                ids.producer_id, ids.first_sequence
                            ),
                        ))
                    }
                }
            }
        };
        first.get_or_insert(base);
        last = next;
    }
    let first = first.ok_or_else(|| ServiceError::invalid("no record batch"))?;
    Ok(Produced {
        base_offset: first,
        last_offset: last - 1,
        log_append_time: None,
        log_start_offset: 0,
    })
}

/// A retry of a batch still in flight: its offsets once the original is
/// acknowledged (never before: acknowledging the retry first would promise
/// what the log has not).
async fn wait_for_original(
    p: &Partition,
    ids: &crate::producers::BatchIds,
) -> ServiceResult<(u64, u64)> {
    use crate::producers::Check;
    let deadline = std::time::Instant::now() + DUPLICATE_WAIT;
    loop {
        let seen = p.arrivals().generation();
        match p.producers().borrow().check(ids) {
            Check::Duplicate(Some(offsets)) if offsets.1 <= p.high_watermark() => {
                return Ok(offsets)
            }
            Check::Duplicate(_) => {}
            // The original failed and was taken back: the retry retries.
            _ => {
                return Err(ServiceError::storage(
                    "the original of this retried batch failed; retry it",
                ))
            }
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(ServiceError::storage(
                "the original of this retried batch is not acknowledged yet; retry it",
            ));
        }
        p.arrivals().wait(seen, deadline - now).await;
    }
}

/// Splits a produce payload into its batches and validates each
/// ([`Validated::check`]: CRC and records) before any is appended, so that
/// a bad one appends nothing; the log then does not validate them again.
fn validate_batches(payload: &[u8], max_batch: usize) -> ServiceResult<Vec<Validated<'_>>> {
    let mut batches = Vec::with_capacity(1);
    for batch in split_batches(payload, max_batch) {
        batches.push(Validated::check(batch?).map_err(corrupt_batch)?);
    }
    Ok(batches)
}

/// A batch [`Validated::check`] refused.
fn corrupt_batch(e: broker_format::BatchError) -> ServiceError {
    ServiceError::new(ErrorKind::CorruptBatch, format!("record batch: {e}"))
}

/// Splits a produce payload into whole batches by their length fields,
/// checking each against the batch size limit; the first fault ends it.
/// Nothing is trusted beyond the framing: the caller validates each.
fn split_batches(payload: &[u8], max_batch: usize) -> impl Iterator<Item = ServiceResult<&[u8]>> {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || (pos == payload.len() && pos > 0) {
            return None;
        }
        let rest = &payload[pos..];
        let batch = match broker_format::peek_total_len(rest) {
            _ if payload.is_empty() => Err(ServiceError::invalid(
                "a produce request must carry at least one record batch",
            )),
            None => Err(ServiceError::new(
                ErrorKind::CorruptBatch,
                format!(
                    "the payload's last {} bytes are not a whole record batch",
                    rest.len()
                ),
            )),
            Some(len) if len > max_batch => Err(ServiceError::new(
                ErrorKind::BatchTooLarge,
                format!("record batch of {len} bytes exceeds the limit of {max_batch} bytes"),
            )),
            Some(len) if len < broker_format::HEADER_LEN || len > rest.len() => {
                Err(ServiceError::new(
                    ErrorKind::CorruptBatch,
                    format!(
                        "record batch at payload byte {pos} claims {len} bytes; {} remain",
                        rest.len()
                    ),
                ))
            }
            Some(len) => Ok(&rest[..len]),
        };
        match &batch {
            Ok(b) => pos += b.len(),
            Err(_) => failed = true,
        }
        Some(batch)
    })
}

/// Reads from a partition where it lives: whole batches from the offset up
/// to the byte budget, or a long poll when there is nothing yet.
pub async fn fetch(shard: &Rc<Shard>, request: FetchRequest, via: Route) -> ServiceResult<Fetched> {
    let owner = route(shard, &request.topic, request.partition, via)?;
    if owner == shard.id() {
        return fetch_here(shard, &request).await;
    }
    shard
        .ask(owner, move |reply| ShardMessage::Fetch { request, reply })
        .await
        .map(Fetched::from_remote)
}

/// [`fetch`] on the owning shard.
pub async fn fetch_here(shard: &Shard, r: &FetchRequest) -> ServiceResult<Fetched> {
    let Some(partition) = shard.partition(&r.topic, r.partition) else {
        return Err(ServiceError::not_open(&r.topic, r.partition));
    };
    if r.offset < 0 {
        return Err(ServiceError::offset_out_of_range(
            format!("offset {} is negative", r.offset),
            partition.log_start_offset(),
            partition.high_watermark(),
        ));
    }
    let offset = r.offset as u64;
    // The answer must fit in a frame with room for its header.
    let budget = r.max_bytes.min(shard.config().max_frame_bytes / 2);
    let deadline = std::time::Instant::now() + r.max_wait;
    loop {
        let seen = partition.arrivals().generation();
        let read = partition.read(offset, budget).await?;
        let len = read.bytes.as_slice().len();
        let now = std::time::Instant::now();
        if len == 0
            && now < deadline
            && !shard.stopping()
            && shard.partition(&r.topic, r.partition).is_some()
        {
            partition.arrivals().wait(seen, deadline - now).await;
            continue;
        }
        let position = FetchPosition {
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
            next_offset: if len == 0 { offset } else { read.next_offset },
        };
        if len == 0 {
            return Ok(Fetched {
                records: Records::Empty,
                position,
            });
        }
        let m = partition.metrics();
        m.bytes_out.fetch_add(len as u64, Relaxed);
        m.records_out
            .fetch_add(read.next_offset.saturating_sub(offset), Relaxed);
        return Ok(Fetched {
            records: Records::Log(read.bytes),
            position,
        });
    }
}

/// Looks up an offset of a partition where it lives.
pub async fn list_offsets(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    query: OffsetQuery,
    via: Route,
) -> ServiceResult<Offsets> {
    let owner = route(shard, topic, partition, via)?;
    if owner == shard.id() {
        return list_offsets_here(shard, topic, partition, query).await;
    }
    let topic = topic.to_owned();
    shard
        .ask(owner, move |reply| ShardMessage::ListOffsets {
            topic,
            partition,
            query,
            reply,
        })
        .await
}

/// [`list_offsets`] on the owning shard.
pub async fn list_offsets_here(
    shard: &Shard,
    topic: &str,
    partition: u32,
    query: OffsetQuery,
) -> ServiceResult<Offsets> {
    let Some(p) = shard.partition(topic, partition) else {
        return Err(ServiceError::not_open(topic, partition));
    };
    let offset = match query {
        OffsetQuery::Earliest => Some(p.log_start_offset()),
        OffsetQuery::Latest => Some(p.high_watermark()),
        OffsetQuery::Timestamp(ts) => p
            .log()
            .offset_for_timestamp(ts)
            .await?
            .filter(|&o| o < p.high_watermark()),
    };
    Ok(Offsets {
        offset,
        log_start_offset: p.log_start_offset(),
        high_watermark: p.high_watermark(),
    })
}

#[cfg(test)]
mod tests;
