//! Frames of replication between brokers: a follower shard's ReplicaFetch
//! of every partition it follows on one leader shard, the leader's answer,
//! and [`replica_fetch_slices`], which cuts a received answer's payload into
//! each partition's batches.
//!
//! Invariants:
//! - Record bytes never pass through here: the leader writes the header,
//!   then every partition's log buffers in the order of the results; the
//!   follower's slices borrow the received frame.
//! - A response's `payload_bytes` add up to its payload exactly: checked on
//!   encode (the leader's arithmetic) and again on the follower's slicing
//!   (the peer's bytes), where a mismatch is an error, never a panic.
//! - Neither side builds a frame the other refuses for its partition count
//!   ([`MAX_PARTITIONS_PER_REPLICA_FETCH`]).

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::encode::FrameWriter;
use super::error::FrameError;
use super::frame::FrameHeader;
use super::generated::{
    ReplicaFetchError, ReplicaFetchPartition, ReplicaFetchPartitionArgs,
    ReplicaFetchPartitionResult, ReplicaFetchPartitionResultArgs, ReplicaFetchRequest,
    ReplicaFetchRequestArgs, ReplicaFetchResponse, ReplicaFetchResponseArgs,
};
use super::limits::MAX_PARTITIONS_PER_REPLICA_FETCH;

/// A ReplicaFetch request's parameters: the follower shard and where its
/// log stands in each partition it follows on the leader shard addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaFetchParams<'a> {
    /// The follower's broker id.
    pub replica: u32,
    /// The follower's broker epoch.
    pub replica_epoch: u64,
    /// The follower's shard (with `replica`, the leader's session key).
    pub replica_shard: u16,
    /// Long-poll wait when no partition has data.
    pub max_wait_ms: u32,
    /// Byte budget of the whole answer's payload (at least one batch of one
    /// partition comes back).
    pub max_bytes: u32,
    /// The partitions, at most [`MAX_PARTITIONS_PER_REPLICA_FETCH`].
    pub partitions: &'a [ReplicaFetchPartitionParams<'a>],
}

/// One partition of a ReplicaFetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaFetchPartitionParams<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The leader epoch the follower knows.
    pub leader_epoch: u32,
    /// The follower's durable log end offset: the first offset wanted.
    pub fetch_offset: i64,
    /// The leader epoch of the follower's last record; -1 for an empty log.
    pub last_fetched_epoch: i64,
    /// Echoed by the result.
    pub fetch_id: u64,
    /// Byte budget of this partition's batches.
    pub max_bytes: u32,
}

/// One partition of a ReplicaFetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaFetchResult<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// Why the partition was not served; [`ReplicaFetchError::None`] on
    /// success.
    pub error: ReplicaFetchError,
    /// The partition's leader as this broker knows it.
    pub leader: u32,
    /// The request's leader epoch, echoed.
    pub leader_epoch: u32,
    /// The request's fetch id, echoed.
    pub fetch_id: u64,
    /// The request's fetch offset, echoed.
    pub fetch_offset: i64,
    /// The request's replica epoch, echoed.
    pub replica_epoch: u64,
    /// KIP-320, when the follower's log diverges: the largest epoch at or
    /// below its last fetched epoch, and that epoch's end offset here.
    pub diverging: Option<(i32, u64)>,
    /// The partition's high watermark (-1: not known).
    pub high_watermark: i64,
    /// The partition's first readable offset (-1: not known).
    pub log_start_offset: i64,
    /// Bytes of the payload that are this partition's batches, following
    /// those of the results before it; 0 on error.
    pub payload_bytes: u32,
}

impl FrameWriter {
    /// ReplicaFetch request. Fails with [`FrameError::LimitExceeded`] above
    /// [`MAX_PARTITIONS_PER_REPLICA_FETCH`] partitions; topic names are
    /// written once each, however many partitions share them.
    pub fn replica_fetch_request(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        params: &ReplicaFetchParams<'_>,
    ) -> Result<FrameHeader, FrameError> {
        partition_count("ReplicaFetchRequest.partitions", params.partitions.len())?;
        self.write(out, request_id, 0, |fbb| {
            let partitions: Vec<_> = params
                .partitions
                .iter()
                .map(|p| {
                    let topic = Some(fbb.create_shared_string(p.topic));
                    ReplicaFetchPartition::create(
                        fbb,
                        &ReplicaFetchPartitionArgs {
                            topic,
                            partition: p.partition,
                            leader_epoch: p.leader_epoch,
                            fetch_offset: p.fetch_offset,
                            last_fetched_epoch: p.last_fetched_epoch,
                            fetch_id: p.fetch_id,
                            max_bytes: p.max_bytes,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&partitions));
            ReplicaFetchRequest::create(
                fbb,
                &ReplicaFetchRequestArgs {
                    replica: params.replica,
                    replica_epoch: params.replica_epoch,
                    replica_shard: params.replica_shard,
                    max_wait_ms: params.max_wait_ms,
                    max_bytes: params.max_bytes,
                    partitions,
                },
            )
        })
    }

    /// ReplicaFetch answer; `payload_len` bytes follow it: every partition's
    /// batches in the order of `partitions`, sent straight from the log's
    /// buffers.
    ///
    /// Fails with [`FrameError::PayloadMismatch`] when the results'
    /// `payload_bytes` do not add up to `payload_len`, with
    /// [`FrameError::LimitExceeded`] above
    /// [`MAX_PARTITIONS_PER_REPLICA_FETCH`] partitions or for a diverging
    /// end offset beyond `i64::MAX`; `out` is unchanged then.
    pub fn replica_fetch_response(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        partitions: &[ReplicaFetchResult<'_>],
        payload_len: usize,
    ) -> Result<FrameHeader, FrameError> {
        partition_count("ReplicaFetchResponse.partitions", partitions.len())?;
        let claimed: u64 = partitions.iter().map(|p| u64::from(p.payload_bytes)).sum();
        if claimed != payload_len as u64 {
            return Err(FrameError::PayloadMismatch {
                table: "ReplicaFetchResponse",
                claimed,
                payload_len,
            });
        }
        if let Some(p) = partitions.iter().find(|p| {
            p.diverging
                .is_some_and(|(_, end)| i64::try_from(end).is_err())
        }) {
            return Err(FrameError::LimitExceeded {
                field: "ReplicaFetchPartitionResult.diverging_end_offset",
                value: p.diverging.map_or(0, |(_, end)| end),
                max: i64::MAX as u64,
            });
        }
        self.write(out, request_id, payload_len, |fbb| {
            let results: Vec<_> = partitions.iter().map(|p| build_result(fbb, p)).collect();
            let partitions = Some(fbb.create_vector(&results));
            ReplicaFetchResponse::create(
                fbb,
                &ReplicaFetchResponseArgs {
                    error: None,
                    partitions,
                },
            )
        })
    }
}

/// One result; its diverging end offset was checked to fit an i64.
fn build_result(
    fbb: &mut FlatBufferBuilder<'static>,
    p: &ReplicaFetchResult<'_>,
) -> WIPOffset<ReplicaFetchPartitionResult<'static>> {
    let (diverging_epoch, diverging_end_offset) = p.diverging.map_or((-1, -1), |(epoch, end)| {
        (i64::from(epoch), i64::try_from(end).unwrap_or(i64::MAX))
    });
    let topic = Some(fbb.create_shared_string(p.topic));
    ReplicaFetchPartitionResult::create(
        fbb,
        &ReplicaFetchPartitionResultArgs {
            topic,
            partition: p.partition,
            error: p.error,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            fetch_id: p.fetch_id,
            fetch_offset: p.fetch_offset,
            replica_epoch: p.replica_epoch,
            diverging_epoch,
            diverging_end_offset,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            payload_bytes: p.payload_bytes,
        },
    )
}

fn partition_count(field: &'static str, count: usize) -> Result<(), FrameError> {
    if count > MAX_PARTITIONS_PER_REPLICA_FETCH {
        return Err(FrameError::LimitExceeded {
            field,
            value: count as u64,
            max: MAX_PARTITIONS_PER_REPLICA_FETCH as u64,
        });
    }
    Ok(())
}

/// Cuts the payload of a received ReplicaFetch answer into each partition's
/// batches: one slice per result of `response`, in order, borrowed from
/// `payload`. A follower calls it on what [`super::decode_as`] returned.
///
/// Fails with [`FrameError::PayloadMismatch`] unless the results'
/// `payload_bytes` add up to exactly `payload.len()` (an answer without
/// results must have an empty payload).
pub fn replica_fetch_slices<'a>(
    response: &ReplicaFetchResponse<'_>,
    payload: &'a [u8],
) -> Result<Vec<&'a [u8]>, FrameError> {
    let Some(results) = response.partitions() else {
        return match payload.len() {
            0 => Ok(Vec::new()),
            payload_len => Err(FrameError::PayloadMismatch {
                table: "ReplicaFetchResponse",
                claimed: 0,
                payload_len,
            }),
        };
    };
    // Summed before anything is sliced or allocated: at most
    // MAX_PARTITIONS_PER_REPLICA_FETCH u32s (decode checked), so no overflow.
    let claimed: u64 = results.iter().map(|r| u64::from(r.payload_bytes())).sum();
    if claimed != payload.len() as u64 {
        return Err(FrameError::PayloadMismatch {
            table: "ReplicaFetchResponse",
            claimed,
            payload_len: payload.len(),
        });
    }
    let mut rest = payload;
    let mut slices = Vec::with_capacity(results.len());
    for r in results.iter() {
        // Cannot fail once the sum matched; checked anyway, never indexed.
        let (slice, tail) = rest.split_at_checked(r.payload_bytes() as usize).ok_or(
            FrameError::PayloadMismatch {
                table: "ReplicaFetchResponse",
                claimed,
                payload_len: payload.len(),
            },
        )?;
        slices.push(slice);
        rest = tail;
    }
    debug_assert!(rest.is_empty());
    Ok(slices)
}
