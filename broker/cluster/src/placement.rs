//! Where partitions go: a pure function of the topic's name, its partition
//! count and the unfenced brokers with their shard counts. Also the rule
//! that moves partitions off shards a broker no longer has.
//!
//! The rule, for a topic `t` with `P` partitions over `B` brokers sorted by
//! id, `h = fnv1a(t)`:
//! - partition `p` goes to broker `(h + p) mod B`, so each broker gets
//!   `floor(P/B)` or `ceil(P/B)` partitions, and the first partition of
//!   different topics lands on different brokers;
//! - on its broker (with `S` shards) it is that broker's `k = p / B`-th
//!   partition of the topic, and goes to shard `(h / B + k) mod S`, so each
//!   shard gets the floor or ceil of the broker's share. The start uses
//!   `h / B`, not `h`, so that the broker and the shard are independent
//!   digits of the hash: with `h`, a topic that lands on broker 0 of two
//!   would only ever start on even shards.
//!
//! With one broker this is `(h + p) mod S`, today's single-broker placement
//! (broker-server's `metadata::place`), so a one-broker cluster places as a
//! standalone broker does. The offsets topic is placed by the same rule, so
//! its partitions, and with them the groups' coordinators (a group's
//! partition is `fnv1a(group) mod partitions`), spread over every broker
//! and shard.

use serde::{Deserialize, Serialize};

use crate::ids::{BrokerId, ShardIndex};

/// Where one partition lives: its broker and the shard of that broker that
/// owns its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// The owning broker.
    pub broker: BrokerId,
    /// The owning shard, below the broker's shard count.
    pub shard: ShardIndex,
}

/// FNV-1a (32 bits) over the name: stable across builds and platforms,
/// since it decides persisted placement. The same function as
/// broker-server's `metadata::name_hash`.
pub fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The placement of every partition of `topic` over `brokers`: each
/// broker's id and shard count, sorted by id without duplicates (as the
/// image's map yields them), shard counts at least 1. Empty when `brokers`
/// is.
pub fn place(topic: &str, partitions: u32, brokers: &[(BrokerId, u16)]) -> Vec<Placement> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let hash = u64::from(name_hash(topic));
    let b = brokers.len() as u64;
    (0..u64::from(partitions))
        .map(|p| {
            // Both indexes are below a length that fits in usize / u16.
            let (broker, shards) = brokers[((hash + p) % b) as usize];
            let shards = u64::from(shards.max(1));
            let shard = ((hash / b + p / b) % shards) as u16;
            Placement {
                broker,
                shard: ShardIndex(shard),
            }
        })
        .collect()
}

/// The replicas of every partition of `topic` over `brokers` (as for
/// [`place`]), `replication_factor` each on distinct brokers (at most
/// `brokers.len()`). Replica 0, the preferred leader, of partition `p` is
/// on broker `(h + p) mod B`, where [`place`] puts the partition, so
/// leaders spread as partitions do; each further replica goes to the
/// broker holding the fewest of the topic's replicas so far among those
/// the partition does not have yet, ties to the first from `(h + p + i)
/// mod B` on, so replicas spread too. On a broker, its `k`-th replica of
/// the topic (in partition, then replica order) goes to shard `(h / B + k)
/// mod S`: replicas spread over its shards. With one replica this is
/// [`place`], partition by partition.
pub fn place_replicas(
    topic: &str,
    partitions: u32,
    replication_factor: u16,
    brokers: &[(BrokerId, u16)],
) -> Vec<Vec<Placement>> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let hash = u64::from(name_hash(topic));
    let b = brokers.len();
    let rf = usize::from(replication_factor).clamp(1, b);
    let mut count = vec![0u64; b];
    (0..u64::from(partitions))
        .map(|p| {
            // Below `b`, which is a usize.
            let first = ((hash + p) % b as u64) as usize;
            let mut chosen = vec![first];
            for i in 1..rf {
                let start = (first + i) % b;
                let pick = (0..b)
                    .map(|k| (start + k) % b)
                    .filter(|x| !chosen.contains(x))
                    .min_by_key(|&x| count[x]);
                if let Some(x) = pick {
                    chosen.push(x);
                }
            }
            chosen
                .into_iter()
                .map(|index| {
                    let (broker, shards) = brokers[index];
                    let k = count[index];
                    count[index] += 1;
                    // Below the shard count, a u16.
                    let shard = ((hash / b as u64 + k) % u64::from(shards.max(1))) as u16;
                    Placement {
                        broker,
                        shard: ShardIndex(shard),
                    }
                })
                .collect()
        })
        .collect()
}

/// Moves the partitions of `topic` that `broker` holds on shards it no
/// longer has (it registered again with `shards` shards, fewer than before)
/// onto its remaining shards. Partitions on remaining shards never move.
/// Each moved partition, in partition order, goes to the remaining shard
/// holding the fewest of the topic's partitions on that broker; ties go to
/// the first from `(h + p) mod shards` on (today's single-broker rule), so
/// that many one-partition topics do not all land on shard 0. A balanced
/// broker (per-shard counts within one) stays balanced.
pub(crate) fn fit_to_shards(
    topic: &str,
    placements: &mut [Placement],
    broker: BrokerId,
    shards: u16,
) {
    let n = usize::from(shards.max(1));
    let on_broker = |pl: &Placement| pl.broker == broker;
    if !placements
        .iter()
        .any(|pl| on_broker(pl) && usize::from(pl.shard.0) >= n)
    {
        return;
    }
    let mut load = vec![0u32; n];
    for pl in placements.iter().filter(|pl| on_broker(pl)) {
        if let Some(l) = load.get_mut(usize::from(pl.shard.0)) {
            *l += 1;
        }
    }
    let hash = u64::from(name_hash(topic));
    for (p, pl) in placements.iter_mut().enumerate() {
        if !on_broker(pl) || usize::from(pl.shard.0) < n {
            continue;
        }
        let start = ((hash + p as u64) % n as u64) as usize;
        let mut best = start;
        for s in (0..n).map(|i| (start + i) % n) {
            if load[s] < load[best] {
                best = s;
            }
        }
        load[best] += 1;
        // `best < n <= MAX_SHARDS_PER_BROKER`, so it fits a u16.
        pl.shard = ShardIndex(best as u16);
    }
}
