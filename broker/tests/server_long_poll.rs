//! A long poll on a partition the broker writes itself must be woken by
//! that write, as one on a produced-to partition is by the produce: a fetch
//! parked at the end of the group's `__consumer_offsets` partition answers
//! with the record of an OffsetCommit as soon as the commit lands, not only
//! at its max_wait. No clock decides it: the poll must answer before a
//! second long poll, sent on its connection after the commit was
//! acknowledged and woken by a produce. Driven over raw frames on the real
//! binary.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{net::SocketAddr, time::Instant};

use broker_format::BatchBuilder;
use broker_protocol::generated::{
    FetchResponse, FindCoordinatorResponse, JoinGroupResponse, ListOffsetsResponse,
    MetadataResponse,
};
use broker_protocol::{Acks, FetchParams, OffsetEntry, OffsetQuery, TopicSettings};
use server_support::{Broker, Conn};

const GROUP: &str = "g";
const TOPIC: &str = "orders";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Long enough that a poll answered only at its deadline answers after the
/// witness poll, which a produce wakes.
const MAX_WAIT_MS: u32 = 20_000;
const SESSION_MS: u32 = 60_000;

/// Every record in `payload` (record batches) as (key, value) strings.
fn records(payload: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in broker_format::batches(payload) {
        let (_, bytes) = b.unwrap();
        for r in broker_format::records(bytes).unwrap() {
            let r = r.unwrap();
            let text =
                |x: Option<&[u8]>| String::from_utf8_lossy(x.unwrap_or_default()).into_owned();
            out.push((text(r.key), text(r.value)));
        }
    }
    out
}

#[test]
fn long_poll_on_consumer_offsets_returns_when_a_commit_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 1, &[]);
    let mut admin = Conn::connect(broker.listen);
    let f = admin.call(&[], |w, out, id| {
        w.create_topic_request(out, id, TOPIC, 2, &TopicSettings::default())
            .unwrap();
    });
    assert!(f.error().is_none(), "{:?}", f.error());

    // The group's coordinator, and its offsets partition: fnv1a(group) % 16,
    // owned by the coordinator.
    let f = admin.call(&[], |w, out, id| {
        w.find_coordinator_request(out, id, GROUP).unwrap();
    });
    assert!(f.error().is_none(), "{:?}", f.error());
    let c = f.decode::<FindCoordinatorResponse>().body;
    let shard = c.shard();
    let coordinator: SocketAddr = broker.shards[usize::from(shard)];
    let f = admin.call(&[], |w, out, id| {
        w.metadata_request(out, id, &[OFFSETS_TOPIC]).unwrap();
    });
    let m = f.decode::<MetadataResponse>().body;
    let t = m.topics().unwrap().get(0);
    assert!(t.error().is_none());
    let count = t.partitions().unwrap().len() as u32;
    let p = broker_server::metadata::name_hash(GROUP) % count;
    assert_eq!(t.partitions().unwrap().get(p as usize).shard(), shard);

    // One member joins and is assigned every partition.
    let mut member = Conn::connect(coordinator);
    let f = member.call(&[], |w, out, id| {
        w.join_group_request(out, id, GROUP, "", &[TOPIC], SESSION_MS)
            .unwrap();
    });
    assert!(f.error().is_none(), "{:?}", f.error());
    let r = f.decode::<JoinGroupResponse>().body;
    let member_id = r.member_id().unwrap().to_string();
    let generation = r.generation();
    let assigned: Vec<u32> = r
        .assignment()
        .unwrap()
        .iter()
        .flat_map(|t| t.partitions().unwrap().iter())
        .collect();
    assert!(assigned.contains(&1), "assigned {assigned:?}");

    // On its own connection to the coordinator, a long poll at the end of
    // the offsets partition. A ListOffsets pipelined behind it is answered
    // first: the fetch was taken up (the shard runs requests in arrival
    // order) and is waiting.
    let mut poller = Conn::connect(coordinator);
    let f = poller.call(&[], |w, out, id| {
        w.list_offsets_request(out, id, OFFSETS_TOPIC, p, OffsetQuery::Latest)
            .unwrap();
    });
    assert!(f.error().is_none(), "{:?}", f.error());
    let end = f.decode::<ListOffsetsResponse>().body.offset();
    let started = Instant::now();
    let fetch_id = poller.send(&[], |w, out, id| {
        let params = FetchParams {
            topic: OFFSETS_TOPIC,
            partition: p,
            offset: end,
            max_bytes: 1 << 20,
            max_wait_ms: MAX_WAIT_MS,
        };
        w.fetch_request(out, id, &params).unwrap();
    });
    let barrier_id = poller.send(&[], |w, out, id| {
        w.list_offsets_request(out, id, OFFSETS_TOPIC, p, OffsetQuery::Latest)
            .unwrap();
    });
    let f = poller.recv().unwrap();
    assert_eq!(
        f.request_id(),
        barrier_id,
        "the fetch answered before anything was committed"
    );
    assert_eq!(f.decode::<ListOffsetsResponse>().body.offset(), end);

    // The member commits.
    let f = member.call(&[], |w, out, id| {
        let e = [OffsetEntry {
            topic: TOPIC,
            partition: 1,
            offset: 42,
        }];
        w.offset_commit_request(out, id, GROUP, &member_id, generation, &e)
            .unwrap();
    });
    assert!(f.error().is_none(), "the commit failed: {:?}", f.error());

    // A witness that needs no clock: once the commit is acknowledged, a
    // second long poll, at the end of a produced partition, is sent on the
    // same connection and woken by a produce. The poll on the offsets
    // partition was woken (if at all) before the commit was acknowledged,
    // so it must answer first; a poll the commit did not wake is still
    // waiting for its max_wait when the produced one answers.
    let witness_id = poller.send(&[], |w, out, id| {
        let params = FetchParams {
            topic: TOPIC,
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: MAX_WAIT_MS,
        };
        w.fetch_request(out, id, &params).unwrap();
    });
    let mut b = BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    let batch = b.finish();
    let f = member.call(&batch, |w, out, id| {
        w.produce_request(out, id, TOPIC, 0, Acks::Leader, batch.len())
            .unwrap();
    });
    assert!(f.error().is_none(), "the produce failed: {:?}", f.error());

    // Answers come as they complete: the first must be the offsets poll's.
    let first = poller.recv().unwrap();
    let first_after = started.elapsed();
    let second = poller.recv().unwrap();
    let second_after = started.elapsed();
    let woken = first.request_id() == fetch_id;
    let (f, w, waited) = if woken {
        (first, second, first_after)
    } else {
        (second, first, second_after)
    };
    println!(
        "the long poll on {OFFSETS_TOPIC}/{p} answered after {waited:?}, {} the \
         later one on {TOPIC}/0",
        if woken { "before" } else { "after" }
    );
    assert_eq!(w.request_id(), witness_id);
    let witness = w.decode::<FetchResponse>();
    assert!(witness.body.error().is_none(), "{:?}", w.error());
    assert_eq!(records(witness.payload), [("k".into(), "v".into())]);
    assert_eq!(f.request_id(), fetch_id);
    let r = f.decode::<FetchResponse>();
    assert!(r.body.error().is_none(), "{:?}", f.error());
    let got = records(r.payload);
    assert!(
        woken,
        "the long poll on {OFFSETS_TOPIC} returned no records when the commit \
         landed: the commit did not wake it (a long poll on {TOPIC}/0 started \
         after the commit was acknowledged was answered first; the one on \
         {OFFSETS_TOPIC} answered only at its max_wait of {MAX_WAIT_MS} ms, \
         after {waited:?}, with {} records)",
        got.len()
    );
    assert!(
        !got.is_empty(),
        "the long poll on {OFFSETS_TOPIC} returned no records: the commit did \
         not wake it (answered after {waited:?}, max_wait {MAX_WAIT_MS} ms)"
    );
    let committed = got.iter().any(|(key, value)| {
        let v: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
        key == GROUP && v["topic"] == TOPIC && v["partition"] == 1 && v["offset"] == 42
    });
    assert!(
        committed,
        "no record of {GROUP:?} committing {TOPIC}/1 at 42 in {got:?}"
    );
    assert!(r.body.next_offset() > end);
}
