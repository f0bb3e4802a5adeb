//! Topics of a cluster on real processes: three brokers (also the
//! controllers) serve a 12-partition topic created at one of them, placed
//! over all three, produced and consumed byte for byte from any bootstrap
//! address with the native client and with kcat (Kafka); a SIGKILLed broker
//! makes only its own partitions unavailable (Kafka: no leader), and once
//! it restarts nothing acknowledged is missing, nor after the whole
//! cluster is SIGKILLed and restarted; a topic deleted at one broker is
//! gone from every broker.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use broker_client::{Client, ClientConfig, Producer, ProducerConfig, TopicSettings};
use cluster_support::{
    records::{self, value, Acked},
    wait, Cluster,
};

const PARTITIONS: u32 = 12;

fn quick() -> ClientConfig {
    records::quick(2)
}

/// Creates `topic` at `bootstrap` and waits until every broker of
/// `cluster` routes it.
fn create(cluster: &Cluster, bootstrap: &str, topic: &str) {
    Client::connect_with(bootstrap, quick())
        .unwrap()
        .create_topic(topic, PARTITIONS, &TopicSettings::default())
        .unwrap();
    for i in 0..cluster.len() {
        let addr = cluster.addr(i).to_string();
        wait(
            &format!("{topic} on broker {i}"),
            Duration::from_secs(10),
            || {
                let listed = Client::connect_with(&addr, quick())
                    .ok()?
                    .list_topics()
                    .ok()?;
                listed.iter().any(|t| t.name == topic).then_some(())
            },
        );
    }
}

fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) -> Acked {
    records::produce(bootstrap, topic, 0, from..from + n, quick())
}

fn consume_exactly(bootstrap: &str, topic: &str, expected: &Acked) {
    records::consume_exactly(bootstrap, topic, expected, quick())
}

/// kcat's metadata of `topic` at the Kafka address `kafka`: each
/// partition's leader node (-1: none).
fn kafka_leaders(kafka: &str, topic: &str) -> BTreeMap<u32, i64> {
    let out = Command::new("timeout")
        .args(["20", "kcat", "-L", "-J", "-b", kafka, "-t", topic])
        .output()
        .expect("kcat (scripts/install-kafka-clients.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap() as u32,
                p["leader"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// kcat reads `topic` from the start at `kafka`: the (partition, offset)
/// of every record.
fn kafka_offsets(kafka: &str, topic: &str) -> Vec<(u32, i64)> {
    let out = Command::new("timeout")
        .args(["30", "kcat", "-C", "-e", "-q", "-b", kafka, "-t", topic])
        .args(["-f", "%p %o\n"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offsets: Vec<(u32, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    offsets.sort_unstable();
    offsets
}

#[test]
fn a_topic_created_at_one_broker_is_placed_over_all_and_served_from_any_bootstrap() {
    let cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let (b1, b2, b3) = (
        cluster.addr(0).to_string(),
        cluster.addr(1).to_string(),
        cluster.addr(2).to_string(),
    );
    create(&cluster, &b1, "spread");
    // Placed over the three brokers, four partitions each (Kafka node ids
    // are broker * 1024 + shard).
    let leaders = kafka_leaders(&cluster.kafka_addr(1).to_string(), "spread");
    assert_eq!(leaders.len(), PARTITIONS as usize);
    let mut per_broker: BTreeMap<i64, u32> = BTreeMap::new();
    for leader in leaders.values() {
        *per_broker.entry(leader / 1024).or_default() += 1;
    }
    assert_eq!(
        per_broker,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
        "{leaders:?}"
    );
    // Produced through broker 2, read back through broker 3 (the clients
    // reach each partition's broker and shard from the metadata).
    let sent = produce(&b2, "spread", 0, 600);
    let partitions: std::collections::BTreeSet<u32> = sent.keys().map(|k| k.0).collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "keys spread over every partition"
    );
    consume_exactly(&b3, "spread", &sent);
    // And over Kafka, bootstrapped at broker 1.
    let mut expected: Vec<(u32, i64)> = sent.keys().copied().collect();
    expected.sort_unstable();
    assert_eq!(
        kafka_offsets(&cluster.kafka_addr(0).to_string(), "spread"),
        expected
    );
    // Deleted at broker 3: gone from every broker.
    Client::connect_with(&b3, quick())
        .unwrap()
        .delete_topic("spread")
        .unwrap();
    for addr in [&b1, &b2, &b3] {
        wait("the topic gone everywhere", Duration::from_secs(10), || {
            let listed = Client::connect_with(addr, quick())
                .ok()?
                .list_topics()
                .ok()?;
            (!listed.iter().any(|t| t.name == "spread")).then_some(())
        });
    }
}

#[test]
fn a_killed_broker_makes_only_its_partitions_unavailable_and_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let b1 = cluster.addr(0).to_string();
    create(&cluster, &b1, "durable");
    let mut sent = produce(&b1, "durable", 0, 300);
    let kafka_1 = cluster.kafka_addr(0).to_string();
    let before = kafka_leaders(&kafka_1, "durable");
    cluster.kill(2);
    // Once the dead broker is fenced, its partitions (and only those) have
    // no leader.
    let after = wait(
        "broker 3's partitions without a leader",
        Duration::from_secs(20),
        || {
            let now = kafka_leaders(&kafka_1, "durable");
            now.values().any(|&l| l == -1).then_some(now)
        },
    );
    for (p, leader) in &before {
        let expected = if leader / 1024 == 3 { -1 } else { *leader };
        assert_eq!(after[p], expected, "partition {p}: {before:?} -> {after:?}");
    }
    // The other brokers' partitions take records meanwhile.
    let producer = Producer::connect(
        &b1,
        ProducerConfig {
            client: quick(),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    for (&p, &leader) in &before {
        if leader / 1024 == 3 {
            continue;
        }
        let v = value(0, 1_000 + p as usize);
        let meta = producer
            .send_to("durable", p, Some(b"while-down"), &v)
            .unwrap()
            .wait()
            .unwrap();
        sent.insert(
            (meta.partition, meta.offset.unwrap()),
            (b"while-down".to_vec(), v),
        );
    }
    drop(producer);
    cluster.restart(2);
    wait("every partition led again", Duration::from_secs(20), || {
        (kafka_leaders(&kafka_1, "durable") == before).then_some(())
    });
    consume_exactly(&cluster.addr(1).to_string(), "durable", &sent);
    // The whole cluster SIGKILLed and started again: the topic, its
    // placement and every acknowledged record are back.
    cluster.restart_all();
    wait(
        "the topic and its placement back",
        Duration::from_secs(30),
        || (kafka_leaders(&kafka_1, "durable") == before).then_some(()),
    );
    consume_exactly(&cluster.addr(2).to_string(), "durable", &sent);
}
