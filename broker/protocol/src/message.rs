//! Which table each frame carries and how a whole frame becomes a verified,
//! typed header: the api key and the response flag of the prefix select the
//! root table, the flatbuffers verifier checks it with bounded options, and
//! requests are checked against the protocol's limits and known enum values.
//!
//! Invariants:
//! - No header is read before the verifier accepted it as its api's table, so
//!   the generated accessors (which unwrap) never fail on peer bytes.
//! - Decoding never allocates on success: the result borrows the frame.
//! - A payload only follows the headers that carry one (ProduceRequest,
//!   FetchResponse, ReplicaFetchResponse); elsewhere it is refused.

use flatbuffers::{Follow, Verifiable, VerifierOptions};

use super::error::FrameError;
use super::frame::{split_frame, FrameHeader};
use super::generated::{
    ApiKey, CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeGroupRequest, DescribeGroupResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, ListTopicsRequest,
    ListTopicsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    ReplicaFetchRequest, ReplicaFetchResponse,
};
use super::limits::{
    MAX_GROUP_NAME_BYTES, MAX_PARTITIONS_PER_REPLICA_FETCH, MAX_PARTITIONS_PER_REQUEST,
    MAX_PARTITIONS_PER_TOPIC, MAX_TOPICS_PER_REQUEST, MAX_TOPIC_NAME_BYTES,
    VERIFIER_MAX_APPARENT_BYTES, VERIFIER_MAX_DEPTH, VERIFIER_MAX_TABLES,
};

/// The verifier's bounds (see [`super::limits`]) for every header.
const VERIFIER_OPTIONS: VerifierOptions = VerifierOptions {
    max_depth: VERIFIER_MAX_DEPTH,
    max_tables: VERIFIER_MAX_TABLES,
    max_apparent_size: VERIFIER_MAX_APPARENT_BYTES,
    ignore_missing_null_terminator: false,
};

/// A table that is the header of a frame: which api and direction it
/// belongs to, and what its frame may carry.
pub trait Message<'a>: Follow<'a, Inner = Self> + Verifiable + Copy + 'a {
    /// The api key its frames carry.
    const API_KEY: ApiKey;
    /// Whether it is a response (flag bit 0 set).
    const IS_RESPONSE: bool;
    /// Whether record batches may follow it as payload.
    const HAS_PAYLOAD: bool;
    /// The table's name, for errors.
    const NAME: &'static str;

    /// Checks what the verifier cannot: the protocol's limits and that enum
    /// fields hold known values. Enum values are checked in requests only:
    /// a response may carry values a newer peer defined. A response is
    /// checked only against the limits that bound its receiver's work (the
    /// partition count of a ReplicaFetchResponse).
    fn validate(&self) -> Result<(), FrameError>;
}

/// A decoded frame: its prefix, its verified header and its payload, all
/// borrowed from the frame's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a, B = Body<'a>> {
    /// The fixed prefix.
    pub header: FrameHeader,
    /// The verified flatbuffer header: a [`Body`] from [`decode_frame`], the
    /// expected table from [`decode_as`].
    pub body: B,
    /// The bytes after the header: record batches for a produce request or a
    /// fetch response, empty for everything else.
    pub payload: &'a [u8],
}

/// Decodes one whole frame (exactly its bytes: `&buf[..header.frame_bytes()]`
/// after [`super::decode_prefix`]) into its verified header, whatever api it
/// belongs to. The server's entry point: dispatch on [`Body`].
///
/// Errors after a good prefix (unknown api, invalid header, payload where
/// none belongs, broken limit) are not fatal: answer them with an error
/// response under the frame's api key and request id.
pub fn decode_frame(frame: &[u8], max_frame: usize) -> Result<Frame<'_>, FrameError> {
    let (header, body, payload) = split_frame(frame, max_frame)?;
    let body = Body::decode(&header, body, payload.len())?;
    Ok(Frame {
        header,
        body,
        payload,
    })
}

/// Decodes one whole frame that must hold an `M`: a client reading the
/// response to its request (`decode_as::<FetchResponse>(..)`). A frame of
/// another api or direction is [`FrameError::UnexpectedMessage`].
pub fn decode_as<'a, M: Message<'a>>(
    frame: &'a [u8],
    max_frame: usize,
) -> Result<Frame<'a, M>, FrameError> {
    let (header, body, payload) = split_frame(frame, max_frame)?;
    if header.api_key() != M::API_KEY || header.is_response() != M::IS_RESPONSE {
        return Err(FrameError::UnexpectedMessage {
            expected: M::NAME,
            api_key: header.api_key(),
            response: header.is_response(),
        });
    }
    let body = verify::<M>(body, payload.len())?;
    Ok(Frame {
        header,
        body,
        payload,
    })
}

/// Verifies `body` as an `M` and validates it.
fn verify<'a, M: Message<'a>>(body: &'a [u8], payload_len: usize) -> Result<M, FrameError> {
    if !M::HAS_PAYLOAD && payload_len != 0 {
        return Err(FrameError::UnexpectedPayload {
            table: M::NAME,
            payload_len,
        });
    }
    let message = flatbuffers::root_with_opts::<M>(&VERIFIER_OPTIONS, body).map_err(|source| {
        FrameError::InvalidHeader {
            table: M::NAME,
            source,
        }
    })?;
    message.validate()?;
    Ok(message)
}

/// Declares every header table once: the [`Body`] enum, its decoder and the
/// [`Message`] impls all come from this list, so they cannot disagree.
macro_rules! messages {
    ($(
        $table:ident: $api:ident, response: $response:literal, payload: $payload:literal,
            validate: $validate:path;
    )*) => {
        /// The verified header of a frame, by api and direction.
        #[derive(Debug, Clone, Copy)]
        pub enum Body<'a> {
            $(
                #[doc = concat!("A `", stringify!($table), "` (api ", stringify!($api), ").")]
                $table($table<'a>),
            )*
        }

        impl<'a> Body<'a> {
            /// Verifies `body` as the table the prefix names.
            fn decode(
                header: &FrameHeader,
                body: &'a [u8],
                payload_len: usize,
            ) -> Result<Body<'a>, FrameError> {
                match (header.api_key(), header.is_response()) {
                    $(
                        (ApiKey::$api, $response) => {
                            Ok(Body::$table(verify::<$table>(body, payload_len)?))
                        }
                    )*
                    (api_key, _) => Err(FrameError::UnknownApi { api_key: api_key.0 }),
                }
            }

            /// The table's name, e.g. "FetchRequest".
            pub fn name(&self) -> &'static str {
                match self {
                    $( Body::$table(_) => stringify!($table), )*
                }
            }
        }

        $(
            impl<'a> Message<'a> for $table<'a> {
                const API_KEY: ApiKey = ApiKey::$api;
                const IS_RESPONSE: bool = $response;
                const HAS_PAYLOAD: bool = $payload;
                const NAME: &'static str = stringify!($table);

                fn validate(&self) -> Result<(), FrameError> {
                    $validate(self)
                }
            }
        )*
    };
}

messages! {
    CreateTopicRequest: CreateTopic, response: false, payload: false, validate: validate_create_topic;
    CreateTopicResponse: CreateTopic, response: true, payload: false, validate: nothing;
    DeleteTopicRequest: DeleteTopic, response: false, payload: false, validate: validate_delete_topic;
    DeleteTopicResponse: DeleteTopic, response: true, payload: false, validate: nothing;
    ListTopicsRequest: ListTopics, response: false, payload: false, validate: nothing;
    ListTopicsResponse: ListTopics, response: true, payload: false, validate: nothing;
    MetadataRequest: Metadata, response: false, payload: false, validate: validate_metadata;
    MetadataResponse: Metadata, response: true, payload: false, validate: nothing;
    ProduceRequest: Produce, response: false, payload: true, validate: validate_produce;
    ProduceResponse: Produce, response: true, payload: false, validate: nothing;
    FetchRequest: Fetch, response: false, payload: false, validate: validate_fetch;
    FetchResponse: Fetch, response: true, payload: true, validate: nothing;
    ListOffsetsRequest: ListOffsets, response: false, payload: false, validate: validate_list_offsets;
    ListOffsetsResponse: ListOffsets, response: true, payload: false, validate: nothing;
    FindCoordinatorRequest: FindCoordinator, response: false, payload: false, validate: validate_find_coordinator;
    FindCoordinatorResponse: FindCoordinator, response: true, payload: false, validate: nothing;
    JoinGroupRequest: JoinGroup, response: false, payload: false, validate: validate_join_group;
    JoinGroupResponse: JoinGroup, response: true, payload: false, validate: nothing;
    HeartbeatRequest: Heartbeat, response: false, payload: false, validate: validate_heartbeat;
    HeartbeatResponse: Heartbeat, response: true, payload: false, validate: nothing;
    LeaveGroupRequest: LeaveGroup, response: false, payload: false, validate: validate_leave_group;
    LeaveGroupResponse: LeaveGroup, response: true, payload: false, validate: nothing;
    OffsetCommitRequest: OffsetCommit, response: false, payload: false, validate: validate_offset_commit;
    OffsetCommitResponse: OffsetCommit, response: true, payload: false, validate: nothing;
    OffsetFetchRequest: OffsetFetch, response: false, payload: false, validate: validate_offset_fetch;
    OffsetFetchResponse: OffsetFetch, response: true, payload: false, validate: nothing;
    ListGroupsRequest: ListGroups, response: false, payload: false, validate: nothing;
    ListGroupsResponse: ListGroups, response: true, payload: false, validate: nothing;
    DescribeGroupRequest: DescribeGroup, response: false, payload: false, validate: validate_describe_group;
    DescribeGroupResponse: DescribeGroup, response: true, payload: false, validate: nothing;
    ReplicaFetchRequest: ReplicaFetch, response: false, payload: false, validate: validate_replica_fetch;
    ReplicaFetchResponse: ReplicaFetch, response: true, payload: true, validate: validate_replica_fetch_response;
}

fn validate_replica_fetch(r: &ReplicaFetchRequest<'_>) -> Result<(), FrameError> {
    let Some(partitions) = r.partitions() else {
        return Ok(());
    };
    at_most(
        "ReplicaFetchRequest.partitions",
        partitions.len() as u64,
        MAX_PARTITIONS_PER_REPLICA_FETCH,
    )?;
    partitions
        .iter()
        .try_for_each(|p| topic_name("ReplicaFetchRequest.partitions[].topic", p.topic()))
}

/// The one response check: a follower walks every result (and slices the
/// payload by them), so their count is bounded as a request's is. Error
/// values are not checked: a newer leader may send one this code does not
/// know, which the follower treats as a failure of that partition only.
fn validate_replica_fetch_response(r: &ReplicaFetchResponse<'_>) -> Result<(), FrameError> {
    at_most(
        "ReplicaFetchResponse.partitions",
        r.partitions().map_or(0, |p| p.len()) as u64,
        MAX_PARTITIONS_PER_REPLICA_FETCH,
    )
}

fn group_name(field: &'static str, name: &str) -> Result<(), FrameError> {
    at_most(field, name.len() as u64, MAX_GROUP_NAME_BYTES)
}

fn validate_find_coordinator(r: &FindCoordinatorRequest<'_>) -> Result<(), FrameError> {
    group_name("FindCoordinatorRequest.group", r.group())
}

fn validate_join_group(r: &JoinGroupRequest<'_>) -> Result<(), FrameError> {
    group_name("JoinGroupRequest.group", r.group())?;
    group_name("JoinGroupRequest.member_id", r.member_id().unwrap_or(""))?;
    let Some(topics) = r.topics() else {
        return Ok(());
    };
    at_most(
        "JoinGroupRequest.topics",
        topics.len() as u64,
        MAX_TOPICS_PER_REQUEST,
    )?;
    topics
        .iter()
        .try_for_each(|t| topic_name("JoinGroupRequest.topics[]", t))
}

fn validate_heartbeat(r: &HeartbeatRequest<'_>) -> Result<(), FrameError> {
    group_name("HeartbeatRequest.group", r.group())?;
    group_name("HeartbeatRequest.member_id", r.member_id())
}

fn validate_leave_group(r: &LeaveGroupRequest<'_>) -> Result<(), FrameError> {
    group_name("LeaveGroupRequest.group", r.group())?;
    group_name("LeaveGroupRequest.member_id", r.member_id())
}

fn validate_offset_commit(r: &OffsetCommitRequest<'_>) -> Result<(), FrameError> {
    group_name("OffsetCommitRequest.group", r.group())?;
    group_name("OffsetCommitRequest.member_id", r.member_id())?;
    let Some(offsets) = r.offsets() else {
        return Ok(());
    };
    at_most(
        "OffsetCommitRequest.offsets",
        offsets.len() as u64,
        MAX_PARTITIONS_PER_REQUEST,
    )?;
    offsets.iter().try_for_each(|o| {
        topic_name(
            "OffsetCommitRequest.offsets[].topic",
            o.topic().unwrap_or(""),
        )
    })
}

fn validate_offset_fetch(r: &OffsetFetchRequest<'_>) -> Result<(), FrameError> {
    group_name("OffsetFetchRequest.group", r.group())?;
    let Some(partitions) = r.partitions() else {
        return Ok(());
    };
    at_most(
        "OffsetFetchRequest.partitions",
        partitions.len() as u64,
        MAX_TOPICS_PER_REQUEST,
    )?;
    partitions.iter().try_for_each(|t| {
        topic_name(
            "OffsetFetchRequest.partitions[].topic",
            t.topic().unwrap_or(""),
        )?;
        at_most(
            "OffsetFetchRequest.partitions[].partitions",
            t.partitions().map_or(0, |p| p.len()) as u64,
            MAX_PARTITIONS_PER_TOPIC,
        )
    })
}

fn validate_describe_group(r: &DescribeGroupRequest<'_>) -> Result<(), FrameError> {
    group_name("DescribeGroupRequest.group", r.group())
}

fn nothing<T>(_: &T) -> Result<(), FrameError> {
    Ok(())
}

fn validate_create_topic(r: &CreateTopicRequest<'_>) -> Result<(), FrameError> {
    topic_name("CreateTopicRequest.name", r.name())?;
    // Negative counts (-1: the broker's default) are the server's to judge.
    at_most(
        "CreateTopicRequest.partitions",
        r.partitions().max(0) as u64,
        MAX_PARTITIONS_PER_TOPIC,
    )
}

fn validate_delete_topic(r: &DeleteTopicRequest<'_>) -> Result<(), FrameError> {
    topic_name("DeleteTopicRequest.name", r.name())
}

fn validate_metadata(r: &MetadataRequest<'_>) -> Result<(), FrameError> {
    let Some(topics) = r.topics() else {
        return Ok(());
    };
    at_most(
        "MetadataRequest.topics",
        topics.len() as u64,
        MAX_TOPICS_PER_REQUEST,
    )?;
    topics
        .iter()
        .try_for_each(|name| topic_name("MetadataRequest.topics[]", name))
}

fn validate_produce(r: &ProduceRequest<'_>) -> Result<(), FrameError> {
    topic_name("ProduceRequest.topic", r.topic())?;
    known(
        "ProduceRequest.acks",
        r.acks().variant_name(),
        u64::from(r.acks().0),
    )
}

fn validate_fetch(r: &FetchRequest<'_>) -> Result<(), FrameError> {
    topic_name("FetchRequest.topic", r.topic())
}

fn validate_list_offsets(r: &ListOffsetsRequest<'_>) -> Result<(), FrameError> {
    topic_name("ListOffsetsRequest.topic", r.topic())?;
    known(
        "ListOffsetsRequest.spec",
        r.spec().variant_name(),
        u64::from(r.spec().0),
    )
}

fn topic_name(field: &'static str, name: &str) -> Result<(), FrameError> {
    at_most(field, name.len() as u64, MAX_TOPIC_NAME_BYTES)
}

fn at_most(field: &'static str, value: u64, max: usize) -> Result<(), FrameError> {
    if value > max as u64 {
        return Err(FrameError::LimitExceeded {
            field,
            value,
            max: max as u64,
        });
    }
    Ok(())
}

/// `name` is the generated `variant_name()` of an enum field: None for a
/// value the schema does not define.
fn known(field: &'static str, name: Option<&str>, value: u64) -> Result<(), FrameError> {
    match name {
        Some(_) => Ok(()),
        None => Err(FrameError::UnknownEnumValue { field, value }),
    }
}
