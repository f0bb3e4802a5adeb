//! Property tests of the metadata state machine: placement is balanced
//! over brokers and shards (and stays so when a broker loses shards);
//! random command sequences, garbage included, are deterministic, never
//! panic, change nothing when refused, never reuse an epoch, and every
//! command round-trips through JSON and every image through a snapshot; no bytes panic the snapshot
//! reader.
//!
//! The seed is fixed so runs are reproducible; set `PROPTEST_RNG_SEED` to
//! explore others. A failure prints the seed and the minimal failing input.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use broker_cluster::limits::{MAX_BROKER_ID, MAX_PARTITIONS_PER_TOPIC, MAX_SHARDS_PER_BROKER};
use broker_cluster::{
    BrokerEpoch, BrokerId, BrokerRegistration, BrokerState, ClusterError, Incarnation, Listener,
    MetadataCommand, MetadataImage, Outcome, Placement, RequestId, TopicConfig,
};
use proptest::prelude::*;

const CLUSTER: &str = "props";

fn config() -> ProptestConfig {
    support::seeded(0xc1_0573_5eed)
}

fn registration(id: u32, incarnation: u128, shards: u16) -> BrokerRegistration {
    support::registration(id, incarnation, shards, false)
}

fn topic_config() -> TopicConfig {
    TopicConfig {
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: 1 << 20,
        log_append_time: false,
        replication_factor: 1,
        min_insync_replicas: 1,
        unclean_leader_election: false,
    }
}

/// Max minus min of the counts.
fn spread(counts: impl IntoIterator<Item = u32>) -> u32 {
    let counts: Vec<u32> = counts.into_iter().collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

/// Brokers 1..=n as (shards, fenced), at least one unfenced.
fn brokers() -> impl Strategy<Value = Vec<(u16, bool)>> {
    prop::collection::vec((1u16..=8, any::<bool>()), 1..=7).prop_map(|mut b| {
        b[0].1 = false;
        b
    })
}

fn topic_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,30}".prop_filter("not . or ..", |n| n != "." && n != "..")
}

/// An image holding `brokers`, each registered and unfenced, then the
/// fenced ones fenced.
fn image_of(brokers: &[(u16, bool)]) -> MetadataImage {
    let mut image = MetadataImage::new(CLUSTER).unwrap();
    for (i, &(shards, fenced)) in brokers.iter().enumerate() {
        let id = BrokerId(i as u32 + 1);
        let registered = image.apply(&MetadataCommand::RegisterBroker(registration(
            id.0, 1, shards,
        )));
        let Ok(Outcome::Registered { epoch }) = registered else {
            panic!("{registered:?}");
        };
        let unfence = MetadataCommand::UnfenceBroker { id, epoch };
        assert_eq!(image.apply(&unfence), Ok(Outcome::Done));
        if fenced {
            let fence = MetadataCommand::FenceBroker { id, epoch };
            assert_eq!(image.apply(&fence), Ok(Outcome::Done));
        }
    }
    image
}

/// Per unfenced broker, per shard, how many partitions of `placement`.
fn counts(image: &MetadataImage, placement: &[Placement]) -> BTreeMap<BrokerId, Vec<u32>> {
    let mut counts: BTreeMap<BrokerId, Vec<u32>> = image
        .brokers()
        .iter()
        .filter(|(_, b)| b.state == BrokerState::Unfenced)
        .map(|(&id, b)| (id, vec![0; usize::from(b.registration.shards)]))
        .collect();
    for pl in placement {
        let shards = counts
            .get_mut(&pl.broker)
            .expect("placed on a fenced broker");
        *shards
            .get_mut(usize::from(pl.shard.0))
            .expect("placed on a shard the broker does not have") += 1;
    }
    counts
}

fn assert_balanced(counts: &BTreeMap<BrokerId, Vec<u32>>) {
    let per_broker = counts.values().map(|s| s.iter().sum::<u32>());
    assert!(spread(per_broker) <= 1, "per broker: {counts:?}");
    for (id, shards) in counts {
        assert!(
            spread(shards.iter().copied()) <= 1,
            "broker {id}'s shards: {counts:?}"
        );
    }
}

fn broker_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        20 => 0u32..4,
        1 => Just(MAX_BROKER_ID),
        1 => Just(MAX_BROKER_ID + 1),
        1 => any::<u32>(),
    ]
}

fn epoch() -> impl Strategy<Value = BrokerEpoch> {
    prop_oneof![20 => 1u64..12, 1 => Just(0), 1 => any::<u64>()].prop_map(BrokerEpoch)
}

fn listener(shards: u16) -> impl Strategy<Value = Listener> {
    let addr = prop_oneof![
        40 => Just("host.local:9092".to_owned()),
        1 => Just("[::1]:1".to_owned()),
        1 => Just("no-port".to_owned()),
        1 => Just(":0".to_owned()),
        1 => ".{0,12}",
    ];
    // Mostly one port per shard; sometimes one too many, or a 0 port. Few
    // distinct ports, so that a registration is often a retry of one.
    let len = usize::from(shards.min(MAX_SHARDS_PER_BROKER + 1));
    let extra = prop_oneof![20 => Just(0usize), 1 => Just(1usize)];
    (
        addr,
        extra,
        prop_oneof![20 => 9001u16..=9002, 1 => Just(0u16)],
    )
        .prop_map(move |(addr, extra, port)| Listener {
            addr,
            shard_ports: vec![port; len + extra],
        })
}

fn registration_command() -> impl Strategy<Value = MetadataCommand> {
    let shards = prop_oneof![
        20 => 1u16..=4,
        1 => Just(0u16),
        1 => Just(MAX_SHARDS_PER_BROKER),
        1 => Just(MAX_SHARDS_PER_BROKER + 1),
        1 => Just(u16::MAX),
    ];
    let incarnation = prop_oneof![8 => 0u128..3, 1 => any::<u128>()];
    (broker_id(), incarnation, shards).prop_flat_map(|(id, incarnation, shards)| {
        (
            listener(shards),
            prop::option::weighted(0.9, listener(shards)),
        )
            .prop_map(move |(native, kafka)| {
                MetadataCommand::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation: Incarnation(incarnation),
                    shards,
                    native,
                    kafka,
                    previous_epoch: None,
                    fsync_every_write: false,
                })
            })
    })
}

fn command_topic_name() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => prop::sample::select(vec!["a", "b", "c", "__consumer_offsets"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["", ".", "..", "a/b", "é"]).prop_map(str::to_owned),
        1 => Just("x".repeat(250)),
        1 => ".{0,8}",
    ]
}

/// A broker command's epoch: mostly the broker's current one, looked up
/// when the step is applied (a random epoch would hardly ever be it), else
/// a literal one.
#[derive(Debug, Clone)]
enum EpochOf {
    Current,
    Given(BrokerEpoch),
}

/// One step of a random run: a command, or a broker command whose epoch is
/// resolved against the image just before it is applied.
#[derive(Debug, Clone)]
enum Step {
    Command(MetadataCommand),
    Unfence(BrokerId, EpochOf),
    Fence(BrokerId, EpochOf),
    Shutdown(BrokerId, EpochOf),
}

impl Step {
    fn command(&self, image: &MetadataImage) -> MetadataCommand {
        let epoch = |id: BrokerId, of: &EpochOf| match (of, image.broker(id)) {
            (EpochOf::Current, Some(record)) => record.epoch,
            (EpochOf::Current, None) => BrokerEpoch(1),
            (EpochOf::Given(epoch), _) => *epoch,
        };
        match self {
            Step::Command(command) => command.clone(),
            Step::Unfence(id, of) => MetadataCommand::UnfenceBroker {
                id: *id,
                epoch: epoch(*id, of),
            },
            Step::Fence(id, of) => MetadataCommand::FenceBroker {
                id: *id,
                epoch: epoch(*id, of),
            },
            Step::Shutdown(id, of) => MetadataCommand::ShutdownBroker {
                id: *id,
                epoch: epoch(*id, of),
            },
        }
    }
}

fn broker_and_epoch() -> impl Strategy<Value = (BrokerId, EpochOf)> {
    let of = prop_oneof![3 => Just(EpochOf::Current), 1 => epoch().prop_map(EpochOf::Given)];
    (broker_id(), of).prop_map(|(id, of)| (BrokerId(id), of))
}

fn step() -> impl Strategy<Value = Step> {
    let partitions = prop_oneof![
        20 => 1u32..=6,
        1 => Just(0u32),
        1 => Just(MAX_PARTITIONS_PER_TOPIC),
        1 => Just(MAX_PARTITIONS_PER_TOPIC + 1),
        1 => Just(u32::MAX),
    ];
    let config = (
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(retention_ms, retention_bytes, segment_bytes, log_append_time)| TopicConfig {
                retention_ms,
                retention_bytes,
                segment_bytes,
                log_append_time,
                replication_factor: 1,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            },
        );
    let config = prop_oneof![4 => Just(topic_config()), 1 => config];
    prop_oneof![
        3 => registration_command().prop_map(Step::Command),
        3 => broker_and_epoch().prop_map(|(id, of)| Step::Unfence(id, of)),
        1 => broker_and_epoch().prop_map(|(id, of)| Step::Fence(id, of)),
        1 => broker_and_epoch().prop_map(|(id, of)| Step::Shutdown(id, of)),
        3 => (command_topic_name(), partitions, config, 0u128..3).prop_map(
            |(name, partitions, config, request)| Step::Command(MetadataCommand::CreateTopic {
                name,
                partitions,
                config,
                request_id: RequestId(request),
            })
        ),
        1 => command_topic_name()
            .prop_map(|name| Step::Command(MetadataCommand::DeleteTopic { name })),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn placement_is_balanced_over_unfenced_brokers_and_their_shards(
        brokers in brokers(),
        partitions in 1u32..=200,
        name in topic_name(),
    ) {
        let mut image = image_of(&brokers);
        let created = image.apply(&MetadataCommand::CreateTopic {
            name: name.clone(),
            partitions,
            config: topic_config(),
            request_id: RequestId(1),
        });
        let Ok(Outcome::TopicCreated { placement }) = created else {
            panic!("{created:?}");
        };
        prop_assert_eq!(placement.len(), partitions as usize);
        assert_balanced(&counts(&image, &placement));
        for (p, pl) in placement.iter().enumerate() {
            prop_assert_eq!(image.partition_owner(&name, p as u32), Ok(*pl));
        }
    }

    #[test]
    fn a_broker_losing_shards_keeps_its_share_balanced_on_the_remaining_ones(
        brokers in brokers(),
        partitions in 1u32..=200,
        name in topic_name(),
        shrink_to in 1u16..=8,
    ) {
        let mut image = image_of(&brokers);
        let create = MetadataCommand::CreateTopic {
            name: name.clone(),
            partitions,
            config: topic_config(),
            request_id: RequestId(1),
        };
        let Ok(Outcome::TopicCreated { placement: before }) = image.apply(&create) else {
            panic!("not created");
        };
        let shards = shrink_to.min(brokers[0].0);
        let restart = MetadataCommand::RegisterBroker(registration(1, 2, shards));
        let Ok(Outcome::Registered { epoch }) = image.apply(&restart) else {
            panic!("not registered");
        };
        let unfence = MetadataCommand::UnfenceBroker { id: BrokerId(1), epoch };
        prop_assert_eq!(image.apply(&unfence), Ok(Outcome::Done));
        let after = &image.topic(&name).unwrap().partitions;
        for (b, a) in before.iter().zip(after) {
            prop_assert_eq!(a.broker, b.broker);
            if b.broker != BrokerId(1) || b.shard.0 < shards {
                prop_assert_eq!(a, b, "a partition that did not have to move moved");
            }
        }
        assert_balanced(&counts(&image, after));
    }

    #[test]
    fn commands_are_deterministic_refusals_change_nothing_and_images_round_trip(
        steps in prop::collection::vec(step(), 0..60),
    ) {
        let mut a = MetadataImage::new(CLUSTER).unwrap();
        let mut b = a.clone();
        let mut epochs: Vec<BrokerEpoch> = Vec::new();
        for step in &steps {
            let command = &step.command(&a);
            // The log carries commands as JSON.
            let logged: MetadataCommand =
                serde_json::from_slice(&serde_json::to_vec(command).unwrap()).unwrap();
            prop_assert_eq!(&logged, command);
            let before = a.clone();
            let result = a.apply(command);
            prop_assert_eq!(&b.apply(command), &result, "{:?}", command);
            prop_assert_eq!(&a, &b);
            match &result {
                Err(_) => prop_assert_eq!(&a, &before, "refused {:?} changed the image", command),
                Ok(_) if a == before => {}
                Ok(_) => prop_assert_eq!(a.version(), before.version() + 1),
            }
            match &result {
                Ok(Outcome::Registered { epoch }) if a != before => {
                    prop_assert!(epochs.iter().all(|e| e < epoch), "{:?} after {:?}", epoch, epochs);
                    epochs.push(*epoch);
                }
                Ok(Outcome::TopicCreated { placement }) => {
                    let MetadataCommand::CreateTopic { name, .. } = command else {
                        panic!("{command:?} created a topic");
                    };
                    prop_assert_eq!(&a.topic(name).unwrap().partitions, placement);
                }
                Err(ClusterError::NoUnfencedBroker) => {
                    prop_assert!(a.brokers().values().all(|b| b.state != BrokerState::Unfenced));
                }
                _ => {}
            }
            let restored = MetadataImage::from_snapshot(&a.to_snapshot(), CLUSTER);
            prop_assert_eq!(restored.as_ref().ok(), Some(&a), "{:?}", restored.as_ref().err());
        }
    }

    #[test]
    fn no_bytes_panic_the_snapshot_reader(
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut image = image_of(&[(2, false), (3, true)]);
        image.apply(&MetadataCommand::CreateTopic {
            name: "orders".into(),
            partitions: 5,
            config: topic_config(),
            request_id: RequestId(9),
        }).unwrap();
        let bytes = image.to_snapshot();
        let _ = MetadataImage::from_snapshot(&bytes[..cut.index(bytes.len())], CLUSTER);
        let mut flipped = bytes.clone();
        flipped[flip.index(bytes.len())] = byte;
        if let Ok(read) = MetadataImage::from_snapshot(&flipped, CLUSTER) {
            // Whatever a damaged snapshot yields is still a sound image.
            let again = MetadataImage::from_snapshot(&read.to_snapshot(), CLUSTER);
            prop_assert_eq!(again.ok(), Some(read));
        }
        let _ = MetadataImage::from_snapshot(&garbage, CLUSTER);
    }
}
