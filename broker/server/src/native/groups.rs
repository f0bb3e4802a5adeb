//! The native codec of the group apis: FindCoordinator, JoinGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroup and
//! ListGroups, each decoded into a [`GroupRequest`] for the service and its
//! answer encoded back.

use std::{collections::BTreeMap, rc::Rc};

use super::{encode, error_response, Response};
use crate::error::ServiceError;
use crate::group::TopicPartition;
use crate::service::groups::{self, GroupAnswer, GroupRequest};
use crate::shard::Shard;
use broker_protocol::{ApiKey, Body, GroupSummary, MemberSummary, OffsetEntry, TopicAssignment};

/// Serves one group api request.
pub async fn handle(shard: &Rc<Shard>, api: ApiKey, id: u64, body: Body<'_>) -> Response {
    let request = match body {
        Body::FindCoordinatorRequest(r) => {
            return match groups::find_coordinator(shard, r.group()) {
                Ok(c) => encode(api, id, 96, |w, out| {
                    w.find_coordinator_response(out, id, c.shard, &c.host, c.port)
                }),
                Err(e) => error_response(api, id, &e),
            }
        }
        Body::ListGroupsRequest(_) => {
            let rows = groups::list(shard).await;
            let summaries: Vec<GroupSummary<'_>> = rows
                .iter()
                .map(|g| GroupSummary {
                    group: &g.group,
                    state: &g.state,
                    members: g.members,
                    generation: g.generation,
                })
                .collect();
            return encode(api, id, 64 + 48 * summaries.len(), |w, out| {
                w.list_groups_response(out, id, &summaries)
            });
        }
        Body::JoinGroupRequest(r) => GroupRequest::Join {
            group: r.group().to_owned(),
            member_id: r.member_id().unwrap_or("").to_owned(),
            topics: r
                .topics()
                .map(|t| t.iter().map(str::to_owned).collect())
                .unwrap_or_default(),
            session_timeout_ms: r.session_timeout_ms(),
        },
        Body::HeartbeatRequest(r) => GroupRequest::Heartbeat {
            group: r.group().to_owned(),
            member_id: r.member_id().to_owned(),
            generation: r.generation(),
        },
        Body::LeaveGroupRequest(r) => GroupRequest::Leave {
            group: r.group().to_owned(),
            member_id: r.member_id().to_owned(),
        },
        Body::OffsetCommitRequest(r) => GroupRequest::Commit {
            group: r.group().to_owned(),
            member_id: r.member_id().to_owned(),
            generation: r.generation(),
            offsets: r
                .offsets()
                .map(|o| {
                    o.iter()
                        .map(|e| {
                            (
                                (e.topic().unwrap_or("").to_owned(), e.partition()),
                                e.offset(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        Body::OffsetFetchRequest(r) => GroupRequest::FetchOffsets {
            group: r.group().to_owned(),
            partitions: r.partitions().map(|list| {
                list.iter()
                    .flat_map(|t| {
                        let topic = t.topic().unwrap_or("").to_owned();
                        t.partitions()
                            .map(|ps| ps.iter().map(|p| (topic.clone(), p)).collect::<Vec<_>>())
                            .unwrap_or_default()
                    })
                    .collect()
            }),
        },
        Body::DescribeGroupRequest(r) => GroupRequest::Describe {
            group: r.group().to_owned(),
        },
        other => {
            return error_response(
                api,
                id,
                &ServiceError::internal(format!("{} is not a group api", other.name())),
            )
        }
    };
    let answer = match groups::call(shard, request).await {
        Ok(a) => a,
        Err(e) => return error_response(api, id, &e),
    };
    match answer {
        GroupAnswer::Joined(j) => {
            let by_topic = by_topic(&j.partitions);
            let assignment = assignments(&by_topic);
            encode(api, id, 128, |w, out| {
                w.join_group_response(out, id, j.generation, &j.member_id, &assignment, j.members)
            })
        }
        GroupAnswer::Done => encode(api, id, 64, |w, out| match api {
            ApiKey::Heartbeat => w.heartbeat_response(out, id),
            ApiKey::LeaveGroup => w.leave_group_response(out, id),
            _ => w.offset_commit_response(out, id),
        }),
        GroupAnswer::Offsets(offsets) => {
            let entries = entries(&offsets);
            encode(api, id, 64 + 32 * entries.len(), |w, out| {
                w.offset_fetch_response(out, id, &entries)
            })
        }
        GroupAnswer::Described(d) => {
            let grouped: Vec<MemberRow<'_>> = d
                .members
                .iter()
                .map(|(id, topics, assigned)| {
                    (
                        id.as_str(),
                        topics.iter().map(String::as_str).collect(),
                        by_topic(assigned),
                    )
                })
                .collect();
            let member_assignments: Vec<Vec<TopicAssignment<'_>>> =
                grouped.iter().map(|(_, _, a)| assignments(a)).collect();
            let members: Vec<MemberSummary<'_>> = grouped
                .iter()
                .zip(&member_assignments)
                .map(|((id, topics, _), a)| MemberSummary {
                    member_id: id,
                    topics,
                    assignment: a,
                })
                .collect();
            let offsets = entries(&d.committed);
            encode(api, id, 256, |w, out| {
                w.describe_group_response(out, id, d.state, d.generation, &members, &offsets)
            })
        }
        // Answers of the Kafka codec's requests only.
        GroupAnswer::KafkaJoined(_) | GroupAnswer::MemberIdRequired(_) | GroupAnswer::Synced(_) => {
            error_response(
                api,
                id,
                &ServiceError::internal("a Kafka protocol answer to a native request"),
            )
        }
    }
}

/// A member of a DescribeGroup answer: id, topics, partitions by topic.
type MemberRow<'a> = (&'a str, Vec<&'a str>, BTreeMap<&'a str, Vec<u32>>);

fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<u32>> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    by_topic
}

fn assignments<'a>(by_topic: &'a BTreeMap<&'a str, Vec<u32>>) -> Vec<TopicAssignment<'a>> {
    by_topic
        .iter()
        .map(|(t, ps)| TopicAssignment {
            topic: t,
            partitions: ps,
        })
        .collect()
}

fn entries(offsets: &[(TopicPartition, i64)]) -> Vec<OffsetEntry<'_>> {
    offsets
        .iter()
        .map(|((topic, partition), offset)| OffsetEntry {
            topic,
            partition: *partition,
            offset: *offset,
        })
        .collect()
}
