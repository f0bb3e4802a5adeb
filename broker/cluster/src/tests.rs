//! Unit tests of the metadata state machine: registration and epochs,
//! fencing, topics, placement, queries, snapshots and the session tracker,
//! each on small hand-built images.
#![allow(clippy::unwrap_used)]

use crate::limits::{MAX_BROKER_ID, MAX_PARTITIONS_PER_TOPIC, MAX_SHARDS_PER_BROKER};
use crate::placement::{name_hash, place};
use crate::*;

const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qk";

fn listener(port: u16, shards: u16) -> Listener {
    Listener {
        addr: format!("broker.local:{port}"),
        shard_ports: (1..=shards).map(|s| port + s).collect(),
    }
}

fn registration(id: u32, incarnation: u128, shards: u16) -> BrokerRegistration {
    BrokerRegistration {
        id: BrokerId(id),
        incarnation: Incarnation(incarnation),
        shards,
        native: listener(9000, shards),
        kafka: Some(listener(19000, shards)),
        previous_epoch: None,
        fsync_every_write: false,
    }
}

fn config() -> TopicConfig {
    TopicConfig {
        retention_ms: Some(3_600_000),
        retention_bytes: None,
        segment_bytes: 1 << 30,
        log_append_time: false,
        replication_factor: 1,
        min_insync_replicas: 1,
        unclean_leader_election: false,
    }
}

fn create(name: &str, partitions: u32, request: u128) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_owned(),
        partitions,
        config: config(),
        request_id: RequestId(request),
    }
}

fn register(image: &mut MetadataImage, id: u32, incarnation: u128, shards: u16) -> BrokerEpoch {
    match image.apply(&MetadataCommand::RegisterBroker(registration(
        id,
        incarnation,
        shards,
    ))) {
        Ok(Outcome::Registered { epoch }) => epoch,
        other => panic!("registration of broker {id}: {other:?}"),
    }
}

fn unfence(image: &mut MetadataImage, id: u32) {
    let epoch = image.broker(BrokerId(id)).unwrap().epoch;
    let unfenced = image.apply(&MetadataCommand::UnfenceBroker {
        id: BrokerId(id),
        epoch,
    });
    assert_eq!(unfenced, Ok(Outcome::Done));
}

fn placement_of(result: CommandResult) -> Vec<Placement> {
    match result {
        Ok(Outcome::TopicCreated { placement }) => placement,
        other => panic!("not a creation: {other:?}"),
    }
}

/// An image with unfenced brokers of the given shard counts, ids 1, 2, ...
fn cluster(shards: &[u16]) -> MetadataImage {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    for (i, &s) in shards.iter().enumerate() {
        let id = i as u32 + 1;
        register(&mut image, id, u128::from(id) * 100, s);
        unfence(&mut image, id);
    }
    image
}

/// Applies `command`, asserts it is refused with `expected` and that the
/// image did not change.
fn assert_refused(image: &mut MetadataImage, command: MetadataCommand, expected: ClusterError) {
    let before = image.clone();
    assert_eq!(image.apply(&command), Err(expected), "{command:?}");
    assert_eq!(*image, before, "a refused {command:?} changed the image");
}

#[test]
fn registration_starts_fenced_with_the_first_epoch() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let epoch = register(&mut image, 1, 7, 4);
    assert_eq!(epoch, BrokerEpoch(1));
    let record = image.broker(BrokerId(1)).unwrap();
    assert_eq!(record.state, BrokerState::Fenced);
    assert_eq!(record.registered_at_version, 1);
    assert!(image.is_fenced(BrokerId(1)));
    assert_eq!(image.next_broker_epoch(), BrokerEpoch(2));
}

#[test]
fn re_registering_the_same_incarnation_keeps_its_epoch_and_the_image() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let epoch = register(&mut image, 1, 7, 4);
    unfence(&mut image, 1);
    let before = image.clone();
    assert_eq!(register(&mut image, 1, 7, 4), epoch);
    assert_eq!(
        image, before,
        "a retry must not change the image (nor fence it)"
    );
}

#[test]
fn a_new_incarnation_gets_a_new_larger_epoch_and_is_fenced() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let first = register(&mut image, 1, 7, 4);
    unfence(&mut image, 1);
    let second = register(&mut image, 1, 8, 4);
    assert!(second > first, "{second:?} after {first:?}");
    let record = image.broker(BrokerId(1)).unwrap();
    assert_eq!(record.epoch, second);
    assert_eq!(record.registration.incarnation, Incarnation(8));
    assert_eq!(record.state, BrokerState::Fenced);
}

#[test]
fn epochs_are_never_reused_across_brokers() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let mut seen = Vec::new();
    for round in 0..3u128 {
        for id in [3, 1, 2] {
            seen.push(register(&mut image, id, round * 10 + u128::from(id), 2));
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "an epoch was given twice: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn the_same_incarnation_with_other_contents_is_a_conflict() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    register(&mut image, 1, 7, 4);
    let command = MetadataCommand::RegisterBroker(registration(1, 7, 2));
    assert_refused(
        &mut image,
        command,
        ClusterError::IncarnationConflict { id: BrokerId(1) },
    );
}

#[test]
fn invalid_registrations_are_refused() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let good = registration(1, 7, 2);
    let with = |f: &dyn Fn(&mut BrokerRegistration)| {
        let mut r = good.clone();
        f(&mut r);
        MetadataCommand::RegisterBroker(r)
    };
    let cases: Vec<(MetadataCommand, ClusterError)> = vec![
        (
            with(&|r| r.id = BrokerId(MAX_BROKER_ID + 1)),
            ClusterError::BrokerIdOutOfRange {
                id: BrokerId(MAX_BROKER_ID + 1),
            },
        ),
        (
            with(&|r| r.shards = 0),
            ClusterError::ShardCountOutOfRange { shards: 0 },
        ),
        (
            with(&|r| r.shards = MAX_SHARDS_PER_BROKER + 1),
            ClusterError::ShardCountOutOfRange {
                shards: MAX_SHARDS_PER_BROKER + 1,
            },
        ),
        (
            with(&|r| r.native.shard_ports.push(9100)),
            ClusterError::ShardPortCount {
                listener: "native",
                given: 3,
                shards: 2,
            },
        ),
        (
            with(&|r| r.kafka = Some(listener(19000, 1))),
            ClusterError::ShardPortCount {
                listener: "kafka",
                given: 1,
                shards: 2,
            },
        ),
    ];
    for (command, expected) in cases {
        assert_refused(&mut image, command, expected);
    }
    for addr in [
        "",
        "host",
        "host:",
        "host:0",
        "host:65536",
        ":9092",
        "::1:9092",
        "[]:9092",
        "a b:9092",
        "[::1:9092",
    ] {
        let command = with(&|r| r.native.addr = addr.to_owned());
        let before = image.clone();
        let refused = image.apply(&command);
        assert!(
            matches!(
                refused,
                Err(ClusterError::InvalidEndpoint {
                    listener: "native",
                    ..
                })
            ),
            "{addr:?}: {refused:?}"
        );
        assert_eq!(image, before);
    }
    let command = with(&|r| r.native.shard_ports[1] = 0);
    assert!(matches!(
        image.apply(&command),
        Err(ClusterError::InvalidEndpoint { .. })
    ));
    for addr in ["10.0.0.1:9092", "[::1]:9092", "broker-1.example.com:1"] {
        let mut r = good.clone();
        r.native.addr = addr.to_owned();
        assert_eq!(r.validate(), Ok(()), "{addr}");
    }
    let mut no_kafka = good;
    no_kafka.kafka = None;
    assert_eq!(no_kafka.validate(), Ok(()));
}

#[test]
fn kafka_node_ids_are_broker_times_1024_plus_shard_within_i32() {
    assert_eq!(kafka_node_id(BrokerId(0), ShardIndex(0)), Some(0));
    assert_eq!(
        kafka_node_id(BrokerId(3), ShardIndex(5)),
        Some(3 * 1024 + 5)
    );
    let last = kafka_node_id(BrokerId(MAX_BROKER_ID), ShardIndex(1023)).unwrap();
    assert_eq!(
        from_kafka_node_id(last),
        Some((BrokerId(MAX_BROKER_ID), ShardIndex(1023)))
    );
    assert_eq!(
        kafka_node_id(BrokerId(MAX_BROKER_ID + 1), ShardIndex(0)),
        None
    );
    assert_eq!(kafka_node_id(BrokerId(1), ShardIndex(1024)), None);
    assert_eq!(from_kafka_node_id(-1), None);
    assert_eq!(from_kafka_node_id(i32::MAX), None);
    assert_eq!(from_kafka_node_id(2049), Some((BrokerId(2), ShardIndex(1))));
}

#[test]
fn a_broker_registered_with_fewer_shards_keeps_its_partitions_balanced_on_the_rest() {
    let mut image = cluster(&[8, 3]);
    let before = placement_of(image.apply(&create("orders", 40, 1)));
    register(&mut image, 1, 999, 3);
    let after = image.topic("orders").unwrap().partitions.clone();
    let mut per_shard = [0u32; 3];
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.broker, b.broker, "a partition changed broker");
        if b.broker == BrokerId(1) {
            assert!(a.shard.0 < 3, "{a:?} on a shard broker 1 no longer has");
            if b.shard.0 < 3 {
                assert_eq!(a, b, "a partition on a remaining shard moved");
            }
            per_shard[usize::from(a.shard.0)] += 1;
        } else {
            assert_eq!(a, b, "a partition of another broker moved");
        }
    }
    let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
    assert!(max.unwrap() - min.unwrap() <= 1, "{per_shard:?}");
}

#[test]
fn a_broker_registered_with_more_shards_moves_nothing() {
    let mut image = cluster(&[2, 2]);
    let before = placement_of(image.apply(&create("orders", 12, 1)));
    register(&mut image, 2, 999, 16);
    assert_eq!(image.topic("orders").unwrap().partitions, before);
}

#[test]
fn a_stale_epoch_is_refused_and_the_image_unchanged() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let old = register(&mut image, 1, 7, 2);
    let current = register(&mut image, 1, 8, 2);
    let id = BrokerId(1);
    let stale = ClusterError::StaleBrokerEpoch {
        id,
        given: old,
        current,
    };
    for command in [
        MetadataCommand::UnfenceBroker { id, epoch: old },
        MetadataCommand::FenceBroker { id, epoch: old },
        MetadataCommand::ShutdownBroker { id, epoch: old },
    ] {
        assert_refused(&mut image, command, stale.clone());
    }
    assert_eq!(image.check_epoch(id, old), Err(stale));
    assert_eq!(image.check_epoch(id, current), Ok(()));
}

#[test]
fn commands_for_an_unknown_broker_are_refused() {
    let mut image = cluster(&[1]);
    let id = BrokerId(42);
    let command = MetadataCommand::FenceBroker {
        id,
        epoch: BrokerEpoch(1),
    };
    assert_refused(&mut image, command, ClusterError::UnknownBroker { id });
    assert!(image.is_fenced(id), "an unknown broker cannot serve");
}

#[test]
fn a_fenced_brokers_partitions_are_unavailable_and_unfencing_brings_them_back() {
    let mut image = cluster(&[2, 2, 2]);
    let placement = placement_of(image.apply(&create("orders", 6, 1)));
    let victim = placement[0].broker;
    let epoch = image.broker(victim).unwrap().epoch;
    let fenced = image.apply(&MetadataCommand::FenceBroker { id: victim, epoch });
    assert_eq!(fenced, Ok(Outcome::Done));
    for (p, pl) in placement.iter().enumerate() {
        let owner = image.partition_owner("orders", p as u32);
        if pl.broker == victim {
            assert_eq!(
                owner,
                Err(ClusterError::Unavailable {
                    topic: "orders".into(),
                    partition: p as u32,
                    broker: victim
                })
            );
        } else {
            assert_eq!(owner, Ok(*pl));
        }
    }
    let unfenced = image.apply(&MetadataCommand::UnfenceBroker { id: victim, epoch });
    assert_eq!(unfenced, Ok(Outcome::Done));
    for (p, pl) in placement.iter().enumerate() {
        assert_eq!(image.partition_owner("orders", p as u32), Ok(*pl));
    }
}

#[test]
fn fencing_a_fenced_broker_changes_nothing() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    let epoch = register(&mut image, 1, 7, 1);
    let before = image.clone();
    let again = image.apply(&MetadataCommand::FenceBroker {
        id: BrokerId(1),
        epoch,
    });
    assert_eq!(again, Ok(Outcome::Done));
    assert_eq!(image, before, "the version must not move either");
}

#[test]
fn a_shut_down_broker_is_fenced_at_once_and_never_unfenced_again() {
    let mut image = cluster(&[1, 1]);
    let id = BrokerId(1);
    let epoch = image.broker(id).unwrap().epoch;
    let shut = image.apply(&MetadataCommand::ShutdownBroker { id, epoch });
    assert_eq!(shut, Ok(Outcome::Done));
    assert_eq!(image.broker(id).unwrap().state, BrokerState::ShutDown);
    assert!(image.is_fenced(id));
    assert_refused(
        &mut image,
        MetadataCommand::UnfenceBroker { id, epoch },
        ClusterError::BrokerShutDown { id },
    );
    let before = image.clone();
    let fence = image.apply(&MetadataCommand::FenceBroker { id, epoch });
    assert_eq!(fence, Ok(Outcome::Done));
    assert_eq!(image, before, "fencing a shut-down broker changes nothing");
    register(&mut image, 1, 8, 1);
    unfence(&mut image, 1);
    assert!(!image.is_fenced(id), "a new incarnation serves again");
}

#[test]
fn a_create_retried_with_its_request_id_returns_the_same_placement_once() {
    let mut image = cluster(&[2, 3]);
    let first = placement_of(image.apply(&create("orders", 5, 77)));
    let before = image.clone();
    assert_eq!(placement_of(image.apply(&create("orders", 5, 77))), first);
    assert_eq!(image, before, "a retry must not change the image");
}

#[test]
fn a_create_with_another_request_id_or_contents_is_topic_already_exists() {
    let mut image = cluster(&[2]);
    image.apply(&create("orders", 5, 77)).unwrap();
    let exists = ClusterError::TopicAlreadyExists {
        name: "orders".into(),
    };
    assert_refused(&mut image, create("orders", 5, 78), exists.clone());
    assert_refused(&mut image, create("orders", 6, 77), exists.clone());
    let mut other_config = create("orders", 5, 77);
    if let MetadataCommand::CreateTopic { config, .. } = &mut other_config {
        config.log_append_time = true;
    }
    assert_refused(&mut image, other_config, exists);
}

#[test]
fn bad_topic_names_are_refused() {
    let mut image = cluster(&[1]);
    let long = "a".repeat(250);
    for name in ["", ".", "..", "a/b", "a b", "tópico", "a:b", long.as_str()] {
        let before = image.clone();
        let refused = image.apply(&create(name, 1, 1));
        assert!(
            matches!(refused, Err(ClusterError::InvalidTopicName { .. })),
            "{name:?}: {refused:?}"
        );
        assert_eq!(image, before);
    }
    for name in [
        "a",
        "...",
        "a.b_c-D9",
        "__consumer_offsets",
        &"a".repeat(249),
    ] {
        assert_eq!(validate_topic_name(name), Ok(()), "{name}");
    }
}

#[test]
fn partition_counts_outside_the_bounds_are_refused() {
    let mut image = cluster(&[1]);
    for partitions in [0, MAX_PARTITIONS_PER_TOPIC + 1, u32::MAX] {
        assert_refused(
            &mut image,
            create("orders", partitions, 1),
            ClusterError::InvalidPartitionCount { partitions },
        );
    }
    let placement = placement_of(image.apply(&create("big", MAX_PARTITIONS_PER_TOPIC, 1)));
    assert_eq!(placement.len(), MAX_PARTITIONS_PER_TOPIC as usize);
}

#[test]
fn a_create_with_no_unfenced_broker_is_refused() {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    assert_refused(
        &mut image,
        create("orders", 1, 1),
        ClusterError::NoUnfencedBroker,
    );
    register(&mut image, 1, 7, 4);
    assert_refused(
        &mut image,
        create("orders", 1, 1),
        ClusterError::NoUnfencedBroker,
    );
}

#[test]
fn partitions_are_placed_on_unfenced_brokers_only() {
    let mut image = cluster(&[2, 2, 2]);
    let epoch = image.broker(BrokerId(2)).unwrap().epoch;
    image
        .apply(&MetadataCommand::FenceBroker {
            id: BrokerId(2),
            epoch,
        })
        .unwrap();
    let placement = placement_of(image.apply(&create("orders", 10, 1)));
    assert!(
        placement.iter().all(|pl| pl.broker != BrokerId(2)),
        "{placement:?}"
    );
    let on_1 = placement
        .iter()
        .filter(|pl| pl.broker == BrokerId(1))
        .count();
    assert_eq!(on_1, 5);
}

#[test]
fn delete_removes_the_topic_and_an_unknown_topic_is_refused() {
    let mut image = cluster(&[1]);
    image.apply(&create("orders", 3, 1)).unwrap();
    let delete = MetadataCommand::DeleteTopic {
        name: "orders".into(),
    };
    assert_eq!(image.apply(&delete), Ok(Outcome::Done));
    assert!(image.topic("orders").is_none());
    let unknown = ClusterError::UnknownTopic {
        name: "orders".into(),
    };
    assert_eq!(image.partition_owner("orders", 0), Err(unknown.clone()));
    assert_refused(&mut image, delete, unknown);
    let placement = placement_of(image.apply(&create("orders", 3, 2)));
    assert_eq!(placement.len(), 3, "the name can be used again");
}

#[test]
fn partition_owner_refuses_a_partition_the_topic_does_not_have() {
    let mut image = cluster(&[1]);
    image.apply(&create("orders", 3, 1)).unwrap();
    assert_eq!(
        image.partition_owner("orders", 3),
        Err(ClusterError::UnknownPartition {
            topic: "orders".into(),
            partition: 3,
            partitions: 3
        })
    );
}

#[test]
fn one_broker_places_as_a_standalone_broker_does() {
    // broker-server's metadata::place: (fnv1a(topic) + p) mod shards.
    for (topic, shards) in [("orders", 4u16), ("__consumer_offsets", 16), ("x", 3)] {
        let placement = place(topic, 32, &[(BrokerId(5), shards)]);
        for (p, pl) in placement.iter().enumerate() {
            let standalone = ((u64::from(name_hash(topic)) + p as u64) % u64::from(shards)) as u16;
            assert_eq!(
                *pl,
                Placement {
                    broker: BrokerId(5),
                    shard: ShardIndex(standalone)
                }
            );
        }
    }
}

#[test]
fn name_hash_is_fnv1a() {
    // The FNV-1a 32-bit test vectors.
    assert_eq!(name_hash(""), 0x811c_9dc5);
    assert_eq!(name_hash("a"), 0xe40c_292c);
    assert_eq!(name_hash("foobar"), 0xbf9c_f968);
}

#[test]
fn one_partition_topics_spread_over_every_broker_and_shard() {
    let brokers = [(BrokerId(1), 4), (BrokerId(2), 4)];
    let mut used = std::collections::BTreeSet::new();
    for t in 0..400 {
        used.insert(place(&format!("topic-{t}"), 1, &brokers)[0]);
    }
    assert_eq!(
        used.len(),
        8,
        "some (broker, shard) never starts a topic: {used:?}"
    );
}

#[test]
fn partitions_of_lists_a_brokers_partitions_by_topic_then_partition() {
    let mut image = cluster(&[1, 1]);
    let a = placement_of(image.apply(&create("a", 4, 1)));
    let b = placement_of(image.apply(&create("b", 3, 2)));
    let expected: Vec<(&str, u32, ShardIndex)> = [("a", &a), ("b", &b)]
        .into_iter()
        .flat_map(|(name, placement)| {
            placement
                .iter()
                .enumerate()
                .filter(|(_, pl)| pl.broker == BrokerId(2))
                .map(move |(p, pl)| (name, p as u32, pl.shard))
        })
        .collect();
    let listed: Vec<_> = image.partitions_of(BrokerId(2)).collect();
    assert_eq!(listed, expected);
    assert!(!listed.is_empty());
    assert_eq!(image.partitions_of(BrokerId(9)).count(), 0);
}

#[test]
fn a_groups_coordinator_is_the_owner_of_its_offsets_partition() {
    let mut image = cluster(&[2, 2]);
    assert_eq!(
        image.group_coordinator("g"),
        Err(ClusterError::UnknownTopic {
            name: OFFSETS_TOPIC.into()
        })
    );
    let placement = placement_of(image.apply(&create(OFFSETS_TOPIC, 16, 1)));
    let p = name_hash("my-group") % 16;
    assert_eq!(
        image.group_coordinator("my-group"),
        Ok((p, placement[p as usize]))
    );
}

#[test]
fn status_shows_each_brokers_epoch_state_and_partition_count() {
    let mut image = cluster(&[2, 2]);
    register(&mut image, 3, 1, 1);
    image.apply(&create("orders", 7, 1)).unwrap();
    let status = image.status();
    assert_eq!(status.cluster_id, CLUSTER);
    assert_eq!(status.topics, 1);
    assert_eq!(status.partitions, 7);
    let counts: Vec<(u32, BrokerState, u32)> = status
        .brokers
        .iter()
        .map(|b| (b.id.0, b.state, b.partitions))
        .collect();
    let on_1 = image.partitions_of(BrokerId(1)).count() as u32;
    assert_eq!(
        counts,
        [
            (1, BrokerState::Unfenced, on_1),
            (2, BrokerState::Unfenced, 7 - on_1),
            (3, BrokerState::Fenced, 0)
        ]
    );
    assert_eq!(
        status.brokers[2].epoch,
        image.broker(BrokerId(3)).unwrap().epoch
    );
}

#[test]
fn cluster_ids_are_checked() {
    for bad in ["", "a b", "ü", &"x".repeat(65)] {
        assert!(
            matches!(
                MetadataImage::new(bad),
                Err(ClusterError::InvalidClusterId { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(MetadataImage::new("a-B_9").is_ok());
}

#[test]
fn topic_config_serializes_as_the_servers_topic_json() {
    let config = TopicConfig {
        retention_ms: None,
        retention_bytes: Some(5),
        segment_bytes: 1024,
        log_append_time: false,
        replication_factor: 1,
        min_insync_replicas: 1,
        unclean_leader_election: false,
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        json,
        r#"{"retention_ms":null,"retention_bytes":5,"segment_bytes":1024}"#
    );
    assert_eq!(serde_json::from_str::<TopicConfig>(&json).unwrap(), config);
    let append_time = TopicConfig {
        log_append_time: true,
        ..config
    };
    let json = serde_json::to_string(&append_time).unwrap();
    assert!(json.ends_with(r#","log_append_time":true}"#), "{json}");
}

#[test]
fn a_snapshot_round_trips() {
    let mut image = cluster(&[2, 3]);
    register(&mut image, 9, u128::MAX, 1);
    image.apply(&create("orders", 9, u128::MAX)).unwrap();
    let bytes = image.to_snapshot();
    assert_eq!(
        MetadataImage::from_snapshot(&bytes, CLUSTER).unwrap(),
        image
    );
}

#[test]
fn a_snapshot_of_an_unknown_format_version_is_refused() {
    let image = cluster(&[1]);
    let bytes = String::from_utf8(image.to_snapshot()).unwrap();
    let future = bytes.replacen(r#""format_version":1"#, r#""format_version":2"#, 1);
    assert_ne!(future, bytes);
    let refused = MetadataImage::from_snapshot(future.as_bytes(), CLUSTER);
    assert!(
        matches!(
            refused,
            Err(SnapshotError::UnknownFormatVersion {
                found: 2,
                supported: 1
            })
        ),
        "{refused:?}"
    );
    let other_layout = br#"{"format_version":7,"brokers":"elsewhere"}"#;
    assert!(matches!(
        MetadataImage::from_snapshot(other_layout, CLUSTER),
        Err(SnapshotError::UnknownFormatVersion { found: 7, .. })
    ));
}

#[test]
fn a_snapshot_of_another_cluster_is_refused() {
    let bytes = cluster(&[1]).to_snapshot();
    let refused = MetadataImage::from_snapshot(&bytes, "another");
    assert!(
        matches!(refused, Err(SnapshotError::WrongCluster { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_snapshot_breaking_an_invariant_or_not_json_is_refused() {
    let mut image = cluster(&[2]);
    image.apply(&create("orders", 2, 1)).unwrap();
    let bytes = String::from_utf8(image.to_snapshot()).unwrap();
    let next = format!(r#""next_broker_epoch":{}"#, image.next_broker_epoch().0);
    let broken = [
        // An epoch that the next registration would give again.
        bytes.replacen(&next, r#""next_broker_epoch":1"#, 1),
        // A partition on a shard its broker does not have.
        bytes
            .replacen(r#""shards":2"#, r#""shards":1"#, 1)
            .replacen(r#""shard_ports":[9001,9002]"#, r#""shard_ports":[9001]"#, 1)
            .replacen(
                r#""shard_ports":[19001,19002]"#,
                r#""shard_ports":[19001]"#,
                1,
            ),
        bytes.replacen(r#""orders""#, r#""or/ders""#, 1),
        bytes[..bytes.len() / 2].to_owned(),
        "[]".to_owned(),
    ];
    for (i, b) in broken.iter().enumerate() {
        assert_ne!(*b, bytes, "case {i} did not break anything");
        let refused = MetadataImage::from_snapshot(b.as_bytes(), CLUSTER);
        assert!(
            matches!(refused, Err(SnapshotError::Decode(_))),
            "case {i}: {refused:?}"
        );
    }
}

fn session_image() -> (MetadataImage, BrokerEpoch) {
    let image = cluster(&[1, 1]);
    let epoch = image.broker(BrokerId(1)).unwrap().epoch;
    (image, epoch)
}

#[test]
fn an_expired_session_is_fenced_once() {
    let (image, epoch) = session_image();
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    let epoch_2 = image.broker(BrokerId(2)).unwrap().epoch;
    sessions.heartbeat(&image, BrokerId(2), epoch_2, 99, 900);
    assert_eq!(sessions.expired(&image, 1_000), []);
    let fence = MetadataCommand::FenceBroker {
        id: BrokerId(1),
        epoch,
    };
    assert_eq!(sessions.expired(&image, 1_001), [fence]);
    let fence_2 = MetadataCommand::FenceBroker {
        id: BrokerId(2),
        epoch: epoch_2,
    };
    assert_eq!(
        sessions.expired(&image, 5_000),
        [fence_2],
        "broker 1 proposed once"
    );
    assert_eq!(sessions.expired(&image, 9_000), []);
}

#[test]
fn a_fence_that_did_not_commit_is_given_again() {
    let (image, epoch) = session_image();
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    let fence = MetadataCommand::FenceBroker {
        id: BrokerId(1),
        epoch,
    };
    let first = sessions.expired(&image, 1_001);
    assert!(first.contains(&fence), "{first:?}");
    assert!(!sessions.expired(&image, 1_500).contains(&fence));
    // The proposal timed out: the next tick proposes it again, once.
    sessions.fence_failed(BrokerId(1), epoch);
    assert_eq!(
        sessions
            .expired(&image, 1_600)
            .iter()
            .filter(|c| **c == fence)
            .count(),
        1
    );
    assert!(!sessions.expired(&image, 1_700).contains(&fence));
    // A failure reported for another epoch changes nothing.
    sessions.fence_failed(BrokerId(1), BrokerEpoch(epoch.0 + 100));
    assert!(!sessions.expired(&image, 1_800).contains(&fence));
}

#[test]
fn a_heartbeat_refreshes_the_session() {
    let (image, epoch) = session_image();
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    for now in (500..=5_000).step_by(500) {
        assert_eq!(
            sessions.heartbeat(&image, BrokerId(1), epoch, 99, now),
            HeartbeatAnswer::Ok
        );
        let expired = sessions.expired(&image, now + 1);
        assert!(
            expired.iter().all(|c| !matches!(
                c,
                MetadataCommand::FenceBroker {
                    id: BrokerId(1),
                    ..
                }
            )),
            "at {now}: {expired:?}"
        );
    }
}

#[test]
fn a_new_leader_gives_every_broker_a_full_session() {
    let (image, _) = session_image();
    let mut sessions = SessionTracker::new(1_000);
    // The old leader saw nothing for a long time; the new one starts now.
    sessions.on_became_leader(&image, 1_000_000);
    assert_eq!(sessions.expired(&image, 1_000_900), []);
    assert_eq!(sessions.expired(&image, 1_001_001).len(), 2);
}

#[test]
fn a_broker_registered_after_the_leader_started_gets_a_session_when_first_seen() {
    let mut image = cluster(&[1]);
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    let epoch = register(&mut image, 1, 555, 1);
    unfence(&mut image, 1);
    assert_eq!(
        sessions.expired(&image, 50_000),
        [],
        "its new epoch starts a session"
    );
    let fence = MetadataCommand::FenceBroker {
        id: BrokerId(1),
        epoch,
    };
    assert_eq!(sessions.expired(&image, 51_001), [fence]);
}

#[test]
fn a_stale_epoch_heartbeat_is_refused_and_does_not_refresh() {
    let mut image = cluster(&[1]);
    let mut sessions = SessionTracker::new(1_000);
    let old = image.broker(BrokerId(1)).unwrap().epoch;
    let current = register(&mut image, 1, 555, 1);
    unfence(&mut image, 1);
    sessions.on_became_leader(&image, 0);
    assert_eq!(
        sessions.heartbeat(&image, BrokerId(1), old, 99, 900),
        HeartbeatAnswer::StaleEpoch { current }
    );
    assert_eq!(
        sessions.expired(&image, 1_001).len(),
        1,
        "the zombie kept it alive"
    );
    assert_eq!(
        sessions.heartbeat(&image, BrokerId(7), current, 99, 900),
        HeartbeatAnswer::UnknownBroker
    );
}

#[test]
fn a_fenced_broker_is_unfenced_once_it_has_caught_up() {
    let mut image = cluster(&[1]);
    let epoch = register(&mut image, 2, 555, 1);
    let at = image.broker(BrokerId(2)).unwrap().registered_at_version;
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    assert_eq!(
        sessions.heartbeat(&image, BrokerId(2), epoch, at - 1, 10),
        HeartbeatAnswer::CatchingUp {
            registered_at_version: at
        }
    );
    let unfence = MetadataCommand::UnfenceBroker {
        id: BrokerId(2),
        epoch,
    };
    assert_eq!(
        sessions.heartbeat(&image, BrokerId(2), epoch, at, 20),
        HeartbeatAnswer::Unfence(unfence.clone())
    );
    assert_eq!(image.apply(&unfence), Ok(Outcome::Done));
    assert_eq!(
        sessions.heartbeat(&image, BrokerId(2), epoch, at, 30),
        HeartbeatAnswer::Ok
    );
}

#[test]
fn fence_then_heartbeat_proposes_unfence_and_a_new_expiry_fences_again() {
    let (mut image, epoch) = session_image();
    let id = BrokerId(1);
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    sessions.heartbeat(
        &image,
        BrokerId(2),
        image.broker(BrokerId(2)).unwrap().epoch,
        99,
        1_500,
    );
    let fence = sessions.expired(&image, 1_001);
    assert_eq!(fence, [MetadataCommand::FenceBroker { id, epoch }]);
    image.apply(&fence[0]).unwrap();
    let answer = sessions.heartbeat(&image, id, epoch, image.version(), 1_100);
    let HeartbeatAnswer::Unfence(unfence) = answer else {
        panic!("{answer:?}");
    };
    image.apply(&unfence).unwrap();
    assert_eq!(sessions.expired(&image, 2_000), []);
    assert_eq!(
        sessions.expired(&image, 2_101),
        [MetadataCommand::FenceBroker { id, epoch }]
    );
}

#[test]
fn a_shut_down_broker_heartbeating_is_not_unfenced() {
    let (mut image, epoch) = session_image();
    let id = BrokerId(1);
    image
        .apply(&MetadataCommand::ShutdownBroker { id, epoch })
        .unwrap();
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    assert_eq!(
        sessions.heartbeat(&image, id, epoch, image.version(), 10),
        HeartbeatAnswer::ShutDown
    );
    assert!(sessions.expired(&image, 10_000).iter().all(|c| !matches!(
        c,
        MetadataCommand::FenceBroker {
            id: BrokerId(1),
            ..
        }
    )));
}

#[test]
fn a_new_incarnation_is_refused_while_the_old_one_is_alive() {
    let (image, epoch) = session_image();
    let id = BrokerId(1);
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    sessions.heartbeat(&image, id, epoch, image.version(), 500);
    let intruder = registration(1, 999, 1);
    assert_eq!(
        sessions.check_registration(&image, &intruder, 1_500),
        Err(ClusterError::DuplicateBrokerRegistration { id })
    );
    let retry = image.broker(id).unwrap().registration.clone();
    assert_eq!(sessions.check_registration(&image, &retry, 1_500), Ok(()));
    assert_eq!(
        sessions.check_registration(&image, &intruder, 1_501),
        Ok(()),
        "once the old session expired, a restart registers"
    );
    assert_eq!(
        sessions.check_registration(&image, &registration(5, 1, 1), 0),
        Ok(())
    );
}

#[test]
fn a_new_incarnation_registers_at_once_after_a_controlled_shutdown() {
    let (mut image, epoch) = session_image();
    let id = BrokerId(1);
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    image
        .apply(&MetadataCommand::ShutdownBroker { id, epoch })
        .unwrap();
    assert_eq!(
        sessions.check_registration(&image, &registration(1, 999, 1), 10),
        Ok(())
    );
}

#[test]
fn a_clock_read_that_goes_backwards_does_not_shorten_a_session() {
    let (image, epoch) = session_image();
    let id = BrokerId(1);
    let mut sessions = SessionTracker::new(1_000);
    sessions.on_became_leader(&image, 0);
    let epoch_2 = image.broker(BrokerId(2)).unwrap().epoch;
    sessions.heartbeat(&image, BrokerId(2), epoch_2, 99, 10_000);
    sessions.heartbeat(&image, id, epoch, 99, 5_000);
    sessions.heartbeat(&image, id, epoch, 99, 100);
    assert_eq!(sessions.expired(&image, 5_999), []);
    assert_eq!(
        sessions.expired(&image, 3_000),
        [],
        "time going back expires nothing"
    );
    assert_eq!(
        sessions.expired(&image, 6_001),
        [MetadataCommand::FenceBroker { id, epoch }]
    );
}
