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
fn leaders_seen_by(cluster: &Cluster, i: usize) -> Option<Vec<u32>> {
    let client = Admin::connect_with(&cluster.addr(i).to_string(), records::quick(2)).ok()?;
    let topic = client.describe_topic(TOPIC).ok()?;
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
            || (leaders_seen_by(cluster, i)? == leaders).then_some(()),
        );
    }
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
