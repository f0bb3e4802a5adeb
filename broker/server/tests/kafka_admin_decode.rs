//! Differential tests of the admin apis' request decoders (CreateTopics,
//! DeleteTopics, DescribeConfigs, OffsetForLeaderEpoch): each request is
//! encoded by the `kafka-protocol` crate (Kafka's own message definitions)
//! at every version this broker serves, decoded by ours, and the fields
//! compared; the whole frame also goes through `check_request`, and every
//! truncation of it is an error, never a panic.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

use broker_server::kafka::wire::Decoder;
use broker_server::kafka::{admin, api, check_request, configs, leader_epoch, served};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// The body and the whole frame (header + body, no size prefix) of `body`
/// as api `key` at `version`, and whether the version is flexible.
fn encode<R: Encodable + HeaderVersion>(
    key: i16,
    version: i16,
    body: &R,
) -> (Vec<u8>, Vec<u8>, bool) {
    let header_version = R::header_version(version);
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("decode-test")))
        .encode(&mut frame, header_version)
        .unwrap();
    let mut b = BytesMut::new();
    body.encode(&mut b, version).unwrap();
    frame.extend_from_slice(&b);
    (b.to_vec(), frame.to_vec(), header_version >= 2)
}

/// The versions served of `key`.
fn versions(key: i16) -> std::ops::RangeInclusive<i16> {
    let r = served(key).unwrap();
    r.min..=r.max
}

/// Every strict prefix of the frame's body is refused without a panic.
fn truncations_are_errors(frame: &[u8], body_len: usize) {
    let header_len = frame.len() - body_len;
    for cut in header_len..frame.len() {
        assert!(
            check_request(&frame[..cut]).is_err(),
            "a frame cut at {cut} of {} was accepted",
            frame.len()
        );
    }
}

#[test]
fn create_topics_decodes_every_served_version_as_kafka_encodes_it() {
    assert_eq!(versions(api::CREATE_TOPICS), 2..=7);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s("orders")))
                .with_num_partitions(6)
                .with_replication_factor(1)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("60000"))),
                    CreatableTopicConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_value(None),
                ]),
            CreatableTopic::default()
                .with_name(TopicName(s("placed")))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(1), BrokerId(2)])]),
        ])
        .with_timeout_ms(30_000)
        .with_validate_only(true);
    for v in versions(api::CREATE_TOPICS) {
        let (body, frame, flex) = encode(api::CREATE_TOPICS, v, &request);
        assert_eq!(flex, v >= 5, "v{v}");
        let got = admin::decode(&mut Decoder::new(&body), v, flex).unwrap();
        assert_eq!(
            got,
            admin::CreateTopicsRequest {
                topics: vec![
                    admin::CreatableTopic {
                        name: "orders",
                        num_partitions: 6,
                        replication_factor: 1,
                        assignments: vec![],
                        configs: vec![("retention.ms", Some("60000")), ("cleanup.policy", None)],
                    },
                    admin::CreatableTopic {
                        name: "placed",
                        num_partitions: -1,
                        replication_factor: -1,
                        assignments: vec![(0, vec![1, 2])],
                        configs: vec![],
                    },
                ],
                timeout_ms: 30_000,
                validate_only: true,
            },
            "v{v}"
        );
        check_request(&frame).unwrap();
        truncations_are_errors(&frame, body.len());
    }
}

#[test]
fn delete_topics_decodes_names_and_ids_at_every_served_version() {
    assert_eq!(versions(api::DELETE_TOPICS), 1..=6);
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let id_bytes: [u8; 16] = [
        0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f, 0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f, 0xe0,
        0xc8,
    ];
    for v in versions(api::DELETE_TOPICS) {
        let request = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(TopicName(s("a")))),
                DeleteTopicState::default()
                    .with_name(None)
                    .with_topic_id(id.parse().unwrap()),
            ])
        } else {
            DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s("a")), TopicName(s("bb"))])
        }
        .with_timeout_ms(1_500);
        let (body, frame, flex) = encode(api::DELETE_TOPICS, v, &request);
        assert_eq!(flex, v >= 4, "v{v}");
        let got = admin::decode_delete(&mut Decoder::new(&body), v, flex).unwrap();
        let second = if v >= 6 {
            admin::DeleteTopic {
                name: None,
                topic_id: id_bytes,
            }
        } else {
            admin::DeleteTopic {
                name: Some("bb"),
                topic_id: [0; 16],
            }
        };
        assert_eq!(
            got,
            admin::DeleteTopicsRequest {
                topics: vec![
                    admin::DeleteTopic {
                        name: Some("a"),
                        topic_id: [0; 16]
                    },
                    second
                ],
                timeout_ms: 1_500,
            },
            "v{v}"
        );
        check_request(&frame).unwrap();
        truncations_are_errors(&frame, body.len());
    }
}

#[test]
fn describe_configs_decodes_resources_and_null_keys_at_every_served_version() {
    assert_eq!(versions(api::DESCRIBE_CONFIGS), 1..=4);
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configuration_keys(None),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("1024"))
                .with_configuration_keys(Some(vec![s("num.partitions"), s("message.max.bytes")])),
        ])
        .with_include_synonyms(true);
    for v in versions(api::DESCRIBE_CONFIGS) {
        let request = if v >= 3 {
            request.clone().with_include_documentation(true)
        } else {
            request.clone()
        };
        let (body, frame, flex) = encode(api::DESCRIBE_CONFIGS, v, &request);
        assert_eq!(flex, v >= 4, "v{v}");
        let got = configs::decode(&mut Decoder::new(&body), v, flex).unwrap();
        assert_eq!(
            got,
            configs::DescribeConfigsRequest {
                resources: vec![
                    configs::ConfigResource {
                        resource_type: 2,
                        name: "orders",
                        keys: None,
                    },
                    configs::ConfigResource {
                        resource_type: 4,
                        name: "1024",
                        keys: Some(vec!["num.partitions", "message.max.bytes"]),
                    },
                ],
                include_synonyms: true,
                include_documentation: v >= 3,
            },
            "v{v}"
        );
        check_request(&frame).unwrap();
        truncations_are_errors(&frame, body.len());
    }
}

#[test]
fn offset_for_leader_epoch_decodes_every_served_version() {
    assert_eq!(versions(api::OFFSET_FOR_LEADER_EPOCH), 2..=4);
    for v in versions(api::OFFSET_FOR_LEADER_EPOCH) {
        let mut request = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s("orders")))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                    OffsetForLeaderPartition::default()
                        .with_partition(3)
                        .with_current_leader_epoch(5)
                        .with_leader_epoch(4),
                ]),
        ]);
        if v >= 3 {
            request = request.with_replica_id(BrokerId(-1));
        }
        let (body, frame, flex) = encode(api::OFFSET_FOR_LEADER_EPOCH, v, &request);
        assert_eq!(flex, v >= 4, "v{v}");
        let got = leader_epoch::decode(&mut Decoder::new(&body), v, flex).unwrap();
        assert_eq!(
            got,
            leader_epoch::OffsetForLeaderEpochRequest {
                replica_id: if v >= 3 { -1 } else { -2 },
                topics: vec![(
                    "orders",
                    vec![
                        leader_epoch::EpochQuery {
                            partition: 0,
                            current_leader_epoch: -1,
                            leader_epoch: 0,
                        },
                        leader_epoch::EpochQuery {
                            partition: 3,
                            current_leader_epoch: 5,
                            leader_epoch: 4,
                        },
                    ],
                )],
            },
            "v{v}"
        );
        check_request(&frame).unwrap();
        truncations_are_errors(&frame, body.len());
    }
}

#[test]
fn huge_counts_in_admin_requests_are_refused_before_any_allocation() {
    // A CreateTopics v2 body claiming 2^31-1 topics, a DeleteTopics v6 one
    // claiming 2^32-2 (compact), a DescribeConfigs v1 and an
    // OffsetForLeaderEpoch v2 claiming a million: each is a decode error.
    let mut d = Decoder::new(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
    assert!(admin::decode(&mut d, 2, false).is_err());
    let mut d = Decoder::new(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0]);
    assert!(admin::decode_delete(&mut d, 6, true).is_err());
    let mut d = Decoder::new(&[0x00, 0x0f, 0x42, 0x40, 0]);
    assert!(configs::decode(&mut d, 1, false).is_err());
    let mut d = Decoder::new(&[0x00, 0x0f, 0x42, 0x40]);
    assert!(leader_epoch::decode(&mut d, 2, false).is_err());
}
