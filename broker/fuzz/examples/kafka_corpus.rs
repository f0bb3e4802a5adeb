//! Writes the seed corpus of the `kafka_decode` fuzz target: real requests
//! of every api and version in `broker_server::kafka::APIS`, encoded by the
//! `kafka-protocol` crate (the client side), a few contents each (empty and
//! null arrays, several topics and partitions, tagged fields where the
//! version is flexible). Each is checked to be accepted by `check_request`
//! before it is written, so the corpus starts where the decoders do real
//! work.
//!
//!   cargo run --example kafka_corpus        (from broker/fuzz)
//!
//! Deterministic: the same files every run, named `<api>-v<version>-<n>`.

use std::path::Path;

use broker_server::kafka::{api, check_request, APIS};
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
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, OffsetForLeaderEpochRequest,
    ProducerId, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/kafka_decode");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut written = 0;
    for range in APIS {
        for version in range.min..=range.max {
            for (n, frame) in requests(range.key, version).into_iter().enumerate() {
                if let Err(e) = check_request(&frame) {
                    panic!("api {} v{version} #{n} refused: {e}", range.key);
                }
                let name = format!("{}-v{version}-{n}", api_name(range.key));
                std::fs::write(dir.join(name), &frame).expect("write a corpus file");
                written += 1;
            }
        }
    }
    println!("{written} requests in {}", dir.display());
}

fn api_name(key: i16) -> String {
    match key {
        api::PRODUCE => "produce".into(),
        api::FETCH => "fetch".into(),
        api::LIST_OFFSETS => "list_offsets".into(),
        api::METADATA => "metadata".into(),
        api::API_VERSIONS => "api_versions".into(),
        api::INIT_PRODUCER_ID => "init_producer_id".into(),
        api::CREATE_TOPICS => "create_topics".into(),
        api::DELETE_TOPICS => "delete_topics".into(),
        api::DESCRIBE_CONFIGS => "describe_configs".into(),
        api::OFFSET_FOR_LEADER_EPOCH => "offset_for_leader_epoch".into(),
        other => format!("api{other}"),
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Header then body, as the codec sees a request after its size prefix.
fn frame<R: Encodable + HeaderVersion>(
    key: i16,
    version: i16,
    body: &R,
    flexible_tags: bool,
) -> Vec<u8> {
    let header_version = R::header_version(version);
    let mut header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(s("corpus")));
    if flexible_tags && header_version >= 2 {
        header = header.with_unknown_tagged_field(700, Bytes::from_static(b"hdr"));
    }
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, header_version)
        .expect("encode a request header");
    body.encode(&mut buf, version)
        .expect("encode a request body");
    buf.to_vec()
}

/// A few requests of `key` at `version`; the second of each is the rich one.
fn requests(key: i16, v: i16) -> Vec<Vec<u8>> {
    match key {
        api::METADATA => {
            let flex = v >= 9;
            let named = |n: &str| {
                let t = MetadataRequestTopic::default().with_name(Some(topic(n)));
                if flex {
                    t.with_unknown_tagged_field(300, Bytes::from_static(b"t"))
                } else {
                    t
                }
            };
            let mut topics = vec![named("orders"), named("payments-eu")];
            if v >= 10 {
                topics.push(MetadataRequestTopic::default().with_name(None));
            }
            let mut rich = MetadataRequest::default().with_topics(Some(topics));
            if v >= 4 {
                rich = rich.with_allow_auto_topic_creation(true);
            }
            if (8..=10).contains(&v) {
                rich = rich.with_include_cluster_authorized_operations(true);
            }
            vec![
                frame(key, v, &MetadataRequest::default().with_topics(None), false),
                frame(key, v, &rich, true),
                frame(
                    key,
                    v,
                    &MetadataRequest::default().with_topics(Some(vec![])),
                    false,
                ),
            ]
        }
        api::PRODUCE => {
            let batch = broker_format_batch();
            let part = |i: i32, r: Option<Bytes>| {
                PartitionProduceData::default()
                    .with_index(i)
                    .with_records(r)
            };
            let rich = ProduceRequest::default()
                .with_transactional_id(if v >= 3 {
                    Some(s("txn-1").into())
                } else {
                    None
                })
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic("orders"))
                        .with_partition_data(vec![part(0, Some(batch.clone())), part(3, None)]),
                    TopicProduceData::default()
                        .with_name(topic("payments"))
                        .with_partition_data(vec![part(1, Some(batch))]),
                ]);
            vec![
                frame(key, v, &ProduceRequest::default().with_acks(1), false),
                frame(key, v, &rich, true),
            ]
        }
        api::FETCH => {
            let part = |i: i32, offset: i64| {
                FetchPartition::default()
                    .with_partition(i)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)
            };
            let mut rich = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic("orders"))
                        .with_partitions(vec![part(0, 0), part(1, 42)]),
                    FetchTopic::default()
                        .with_topic(topic("payments"))
                        .with_partitions(vec![part(2, 7)]),
                ]);
            if v >= 7 {
                rich = rich.with_forgotten_topics_data(vec![ForgottenTopic::default()
                    .with_topic(topic("old"))
                    .with_partitions(vec![0, 1, 2])]);
            }
            if v >= 11 {
                rich = rich.with_rack_id(s("rack-a"));
            }
            vec![
                frame(key, v, &FetchRequest::default(), false),
                frame(key, v, &rich, true),
            ]
        }
        api::LIST_OFFSETS => {
            let part = |i: i32, ts: i64| {
                ListOffsetsPartition::default()
                    .with_partition_index(i)
                    .with_timestamp(ts)
            };
            let rich = ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![part(0, -1), part(1, -2)]),
                ListOffsetsTopic::default()
                    .with_name(topic("payments"))
                    .with_partitions(vec![part(0, 1_700_000_000_000)]),
            ]);
            vec![
                frame(key, v, &ListOffsetsRequest::default(), false),
                frame(key, v, &rich, true),
            ]
        }
        api::API_VERSIONS => {
            let mut rich = ApiVersionsRequest::default();
            if v >= 3 {
                rich = rich
                    .with_client_software_name(s("broker-fuzz"))
                    .with_client_software_version(s("0.0.0"));
            }
            vec![frame(key, v, &rich, true)]
        }
        api::INIT_PRODUCER_ID => {
            let mut rich = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
            if v >= 3 {
                rich = rich
                    .with_producer_id(ProducerId(1 << 33))
                    .with_producer_epoch(4);
            }
            vec![
                frame(key, v, &InitProducerIdRequest::default(), false),
                frame(key, v, &rich, true),
            ]
        }
        // The admin apis: their default (empty) requests.
        api::CREATE_TOPICS => vec![frame(key, v, &CreateTopicsRequest::default(), true)],
        api::DELETE_TOPICS => vec![frame(key, v, &DeleteTopicsRequest::default(), true)],
        api::DESCRIBE_CONFIGS => vec![frame(key, v, &DescribeConfigsRequest::default(), true)],
        api::OFFSET_FOR_LEADER_EPOCH => {
            vec![frame(key, v, &OffsetForLeaderEpochRequest::default(), true)]
        }
        other => panic!("api {other} has no requests here: add them"),
    }
}

/// One real record batch of two records.
fn broker_format_batch() -> Bytes {
    let mut b = broker_format::BatchBuilder::new(1_700_000_000_000);
    b.push(1_700_000_000_000, Some(b"key-1"), Some(b"value one"), &[]);
    b.push(
        1_700_000_000_005,
        None,
        Some(b"value two"),
        &[(b"h".as_slice(), Some(b"v".as_slice()))],
    );
    Bytes::from(b.finish())
}
