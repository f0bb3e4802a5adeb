//! Building frames: [`FrameWriter`] appends a frame's prefix and flatbuffer
//! header to a caller's buffer; the caller then sends the payload (record
//! batches) from wherever it lives, so record bytes never pass through
//! flatbuffers or this module.
//!
//! The writer keeps its flatbuffers builder between frames: once warm,
//! encoding a produce or fetch header allocates nothing. One helper per
//! request and response takes plain Rust values; [`FrameWriter::write`]
//! builds any header from a closure.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::error::FrameError;
use super::frame::{encode_prefix, FrameHeader, FRAME_PREFIX_LEN};
use super::generated::{
    Acks, ApiKey, CreateTopicRequest, CreateTopicRequestArgs, CreateTopicResponse,
    CreateTopicResponseArgs, DeleteTopicRequest, DeleteTopicRequestArgs, DeleteTopicResponse,
    DeleteTopicResponseArgs, Error, ErrorArgs, ErrorCode, ErrorResponse, ErrorResponseArgs,
    FetchRequest, FetchRequestArgs, FetchResponse, FetchResponseArgs, ListOffsetsRequest,
    ListOffsetsRequestArgs, ListOffsetsResponse, ListOffsetsResponseArgs, ListTopicsRequest,
    ListTopicsRequestArgs, ListTopicsResponse, ListTopicsResponseArgs, MetadataRequest,
    MetadataRequestArgs, MetadataResponse, MetadataResponseArgs, OffsetSpec, PartitionMetadata,
    PartitionMetadataArgs, ProduceRequest, ProduceRequestArgs, ProduceResponse,
    ProduceResponseArgs, ShardEndpoint, ShardEndpointArgs, TopicConfig, TopicConfigArgs,
    TopicListing, TopicListingArgs, TopicMetadata, TopicMetadataArgs,
};
use super::message::Message;

/// Value of an integer setting or count meaning "the broker's default".
pub const BROKER_DEFAULT: i64 = -1;

/// Value of `retention_ms` / `retention_bytes` meaning "no limit".
pub const NO_LIMIT: i64 = -2;

/// The values of a `TopicConfig` table: [`BROKER_DEFAULT`] for each setting
/// not given (in a request) and the value in effect (in a response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicSettings {
    /// Milliseconds a closed segment is kept after its newest record;
    /// [`NO_LIMIT`] keeps it forever.
    pub retention_ms: i64,
    /// Bytes a partition keeps before its oldest closed segments go;
    /// [`NO_LIMIT`] for no size limit.
    pub retention_bytes: i64,
    /// Size at which a partition's active segment rolls.
    pub segment_bytes: i64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            retention_ms: BROKER_DEFAULT,
            retention_bytes: BROKER_DEFAULT,
            segment_bytes: BROKER_DEFAULT,
        }
    }
}

impl TopicSettings {
    /// The settings a decoded table holds; an absent table is all defaults.
    pub fn from_table(table: Option<TopicConfig<'_>>) -> TopicSettings {
        match table {
            Some(t) => TopicSettings {
                retention_ms: t.retention_ms(),
                retention_bytes: t.retention_bytes(),
                segment_bytes: t.segment_bytes(),
            },
            None => TopicSettings::default(),
        }
    }
}

/// What ListOffsets looks up: the schema's `spec` and `timestamp` in one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset whose record timestamp (ms since the epoch) is at or
    /// after this.
    Timestamp(i64),
}

impl OffsetQuery {
    /// The query of a decoded request (whose `spec` [`super::decode_frame`]
    /// has already checked).
    pub fn from_request(request: &ListOffsetsRequest<'_>) -> Option<OffsetQuery> {
        match request.spec() {
            OffsetSpec::Earliest => Some(OffsetQuery::Earliest),
            OffsetSpec::Latest => Some(OffsetQuery::Latest),
            OffsetSpec::Timestamp => Some(OffsetQuery::Timestamp(request.timestamp())),
            _ => None,
        }
    }
}

/// The failure a response reports in its `error` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseError<'a> {
    /// What went wrong; not [`ErrorCode::None`].
    pub code: ErrorCode,
    /// Detail for humans.
    pub message: &'a str,
    /// For [`ErrorCode::OffsetOutOfRange`]: the log start offset and the high
    /// watermark.
    pub valid_range: Option<(i64, i64)>,
}

impl<'a> ResponseError<'a> {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: &'a str) -> ResponseError<'a> {
        ResponseError {
            code,
            message,
            valid_range: None,
        }
    }

    /// [`ErrorCode::OffsetOutOfRange`] with the range a read may use.
    pub fn offset_out_of_range(
        message: &'a str,
        log_start_offset: i64,
        high_watermark: i64,
    ) -> ResponseError<'a> {
        ResponseError {
            code: ErrorCode::OffsetOutOfRange,
            message,
            valid_range: Some((log_start_offset, high_watermark)),
        }
    }
}

/// A fetch request's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchParams<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: i64,
    /// Byte budget of the answer's payload (at least one batch comes back).
    pub max_bytes: u32,
    /// Long-poll wait when no data is readable at `offset`.
    pub max_wait_ms: u32,
}

/// Where a fetch answer leaves the partition and the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchPosition {
    /// One past the last readable offset.
    pub high_watermark: i64,
    /// The first readable offset.
    pub log_start_offset: i64,
    /// Where the next fetch starts: past the payload's last record.
    pub next_offset: i64,
}

/// One topic of a ListTopics answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicSummary<'a> {
    /// The topic's name.
    pub name: &'a str,
    /// Its partition count.
    pub partitions: i32,
}

/// The shard-aware listener of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardAddress<'a> {
    /// Host name or IP address.
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
}

/// One topic of a Metadata answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicDescription<'a> {
    /// The topic's name.
    pub name: &'a str,
    /// Why the topic is not described (e.g. UnknownTopic); then `config` and
    /// `partition_shards` are not sent.
    pub error: Option<ResponseError<'a>>,
    /// The settings in effect.
    pub config: TopicSettings,
    /// The owning shard of each partition: `partition_shards[p]` owns
    /// partition `p`.
    pub partition_shards: &'a [u16],
}

/// Builds frames into caller-owned buffers, reusing its flatbuffers builder.
///
/// Every method appends one frame's prefix and header to `out` (after what
/// `out` already holds, so several frames can share one write) and returns
/// its [`FrameHeader`]. The caller sends `payload_len` payload bytes right
/// after; methods without a `payload_len` write frames without payload.
pub struct FrameWriter {
    fbb: FlatBufferBuilder<'static>,
}

impl Default for FrameWriter {
    fn default() -> Self {
        FrameWriter::new()
    }
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").finish_non_exhaustive()
    }
}

impl FrameWriter {
    /// A writer with an empty builder; it grows to the largest header written.
    pub fn new() -> FrameWriter {
        FrameWriter {
            fbb: FlatBufferBuilder::new(),
        }
    }

    /// Appends a frame whose header `build` makes: any message `M`, with the
    /// api key and direction `M` belongs to.
    ///
    /// Fails if `M` carries no payload but `payload_len` is not 0, if the
    /// header exceeds [`super::limits::MAX_HEADER_BYTES`], or if the frame is
    /// larger than the format can express; `out` is unchanged then.
    pub fn write<M: Message<'static>>(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        payload_len: usize,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<M>,
    ) -> Result<FrameHeader, FrameError> {
        if !M::HAS_PAYLOAD && payload_len != 0 {
            return Err(FrameError::UnexpectedPayload {
                table: M::NAME,
                payload_len,
            });
        }
        self.fbb.reset();
        let root = build(&mut self.fbb);
        self.finish(
            out,
            M::API_KEY,
            M::IS_RESPONSE,
            request_id,
            payload_len,
            root,
        )
    }

    /// Finishes the builder's buffer with `root` and appends prefix and header.
    fn finish<T>(
        &mut self,
        out: &mut Vec<u8>,
        api_key: ApiKey,
        response: bool,
        request_id: u64,
        payload_len: usize,
        root: WIPOffset<T>,
    ) -> Result<FrameHeader, FrameError> {
        self.fbb.finish_minimal(root);
        let body = self.fbb.finished_data();
        let header = FrameHeader::new(api_key, response, request_id, body.len(), payload_len)?;
        out.reserve(FRAME_PREFIX_LEN + body.len());
        out.extend_from_slice(&encode_prefix(&header));
        out.extend_from_slice(body);
        Ok(header)
    }

    /// An error answer to a request of any api, `api_key` included when this
    /// code does not know it: an [`ErrorResponse`], which the requester reads
    /// as the response it expects (field 0 of every response is `error`).
    pub fn error_response(
        &mut self,
        out: &mut Vec<u8>,
        api_key: ApiKey,
        request_id: u64,
        error: &ResponseError<'_>,
    ) -> Result<FrameHeader, FrameError> {
        self.fbb.reset();
        let error = Some(build_error(&mut self.fbb, error));
        let root = ErrorResponse::create(&mut self.fbb, &ErrorResponseArgs { error });
        self.finish(out, api_key, true, request_id, 0, root)
    }

    /// CreateTopic request; `partitions` is [`BROKER_DEFAULT`] for the default.
    pub fn create_topic_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        name: &str,
        partitions: i32,
        config: &TopicSettings,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let name = Some(fbb.create_string(name));
            let config = Some(build_config(fbb, config));
            CreateTopicRequest::create(
                fbb,
                &CreateTopicRequestArgs {
                    name,
                    partitions,
                    config,
                },
            )
        })
    }

    /// CreateTopic success answer, with what was created.
    pub fn create_topic_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        partitions: i32,
        config: &TopicSettings,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let config = Some(build_config(fbb, config));
            CreateTopicResponse::create(
                fbb,
                &CreateTopicResponseArgs {
                    error: None,
                    partitions,
                    config,
                },
            )
        })
    }

    /// DeleteTopic request.
    pub fn delete_topic_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        name: &str,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let name = Some(fbb.create_string(name));
            DeleteTopicRequest::create(fbb, &DeleteTopicRequestArgs { name })
        })
    }

    /// DeleteTopic success answer.
    pub fn delete_topic_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            DeleteTopicResponse::create(fbb, &DeleteTopicResponseArgs { error: None })
        })
    }

    /// ListTopics request.
    pub fn list_topics_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            ListTopicsRequest::create(fbb, &ListTopicsRequestArgs {})
        })
    }

    /// ListTopics answer: `topics` in the order given (sorted by name, per
    /// the schema).
    pub fn list_topics_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        topics: &[TopicSummary<'_>],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let listings: Vec<_> = topics
                .iter()
                .map(|t| {
                    let name = Some(fbb.create_string(t.name));
                    TopicListing::create(
                        fbb,
                        &TopicListingArgs {
                            name,
                            partitions: t.partitions,
                        },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&listings));
            ListTopicsResponse::create(
                fbb,
                &ListTopicsResponseArgs {
                    error: None,
                    topics,
                },
            )
        })
    }

    /// Metadata request for the named topics; an empty list asks for all.
    pub fn metadata_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        topics: &[&str],
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let names: Vec<_> = topics.iter().map(|t| fbb.create_string(t)).collect();
            let topics = (!names.is_empty()).then(|| fbb.create_vector(&names));
            MetadataRequest::create(fbb, &MetadataRequestArgs { topics })
        })
    }

    /// Metadata answer: `shards[i]` is shard `i`'s shard-aware address (at
    /// most `u16::MAX` shards), then the topics.
    pub fn metadata_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        shards: &[ShardAddress<'_>],
        topics: &[TopicDescription<'_>],
    ) -> Result<FrameHeader, FrameError> {
        let shard_count = u16::try_from(shards.len()).map_err(|_| FrameError::LimitExceeded {
            field: "MetadataResponse.shards",
            value: shards.len() as u64,
            max: u64::from(u16::MAX),
        })?;
        self.write(out, request_id, 0, |fbb| {
            let endpoints: Vec<_> = shards
                .iter()
                .zip(0..=u16::MAX)
                .map(|(s, shard)| {
                    let host = Some(fbb.create_shared_string(s.host));
                    ShardEndpoint::create(
                        fbb,
                        &ShardEndpointArgs {
                            shard,
                            host,
                            port: s.port,
                        },
                    )
                })
                .collect();
            let shards = Some(fbb.create_vector(&endpoints));
            let topics: Vec<_> = topics
                .iter()
                .map(|t| build_topic_metadata(fbb, t))
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            MetadataResponse::create(
                fbb,
                &MetadataResponseArgs {
                    error: None,
                    shard_count,
                    shards,
                    topics,
                },
            )
        })
    }

    /// Produce request; `payload_len` bytes of record batches follow it.
    pub fn produce_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        topic: &str,
        partition: u32,
        acks: Acks,
        payload_len: usize,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, payload_len, |fbb| {
            let topic = Some(fbb.create_string(topic));
            ProduceRequest::create(
                fbb,
                &ProduceRequestArgs {
                    topic,
                    partition,
                    acks,
                },
            )
        })
    }

    /// Produce success answer: offsets of the first and last record appended.
    pub fn produce_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        base_offset: i64,
        last_offset: i64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            ProduceResponse::create(
                fbb,
                &ProduceResponseArgs {
                    error: None,
                    base_offset,
                    last_offset,
                },
            )
        })
    }

    /// Fetch request.
    pub fn fetch_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        params: &FetchParams<'_>,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            let topic = Some(fbb.create_string(params.topic));
            FetchRequest::create(
                fbb,
                &FetchRequestArgs {
                    topic,
                    partition: params.partition,
                    offset: params.offset,
                    max_bytes: params.max_bytes,
                    max_wait_ms: params.max_wait_ms,
                },
            )
        })
    }

    /// Fetch success answer; `payload_len` bytes of record batches follow it,
    /// sent straight from the log's buffers.
    pub fn fetch_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        position: &FetchPosition,
        payload_len: usize,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, payload_len, |fbb| {
            FetchResponse::create(
                fbb,
                &FetchResponseArgs {
                    error: None,
                    high_watermark: position.high_watermark,
                    log_start_offset: position.log_start_offset,
                    next_offset: position.next_offset,
                },
            )
        })
    }

    /// ListOffsets request.
    pub fn list_offsets_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<FrameHeader, FrameError> {
        let (spec, timestamp) = match query {
            OffsetQuery::Earliest => (OffsetSpec::Earliest, -1),
            OffsetQuery::Latest => (OffsetSpec::Latest, -1),
            OffsetQuery::Timestamp(t) => (OffsetSpec::Timestamp, t),
        };
        self.write(out, request_id, 0, |fbb| {
            let topic = Some(fbb.create_string(topic));
            ListOffsetsRequest::create(
                fbb,
                &ListOffsetsRequestArgs {
                    topic,
                    partition,
                    spec,
                    timestamp,
                },
            )
        })
    }

    /// ListOffsets success answer: the offset found (-1: no record at or
    /// after the timestamp) and the partition's range.
    pub fn list_offsets_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    ) -> Result<FrameHeader, FrameError> {
        self.write(out, request_id, 0, |fbb| {
            ListOffsetsResponse::create(
                fbb,
                &ListOffsetsResponseArgs {
                    error: None,
                    offset,
                    log_start_offset,
                    high_watermark,
                },
            )
        })
    }
}

fn build_error(
    fbb: &mut FlatBufferBuilder<'static>,
    error: &ResponseError<'_>,
) -> WIPOffset<Error<'static>> {
    let message = Some(fbb.create_string(error.message));
    let (log_start_offset, high_watermark) = error.valid_range.unwrap_or((-1, -1));
    Error::create(
        fbb,
        &ErrorArgs {
            code: error.code,
            message,
            log_start_offset,
            high_watermark,
        },
    )
}

fn build_config(
    fbb: &mut FlatBufferBuilder<'static>,
    config: &TopicSettings,
) -> WIPOffset<TopicConfig<'static>> {
    TopicConfig::create(
        fbb,
        &TopicConfigArgs {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
        },
    )
}

fn build_topic_metadata(
    fbb: &mut FlatBufferBuilder<'static>,
    topic: &TopicDescription<'_>,
) -> WIPOffset<TopicMetadata<'static>> {
    let name = Some(fbb.create_string(topic.name));
    if let Some(error) = &topic.error {
        let error = Some(build_error(fbb, error));
        return TopicMetadata::create(
            fbb,
            &TopicMetadataArgs {
                error,
                name,
                ..Default::default()
            },
        );
    }
    let config = Some(build_config(fbb, &topic.config));
    let partitions: Vec<_> = topic
        .partition_shards
        .iter()
        .zip(0u32..)
        .map(|(&shard, partition)| {
            PartitionMetadata::create(fbb, &PartitionMetadataArgs { partition, shard })
        })
        .collect();
    let partitions = Some(fbb.create_vector(&partitions));
    TopicMetadata::create(
        fbb,
        &TopicMetadataArgs {
            error: None,
            name,
            config,
            partitions,
        },
    )
}
