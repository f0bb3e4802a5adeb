//! ListGroups (key 16), versions 0-4: every group of every shard (native
//! groups with protocol type "", as Kafka lists groups of no protocol),
//! v4 filtered by state (Kafka's names, compared case-insensitively as
//! Kafka does).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;

use super::describe_groups::kafka_state;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups;
use crate::shard::Shard;

/// A decoded ListGroups request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsRequest<'a> {
    /// States to list (v4+); empty: all.
    pub states: Vec<&'a str>,
}

/// Decodes a ListGroups request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<ListGroupsRequest<'a>> {
    let mut states = Vec::new();
    if v >= 4 {
        let n = d.count(flex, 1)?;
        states.reserve(n);
        for _ in 0..n {
            states.push(d.string(flex)?);
        }
    }
    d.tagged_fields(flex)?;
    Ok(ListGroupsRequest { states })
}

/// Answers a ListGroups request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let listed = groups::list(shard)
        .await
        .into_iter()
        .filter(|g| {
            asked.states.is_empty()
                || asked
                    .states
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(kafka_state(&g.state)))
        })
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if request.version >= 4 {
                l = l.with_group_state(StrBytes::from_string(kafka_state(&g.state).to_owned()));
            }
            l
        })
        .collect();
    Ok(encode_with(
        &request,
        &ListGroupsResponse::default().with_groups(listed),
    ))
}
