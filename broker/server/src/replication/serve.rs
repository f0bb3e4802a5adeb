//! The leader's side of pull replication: a follower shard's poll (the
//! native ReplicaFetch api) served on the leader partitions' shard.
//!
//! Each fetch in the poll goes to its partition's replica, which answers
//! at once (data to read, an error, a diverging epoch) or parks it (a long
//! poll: nothing new yet). The poll is answered with every decided answer
//! for that follower shard, parked ones decided since the last poll
//! included, as soon as there is one, or after the poll's wait with none.
//! Each answer's batches are read from the log below its durable end and
//! written to the socket from the log's buffers, one piece per partition;
//! a poll whose answers would all be empty because the leader's fsync is
//! still running waits for it (every durable advance of a leader wakes the
//! polls), rather than sending empty answers the followers would bounce
//! straight back.

use std::{rc::Rc, time::Duration};

use broker_protocol::{
    generated::{ReplicaFetchError, ReplicaFetchRequest},
    ReplicaFetchResult,
};
use broker_replication::{
    limits::MAX_FETCH_BATCHES, BrokerEpoch, BrokerId, FetchError, FetchRequest, FetchResponse,
    LeaderEpoch, Offset, PartitionId,
};

use super::{Replicated, Served};
use crate::service::Records;
use crate::shard::Shard;

/// The longest a poll may be held, whatever it asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(5);

/// One partition's part of the answer.
pub struct Part {
    /// Its topic.
    pub topic: String,
    /// The decided answer, without its batches.
    pub response: FetchResponse,
    /// The answer's code on the wire.
    pub error: ReplicaFetchError,
    /// Its batches: the log's buffer, or (rarely) a copy of its first ones.
    pub records: Records,
}

impl Part {
    /// The part as the wire's result.
    pub fn result(&self) -> ReplicaFetchResult<'_> {
        let r = &self.response;
        ReplicaFetchResult {
            topic: &self.topic,
            partition: r.partition.0,
            error: self.error,
            leader: r.leader.0,
            leader_epoch: r.leader_epoch.0,
            fetch_id: r.fetch_id,
            fetch_offset: r.fetch_offset.0 as i64,
            replica_epoch: r.replica_epoch.0,
            diverging: r
                .diverging_epoch
                .map(|d| (d.epoch.0 as i32, d.end_offset.0)),
            high_watermark: r.high_watermark.0 as i64,
            log_start_offset: -1,
            payload_bytes: self.records.as_slice().len() as u32,
        }
    }
}

/// The wire's code for a replica's refusal.
fn wire_error(e: Option<FetchError>) -> ReplicaFetchError {
    match e {
        None => ReplicaFetchError::None,
        Some(FetchError::NotLeaderOrFollower) => ReplicaFetchError::NotLeaderOrFollower,
        Some(FetchError::FencedLeaderEpoch) => ReplicaFetchError::FencedLeaderEpoch,
        Some(FetchError::UnknownLeaderEpoch) => ReplicaFetchError::UnknownLeaderEpoch,
        Some(FetchError::UnknownReplica) => ReplicaFetchError::UnknownReplica,
    }
}

/// Serves one poll: the parts of its answer, in order.
pub async fn replica_fetch(shard: &Rc<Shard>, request: &ReplicaFetchRequest<'_>) -> Vec<Part> {
    let repl = shard.replication();
    let follower = request.replica();
    let follower_shard = request.replica_shard();
    let mut parts = Vec::new();
    for p in request.partitions().iter().flatten() {
        let fetch = FetchRequest {
            partition: PartitionId(p.partition()),
            replica: BrokerId(follower),
            replica_epoch: BrokerEpoch(request.replica_epoch()),
            leader_epoch: LeaderEpoch(p.leader_epoch()),
            fetch_offset: Offset(p.fetch_offset().max(0) as u64),
            last_fetched_epoch: (p.last_fetched_epoch() >= 0)
                .then(|| LeaderEpoch(p.last_fetched_epoch() as u32)),
            fetch_id: p.fetch_id(),
        };
        match repl.get(p.topic(), p.partition()) {
            Some(replica) => replica.on_fetch(shard, fetch, follower_shard).await,
            None => parts.push(Part {
                topic: p.topic().to_owned(),
                response: refused(&fetch, shard.config().broker_id),
                error: ReplicaFetchError::UnknownTopicOrPartition,
                records: Records::Empty,
            }),
        }
    }
    let wait = Duration::from_millis(u64::from(request.max_wait_ms())).min(MAX_WAIT_CAP);
    let deadline = std::time::Instant::now() + wait;
    let mut decided: Vec<(Rc<Replicated>, Served)> = Vec::new();
    loop {
        let seen = repl.served_ready.generation();
        for r in repl.all() {
            if let Some(s) = r.take_served(follower, follower_shard) {
                decided.push((r, s));
            }
        }
        let now = std::time::Instant::now();
        // An answer is worth sending once it has durable batches to carry
        // or says something (an error, a divergence, nothing to read):
        // batches the leader has not fsynced yet would make an empty
        // answer, and the same fetch would come straight back.
        let useful = decided.iter().any(|(r, s)| match s.read_from {
            Some(from) => r.partition().log().durable_end() > from.0,
            None => true,
        });
        if useful || !parts.is_empty() || now >= deadline || shard.stopping() {
            break;
        }
        repl.served_ready.wait(seen, deadline - now).await;
    }
    let mut budget = request.max_bytes() as usize;
    for (r, served) in decided {
        let partition = r.partition();
        let mut part = Part {
            topic: partition.topic().to_owned(),
            error: wire_error(served.response.error),
            response: served.response,
            records: Records::Empty,
        };
        if let Some(from) = served.read_from {
            let log = partition.log();
            let max = (1usize << 20).min(budget.max(1));
            match log.read_below(from.0, max, log.durable_end()).await {
                Ok(read) => {
                    let len = read.bytes.as_slice().len();
                    // Whole batches only, at most as many as a replica takes.
                    let keep = super::fetcher::prefix_len(read.bytes.as_slice(), MAX_FETCH_BATCHES);
                    budget = budget.saturating_sub(keep);
                    part.records = if keep == len {
                        Records::Log(read.bytes)
                    } else {
                        // Rare: more small batches than a replica takes at
                        // once. Sent as the first ones, copied.
                        Records::Copied(bytes::Bytes::copy_from_slice(
                            &read.bytes.as_slice()[..keep],
                        ))
                    };
                }
                Err(e) => {
                    tracing::warn!(topic = partition.topic(), partition = partition.number(),
                        offset = from.0, error = %e, "reading for a follower failed");
                    part.error = ReplicaFetchError::StorageError;
                }
            }
        }
        parts.push(part);
    }
    parts
}

fn refused(fetch: &FetchRequest, leader: u32) -> FetchResponse {
    FetchResponse {
        partition: fetch.partition,
        leader: BrokerId(leader),
        leader_epoch: fetch.leader_epoch,
        fetch_id: fetch.fetch_id,
        fetch_offset: fetch.fetch_offset,
        replica_epoch: fetch.replica_epoch,
        error: Some(FetchError::NotLeaderOrFollower),
        diverging_epoch: None,
        high_watermark: Offset(0),
        batches: Vec::new(),
    }
}
