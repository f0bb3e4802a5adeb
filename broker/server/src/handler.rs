//! Request handling: decode a frame, route it, serve it, build the answer.
//!
//! Routing: a data-path request (produce, fetch, list offsets) is served
//! where its partition lives. Arriving on the main port for a partition of
//! another shard, it is forwarded over the mesh and the owner's response
//! frame comes back (a copy of the payload: `ReadResult` is `!Send`). On a
//! shard-aware port it is refused with NotOwner, so a client with stale
//! metadata learns to refresh. Topic changes go to the topic's controller
//! shard; listing and metadata are answered from the local table.
//!
//! The fetch answer's record bytes are never copied here: the [`Response`]
//! carries the log's read buffer and the connection writes it to the socket.

use std::{rc::Rc, sync::atomic::Ordering::Relaxed, time::Duration};

use bytes::Bytes;

use crate::groups;
use crate::metadata::{self, TopicConfig, TopicMeta};
use crate::partition::Partition;
use crate::shard::{CreateError, DeleteError, ForwardedReply, ShardState};
use broker_format as batch;
use broker_log::{LogError, ReadBytes};
use broker_protocol::generated::{
    CreateTopicRequest, DeleteTopicRequest, FetchRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest,
};
use broker_protocol::{
    decode_frame, Acks, ApiKey, Body, ErrorCode, FetchPosition, FrameWriter, OffsetQuery,
    ResponseError, ShardAddress, TopicDescription, TopicSettings, TopicSummary,
};
use broker_shard::ShardId;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The main port: any request, forwarded to its owner when needed.
    Main,
    /// This shard's shard-aware port: only this shard's partitions.
    ShardPort,
    /// Another shard, which forwarded it here.
    Peer,
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
    /// Prefix and flatbuffer header (and, for a forwarded answer, the
    /// whole frame).
    pub head: Vec<u8>,
    /// Record batches that follow the header: the log's own buffer.
    pub payload: Option<ReadBytes>,
    /// The error code it carries (None on success), for metrics.
    pub code: ErrorCode,
    /// Whether it is another shard's answer (that shard counted it).
    pub forwarded: bool,
}

impl Response {
    /// A success answer made of `head` alone.
    pub fn head(head: Vec<u8>) -> Response {
        Response {
            head,
            payload: None,
            code: ErrorCode::None,
            forwarded: false,
        }
    }
}

impl Reply {
    /// The reply as bytes for the shard that forwarded the request: the
    /// payload is copied here, once, because log buffers cannot cross shards.
    pub fn into_forwarded(self) -> ForwardedReply {
        let flatten = |r: Response| {
            let mut frame = r.head;
            if let Some(payload) = &r.payload {
                frame.extend_from_slice(payload.as_slice());
                crate::copy_stats::forwarded(payload.as_slice().len());
            }
            frame
        };
        match self {
            Reply::Send(r) => ForwardedReply {
                frame: flatten(r),
                close: false,
            },
            Reply::Nothing => ForwardedReply::default(),
            Reply::Close(r) => ForwardedReply {
                frame: r.map(flatten).unwrap_or_default(),
                close: true,
            },
        }
    }

    fn from_forwarded(f: ForwardedReply) -> Reply {
        let response = (!f.frame.is_empty()).then(|| Response {
            forwarded: true,
            ..Response::head(f.frame)
        });
        match (response, f.close) {
            (r, true) => Reply::Close(r),
            (Some(r), false) => Reply::Send(r),
            (None, false) => Reply::Nothing,
        }
    }
}

/// Handles one request frame (exactly its bytes) and says what to answer;
/// counts it in the shard's metrics unless another shard served it.
pub async fn handle(shard: &Rc<ShardState>, frame: Bytes, via: Via) -> Reply {
    let start = std::time::Instant::now();
    let (api, _) = raw_ids(&frame);
    let reply = dispatch(shard, frame, via).await;
    let (code, forwarded) = match &reply {
        Reply::Send(r) | Reply::Close(Some(r)) => (r.code, r.forwarded),
        Reply::Nothing => (ErrorCode::None, false),
        Reply::Close(None) => (ErrorCode::Internal, false),
    };
    if !forwarded {
        let m = &shard.metrics;
        m.request(api, code);
        match api {
            ApiKey::Produce => m.produce_latency.observe(start.elapsed()),
            ApiKey::Fetch => m.fetch_latency.observe(start.elapsed()),
            _ => {}
        }
    }
    reply
}

/// Decodes, routes and serves one request frame.
async fn dispatch(shard: &Rc<ShardState>, frame: Bytes, via: Via) -> Reply {
    let max = shard.config.max_frame_bytes;
    let decoded = match decode_frame(&frame, max) {
        Ok(f) => f,
        Err(e) => {
            // The prefix was good (the connection checked it): answer under
            // its api key and request id.
            let (api, id) = raw_ids(&frame);
            let reply = refuse(shard, api, id, e.error_code(), &e.to_string());
            return if e.is_fatal() {
                Reply::Close(Some(reply))
            } else {
                Reply::Send(reply)
            };
        }
    };
    let id = decoded.header.request_id();
    let api = decoded.header.api_key();
    match decoded.body {
        Body::ProduceRequest(r) => {
            data_request(shard, &frame, via, api, id, r.topic(), r.partition(), |s| {
                produce(s, id, r, decoded.payload)
            })
            .await
        }
        Body::FetchRequest(r) => {
            data_request(shard, &frame, via, api, id, r.topic(), r.partition(), |s| {
                fetch(s, id, r)
            })
            .await
        }
        Body::ListOffsetsRequest(r) => {
            data_request(shard, &frame, via, api, id, r.topic(), r.partition(), |s| {
                list_offsets(s, id, r)
            })
            .await
        }
        Body::CreateTopicRequest(r) => {
            let controller = metadata::controller(r.name(), shard.shard_count);
            if controller != shard.id {
                return forward(shard, controller, &frame, api, id).await;
            }
            // Boxed, as every rare and large path here: the future of this
            // function is allocated and moved with every request's task,
            // so its size is that of its largest branch.
            Reply::Send(Box::pin(create_topic(shard, id, r)).await)
        }
        Body::DeleteTopicRequest(r) => {
            let controller = metadata::controller(r.name(), shard.shard_count);
            if controller != shard.id {
                return forward(shard, controller, &frame, api, id).await;
            }
            Reply::Send(Box::pin(delete_topic(shard, id, r)).await)
        }
        Body::FindCoordinatorRequest(r) => groups::find_coordinator(shard, id, r.group()),
        Body::JoinGroupRequest(r) => {
            group_request(shard, &frame, api, id, r.group(), |s| {
                groups::join(s, id, r)
            })
            .await
        }
        Body::HeartbeatRequest(r) => {
            group_request(shard, &frame, api, id, r.group(), |s| async move {
                groups::heartbeat(s, id, r)
            })
            .await
        }
        Body::LeaveGroupRequest(r) => {
            group_request(shard, &frame, api, id, r.group(), |s| async move {
                groups::leave(s, id, r)
            })
            .await
        }
        Body::OffsetCommitRequest(r) => {
            Box::pin(group_request(shard, &frame, api, id, r.group(), |s| {
                groups::commit(s, id, r)
            }))
            .await
        }
        Body::OffsetFetchRequest(r) => {
            group_request(shard, &frame, api, id, r.group(), |s| async move {
                groups::fetch_offsets(s, id, r)
            })
            .await
        }
        Body::DescribeGroupRequest(r) => {
            group_request(shard, &frame, api, id, r.group(), |s| async move {
                groups::describe(s, id, r)
            })
            .await
        }
        Body::ListGroupsRequest(_) => groups::list(shard, id).await,
        Body::ListTopicsRequest(_) => Reply::Send(list_topics(shard, id)),
        Body::MetadataRequest(r) => Reply::Send(metadata(shard, id, r)),
        other => Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::InvalidRequest,
            &format!("{} is a response; the broker serves requests", other.name()),
        )),
    }
}

/// Routes a data-path request for `topic`/`partition`: serves it with
/// `serve` if this shard owns the partition, forwards it if it came on the
/// main port, refuses it otherwise.
#[allow(clippy::too_many_arguments)]
async fn data_request<'a, F, Fut>(
    shard: &'a Rc<ShardState>,
    frame: &Bytes,
    via: Via,
    api: ApiKey,
    id: u64,
    topic: &str,
    partition: u32,
    serve: F,
) -> Reply
where
    F: FnOnce(&'a Rc<ShardState>) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let owner = match route(shard, topic, partition) {
        Ok(owner) => owner,
        Err((code, message)) => return Reply::Send(refuse(shard, api, id, code, &message)),
    };
    if owner == shard.id {
        return serve(shard).await;
    }
    match via {
        Via::Main => forward(shard, owner, frame, api, id).await,
        Via::ShardPort | Via::Peer => Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::NotOwner,
            &format!(
                "partition {topic}/{partition} is owned by shard {owner}, not shard {}",
                shard.id
            ),
        )),
    }
}

/// Routes a group request to the group's coordinator shard (from any
/// port: the client finds the coordinator's own port with FindCoordinator)
/// and serves it there with `serve`.
async fn group_request<'a, F, Fut>(
    shard: &'a Rc<ShardState>,
    frame: &Bytes,
    api: ApiKey,
    id: u64,
    group: &str,
    serve: F,
) -> Reply
where
    F: FnOnce(&'a Rc<ShardState>) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    if group.is_empty() {
        return Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::InvalidRequest,
            "a group name must not be empty",
        ));
    }
    match groups::coordinator(shard, group) {
        Some((owner, _)) if owner == shard.id => serve(shard).await,
        Some((owner, _)) => forward(shard, owner, frame, api, id).await,
        None => Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::Internal,
            "the offsets topic is missing",
        )),
    }
}

/// Forwards a request to shard `to` and answers with its reply.
async fn forward(shard: &ShardState, to: ShardId, frame: &Bytes, api: ApiKey, id: u64) -> Reply {
    match shard.forward(to, frame.clone()).await {
        Some(reply) => Reply::from_forwarded(reply),
        None => Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::Internal,
            &format!("shard {to} did not answer (shutting down?)"),
        )),
    }
}

/// The owner of a partition, or why there is none.
fn route(shard: &ShardState, topic: &str, partition: u32) -> Result<ShardId, (ErrorCode, String)> {
    let topics = shard.topics.borrow();
    let Some(meta) = topics.get(topic) else {
        return Err((ErrorCode::UnknownTopic, format!("unknown topic {topic:?}")));
    };
    meta.owner(partition).ok_or_else(|| {
        (
            ErrorCode::UnknownPartition,
            format!(
                "topic {topic:?} has {} partitions; there is no partition {partition}",
                meta.partition_count()
            ),
        )
    })
}

/// Appends a produce request's batches. All are checked (framing, size,
/// CRC) before any is appended; they are placed in payload order.
async fn produce(shard: &Rc<ShardState>, id: u64, r: ProduceRequest<'_>, payload: &[u8]) -> Reply {
    let api = ApiKey::Produce;
    let silent = r.acks() == Acks::None;
    let fail = |code: ErrorCode, message: &str| {
        let response = refuse(shard, api, id, code, message);
        if silent {
            // acks = none gets no answer, not even an error: close the
            // connection so the producer notices.
            Reply::Close(None)
        } else {
            Reply::Send(response)
        }
    };
    if groups::is_internal(r.topic()) {
        return fail(
            ErrorCode::InvalidRequest,
            &format!(
                "{:?} is an internal topic: only the broker writes it",
                r.topic()
            ),
        );
    }
    let Some(partition) = shard.partition(r.topic(), r.partition()) else {
        return fail(
            ErrorCode::UnknownTopic,
            &format!("partition {}/{} is not open", r.topic(), r.partition()),
        );
    };
    let batches = match split_batches(payload, shard.config.max_batch_bytes) {
        Ok(b) => b,
        Err((code, message)) => return fail(code, &message),
    };
    let result = if let [only] = batches.as_slice() {
        // The log validates the batch itself: no second CRC pass.
        partition
            .log
            .append(&payload[only.clone()])
            .await
            .map(|a| (a.base_offset, a.next_offset))
    } else {
        for range in &batches {
            if let Err(e) = batch::validate(&payload[range.clone()]) {
                return fail(ErrorCode::CorruptBatch, &format!("record batch: {e}"));
            }
        }
        append_in_order(&partition.log, payload, &batches).await
    };
    match result {
        Ok((base, next)) => {
            partition.arrivals.notify();
            let m = &partition.metrics;
            m.records_in.fetch_add(next - base, Relaxed);
            m.bytes_in.fetch_add(payload.len() as u64, Relaxed);
            m.end_offset.store(next, Relaxed);
            m.size_bytes.store(partition.log.size_bytes(), Relaxed);
            if silent {
                return Reply::Nothing;
            }
            let mut head = Vec::with_capacity(128);
            let written = shard.writer.borrow_mut().produce_response(
                &mut head,
                id,
                base as i64,
                next as i64 - 1,
            );
            match written {
                Ok(_) => Reply::Send(Response::head(head)),
                Err(e) => fail(ErrorCode::Internal, &e.to_string()),
            }
        }
        Err(e) => {
            let (code, message) = log_error(&e);
            fail(code, &message)
        }
    }
}

/// Splits a produce payload into whole batches by their length fields,
/// checking each against the batch size limit. Nothing is trusted beyond
/// the framing: the CRC is checked by the caller or the log.
fn split_batches(
    payload: &[u8],
    max_batch: usize,
) -> Result<Vec<std::ops::Range<usize>>, (ErrorCode, String)> {
    if payload.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            "a produce request must carry at least one record batch".into(),
        ));
    }
    let mut batches = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < payload.len() {
        let rest = &payload[pos..];
        let Some(len) = batch::peek_total_len(rest) else {
            return Err((
                ErrorCode::CorruptBatch,
                format!(
                    "the payload's last {} bytes are not a whole record batch",
                    rest.len()
                ),
            ));
        };
        if len > max_batch {
            return Err((
                ErrorCode::BatchTooLarge,
                format!("record batch of {len} bytes exceeds the limit of {max_batch} bytes"),
            ));
        }
        if len < batch::HEADER_LEN || len > rest.len() {
            return Err((
                ErrorCode::CorruptBatch,
                format!(
                    "record batch at payload byte {pos} claims {len} bytes; {} remain",
                    rest.len()
                ),
            ));
        }
        batches.push(pos..pos + len);
        pos += len;
    }
    Ok(batches)
}

/// Appends several batches: every append is started (placed in the log, in
/// order) before any is awaited, so they share write cycles and get
/// consecutive offsets. Returns the first base offset and the last next
/// offset; the first error fails the request.
async fn append_in_order(
    log: &broker_log::Log,
    payload: &[u8],
    batches: &[std::ops::Range<usize>],
) -> Result<(u64, u64), LogError> {
    // Every append is polled once, in payload order, before any is
    // awaited: the first poll places it in the log.
    let mut pending = Vec::with_capacity(batches.len());
    for r in batches {
        let mut append = Box::pin(log.append(&payload[r.clone()]));
        pending.push(match futures_lite::future::poll_once(&mut append).await {
            Some(done) => PendingAppend::Done(done),
            None => PendingAppend::Waiting(append),
        });
    }
    let mut first = None;
    let mut last = 0;
    let mut failure = None;
    for p in pending {
        let r = match p {
            PendingAppend::Done(r) => r,
            PendingAppend::Waiting(a) => a.await,
        };
        match r {
            Ok(a) => {
                first.get_or_insert(a.base_offset);
                last = a.next_offset;
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match (failure, first) {
        (Some(e), _) => Err(e),
        (None, Some(first)) => Ok((first, last)),
        (None, None) => Err(LogError::Closed),
    }
}

enum PendingAppend<F> {
    Done(Result<broker_log::Appended, LogError>),
    Waiting(F),
}

/// The partition this shard owns, or the answer saying it is not open
/// (deleted since the request was routed).
fn open_partition(
    shard: &ShardState,
    api: ApiKey,
    id: u64,
    topic: &str,
    partition: u32,
) -> Result<Rc<Partition>, Reply> {
    shard.partition(topic, partition).ok_or_else(|| {
        Reply::Send(refuse(
            shard,
            api,
            id,
            ErrorCode::UnknownTopic,
            &format!("partition {topic}/{partition} is not open"),
        ))
    })
}

/// Serves a fetch: whole batches from `offset`, up to the byte budget, or
/// a long poll when there is nothing yet.
async fn fetch(shard: &Rc<ShardState>, id: u64, r: FetchRequest<'_>) -> Reply {
    let api = ApiKey::Fetch;
    let partition = match open_partition(shard, api, id, r.topic(), r.partition()) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let log = &partition.log;
    if r.offset() < 0 {
        let message = format!("offset {} is negative", r.offset());
        return Reply::Send(error(
            shard,
            api,
            id,
            &ResponseError::offset_out_of_range(
                &message,
                log.log_start_offset() as i64,
                log.high_watermark() as i64,
            ),
        ));
    }
    let offset = r.offset() as u64;
    // The answer must fit in a frame with room for its header.
    let budget = (r.max_bytes() as usize).min(shard.config.max_frame_bytes / 2);
    let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(r.max_wait_ms()));
    loop {
        let seen = partition.arrivals.generation();
        let read = match log.read(offset, budget).await {
            Ok(read) => read,
            Err(e) => {
                let (code, message) = log_error(&e);
                let range = match e {
                    LogError::OffsetOutOfRange { start, end, .. } => {
                        Some((start as i64, end as i64))
                    }
                    _ => None,
                };
                let err = ResponseError {
                    code,
                    message: &message,
                    valid_range: range,
                };
                return Reply::Send(error(shard, api, id, &err));
            }
        };
        let len = read.bytes.as_slice().len();
        let now = std::time::Instant::now();
        if len == 0
            && now < deadline
            && !shard.stopping.get()
            && shard.partition(r.topic(), r.partition()).is_some()
        {
            partition.arrivals.wait(seen, deadline - now).await;
            continue;
        }
        let position = FetchPosition {
            high_watermark: read.high_watermark as i64,
            log_start_offset: read.log_start_offset as i64,
            next_offset: if len == 0 {
                offset as i64
            } else {
                read.next_offset as i64
            },
        };
        let mut head = Vec::with_capacity(128);
        if let Err(e) = shard
            .writer
            .borrow_mut()
            .fetch_response(&mut head, id, &position, len)
        {
            return Reply::Send(refuse(shard, api, id, ErrorCode::Internal, &e.to_string()));
        }
        if len > 0 {
            let m = &partition.metrics;
            m.bytes_out.fetch_add(len as u64, Relaxed);
            m.records_out
                .fetch_add(read.next_offset.saturating_sub(offset), Relaxed);
        }
        return Reply::Send(Response {
            payload: (len > 0).then_some(read.bytes),
            ..Response::head(head)
        });
    }
}

async fn list_offsets(shard: &Rc<ShardState>, id: u64, r: ListOffsetsRequest<'_>) -> Reply {
    let api = ApiKey::ListOffsets;
    let partition = match open_partition(shard, api, id, r.topic(), r.partition()) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let log = &partition.log;
    let offset = match OffsetQuery::from_request(&r) {
        Some(OffsetQuery::Earliest) => Ok(log.log_start_offset() as i64),
        Some(OffsetQuery::Latest) => Ok(log.high_watermark() as i64),
        Some(OffsetQuery::Timestamp(ts)) => log
            .offset_for_timestamp(ts)
            .await
            .map(|o| o.map_or(-1, |o| o as i64)),
        None => Err(LogError::Closed),
    };
    let offset = match offset {
        Ok(o) => o,
        Err(e) => {
            let (code, message) = log_error(&e);
            return Reply::Send(refuse(shard, api, id, code, &message));
        }
    };
    let mut head = Vec::with_capacity(96);
    match shard.writer.borrow_mut().list_offsets_response(
        &mut head,
        id,
        offset,
        log.log_start_offset() as i64,
        log.high_watermark() as i64,
    ) {
        Ok(_) => Reply::Send(Response::head(head)),
        Err(e) => Reply::Send(refuse(shard, api, id, ErrorCode::Internal, &e.to_string())),
    }
}

async fn create_topic(shard: &Rc<ShardState>, id: u64, r: CreateTopicRequest<'_>) -> Response {
    let api = ApiKey::CreateTopic;
    let invalid = |m: String| refuse(shard, api, id, ErrorCode::InvalidRequest, &m);
    if let Err(m) = metadata::validate_topic_name(r.name()) {
        return invalid(m);
    }
    if groups::is_internal(r.name()) {
        return invalid(format!(
            "topic names starting with \"__\" are reserved for the broker: {:?}",
            r.name()
        ));
    }
    let partitions = match r.partitions() {
        -1 => shard.config.default_partitions,
        n if n >= 1 => n as u32,
        n => {
            return invalid(format!(
                "partitions = {n}: must be at least 1, or -1 for the broker's default"
            ))
        }
    };
    let asked = TopicSettings::from_table(r.config());
    let config = match TopicConfig::resolve(&asked, &shard.config.topic_defaults) {
        Ok(c) => c,
        Err(m) => return invalid(m),
    };
    let topic = TopicMeta::new(r.name(), partitions, config, shard.shard_count);
    match shard.create_topic(topic).await {
        Ok(()) => {
            let mut head = Vec::with_capacity(128);
            match shard.writer.borrow_mut().create_topic_response(
                &mut head,
                id,
                partitions as i32,
                &config.to_settings(),
            ) {
                Ok(_) => Response::head(head),
                Err(e) => refuse(shard, api, id, ErrorCode::Internal, &e.to_string()),
            }
        }
        Err(CreateError::Exists) => refuse(
            shard,
            api,
            id,
            ErrorCode::TopicExists,
            &format!("topic {:?} already exists", r.name()),
        ),
        Err(CreateError::Storage(m)) => refuse(shard, api, id, ErrorCode::StorageError, &m),
    }
}

async fn delete_topic(shard: &Rc<ShardState>, id: u64, r: DeleteTopicRequest<'_>) -> Response {
    let api = ApiKey::DeleteTopic;
    if groups::is_internal(r.name()) {
        return refuse(
            shard,
            api,
            id,
            ErrorCode::InvalidRequest,
            &format!("{:?} is an internal topic and cannot be deleted", r.name()),
        );
    }
    match shard.delete_topic(r.name()).await {
        Ok(()) => {
            let mut head = Vec::with_capacity(64);
            match shard
                .writer
                .borrow_mut()
                .delete_topic_response(&mut head, id)
            {
                Ok(_) => Response::head(head),
                Err(e) => refuse(shard, api, id, ErrorCode::Internal, &e.to_string()),
            }
        }
        Err(DeleteError::Unknown) => refuse(
            shard,
            api,
            id,
            ErrorCode::UnknownTopic,
            &format!("unknown topic {:?}", r.name()),
        ),
        Err(DeleteError::Busy) => refuse(
            shard,
            api,
            id,
            ErrorCode::InvalidRequest,
            &format!("topic {:?} is being created or deleted; retry", r.name()),
        ),
        Err(DeleteError::Storage(m)) => refuse(shard, api, id, ErrorCode::StorageError, &m),
    }
}

fn list_topics(shard: &Rc<ShardState>, id: u64) -> Response {
    let topics = shard.topics.borrow();
    let summaries: Vec<TopicSummary<'_>> = topics
        .iter()
        .filter(|t| !groups::is_internal(&t.name))
        .map(|t| TopicSummary {
            name: &t.name,
            partitions: t.partition_count() as i32,
        })
        .collect();
    let mut head = Vec::with_capacity(64 + 32 * summaries.len());
    match shard
        .writer
        .borrow_mut()
        .list_topics_response(&mut head, id, &summaries)
    {
        Ok(_) => Response::head(head),
        Err(e) => refuse(
            shard,
            ApiKey::ListTopics,
            id,
            ErrorCode::Internal,
            &e.to_string(),
        ),
    }
}

fn metadata(shard: &Rc<ShardState>, id: u64, r: MetadataRequest<'_>) -> Response {
    let topics = shard.topics.borrow();
    let host = shard.config.advertised_host();
    let shards: Vec<ShardAddress<'_>> = shard
        .endpoints
        .iter()
        .map(|a| ShardAddress {
            host: &host,
            port: a.port(),
        })
        .collect();
    let wanted: Vec<&str> = match r.topics() {
        Some(names) if !names.is_empty() => names.iter().collect(),
        // All topics: the internal ones only when named.
        _ => topics
            .iter()
            .map(|t| t.name.as_str())
            .filter(|t| !groups::is_internal(t))
            .collect(),
    };
    let unknown = ResponseError::new(ErrorCode::UnknownTopic, "unknown topic");
    let descriptions: Vec<TopicDescription<'_>> = wanted
        .iter()
        .map(|&name| match topics.get(name) {
            Some(t) => TopicDescription {
                name,
                error: None,
                config: t.config.to_settings(),
                partition_shards: &t.shards,
            },
            None => TopicDescription {
                name,
                error: Some(unknown),
                config: TopicSettings::default(),
                partition_shards: &[],
            },
        })
        .collect();
    let mut head = Vec::with_capacity(256);
    match shard
        .writer
        .borrow_mut()
        .metadata_response(&mut head, id, &shards, &descriptions)
    {
        Ok(_) => Response::head(head),
        Err(e) => refuse(
            shard,
            ApiKey::Metadata,
            id,
            ErrorCode::Internal,
            &e.to_string(),
        ),
    }
}

/// An error response under `api` and `id` with a code and a message.
fn refuse(shard: &ShardState, api: ApiKey, id: u64, code: ErrorCode, message: &str) -> Response {
    error(shard, api, id, &ResponseError::new(code, message))
}

/// An error response under `api` and `id`.
pub fn error(shard: &ShardState, api: ApiKey, id: u64, err: &ResponseError<'_>) -> Response {
    error_frame(&mut shard.writer.borrow_mut(), api, id, err)
}

/// An error response built with `writer`.
pub fn error_frame(
    writer: &mut FrameWriter,
    api: ApiKey,
    id: u64,
    err: &ResponseError<'_>,
) -> Response {
    let mut head = Vec::with_capacity(64 + err.message.len());
    if writer.error_response(&mut head, api, id, err).is_err() {
        // Only an absurdly long message can fail: send the code alone.
        head.clear();
        let _ = writer.error_response(&mut head, api, id, &ResponseError::new(err.code, ""));
    }
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

/// The error code and message a log error is answered with.
fn log_error(e: &LogError) -> (ErrorCode, String) {
    let code = match e {
        LogError::InvalidBatch(_) => ErrorCode::CorruptBatch,
        LogError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        e if e.is_no_space() => ErrorCode::NoSpace,
        LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Closed => {
            ErrorCode::StorageError
        }
        LogError::Config { .. } => ErrorCode::Internal,
    };
    (code, e.to_string())
}
