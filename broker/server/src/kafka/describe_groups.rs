//! DescribeGroups (key 15), versions 0-5: each group's state, protocol
//! and members. A classic group's members carry their metadata and
//! assignment (opaque bytes, as their clients sent them); a native group
//! is shown with its state and member ids, protocol type "" and no bytes
//! (its assignment is the coordinator's, not a Kafka assignor's). States
//! are Kafka's names: Empty, PreparingRebalance, CompletingRebalance,
//! Stable; a group never seen is Dead, as Kafka answers.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupAnswer, GroupDescription, GroupRequest};
use crate::shard::Shard;

/// A decoded DescribeGroups request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsRequest<'a> {
    /// The groups.
    pub groups: Vec<&'a str>,
}

/// Decodes a DescribeGroups request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<DescribeGroupsRequest<'a>> {
    let n = d.count(flex, 1)?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        groups.push(d.string(flex)?);
    }
    if v >= 3 {
        d.bool()?; // include_authorized_operations
    }
    d.tagged_fields(flex)?;
    Ok(DescribeGroupsRequest { groups })
}

/// Kafka's name of a group's state.
pub fn kafka_state(state: &str) -> &str {
    match state {
        "Rebalancing" => "PreparingRebalance",
        other => other,
    }
}

fn described(name: &str, d: GroupDescription) -> DescribedGroup {
    let s = StrBytes::from_string;
    let never_seen = d.members.is_empty() && d.committed.is_empty() && d.generation == 0;
    let members = if d.classic_members.is_empty() {
        d.members
            .into_iter()
            .map(|(id, _, _)| DescribedGroupMember::default().with_member_id(s(id)))
            .collect()
    } else {
        d.classic_members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(s(m.member_id))
                    .with_client_id(s(m.client.0))
                    .with_client_host(s(m.client.1))
                    .with_member_metadata(Bytes::from(m.metadata))
                    .with_member_assignment(Bytes::from(m.assignment))
            })
            .collect()
    };
    let state = if never_seen {
        "Dead"
    } else {
        kafka_state(d.state)
    };
    DescribedGroup::default()
        .with_error_code(errors::NONE)
        .with_group_id(GroupId(s(name.to_owned())))
        .with_group_state(s(state.to_owned()))
        .with_protocol_type(s(d.protocol_type))
        .with_protocol_data(s(d.protocol))
        .with_members(members)
        .with_authorized_operations(i32::MIN)
}

/// Answers a DescribeGroups request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let mut out = Vec::with_capacity(asked.groups.len());
    for name in asked.groups {
        let describe = GroupRequest::Describe {
            group: name.to_owned(),
        };
        let code = match groups::call(shard, describe).await {
            Ok(GroupAnswer::Described(d)) => {
                out.push(described(name, d));
                continue;
            }
            Ok(_) => errors::UNKNOWN_SERVER_ERROR,
            Err(e) if name.is_empty() => {
                let _ = e;
                errors::INVALID_GROUP_ID
            }
            Err(e) => errors::group_code(&e),
        };
        out.push(
            DescribedGroup::default()
                .with_error_code(code)
                .with_group_id(GroupId(StrBytes::from_string(name.to_owned())))
                .with_authorized_operations(i32::MIN),
        );
    }
    Ok(encode_with(
        &request,
        &DescribeGroupsResponse::default().with_groups(out),
    ))
}
