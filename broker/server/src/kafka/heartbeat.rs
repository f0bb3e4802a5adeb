//! Heartbeat (key 12), versions 0-4: a member of a classic group is alive.
//! Answered REBALANCE_IN_PROGRESS while the group waits for rejoins (the
//! member must join again), ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID when it
//! was fenced; the coordinator's state machine decides
//! ([`crate::group::Group::heartbeat`]).

use std::rc::Rc;

use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupRequest};
use crate::shard::Shard;

/// A decoded Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// The member's generation.
    pub generation: i32,
    /// The member.
    pub member_id: &'a str,
    /// Static membership's instance id (v3+).
    pub group_instance_id: Option<&'a str>,
}

/// Decodes a Heartbeat request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<HeartbeatRequest<'a>> {
    let group = d.string(flex)?;
    let generation = d.i32()?;
    let member_id = d.string(flex)?;
    let group_instance_id = if v >= 3 {
        d.nullable_string(flex)?
    } else {
        None
    };
    d.tagged_fields(flex)?;
    Ok(HeartbeatRequest {
        group,
        generation,
        member_id,
        group_instance_id,
    })
}

/// Answers a Heartbeat request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let code = match groups::call(
        shard,
        GroupRequest::Heartbeat {
            group: asked.group.to_owned(),
            member_id: asked.member_id.to_owned(),
            generation: asked.generation,
        },
    )
    .await
    {
        Ok(_) => errors::NONE,
        Err(e) => errors::group_code(&e),
    };
    Ok(encode_with(
        &request,
        &HeartbeatResponse::default().with_error_code(code),
    ))
}
