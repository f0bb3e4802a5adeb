//! Produce (key 0), versions 3-10 (RecordBatch v2 only).
//!
//! Each partition's records are a slice of the request frame (no copy) and
//! go to [`service::produce_many`], which appends them on the owning shards
//! (all started before any is awaited) and answers in request order. The
//! batches are stored exactly as sent, compressed or not: their CRC is
//! checked, their base offset assigned in place, nothing else rewritten.
//!
//! acks: 0 gets no answer at all (a failure closes the connection instead,
//! as Kafka does); 1 and -1 (all) answer once the partition's log
//! acknowledged the append (written, and fdatasynced under `fsync =
//! always`): with a single copy of each partition, every in-sync replica is
//! the leader. Anything else is INVALID_REQUIRED_ACKS.

use std::rc::Rc;

use bytes::Bytes;

use super::errors;
use super::wire::{DecodeResult, Decoder, Encoder};
use super::{Reply, Request, Response};
use crate::error::ServiceResult;
use crate::service::{self, Acks, ProducePartition, Produced, Route};
use crate::shard::Shard;

/// One topic of a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic<'a> {
    /// The topic's name.
    pub name: &'a str,
    /// Its partitions' indexes and records (a range of the frame; None:
    /// null).
    pub partitions: Vec<(i32, Option<std::ops::Range<usize>>)>,
}

/// A decoded Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest<'a> {
    /// Set by transactional producers (transactions are not supported).
    pub transactional_id: Option<&'a str>,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// How long the client waits for the answer.
    pub timeout_ms: i32,
    /// The topics, in request order.
    pub topics: Vec<ProduceTopic<'a>>,
}

/// Decodes a Produce request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    _version: i16,
    flex: bool,
) -> DecodeResult<ProduceRequest<'a>> {
    let transactional_id = d.nullable_string(flex)?;
    let acks = d.i16()?;
    let timeout_ms = d.i32()?;
    let n = d.count(flex, 2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        let m = d.count(flex, 5)?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let index = d.i32()?;
            let records = d.nullable_bytes(flex)?;
            d.tagged_fields(flex)?;
            partitions.push((index, records));
        }
        d.tagged_fields(flex)?;
        topics.push(ProduceTopic { name, partitions });
    }
    d.tagged_fields(flex)?;
    Ok(ProduceRequest {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

/// Answers a Produce request.
pub async fn handle(shard: &Rc<Shard>, mut r: Request<'_>, route: Route) -> DecodeResult<Reply> {
    let ProduceRequest { acks, topics, .. } = decode(&mut r.body, r.version, r.flexible)?;
    let acks = match acks {
        0 => Acks::None,
        1 => Acks::Leader,
        -1 => Acks::All,
        _ => {
            let answers = topics
                .iter()
                .map(|t| {
                    t.partitions
                        .iter()
                        .map(|_| Answer::Code(errors::INVALID_REQUIRED_ACKS, None))
                        .collect()
                })
                .collect();
            return Ok(Reply::Send(encode(&r, &topics, answers)));
        }
    };

    // The parts the service appends, in request order; a negative
    // partition index never reaches it.
    let mut parts = Vec::new();
    for t in &topics {
        for (index, records) in &t.partitions {
            if let Ok(partition) = u32::try_from(*index) {
                parts.push(ProducePartition {
                    topic: t.name.to_owned(),
                    partition,
                    batches: records
                        .clone()
                        .map_or_else(Bytes::new, |range| r.slice(range)),
                });
            }
        }
    }
    let mut results = service::produce_many(shard, parts, acks, route)
        .await
        .into_iter();
    if acks == Acks::None {
        return Ok(match results.find_map(|a| a.err()) {
            None => Reply::Nothing,
            Some(e) => {
                tracing::debug!(error = %e, "acks=0 produce failed: closing the connection");
                Reply::Close
            }
        });
    }
    let answers = topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|(index, _)| {
                    if *index < 0 {
                        return Answer::Code(errors::UNKNOWN_TOPIC_OR_PARTITION, None);
                    }
                    match results.next() {
                        Some(result) => Answer::Done(result),
                        None => Answer::Code(errors::UNKNOWN_SERVER_ERROR, None),
                    }
                })
                .collect()
        })
        .collect();
    Ok(Reply::Send(encode(&r, &topics, answers)))
}

/// One partition's answer.
enum Answer {
    Done(ServiceResult<Produced>),
    Code(i16, Option<String>),
}

fn encode(r: &Request<'_>, topics: &[ProduceTopic<'_>], answers: Vec<Vec<Answer>>) -> Response {
    let (v, flex) = (r.version, r.flexible);
    let mut e = Response::start(r, if flex { 1 } else { 0 });
    e.array_len(flex, topics.len());
    for (t, answers) in topics.iter().zip(answers) {
        e.string(flex, t.name);
        e.array_len(flex, t.partitions.len());
        for ((index, _), answer) in t.partitions.iter().zip(answers) {
            let (code, offsets, message) = match answer {
                Answer::Done(Ok(p)) => (
                    errors::NONE,
                    [
                        p.base_offset as i64,
                        p.log_append_time.unwrap_or(-1),
                        p.log_start_offset as i64,
                    ],
                    None,
                ),
                Answer::Done(Err(e)) => (errors::code(&e), [-1; 3], Some(e.message)),
                Answer::Code(code, message) => (code, [-1; 3], message),
            };
            partition(&mut e, v, flex, *index, code, offsets, message.as_deref());
        }
        e.tagged_fields(flex);
    }
    e.i32(0); // throttle_time_ms
    e.tagged_fields(flex);
    Response::finish(e, Vec::new())
}

fn partition(
    e: &mut Encoder,
    v: i16,
    flex: bool,
    index: i32,
    code: i16,
    [base_offset, log_append_time, log_start_offset]: [i64; 3],
    message: Option<&str>,
) {
    e.i32(index);
    e.i16(code);
    e.i64(base_offset);
    e.i64(log_append_time); // -1 unless the topic uses LogAppendTime
    if v >= 5 {
        e.i64(log_start_offset);
    }
    if v >= 8 {
        e.array_len(flex, 0); // record_errors
        e.nullable_string(flex, message);
    }
    e.tagged_fields(flex);
}
