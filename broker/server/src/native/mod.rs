//! The native protocol's codec: a request frame in, a [`Reply`] out. Each
//! api is a thin translation: decode the flatbuffer header into domain
//! arguments, call the [`crate::service`], encode its answer or its
//! [`ServiceError`] (one way: [`error_response`]). No logic lives here.
//!
//! Routing is the service's; this codec only says how: a request on the
//! main port is forwarded to its owner ([`Route::Forward`]), one on a
//! shard-aware port is refused with NotOwner if this shard does not own it
//! ([`Route::OwnerOnly`]), so a client with stale metadata refreshes.
//!
//! The fetch answer's record bytes are never copied here: the [`Response`]
//! carries the log's read buffer and the connection writes it to the socket.

mod groups;

use std::{cell::RefCell, rc::Rc, time::Duration};

use bytes::Bytes;

use crate::error::{ErrorKind, ServiceError};
use crate::service::topics::{self, CreateTopic};
use crate::service::{self, Acks, FetchRequest, OffsetQuery, Records, Route};
use crate::shard::Shard;
use broker_protocol::generated::{
    CreateTopicRequest, FetchRequest as WireFetch, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, ReplicaFetchRequest,
};
use broker_protocol::{
    decode_frame, Acks as WireAcks, ApiKey, Body, ErrorCode, FetchPosition, FrameError,
    FrameWriter, OffsetQuery as WireQuery, ResponseError, ShardAddress, TopicDescription,
    TopicSettings, TopicSummary,
};

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The main port: any request, forwarded to its owner when needed.
    Main,
    /// This shard's shard-aware port: only this shard's partitions.
    ShardPort,
}

impl Via {
    fn route(self) -> Route {
        match self {
            Via::Main => Route::Forward,
            Via::ShardPort => Route::OwnerOnly,
        }
    }
}

/// What to do after handling a request.
pub enum Reply {
    /// Send this response.
    Send(Response),
    /// Send nothing (a successful produce with acks = none).
    Nothing,
    /// Send the response, if any, then close the connection.
    Close(Option<Response>),
}

/// A response: its frame prefix and header, then its payload.
pub struct Response {
    /// Prefix and flatbuffer header.
    pub head: Vec<u8>,
    /// Record batches that follow the header: the log's own buffer (or, for
    /// a fetch forwarded from another shard, its one copy).
    pub payload: Option<Records>,
    /// More record pieces after `payload`, in order (a replica fetch's
    /// answer: one piece per partition, each the log's own buffer).
    pub pieces: Vec<Records>,
    /// The error code it carries (None on success), for metrics.
    pub code: ErrorCode,
}

impl Response {
    /// A success answer made of `head` alone.
    pub fn head(head: Vec<u8>) -> Response {
        Response {
            head,
            payload: None,
            pieces: Vec::new(),
            code: ErrorCode::None,
        }
    }
}

thread_local! {
    /// The frame builder of this shard's thread, reused between answers.
    static WRITER: RefCell<FrameWriter> = RefCell::new(FrameWriter::new());
}

/// Runs `f` with this thread's frame builder (never across an await).
fn with_writer<T>(f: impl FnOnce(&mut FrameWriter) -> T) -> T {
    WRITER.with(|w| f(&mut w.borrow_mut()))
}

/// Builds a header-only answer with `build`; an encoding failure (only an
/// absurdly large answer) becomes an Internal error answer.
fn encode(
    api: ApiKey,
    id: u64,
    capacity: usize,
    build: impl FnOnce(
        &mut FrameWriter,
        &mut Vec<u8>,
    ) -> Result<broker_protocol::FrameHeader, FrameError>,
) -> Response {
    let mut head = Vec::with_capacity(capacity);
    match with_writer(|w| build(w, &mut head)) {
        Ok(_) => Response::head(head),
        Err(e) => error_response(api, id, &ServiceError::internal(e.to_string())),
    }
}

/// Handles one request frame (exactly its bytes) and says what to answer;
/// counts it in the shard's metrics.
pub async fn handle(shard: &Rc<Shard>, frame: Bytes, via: Via) -> Reply {
    let start = std::time::Instant::now();
    let (api, _) = raw_ids(&frame);
    let reply = dispatch(shard, frame, via).await;
    let code = match &reply {
        Reply::Send(r) | Reply::Close(Some(r)) => r.code,
        Reply::Nothing => ErrorCode::None,
        Reply::Close(None) => ErrorCode::Internal,
    };
    let m = shard.metrics();
    m.request(api, code);
    match api {
        ApiKey::Produce => m.produce_latency.observe(start.elapsed()),
        ApiKey::Fetch => m.fetch_latency.observe(start.elapsed()),
        _ => {}
    }
    reply
}

/// Decodes and serves one request frame.
async fn dispatch(shard: &Rc<Shard>, frame: Bytes, via: Via) -> Reply {
    let max = shard.config().max_frame_bytes;
    let decoded = match decode_frame(&frame, max) {
        Ok(f) => f,
        Err(e) => {
            // The prefix was good (the connection checked it): answer under
            // its api key and request id.
            let (api, id) = raw_ids(&frame);
            let reply = frame_error_response(api, id, &e);
            return if e.is_fatal() {
                Reply::Close(Some(reply))
            } else {
                Reply::Send(reply)
            };
        }
    };
    let id = decoded.header.request_id();
    let api = decoded.header.api_key();
    let route = via.route();
    match decoded.body {
        Body::ProduceRequest(r) => {
            // The payload is a slice of the frame: record bytes cross to
            // the owning shard, if they do, without a copy.
            let start = frame.len() - decoded.payload.len();
            produce(shard, id, r, frame.slice(start..), route).await
        }
        Body::FetchRequest(r) => Reply::Send(fetch(shard, id, r, route).await),
        Body::ReplicaFetchRequest(r) => Reply::Send(replica_fetch(shard, id, r).await),
        Body::ListOffsetsRequest(r) => Reply::Send(list_offsets(shard, id, r, route).await),
        // Boxed, as every rare and large path here: the future of this
        // function is allocated and moved with every request's task, so its
        // size is that of its largest branch.
        Body::CreateTopicRequest(r) => Reply::Send(Box::pin(create_topic(shard, id, r)).await),
        Body::DeleteTopicRequest(r) => {
            let name = r.name().to_owned();
            let answer = Box::pin(topics::delete(shard, &name)).await;
            Reply::Send(match answer {
                Ok(()) => encode(api, id, 64, |w, out| w.delete_topic_response(out, id)),
                Err(e) => error_response(api, id, &e),
            })
        }
        Body::ListTopicsRequest(_) => Reply::Send(list_topics(shard, id)),
        Body::MetadataRequest(r) => Reply::Send(metadata(shard, id, r)),
        Body::FindCoordinatorRequest(_)
        | Body::JoinGroupRequest(_)
        | Body::HeartbeatRequest(_)
        | Body::LeaveGroupRequest(_)
        | Body::OffsetCommitRequest(_)
        | Body::OffsetFetchRequest(_)
        | Body::DescribeGroupRequest(_)
        | Body::ListGroupsRequest(_) => {
            Reply::Send(Box::pin(groups::handle(shard, api, id, decoded.body)).await)
        }
        other => Reply::Send(error_response(
            api,
            id,
            &ServiceError::invalid(format!(
                "{} is a response; the broker serves requests",
                other.name()
            )),
        )),
    }
}

fn acks(a: WireAcks) -> Acks {
    match a {
        WireAcks::None => Acks::None,
        WireAcks::All => Acks::All,
        // decode_frame has checked the value.
        _ => Acks::Leader,
    }
}

async fn produce(
    shard: &Rc<Shard>,
    id: u64,
    r: ProduceRequest<'_>,
    payload: Bytes,
    route: Route,
) -> Reply {
    let acks = acks(r.acks());
    let answer = service::produce(shard, r.topic(), r.partition(), payload, acks, route).await;
    match (answer, acks) {
        // acks = none gets no answer, not even an error: the connection is
        // closed so the producer notices.
        (Ok(_), Acks::None) => Reply::Nothing,
        (Err(_), Acks::None) => Reply::Close(None),
        (Ok(p), Acks::Leader | Acks::All) => {
            Reply::Send(encode(ApiKey::Produce, id, 128, |w, out| {
                w.produce_response(out, id, p.base_offset as i64, p.last_offset as i64)
            }))
        }
        (Err(e), Acks::Leader | Acks::All) => Reply::Send(error_response(ApiKey::Produce, id, &e)),
    }
}

async fn fetch(shard: &Rc<Shard>, id: u64, r: WireFetch<'_>, route: Route) -> Response {
    let api = ApiKey::Fetch;
    let request = FetchRequest {
        topic: r.topic().to_owned(),
        partition: r.partition(),
        offset: r.offset(),
        max_bytes: r.max_bytes() as usize,
        max_wait: Duration::from_millis(u64::from(r.max_wait_ms())),
    };
    let fetched = match service::fetch(shard, request, route).await {
        Ok(f) => f,
        Err(e) => return error_response(api, id, &e),
    };
    let len = fetched.records.as_slice().len();
    let p = &fetched.position;
    let position = FetchPosition {
        high_watermark: p.high_watermark as i64,
        log_start_offset: p.log_start_offset as i64,
        next_offset: p.next_offset as i64,
    };
    let mut head = Vec::with_capacity(128);
    if let Err(e) = with_writer(|w| w.fetch_response(&mut head, id, &position, len)) {
        return error_response(api, id, &ServiceError::internal(e.to_string()));
    }
    Response {
        payload: (len > 0).then_some(fetched.records),
        ..Response::head(head)
    }
}

/// A follower shard's poll (see `crate::replication::serve`): the answer's
/// header, then each partition's batches from the log's buffers.
async fn replica_fetch(shard: &Rc<Shard>, id: u64, r: ReplicaFetchRequest<'_>) -> Response {
    let parts = crate::replication::serve::replica_fetch(shard, &r).await;
    let len: usize = parts.iter().map(|p| p.records.as_slice().len()).sum();
    let mut head = Vec::with_capacity(64 + 96 * parts.len());
    let encoded = {
        let results: Vec<_> = parts.iter().map(|p| p.result()).collect();
        with_writer(|w| w.replica_fetch_response(&mut head, id, &results, len))
    };
    if let Err(e) = encoded {
        return error_response(
            ApiKey::ReplicaFetch,
            id,
            &ServiceError::internal(e.to_string()),
        );
    }
    Response {
        pieces: parts
            .into_iter()
            .map(|p| p.records)
            .filter(|r| !r.as_slice().is_empty())
            .collect(),
        ..Response::head(head)
    }
}

async fn list_offsets(
    shard: &Rc<Shard>,
    id: u64,
    r: ListOffsetsRequest<'_>,
    route: Route,
) -> Response {
    let api = ApiKey::ListOffsets;
    let query = match WireQuery::from_request(&r) {
        Some(WireQuery::Earliest) => OffsetQuery::Earliest,
        Some(WireQuery::Latest) => OffsetQuery::Latest,
        Some(WireQuery::Timestamp(ts)) => OffsetQuery::Timestamp(ts),
        // decode_frame has checked the spec.
        None => return error_response(api, id, &ServiceError::invalid("unknown offset spec")),
    };
    match service::list_offsets(shard, r.topic(), r.partition(), query, route).await {
        Ok(o) => encode(api, id, 96, |w, out| {
            w.list_offsets_response(
                out,
                id,
                o.offset.map_or(-1, |o| o as i64),
                o.log_start_offset as i64,
                o.high_watermark as i64,
            )
        }),
        Err(e) => error_response(api, id, &e),
    }
}

async fn create_topic(shard: &Rc<Shard>, id: u64, r: CreateTopicRequest<'_>) -> Response {
    let api = ApiKey::CreateTopic;
    let partitions = match r.partitions() {
        -1 => None,
        n if n >= 1 => Some(n as u32),
        n => {
            return error_response(
                api,
                id,
                &ServiceError::invalid(format!(
                    "partitions = {n}: must be at least 1, or -1 for the broker's default"
                )),
            )
        }
    };
    let request = CreateTopic {
        replication_factor: None,
        min_insync_replicas: None,
        unclean_leader_election: None,
        name: r.name().to_owned(),
        partitions,
        settings: TopicSettings::from_table(r.config()),
        log_append_time: None,
    };
    match topics::create(shard, request).await {
        Ok(t) => encode(api, id, 128, |w, out| {
            w.create_topic_response(
                out,
                id,
                t.partition_count() as i32,
                &crate::metadata::wire_settings(&t.config),
            )
        }),
        Err(e) => error_response(api, id, &e),
    }
}

fn list_topics(shard: &Shard, id: u64) -> Response {
    let topics = topics::list(shard);
    let summaries: Vec<TopicSummary<'_>> = topics
        .iter()
        .map(|(name, partitions)| TopicSummary {
            name,
            partitions: *partitions as i32,
        })
        .collect();
    encode(
        ApiKey::ListTopics,
        id,
        64 + 32 * summaries.len(),
        |w, out| w.list_topics_response(out, id, &summaries),
    )
}

fn metadata(shard: &Shard, id: u64, r: MetadataRequest<'_>) -> Response {
    let host = shard.config().advertised_host();
    // A cluster member lists every broker's shards (the index of a
    // partition's shard is into this list); a broker on its own, its own.
    let cluster: Option<Vec<crate::cluster::ShardAddr>> =
        shard.image().map(|i| crate::cluster::native_shards(&i));
    let shards: Vec<ShardAddress<'_>> = match &cluster {
        Some(all) => all
            .iter()
            .map(|a| ShardAddress {
                host: &a.host,
                port: a.port,
            })
            .collect(),
        None => shard
            .endpoints()
            .iter()
            .map(|a| ShardAddress {
                host: &host,
                port: a.port(),
            })
            .collect(),
    };
    let views = topics::describe(shard, r.topics().map(|names| names.iter().collect()));
    // Each partition's index into `shards`.
    let at: std::collections::HashMap<(u32, u16), u16> = cluster
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| ((a.broker, a.shard), i as u16))
        .collect();
    let indexes: Vec<Vec<u16>> = views
        .iter()
        .map(|v| match (&v.topic, &cluster) {
            (Some(t), Some(_)) => (0..t.partition_count())
                .map(|p| {
                    t.broker_of(p)
                        .zip(t.owner(p))
                        .and_then(|key| at.get(&key).copied())
                        .unwrap_or(u16::MAX)
                })
                .collect(),
            (Some(t), None) => t.shards.clone(),
            (None, _) => Vec::new(),
        })
        .collect();
    let unknown = ResponseError::new(ErrorCode::UnknownTopic, "unknown topic");
    let descriptions: Vec<TopicDescription<'_>> = views
        .iter()
        .zip(&indexes)
        .map(|(v, index)| match &v.topic {
            Some(t) => TopicDescription {
                name: &v.name,
                error: None,
                config: crate::metadata::wire_settings(&t.config),
                partition_shards: index,
            },
            None => TopicDescription {
                name: &v.name,
                error: Some(unknown),
                config: TopicSettings::default(),
                partition_shards: &[],
            },
        })
        .collect();
    encode(ApiKey::Metadata, id, 256, |w, out| {
        w.metadata_response(out, id, &shards, &descriptions)
    })
}

/// The native wire code of a service error's kind.
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::UnknownTopic => ErrorCode::UnknownTopic,
        ErrorKind::UnknownPartition => ErrorCode::UnknownPartition,
        ErrorKind::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
        ErrorKind::NotOwner => ErrorCode::NotOwner,
        ErrorKind::CorruptBatch => ErrorCode::CorruptBatch,
        ErrorKind::BatchTooLarge => ErrorCode::BatchTooLarge,
        ErrorKind::NoSpace => ErrorCode::NoSpace,
        ErrorKind::Storage => ErrorCode::StorageError,
        ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
        // The native protocol has no code of its own for it (adding one
        // changes the wire's enum): the message says which rule.
        ErrorKind::InvalidReplicationFactor => ErrorCode::InvalidRequest,
        ErrorKind::TopicExists => ErrorCode::TopicExists,
        ErrorKind::UnknownMember => ErrorCode::UnknownMember,
        ErrorKind::IllegalGeneration => ErrorCode::IllegalGeneration,
        ErrorKind::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        ErrorKind::NotAssigned => ErrorCode::NotAssigned,
        // The native protocol has no code of its own for it.
        ErrorKind::InconsistentGroupProtocol => ErrorCode::InvalidRequest,
        ErrorKind::Internal => ErrorCode::Internal,
        // Native producers are not idempotent: only a hand-made batch with
        // a producer id gets these.
        ErrorKind::OutOfOrderSequence | ErrorKind::ProducerFenced | ErrorKind::UnknownProducer => {
            ErrorCode::InvalidRequest
        }
        ErrorKind::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
        ErrorKind::NotEnoughReplicasAfterAppend | ErrorKind::Indeterminate => {
            ErrorCode::Indeterminate
        }
    }
}

/// The error answer to request `id` of `api`: the one way every failure is
/// answered.
pub fn error_response(api: ApiKey, id: u64, e: &ServiceError) -> Response {
    let err = ResponseError {
        code: error_code(e.kind),
        message: &e.message,
        valid_range: e.valid_range.map(|(s, h)| (s as i64, h as i64)),
    };
    wire_error_response(api, id, &err)
}

/// The error answer for a frame that could not be decoded.
pub fn frame_error_response(api: ApiKey, id: u64, e: &FrameError) -> Response {
    wire_error_response(api, id, &ResponseError::new(e.error_code(), &e.to_string()))
}

/// An error answer with a native code (for errors of the connection itself:
/// a broken prefix, the connection limit).
pub fn wire_error_response(api: ApiKey, id: u64, err: &ResponseError<'_>) -> Response {
    let mut head = Vec::with_capacity(64 + err.message.len());
    with_writer(|w| {
        if w.error_response(&mut head, api, id, err).is_err() {
            // Only an absurdly long message can fail: send the code alone.
            head.clear();
            let _ = w.error_response(&mut head, api, id, &ResponseError::new(err.code, ""));
        }
    });
    Response {
        code: err.code,
        ..Response::head(head)
    }
}

/// The api key and request id of a frame whose prefix was accepted.
pub fn raw_ids(frame: &[u8]) -> (ApiKey, u64) {
    let api = frame
        .get(6..8)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let id = frame.get(8..16).map_or(0, |b| {
        let mut id = [0u8; 8];
        id.copy_from_slice(b);
        u64::from_be_bytes(id)
    });
    (ApiKey(api), id)
}
