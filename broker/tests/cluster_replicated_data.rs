//! Replicated records on real processes: three brokers (also the
//! controllers) with a default replication factor of 3. Records produced
//! with acks=all are read back byte for byte; the leader of partition 0 is
//! SIGKILLed and everything acknowledged is read back from the new leader;
//! more is produced with one broker down; the killed broker comes back,
//! truncates what it must and catches up (the ISR is whole again); then it
//! is stopped and its own log, opened from its data directory, holds every
//! acknowledged record of the partitions it replicates at the offset it
//! was acknowledged at.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use broker_client::{Acks, Client as Admin, TopicSettings};
use broker_cluster::PartitionReplicas;
use cluster_support::records::{self, Acked, KeyValue};
use cluster_support::{image, wait, Cluster};

const TOPIC: &str = "replicated-data";
const PARTITIONS: u32 = 3;

fn registrations(controllers: &[SocketAddr]) -> Option<Vec<PartitionReplicas>> {
    let image = image(controllers)?;
    (0..PARTITIONS)
        .map(|p| image.partition_replicas(TOPIC, p).ok().cloned())
        .collect()
}

/// `n` members (`shards` each, the first three controllers) with a default
/// replication factor of 3 and `TOPIC` created, every partition in sync:
/// the cluster, its controllers, a bootstrap naming every broker, and the
/// partitions' registrations.
fn replicated_cluster(
    n: usize,
    shards: usize,
) -> (Cluster, Vec<SocketAddr>, String, Vec<PartitionReplicas>) {
    let cluster = Cluster::start_members(n, shards, 3, |_| {
        vec!["--default-replication-factor".into(), "3".into()]
    });
    let controllers = cluster.controller_addrs();
    let bootstrap: Vec<String> = (0..n).map(|i| cluster.addr(i).to_string()).collect();
    let admin = Admin::connect_with(&cluster.addr(0).to_string(), records::quick(10)).unwrap();
    admin
        .create_topic(TOPIC, PARTITIONS, &TopicSettings::default())
        .unwrap();
    let regs = wait("the topic in sync", Duration::from_secs(20), || {
        registrations(&controllers).filter(|r| r.iter().all(|p| p.isr.len() == 3))
    });
    (cluster, controllers, bootstrap.join(","), regs)
}

/// Produces records `ids` with acks=all; every acknowledgement awaited.
fn produce_all(bootstrap: &str, seed: usize, ids: std::ops::Range<usize>) -> Acked {
    records::produce_with(bootstrap, TOPIC, seed, ids, records::quick(10), Acks::All)
}

/// The leader broker of each partition as broker `i`'s native Metadata
/// routes it (broker `b` serves on 127.0.0.b).
fn leaders_seen_by(cluster: &Cluster, i: usize, topic: &str) -> Option<Vec<u32>> {
    let client = Admin::connect_with(&cluster.addr(i).to_string(), records::quick(2)).ok()?;
    let topic = client.describe_topic(topic).ok()?;
    topic
        .partitions
        .iter()
        .map(|p| {
            let addr: SocketAddr = p.address.parse().ok()?;
            match addr.ip() {
                std::net::IpAddr::V4(ip) => Some(u32::from(ip.octets()[3])),
                std::net::IpAddr::V6(_) => None,
            }
        })
        .collect()
}

/// Waits until every running broker routes each partition to the leader
/// the controllers elected (a produce sent before would meet a leader
/// that is about to step down: an indeterminate answer).
fn wait_brokers_route_to(cluster: &Cluster, running: &[usize], leaders: &[u32]) {
    for &i in running {
        wait(
            &format!("broker {i} routing to the leaders {leaders:?}"),
            Duration::from_secs(20),
            || (leaders_seen_by(cluster, i, TOPIC)? == leaders).then_some(()),
        );
    }
}

/// [`wait_brokers_route_to`] for the one partition of `topic`, on every
/// running broker.
fn wait_brokers_route_to_topic(cluster: &Cluster, topic: &str, leader: u32) {
    for i in (0..cluster.len()).filter(|i| cluster.pid(*i).is_some()) {
        wait(
            &format!("broker {i} routing {topic} to broker {leader}"),
            Duration::from_secs(20),
            || (leaders_seen_by(cluster, i, topic)? == [leader]).then_some(()),
        );
    }
}

/// The ISR size of partition 0 of `topic` in the Kafka Metadata of the
/// broker at `kafka` (kcat).
fn isr_seen_by(kafka: &str, topic: &str) -> Option<usize> {
    let out = std::process::Command::new("timeout")
        .args(["20", "kcat", "-L", "-J", "-b", kafka, "-t", topic])
        .output()
        .expect("kcat (scripts/install-kafka-clients.sh installs it)");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    doc["topics"][0]["partitions"][0]["isrs"]
        .as_array()
        .map(Vec::len)
}

/// Every record of `partition` in the log at `dir`, by offset.
fn read_log(dir: std::path::PathBuf) -> Vec<(i64, KeyValue)> {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let (log, _) = broker_log::Log::open(&dir, broker_log::LogConfig::default())
                .await
                .unwrap();
            let mut out = Vec::new();
            let mut offset = log.log_start_offset();
            let end = log.log_end_offset();
            while offset < end {
                let read = log.read(offset, 1 << 20).await.unwrap();
                for (header, bytes) in broker_format::batches(read.bytes.as_slice()).flatten() {
                    for r in broker_format::records(bytes).unwrap() {
                        let r = r.unwrap();
                        out.push((
                            header.base_offset + i64::from(r.offset_delta),
                            (
                                r.key.map(<[u8]>::to_vec).unwrap_or_default(),
                                r.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            ),
                        ));
                    }
                }
                offset = read.next_offset;
            }
            log.close().await.unwrap();
            out
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn acks_all_records_survive_a_leader_kill_and_a_returning_replica_catches_up() {
    let (mut cluster, controllers, bootstrap, regs) = replicated_cluster(3, 2);
    assert!(regs.iter().all(|r| r.replicas.len() == 3));

    let mut acked = produce_all(&bootstrap, 1, 0..300);
    records::consume_exactly(&bootstrap, TOPIC, &acked, records::quick(5));

    // The leader of partition 0 dies: everything acknowledged is on the
    // others.
    let leader = regs[0].leader.unwrap();
    let killed = leader.0 as usize - 1;
    cluster.kill(killed);
    let survivors = cluster.controller_addrs_but(killed);
    wait("new leaders", Duration::from_secs(30), || {
        registrations(&survivors).filter(|r| {
            r.iter()
                .all(|p| p.leader.is_some_and(|l| l != leader) && !p.isr.contains(&leader))
        })
    });
    let alive: Vec<String> = (0..3)
        .filter(|i| *i != killed)
        .map(|i| cluster.addr(i).to_string())
        .collect();
    let alive = alive.join(",");
    records::consume_exactly(&alive, TOPIC, &acked, records::quick(5));
    let more = std::panic::catch_unwind(|| produce_all(&alive, 2, 300..600));
    let more = more.unwrap_or_else(|_| {
        for i in 0..3 {
            eprintln!("---- broker {i}\n{}", cluster.stderr(i));
        }
        panic!("produce with one broker down failed");
    });
    acked.extend(more);
    records::consume_exactly(&alive, TOPIC, &acked, records::quick(5));

    // Back: it catches up, rejoins every ISR and leads again what it
    // prefers to.
    cluster.restart(killed);
    let back = wait(
        "the ISR whole again, the preferred replicas leading",
        Duration::from_secs(60),
        || {
            registrations(&controllers).filter(|r| {
                r.iter()
                    .all(|p| p.isr.len() == 3 && p.leader == p.replicas.first().map(|r| r.broker))
            })
        },
    );
    let leaders: Vec<u32> = back.iter().map(|r| r.leader.unwrap().0).collect();
    wait_brokers_route_to(&cluster, &[0, 1, 2], &leaders);
    acked.extend(produce_all(&bootstrap, 3, 600..700));
    records::consume_exactly(&bootstrap, TOPIC, &acked, records::quick(5));

    // Its own log holds every acknowledged record at its offset.
    cluster.kill(killed);
    let data = broker_server::metadata::DataDir::new(cluster.data_dir(killed));
    let mut checked = 0;
    for p in 0..PARTITIONS {
        let dir = data.partition_dir(TOPIC, p);
        assert!(
            dir.exists(),
            "broker {killed} has no replica of partition {p}"
        );
        let log: std::collections::BTreeMap<i64, KeyValue> = read_log(dir).into_iter().collect();
        let expected: BTreeSet<(i64, &KeyValue)> = acked
            .iter()
            .filter(|((q, _), _)| *q == p)
            .map(|((_, o), kv)| (*o, kv))
            .collect();
        for (offset, kv) in expected {
            assert_eq!(
                log.get(&offset),
                Some(kv),
                "broker {killed}'s replica of partition {p} at offset {offset}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, acked.len());
}

/// SIGTERM moves a broker's leaderships before it stops (a controlled
/// shutdown: by the time the process is gone, the controllers have new
/// leaders, with no session timeout waited for), producers with acks=all
/// lose nothing across it, and once the broker is back in sync the
/// controllers hand its preferred leaderships back to it.
#[test]
fn sigterm_moves_leaderships_first_and_they_come_back_to_the_preferred_replica() {
    let (mut cluster, controllers, bootstrap, regs) = replicated_cluster(3, 2);
    let mut acked = produce_all(&bootstrap, 4, 0..200);
    let leader = regs[0].leader.unwrap();
    let stopped = leader.0 as usize - 1;
    let status = cluster.terminate(stopped);
    assert!(status.success(), "broker {stopped} exited with {status}");
    assert!(
        cluster
            .stderr(stopped)
            .contains("controlled shutdown acknowledged"),
        "{}",
        cluster.stderr(stopped)
    );
    // Read at once: the leaderships moved before the process exited.
    let survivors = cluster.controller_addrs_but(stopped);
    let now = registrations(&survivors).unwrap();
    for (p, r) in now.iter().enumerate() {
        assert!(
            r.leader.is_some_and(|l| l != leader),
            "partition {p} still led by the stopped broker: {r:?}"
        );
    }
    let alive: Vec<String> = (0..3)
        .filter(|i| *i != stopped)
        .map(|i| cluster.addr(i).to_string())
        .collect();
    acked.extend(produce_all(&alive.join(","), 5, 200..400));
    cluster.restart(stopped);
    let back = wait(
        "every partition in sync and led by its preferred replica",
        Duration::from_secs(60),
        || {
            registrations(&controllers).filter(|r| {
                r.iter()
                    .all(|p| p.isr.len() == 3 && p.leader == p.replicas.first().map(|r| r.broker))
            })
        },
    );
    let leaders: Vec<u32> = back.iter().map(|r| r.leader.unwrap().0).collect();
    wait_brokers_route_to(&cluster, &[0, 1, 2], &leaders);
    acked.extend(produce_all(&bootstrap, 6, 400..500));
    records::consume_exactly(&bootstrap, TOPIC, &acked, records::quick(5));
}

/// `broker cluster reassign` moves a partition's replicas (KIP-455): on
/// four brokers, partition 0 leaves its leader's broker for the one that
/// had no replica; the new replica catches up and joins the ISR, the old
/// leader's replica is dropped (its files removed) and leadership hands
/// over, acks=all records are kept across it, and the new replica's own
/// log holds every one of them.
#[test]
fn a_reassignment_moves_a_replica_and_its_leadership_with_every_record() {
    let (mut cluster, controllers, bootstrap, regs) = replicated_cluster(4, 1);
    let mut acked = produce_all(&bootstrap, 7, 0..300);
    let before = &regs[0];
    let old_leader = before.leader.unwrap().0;
    let newcomer = (1..=4u32)
        .find(|b| before.replicas.iter().all(|p| p.broker.0 != *b))
        .unwrap();
    let target: Vec<u32> = before
        .replicas
        .iter()
        .map(|p| p.broker.0)
        .filter(|b| *b != old_leader)
        .chain([newcomer])
        .collect();
    let list = target
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "cluster",
            "reassign",
            "--controllers",
            &cluster.controllers(),
        ])
        .args(["--topic", TOPIC, "--partition", "0", "--replicas", &list])
        .args(["--wait", "60"])
        .output()
        .unwrap();
    if !out.status.success() {
        for i in 0..4 {
            eprintln!("---- broker {i}\n{}", cluster.stderr(i));
        }
        panic!(
            "reassign: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = registrations(&controllers).unwrap();
    let moved = &after[0];
    let now: Vec<u32> = moved.replicas.iter().map(|p| p.broker.0).collect();
    assert_eq!(now, target, "{moved:?}");
    assert!(moved.target.is_none());
    assert_eq!(
        moved.isr.iter().map(|b| b.0).collect::<BTreeSet<_>>(),
        target.iter().copied().collect::<BTreeSet<_>>()
    );
    let leader = moved.leader.unwrap().0;
    assert!(target.contains(&leader) && leader != old_leader);
    assert!(moved.leader_epoch > before.leader_epoch);
    let leaders: Vec<u32> = after.iter().map(|r| r.leader.unwrap().0).collect();
    wait_brokers_route_to(&cluster, &[0, 1, 2, 3], &leaders);
    acked.extend(produce_all(&bootstrap, 8, 300..400));
    records::consume_exactly(&bootstrap, TOPIC, &acked, records::quick(5));
    // The old leader's replica is gone from its disk.
    let old_dir = broker_server::metadata::DataDir::new(cluster.data_dir(old_leader as usize - 1))
        .partition_dir(TOPIC, 0);
    wait(
        "the dropped replica's files removed",
        Duration::from_secs(20),
        || (!old_dir.exists()).then_some(()),
    );
    // The newcomer's own log holds every acknowledged record of partition 0.
    let d = newcomer as usize - 1;
    let dir = broker_server::metadata::DataDir::new(cluster.data_dir(d)).partition_dir(TOPIC, 0);
    cluster.kill(d);
    let log: std::collections::BTreeMap<i64, KeyValue> = read_log(dir).into_iter().collect();
    let mut checked = 0;
    for ((p, offset), kv) in &acked {
        if *p == 0 {
            assert_eq!(
                log.get(offset),
                Some(kv),
                "the new replica at offset {offset}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

/// min.insync.replicas is enforced: a topic of 3 replicas created with
/// min.insync.replicas=3 (Kafka CreateTopics) takes acks=all writes while
/// all three are in sync; with one broker down its ISR is 2, and an
/// acks=all produce is refused with NOT_ENOUGH_REPLICAS (native and
/// Kafka: nothing written, nothing readable), while acks=1 still works.
#[test]
fn acks_all_is_refused_with_fewer_in_sync_replicas_than_min_insync() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python,
        "python3 with confluent_kafka is not installed: run scripts/install-kafka-clients.sh"
    );
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let controllers = cluster.controller_addrs();
    let topic = "strict";
    let script = format!(
        r#"
import os
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({{'bootstrap.servers': os.environ['BOOTSTRAP']}})
fs = a.create_topics([NewTopic('{topic}', num_partitions=1, replication_factor=3,
                               config={{'min.insync.replicas': '3'}})], request_timeout=30)
for f in fs.values():
    f.result()
"#
    );
    let out = std::process::Command::new("timeout")
        .args(["60", "python3", "-c", &script])
        .env("BOOTSTRAP", cluster.kafka_addr(0).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image_of =
        |c: &[SocketAddr]| image(c).and_then(|i| i.partition_replicas(topic, 0).ok().cloned());
    let reg = wait("the strict topic in sync", Duration::from_secs(20), || {
        image_of(&controllers).filter(|r| r.isr.len() == 3)
    });
    let all: Vec<String> = (0..3).map(|i| cluster.addr(i).to_string()).collect();
    let mut acked = records::produce_with(
        &all.join(","),
        topic,
        9,
        0..50,
        records::quick(10),
        Acks::All,
    );
    // A follower goes: the ISR shrinks to two, below min.insync.replicas.
    let leader = reg.leader.unwrap().0;
    let follower = reg
        .replicas
        .iter()
        .map(|p| p.broker.0)
        .find(|b| *b != leader)
        .unwrap();
    let down = follower as usize - 1;
    cluster.kill(down);
    let survivors = cluster.controller_addrs_but(down);
    wait("the ISR shrunk", Duration::from_secs(30), || {
        image_of(&survivors).filter(|r| r.isr.len() == 2 && r.leader == Some(reg.leader.unwrap()))
    });
    wait_brokers_route_to_topic(&cluster, topic, leader);
    // The leader itself has the shrunk ISR (its Kafka Metadata answers it):
    // a produce it took before would be written, then answered
    // indeterminate.
    let leader_kafka = cluster.kafka_addr(leader as usize - 1).to_string();
    wait(
        "the leader's own ISR shrunk",
        Duration::from_secs(20),
        || (isr_seen_by(&leader_kafka, topic)? == 2).then_some(()),
    );
    let alive: Vec<String> = (0..3)
        .filter(|i| *i != down)
        .map(|i| cluster.addr(i).to_string())
        .collect();
    let alive = alive.join(",");
    // Native, acks=all: refused, nothing written (retried, then reported).
    let producer = broker_client::Producer::connect(
        &alive,
        broker_client::ProducerConfig {
            acks: Acks::All,
            retries: 1,
            client: records::quick(5),
            ..broker_client::ProducerConfig::default()
        },
    )
    .unwrap();
    let refused = producer
        .send(topic, Some(b"k"), b"refused")
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(broker_client::ErrorCode::NotEnoughReplicas),
        "{refused}"
    );
    // Kafka, acks=all: NOT_ENOUGH_REPLICAS.
    let script = format!(
        r#"
import os, sys
from confluent_kafka import Producer
p = Producer({{'bootstrap.servers': os.environ['BOOTSTRAP'], 'acks': 'all',
              'message.timeout.ms': 5000, 'enable.idempotence': False}})
errors = []
p.produce('{topic}', b'refused-kafka', partition=0, on_delivery=lambda e, m: errors.append(e))
p.flush(20)
print(errors[0].name() if errors and errors[0] else 'DELIVERED')
"#
    );
    let out = std::process::Command::new("timeout")
        .args(["60", "python3", "-c", &script])
        .env(
            "BOOTSTRAP",
            cluster.kafka_addr(leader as usize - 1).to_string(),
        )
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        answer == "NOT_ENOUGH_REPLICAS" || answer == "_MSG_TIMED_OUT",
        "Kafka produce: {answer:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // acks=1 is the leader's durability: still taken.
    acked.extend(records::produce_with(
        &alive,
        topic,
        10,
        50..60,
        records::quick(10),
        Acks::Leader,
    ));
    // Nothing refused is readable; once the follower is back, everything
    // acknowledged is.
    cluster.restart(down);
    wait(
        "the strict topic in sync again",
        Duration::from_secs(60),
        || image_of(&controllers).filter(|r| r.isr.len() == 3),
    );
    records::consume_exactly(&all.join(","), topic, &acked, records::quick(5));
}
