//! OffsetForLeaderEpoch (key 23), versions 2-4 (v4 flexible), for a broker
//! that does not track leader epochs yet.
//!
//! Kafka's semantics (KIP-101, KIP-279, KIP-320): for each partition the
//! client names an epoch `leader_epoch` (the epoch of the last record it
//! has, or of its committed position) and the leader answers the largest
//! epoch at or below it with that epoch's end offset (the start offset of
//! the next epoch, or the log end offset if it is the current one); (-1,
//! -1) when the log has no epoch at or below it. `current_leader_epoch`
//! fences a client whose view of the leader is newer or older than the
//! broker's (UNKNOWN_LEADER_EPOCH / FENCED_LEADER_EPOCH).
//!
//! What the clients do with it: librdkafka (rdkafka_offset.c,
//! `rd_kafka_offset_validate` and `rd_kafka_toppar_handle_OffsetForLeaderEpoch`)
//! validates a consumer's position after a leader change or a seek, and
//! only for a position whose epoch is known (not -1). An answer with
//! end_offset < 0 or leader_epoch < 0 makes it reset the position by
//! `auto.offset.reset` ("no epoch found"); an end_offset below the
//! position is log truncation (a seek back to it, or an error with
//! `auto.offset.reset=error`); anything else validates. The Java consumer
//! (`OffsetsForLeaderEpochUtils`, `SubscriptionState.maybeCompleteValidation`)
//! does the same.
//!
//! Here every partition has had one leader, for ever, so one epoch: a log
//! is never truncated under a reader. The answer that is true of that and
//! never makes a client truncate or reset a valid position:
//! - `leader_epoch >= 0` asked: error NONE, `leader_epoch` = the epoch
//!   asked (the one epoch; a log given no leader epoch stores -1 in every
//!   batch's partition leader epoch, so clients have none to validate,
//!   but one that asks anyway gets this answer),
//!   `end_offset` = the partition's high watermark. A consumer's position
//!   is never above the high watermark (it only reads below it), so the
//!   check `end_offset < position` never fires wrongly; a position above it
//!   (an offset committed by hand past the end) is truncated to it, which
//!   is what Kafka does too.
//! - `leader_epoch < 0` asked: (-1, -1), as Kafka answers UNDEFINED_EPOCH
//!   (clients never ask it: they skip validation without an epoch).
//! - `current_leader_epoch` is not checked: Metadata answers leader epoch
//!   -1, so there is no epoch a client could be fenced against.
//! - an unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION (the client
//!   refreshes its metadata and retries).
//!
//! Replica fetchers (`replica_id >= 0`, v3+) do not exist yet; they get the
//! same answer.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::wire::{DecodeResult, Decoder};
use super::{encode_with, Reply, Request};
use crate::service::{self, OffsetQuery, Route};
use crate::shard::Shard;

/// One partition of an OffsetForLeaderEpoch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochQuery {
    /// The partition.
    pub partition: i32,
    /// The client's view of the leader's epoch (-1: unknown).
    pub current_leader_epoch: i32,
    /// The epoch whose end offset is asked.
    pub leader_epoch: i32,
}

/// A decoded OffsetForLeaderEpoch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetForLeaderEpochRequest<'a> {
    /// The replica asking (v3+): -1 for a consumer, -2 before v3.
    pub replica_id: i32,
    /// The topics and their partitions, in request order.
    pub topics: Vec<(&'a str, Vec<EpochQuery>)>,
}

/// Decodes an OffsetForLeaderEpoch request's body (versions 2-4).
pub fn decode<'a>(
    d: &mut Decoder<'a>,
    v: i16,
    flex: bool,
) -> DecodeResult<OffsetForLeaderEpochRequest<'a>> {
    let replica_id = if v >= 3 { d.i32()? } else { -2 };
    // A topic: a name and an array length (+ tagged fields); a partition:
    // three INT32s (+ tagged fields).
    let n = d.count(flex, if flex { 3 } else { 6 })?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string(flex)?;
        let m = d.count(flex, if flex { 13 } else { 12 })?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let partition = d.i32()?;
            let current_leader_epoch = d.i32()?;
            let leader_epoch = d.i32()?;
            d.tagged_fields(flex)?;
            partitions.push(EpochQuery {
                partition,
                current_leader_epoch,
                leader_epoch,
            });
        }
        d.tagged_fields(flex)?;
        topics.push((name, partitions));
    }
    d.tagged_fields(flex)?;
    Ok(OffsetForLeaderEpochRequest { replica_id, topics })
}

/// The answer for one partition whose high watermark is `high_watermark`:
/// (leader_epoch, end_offset), as the module's doc explains.
pub fn end_of_epoch(asked_epoch: i32, high_watermark: u64) -> (i32, i64) {
    if asked_epoch < 0 {
        (-1, -1)
    } else {
        (asked_epoch, high_watermark.min(i64::MAX as u64) as i64)
    }
}

async fn answer(shard: &Rc<Shard>, topic: &str, q: EpochQuery) -> EpochEndOffset {
    let out = EpochEndOffset::default().with_partition(q.partition);
    let Ok(partition) = u32::try_from(q.partition) else {
        return out
            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
            .with_leader_epoch(-1)
            .with_end_offset(-1);
    };
    match service::list_offsets(shard, topic, partition, OffsetQuery::Latest, Route::Forward).await
    {
        Ok(found) => {
            let (epoch, end) = end_of_epoch(q.leader_epoch, found.high_watermark);
            out.with_error_code(errors::NONE)
                .with_leader_epoch(epoch)
                .with_end_offset(end)
        }
        Err(e) => out
            .with_error_code(errors::code(&e))
            .with_leader_epoch(-1)
            .with_end_offset(-1),
    }
}

/// Answers an OffsetForLeaderEpoch request.
pub async fn handle(shard: &Rc<Shard>, mut request: Request<'_>) -> DecodeResult<Reply> {
    let asked = decode(&mut request.body, request.version, request.flexible)?;
    let mut topics = Vec::with_capacity(asked.topics.len());
    for (name, partitions) in &asked.topics {
        let mut answers = Vec::with_capacity(partitions.len());
        for &q in partitions {
            answers.push(answer(shard, name, q).await);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(StrBytes::from_string((*name).to_owned())))
                .with_partitions(answers),
        );
    }
    Ok(encode_with(
        &request,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_epoch_ends_at_the_high_watermark_and_an_unknown_one_is_undefined() {
        assert_eq!(end_of_epoch(0, 1_000), (0, 1_000));
        assert_eq!(end_of_epoch(7, 0), (7, 0));
        assert_eq!(end_of_epoch(-1, 1_000), (-1, -1));
        assert_eq!(end_of_epoch(3, u64::MAX), (3, i64::MAX));
    }
}
