//! The Apache Kafka wire protocol's codec: a request frame in, a [`Reply`]
//! out, in the same thin style as [`crate::native`]: decode the request into
//! domain arguments, call the [`crate::service`], encode its answer. No
//! logic of the broker lives here, only Kafka's shapes.
//!
//! Requests are decoded by this module's own bounded decoder
//! ([`wire::Decoder`]): no count or length field of a request drives an
//! allocation, and no input panics. Answers are encoded by hand where they
//! are hot or carry record bytes (Produce, Fetch: the fetch answer is small
//! header pieces interleaved with the log's own buffers, written to the
//! socket without a copy), and otherwise with the `kafka-protocol` crate's
//! generated response encoders, which know every field of every version.
//!
//! Routing: every shard is its own Kafka node (Metadata advertises each
//! shard's own port), so a client that groups requests by node reaches the
//! owning core directly. A request that still names partitions of other
//! shards (stale metadata, the Kafka main port, `--kafka-advertise broker`)
//! is split per owner and merged by the service ([`Route::Forward`]),
//! Redpanda's model: it is answered, never refused.
//!
//! Node ids: `broker_id * 1024 + shard` (see
//! [`crate::config::ServerConfig::kafka_node_id`]), stable for a broker and
//! shard and unique across the brokers of a cluster.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod connection;
pub mod describe_groups;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leader_epoch;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod producer_id;
pub mod sync_group;
pub mod wire;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::metrics::KafkaOutcome;
use crate::service::{Records, Route};
use crate::shard::Shard;
use wire::{DecodeError, Decoder, Encoder};

/// Api keys this codec answers.
pub mod api {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// ApiVersions.
    pub const API_VERSIONS: i16 = 18;
    /// OffsetCommit.
    pub const OFFSET_COMMIT: i16 = 8;
    /// OffsetFetch.
    pub const OFFSET_FETCH: i16 = 9;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
    /// JoinGroup.
    pub const JOIN_GROUP: i16 = 11;
    /// Heartbeat.
    pub const HEARTBEAT: i16 = 12;
    /// LeaveGroup.
    pub const LEAVE_GROUP: i16 = 13;
    /// SyncGroup.
    pub const SYNC_GROUP: i16 = 14;
    /// DescribeGroups.
    pub const DESCRIBE_GROUPS: i16 = 15;
    /// ListGroups.
    pub const LIST_GROUPS: i16 = 16;
    /// InitProducerId.
    pub const INIT_PRODUCER_ID: i16 = 22;
    /// CreateTopics.
    pub const CREATE_TOPICS: i16 = 19;
    /// DeleteTopics.
    pub const DELETE_TOPICS: i16 = 20;
    /// OffsetForLeaderEpoch.
    pub const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
    /// DescribeConfigs.
    pub const DESCRIBE_CONFIGS: i16 = 32;
}

/// One api and the versions of it this broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    /// The api key.
    pub key: i16,
    /// The oldest version served.
    pub min: i16,
    /// The newest version served.
    pub max: i16,
}

/// Every api served, with its versions: what ApiVersions advertises, and
/// what a request is checked against before its body is decoded.
pub const APIS: &[ApiRange] = &[
    ApiRange {
        key: api::PRODUCE,
        min: 3,
        max: 10,
    },
    ApiRange {
        key: api::FETCH,
        min: 4,
        max: 12,
    },
    ApiRange {
        key: api::LIST_OFFSETS,
        min: 1,
        max: 7,
    },
    ApiRange {
        key: api::METADATA,
        min: 1,
        max: 12,
    },
    ApiRange {
        key: api::API_VERSIONS,
        min: 0,
        max: 4,
    },
    // The classic consumer-group protocol.
    ApiRange {
        key: api::OFFSET_COMMIT,
        min: 2,
        max: 8,
    },
    ApiRange {
        key: api::OFFSET_FETCH,
        min: 1,
        max: 7,
    },
    ApiRange {
        key: api::FIND_COORDINATOR,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: api::JOIN_GROUP,
        min: 0,
        max: 9,
    },
    ApiRange {
        key: api::HEARTBEAT,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: api::LEAVE_GROUP,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: api::SYNC_GROUP,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: api::DESCRIBE_GROUPS,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: api::LIST_GROUPS,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: api::INIT_PRODUCER_ID,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: api::CREATE_TOPICS,
        min: 2,
        max: 7,
    },
    ApiRange {
        key: api::DELETE_TOPICS,
        min: 1,
        max: 6,
    },
    ApiRange {
        key: api::OFFSET_FOR_LEADER_EPOCH,
        min: 2,
        max: 4,
    },
    ApiRange {
        key: api::DESCRIBE_CONFIGS,
        min: 1,
        max: 4,
    },
];

/// The versions served of `key`, if it is served at all.
pub fn served(key: i16) -> Option<ApiRange> {
    APIS.iter().copied().find(|a| a.key == key)
}

/// The request header version of `key` at `version` (1, or 2 for a
/// flexible version), from Kafka's message definitions as the
/// `kafka-protocol` crate generates them.
fn request_header_version(key: i16, version: i16) -> i16 {
    use kafka_protocol::messages::*;
    match key {
        api::PRODUCE => ProduceRequest::header_version(version),
        api::FETCH => FetchRequest::header_version(version),
        api::LIST_OFFSETS => ListOffsetsRequest::header_version(version),
        api::METADATA => MetadataRequest::header_version(version),
        api::API_VERSIONS => ApiVersionsRequest::header_version(version),
        api::OFFSET_COMMIT => OffsetCommitRequest::header_version(version),
        api::OFFSET_FETCH => OffsetFetchRequest::header_version(version),
        api::FIND_COORDINATOR => FindCoordinatorRequest::header_version(version),
        api::JOIN_GROUP => JoinGroupRequest::header_version(version),
        api::HEARTBEAT => HeartbeatRequest::header_version(version),
        api::LEAVE_GROUP => LeaveGroupRequest::header_version(version),
        api::SYNC_GROUP => SyncGroupRequest::header_version(version),
        api::DESCRIBE_GROUPS => DescribeGroupsRequest::header_version(version),
        api::LIST_GROUPS => ListGroupsRequest::header_version(version),
        api::INIT_PRODUCER_ID => InitProducerIdRequest::header_version(version),
        api::CREATE_TOPICS => CreateTopicsRequest::header_version(version),
        api::DELETE_TOPICS => DeleteTopicsRequest::header_version(version),
        api::OFFSET_FOR_LEADER_EPOCH => OffsetForLeaderEpochRequest::header_version(version),
        api::DESCRIBE_CONFIGS => DescribeConfigsRequest::header_version(version),
        _ => 1,
    }
}

/// A decoded request header and its body, still undecoded.
pub struct Request<'a> {
    /// The api key.
    pub api_key: i16,
    /// The api version.
    pub version: i16,
    /// Echoed in the answer.
    pub correlation_id: i32,
    /// The client's id, if it sent one.
    pub client_id: Option<&'a str>,
    /// Whether this version is flexible (KIP-482: compact types, tagged
    /// fields).
    pub flexible: bool,
    /// The body, positioned after the header.
    pub body: Decoder<'a>,
    /// The whole request (after its size prefix), for zero-copy slices.
    pub frame: &'a Bytes,
}

impl<'a> Request<'a> {
    /// The request's bytes at `range` (a range a decoder returned), as a
    /// slice of the frame: no copy.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        self.frame.slice(range)
    }
}

/// What to do after handling a request.
pub enum Reply {
    /// Send this answer (in request order).
    Send(Response),
    /// Send nothing (a produce with acks = 0), but keep the order.
    Nothing,
    /// Close the connection (Kafka's answer to a request it cannot parse,
    /// an unknown api, or an unsupported version of one).
    Close,
}

/// An answer: its size prefix and header, its body, and for a fetch the
/// record pieces each followed by more encoded bytes.
pub struct Response {
    /// Size prefix (patched by [`Response::finish`]), header, body up to
    /// the first records.
    pub head: Vec<u8>,
    /// Record bytes written straight from the log's buffers, each followed
    /// by the encoded bytes that come after it.
    pub pieces: Vec<(Records, Vec<u8>)>,
}

impl Response {
    /// Starts an answer to `request`: room for the size prefix, the
    /// correlation id, and a flexible header's tagged fields.
    pub fn start(request: &Request<'_>, header_version: i16) -> Encoder {
        let mut e = Encoder::new(Vec::with_capacity(256));
        e.i32(0);
        e.i32(request.correlation_id);
        e.tagged_fields(header_version >= 1);
        e
    }

    /// Finishes an answer: patches its size prefix over everything.
    pub fn finish(head: Encoder, pieces: Vec<(Records, Vec<u8>)>) -> Response {
        let mut head = head.buf;
        let total = head.len() - 4
            + pieces
                .iter()
                .map(|(r, after)| r.as_slice().len() + after.len())
                .sum::<usize>();
        head[..4].copy_from_slice(&(total as i32).to_be_bytes());
        Response { head, pieces }
    }
}

/// Encodes `body` with the `kafka-protocol` crate as the answer to
/// `request`. Its encoder refuses a field set that the version does not
/// have: that is a bug here, logged, and the connection is closed.
pub fn encode_with<R: Encodable + HeaderVersion>(request: &Request<'_>, body: &R) -> Reply {
    let mut head = Response::start(request, R::header_version(request.version));
    match body.encode(&mut head.buf, request.version) {
        Ok(()) => Reply::Send(Response::finish(head, Vec::new())),
        Err(e) => {
            tracing::error!(api = request.api_key, version = request.version, error = %e,
                "a Kafka answer could not be encoded; closing the connection");
            Reply::Close
        }
    }
}

/// A request's body could not be decoded: Kafka closes the connection.
fn malformed(api_key: i16, version: i16, e: &DecodeError) -> Reply {
    tracing::warn!(api = api_key, version, error = %e, "closing a Kafka connection: malformed request");
    Reply::Close
}

/// A request's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The api key.
    pub api_key: i16,
    /// The api version.
    pub version: i16,
    /// Echoed in the answer.
    pub correlation_id: i32,
    /// The client's id.
    pub client_id: Option<&'a str>,
    /// Whether the version is flexible.
    pub flexible: bool,
}

/// Why a request's header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short or malformed.
    Malformed(DecodeError),
    /// An api this broker does not serve.
    UnknownApi(i16),
    /// A version of a served api outside its range.
    UnsupportedVersion {
        /// The api.
        api_key: i16,
        /// The version asked.
        version: i16,
        /// Echoed in an ApiVersions answer.
        correlation_id: i32,
    },
}

/// Decodes a request's header (checked against [`APIS`]), leaving `d` at
/// its body.
pub fn decode_header<'a>(d: &mut Decoder<'a>) -> Result<Header<'a>, HeaderError> {
    let api_key = d.i16().map_err(HeaderError::Malformed)?;
    let version = d.i16().map_err(HeaderError::Malformed)?;
    let correlation_id = d.i32().map_err(HeaderError::Malformed)?;
    let Some(range) = served(api_key) else {
        return Err(HeaderError::UnknownApi(api_key));
    };
    if version < range.min || version > range.max {
        return Err(HeaderError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let flexible = request_header_version(api_key, version) >= 2;
    let client_id = d.nullable_string(false).map_err(HeaderError::Malformed)?;
    d.tagged_fields(flexible).map_err(HeaderError::Malformed)?;
    Ok(Header {
        api_key,
        version,
        correlation_id,
        client_id,
        flexible,
    })
}

/// Decodes a whole request (after its size prefix), header and body,
/// without serving it: the fuzzers' and the differential tests' entry
/// point. Every api's decoder is here.
pub fn check_request(frame: &[u8]) -> Result<(), String> {
    let mut d = Decoder::new(frame);
    let h = decode_header(&mut d).map_err(|e| format!("{e:?}"))?;
    let (v, f) = (h.version, h.flexible);
    let body = match h.api_key {
        api::API_VERSIONS => Ok(()),
        api::METADATA => metadata::decode(&mut d, v, f).map(drop),
        api::PRODUCE => produce::decode(&mut d, v, f).map(drop),
        api::FETCH => fetch::decode(&mut d, v, f).map(drop),
        api::LIST_OFFSETS => list_offsets::decode(&mut d, v, f).map(drop),
        api::OFFSET_COMMIT => offset_commit::decode(&mut d, v, f).map(drop),
        api::OFFSET_FETCH => offset_fetch::decode(&mut d, v, f).map(drop),
        api::FIND_COORDINATOR => find_coordinator::decode(&mut d, v, f).map(drop),
        api::JOIN_GROUP => join_group::decode(&mut d, v, f).map(drop),
        api::HEARTBEAT => heartbeat::decode(&mut d, v, f).map(drop),
        api::LEAVE_GROUP => leave_group::decode(&mut d, v, f).map(drop),
        api::SYNC_GROUP => sync_group::decode(&mut d, v, f).map(drop),
        api::DESCRIBE_GROUPS => describe_groups::decode(&mut d, v, f).map(drop),
        api::LIST_GROUPS => list_groups::decode(&mut d, v, f).map(drop),
        api::INIT_PRODUCER_ID => producer_id::decode(&mut d, v, f).map(drop),
        api::CREATE_TOPICS => admin::decode(&mut d, v, f).map(drop),
        api::DELETE_TOPICS => admin::decode_delete(&mut d, v, f).map(drop),
        api::OFFSET_FOR_LEADER_EPOCH => leader_epoch::decode(&mut d, v, f).map(drop),
        api::DESCRIBE_CONFIGS => configs::decode(&mut d, v, f).map(drop),
        other => return Err(format!("api {other} has no decoder")),
    };
    body.map_err(|e| e.to_string())
}

/// Handles one request (the bytes after its size prefix) and says what to
/// answer.
pub async fn handle(shard: &Rc<Shard>, frame: Bytes) -> Reply {
    let start = std::time::Instant::now();
    let mut d = Decoder::new(&frame);
    let Header {
        api_key,
        version,
        correlation_id,
        client_id,
        flexible,
    } = match decode_header(&mut d) {
        Ok(h) => h,
        Err(HeaderError::Malformed(e)) => {
            tracing::warn!(error = %e, "closing a Kafka connection: malformed request header");
            shard.metrics().kafka_request(-1, KafkaOutcome::Closed);
            return Reply::Close;
        }
        Err(HeaderError::UnknownApi(api_key)) => {
            shard.metrics().kafka_request(api_key, KafkaOutcome::Closed);
            tracing::warn!(
                api = api_key,
                "closing a Kafka connection: api key not supported"
            );
            return Reply::Close;
        }
        Err(HeaderError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        }) => {
            let outcome = if api_key == api::API_VERSIONS {
                KafkaOutcome::Answered
            } else {
                KafkaOutcome::Closed
            };
            shard.metrics().kafka_request(api_key, outcome);
            if api_key == api::API_VERSIONS {
                // KIP-511: an ApiVersions of a newer version than ours gets
                // a v0 answer saying UNSUPPORTED_VERSION, with our ranges.
                return Reply::Send(api_versions::unsupported(correlation_id));
            }
            tracing::warn!(
                api = api_key,
                version,
                "closing a Kafka connection: api version not supported"
            );
            return Reply::Close;
        }
    };
    let request = Request {
        api_key,
        version,
        correlation_id,
        client_id,
        flexible,
        body: d,
        frame: &frame,
    };
    let reply = dispatch(shard, request).await;
    let m = shard.metrics();
    m.kafka_request(
        api_key,
        match &reply {
            Reply::Send(_) => KafkaOutcome::Answered,
            Reply::Nothing => KafkaOutcome::NoAnswer,
            Reply::Close => KafkaOutcome::Closed,
        },
    );
    match api_key {
        api::PRODUCE => m.produce_latency.observe(start.elapsed()),
        api::FETCH => m.fetch_latency.observe(start.elapsed()),
        _ => {}
    }
    reply
}

/// Serves one request whose header was decoded.
async fn dispatch(shard: &Rc<Shard>, request: Request<'_>) -> Reply {
    // Kafka's clients group requests by node; whatever still reaches a
    // non-owner is forwarded, never refused (see the module's doc), from
    // the main port or a shard's own.
    let route = Route::Forward;
    let (key, version) = (request.api_key, request.version);
    let result = match key {
        api::API_VERSIONS => api_versions::handle(request),
        api::METADATA => Box::pin(metadata::handle(shard, request)).await,
        api::PRODUCE => produce::handle(shard, request, route).await,
        api::FETCH => fetch::handle(shard, request, route).await,
        api::LIST_OFFSETS => Box::pin(list_offsets::handle(shard, request, route)).await,
        // Group requests go to the group's coordinator shard, forwarded by
        // the service from whichever shard they reached.
        api::FIND_COORDINATOR => find_coordinator::handle(shard, request),
        api::JOIN_GROUP => Box::pin(join_group::handle(shard, request)).await,
        api::SYNC_GROUP => Box::pin(sync_group::handle(shard, request)).await,
        api::HEARTBEAT => Box::pin(heartbeat::handle(shard, request)).await,
        api::LEAVE_GROUP => Box::pin(leave_group::handle(shard, request)).await,
        api::OFFSET_COMMIT => Box::pin(offset_commit::handle(shard, request)).await,
        api::OFFSET_FETCH => Box::pin(offset_fetch::handle(shard, request)).await,
        api::DESCRIBE_GROUPS => Box::pin(describe_groups::handle(shard, request)).await,
        api::LIST_GROUPS => Box::pin(list_groups::handle(shard, request)).await,
        api::INIT_PRODUCER_ID => producer_id::handle(shard, request),
        api::CREATE_TOPICS => Box::pin(admin::create_topics(shard, request)).await,
        api::DELETE_TOPICS => Box::pin(admin::delete_topics(shard, request)).await,
        api::OFFSET_FOR_LEADER_EPOCH => Box::pin(leader_epoch::handle(shard, request)).await,
        api::DESCRIBE_CONFIGS => configs::handle(shard, request),
        _ => return Reply::Close,
    };
    match result {
        Ok(reply) => reply,
        Err(e) => malformed(key, version, &e),
    }
}
