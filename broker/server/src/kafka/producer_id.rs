//! InitProducerId (key 22), versions 0-4: a producer id for an idempotent
//! producer (kafka-python 3 and librdkafka with `enable.idempotence`).
//!
//! Ids are unique across shards and restarts: each start of the broker
//! reserves a block of 2^32 ids in the data directory (`producer-ids`) and
//! shard `s` of `n` gives out the block's ids `s, s + n, s + 2n, ...`. A
//! producer that asks again with its id and epoch (v3+, KIP-360: after an
//! error it cannot resolve with its sequences) keeps its id with the next
//! epoch, which fences its older instance on every partition; the epoch
//! starts over with a new id when it would overflow. Transactions are not
//! supported: a transactional id gets INVALID_REQUEST.

use std::rc::Rc;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{Reply, Request, Response};
use crate::shard::Shard;

/// A decoded InitProducerId request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdRequest<'a> {
    /// Set by transactional producers (not supported).
    pub transactional_id: Option<&'a str>,
    /// The transaction timeout (unused).
    pub transaction_timeout_ms: i32,
    /// v3+: the producer's current id, or -1.
    pub producer_id: i64,
    /// v3+: its current epoch, or -1.
    pub producer_epoch: i16,
}

/// Decodes an InitProducerId request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<InitProducerIdRequest<'a>> {
    let transactional_id = d.nullable_string(flex)?;
    let transaction_timeout_ms = d.i32()?;
    let (producer_id, producer_epoch) = if v >= 3 {
        (d.i64()?, d.i16()?)
    } else {
        (-1, -1)
    };
    d.tagged_fields(flex)?;
    Ok(InitProducerIdRequest {
        transactional_id,
        transaction_timeout_ms,
        producer_id,
        producer_epoch,
    })
}

/// Answers an InitProducerId request.
pub fn handle(shard: &Rc<Shard>, mut r: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut r.body, r.version, r.flexible)?;
    let (code, id, epoch) = if asked.transactional_id.is_some() {
        (errors::INVALID_REQUEST, -1, -1)
    } else if asked.producer_id >= 0 && (0..i16::MAX - 1).contains(&asked.producer_epoch) {
        (errors::NONE, asked.producer_id, asked.producer_epoch + 1)
    } else {
        match shard.new_producer_id() {
            Some(id) => (errors::NONE, id, 0),
            // No block this start (its file could not be written) or the
            // block is used up: retriable, a restart reserves a new one.
            None => (errors::COORDINATOR_NOT_AVAILABLE, -1, -1),
        }
    };
    let mut e = Response::start(&r, if r.flexible { 1 } else { 0 });
    e.i32(0); // throttle_time_ms
    e.i16(code);
    e.i64(id);
    e.i16(epoch);
    e.tagged_fields(r.flexible);
    Ok(Reply::Send(Response::finish(e, Vec::new())))
}
