//! JoinGroup (key 11), versions 0-9: a member of a classic group joins
//! (or rejoins) with its protocol type and its protocols (assignor names
//! with opaque metadata). Answered once the generation forms
//! ([`crate::group`]): with the generation, the protocol chosen and the
//! leader, and for the leader every member's metadata, from which it
//! computes the assignment that its SyncGroup brings.
//!
//! - v4+: a new member (empty member id) is first answered
//!   MEMBER_ID_REQUIRED with a fresh id, and joins again with it (KIP-394).
//! - v5+ static membership (`group_instance_id`) is not supported: such a
//!   join is answered UNSUPPORTED_VERSION (KIP-345's answer of a broker
//!   without it) and logged.
//! - The session timeout must be within the broker's
//!   `group_{min,max}_session_timeout_ms` (else INVALID_SESSION_TIMEOUT);
//!   v0 has no rebalance timeout: the session timeout serves.

use std::{rc::Rc, time::Duration};

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::group::ClassicJoin;
use crate::service::groups::{self, GroupAnswer, GroupRequest, KafkaJoin};
use crate::shard::Shard;

/// A decoded JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// The member's session timeout.
    pub session_timeout_ms: i32,
    /// How long a rebalance waits for it (v1+; the session timeout before).
    pub rebalance_timeout_ms: i32,
    /// Its id; empty for a new member.
    pub member_id: &'a str,
    /// Static membership's instance id (v5+).
    pub group_instance_id: Option<&'a str>,
    /// "consumer" for Kafka's consumers.
    pub protocol_type: &'a str,
    /// Its protocols: name and metadata, by preference.
    pub protocols: Vec<(&'a str, &'a [u8])>,
}

/// Decodes a JoinGroup request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<JoinGroupRequest<'a>> {
    let group = d.string(flex)?;
    let session_timeout_ms = d.i32()?;
    let rebalance_timeout_ms = if v >= 1 { d.i32()? } else { session_timeout_ms };
    let member_id = d.string(flex)?;
    let group_instance_id = if v >= 5 {
        d.nullable_string(flex)?
    } else {
        None
    };
    let protocol_type = d.string(flex)?;
    // Each protocol: a name's length and a metadata length at least.
    let n = d.count(flex, 2)?;
    let mut protocols = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        let metadata = d.bytes(flex)?;
        d.tagged_fields(flex)?;
        protocols.push((name, metadata));
    }
    if v >= 8 {
        d.nullable_string(flex)?; // reason
    }
    d.tagged_fields(flex)?;
    Ok(JoinGroupRequest {
        group,
        session_timeout_ms,
        rebalance_timeout_ms,
        member_id,
        group_instance_id,
        protocol_type,
        protocols,
    })
}

/// Answers a JoinGroup request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let failed = |code: i16, member_id: &str| {
        let mut r = JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(StrBytes::from_string(member_id.to_owned()));
        if v < 7 {
            r = r.with_protocol_name(Some(StrBytes::default()));
        }
        r
    };
    let config = shard.config();
    let allowed = config.group_min_session_timeout_ms..=config.group_max_session_timeout_ms;
    let session = u32::try_from(asked.session_timeout_ms).ok();
    let rebalance = u32::try_from(asked.rebalance_timeout_ms).ok();
    let response = if asked.group.is_empty() {
        failed(errors::INVALID_GROUP_ID, asked.member_id)
    } else if asked.group_instance_id.is_some() {
        tracing::warn!(
            group = asked.group,
            "refusing a Kafka JoinGroup with a group.instance.id: static membership is not supported"
        );
        failed(errors::UNSUPPORTED_VERSION, asked.member_id)
    } else if !session.is_some_and(|s| allowed.contains(&s)) || rebalance.is_none() {
        failed(errors::INVALID_SESSION_TIMEOUT, asked.member_id)
    } else {
        let join = KafkaJoin {
            group: asked.group.to_owned(),
            member_id: asked.member_id.to_owned(),
            require_member_id: v >= 4,
            join: ClassicJoin {
                protocol_type: asked.protocol_type.to_owned(),
                protocols: asked
                    .protocols
                    .iter()
                    .map(|(n, m)| ((*n).to_owned(), m.to_vec()))
                    .collect(),
                session_timeout: Duration::from_millis(u64::from(session.unwrap_or(0))),
                rebalance_timeout: Duration::from_millis(u64::from(rebalance.unwrap_or(0))),
                client: (
                    request.client_id.unwrap_or_default().to_owned(),
                    String::new(),
                ),
            },
        };
        match groups::call(shard, GroupRequest::KafkaJoin(join)).await {
            Ok(GroupAnswer::MemberIdRequired(id)) => failed(errors::MEMBER_ID_REQUIRED, &id),
            Ok(GroupAnswer::KafkaJoined(j)) => {
                let members = j
                    .members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_metadata(Bytes::from(metadata))
                    })
                    .collect();
                let mut r = JoinGroupResponse::default()
                    .with_generation_id(j.generation)
                    .with_protocol_name(Some(StrBytes::from_string(j.protocol)))
                    .with_leader(StrBytes::from_string(j.leader))
                    .with_member_id(StrBytes::from_string(j.member_id))
                    .with_members(members);
                if v >= 7 {
                    r = r.with_protocol_type(Some(StrBytes::from_string(j.protocol_type)));
                }
                r
            }
            Ok(_) => failed(errors::UNKNOWN_SERVER_ERROR, asked.member_id),
            Err(e) => failed(errors::group_code(&e), asked.member_id),
        }
    };
    Ok(encode_with(&request, &response))
}
