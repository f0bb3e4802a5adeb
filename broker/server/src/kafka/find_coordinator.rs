//! FindCoordinator (key 10), versions 0-4: the node that coordinates a
//! group. A group's coordinator is the shard that owns its partition of
//! `__consumer_offsets` ([`groups::coordinator_of`]); its node is that
//! shard's Kafka node (`broker_id * 1024 + shard`, or the one broker node
//! with `--kafka-advertise broker`). v4 asks for several keys at once.
//!
//! Only group coordinators exist (key type 0): a transaction coordinator
//! (key type 1) is answered INVALID_REQUEST, transactions not being
//! supported. A group request that still reaches another shard is
//! forwarded there by the service, so an answer that is stale by a
//! placement change costs a hop, not an error.

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::metadata::{leader_of, nodes};
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups;
use crate::shard::Shard;

/// A decoded FindCoordinator request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest<'a> {
    /// 0: a group; 1: a transactional id.
    pub key_type: i8,
    /// The keys (one before v4).
    pub keys: Vec<&'a str>,
}

/// Decodes a FindCoordinator request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<FindCoordinatorRequest<'a>> {
    let mut keys = Vec::new();
    if v <= 3 {
        keys.push(d.string(flex)?);
    }
    let key_type = if v >= 1 { d.i8()? } else { 0 };
    if v >= 4 {
        let n = d.count(flex, 1)?;
        keys.reserve(n);
        for _ in 0..n {
            keys.push(d.string(flex)?);
        }
    }
    d.tagged_fields(flex)?;
    Ok(FindCoordinatorRequest { key_type, keys })
}

/// (error code, message, node id, host, port) for one key.
fn find(shard: &Shard, key_type: i8, key: &str) -> (i16, Option<String>, i32, String, i32) {
    if key_type != 0 {
        let why = "only group coordinators exist: transactions are not supported";
        return (
            errors::INVALID_REQUEST,
            Some(why.into()),
            -1,
            String::new(),
            -1,
        );
    }
    if key.is_empty() {
        let why = "a group id must not be empty";
        return (
            errors::INVALID_GROUP_ID,
            Some(why.into()),
            -1,
            String::new(),
            -1,
        );
    }
    let (broker, owner) = match groups::coordinator_location(shard, key) {
        Ok((broker, owner, _)) => (broker, owner),
        Err(e) => {
            let code = errors::COORDINATOR_NOT_AVAILABLE;
            return (code, Some(e.message), -1, String::new(), -1);
        }
    };
    let id = leader_of(shard, broker, owner);
    match nodes(shard).into_iter().find(|n| n.id == id) {
        Some(n) => (errors::NONE, None, n.id, n.host, i32::from(n.port)),
        None => {
            let why = "the coordinator's node is not listening";
            (
                errors::COORDINATOR_NOT_AVAILABLE,
                Some(why.into()),
                -1,
                String::new(),
                -1,
            )
        }
    }
}

/// Answers a FindCoordinator request.
pub fn handle(shard: &Shard, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let mut response = FindCoordinatorResponse::default();
    if request.version >= 4 {
        response.coordinators = asked
            .keys
            .iter()
            .map(|key| {
                let (code, message, id, host, port) = find(shard, asked.key_type, key);
                Coordinator::default()
                    .with_key(StrBytes::from_string((*key).to_owned()))
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string))
            })
            .collect();
    } else {
        let key = asked.keys.first().copied().unwrap_or_default();
        let (code, message, id, host, port) = find(shard, asked.key_type, key);
        response = response
            .with_error_code(code)
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host))
            .with_port(port);
        if request.version >= 1 {
            response = response.with_error_message(message.map(StrBytes::from_string));
        }
    }
    Ok(encode_with(&request, &response))
}
