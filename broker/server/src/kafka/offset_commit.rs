//! OffsetCommit (key 8), versions 2-8: a group's next offsets to consume,
//! made durable in `__consumer_offsets` (the records the native groups
//! write, so each protocol sees the other's commits).
//!
//! Checked by Kafka's rules ([`crate::group::Group::check_classic_commit`]):
//! generation -1 with no member id is a simple commit, accepted while the
//! group has no members; otherwise member and generation must be current.
//! `retention_time_ms` (v2-4) is ignored: offsets are kept as long as the
//! offsets topic keeps them. The metadata string and leader epoch of each
//! partition are not stored. A partition of a topic that does not exist is
//! answered UNKNOWN_TOPIC_OR_PARTITION and not committed; the others are
//! committed together, so they share one error code.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupRequest};
use crate::shard::Shard;

/// A decoded OffsetCommit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// The member's generation (-1: a simple commit).
    pub generation: i32,
    /// The member ("" for a simple commit).
    pub member_id: &'a str,
    /// Static membership's instance id (v7+).
    pub group_instance_id: Option<&'a str>,
    /// Topics, each with (partition, offset) pairs.
    pub topics: Vec<(&'a str, Vec<(i32, i64)>)>,
}

/// Decodes an OffsetCommit request's body.
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<OffsetCommitRequest<'a>> {
    let group = d.string(flex)?;
    let generation = d.i32()?;
    let member_id = d.string(flex)?;
    let group_instance_id = if v >= 7 {
        d.nullable_string(flex)?
    } else {
        None
    };
    if v <= 4 {
        d.i64()?; // retention_time_ms: ignored
    }
    let n = d.count(flex, 2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        // partition, offset, metadata's length at least.
        let m = d.count(flex, 13)?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let index = d.i32()?;
            let offset = d.i64()?;
            if v >= 6 {
                d.i32()?; // committed_leader_epoch
            }
            d.nullable_string(flex)?; // committed_metadata
            d.tagged_fields(flex)?;
            partitions.push((index, offset));
        }
        d.tagged_fields(flex)?;
        topics.push((name, partitions));
    }
    d.tagged_fields(flex)?;
    Ok(OffsetCommitRequest {
        group,
        generation,
        member_id,
        group_instance_id,
        topics,
    })
}

/// Answers an OffsetCommit request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let exists = |topic: &str, p: i32| {
        shard
            .topic(topic)
            .is_some_and(|t| u32::try_from(p).is_ok_and(|p| p < t.partition_count()))
    };
    let offsets: Vec<_> = asked
        .topics
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&(p, o)| (*t, p, o)))
        .filter(|&(t, p, _)| exists(t, p))
        .map(|(t, p, o)| ((t.to_owned(), p as u32), o))
        .collect();
    let code = if asked.group.is_empty() {
        errors::INVALID_GROUP_ID
    } else if asked.group_instance_id.is_some() {
        errors::UNSUPPORTED_VERSION
    } else {
        let commit = GroupRequest::KafkaCommit {
            group: asked.group.to_owned(),
            member_id: asked.member_id.to_owned(),
            generation: asked.generation,
            offsets,
        };
        match groups::call(shard, commit).await {
            Ok(_) => errors::NONE,
            Err(e) => errors::group_code(&e),
        }
    };
    let topics = asked
        .topics
        .iter()
        .map(|(name, ps)| {
            let partitions = ps
                .iter()
                .map(|&(p, _)| {
                    let c = if exists(name, p) {
                        code
                    } else {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(c)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string((*name).to_owned())))
                .with_partitions(partitions)
        })
        .collect();
    Ok(encode_with(
        &request,
        &OffsetCommitResponse::default().with_topics(topics),
    ))
}
