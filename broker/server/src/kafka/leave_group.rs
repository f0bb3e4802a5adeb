//! LeaveGroup (key 13), versions 0-5: members leave a classic group, their
//! partitions move at once (a rebalance starts). v3+ names a batch of
//! members, each answered with its own error code; members named only by a
//! static `group_instance_id` are unknown (static membership is not
//! supported).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupRequest};
use crate::shard::Shard;

/// A decoded LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// The members leaving: member id and static instance id (one member,
    /// without an instance id, before v3).
    pub members: Vec<(&'a str, Option<&'a str>)>,
}

/// Decodes a LeaveGroup request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<LeaveGroupRequest<'a>> {
    let group = d.string(flex)?;
    let mut members = Vec::new();
    if v <= 2 {
        members.push((d.string(flex)?, None));
    } else {
        let n = d.count(flex, 2)?;
        members.reserve(n);
        for _ in 0..n {
            let id = d.string(flex)?;
            let instance = d.nullable_string(flex)?;
            if v >= 5 {
                d.nullable_string(flex)?; // reason
            }
            d.tagged_fields(flex)?;
            members.push((id, instance));
        }
    }
    d.tagged_fields(flex)?;
    Ok(LeaveGroupRequest { group, members })
}

/// Answers a LeaveGroup request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let mut codes = Vec::with_capacity(asked.members.len());
    for (member_id, _) in &asked.members {
        let code = if asked.group.is_empty() {
            errors::INVALID_GROUP_ID
        } else {
            let leave = GroupRequest::Leave {
                group: asked.group.to_owned(),
                member_id: (*member_id).to_owned(),
            };
            match groups::call(shard, leave).await {
                Ok(_) => errors::NONE,
                Err(e) => errors::group_code(&e),
            }
        };
        codes.push(code);
    }
    let mut response = LeaveGroupResponse::default();
    if v >= 3 {
        response.members = asked
            .members
            .iter()
            .zip(&codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string((*id).to_owned()))
                    .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.to_owned())))
                    .with_error_code(*code)
            })
            .collect();
        // The top-level code is for the request as a whole.
        if asked.group.is_empty() {
            response.error_code = errors::INVALID_GROUP_ID;
        }
    } else {
        response.error_code = codes.first().copied().unwrap_or(errors::NONE);
    }
    Ok(encode_with(&request, &response))
}
