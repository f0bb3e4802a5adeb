//! Differential tests of the consumer-group apis' request decoders
//! (OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup, Heartbeat,
//! LeaveGroup, SyncGroup, DescribeGroups, ListGroups): requests of every
//! version in `kafka::APIS`, encoded by the `kafka-protocol` crate (the
//! client side, as Kafka's own clients encode them), decoded by our public
//! per-api decoders, and every field our typed requests expose compared
//! with what was encoded. Contents vary per case: no, one or several
//! groups, members, protocols, topics and partitions; empty, non-ASCII and
//! long (two-byte compact length) strings; nulls where the version allows
//! them; unknown tagged fields on every structure of a flexible version;
//! extreme numbers.
//!
//! Then the same requests mangled: every truncation is an error, never a
//! panic; a top-level count of i32::MAX (a compact one of 2^31) over a
//! short body is refused; any four bytes overwritten with i32::MAX or -1
//! decode without a panic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use broker_server::kafka::{
    api, check_request, decode_header, describe_groups, find_coordinator, heartbeat, join_group,
    leave_group, list_groups, offset_commit, offset_fetch, sync_group, wire::Decoder, Header, APIS,
};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{GroupId, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

/// Cases per api and version.
const CASES: usize = 4;
/// The apis this file has cases for.
const COVERED: [i16; 9] = [
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

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

/// Unknown tagged fields for a structure of a flexible version (none in
/// case 0, so the plain shape is covered too). Their tags are above any
/// Kafka defines (kafka-protocol drops an unknown field whose tag is a
/// known one's, yet counts it), one of them a two-byte varint, and one
/// value long enough for a two-byte length.
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

/// A name per case and index: empty, plain, non-ASCII, or long enough for
/// a two-byte compact length.
fn name_of(kind: &str, case: usize, i: usize) -> String {
    match (case + i) % 4 {
        0 if i > 0 => format!("{kind}-{i}"),
        0 => String::new(),
        1 => format!("{kind}-{case}.{i}"),
        2 => format!("{kind}-é.ü_{case}_{i}"),
        _ => format!("{kind}{i}-{}", "x".repeat(60 * case)),
    }
}

/// A nullable string per case and index: null, empty, or a value.
fn nullable(kind: &str, case: usize, i: usize) -> Option<String> {
    match (case + i) % 3 {
        0 => None,
        1 => Some(String::new()),
        _ => Some(format!("{kind}-ß-{case}-{i}")),
    }
}

fn opt(v: &Option<String>) -> Option<StrBytes> {
    v.as_deref().map(s)
}

/// How many elements case `case` has of a list: 0, 1, then several.
fn many(case: usize) -> usize {
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

/// Checks a decoded body, given the decoder at it and the header.
type Check = Box<dyn Fn(&mut Decoder<'_>, &Header<'_>)>;

/// One encoded request and the checks of its decoded body.
struct Case {
    frame: Vec<u8>,
    check: Check,
}

fn case(key: i16, v: i16, n: usize) -> Case {
    match key {
        api::OFFSET_COMMIT => offset_commit_case(v, n),
        api::OFFSET_FETCH => offset_fetch_case(v, n),
        api::FIND_COORDINATOR => find_coordinator_case(v, n),
        api::JOIN_GROUP => join_group_case(v, n),
        api::HEARTBEAT => heartbeat_case(v, n),
        api::LEAVE_GROUP => leave_group_case(v, n),
        api::SYNC_GROUP => sync_group_case(v, n),
        api::DESCRIBE_GROUPS => describe_groups_case(v, n),
        api::LIST_GROUPS => list_groups_case(v, n),
        other => panic!("api {other} has no differential case in this file: add one"),
    }
}

fn header_version(key: i16, v: i16) -> i16 {
    match key {
        api::OFFSET_COMMIT => OffsetCommitRequest::header_version(v),
        api::OFFSET_FETCH => OffsetFetchRequest::header_version(v),
        api::FIND_COORDINATOR => FindCoordinatorRequest::header_version(v),
        api::JOIN_GROUP => JoinGroupRequest::header_version(v),
        api::HEARTBEAT => HeartbeatRequest::header_version(v),
        api::LEAVE_GROUP => LeaveGroupRequest::header_version(v),
        api::SYNC_GROUP => SyncGroupRequest::header_version(v),
        api::DESCRIBE_GROUPS => DescribeGroupsRequest::header_version(v),
        api::LIST_GROUPS => ListGroupsRequest::header_version(v),
        other => panic!("api {other} has no differential case in this file: add one"),
    }
}

fn find_coordinator_case(v: i16, n: usize) -> Case {
    let flex = FindCoordinatorRequest::header_version(v) >= 2;
    // Key type 1 (a transactional id) and an unknown one decode alike.
    let key_type: i8 = if v >= 1 { [0, 1, 0, -1][n % CASES] } else { 0 };
    let keys: Vec<String> = if v >= 4 {
        (0..many(n)).map(|i| name_of("group", n, i)).collect()
    } else {
        vec![name_of("group", n, 0)]
    };
    let mut body = FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 4 {
        body = body.with_coordinator_keys(keys.iter().map(|k| s(k)).collect());
    } else {
        body = body.with_key(s(&keys[0]));
    }
    let frame = encode(api::FIND_COORDINATOR, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = find_coordinator::decode(d, h.version, h.flexible).unwrap();
            let want = find_coordinator::FindCoordinatorRequest {
                key_type,
                keys: keys.iter().map(String::as_str).collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn join_group_case(v: i16, n: usize) -> Case {
    let flex = JoinGroupRequest::header_version(v) >= 2;
    let group = name_of("group", n, 0);
    let member = name_of("member", n + 1, 0);
    let session = [0, 10_000, i32::MAX, -1][n % CASES];
    let rebalance = [-1, 300_000, 0, i32::MIN][n % CASES];
    let instance = if v >= 5 {
        nullable("instance", n, 0)
    } else {
        None
    };
    let protocol_type = ["consumer", "", "connect", &"t".repeat(200)][n % CASES].to_owned();
    let protocols: Vec<(String, Vec<u8>)> = (0..[0, 1, 2, 4][n % CASES])
        .map(|i| {
            let name = ["range", "roundrobin", "cooperative-sticky", "ünï"][i];
            (name.to_owned(), vec![i as u8 ^ 0x5a; [0, 7, 140, 1][i]])
        })
        .collect();
    let mut body = JoinGroupRequest::default()
        .with_group_id(gid(&group))
        .with_session_timeout_ms(session)
        .with_member_id(s(&member))
        .with_group_instance_id(opt(&instance))
        .with_protocol_type(s(&protocol_type))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, metadata)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(name))
                        .with_metadata(Bytes::from(metadata.clone()))
                        .with_unknown_tagged_fields(tags(flex, n))
                })
                .collect(),
        )
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 1 {
        body = body.with_rebalance_timeout_ms(rebalance);
    }
    if v >= 8 {
        body = body.with_reason(opt(&nullable("reason", n, 1)));
    }
    let frame = encode(api::JOIN_GROUP, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = join_group::decode(d, h.version, h.flexible).unwrap();
            let want = join_group::JoinGroupRequest {
                group: &group,
                session_timeout_ms: session,
                // v0 has none: the session timeout serves.
                rebalance_timeout_ms: if v >= 1 { rebalance } else { session },
                member_id: &member,
                group_instance_id: instance.as_deref(),
                protocol_type: &protocol_type,
                protocols: protocols
                    .iter()
                    .map(|(n, m)| (n.as_str(), m.as_slice()))
                    .collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn sync_group_case(v: i16, n: usize) -> Case {
    let flex = SyncGroupRequest::header_version(v) >= 2;
    let group = name_of("group", n, 1);
    let member = name_of("member", n, 0);
    let generation = [-1, 0, 7, i32::MAX][n % CASES];
    let instance = if v >= 3 {
        nullable("instance", n, 1)
    } else {
        None
    };
    let (protocol_type, protocol_name) = if v >= 5 {
        (nullable("consumer", n, 0), nullable("range", n, 2))
    } else {
        (None, None)
    };
    let assignments: Vec<(String, Vec<u8>)> = (0..many(n))
        .map(|i| (name_of("member", n, i), vec![i as u8; [0, 3, 150, 1, 9][i]]))
        .collect();
    let body = SyncGroupRequest::default()
        .with_group_id(gid(&group))
        .with_generation_id(generation)
        .with_member_id(s(&member))
        .with_group_instance_id(opt(&instance))
        .with_protocol_type(opt(&protocol_type))
        .with_protocol_name(opt(&protocol_name))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from(a.clone()))
                        .with_unknown_tagged_fields(tags(flex, n))
                })
                .collect(),
        )
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::SYNC_GROUP, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = sync_group::decode(d, h.version, h.flexible).unwrap();
            let want = sync_group::SyncGroupRequest {
                group: &group,
                generation,
                member_id: &member,
                group_instance_id: instance.as_deref(),
                protocol_type: protocol_type.as_deref(),
                protocol_name: protocol_name.as_deref(),
                assignments: assignments
                    .iter()
                    .map(|(m, a)| (m.as_str(), a.as_slice()))
                    .collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn heartbeat_case(v: i16, n: usize) -> Case {
    let flex = HeartbeatRequest::header_version(v) >= 2;
    let group = name_of("group", n, 2);
    let member = name_of("member", n, 1);
    let generation = [0, -1, i32::MIN, i32::MAX][n % CASES];
    let instance = if v >= 3 {
        nullable("instance", n, 2)
    } else {
        None
    };
    let body = HeartbeatRequest::default()
        .with_group_id(gid(&group))
        .with_generation_id(generation)
        .with_member_id(s(&member))
        .with_group_instance_id(opt(&instance))
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::HEARTBEAT, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = heartbeat::decode(d, h.version, h.flexible).unwrap();
            let want = heartbeat::HeartbeatRequest {
                group: &group,
                generation,
                member_id: &member,
                group_instance_id: instance.as_deref(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn leave_group_case(v: i16, n: usize) -> Case {
    let flex = LeaveGroupRequest::header_version(v) >= 2;
    let group = name_of("group", n, 3);
    // Before v3 one member, without an instance id.
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        (0..many(n))
            .map(|i| (name_of("member", n, i), nullable("instance", n, i)))
            .collect()
    } else {
        vec![(name_of("member", n, 2), None)]
    };
    let mut body = LeaveGroupRequest::default()
        .with_group_id(gid(&group))
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 3 {
        body = body.with_members(
            members
                .iter()
                .enumerate()
                .map(|(i, (m, inst))| {
                    let mut id = MemberIdentity::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(opt(inst))
                        .with_unknown_tagged_fields(tags(flex, n + i));
                    if v >= 5 {
                        id = id.with_reason(opt(&nullable("reason", n, i + 1)));
                    }
                    id
                })
                .collect(),
        );
    } else {
        body = body.with_member_id(s(&members[0].0));
    }
    let frame = encode(api::LEAVE_GROUP, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = leave_group::decode(d, h.version, h.flexible).unwrap();
            let want = leave_group::LeaveGroupRequest {
                group: &group,
                members: members
                    .iter()
                    .map(|(m, i)| (m.as_str(), i.as_deref()))
                    .collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn offset_commit_case(v: i16, n: usize) -> Case {
    let flex = OffsetCommitRequest::header_version(v) >= 2;
    let group = name_of("group", n, 0);
    // A simple commit (-1, no member) in case 0.
    let generation = [-1, 3, i32::MAX, 0][n % CASES];
    let member = name_of("member", n, 0);
    let instance = if v >= 7 {
        nullable("instance", n, 0)
    } else {
        None
    };
    let topics: Vec<(String, Vec<(i32, i64)>)> = (0..many(n))
        .map(|i| {
            let partitions = (0..(i + n) % 4)
                .map(|p| ([0, 7, -1, i32::MAX][p], [0, 42, i64::MAX, -1][(p + n) % 4]))
                .collect();
            (name_of("topic", n, i), partitions)
        })
        .collect();
    let mut body = OffsetCommitRequest::default()
        .with_group_id(gid(&group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(&member))
        .with_group_instance_id(opt(&instance))
        .with_topics(
            topics
                .iter()
                .map(|(t, ps)| {
                    let partitions = ps
                        .iter()
                        .enumerate()
                        .map(|(p, &(index, offset))| {
                            let mut op = OffsetCommitRequestPartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_committed_metadata(opt(&nullable("meta", n, p)))
                                .with_unknown_tagged_fields(tags(flex, n));
                            if v >= 6 {
                                op = op.with_committed_leader_epoch([-1, 0, 5, i32::MAX][p]);
                            }
                            op
                        })
                        .collect();
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(partitions)
                        .with_unknown_tagged_fields(tags(flex, n))
                })
                .collect(),
        )
        .with_unknown_tagged_fields(tags(flex, n));
    if v <= 4 {
        body = body.with_retention_time_ms([-1, 0, i64::MAX, 86_400_000][n % CASES]);
    }
    let frame = encode(api::OFFSET_COMMIT, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = offset_commit::decode(d, h.version, h.flexible).unwrap();
            let want = offset_commit::OffsetCommitRequest {
                group: &group,
                generation,
                member_id: &member,
                group_instance_id: instance.as_deref(),
                topics: topics
                    .iter()
                    .map(|(t, ps)| (t.as_str(), ps.clone()))
                    .collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn offset_fetch_case(v: i16, n: usize) -> Case {
    let flex = OffsetFetchRequest::header_version(v) >= 2;
    let group = name_of("group", n, 1);
    // Case 0: null (v2+: everything committed), or none before v2.
    let topics: Option<Vec<(String, Vec<i32>)>> = if n == 0 && v >= 2 {
        None
    } else {
        Some(
            (0..many(n))
                .map(|i| {
                    let partitions = (0..(i + n) % 5)
                        .map(|p| [0, 1, -1, i32::MAX, 12][p])
                        .collect();
                    (name_of("topic", n, i), partitions)
                })
                .collect(),
        )
    };
    let require_stable = v >= 7 && n % 2 == 1;
    let body = OffsetFetchRequest::default()
        .with_group_id(gid(&group))
        .with_topics(topics.as_ref().map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_indexes(ps.clone())
                        .with_unknown_tagged_fields(tags(flex, n))
                })
                .collect()
        }))
        .with_require_stable(require_stable)
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::OFFSET_FETCH, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = offset_fetch::decode(d, h.version, h.flexible).unwrap();
            let want = offset_fetch::OffsetFetchRequest {
                group: &group,
                topics: topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|(t, ps)| (t.as_str(), ps.clone())).collect()),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn describe_groups_case(v: i16, n: usize) -> Case {
    let flex = DescribeGroupsRequest::header_version(v) >= 2;
    let groups: Vec<String> = (0..many(n)).map(|i| name_of("group", n, i)).collect();
    let mut body = DescribeGroupsRequest::default()
        .with_groups(groups.iter().map(|g| gid(g)).collect())
        .with_unknown_tagged_fields(tags(flex, n));
    if v >= 3 {
        body = body.with_include_authorized_operations(n % 2 == 1);
    }
    let frame = encode(api::DESCRIBE_GROUPS, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = describe_groups::decode(d, h.version, h.flexible).unwrap();
            let want = describe_groups::DescribeGroupsRequest {
                groups: groups.iter().map(String::as_str).collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

fn list_groups_case(v: i16, n: usize) -> Case {
    let flex = ListGroupsRequest::header_version(v) >= 2;
    let states: Vec<String> = if v >= 4 {
        (0..many(n))
            .map(|i| ["Stable", "", "PreparingRebalance", "dead", "Émpty"][i].to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let body = ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|st| s(st)).collect())
        .with_unknown_tagged_fields(tags(flex, n));
    let frame = encode(api::LIST_GROUPS, v, n, &body);
    Case {
        frame,
        check: Box::new(move |d, h| {
            let got = list_groups::decode(d, h.version, h.flexible).unwrap();
            let want = list_groups::ListGroupsRequest {
                states: states.iter().map(String::as_str).collect(),
            };
            assert_eq!(got, want);
            assert_eq!(d.remaining(), 0, "the whole body was read");
        }),
    }
}

/// Every (api, version, case) of this file served, with its request.
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

#[test]
fn every_group_api_is_served_and_covered() {
    for key in COVERED {
        assert!(
            APIS.iter().any(|a| a.key == key),
            "api {key} is covered here but not served"
        );
    }
}

#[test]
fn every_field_read_equals_what_kafka_protocol_encoded() {
    let mut checked = 0;
    for (key, v, n, c) in all_cases() {
        let (h, mut d) = header_of(&c.frame, key, v, n);
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (c.check)(&mut d, &h);
        }));
        assert!(verdict.is_ok(), "api {key} v{v} #{n}: the check failed");
        assert_eq!(check_request(&c.frame), Ok(()), "api {key} v{v} #{n}");
        checked += 1;
    }
    let covered = APIS.iter().filter(|a| COVERED.contains(&a.key));
    let versions: usize = covered.map(|a| (a.max - a.min + 1) as usize).sum();
    assert_eq!(checked, versions * CASES);
    assert!(versions >= 50, "{versions} versions");
}

#[test]
fn every_truncation_of_a_valid_request_is_an_error() {
    for (key, v, n, c) in all_cases() {
        let frame = &c.frame;
        for cut in 0..frame.len() {
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
/// with every string empty, every nullable null and that array empty:
/// after the fixed fields before it. None: the version has no array.
fn first_count_at(key: i16, v: i16, flex: bool) -> Option<usize> {
    // An empty string and a null one are the same size.
    let st = if flex { 1 } else { 2 };
    match key {
        api::FIND_COORDINATOR => (v >= 4).then_some(1),
        api::JOIN_GROUP => {
            let rebalance = if v >= 1 { 4 } else { 0 };
            let instance = if v >= 5 { st } else { 0 };
            Some(st + 4 + rebalance + st + instance + st)
        }
        api::SYNC_GROUP => {
            let instance = if v >= 3 { st } else { 0 };
            let protocol = if v >= 5 { 2 * st } else { 0 };
            Some(st + 4 + st + instance + protocol)
        }
        api::HEARTBEAT => None,
        api::LEAVE_GROUP => (v >= 3).then_some(st),
        api::OFFSET_COMMIT => {
            let instance = if v >= 7 { st } else { 0 };
            let retention = if v <= 4 { 8 } else { 0 };
            Some(st + 4 + st + instance + retention)
        }
        api::OFFSET_FETCH => Some(st),
        api::DESCRIBE_GROUPS => Some(0),
        api::LIST_GROUPS => (v >= 4).then_some(0),
        other => panic!("api {other}"),
    }
}

/// A request of `key` at `v` whose strings and arrays are empty (arrays
/// not null) and whose nullables are null.
fn empty_request(key: i16, v: i16) -> Vec<u8> {
    match key {
        api::FIND_COORDINATOR => encode(key, v, 0, &FindCoordinatorRequest::default()),
        api::JOIN_GROUP => encode(key, v, 0, &JoinGroupRequest::default()),
        api::SYNC_GROUP => encode(key, v, 0, &SyncGroupRequest::default()),
        api::LEAVE_GROUP => encode(key, v, 0, &LeaveGroupRequest::default()),
        api::OFFSET_COMMIT => encode(
            key,
            v,
            0,
            &OffsetCommitRequest::default().with_group_instance_id(None),
        ),
        api::OFFSET_FETCH => encode(
            key,
            v,
            0,
            &OffsetFetchRequest::default().with_topics(Some(vec![])),
        ),
        api::DESCRIBE_GROUPS => encode(key, v, 0, &DescribeGroupsRequest::default()),
        api::LIST_GROUPS => encode(key, v, 0, &ListGroupsRequest::default()),
        _ => unreachable!("only apis with arrays"),
    }
}

#[test]
fn a_count_of_i32_max_over_a_short_body_is_refused() {
    let mut checked = 0;
    for range in APIS.iter().filter(|a| COVERED.contains(&a.key)) {
        for v in range.min..=range.max {
            let key = range.key;
            let flex = header_version(key, v) >= 2;
            let Some(at) = first_count_at(key, v, flex) else {
                continue;
            };
            let frame = empty_request(key, v);
            assert_eq!(check_request(&frame), Ok(()), "api {key} v{v}: empty");
            let body_at = {
                let mut d = Decoder::new(&frame);
                decode_header(&mut d).unwrap();
                d.position()
            };
            let at = body_at + at;
            let (count, old): (Vec<u8>, usize) = if flex {
                // A compact count is n + 1: 2^31 says i32::MAX entries.
                assert_eq!(frame[at], 1, "api {key} v{v}: an empty compact array");
                (vec![0x80, 0x80, 0x80, 0x80, 0x08], 1)
            } else {
                assert_eq!(frame[at..at + 4], [0; 4], "api {key} v{v}");
                (i32::MAX.to_be_bytes().to_vec(), 4)
            };
            let mut hostile = frame[..at].to_vec();
            hostile.extend_from_slice(&count);
            hostile.extend_from_slice(&frame[at + old..]);
            hostile.extend_from_slice(&[0x00, 0x01, 0x41, 0, 0, 0, 0]);
            let err = check_request(&hostile).unwrap_err();
            assert!(
                err.contains("array of 2147483647 entries"),
                "api {key} v{v}: {err}"
            );
            checked += 1;
        }
    }
    // Every version but Heartbeat's, FindCoordinator's before v4 and
    // ListGroups' before v4.
    assert_eq!(checked, 7 + 7 + 1 + 10 + 3 + 6 + 6 + 1);
}

#[test]
fn a_nested_count_of_i32_max_over_a_short_body_is_refused() {
    // OffsetCommit and OffsetFetch with one topic (empty name) whose
    // partition count claims i32::MAX entries.
    let mut checked = 0;
    for key in [api::OFFSET_COMMIT, api::OFFSET_FETCH] {
        let range = APIS.iter().find(|a| a.key == key).unwrap();
        for v in range.min..=range.max {
            let flex = header_version(key, v) >= 2;
            let st = if flex { 1 } else { 2 };
            let top = if flex { 1 } else { 4 };
            let frame = match key {
                api::OFFSET_COMMIT => encode(
                    key,
                    v,
                    0,
                    &OffsetCommitRequest::default()
                        .with_topics(vec![OffsetCommitRequestTopic::default()]),
                ),
                _ => encode(
                    key,
                    v,
                    0,
                    &OffsetFetchRequest::default()
                        .with_topics(Some(vec![OffsetFetchRequestTopic::default()])),
                ),
            };
            let body_at = {
                let mut d = Decoder::new(&frame);
                decode_header(&mut d).unwrap();
                d.position()
            };
            let at = body_at + first_count_at(key, v, flex).unwrap() + top + st;
            let (count, old): (Vec<u8>, usize) = if flex {
                assert_eq!(frame[at], 1, "api {key} v{v}");
                (vec![0x80, 0x80, 0x80, 0x80, 0x08], 1)
            } else {
                assert_eq!(frame[at..at + 4], [0; 4], "api {key} v{v}");
                (i32::MAX.to_be_bytes().to_vec(), 4)
            };
            let mut hostile = frame[..at].to_vec();
            hostile.extend_from_slice(&count);
            hostile.extend_from_slice(&frame[at + old..]);
            hostile.extend_from_slice(&[0; 24]);
            let err = check_request(&hostile).unwrap_err();
            assert!(
                err.contains("array of 2147483647 entries"),
                "api {key} v{v}: {err}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 7 + 7);
}

#[test]
fn any_four_bytes_set_to_i32_max_decode_without_a_panic() {
    for (_, _, n, c) in all_cases() {
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
    }
}
