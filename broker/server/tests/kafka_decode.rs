//! Differential tests of the Kafka request decoders: requests of every api
//! and version in `kafka::APIS`, encoded by the `kafka-protocol` crate (the
//! client side, as Kafka's own clients encode them), decoded by our public
//! per-api decoders, and every field we read compared with what was encoded.
//! Contents vary per case: no, one or several topics and partitions, nulls
//! where the version allows them, unknown tagged fields on every structure
//! of a flexible version, extreme numbers.
//!
//! Then the same requests mangled: every truncation is an error, never a
//! panic; a count field of i32::MAX (a compact one of 2^31) over a short
//! body is refused; any four bytes of the body overwritten with i32::MAX
//! decode without a panic.
//!
//! The admin apis (CreateTopics, DeleteTopics, DescribeConfigs,
//! OffsetForLeaderEpoch) have theirs in tests/kafka_admin_decode.rs; the
//! truncation and count checks here run over the apis of this file. An api
//! added to `APIS` in neither fails
//! `every_served_api_has_a_differential_case`: add a case.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use broker_server::kafka::{
    self, api, check_request, decode_header, fetch, list_offsets, metadata, produce, producer_id,
    wire::Decoder, Header, APIS,
};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ProducerId, RequestHeader, TopicName, TransactionalId};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

/// Apis whose differential cases are in other files.
const ELSEWHERE: [i16; 13] = [
    // tests/kafka_admin_decode.rs
    api::CREATE_TOPICS,
    api::DELETE_TOPICS,
    api::DESCRIBE_CONFIGS,
    api::OFFSET_FOR_LEADER_EPOCH,
    // tests/kafka_group_decode.rs (the consumer-group apis)
    api::OFFSET_COMMIT,
    api::OFFSET_FETCH,
    api::FIND_COORDINATOR,
    api::JOIN_GROUP,
    api::HEARTBEAT,
    api::LEAVE_GROUP,
    api::SYNC_GROUP,
    api::DESCRIBE_GROUPS,
    api::LIST_GROUPS,
];

/// Cases per api and version.
const CASES: usize = 4;
/// The apis this file has cases for.
const COVERED: [i16; 6] = [
    api::PRODUCE,
    api::FETCH,
    api::LIST_OFFSETS,
    api::METADATA,
    api::API_VERSIONS,
    api::INIT_PRODUCER_ID,
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Unknown tagged fields for a structure of a flexible version (none in
/// case 0, so the plain shape is covered too). Their tags are above any
/// Kafka defines (kafka-protocol drops an unknown field whose tag is a
/// known one's, yet counts it), one of them a two-byte varint.
fn tags(flexible: bool, case: usize) -> BTreeMap<i32, Bytes> {
    let mut t = BTreeMap::new();
    if flexible && case > 0 {
        t.insert(100, Bytes::from_static(b"x"));
        t.insert(
            900 + case as i32,
            Bytes::from(vec![case as u8; 3 + 130 * (case % 2)]),
        );
    }
    t
}

/// A topic name per case and index, non-ASCII in some.
fn topic_name(case: usize, i: usize) -> String {
    match (case + i) % 3 {
        0 => format!("orders-{i}"),
        1 => format!("tópico.{case}_{i}"),
        _ => format!("t{i}-{}", "x".repeat(40 * case)),
    }
}

/// How many topics case `case` has: 0, 1, then several.
fn topics_in(case: usize) -> usize {
    [0, 1, 3, 5][case % CASES]
}

/// The whole request after its size prefix: header (its version from the
/// message definitions), then the body.
fn encode<R: Encodable + HeaderVersion>(key: i16, v: i16, case: usize, body: &R) -> Vec<u8> {
    let hv = R::header_version(v);
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(v)
        .with_correlation_id([0, 1, -7, i32::MAX][case % CASES])
        .with_client_id(match case % 3 {
            0 => None,
            1 => Some(s("")),
            _ => Some(s("client-é")),
        })
        .with_unknown_tagged_fields(tags(hv >= 2, case));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, hv).unwrap();
    body.encode(&mut buf, v)
        .unwrap_or_else(|e| panic!("api {key} v{v} case {case}: kafka-protocol refused: {e}"));
    buf.to_vec()
}

/// Checks a decoded body: given the whole request, the decoder at its body
/// and its header.
type Check = Box<dyn Fn(&[u8], &mut Decoder<'_>, &Header<'_>)>;

/// One encoded request and the checks of its decoded body.
struct Case {
    frame: Vec<u8>,
    check: Check,
}

fn case(key: i16, v: i16, n: usize) -> Case {
    match key {
        api::METADATA => metadata_case(v, n),
        api::PRODUCE => produce_case(v, n),
        api::FETCH => fetch_case(v, n),
        api::LIST_OFFSETS => list_offsets_case(v, n),
        api::API_VERSIONS => api_versions_case(v, n),
        api::INIT_PRODUCER_ID => init_producer_id_case(v, n),
        other => panic!("api {other} has no differential case in this file: add one"),
    }
}

fn metadata_case(v: i16, n: usize) -> Case {
    let flex = MetadataRequest::header_version(v) >= 2;
    // Case 0: null (every topic); others: names, and v10+ a null name (a
    // topic asked by id, which we skip).
    let topics = (n > 0).then(|| {
        (0..topics_in(n))
            .map(|i| {
                let null = v >= 10 && i == 1;
                MetadataRequestTopic::default()
                    .with_name((!null).then(|| name(&topic_name(n, i))))
                    .with_unknown_tagged_fields(tags(flex, n))
            })
            .collect::<Vec<_>>()
    });
    let allow = n % 2 == 0;
    let mut body = MetadataRequest::default()
        .with_topics(topics.clone())
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 4 {
        body = body.with_allow_auto_topic_creation(allow);
    }
    if (8..=10).contains(&v) {
        body = body.with_include_cluster_authorized_operations(n % 3 == 1);
    }
    if v >= 8 {
        body = body.with_include_topic_authorized_operations(n % 3 == 2);
    }
    let frame = encode(api::METADATA, v, n, &body);
    Case {
        frame,
        check: Box::new(move |_, d, h| {
            let got = metadata::decode(d, h.version, h.flexible).unwrap();
            let want: Option<Vec<String>> = topics.as_ref().map(|ts| {
                ts.iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                    .collect()
            });
            let got_topics: Option<Vec<String>> = got
                .topics
                .as_ref()
                .map(|ts| ts.iter().map(|t| t.to_string()).collect());
            assert_eq!(got_topics, want, "topics");
            assert_eq!(got.allow_auto_create, if v >= 4 { allow } else { true });
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn produce_case(v: i16, n: usize) -> Case {
    let flex = ProduceRequest::header_version(v) >= 2;
    let topics: Vec<TopicProduceData> = (0..topics_in(n))
        .map(|i| {
            let partitions = (0..(i + n) % 4)
                .map(|p| {
                    let records = (p % 3 != 1)
                        .then(|| Bytes::from(format!("batch {n}.{i}.{p} {}", "r".repeat(p * 50))));
                    PartitionProduceData::default()
                        .with_index([0, 7, -1, i32::MAX][p])
                        .with_records(records)
                        .with_unknown_tagged_fields(tags(flex, n))
                })
                .collect();
            TopicProduceData::default()
                .with_name(name(&topic_name(n, i)))
                .with_partition_data(partitions)
                .with_unknown_tagged_fields(tags(flex, n))
        })
        .collect();
    let txn = (n % 2 == 1).then(|| TransactionalId(s(&format!("txn-{n}"))));
    let acks = [0, 1, -1, 2][n % CASES];
    let timeout = [0, 30_000, i32::MAX, -5][n % CASES];
    let body = ProduceRequest::default()
        .with_transactional_id(txn.clone())
        .with_acks(acks)
        .with_timeout_ms(timeout)
        .with_topic_data(topics.clone())
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::PRODUCE, v, n, &body);
    Case {
        frame,
        check: Box::new(move |frame, d, h| {
            let got = produce::decode(d, h.version, h.flexible).unwrap();
            assert_eq!(got.transactional_id, txn.as_ref().map(|t| t.0.as_str()));
            assert_eq!(got.acks, acks);
            assert_eq!(got.timeout_ms, timeout);
            assert_eq!(got.topics.len(), topics.len());
            for (g, w) in got.topics.iter().zip(&topics) {
                assert_eq!(g.name, w.name.0.as_str());
                assert_eq!(g.partitions.len(), w.partition_data.len());
                for ((index, range), wp) in g.partitions.iter().zip(&w.partition_data) {
                    assert_eq!(*index, wp.index);
                    let bytes = range.clone().map(|r| &frame[r]);
                    assert_eq!(bytes, wp.records.as_deref(), "records, borrowed");
                }
            }
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn fetch_case(v: i16, n: usize) -> Case {
    let flex = FetchRequest::header_version(v) >= 2;
    let topics: Vec<FetchTopic> = (0..topics_in(n))
        .map(|i| {
            let partitions = (0..(i + n) % 4)
                .map(|p| {
                    let mut fp = FetchPartition::default()
                        .with_partition([0, 3, -1, i32::MAX][p])
                        .with_fetch_offset([0, 42, i64::MAX, -1][(p + n) % 4])
                        .with_partition_max_bytes([1 << 20, 0, -1, i32::MAX][(p + i) % 4])
                        .with_unknown_tagged_fields(tags(flex, n));
                    if v >= 9 {
                        fp = fp.with_current_leader_epoch(p as i32);
                    }
                    if v >= 12 {
                        fp = fp.with_last_fetched_epoch(5);
                    }
                    if v >= 5 {
                        fp = fp.with_log_start_offset(17);
                    }
                    fp
                })
                .collect();
            FetchTopic::default()
                .with_topic(name(&topic_name(n, i)))
                .with_partitions(partitions)
                .with_unknown_tagged_fields(tags(flex, n))
        })
        .collect();
    let max_wait_ms = [0, 500, 60_000, -3][n % CASES];
    let min_bytes = [0, 1, -1, i32::MAX][n % CASES];
    let max_bytes = [i32::MAX, 50 << 20, 0, -1][n % CASES];
    let (session_id, session_epoch) = if v >= 7 {
        ([0, 0, 12, -1][n % CASES], [-1, 0, 3, i32::MAX][n % CASES])
    } else {
        (0, -1)
    };
    let mut body = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level((n % 2) as i8)
        .with_topics(topics.clone())
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 7 {
        body = body
            .with_session_id(session_id)
            .with_session_epoch(session_epoch)
            .with_forgotten_topics_data(
                (0..n % 3)
                    .map(|i| {
                        ForgottenTopic::default()
                            .with_topic(name(&topic_name(n + 1, i)))
                            .with_partitions((0..i as i32 * 2).collect())
                            .with_unknown_tagged_fields(tags(flex, n))
                    })
                    .collect(),
            );
    }
    if v >= 11 {
        body = body.with_rack_id(s(["", "rack-a", "ráck", "r"][n % CASES]));
    }
    if v >= 12 && n > 1 {
        body = body.with_cluster_id(Some(s("cluster-x")));
    }
    let frame = encode(api::FETCH, v, n, &body);
    Case {
        frame,
        check: Box::new(move |_, d, h| {
            let got = fetch::decode(d, h.version, h.flexible).unwrap();
            let wait = Duration::from_millis(max_wait_ms.max(0) as u64);
            assert_eq!(got.max_wait, wait.min(Duration::from_secs(30)));
            assert_eq!(got.min_bytes, min_bytes.max(0) as usize);
            let want_max = if max_bytes <= 0 {
                usize::MAX
            } else {
                max_bytes as usize
            };
            assert_eq!(got.max_bytes, want_max);
            assert_eq!(
                (got.session_id, got.session_epoch),
                (session_id, session_epoch)
            );
            assert_eq!(got.topics.len(), topics.len());
            for ((gname, gparts), w) in got.topics.iter().zip(&topics) {
                assert_eq!(*gname, w.topic.0.as_str());
                assert_eq!(gparts.len(), w.partitions.len());
                for (g, wp) in gparts.iter().zip(&w.partitions) {
                    assert_eq!(g.topic, w.topic.0.as_str());
                    assert_eq!(g.partition, wp.partition);
                    assert_eq!(g.offset, wp.fetch_offset);
                    assert_eq!(g.max_bytes, wp.partition_max_bytes);
                }
            }
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn list_offsets_case(v: i16, n: usize) -> Case {
    let flex = ListOffsetsRequest::header_version(v) >= 2;
    let topics: Vec<ListOffsetsTopic> = (0..topics_in(n))
        .map(|i| {
            let partitions = (0..(i + n) % 4)
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default()
                        .with_partition_index([0, 1, -1, i32::MAX][p])
                        .with_timestamp([-1, -2, 1_700_000_000_000, i64::MIN][(p + n) % 4])
                        .with_unknown_tagged_fields(tags(flex, n));
                    if v >= 4 {
                        lp = lp.with_current_leader_epoch(p as i32 - 1);
                    }
                    lp
                })
                .collect();
            ListOffsetsTopic::default()
                .with_name(name(&topic_name(n, i)))
                .with_partitions(partitions)
                .with_unknown_tagged_fields(tags(flex, n))
        })
        .collect();
    let mut body = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(topics.clone())
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 2 {
        body = body.with_isolation_level((n % 2) as i8);
    }
    let frame = encode(api::LIST_OFFSETS, v, n, &body);
    Case {
        frame,
        check: Box::new(move |_, d, h| {
            let got = list_offsets::decode(d, h.version, h.flexible).unwrap();
            let want: Vec<(String, Vec<(i32, i64)>)> = topics
                .iter()
                .map(|t| {
                    let parts = t.partitions.iter();
                    let parts = parts.map(|p| (p.partition_index, p.timestamp)).collect();
                    (t.name.0.to_string(), parts)
                })
                .collect();
            let got: Vec<(String, Vec<(i32, i64)>)> = got
                .topics
                .iter()
                .map(|(name, parts)| (name.to_string(), parts.clone()))
                .collect();
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn api_versions_case(v: i16, n: usize) -> Case {
    let flex = ApiVersionsRequest::header_version(v) >= 2;
    let mut body = ApiVersionsRequest::default().with_unknown_tagged_fields(tags(flex, n));
    if v >= 3 {
        body = body
            .with_client_software_name(s(["", "librdkafka", "kafka-python", "x"][n % CASES]))
            .with_client_software_version(s("2.3.0"));
    }
    let frame = encode(api::API_VERSIONS, v, n, &body);
    // The body is informational and not decoded: the header is all.
    Case {
        frame,
        check: Box::new(|_, _, _| {}),
    }
}

fn init_producer_id_case(v: i16, n: usize) -> Case {
    let flex = InitProducerIdRequest::header_version(v) >= 2;
    let txn = (n % 2 == 1).then(|| TransactionalId(s(&format!("txn-{n}"))));
    let timeout = [0, 60_000, -1, i32::MAX][n % CASES];
    let (pid, epoch) = if v >= 3 {
        (
            [-1, 0, 1 << 40, i64::MAX][n % CASES],
            [-1, 0, 7, i16::MAX][n % CASES],
        )
    } else {
        (-1, -1)
    };
    let body = InitProducerIdRequest::default()
        .with_transactional_id(txn.clone())
        .with_transaction_timeout_ms(timeout)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::INIT_PRODUCER_ID, v, n, &body);
    Case {
        frame,
        check: Box::new(move |_, d, h| {
            let got = producer_id::decode(d, h.version, h.flexible).unwrap();
            assert_eq!(got.transactional_id, txn.as_ref().map(|t| t.0.as_str()));
            assert_eq!(got.transaction_timeout_ms, timeout);
            assert_eq!((got.producer_id, got.producer_epoch), (pid, epoch));
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

/// Every (api, version, case) served, with its encoded request.
fn all_cases() -> Vec<(i16, i16, usize, Case)> {
    let mut out = Vec::new();
    for range in APIS.iter().filter(|a| COVERED.contains(&a.key)) {
        for v in range.min..=range.max {
            for n in 0..CASES {
                out.push((range.key, v, n, case(range.key, v, n)));
            }
        }
    }
    out
}

/// Decodes `frame`'s header, checking it against what was encoded.
fn header_of(frame: &[u8], key: i16, v: i16, n: usize) -> (Header<'_>, Decoder<'_>) {
    let mut d = Decoder::new(frame);
    let h = decode_header(&mut d).unwrap_or_else(|e| panic!("api {key} v{v} #{n}: {e:?}"));
    assert_eq!((h.api_key, h.version), (key, v));
    assert_eq!(h.correlation_id, [0, 1, -7, i32::MAX][n % CASES]);
    let client_id = [None, Some(""), Some("client-é")][n % 3];
    assert_eq!(h.client_id, client_id);
    assert_eq!(h.flexible, header_version(key, v) >= 2);
    (h, d)
}

fn header_version(key: i16, v: i16) -> i16 {
    match key {
        api::PRODUCE => ProduceRequest::header_version(v),
        api::FETCH => FetchRequest::header_version(v),
        api::LIST_OFFSETS => ListOffsetsRequest::header_version(v),
        api::METADATA => MetadataRequest::header_version(v),
        api::API_VERSIONS => ApiVersionsRequest::header_version(v),
        api::INIT_PRODUCER_ID => InitProducerIdRequest::header_version(v),
        other => panic!("api {other} has no differential case in this file: add one"),
    }
}

#[test]
fn every_served_api_has_a_differential_case() {
    for range in APIS {
        assert!(
            COVERED.contains(&range.key) || ELSEWHERE.contains(&range.key),
            "api {} ({}-{}) is served but has no differential case",
            range.key,
            range.min,
            range.max
        );
    }
}

#[test]
fn every_field_read_equals_what_kafka_protocol_encoded() {
    let mut checked = 0;
    for (key, v, n, c) in all_cases() {
        let (h, mut d) = header_of(&c.frame, key, v, n);
        (c.check)(&c.frame, &mut d, &h);
        assert_eq!(check_request(&c.frame), Ok(()), "api {key} v{v} #{n}");
        checked += 1;
    }
    let covered = APIS.iter().filter(|a| COVERED.contains(&a.key));
    let versions: usize = covered.map(|a| (a.max - a.min + 1) as usize).sum();
    assert_eq!(checked, versions * CASES);
}

#[test]
fn every_truncation_of_a_valid_request_is_an_error() {
    for (key, v, n, c) in all_cases() {
        let frame = &c.frame;
        // ApiVersions' body is not decoded: only its header can be cut short.
        let must_fail = if key == api::API_VERSIONS {
            let mut d = Decoder::new(frame);
            decode_header(&mut d).unwrap();
            d.position()
        } else {
            frame.len()
        };
        for cut in 0..must_fail {
            let verdict = check_request(&frame[..cut]);
            assert!(
                verdict.is_err(),
                "api {key} v{v} #{n}: cut at {cut} of {} accepted",
                frame.len()
            );
        }
    }
}

/// Where a request's first top-level array count is, in a body encoded
/// with that array empty: after the fixed fields before it.
fn first_count_at(key: i16, v: i16, flex: bool) -> Option<usize> {
    let nullable_string = if flex { 1 } else { 2 };
    match key {
        api::METADATA => Some(0),
        api::PRODUCE => Some(nullable_string + 2 + 4),
        api::FETCH => Some(17 + if v >= 7 { 8 } else { 0 }),
        api::LIST_OFFSETS => Some(4 + if v >= 2 { 1 } else { 0 }),
        _ => None,
    }
}

/// A request of `key` at `v` whose arrays are empty (and not null).
fn empty_request(key: i16, v: i16) -> Vec<u8> {
    match key {
        api::METADATA => encode(
            key,
            v,
            0,
            &MetadataRequest::default().with_topics(Some(vec![])),
        ),
        api::PRODUCE => encode(key, v, 0, &ProduceRequest::default()),
        api::FETCH => encode(key, v, 0, &FetchRequest::default()),
        api::LIST_OFFSETS => encode(key, v, 0, &ListOffsetsRequest::default()),
        _ => unreachable!("only apis with arrays"),
    }
}

#[test]
fn a_count_of_i32_max_over_a_short_body_is_refused() {
    let mut checked = 0;
    for range in APIS.iter().filter(|a| COVERED.contains(&a.key)) {
        for v in range.min..=range.max {
            let flex = header_version(range.key, v) >= 2;
            let Some(at) = first_count_at(range.key, v, flex) else {
                continue;
            };
            let frame = empty_request(range.key, v);
            let body_at = {
                let mut d = Decoder::new(&frame);
                decode_header(&mut d).unwrap();
                d.position()
            };
            let at = body_at + at;
            let (count, old): (Vec<u8>, usize) = if flex {
                // A compact count is n + 1: 2^31 says i32::MAX entries.
                assert_eq!(
                    frame[at], 1,
                    "api {} v{v}: an empty compact array",
                    range.key
                );
                (vec![0x80, 0x80, 0x80, 0x80, 0x08], 1)
            } else {
                assert_eq!(frame[at..at + 4], [0; 4], "api {} v{v}", range.key);
                (i32::MAX.to_be_bytes().to_vec(), 4)
            };
            let mut hostile = frame[..at].to_vec();
            hostile.extend_from_slice(&count);
            hostile.extend_from_slice(&frame[at + old..]);
            hostile.extend_from_slice(&[0x00, 0x01, 0x41, 0, 0, 0, 0]);
            let err = check_request(&hostile).unwrap_err();
            assert!(
                err.contains("array of 2147483647 entries"),
                "api {} v{v}: {err}",
                range.key
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked} versions checked");
}

#[test]
fn any_four_bytes_set_to_i32_max_decode_without_a_panic() {
    for (key, v, n, c) in all_cases() {
        if n != CASES - 1 {
            continue;
        }
        for at in 0..c.frame.len().saturating_sub(3) {
            let mut hostile = c.frame.clone();
            hostile[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            let _ = check_request(&hostile);
            hostile[at..at + 4].copy_from_slice(&[0xff; 4]);
            let _ = check_request(&hostile);
        }
        let _ = (key, v);
    }
}

#[test]
fn the_module_reaches_every_served_api() {
    for range in APIS {
        assert_eq!(kafka::served(range.key), Some(*range));
    }
}
