//! Fetch (key 1), versions 4-12 (topics by name; topic ids are not
//! supported).
//!
//! Each partition is read through [`service::fetch`] (its owner's log,
//! below the high watermark). The answer is written with no user-space copy
//! of record bytes: it is small encoded pieces interleaved with the log's
//! own buffers ([`Records::Log`]), which the connection writes to the socket
//! as they are.
//!
//! Limits (KIP-74): partitions are filled in request order within
//! `max_bytes` in all and `partition_max_bytes` each, except that the first
//! batch of the first partition with data is returned whole even when it is
//! larger than both, so a consumer always makes progress. A later
//! partition whose first batch does not fit what is left gets no records
//! this time (its high watermark is still answered).
//!
//! Long poll: while fewer than `min_bytes` were found and `max_wait_ms` has
//! not passed, the request waits for an append to any of its partitions
//! (this shard's: their arrivals; another shard's: a long-poll fetch there),
//! then reads again. Fetch sessions (KIP-227) are declined: the answer's
//! session id is 0, so clients send full fetches, as Kafka's protocol
//! allows; a request naming a session gets FETCH_SESSION_ID_NOT_FOUND.

use std::{future::Future, pin::Pin, rc::Rc, task::Poll, time::Duration};

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{Reply, Request, Response};
use crate::error::ErrorKind;
use crate::service::{self, FetchRequest as PartitionFetch, Records, Route};
use crate::shard::Shard;

/// FETCH_SESSION_ID_NOT_FOUND.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// INVALID_FETCH_SESSION_EPOCH.
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// Longest long poll honoured (a client asking for more waits this long).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// One partition of a Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPart<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
    /// Its byte limit.
    pub max_bytes: i32,
}

/// A decoded Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest<'a> {
    /// How long to wait for `min_bytes` (at most 30 s).
    pub max_wait: Duration,
    /// Bytes to wait for.
    pub min_bytes: usize,
    /// The byte limit of the whole answer (usize::MAX: none).
    pub max_bytes: usize,
    /// The fetch session asked for (sessions are declined).
    pub session_id: i32,
    /// Its epoch.
    pub session_epoch: i32,
    /// Topics in request order, each with its parts.
    pub topics: Vec<(&'a str, Vec<FetchPart<'a>>)>,
}

/// Decodes a Fetch request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<FetchRequest<'a>> {
    let _replica_id = d.i32()?;
    let max_wait_ms = d.i32()?;
    let min_bytes = d.i32()?;
    let max_bytes = d.i32()?;
    let _isolation_level = d.i8()?;
    let (session_id, session_epoch) = if v >= 7 {
        (d.i32()?, d.i32()?)
    } else {
        (0, -1)
    };
    let n = d.count(flex, 2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = d.string(flex)?;
        let m = d.count(flex, 16)?;
        let mut parts = Vec::with_capacity(m);
        for _ in 0..m {
            let partition = d.i32()?;
            if v >= 9 {
                d.i32()?; // current_leader_epoch
            }
            let offset = d.i64()?;
            if v >= 12 {
                d.i32()?; // last_fetched_epoch
            }
            if v >= 5 {
                d.i64()?; // log_start_offset (a follower's)
            }
            let max_bytes = d.i32()?;
            d.tagged_fields(flex)?;
            parts.push(FetchPart {
                topic,
                partition,
                offset,
                max_bytes,
            });
        }
        d.tagged_fields(flex)?;
        topics.push((topic, parts));
    }
    if v >= 7 {
        // forgotten_topics_data: only meaningful with a session.
        for _ in 0..d.count(flex, 2)? {
            d.string(flex)?;
            for _ in 0..d.count(flex, 4)? {
                d.i32()?;
            }
            d.tagged_fields(flex)?;
        }
    }
    if v >= 11 {
        d.string(flex)?; // rack_id
    }
    d.tagged_fields(flex)?;
    Ok(FetchRequest {
        max_wait: Duration::from_millis(max_wait_ms.max(0) as u64).min(MAX_WAIT),
        min_bytes: min_bytes.max(0) as usize,
        max_bytes: if max_bytes <= 0 {
            usize::MAX
        } else {
            max_bytes as usize
        },
        session_id,
        session_epoch,
        topics,
    })
}

/// One partition's answer.
struct Answer {
    code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Records,
}

/// Answers a Fetch request.
pub async fn handle(shard: &Rc<Shard>, mut r: Request<'_>, route: Route) -> DecodeResult<Reply> {
    let asked = decode(&mut r.body, r.version, r.flexible)?;
    if asked.session_id != 0 {
        return Ok(Reply::Send(encode(
            &r,
            FETCH_SESSION_ID_NOT_FOUND,
            &asked,
            Vec::new(),
        )));
    }
    if asked.session_epoch > 0 {
        return Ok(Reply::Send(encode(
            &r,
            INVALID_FETCH_SESSION_EPOCH,
            &asked,
            Vec::new(),
        )));
    }
    let deadline = std::time::Instant::now() + asked.max_wait;
    loop {
        // Taken before reading, so an append between the read and the wait
        // is not missed.
        let seen: Vec<_> = parts(&asked)
            .map(|p| {
                u32::try_from(p.partition)
                    .ok()
                    .and_then(|n| shard.partition(p.topic, n))
                    .map(|local| (local.arrivals().generation(), local))
            })
            .collect();
        let answers = read_all(shard, &asked, route).await;
        let found: usize = answers.iter().map(|a| a.records.as_slice().len()).sum();
        let failed = answers.iter().any(|a| a.code != errors::NONE);
        let now = std::time::Instant::now();
        if found >= asked.min_bytes.max(1) || failed || now >= deadline || shard.stopping() {
            return Ok(Reply::Send(encode(&r, errors::NONE, &asked, answers)));
        }
        drop(answers);
        // Wait for an append to any of the partitions.
        let left = deadline - now;
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
        for (p, local) in parts(&asked).zip(&seen) {
            match local {
                Some((generation, partition)) => {
                    let (generation, partition) = (*generation, partition.clone());
                    waits.push(Box::pin(async move {
                        partition.arrivals().wait(generation, left).await;
                    }));
                }
                None if p.partition >= 0 => {
                    let request = PartitionFetch {
                        topic: p.topic.to_owned(),
                        partition: p.partition as u32,
                        offset: p.offset,
                        max_bytes: 1,
                        max_wait: left,
                    };
                    waits.push(Box::pin(async move {
                        let _ = service::fetch(shard, request, route).await;
                    }));
                }
                None => {}
            }
        }
        waits.push(Box::pin(glommio::timer::sleep(left)));
        std::future::poll_fn(|cx| {
            if waits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

fn parts<'x, 'a>(asked: &'x FetchRequest<'a>) -> impl Iterator<Item = &'x FetchPart<'a>> {
    asked.topics.iter().flat_map(|(_, parts)| parts.iter())
}

/// Reads every partition once, without waiting, within the byte limits.
async fn read_all(shard: &Rc<Shard>, asked: &FetchRequest<'_>, route: Route) -> Vec<Answer> {
    let mut answers = Vec::new();
    let mut total = 0usize;
    for p in parts(asked) {
        let Ok(partition) = u32::try_from(p.partition) else {
            answers.push(failed(errors::UNKNOWN_TOPIC_OR_PARTITION, -1, -1));
            continue;
        };
        let left = asked.max_bytes.saturating_sub(total);
        let budget = (p.max_bytes.max(1) as usize).min(left.max(1));
        let request = PartitionFetch {
            topic: p.topic.to_owned(),
            partition,
            offset: p.offset,
            max_bytes: budget,
            max_wait: Duration::ZERO,
        };
        match service::fetch(shard, request, route).await {
            Ok(fetched) => {
                let len = fetched.records.as_slice().len();
                // KIP-74: only the first batch of the first partition with
                // data may exceed the limits.
                let records = if total > 0 && len > budget.min(left) {
                    Records::Empty
                } else {
                    total += len;
                    fetched.records
                };
                answers.push(Answer {
                    code: errors::NONE,
                    high_watermark: fetched.position.high_watermark as i64,
                    log_start_offset: fetched.position.log_start_offset as i64,
                    records,
                });
            }
            Err(e) => {
                let (start, end) = match (e.kind, e.valid_range) {
                    (ErrorKind::OffsetOutOfRange, Some((start, end))) => (start as i64, end as i64),
                    _ => (-1, -1),
                };
                answers.push(failed(errors::code(&e), end, start));
            }
        }
    }
    answers
}

fn failed(code: i16, high_watermark: i64, log_start_offset: i64) -> Answer {
    Answer {
        code,
        high_watermark,
        log_start_offset,
        records: Records::Empty,
    }
}

fn encode(r: &Request<'_>, error: i16, asked: &FetchRequest<'_>, answers: Vec<Answer>) -> Response {
    let (v, flex) = (r.version, r.flexible);
    let mut e = Response::start(r, if flex { 1 } else { 0 });
    e.i32(0); // throttle_time_ms
    if v >= 7 {
        e.i16(error);
        e.i32(0); // session_id: sessions are declined
    }
    // Records go between the encoded pieces: `cuts` says where.
    let mut cuts: Vec<(usize, Records)> = Vec::new();
    let mut answers = answers.into_iter();
    let topics: &[(&str, Vec<FetchPart<'_>>)] = if error == errors::NONE {
        &asked.topics
    } else {
        &[]
    };
    e.array_len(flex, topics.len());
    for (topic, parts) in topics {
        e.string(flex, topic);
        e.array_len(flex, parts.len());
        for p in parts {
            let a = answers
                .next()
                .unwrap_or_else(|| failed(errors::UNKNOWN_SERVER_ERROR, -1, -1));
            e.i32(p.partition);
            e.i16(a.code);
            e.i64(a.high_watermark);
            e.i64(a.high_watermark); // last_stable_offset: no transactions
            if v >= 5 {
                e.i64(a.log_start_offset);
            }
            // aborted_transactions: null.
            if flex {
                e.uvarint(0);
            } else {
                e.i32(-1);
            }
            if v >= 11 {
                e.i32(-1); // preferred_read_replica
            }
            let len = a.records.as_slice().len();
            e.bytes_len(flex, Some(len));
            if len > 0 {
                cuts.push((e.buf.len(), a.records));
            }
            e.tagged_fields(flex);
        }
        e.tagged_fields(flex);
    }
    e.tagged_fields(flex);
    // Split the encoded bytes at the cuts: head, then each records piece
    // followed by what comes after it.
    let mut buf = e.buf;
    let mut pieces = Vec::with_capacity(cuts.len());
    for (at, records) in cuts.into_iter().rev() {
        let after = buf.split_off(at);
        pieces.push((records, after));
    }
    pieces.reverse();
    Response::finish(super::wire::Encoder::new(buf), pieces)
}
