//! Frame builders of the consumer-group APIs (api keys 20-39): the same
//! [`FrameWriter`], one method per request and response, plain Rust values
//! in.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::encode::FrameWriter;
use super::error::FrameError;
use super::frame::FrameHeader;
use super::generated::{
    DescribeGroupRequest, DescribeGroupRequestArgs, DescribeGroupResponse,
    DescribeGroupResponseArgs, FindCoordinatorRequest, FindCoordinatorRequestArgs,
    FindCoordinatorResponse, FindCoordinatorResponseArgs, GroupListing, GroupListingArgs,
    GroupMember, GroupMemberArgs, HeartbeatRequest, HeartbeatRequestArgs, HeartbeatResponse,
    HeartbeatResponseArgs, JoinGroupRequest, JoinGroupRequestArgs, JoinGroupResponse,
    JoinGroupResponseArgs, LeaveGroupRequest, LeaveGroupRequestArgs, LeaveGroupResponse,
    LeaveGroupResponseArgs, ListGroupsRequest, ListGroupsRequestArgs, ListGroupsResponse,
    ListGroupsResponseArgs, OffsetCommitRequest, OffsetCommitRequestArgs, OffsetCommitResponse,
    OffsetCommitResponseArgs, OffsetFetchRequest, OffsetFetchRequestArgs, OffsetFetchResponse,
    OffsetFetchResponseArgs, PartitionOffset, PartitionOffsetArgs, TopicPartitions,
    TopicPartitionsArgs,
};

/// Some partitions of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicAssignment<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Partition numbers, ascending.
    pub partitions: &'a [u32],
}

/// A committed (or to-be-committed) offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffsetEntry<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The next offset to consume; -1 = none committed.
    pub offset: i64,
}

/// One group of a ListGroups answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupSummary<'a> {
    /// The group.
    pub group: &'a str,
    /// "Empty", "Rebalancing" or "Stable".
    pub state: &'a str,
    /// Members now.
    pub members: u32,
    /// Current generation.
    pub generation: i32,
}

/// One member of a DescribeGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberSummary<'a> {
    /// The member's id.
    pub member_id: &'a str,
    /// Its subscribed topics.
    pub topics: &'a [&'a str],
    /// Its partitions in the current generation.
    pub assignment: &'a [TopicAssignment<'a>],
}

fn strings<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[&str],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<&'f str>>> {
    let items: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    fbb.create_vector(&items)
}

fn assignments<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[TopicAssignment<'_>],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<TopicPartitions<'f>>>> {
    let items: Vec<_> = items
        .iter()
        .map(|a| {
            let topic = Some(fbb.create_shared_string(a.topic));
            let partitions = Some(fbb.create_vector(a.partitions));
            TopicPartitions::create(fbb, &TopicPartitionsArgs { topic, partitions })
        })
        .collect();
    fbb.create_vector(&items)
}

fn offsets<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[OffsetEntry<'_>],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<PartitionOffset<'f>>>> {
    let items: Vec<_> = items
        .iter()
        .map(|o| {
            let topic = Some(fbb.create_shared_string(o.topic));
            PartitionOffset::create(
                fbb,
                &PartitionOffsetArgs {
                    topic,
                    partition: o.partition,
                    offset: o.offset,
                },
            )
        })
        .collect();
    fbb.create_vector(&items)
}

impl FrameWriter {
    /// FindCoordinator request.
    pub fn find_coordinator_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            FindCoordinatorRequest::create(fbb, &FindCoordinatorRequestArgs { group })
        })
    }

    /// FindCoordinator answer: the shard and its address.
    pub fn find_coordinator_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        shard: u16,
        host: &str,
        port: u16,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let host = Some(fbb.create_string(host));
            FindCoordinatorResponse::create(
                fbb,
                &FindCoordinatorResponseArgs {
                    error: None,
                    shard,
                    host,
                    port,
                },
            )
        })
    }

    /// JoinGroup request; `member_id` empty for a new member.
    pub fn join_group_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
        member_id: &str,
        topics: &[&str],
        session_timeout_ms: u32,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            let member_id = Some(fbb.create_string(member_id));
            let topics = Some(strings(fbb, topics));
            JoinGroupRequest::create(
                fbb,
                &JoinGroupRequestArgs {
                    group,
                    member_id,
                    topics,
                    session_timeout_ms,
                },
            )
        })
    }

    /// JoinGroup answer: the generation and this member's assignment.
    pub fn join_group_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        generation: i32,
        member_id: &str,
        assignment: &[TopicAssignment<'_>],
        members: u32,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let member_id = Some(fbb.create_string(member_id));
            let assignment = Some(assignments(fbb, assignment));
            JoinGroupResponse::create(
                fbb,
                &JoinGroupResponseArgs {
                    error: None,
                    generation,
                    member_id,
                    assignment,
                    members,
                },
            )
        })
    }

    /// Heartbeat request.
    pub fn heartbeat_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            let member_id = Some(fbb.create_string(member_id));
            HeartbeatRequest::create(
                fbb,
                &HeartbeatRequestArgs {
                    group,
                    member_id,
                    generation,
                },
            )
        })
    }

    /// Heartbeat success answer.
    pub fn heartbeat_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            HeartbeatResponse::create(fbb, &HeartbeatResponseArgs { error: None })
        })
    }

    /// LeaveGroup request.
    pub fn leave_group_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
        member_id: &str,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            let member_id = Some(fbb.create_string(member_id));
            LeaveGroupRequest::create(fbb, &LeaveGroupRequestArgs { group, member_id })
        })
    }

    /// LeaveGroup success answer.
    pub fn leave_group_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            LeaveGroupResponse::create(fbb, &LeaveGroupResponseArgs { error: None })
        })
    }

    /// OffsetCommit request.
    pub fn offset_commit_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
        member_id: &str,
        generation: i32,
        entries: &[OffsetEntry<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            let member_id = Some(fbb.create_string(member_id));
            let offsets = Some(offsets(fbb, entries));
            OffsetCommitRequest::create(
                fbb,
                &OffsetCommitRequestArgs {
                    group,
                    member_id,
                    generation,
                    offsets,
                },
            )
        })
    }

    /// OffsetCommit success answer: the offsets are durable.
    pub fn offset_commit_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            OffsetCommitResponse::create(fbb, &OffsetCommitResponseArgs { error: None })
        })
    }

    /// OffsetFetch request; no partitions = every committed one.
    pub fn offset_fetch_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
        partitions: &[TopicAssignment<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            let partitions = (!partitions.is_empty()).then(|| assignments(fbb, partitions));
            OffsetFetchRequest::create(fbb, &OffsetFetchRequestArgs { group, partitions })
        })
    }

    /// OffsetFetch answer.
    pub fn offset_fetch_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        entries: &[OffsetEntry<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let offsets = Some(offsets(fbb, entries));
            OffsetFetchResponse::create(
                fbb,
                &OffsetFetchResponseArgs {
                    error: None,
                    offsets,
                },
            )
        })
    }

    /// ListGroups request.
    pub fn list_groups_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            ListGroupsRequest::create(fbb, &ListGroupsRequestArgs {})
        })
    }

    /// ListGroups answer.
    pub fn list_groups_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        groups: &[GroupSummary<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let items: Vec<_> = groups
                .iter()
                .map(|g| {
                    let group = Some(fbb.create_string(g.group));
                    let state = Some(fbb.create_shared_string(g.state));
                    GroupListing::create(
                        fbb,
                        &GroupListingArgs {
                            group,
                            state,
                            members: g.members,
                            generation: g.generation,
                        },
                    )
                })
                .collect();
            let groups = Some(fbb.create_vector(&items));
            ListGroupsResponse::create(
                fbb,
                &ListGroupsResponseArgs {
                    error: None,
                    groups,
                },
            )
        })
    }

    /// DescribeGroup request.
    pub fn describe_group_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        group: &str,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let group = Some(fbb.create_string(group));
            DescribeGroupRequest::create(fbb, &DescribeGroupRequestArgs { group })
        })
    }

    /// DescribeGroup answer.
    pub fn describe_group_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        state: &str,
        generation: i32,
        members: &[MemberSummary<'_>],
        entries: &[OffsetEntry<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let state = Some(fbb.create_string(state));
            let items: Vec<_> = members
                .iter()
                .map(|m| {
                    let member_id = Some(fbb.create_string(m.member_id));
                    let topics = Some(strings(fbb, m.topics));
                    let assignment = Some(assignments(fbb, m.assignment));
                    GroupMember::create(
                        fbb,
                        &GroupMemberArgs {
                            member_id,
                            topics,
                            assignment,
                        },
                    )
                })
                .collect();
            let members = Some(fbb.create_vector(&items));
            let offsets = Some(offsets(fbb, entries));
            DescribeGroupResponse::create(
                fbb,
                &DescribeGroupResponseArgs {
                    error: None,
                    state,
                    generation,
                    members,
                    offsets,
                },
            )
        })
    }
}
