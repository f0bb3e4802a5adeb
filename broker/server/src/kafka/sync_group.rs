//! SyncGroup (key 14), versions 0-5: after a generation forms, its leader
//! sends every member's assignment (opaque bytes its assignor computed)
//! and each member, the leader included, is answered with its own once
//! the leader's arrived. The bytes pass through uninterpreted. A rebalance
//! that starts first answers REBALANCE_IN_PROGRESS (join again).
//!
//! v5 carries the protocol type and name, checked against the group's
//! (INCONSISTENT_GROUP_PROTOCOL on a mismatch) and echoed in the answer.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupAnswer, GroupRequest};
use crate::shard::Shard;

/// A decoded SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// The generation the member joined.
    pub generation: i32,
    /// The member.
    pub member_id: &'a str,
    /// Static membership's instance id (v3+).
    pub group_instance_id: Option<&'a str>,
    /// The group's protocol type, as the member knows it (v5+).
    pub protocol_type: Option<&'a str>,
    /// The generation's protocol, as the member knows it (v5+).
    pub protocol_name: Option<&'a str>,
    /// The leader's assignments: member id and opaque bytes.
    pub assignments: Vec<(&'a str, &'a [u8])>,
}

/// Decodes a SyncGroup request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<SyncGroupRequest<'a>> {
    let group = d.string(flex)?;
    let generation = d.i32()?;
    let member_id = d.string(flex)?;
    let group_instance_id = if v >= 3 {
        d.nullable_string(flex)?
    } else {
        None
    };
    let (protocol_type, protocol_name) = if v >= 5 {
        (d.nullable_string(flex)?, d.nullable_string(flex)?)
    } else {
        (None, None)
    };
    let n = d.count(flex, 2)?;
    let mut assignments = Vec::with_capacity(n);
    for _ in 0..n {
        let member = d.string(flex)?;
        let bytes = d.bytes(flex)?;
        d.tagged_fields(flex)?;
        assignments.push((member, bytes));
    }
    d.tagged_fields(flex)?;
    Ok(SyncGroupRequest {
        group,
        generation,
        member_id,
        group_instance_id,
        protocol_type,
        protocol_name,
        assignments,
    })
}

/// Answers a SyncGroup request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let mut response = SyncGroupResponse::default();
    if v >= 5 {
        response = response
            .with_protocol_type(asked.protocol_type.map(|s| StrBytes::from_string(s.into())))
            .with_protocol_name(asked.protocol_name.map(|s| StrBytes::from_string(s.into())));
    }
    let code = if asked.group.is_empty() {
        errors::INVALID_GROUP_ID
    } else if !protocol_matches(shard, &asked).await {
        errors::INCONSISTENT_GROUP_PROTOCOL
    } else {
        let sync = GroupRequest::Sync {
            group: asked.group.to_owned(),
            member_id: asked.member_id.to_owned(),
            generation: asked.generation,
            assignments: asked
                .assignments
                .iter()
                .map(|(m, b)| ((*m).to_owned(), b.to_vec()))
                .collect(),
        };
        match groups::call(shard, sync).await {
            Ok(GroupAnswer::Synced(bytes)) => {
                response = response.with_assignment(Bytes::from(bytes));
                errors::NONE
            }
            Ok(_) => errors::UNKNOWN_SERVER_ERROR,
            Err(e) => errors::group_code(&e),
        }
    };
    Ok(encode_with(&request, &response.with_error_code(code)))
}

/// v5: the protocol type and name the member names, if any, are the
/// group's (a described group tells both).
async fn protocol_matches(shard: &Rc<Shard>, asked: &SyncGroupRequest<'_>) -> bool {
    if asked.protocol_type.is_none() && asked.protocol_name.is_none() {
        return true;
    }
    let describe = GroupRequest::Describe {
        group: asked.group.to_owned(),
    };
    match groups::call(shard, describe).await {
        Ok(GroupAnswer::Described(d)) => {
            asked.protocol_type.is_none_or(|t| t == d.protocol_type)
                && asked.protocol_name.is_none_or(|n| n == d.protocol)
        }
        _ => true,
    }
}
