//! Replicated partitions' metadata on real processes: three brokers (also
//! the controllers) take a topic of replication factor 3 created through
//! Kafka's CreateTopics (confluent-kafka's AdminClient); every broker's
//! Kafka Metadata (kcat) shows each partition with three replicas, an ISR
//! of three and a leader. The leader broker of partition 0 is SIGKILLed:
//! once its session expires the controllers elect a new leader from the
//! ISR in a higher leader epoch (the metadata image, asked of a
//! controller), and the surviving brokers' Kafka Metadata shows it, with
//! the dead broker out of the ISR. Restarted on its data directory, the
//! broker presents the epoch it recorded (`broker-epoch`), so the
//! controllers take its restart as clean.
//!
//! Records are NOT replicated yet (the data path is the next step: follower
//! fetch sessions), so nothing is produced here and nothing is read from
//! the new leader: this checks the metadata the quorum decides and serves.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use broker_cluster::{from_kafka_node_id, BrokerId, PartitionReplicas};
use cluster_support::{image, wait, Cluster};

const TOPIC: &str = "replicated";
const PARTITIONS: u32 = 3;

/// One partition as kcat's `-L -J` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    leader: i64,
    replicas: BTreeSet<i64>,
    isr: BTreeSet<i64>,
}

/// Kafka Metadata of `TOPIC` at `kafka` (kcat), by partition; None if the
/// topic is not there (yet).
fn kafka_metadata(kafka: SocketAddr) -> Option<Vec<Shown>> {
    let out = Command::new("timeout")
        .args([
            "20",
            "kcat",
            "-L",
            "-J",
            "-b",
            &kafka.to_string(),
            "-t",
            TOPIC,
        ])
        .output()
        .expect("kcat (scripts/install-kafka-clients.sh installs it)");
    if !out.status.success() {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let ids = |v: &serde_json::Value| -> BTreeSet<i64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_i64())
            .collect()
    };
    let partitions = doc["topics"][0]["partitions"].as_array()?;
    let mut shown: Vec<(u64, Shown)> = partitions
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap_or(u64::MAX),
                Shown {
                    leader: p["leader"].as_i64().unwrap_or(-1),
                    replicas: ids(&p["replicas"]),
                    isr: ids(&p["isrs"]),
                },
            )
        })
        .collect();
    shown.sort_by_key(|(p, _)| *p);
    (shown.len() == PARTITIONS as usize).then(|| shown.into_iter().map(|(_, s)| s).collect())
}

/// The broker of a Kafka node id.
fn broker_of(node: i64) -> BrokerId {
    from_kafka_node_id(node as i32).unwrap().0
}

/// Partition 0's registration in the image a controller has applied.
fn registration(controllers: &[SocketAddr]) -> Option<PartitionReplicas> {
    image(controllers)?
        .partition_replicas(TOPIC, 0)
        .ok()
        .cloned()
}

#[test]
fn an_rf3_topic_is_in_sync_on_three_brokers_and_a_killed_leader_is_replaced_from_the_isr() {
    let python = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python,
        "python3 with confluent_kafka is not installed: run scripts/install-kafka-clients.sh"
    );
    let mut cluster = Cluster::start_members(3, 2, 3, |_| vec![]);
    let create = format!(
        r#"
import os, sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({{'bootstrap.servers': os.environ['BOOTSTRAP']}})
fs = a.create_topics([NewTopic('{TOPIC}', num_partitions={PARTITIONS}, replication_factor=3)], request_timeout=30)
for f in fs.values():
    f.result()
print('created')
"#
    );
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", &create])
        .env("BOOTSTRAP", cluster.kafka_addr(1).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CreateTopics failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.stderr(1)
    );
    // Every broker answers three replicas, all in sync, and a leader.
    for i in 0..cluster.len() {
        let shown = wait(
            &format!("the topic in broker {i}'s Kafka Metadata"),
            Duration::from_secs(20),
            || kafka_metadata(cluster.kafka_addr(i)),
        );
        for (p, s) in shown.iter().enumerate() {
            let brokers: BTreeSet<BrokerId> = s.replicas.iter().map(|n| broker_of(*n)).collect();
            assert_eq!(brokers.len(), 3, "broker {i}, partition {p}: {s:?}");
            assert_eq!(s.isr, s.replicas, "broker {i}, partition {p}: {s:?}");
            assert!(
                s.replicas.contains(&s.leader),
                "broker {i}, partition {p}: {s:?}"
            );
        }
    }
    let controllers = cluster.controller_addrs();
    let before = wait(
        "partition 0's registration",
        Duration::from_secs(10),
        || registration(&controllers),
    );
    let leader = before.leader.unwrap();
    assert_eq!(before.isr.len(), 3);
    let leader_epoch = image(&controllers).unwrap().broker(leader).unwrap().epoch;
    // Broker ids are index + 1.
    let killed = leader.0 as usize - 1;
    cluster.kill(killed);
    let survivors = cluster.controller_addrs_but(killed);
    let after = wait(
        "a new leader of partition 0",
        Duration::from_secs(30),
        || registration(&survivors).filter(|r| r.leader.is_some_and(|l| l != leader)),
    );
    let new = after.leader.unwrap();
    assert!(
        before.isr.contains(&new),
        "{new} was not in the ISR {:?}",
        before.isr
    );
    assert!(
        after.leader_epoch > before.leader_epoch,
        "{before:?} -> {after:?}"
    );
    assert!(!after.isr.contains(&leader));
    for i in (0..cluster.len()).filter(|i| *i != killed) {
        wait(
            &format!("broker {i}'s Kafka Metadata naming the new leader"),
            Duration::from_secs(20),
            || {
                let shown = kafka_metadata(cluster.kafka_addr(i))?;
                let s = &shown[0];
                (s.leader >= 0
                    && broker_of(s.leader) == new
                    && s.replicas.len() == 3
                    && s.isr.len() == 2
                    && s.isr.iter().all(|n| broker_of(*n) != leader))
                .then_some(())
            },
        );
    }
    // Back on its data directory: it presents the epoch it recorded.
    cluster.restart(killed);
    let back = wait(
        "the restarted broker's registration",
        Duration::from_secs(30),
        || {
            image(&survivors)?
                .broker(leader)
                .filter(|b| b.epoch > leader_epoch)
                .cloned()
        },
    );
    assert_eq!(back.registration.previous_epoch, Some(leader_epoch));
    assert!(back.registration.fsync_every_write);
}
