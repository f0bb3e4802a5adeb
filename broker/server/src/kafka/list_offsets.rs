//! ListOffsets (key 2), versions 1-7: a partition's earliest offset (-2),
//! its latest (-1, the high watermark), or the first offset whose
//! timestamp is at or after a given one, through [`service::list_offsets`].
//!
//! -3 (v7, KIP-734: the record with the largest timestamp) is answered with
//! the last record's offset and an unknown timestamp (-1): the broker keeps
//! no index by largest timestamp yet. A timestamp lookup's answer carries
//! the timestamp asked for, not the record's own (an unknown timestamp
//! would make clients think nothing was found).

use std::rc::Rc;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{Reply, Request, Response};
use crate::service::{self, OffsetQuery, Route};
use crate::shard::Shard;

/// A decoded ListOffsets request: topics, each with (partition,
/// timestamp) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest<'a> {
    /// The topics, in request order.
    pub topics: Vec<(&'a str, Vec<(i32, i64)>)>,
}

/// Decodes a ListOffsets request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<ListOffsetsRequest<'a>> {
    let _replica_id = d.i32()?;
    if v >= 2 {
        let _isolation_level = d.i8()?;
    }
    let n = d.count(flex, 2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        let m = d.count(flex, 12)?;
        let mut parts = Vec::with_capacity(m);
        for _ in 0..m {
            let index = d.i32()?;
            if v >= 4 {
                d.i32()?; // current_leader_epoch
            }
            let timestamp = d.i64()?;
            d.tagged_fields(flex)?;
            parts.push((index, timestamp));
        }
        d.tagged_fields(flex)?;
        topics.push((name, parts));
    }
    d.tagged_fields(flex)?;
    Ok(ListOffsetsRequest { topics })
}

/// Answers a ListOffsets request.
pub async fn handle(shard: &Rc<Shard>, mut r: Request<'_>, route: Route) -> DecodeResult<Reply> {
    let (v, flex) = (r.version, r.flexible);
    let ListOffsetsRequest { topics } = decode(&mut r.body, v, flex)?;
    let mut e = Response::start(&r, if flex { 1 } else { 0 });
    if v >= 2 {
        e.i32(0); // throttle_time_ms
    }
    e.array_len(flex, topics.len());
    for (name, parts) in &topics {
        e.string(flex, name);
        e.array_len(flex, parts.len());
        for &(index, timestamp) in parts {
            let (code, ts, offset) = lookup(shard, name, index, timestamp, route).await;
            e.i32(index);
            e.i16(code);
            e.i64(ts);
            e.i64(offset);
            if v >= 4 {
                e.i32(-1); // leader_epoch: not tracked yet
            }
            e.tagged_fields(flex);
        }
        e.tagged_fields(flex);
    }
    e.tagged_fields(flex);
    Ok(Reply::Send(Response::finish(e, Vec::new())))
}

/// (error code, timestamp, offset) of one partition's lookup.
async fn lookup(
    shard: &Rc<Shard>,
    topic: &str,
    index: i32,
    timestamp: i64,
    route: Route,
) -> (i16, i64, i64) {
    let Ok(partition) = u32::try_from(index) else {
        return (errors::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
    };
    let query = match timestamp {
        -1 => OffsetQuery::Latest,
        -2 => OffsetQuery::Earliest,
        -3 => OffsetQuery::Latest,
        t if t >= 0 => OffsetQuery::Timestamp(t),
        _ => return (errors::INVALID_REQUEST, -1, -1),
    };
    match service::list_offsets(shard, topic, partition, query, route).await {
        Ok(found) => match (timestamp, found.offset) {
            (-3, Some(end)) if end > found.log_start_offset => (errors::NONE, -1, end as i64 - 1),
            (-3, _) => (errors::NONE, -1, -1),
            (t, Some(o)) if t >= 0 => (errors::NONE, t, o as i64),
            (_, Some(o)) => (errors::NONE, -1, o as i64),
            (_, None) => (errors::NONE, -1, -1),
        },
        Err(e) => (errors::code(&e), -1, -1),
    }
}
