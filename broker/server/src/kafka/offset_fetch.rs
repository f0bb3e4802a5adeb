//! OffsetFetch (key 9), versions 1-7: a group's committed offsets, from
//! the same records as the native groups' (`__consumer_offsets`). A
//! partition with nothing committed is answered -1; v2+ with null topics
//! asks for every partition the group committed. Metadata is not stored
//! (answered empty); leader epochs are not tracked (-1). `require_stable`
//! (v7) needs nothing: there are no transactions, so no pending commits.

use std::{collections::BTreeMap, rc::Rc};

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::groups::{self, GroupAnswer, GroupRequest};
use crate::shard::Shard;

/// A decoded OffsetFetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest<'a> {
    /// The group.
    pub group: &'a str,
    /// Topics and their partitions; None (v2+): everything committed.
    pub topics: Option<Vec<(&'a str, Vec<i32>)>>,
}

/// Decodes an OffsetFetch request's body.
pub fn decode<'a>(d: &mut Decoder<'a>, v: i16, flex: bool) -> DecodeResult<OffsetFetchRequest<'a>> {
    let group = d.string(flex)?;
    let topics = match d.array_len(flex, 2)? {
        None => None,
        Some(n) => {
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = d.string(flex)?;
                let m = d.count(flex, 4)?;
                let mut partitions = Vec::with_capacity(m);
                for _ in 0..m {
                    partitions.push(d.i32()?);
                }
                d.tagged_fields(flex)?;
                topics.push((name, partitions));
            }
            Some(topics)
        }
    };
    if v >= 7 {
        d.bool()?; // require_stable
    }
    d.tagged_fields(flex)?;
    Ok(OffsetFetchRequest { group, topics })
}

/// Answers an OffsetFetch request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let v = request.version;
    let asked = decode(&mut request.body, v, request.flexible)?;
    let wanted = asked.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .filter_map(move |p| u32::try_from(*p).ok().map(|p| ((*t).to_owned(), p)))
            })
            .collect::<Vec<_>>()
    });
    let (code, found) = if asked.group.is_empty() {
        (errors::INVALID_GROUP_ID, Vec::new())
    } else if wanted.as_ref().is_some_and(Vec::is_empty) {
        (errors::NONE, Vec::new())
    } else {
        let fetch = GroupRequest::FetchOffsets {
            group: asked.group.to_owned(),
            partitions: wanted,
        };
        match groups::call(shard, fetch).await {
            Ok(GroupAnswer::Offsets(o)) => (errors::NONE, o),
            Ok(_) => (errors::UNKNOWN_SERVER_ERROR, Vec::new()),
            Err(e) => (errors::group_code(&e), Vec::new()),
        }
    };
    let committed: BTreeMap<(&str, u32), i64> = found
        .iter()
        .map(|((t, p), o)| ((t.as_str(), *p), *o))
        .collect();
    let layout: Vec<(String, Vec<i32>)> = match &asked.topics {
        Some(topics) => topics
            .iter()
            .map(|(t, ps)| ((*t).to_owned(), ps.clone()))
            .collect(),
        None => {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in committed.keys() {
                by_topic.entry(t).or_default().push(*p as i32);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| (t.to_owned(), ps))
                .collect()
        }
    };
    // Before v2 there is no top-level error code: each partition says it.
    let partition_code = if v < 2 { code } else { errors::NONE };
    let topics = layout
        .iter()
        .map(|(name, ps)| {
            let partitions = ps
                .iter()
                .map(|&p| {
                    let offset = u32::try_from(p)
                        .ok()
                        .and_then(|p| committed.get(&(name.as_str(), p)))
                        .copied()
                        .unwrap_or(-1);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(StrBytes::default()))
                        .with_error_code(partition_code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())))
                .with_partitions(partitions)
        })
        .collect();
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if v >= 2 {
        response = response.with_error_code(code);
    }
    Ok(encode_with(&request, &response))
}
