//! The wire protocol's frame codec: every request and response round-trips
//! with its payload byte for byte; truncated, oversized, malformed and random
//! input is refused with a clear error (or "need more bytes"), never a panic,
//! and never after allocating for a length the peer claimed.
//!
//! Property tests use a fixed seed so runs are reproducible; set
//! `PROPTEST_RNG_SEED` to explore others. A failure prints the seed and the
//! minimal failing input.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use broker_format::BatchBuilder;
use broker_protocol::generated::{
    CreateTopicResponse, DeleteTopicResponse, FetchRequest, FetchResponse, ListOffsetsResponse,
    ListTopicsResponse, ListTopicsResponseArgs, MetadataResponse, MetadataResponseArgs,
    ProduceRequest, ProduceRequestArgs, ProduceResponse, ReplicaFetchPartition,
    ReplicaFetchPartitionArgs, ReplicaFetchPartitionResult, ReplicaFetchPartitionResultArgs,
    ReplicaFetchRequest, ReplicaFetchRequestArgs, ReplicaFetchResponse, ReplicaFetchResponseArgs,
    ShardEndpoint, ShardEndpointArgs, TopicListing, TopicListingArgs,
};
use broker_protocol::limits::{
    DEFAULT_MAX_FRAME_BYTES, MAX_HEADER_BYTES, MAX_PARTITIONS_PER_REPLICA_FETCH,
    MAX_PARTITIONS_PER_TOPIC, MAX_TOPICS_PER_REQUEST, MAX_TOPIC_NAME_BYTES,
};
use broker_protocol::{
    decode_as, decode_frame, decode_prefix, encode_prefix, Acks, ApiKey, Body, ErrorCode,
    FetchParams, FetchPosition, FrameError, FrameHeader, FrameWriter, OffsetQuery, OffsetSpec,
    ResponseError, ShardAddress, TopicDescription, TopicSettings, TopicSummary, BROKER_DEFAULT,
    FRAME_PREFIX_LEN, NO_LIMIT, PROTOCOL_VERSION,
};
use broker_protocol::{
    replica_fetch_slices, ReplicaFetchError, ReplicaFetchParams, ReplicaFetchPartitionParams,
    ReplicaFetchResult,
};
use broker_protocol::{GroupSummary, MemberSummary, OffsetEntry, TopicAssignment};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

// ---------------------------------------------------------------------------
// Allocation counting: "refused before any allocation" is checked, not assumed.

/// The system allocator, counting allocations made by the current thread.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: allocations during thread teardown are not ours to count.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded to `System` with the same arguments.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// `f`'s result and how many allocations this thread made while it ran.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

// ---------------------------------------------------------------------------
// Sample frames: one of every request and response.

fn batches() -> Vec<u8> {
    each_batch().concat()
}

/// The three batches of [`batches`], each on its own.
fn each_batch() -> Vec<Vec<u8>> {
    [3usize, 1, 7]
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let mut b = BatchBuilder::new(1_700_000_000_000 + i as i64);
            for r in 0..n {
                let value = format!("record {i}.{r}");
                b.push(
                    1_700_000_000_000 + r as i64,
                    Some(b"key"),
                    Some(value.as_bytes()),
                    &[],
                );
            }
            b.finish().to_vec()
        })
        .collect()
}

/// The partitions of the sample ReplicaFetchRequest.
const REPLICA_FETCH_PARTITIONS: [ReplicaFetchPartitionParams<'static>; 3] = [
    ReplicaFetchPartitionParams {
        topic: "orders",
        partition: 0,
        leader_epoch: 4,
        fetch_offset: 120,
        last_fetched_epoch: 3,
        fetch_id: 1 << 40,
        max_bytes: 1 << 20,
    },
    ReplicaFetchPartitionParams {
        topic: "orders",
        partition: 2,
        leader_epoch: 4,
        fetch_offset: 0,
        last_fetched_epoch: -1,
        fetch_id: 7,
        max_bytes: 4096,
    },
    ReplicaFetchPartitionParams {
        topic: "clicks",
        partition: 5,
        leader_epoch: 9,
        fetch_offset: 77,
        last_fetched_epoch: 9,
        fetch_id: u64::MAX,
        max_bytes: 65536,
    },
];

/// The results of the sample ReplicaFetchResponse, whose payload is
/// `each_batch()`: batches 0 and 1 for the first partition, none for the
/// two that failed or diverged, batch 2 for the last.
fn replica_fetch_results(batches: &[Vec<u8>]) -> [ReplicaFetchResult<'static>; 4] {
    let ok = ReplicaFetchResult {
        topic: "orders",
        partition: 0,
        error: ReplicaFetchError::None,
        leader: 2,
        leader_epoch: 4,
        fetch_id: 1 << 40,
        fetch_offset: 120,
        replica_epoch: 1 << 33,
        diverging: None,
        high_watermark: 130,
        log_start_offset: 10,
        payload_bytes: (batches[0].len() + batches[1].len()) as u32,
    };
    [
        ok,
        ReplicaFetchResult {
            partition: 2,
            error: ReplicaFetchError::NotLeaderOrFollower,
            leader: 3,
            fetch_id: 7,
            fetch_offset: 0,
            high_watermark: -1,
            log_start_offset: -1,
            payload_bytes: 0,
            ..ok
        },
        ReplicaFetchResult {
            topic: "clicks",
            partition: 5,
            leader_epoch: 9,
            fetch_id: u64::MAX,
            fetch_offset: 77,
            diverging: Some((8, 70)),
            payload_bytes: 0,
            ..ok
        },
        ReplicaFetchResult {
            topic: "clicks",
            partition: 6,
            fetch_id: 8,
            fetch_offset: 0,
            high_watermark: 11,
            log_start_offset: 0,
            payload_bytes: batches[2].len() as u32,
            ..ok
        },
    ]
}

const SETTINGS: TopicSettings = TopicSettings {
    retention_ms: 3_600_000,
    retention_bytes: NO_LIMIT,
    segment_bytes: 1 << 20,
};

/// A whole frame (prefix, header, payload) and its payload.
struct Sample {
    name: &'static str,
    frame: Vec<u8>,
    payload: Vec<u8>,
}

/// One frame of every request and response, request ids 1, 2, 3, ...
fn samples() -> Vec<Sample> {
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    let mut id = 0u64;
    let records = batches();
    let mut frame =
        |name: &'static str,
         payload: &[u8],
         write: &mut dyn FnMut(&mut FrameWriter, &mut Vec<u8>, u64)| {
            id += 1;
            out.clear();
            write(&mut w, &mut out, id);
            out.extend_from_slice(payload);
            Sample {
                name,
                frame: out.clone(),
                payload: payload.to_vec(),
            }
        };
    let shards = [1u16, 0, 1];
    vec![
        frame("CreateTopicRequest", &[], &mut |w, o, id| {
            w.create_topic_request(o, id, "orders", 3, &SETTINGS)
                .unwrap();
        }),
        frame("CreateTopicResponse", &[], &mut |w, o, id| {
            w.create_topic_response(o, id, 3, &SETTINGS).unwrap();
        }),
        frame("DeleteTopicRequest", &[], &mut |w, o, id| {
            w.delete_topic_request(o, id, "orders").unwrap();
        }),
        frame("DeleteTopicResponse", &[], &mut |w, o, id| {
            w.delete_topic_response(o, id).unwrap();
        }),
        frame("ListTopicsRequest", &[], &mut |w, o, id| {
            w.list_topics_request(o, id).unwrap();
        }),
        frame("ListTopicsResponse", &[], &mut |w, o, id| {
            let topics = [
                TopicSummary {
                    name: "clicks",
                    partitions: 8,
                },
                TopicSummary {
                    name: "orders",
                    partitions: 3,
                },
            ];
            w.list_topics_response(o, id, &topics).unwrap();
        }),
        frame("MetadataRequest", &[], &mut |w, o, id| {
            w.metadata_request(o, id, &["orders", "missing"]).unwrap();
        }),
        frame("MetadataResponse", &[], &mut |w, o, id| {
            let addresses = [
                ShardAddress {
                    host: "127.0.0.1",
                    port: 9093,
                },
                ShardAddress {
                    host: "127.0.0.1",
                    port: 9094,
                },
            ];
            let topics = [
                TopicDescription {
                    name: "orders",
                    error: None,
                    config: SETTINGS,
                    partition_shards: &shards,
                },
                TopicDescription {
                    name: "missing",
                    error: Some(ResponseError::new(
                        ErrorCode::UnknownTopic,
                        "no topic named \"missing\"",
                    )),
                    config: TopicSettings::default(),
                    partition_shards: &[],
                },
            ];
            w.metadata_response(o, id, &addresses, &topics).unwrap();
        }),
        frame("ProduceRequest", &records, &mut |w, o, id| {
            w.produce_request(o, id, "orders", 2, Acks::Leader, records.len())
                .unwrap();
        }),
        frame("ProduceResponse", &[], &mut |w, o, id| {
            w.produce_response(o, id, 40, 50).unwrap();
        }),
        frame("FetchRequest", &[], &mut |w, o, id| {
            let params = FetchParams {
                topic: "orders",
                partition: 2,
                offset: 42,
                max_bytes: 1 << 20,
                max_wait_ms: 500,
            };
            w.fetch_request(o, id, &params).unwrap();
        }),
        frame("FetchResponse", &records, &mut |w, o, id| {
            let position = FetchPosition {
                high_watermark: 51,
                log_start_offset: 10,
                next_offset: 51,
            };
            w.fetch_response(o, id, &position, records.len()).unwrap();
        }),
        frame("ListOffsetsRequest", &[], &mut |w, o, id| {
            w.list_offsets_request(
                o,
                id,
                "orders",
                2,
                OffsetQuery::Timestamp(1_700_000_000_123),
            )
            .unwrap();
        }),
        frame("ListOffsetsResponse", &[], &mut |w, o, id| {
            w.list_offsets_response(o, id, 44, 10, 51).unwrap();
        }),
        frame("FindCoordinatorRequest", &[], &mut |w, o, id| {
            w.find_coordinator_request(o, id, "billing").unwrap();
        }),
        frame("FindCoordinatorResponse", &[], &mut |w, o, id| {
            w.find_coordinator_response(o, id, 1, "127.0.0.1", 9094)
                .unwrap();
        }),
        frame("JoinGroupRequest", &[], &mut |w, o, id| {
            w.join_group_request(o, id, "billing", "m-1", &["orders", "refunds"], 6000)
                .unwrap();
        }),
        frame("JoinGroupResponse", &[], &mut |w, o, id| {
            let a = [TopicAssignment {
                topic: "orders",
                partitions: &[0, 3],
            }];
            w.join_group_response(o, id, 7, "m-1", &a, 3).unwrap();
        }),
        frame("HeartbeatRequest", &[], &mut |w, o, id| {
            w.heartbeat_request(o, id, "billing", "m-1", 7).unwrap();
        }),
        frame("HeartbeatResponse", &[], &mut |w, o, id| {
            w.heartbeat_response(o, id).unwrap();
        }),
        frame("LeaveGroupRequest", &[], &mut |w, o, id| {
            w.leave_group_request(o, id, "billing", "m-1").unwrap();
        }),
        frame("LeaveGroupResponse", &[], &mut |w, o, id| {
            w.leave_group_response(o, id).unwrap();
        }),
        frame("OffsetCommitRequest", &[], &mut |w, o, id| {
            let e = [OffsetEntry {
                topic: "orders",
                partition: 3,
                offset: 120,
            }];
            w.offset_commit_request(o, id, "billing", "m-1", 7, &e)
                .unwrap();
        }),
        frame("OffsetCommitResponse", &[], &mut |w, o, id| {
            w.offset_commit_response(o, id).unwrap();
        }),
        frame("OffsetFetchRequest", &[], &mut |w, o, id| {
            let a = [TopicAssignment {
                topic: "orders",
                partitions: &[3],
            }];
            w.offset_fetch_request(o, id, "billing", &a).unwrap();
        }),
        frame("OffsetFetchResponse", &[], &mut |w, o, id| {
            let e = [OffsetEntry {
                topic: "orders",
                partition: 3,
                offset: 120,
            }];
            w.offset_fetch_response(o, id, &e).unwrap();
        }),
        frame("ListGroupsRequest", &[], &mut |w, o, id| {
            w.list_groups_request(o, id).unwrap();
        }),
        frame("ListGroupsResponse", &[], &mut |w, o, id| {
            let g = [GroupSummary {
                group: "billing",
                state: "Stable",
                members: 3,
                generation: 7,
            }];
            w.list_groups_response(o, id, &g).unwrap();
        }),
        frame("DescribeGroupRequest", &[], &mut |w, o, id| {
            w.describe_group_request(o, id, "billing").unwrap();
        }),
        frame("DescribeGroupResponse", &[], &mut |w, o, id| {
            let a = [TopicAssignment {
                topic: "orders",
                partitions: &[0, 3],
            }];
            let m = [MemberSummary {
                member_id: "m-1",
                topics: &["orders"],
                assignment: &a,
            }];
            let e = [OffsetEntry {
                topic: "orders",
                partition: 3,
                offset: 120,
            }];
            w.describe_group_response(o, id, "Stable", 7, &m, &e)
                .unwrap();
        }),
        frame("ReplicaFetchRequest", &[], &mut |w, o, id| {
            let params = ReplicaFetchParams {
                replica: 3,
                replica_epoch: 1 << 33,
                replica_shard: 1,
                max_wait_ms: 500,
                max_bytes: 8 << 20,
                partitions: &REPLICA_FETCH_PARTITIONS,
            };
            w.replica_fetch_request(o, id, &params).unwrap();
        }),
        frame("ReplicaFetchResponse", &records, &mut |w, o, id| {
            let results = replica_fetch_results(&each_batch());
            w.replica_fetch_response(o, id, &results, records.len())
                .unwrap();
        }),
    ]
}

fn sample(name: &str) -> Sample {
    samples().into_iter().find(|s| s.name == name).unwrap()
}

// ---------------------------------------------------------------------------
// Round trips.

#[test]
fn every_request_and_response_round_trips_with_its_payload() {
    let all = samples();
    assert_eq!(all.len(), 32, "one sample per api and direction");
    for (i, s) in all.iter().enumerate() {
        let frame = decode_frame(&s.frame, DEFAULT_MAX_FRAME_BYTES)
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let h = frame.header;
        assert_eq!(frame.body.name(), s.name);
        assert_eq!(h.version(), PROTOCOL_VERSION);
        assert_eq!(h.request_id(), i as u64 + 1, "{}", s.name);
        assert_eq!(h.is_response(), s.name.ends_with("Response"), "{}", s.name);
        assert_eq!(h.frame_bytes(), s.frame.len(), "{}", s.name);
        assert_eq!(
            FRAME_PREFIX_LEN + h.header_len() + h.payload_len(),
            s.frame.len()
        );
        // Byte for byte, and borrowed from the frame: no copy on decode.
        assert_eq!(frame.payload, &s.payload[..], "{}", s.name);
        let tail = &s.frame[s.frame.len() - s.payload.len()..];
        assert_eq!(frame.payload.as_ptr(), tail.as_ptr(), "{}", s.name);
        // The prefix re-encodes to the same bytes.
        assert_eq!(encode_prefix(&h), s.frame[..FRAME_PREFIX_LEN], "{}", s.name);
        assert_eq!(
            decode_prefix(&s.frame, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            Some(h)
        );
        check_fields(&frame.body);
    }
}

/// Every field of every sample reads back as written.
fn check_fields(body: &Body<'_>) {
    match *body {
        Body::CreateTopicRequest(r) => {
            assert_eq!(r.name(), "orders");
            assert_eq!(r.partitions(), 3);
            assert_eq!(TopicSettings::from_table(r.config()), SETTINGS);
        }
        Body::CreateTopicResponse(r) => {
            assert!(r.error().is_none());
            assert_eq!(r.partitions(), 3);
            assert_eq!(TopicSettings::from_table(r.config()), SETTINGS);
        }
        Body::DeleteTopicRequest(r) => assert_eq!(r.name(), "orders"),
        Body::DeleteTopicResponse(r) => assert!(r.error().is_none()),
        Body::ListTopicsRequest(_) => {}
        Body::ListTopicsResponse(r) => {
            assert!(r.error().is_none());
            let topics: Vec<_> = r
                .topics()
                .unwrap()
                .iter()
                .map(|t| (t.name().unwrap(), t.partitions()))
                .collect();
            assert_eq!(topics, [("clicks", 8), ("orders", 3)]);
        }
        Body::MetadataRequest(r) => {
            let topics: Vec<_> = r.topics().unwrap().iter().collect();
            assert_eq!(topics, ["orders", "missing"]);
        }
        Body::MetadataResponse(r) => {
            assert!(r.error().is_none());
            assert_eq!(r.shard_count(), 2);
            let shards: Vec<_> = r
                .shards()
                .unwrap()
                .iter()
                .map(|s| (s.shard(), s.host().unwrap(), s.port()))
                .collect();
            assert_eq!(shards, [(0, "127.0.0.1", 9093), (1, "127.0.0.1", 9094)]);
            let topics = r.topics().unwrap();
            assert_eq!(topics.len(), 2);
            let orders = topics.get(0);
            assert!(orders.error().is_none());
            assert_eq!(orders.name(), Some("orders"));
            assert_eq!(TopicSettings::from_table(orders.config()), SETTINGS);
            let placement: Vec<_> = orders
                .partitions()
                .unwrap()
                .iter()
                .map(|p| (p.partition(), p.shard()))
                .collect();
            assert_eq!(placement, [(0, 1), (1, 0), (2, 1)]);
            let missing = topics.get(1);
            assert_eq!(missing.name(), Some("missing"));
            let error = missing.error().unwrap();
            assert_eq!(error.code(), ErrorCode::UnknownTopic);
            assert_eq!(error.message(), Some("no topic named \"missing\""));
            assert!(missing.partitions().is_none());
        }
        Body::ProduceRequest(r) => {
            assert_eq!(r.topic(), "orders");
            assert_eq!(r.partition(), 2);
            assert_eq!(r.acks(), Acks::Leader);
        }
        Body::ProduceResponse(r) => {
            assert!(r.error().is_none());
            assert_eq!((r.base_offset(), r.last_offset()), (40, 50));
        }
        Body::FetchRequest(r) => {
            assert_eq!(r.topic(), "orders");
            assert_eq!(r.partition(), 2);
            assert_eq!(r.offset(), 42);
            assert_eq!(r.max_bytes(), 1 << 20);
            assert_eq!(r.max_wait_ms(), 500);
        }
        Body::FetchResponse(r) => {
            assert!(r.error().is_none());
            assert_eq!(r.high_watermark(), 51);
            assert_eq!(r.log_start_offset(), 10);
            assert_eq!(r.next_offset(), 51);
        }
        Body::ListOffsetsRequest(r) => {
            assert_eq!(r.topic(), "orders");
            assert_eq!(r.partition(), 2);
            assert_eq!(r.spec(), OffsetSpec::Timestamp);
            assert_eq!(
                OffsetQuery::from_request(&r),
                Some(OffsetQuery::Timestamp(1_700_000_000_123))
            );
        }
        Body::ListOffsetsResponse(r) => {
            assert!(r.error().is_none());
            assert_eq!(
                (r.offset(), r.log_start_offset(), r.high_watermark()),
                (44, 10, 51)
            );
        }
        Body::FindCoordinatorRequest(r) => assert_eq!(r.group(), "billing"),
        Body::FindCoordinatorResponse(r) => {
            assert_eq!(
                (r.shard(), r.host(), r.port()),
                (1, Some("127.0.0.1"), 9094)
            );
        }
        Body::JoinGroupRequest(r) => {
            assert_eq!(
                (r.group(), r.member_id(), r.session_timeout_ms()),
                ("billing", Some("m-1"), 6000)
            );
            let topics: Vec<&str> = r.topics().unwrap().iter().collect();
            assert_eq!(topics, ["orders", "refunds"]);
        }
        Body::JoinGroupResponse(r) => {
            assert_eq!(
                (r.generation(), r.member_id(), r.members()),
                (7, Some("m-1"), 3)
            );
            let a = r.assignment().unwrap().get(0);
            assert_eq!(a.topic(), Some("orders"));
            assert_eq!(a.partitions().unwrap().iter().collect::<Vec<_>>(), [0, 3]);
        }
        Body::HeartbeatRequest(r) => {
            assert_eq!(
                (r.group(), r.member_id(), r.generation()),
                ("billing", "m-1", 7)
            );
        }
        Body::HeartbeatResponse(r) => assert!(r.error().is_none()),
        Body::LeaveGroupRequest(r) => assert_eq!((r.group(), r.member_id()), ("billing", "m-1")),
        Body::LeaveGroupResponse(r) => assert!(r.error().is_none()),
        Body::OffsetCommitRequest(r) => {
            assert_eq!(
                (r.group(), r.member_id(), r.generation()),
                ("billing", "m-1", 7)
            );
            let o = r.offsets().unwrap().get(0);
            assert_eq!(
                (o.topic(), o.partition(), o.offset()),
                (Some("orders"), 3, 120)
            );
        }
        Body::OffsetCommitResponse(r) => assert!(r.error().is_none()),
        Body::OffsetFetchRequest(r) => {
            let p = r.partitions().unwrap().get(0);
            assert_eq!((r.group(), p.topic()), ("billing", Some("orders")));
        }
        Body::OffsetFetchResponse(r) => {
            let o = r.offsets().unwrap().get(0);
            assert_eq!(
                (o.topic(), o.partition(), o.offset()),
                (Some("orders"), 3, 120)
            );
        }
        Body::ListGroupsRequest(_) => {}
        Body::ListGroupsResponse(r) => {
            let g = r.groups().unwrap().get(0);
            assert_eq!(
                (g.group(), g.state(), g.members(), g.generation()),
                (Some("billing"), Some("Stable"), 3, 7)
            );
        }
        Body::DescribeGroupRequest(r) => assert_eq!(r.group(), "billing"),
        Body::DescribeGroupResponse(r) => {
            assert_eq!((r.state(), r.generation()), (Some("Stable"), 7));
            let m = r.members().unwrap().get(0);
            assert_eq!(m.member_id(), Some("m-1"));
            assert_eq!(
                m.assignment().unwrap().get(0).partitions().unwrap().len(),
                2
            );
            assert_eq!(r.offsets().unwrap().get(0).offset(), 120);
        }
        Body::ReplicaFetchRequest(r) => {
            assert_eq!(
                (
                    r.replica(),
                    r.replica_epoch(),
                    r.replica_shard(),
                    r.max_wait_ms(),
                    r.max_bytes()
                ),
                (3, 1 << 33, 1, 500, 8 << 20)
            );
            let got: Vec<_> = r
                .partitions()
                .unwrap()
                .iter()
                .map(|p| ReplicaFetchPartitionParams {
                    topic: p.topic(),
                    partition: p.partition(),
                    leader_epoch: p.leader_epoch(),
                    fetch_offset: p.fetch_offset(),
                    last_fetched_epoch: p.last_fetched_epoch(),
                    fetch_id: p.fetch_id(),
                    max_bytes: p.max_bytes(),
                })
                .collect();
            assert_eq!(got, REPLICA_FETCH_PARTITIONS);
        }
        Body::ReplicaFetchResponse(r) => {
            assert!(r.error().is_none());
            let got: Vec<_> = r.partitions().unwrap().iter().map(read_result).collect();
            assert_eq!(got, replica_fetch_results(&each_batch()));
        }
    }
}

/// A decoded result as the value that encoded it.
fn read_result<'a>(r: ReplicaFetchPartitionResult<'a>) -> ReplicaFetchResult<'a> {
    ReplicaFetchResult {
        topic: r.topic(),
        partition: r.partition(),
        error: r.error(),
        leader: r.leader(),
        leader_epoch: r.leader_epoch(),
        fetch_id: r.fetch_id(),
        fetch_offset: r.fetch_offset(),
        replica_epoch: r.replica_epoch(),
        diverging: (r.diverging_epoch() >= 0)
            .then(|| (r.diverging_epoch() as i32, r.diverging_end_offset() as u64)),
        high_watermark: r.high_watermark(),
        log_start_offset: r.log_start_offset(),
        payload_bytes: r.payload_bytes(),
    }
}

#[test]
fn decode_as_returns_the_expected_table_and_refuses_others() {
    let fetch = sample("FetchResponse");
    let f = decode_as::<FetchResponse>(&fetch.frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(f.body.next_offset(), 51);
    assert_eq!(f.payload, &fetch.payload[..]);

    let produce = sample("ProduceRequest");
    let f = decode_as::<ProduceRequest>(&produce.frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(f.body.topic(), "orders");
    assert_eq!(f.payload, &produce.payload[..]);

    // A request where its response is due, and another api.
    let err = decode_as::<FetchResponse>(&sample("FetchRequest").frame, DEFAULT_MAX_FRAME_BYTES)
        .unwrap_err();
    assert!(matches!(
        err,
        FrameError::UnexpectedMessage {
            expected: "FetchResponse",
            api_key: ApiKey::Fetch,
            response: false
        }
    ));
    assert_eq!(
        err.to_string(),
        "expected a FetchResponse but got Fetch request"
    );
    let err = decode_as::<ProduceResponse>(&fetch.frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(matches!(err, FrameError::UnexpectedMessage { .. }));
    assert!(!err.is_fatal());
}

#[test]
fn default_valued_fields_read_back_as_defaults() {
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    w.create_topic_request(
        &mut out,
        1,
        "t",
        BROKER_DEFAULT as i32,
        &TopicSettings::default(),
    )
    .unwrap();
    w.list_offsets_request(&mut out, 2, "t", 0, OffsetQuery::Earliest)
        .unwrap();
    w.metadata_request(&mut out, 3, &[]).unwrap();

    let h = decode_prefix(&out, DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .unwrap();
    let (first, rest) = out.split_at(h.frame_bytes());
    let Body::CreateTopicRequest(r) = decode_frame(first, DEFAULT_MAX_FRAME_BYTES).unwrap().body
    else {
        panic!("not a CreateTopicRequest");
    };
    assert_eq!(r.partitions(), -1);
    assert_eq!(
        TopicSettings::from_table(r.config()),
        TopicSettings::default()
    );
    assert_eq!(TopicSettings::from_table(None), TopicSettings::default());

    let h = decode_prefix(rest, DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .unwrap();
    let (second, third) = rest.split_at(h.frame_bytes());
    let Body::ListOffsetsRequest(r) = decode_frame(second, DEFAULT_MAX_FRAME_BYTES).unwrap().body
    else {
        panic!("not a ListOffsetsRequest");
    };
    assert_eq!(OffsetQuery::from_request(&r), Some(OffsetQuery::Earliest));
    assert_eq!(r.timestamp(), -1);

    let Body::MetadataRequest(r) = decode_frame(third, DEFAULT_MAX_FRAME_BYTES).unwrap().body
    else {
        panic!("not a MetadataRequest");
    };
    assert!(r.topics().is_none(), "no names: all topics");
}

#[test]
fn pipelined_frames_are_split_at_their_prefixes() {
    let all = samples();
    let mut stream = Vec::new();
    for s in &all {
        stream.extend_from_slice(&s.frame);
    }
    let mut rest = &stream[..];
    let mut ids = Vec::new();
    while !rest.is_empty() {
        let h = decode_prefix(rest, DEFAULT_MAX_FRAME_BYTES)
            .unwrap()
            .unwrap();
        let (frame, next) = rest.split_at(h.frame_bytes());
        let frame = decode_frame(frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        ids.push(frame.header.request_id());
        rest = next;
    }
    assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>());
}

#[test]
fn error_response_reads_as_the_response_of_every_api() {
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    let out_of_range = ResponseError::offset_out_of_range("offset 5 is below 10", 10, 51);
    w.error_response(&mut out, ApiKey::Fetch, 7, &out_of_range)
        .unwrap();
    let f = decode_as::<FetchResponse>(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(f.header.request_id(), 7);
    assert!(f.payload.is_empty());
    let e = f.body.error().unwrap();
    assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);
    assert_eq!(e.message(), Some("offset 5 is below 10"));
    assert_eq!((e.log_start_offset(), e.high_watermark()), (10, 51));
    assert_eq!(f.body.next_offset(), -1, "other fields read as defaults");

    let not_owner = ResponseError::new(ErrorCode::NotOwner, "partition 2 is owned by shard 1");
    let check = |api: ApiKey, code_of: &dyn Fn(&[u8]) -> Option<ErrorCode>| {
        let mut out = Vec::new();
        FrameWriter::new()
            .error_response(&mut out, api, 9, &not_owner)
            .unwrap();
        assert_eq!(code_of(&out), Some(ErrorCode::NotOwner), "{api:?}");
        // Also through the generic decoder.
        decode_frame(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    };
    let max = DEFAULT_MAX_FRAME_BYTES;
    check(ApiKey::CreateTopic, &|b| {
        decode_as::<CreateTopicResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::DeleteTopic, &|b| {
        decode_as::<DeleteTopicResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::ListTopics, &|b| {
        decode_as::<ListTopicsResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::Metadata, &|b| {
        decode_as::<MetadataResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::Produce, &|b| {
        decode_as::<ProduceResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::Fetch, &|b| {
        decode_as::<FetchResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::ListOffsets, &|b| {
        decode_as::<ListOffsetsResponse>(b, max)
            .unwrap()
            .body
            .error()
            .map(|e| e.code())
    });
    check(ApiKey::ReplicaFetch, &|b| {
        let f = decode_as::<ReplicaFetchResponse>(b, max).unwrap();
        // A refusal has no results and no payload: nothing to slice.
        assert_eq!(replica_fetch_slices(&f.body, f.payload), Ok(Vec::new()));
        f.body.error().map(|e| e.code())
    });

    // An api this code does not know still gets an answer under its key.
    let mut out = Vec::new();
    let unsupported = ResponseError::new(ErrorCode::UnsupportedApi, "unknown api key 99");
    w.error_response(&mut out, ApiKey(99), 3, &unsupported)
        .unwrap();
    let h = decode_prefix(&out, DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.api_key(), h.request_id(), h.is_response()),
        (ApiKey(99), 3, true)
    );
}

// ---------------------------------------------------------------------------
// Truncation, limits and malformed prefixes.

#[test]
fn truncated_frames_need_more_bytes_or_fail_clearly_at_every_byte() {
    for s in samples() {
        let len = s.frame.len();
        for cut in 0..len {
            let part = &s.frame[..cut];
            match decode_prefix(part, DEFAULT_MAX_FRAME_BYTES) {
                Ok(None) => assert!(cut < FRAME_PREFIX_LEN, "{} cut at {cut}", s.name),
                Ok(Some(h)) => {
                    assert!(cut >= FRAME_PREFIX_LEN, "{} cut at {cut}", s.name);
                    assert_eq!(h.frame_bytes(), len, "{} cut at {cut}", s.name);
                }
                Err(e) => panic!("{} cut at {cut}: prefix error {e}", s.name),
            }
            let err = decode_frame(part, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
            let declared = if cut < 4 { FRAME_PREFIX_LEN } else { len };
            assert_eq!(
                err,
                FrameError::LengthMismatch {
                    declared,
                    actual: cut
                },
                "{} cut at {cut}",
                s.name
            );
        }
    }
}

#[test]
fn truncated_headers_with_consistent_lengths_fail_verification() {
    for s in samples() {
        let whole = decode_frame(&s.frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let h = whole.header;
        let body = &s.frame[FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + h.header_len()];
        // Only the final bytes may go unnoticed: the zero padding after the
        // last string's terminator, which no field covers.
        let padding = body.iter().rev().take_while(|&&b| b == 0).count();
        for cut in 0..body.len() {
            let short = FrameHeader::new(h.api_key(), h.is_response(), 1, cut, 0).unwrap();
            let mut frame = encode_prefix(&short).to_vec();
            frame.extend_from_slice(&body[..cut]);
            match decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES) {
                Err(FrameError::InvalidHeader { table, .. }) => assert_eq!(table, s.name),
                Ok(f) if body.len() - cut <= padding => {
                    assert_eq!(format!("{:?}", f.body), format!("{:?}", whole.body));
                }
                other => panic!("{} header cut at {cut}: {other:?}", s.name),
            }
        }
    }
}

#[test]
fn huge_frame_length_is_refused_before_any_allocation() {
    // Only the length field has arrived: refused already.
    let claim = u32::MAX.to_be_bytes();
    let (result, allocations) =
        allocations_during(|| decode_prefix(&claim, DEFAULT_MAX_FRAME_BYTES));
    assert_eq!(
        result,
        Err(FrameError::TooLarge {
            frame_bytes: u64::from(u32::MAX) + 4,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
        })
    );
    assert_eq!(allocations, 0);
    assert!(result.unwrap_err().is_fatal());

    // A whole (short) buffer claiming 64 MiB + 1 byte, through both decoders.
    let mut frame = sample("ProduceRequest").frame;
    let frame_len = (DEFAULT_MAX_FRAME_BYTES - 4 + 1) as u32;
    frame[..4].copy_from_slice(&frame_len.to_be_bytes());
    let ((prefix, whole), allocations) = allocations_during(|| {
        (
            decode_prefix(&frame, DEFAULT_MAX_FRAME_BYTES),
            decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).map(|f| f.header),
        )
    });
    assert!(matches!(prefix, Err(FrameError::TooLarge { .. })));
    assert!(matches!(whole, Err(FrameError::TooLarge { .. })));
    assert_eq!(allocations, 0);
    assert_eq!(prefix.unwrap_err().error_code(), ErrorCode::FrameTooLarge);
}

#[test]
fn max_frame_is_chosen_per_decode_call() {
    let s = sample("FetchResponse");
    let len = s.frame.len();
    assert!(decode_frame(&s.frame, len).is_ok(), "exactly at the limit");
    let err = decode_frame(&s.frame, len - 1).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            frame_bytes: len as u64,
            max_frame_bytes: len as u64 - 1
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "frame of {len} bytes exceeds the limit of {} bytes",
            len - 1
        )
    );
    assert!(matches!(
        decode_prefix(&s.frame[..4], len - 1),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn successful_decode_allocates_nothing() {
    let all = samples();
    for s in &all {
        let (frame, allocations) =
            allocations_during(|| decode_frame(&s.frame, DEFAULT_MAX_FRAME_BYTES).is_ok());
        assert!(frame);
        assert_eq!(allocations, 0, "{}", s.name);
    }
}

#[test]
fn warm_writer_encodes_produce_and_fetch_headers_without_allocating() {
    let mut w = FrameWriter::new();
    let mut out = Vec::with_capacity(4096);
    let position = FetchPosition {
        high_watermark: 1,
        log_start_offset: 0,
        next_offset: 1,
    };
    // Warm the builder up once.
    w.produce_request(&mut out, 1, "orders", 0, Acks::Leader, 100)
        .unwrap();
    w.fetch_response(&mut out, 2, &position, 100).unwrap();
    out.clear();
    let (_, allocations) = allocations_during(|| {
        w.produce_request(&mut out, 3, "orders", 0, Acks::Leader, 100)
            .unwrap();
        w.fetch_response(&mut out, 4, &position, 100).unwrap();
    });
    assert_eq!(allocations, 0);
}

/// A prefix with arbitrary field values.
fn raw_prefix(
    frame_len: u32,
    version: u8,
    flags: u8,
    api: u16,
    id: u64,
    header_len: u32,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(FRAME_PREFIX_LEN);
    p.extend_from_slice(&frame_len.to_be_bytes());
    p.push(version);
    p.push(flags);
    p.extend_from_slice(&api.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&header_len.to_be_bytes());
    p
}

#[test]
fn malformed_prefixes_are_fatal_errors_with_clear_messages() {
    let max = DEFAULT_MAX_FRAME_BYTES;
    let cases: Vec<(Vec<u8>, FrameError, &str)> = vec![
        (
            15u32.to_be_bytes().to_vec(),
            FrameError::TooShort { frame_len: 15 },
            "frame length 15 is below the 16 bytes every frame has after its length field",
        ),
        (
            raw_prefix(100, 2, 0, 10, 1, 10),
            FrameError::UnsupportedVersion { version: 2 },
            "unsupported protocol version 2 (this broker speaks version 1)",
        ),
        (
            raw_prefix(100, 1, 0x81, 10, 1, 10),
            FrameError::UnknownFlags { flags: 0x81 },
            "unknown flag bits 0x81 in the frame prefix",
        ),
        (
            raw_prefix(100, 1, 0, 10, 1, 85),
            FrameError::HeaderOverrun {
                header_len: 85,
                available: 84,
            },
            "header length 85 exceeds the 84 bytes the frame holds after its prefix",
        ),
        (
            raw_prefix(
                16 + MAX_HEADER_BYTES as u32 + 1,
                1,
                0,
                10,
                1,
                MAX_HEADER_BYTES as u32 + 1,
            ),
            FrameError::HeaderTooLarge {
                header_len: MAX_HEADER_BYTES as u64 + 1,
                max: MAX_HEADER_BYTES,
            },
            "header of 1048577 bytes exceeds the limit of 1048576 bytes",
        ),
    ];
    for (bytes, expected, message) in cases {
        let (got, allocations) = allocations_during(|| decode_prefix(&bytes, max));
        assert_eq!(allocations, 0);
        let err = got.unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.to_string(), message);
        assert!(err.is_fatal(), "{err}");
    }
    let version = FrameError::UnsupportedVersion { version: 2 };
    assert_eq!(version.error_code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn header_len_may_not_exceed_the_frame_and_payload_is_the_rest() {
    // header_len = frame_len - 16 is allowed (no payload); the prefix math
    // holds at the edges.
    let p = raw_prefix(16, 1, 1, 10, 5, 0);
    let h = decode_prefix(&p, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
    assert_eq!(
        (h.header_len(), h.payload_len(), h.frame_bytes()),
        (0, 0, 20)
    );
    // An empty header is not a flatbuffer.
    assert!(matches!(
        decode_frame(&p, DEFAULT_MAX_FRAME_BYTES),
        Err(FrameError::InvalidHeader { .. })
    ));
    assert_eq!(
        FrameHeader::new(ApiKey::Fetch, true, 1, MAX_HEADER_BYTES + 1, 0),
        Err(FrameError::HeaderTooLarge {
            header_len: MAX_HEADER_BYTES as u64 + 1,
            max: MAX_HEADER_BYTES
        })
    );
    assert!(matches!(
        FrameHeader::new(ApiKey::Fetch, true, 1, 100, u32::MAX as usize),
        Err(FrameError::TooLarge { .. })
    ));
}

// ---------------------------------------------------------------------------
// Errors inside a well-delimited frame: answered, not fatal.

fn reframe(frame: &[u8], api_key: ApiKey, response: bool, extra_payload: &[u8]) -> Vec<u8> {
    let h = decode_prefix(frame, DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .unwrap();
    let body = &frame[FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + h.header_len()];
    let payload = &frame[FRAME_PREFIX_LEN + h.header_len()..];
    let new = FrameHeader::new(
        api_key,
        response,
        h.request_id(),
        body.len(),
        payload.len() + extra_payload.len(),
    )
    .unwrap();
    let mut out = encode_prefix(&new).to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(payload);
    out.extend_from_slice(extra_payload);
    out
}

#[test]
fn unknown_api_is_answered_not_fatal() {
    let frame = reframe(&sample("FetchRequest").frame, ApiKey(99), false, &[]);
    let err = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert_eq!(err, FrameError::UnknownApi { api_key: 99 });
    assert_eq!(err.to_string(), "unknown api key 99");
    assert!(!err.is_fatal());
    assert_eq!(err.error_code(), ErrorCode::UnsupportedApi);
    // A reserved (consumer group) key is unknown too.
    let frame = reframe(&sample("FetchRequest").frame, ApiKey(28), false, &[]);
    assert_eq!(
        decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err(),
        FrameError::UnknownApi { api_key: 28 }
    );
}

#[test]
fn payload_after_a_header_that_carries_none_is_refused() {
    let frame = reframe(&sample("FetchRequest").frame, ApiKey::Fetch, false, b"junk");
    let err = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert_eq!(
        err,
        FrameError::UnexpectedPayload {
            table: "FetchRequest",
            payload_len: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "FetchRequest carries no payload, but 4 bytes follow its header"
    );
    assert!(!err.is_fatal());
    assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
    assert!(decode_as::<FetchRequest>(&frame, DEFAULT_MAX_FRAME_BYTES).is_err());
    // The writer refuses to build one.
    let err = FrameWriter::new()
        .write::<FetchRequest>(&mut Vec::new(), 1, 4, |fbb| {
            let topic = Some(fbb.create_string("t"));
            FetchRequest::create(
                fbb,
                &broker_protocol::generated::FetchRequestArgs {
                    topic,
                    ..Default::default()
                },
            )
        })
        .unwrap_err();
    assert!(matches!(err, FrameError::UnexpectedPayload { .. }));
}

#[test]
fn header_of_another_table_is_refused() {
    // An (empty) DeleteTopicResponse header under the Produce request key:
    // it lacks ProduceRequest's required `topic`.
    let frame = reframe(
        &sample("DeleteTopicResponse").frame,
        ApiKey::Produce,
        false,
        &[],
    );
    let err = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::InvalidHeader {
                table: "ProduceRequest",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("invalid ProduceRequest header: "),
        "{message}"
    );
    assert!(message.contains("topic"), "{message}");
    assert!(!err.is_fatal());
}

#[test]
fn request_limits_are_checked_at_decode() {
    let mut w = FrameWriter::new();
    let max = DEFAULT_MAX_FRAME_BYTES;

    let long_name = "n".repeat(MAX_TOPIC_NAME_BYTES + 1);
    let mut out = Vec::new();
    w.produce_request(&mut out, 1, &long_name, 0, Acks::Leader, 0)
        .unwrap();
    let err = decode_frame(&out, max).unwrap_err();
    assert_eq!(
        err,
        FrameError::LimitExceeded {
            field: "ProduceRequest.topic",
            value: MAX_TOPIC_NAME_BYTES as u64 + 1,
            max: MAX_TOPIC_NAME_BYTES as u64
        }
    );
    assert_eq!(
        err.to_string(),
        "ProduceRequest.topic is 250, above the limit of 249"
    );
    assert!(!err.is_fatal());

    let names: Vec<String> = (0..=MAX_TOPICS_PER_REQUEST)
        .map(|i| format!("t{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    out.clear();
    w.metadata_request(&mut out, 2, &names).unwrap();
    assert!(matches!(
        decode_frame(&out, max),
        Err(FrameError::LimitExceeded {
            field: "MetadataRequest.topics",
            ..
        })
    ));
    out.clear();
    w.metadata_request(&mut out, 2, &names[..MAX_TOPICS_PER_REQUEST])
        .unwrap();
    assert!(decode_frame(&out, max).is_ok());

    out.clear();
    let too_many = MAX_PARTITIONS_PER_TOPIC as i32 + 1;
    w.create_topic_request(&mut out, 3, "t", too_many, &TopicSettings::default())
        .unwrap();
    assert!(matches!(
        decode_frame(&out, max),
        Err(FrameError::LimitExceeded {
            field: "CreateTopicRequest.partitions",
            ..
        })
    ));

    // Enum values the schema does not define.
    out.clear();
    w.write::<ProduceRequest>(&mut out, 4, 0, |fbb| {
        let topic = Some(fbb.create_string("t"));
        ProduceRequest::create(
            fbb,
            &ProduceRequestArgs {
                topic,
                partition: 0,
                acks: Acks(7),
            },
        )
    })
    .unwrap();
    let err = decode_frame(&out, max).unwrap_err();
    assert_eq!(
        err,
        FrameError::UnknownEnumValue {
            field: "ProduceRequest.acks",
            value: 7
        }
    );
    assert_eq!(err.to_string(), "ProduceRequest.acks has unknown value 7");
}

// ---------------------------------------------------------------------------
// Verifier bounds: generous for real headers, tight for crafted ones.

#[test]
fn largest_realistic_metadata_response_is_accepted() {
    let shard_of: Vec<u16> = (0..MAX_PARTITIONS_PER_TOPIC)
        .map(|p| (p % 64) as u16)
        .collect();
    let names: Vec<String> = (0..4).map(|i| format!("topic-{i:0>200}")).collect();
    let topics: Vec<_> = names
        .iter()
        .map(|name| TopicDescription {
            name,
            error: None,
            config: SETTINGS,
            partition_shards: &shard_of,
        })
        .collect();
    let hosts: Vec<String> = (0..64)
        .map(|i| format!("broker-host-{i}.example.internal"))
        .collect();
    let shards: Vec<_> = hosts
        .iter()
        .map(|host| ShardAddress { host, port: 9093 })
        .collect();
    let mut out = Vec::new();
    let h = FrameWriter::new()
        .metadata_response(&mut out, 1, &shards, &topics)
        .unwrap();
    assert!(
        h.header_len() < MAX_HEADER_BYTES,
        "{} bytes",
        h.header_len()
    );
    let f = decode_as::<MetadataResponse>(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let topics = f.body.topics().unwrap();
    assert_eq!(topics.len(), 4);
    assert_eq!(
        topics.get(3).partitions().unwrap().len(),
        MAX_PARTITIONS_PER_TOPIC
    );
}

#[test]
fn shared_subtrees_cannot_multiply_verifier_work() {
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    // 200 000 vector entries pointing at one table: a 0.8 MB header that
    // would cost 200 000 table visits.
    w.write::<ListTopicsResponse>(&mut out, 1, 0, |fbb| {
        let name = Some(fbb.create_string("t"));
        let one = TopicListing::create(
            fbb,
            &TopicListingArgs {
                name,
                partitions: 1,
            },
        );
        let topics = Some(fbb.create_vector(&vec![one; 200_000]));
        ListTopicsResponse::create(
            fbb,
            &ListTopicsResponseArgs {
                error: None,
                topics,
            },
        )
    })
    .unwrap();
    let err = decode_frame(&out, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(err.to_string().contains("many tables"), "{err}");

    // 20 000 entries pointing at one table holding a 100 kB string: few
    // tables, but 2 GB of strings to check.
    out.clear();
    w.write::<MetadataResponse>(&mut out, 2, 0, |fbb| {
        let host = Some(fbb.create_string(&"h".repeat(100_000)));
        let one = ShardEndpoint::create(
            fbb,
            &ShardEndpointArgs {
                shard: 0,
                host,
                port: 1,
            },
        );
        let shards = Some(fbb.create_vector(&vec![one; 20_000]));
        MetadataResponse::create(
            fbb,
            &MetadataResponseArgs {
                shards,
                ..Default::default()
            },
        )
    })
    .unwrap();
    let err = decode_frame(&out, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(err.to_string().contains("pparent size"), "{err}");
}

// ---------------------------------------------------------------------------
// No input panics.

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(2000);
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0x0f_ab_f4_a3_e5);
    }
    // Captured by the harness: shown only when a property fails.
    eprintln!("proptest seed: {}", config.rng_seed);
    config
}

/// Decodes `bytes` every way there is and checks what comes back is
/// consistent; walks every field of an accepted header (its Debug output
/// reads them all).
fn decode_everything(bytes: &[u8], max_frame: usize) {
    match decode_prefix(bytes, max_frame) {
        Ok(Some(h)) => {
            assert!(h.frame_bytes() <= max_frame);
            assert!(h.header_len() <= MAX_HEADER_BYTES);
            assert_eq!(
                h.frame_bytes(),
                FRAME_PREFIX_LEN + h.header_len() + h.payload_len()
            );
            assert_eq!(encode_prefix(&h), bytes[..FRAME_PREFIX_LEN]);
            if let Some(frame) = bytes.get(..h.frame_bytes()) {
                if let Ok(f) = decode_frame(frame, max_frame) {
                    assert_eq!(f.header, h);
                    assert_eq!(f.payload.len(), h.payload_len());
                    let _ = format!("{:?}", f.body);
                }
                let _ = decode_as::<FetchResponse>(frame, max_frame).map(|f| format!("{f:?}"));
                let _ = decode_as::<MetadataResponse>(frame, max_frame).map(|f| format!("{f:?}"));
                if let Ok(f) = decode_as::<ReplicaFetchResponse>(frame, max_frame) {
                    if let Ok(slices) = replica_fetch_slices(&f.body, f.payload) {
                        let total: usize = slices.iter().map(|s| s.len()).sum();
                        assert_eq!(total, f.payload.len());
                    }
                }
            }
        }
        Ok(None) => assert!(bytes.len() < FRAME_PREFIX_LEN),
        Err(e) => {
            assert!(e.is_fatal());
            let _ = e.to_string();
        }
    }
    let _ = decode_frame(bytes, max_frame).map(|f| format!("{:?}", f.body));
}

fn max_frames() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(DEFAULT_MAX_FRAME_BYTES),
        0usize..4096,
        Just(usize::MAX)
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max_frame in max_frames(),
    ) {
        decode_everything(&bytes, max_frame);
    }

    /// A valid prefix in front of random header bytes: exercises the
    /// verifier of every table.
    #[test]
    fn random_headers_behind_a_valid_prefix_never_panic(
        api in prop_oneof![1u16..=4, 10u16..=12, 20u16..=27, Just(40u16), any::<u16>()],
        response in any::<bool>(),
        header in prop::collection::vec(any::<u8>(), 0..512),
        payload_len in 0usize..64,
    ) {
        let h = FrameHeader::new(ApiKey(api), response, 1, header.len(), payload_len).unwrap();
        let mut frame = encode_prefix(&h).to_vec();
        frame.extend_from_slice(&header);
        frame.resize(frame.len() + payload_len, 0xab);
        decode_everything(&frame, DEFAULT_MAX_FRAME_BYTES);
    }

    /// Valid frames with a few bytes changed: close to valid, so the
    /// verifier's deeper paths are reached.
    #[test]
    fn damaged_valid_frames_never_panic(
        which in 0usize..32,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut frame = samples().swap_remove(which).frame;
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        decode_everything(&frame, DEFAULT_MAX_FRAME_BYTES);
    }
}

// ---------------------------------------------------------------------------
// Replication: ReplicaFetch's payload is shared by its partitions.

/// A ReplicaFetchResponse built by hand (past the writer's checks): one
/// result per `payload_bytes` entry, then `payload`.
fn raw_replica_fetch_response(payload_bytes: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameWriter::new()
        .write::<ReplicaFetchResponse>(&mut out, 1, payload.len(), |fbb| {
            let topic = fbb.create_shared_string("orders");
            let results: Vec<_> = payload_bytes
                .iter()
                .zip(0u32..)
                .map(|(&payload_bytes, partition)| {
                    ReplicaFetchPartitionResult::create(
                        fbb,
                        &ReplicaFetchPartitionResultArgs {
                            topic: Some(topic),
                            partition,
                            payload_bytes,
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&results));
            ReplicaFetchResponse::create(
                fbb,
                &ReplicaFetchResponseArgs {
                    error: None,
                    partitions,
                },
            )
        })
        .unwrap();
    out.extend_from_slice(payload);
    out
}

#[test]
fn replica_fetch_slices_are_each_partitions_batches_borrowed_from_the_frame() {
    let s = sample("ReplicaFetchResponse");
    let f = decode_as::<ReplicaFetchResponse>(&s.frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let slices = replica_fetch_slices(&f.body, f.payload).unwrap();
    let b = each_batch();
    let first_two = [&b[0][..], &b[1][..]].concat();
    assert_eq!(
        slices,
        [&first_two[..], &[][..], &[][..], &b[2][..]],
        "one slice per result, in order, byte for byte"
    );
    assert_eq!(
        slices[0].as_ptr(),
        f.payload.as_ptr(),
        "borrowed, not copied"
    );
    assert_eq!(
        slices[3].as_ptr_range().end,
        s.frame.as_ptr_range().end,
        "the last partition's batches end the frame"
    );
    let (slices_again, allocations) =
        allocations_during(|| replica_fetch_slices(&f.body, f.payload).map(|v| v.len()));
    assert_eq!(slices_again, Ok(4));
    assert_eq!(
        allocations, 1,
        "the vector of slices, nothing per partition"
    );
}

#[test]
fn replica_fetch_payload_bytes_that_do_not_add_up_are_refused() {
    let payload = batches();
    let len = payload.len() as u32;
    let max = DEFAULT_MAX_FRAME_BYTES;
    for (claims, claimed) in [
        // Beyond the payload: by a byte, and by u32s that would overflow a
        // u32 sum.
        (vec![len - 10, 11], u64::from(len) + 1),
        (vec![u32::MAX, u32::MAX, 1], 2 * u64::from(u32::MAX) + 1),
        // Short of it: the tail would belong to no partition.
        (vec![len - 10, 9], u64::from(len) - 1),
        (vec![0, 0], 0),
        (vec![], 0),
    ] {
        let frame = raw_replica_fetch_response(&claims, &payload);
        let f = decode_as::<ReplicaFetchResponse>(&frame, max).unwrap();
        let err = replica_fetch_slices(&f.body, f.payload).unwrap_err();
        assert_eq!(
            err,
            FrameError::PayloadMismatch {
                table: "ReplicaFetchResponse",
                claimed,
                payload_len: payload.len(),
            },
            "{claims:?}"
        );
        assert!(!err.is_fatal());
        assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
    }
    let frame = raw_replica_fetch_response(&[len - 10, 11], &payload);
    let f = decode_as::<ReplicaFetchResponse>(&frame, max).unwrap();
    assert_eq!(
        replica_fetch_slices(&f.body, f.payload)
            .unwrap_err()
            .to_string(),
        format!(
            "ReplicaFetchResponse results claim {} payload bytes, but the frame carries {len}",
            len + 1
        )
    );
    // A response without results and with a payload.
    let mut out = Vec::new();
    FrameWriter::new()
        .write::<ReplicaFetchResponse>(&mut out, 1, 3, |fbb| {
            ReplicaFetchResponse::create(fbb, &ReplicaFetchResponseArgs::default())
        })
        .unwrap();
    out.extend_from_slice(b"abc");
    let f = decode_as::<ReplicaFetchResponse>(&out, max).unwrap();
    assert!(matches!(
        replica_fetch_slices(&f.body, f.payload),
        Err(FrameError::PayloadMismatch { claimed: 0, .. })
    ));

    // The leader's writer refuses to build either, and leaves `out` as it was.
    let results = replica_fetch_results(&each_batch());
    let mut out = b"earlier frame".to_vec();
    let mut w = FrameWriter::new();
    for payload_len in [payload.len() - 1, payload.len() + 1, 0] {
        let err = w
            .replica_fetch_response(&mut out, 1, &results, payload_len)
            .unwrap_err();
        assert!(
            matches!(err, FrameError::PayloadMismatch { claimed, .. } if claimed == payload.len() as u64),
            "{err}"
        );
        assert_eq!(out, b"earlier frame");
    }
}

#[test]
fn truncated_replica_fetch_frames_are_refused() {
    let max = DEFAULT_MAX_FRAME_BYTES;
    for name in ["ReplicaFetchRequest", "ReplicaFetchResponse"] {
        let s = sample(name);
        for cut in [1, s.payload.len().max(1), s.frame.len() - FRAME_PREFIX_LEN] {
            let part = &s.frame[..s.frame.len() - cut];
            assert_eq!(
                decode_frame(part, max).unwrap_err(),
                FrameError::LengthMismatch {
                    declared: s.frame.len(),
                    actual: part.len()
                },
                "{name} cut by {cut}"
            );
        }
    }
    // A response whose prefix was rewritten to match a cut payload is a
    // valid frame, but its batches no longer add up.
    let s = sample("ReplicaFetchResponse");
    let h = decode_prefix(&s.frame, max).unwrap().unwrap();
    let cut = &s.frame[..s.frame.len() - 5];
    let short = FrameHeader::new(
        ApiKey::ReplicaFetch,
        true,
        h.request_id(),
        h.header_len(),
        h.payload_len() - 5,
    )
    .unwrap();
    let mut frame = encode_prefix(&short).to_vec();
    frame.extend_from_slice(&cut[FRAME_PREFIX_LEN..]);
    let f = decode_as::<ReplicaFetchResponse>(&frame, max).unwrap();
    assert!(matches!(
        replica_fetch_slices(&f.body, f.payload),
        Err(FrameError::PayloadMismatch { .. })
    ));
    // The request carries no payload.
    let frame = reframe(
        &sample("ReplicaFetchRequest").frame,
        ApiKey::ReplicaFetch,
        false,
        b"junk",
    );
    assert!(matches!(
        decode_frame(&frame, max),
        Err(FrameError::UnexpectedPayload {
            table: "ReplicaFetchRequest",
            payload_len: 4
        })
    ));
}

/// A ReplicaFetchRequest of `count` partitions of `topic`, built by hand
/// (past the writer's limit).
fn raw_replica_fetch_request(count: usize, topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    FrameWriter::new()
        .write::<ReplicaFetchRequest>(&mut out, 1, 0, |fbb| {
            let topic = fbb.create_shared_string(topic);
            let partitions: Vec<_> = (0..count as u32)
                .map(|partition| {
                    ReplicaFetchPartition::create(
                        fbb,
                        &ReplicaFetchPartitionArgs {
                            topic: Some(topic),
                            partition,
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&partitions));
            ReplicaFetchRequest::create(
                fbb,
                &ReplicaFetchRequestArgs {
                    partitions,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    out
}

#[test]
fn replica_fetch_partition_limit_is_checked_on_requests_and_responses() {
    let max = DEFAULT_MAX_FRAME_BYTES;
    let over = MAX_PARTITIONS_PER_REPLICA_FETCH + 1;

    let err = decode_frame(&raw_replica_fetch_request(over, "orders"), max).unwrap_err();
    assert_eq!(
        err,
        FrameError::LimitExceeded {
            field: "ReplicaFetchRequest.partitions",
            value: over as u64,
            max: MAX_PARTITIONS_PER_REPLICA_FETCH as u64
        }
    );
    assert!(!err.is_fatal());
    let at_limit = raw_replica_fetch_request(MAX_PARTITIONS_PER_REPLICA_FETCH, "orders");
    assert!(decode_as::<ReplicaFetchRequest>(&at_limit, max).is_ok());

    let err = decode_frame(&raw_replica_fetch_response(&vec![0; over], &[]), max).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::LimitExceeded {
                field: "ReplicaFetchResponse.partitions",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        decode_as::<ReplicaFetchResponse>(&raw_replica_fetch_response(&vec![0; over], &[]), max),
        Err(FrameError::LimitExceeded { .. })
    ));
    let at_limit = raw_replica_fetch_response(&vec![0; MAX_PARTITIONS_PER_REPLICA_FETCH], &[]);
    assert!(decode_frame(&at_limit, max).is_ok());

    // Topic names are limited in requests as everywhere.
    let long_name = "n".repeat(MAX_TOPIC_NAME_BYTES + 1);
    assert!(matches!(
        decode_frame(&raw_replica_fetch_request(1, &long_name), max),
        Err(FrameError::LimitExceeded {
            field: "ReplicaFetchRequest.partitions[].topic",
            ..
        })
    ));

    // Neither writer builds what the peer would refuse.
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    let partitions = vec![REPLICA_FETCH_PARTITIONS[0]; over];
    let params = ReplicaFetchParams {
        replica: 1,
        replica_epoch: 1,
        replica_shard: 0,
        max_wait_ms: 0,
        max_bytes: 0,
        partitions: &partitions,
    };
    assert!(matches!(
        w.replica_fetch_request(&mut out, 1, &params),
        Err(FrameError::LimitExceeded {
            field: "ReplicaFetchRequest.partitions",
            ..
        })
    ));
    let mut results = vec![replica_fetch_results(&each_batch())[1]; over];
    assert!(matches!(
        w.replica_fetch_response(&mut out, 1, &results, 0),
        Err(FrameError::LimitExceeded {
            field: "ReplicaFetchResponse.partitions",
            ..
        })
    ));
    results.truncate(1);
    results[0].diverging = Some((3, u64::MAX));
    assert!(matches!(
        w.replica_fetch_response(&mut out, 1, &results, 0),
        Err(FrameError::LimitExceeded {
            field: "ReplicaFetchPartitionResult.diverging_end_offset",
            ..
        })
    ));
    assert!(out.is_empty());
}

#[test]
fn largest_replica_fetch_request_and_response_fit_the_header_limit() {
    // 10 000 partitions over 1 000 topics of 100-byte names, every field
    // away from its default.
    let names: Vec<String> = (0..1000).map(|i| format!("topic-{i:0>94}")).collect();
    let partitions: Vec<_> = (0..MAX_PARTITIONS_PER_REPLICA_FETCH)
        .map(|i| ReplicaFetchPartitionParams {
            topic: &names[i / 10],
            partition: (i % 10) as u32,
            leader_epoch: u32::MAX,
            fetch_offset: i64::MAX,
            last_fetched_epoch: i64::MAX,
            fetch_id: u64::MAX,
            max_bytes: u32::MAX,
        })
        .collect();
    let params = ReplicaFetchParams {
        replica: u32::MAX,
        replica_epoch: u64::MAX,
        replica_shard: u16::MAX,
        max_wait_ms: u32::MAX,
        max_bytes: u32::MAX,
        partitions: &partitions,
    };
    let mut w = FrameWriter::new();
    let mut out = Vec::new();
    let h = w.replica_fetch_request(&mut out, 1, &params).unwrap();
    assert!(
        h.header_len() < MAX_HEADER_BYTES,
        "{} bytes",
        h.header_len()
    );
    let f = decode_as::<ReplicaFetchRequest>(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(
        f.body.partitions().unwrap().len(),
        MAX_PARTITIONS_PER_REPLICA_FETCH
    );

    let results: Vec<_> = partitions
        .iter()
        .map(|p| ReplicaFetchResult {
            topic: p.topic,
            partition: p.partition,
            error: ReplicaFetchError::StorageError,
            leader: u32::MAX,
            leader_epoch: u32::MAX,
            fetch_id: u64::MAX,
            fetch_offset: i64::MAX,
            replica_epoch: u64::MAX,
            diverging: Some((i32::MAX, i64::MAX as u64)),
            high_watermark: i64::MAX,
            log_start_offset: i64::MAX,
            payload_bytes: 1,
        })
        .collect();
    out.clear();
    let payload = vec![0xab; results.len()];
    let h = w
        .replica_fetch_response(&mut out, 2, &results, payload.len())
        .unwrap();
    assert!(
        h.header_len() < MAX_HEADER_BYTES,
        "{} bytes",
        h.header_len()
    );
    out.extend_from_slice(&payload);
    let f = decode_as::<ReplicaFetchResponse>(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let slices = replica_fetch_slices(&f.body, f.payload).unwrap();
    assert_eq!(slices.len(), MAX_PARTITIONS_PER_REPLICA_FETCH);
    assert!(slices.iter().all(|s| s == &[0xab]));
}

#[test]
fn replica_fetch_results_read_unknown_error_values_as_they_came() {
    // Like every response, a ReplicaFetchResponse is not checked for enum
    // values: a newer leader's error reaches the follower as its raw value
    // (a failure of that partition only), rather than failing every
    // partition of the session.
    let mut results = replica_fetch_results(&each_batch());
    results[1].error = ReplicaFetchError(200);
    let payload = batches();
    let mut out = Vec::new();
    FrameWriter::new()
        .replica_fetch_response(&mut out, 1, &results, payload.len())
        .unwrap();
    out.extend_from_slice(&payload);
    let f = decode_as::<ReplicaFetchResponse>(&out, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let error = f.body.partitions().unwrap().get(1).error();
    assert_eq!(error, ReplicaFetchError(200));
    assert_eq!(error.variant_name(), None);
    assert_eq!(replica_fetch_slices(&f.body, f.payload).unwrap().len(), 4);
}
