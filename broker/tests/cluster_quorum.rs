//! The controllers' quorum under network faults, on real processes with a
//! netfault proxy on every link between controllers: a leader cut off
//! from the others can commit nothing (its applied index stands still and
//! a topic created meanwhile through the majority never reaches it) while
//! the other two elect a new leader and go on; once healed, it follows the
//! new leader and has everything. And topic admin keeps working across a
//! SIGKILL of the leader, and creates racing that SIGKILL each happen
//! once or fail cleanly (never twice, never half).
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{sync::mpsc, time::Duration};

use broker_client::{Client, ClientConfig, ErrorCode, TopicSettings};
use broker_netfault::Fault;
use cluster_support::{
    records::{self, Acked},
    status, wait, Cluster,
};
use serde_json::Value;

/// Kafka's default request timeout: a broker that still takes the
/// cut-off leader for the leader loses one controller call's timeout (8 s)
/// on it before it asks the next.
fn quick() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// One controller's own view: (leader, term, last applied, topics).
fn view(s: &Value, node: u64) -> Option<(Option<u64>, u64, u64)> {
    s["controllers"].as_array()?.iter().find_map(|c| {
        let st = c.get("status")?;
        (st["node_id"].as_u64()? == node).then(|| {
            (
                st["leader"].as_u64(),
                st["term"].as_u64().unwrap_or(0),
                st["last_applied"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// Waits until the controllers have a leader and all three brokers are
/// unfenced; the status then.
fn leader_and_all_admitted(controllers: &str) -> Value {
    wait(
        "a leader and every broker admitted",
        Duration::from_secs(30),
        || {
            let s = status(controllers);
            (s["leader"].is_u64() && all_unfenced(&s, 3)).then_some(s)
        },
    )
}

fn all_unfenced(s: &Value, n: usize) -> bool {
    s["cluster"]["brokers"]
        .as_array()
        .is_some_and(|b| b.len() == n && b.iter().all(|b| b["state"] == "unfenced"))
}

/// Creates `topic` at `at`, tried again as a client would until `limit`:
/// an earlier try that timed out may have committed (TopicExists).
fn create_retried(at: &str, topic: &str, partitions: u32, limit: Duration) {
    wait(&format!("topic {topic} created"), limit, || {
        let created = Client::connect_with(at, quick()).ok()?.create_topic(
            topic,
            partitions,
            &TopicSettings::default(),
        );
        match created {
            Ok(_) => Some(()),
            Err(e) if e.code() == Some(ErrorCode::TopicExists) => Some(()),
            Err(e) => {
                eprintln!("create {topic}: {e}");
                None
            }
        }
    });
}

#[test]
fn a_controller_cut_off_by_the_proxies_commits_nothing_and_catches_up_once_healed() {
    let cluster = Cluster::start_members_behind_proxies(3, 1, 3, 7);
    let direct = cluster.controllers();
    let s = leader_and_all_admitted(&direct);
    let old = s["leader"].as_u64().unwrap();
    let (_, old_term, _) = view(&s, old).unwrap();
    cluster
        .mesh()
        .unwrap()
        .isolate(old as usize - 1, Fault::Drop);
    // The other two elect a new leader in a later term.
    let others: Vec<u64> = (1..=3).filter(|&n| n != old).collect();
    let new = wait(
        "a new leader among the others",
        Duration::from_secs(30),
        || {
            let s = status(&direct);
            let a = view(&s, others[0])?;
            let b = view(&s, others[1])?;
            (a.0 == b.0 && a.0.is_some_and(|l| l != old) && a.1 > old_term).then_some(a.0?)
        },
    );
    let (_, _, isolated_applied) = view(&status(&direct), old).unwrap();
    // The majority commits a topic created at a broker of theirs.
    let at = cluster.addr(new as usize - 1).to_string();
    // Tried again as a client would (an earlier try may have committed).
    // (This took up to a minute while the cut-off leader's abandoned
    // connections, held open by the black hole, filled the listeners.)
    create_retried(&at, "during-the-cut", 3, Duration::from_secs(30));
    let s = status(&direct);
    let (_, _, majority_applied) = view(&s, new).unwrap();
    assert!(majority_applied > isolated_applied, "{s:#}");
    // The isolated one applied nothing meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let (_, _, still) = view(&status(&direct), old).unwrap();
    assert_eq!(
        still, isolated_applied,
        "the cut-off controller applied something"
    );
    // Healed: it follows the new leader and has everything.
    cluster.mesh().unwrap().heal();
    wait("the old leader caught up", Duration::from_secs(30), || {
        let s = status(&direct);
        let v = view(&s, old)?;
        let n = view(&s, new)?;
        (v.0 == n.0 && v.2 >= majority_applied).then_some(())
    });
    let listed =
        Client::connect_with(&cluster.addr(old as usize - 1).to_string(), quick()).unwrap();
    wait(
        "the topic on the healed broker",
        Duration::from_secs(10),
        || {
            listed
                .list_topics()
                .ok()?
                .iter()
                .any(|t| t.name == "during-the-cut")
                .then_some(())
        },
    );
}

#[test]
fn topic_admin_keeps_working_after_the_leader_is_killed() {
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let direct = cluster.controllers();
    let s = leader_and_all_admitted(&direct);
    let leader = s["leader"].as_u64().unwrap();
    cluster.kill(leader as usize - 1);
    let other = (1..=3).find(|&n| n != leader).unwrap();
    let at = cluster.addr(other as usize - 1).to_string();
    // Created through the new leader once there is one (the client's
    // request may first meet the election: it is tried again).
    create_retried(&at, "after-failover", 2, Duration::from_secs(30));
    let s = status(&direct);
    assert!(s["cluster"]["topics"].as_u64().unwrap() >= 2, "{s:#}");
}

/// Every broker of `cluster` lists `topic` with `partitions` partitions.
fn listed_everywhere(cluster: &Cluster, topic: &str, partitions: u32) {
    for i in 0..cluster.len() {
        let addr = cluster.addr(i).to_string();
        wait(
            &format!("{topic} with {partitions} partitions on broker {i}"),
            Duration::from_secs(20),
            || {
                let listed = Client::connect_with(&addr, quick())
                    .ok()?
                    .list_topics()
                    .ok()?;
                let found = listed.iter().find(|t| t.name == topic)?;
                assert_eq!(found.partitions, partitions, "{topic} on broker {i}");
                Some(())
            },
        );
    }
}

/// Topic creates asked one after another of a broker that survives, while
/// the controllers' leader (a broker too) is SIGKILLed after the second
/// answer: each create either answers done, or fails with an error a
/// client retries on and, tried again, is done once. None answers
/// TopicExists on its first try (that would be a create committed twice,
/// say a lost answer's try retried under a new request), every topic ends
/// with all its partitions on every broker (never half), every partition
/// takes records that read back byte for byte, and topics made before the
/// kill keep their records (no create applied again after the failover
/// recreated one empty).
#[test]
fn creates_racing_a_leader_kill_happen_once_or_fail_cleanly() {
    const PARTITIONS: u32 = 4;
    const RACING: usize = 8;
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let direct = cluster.controllers();
    let s = leader_and_all_admitted(&direct);
    let leader = s["leader"].as_u64().unwrap() as usize - 1;
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    let at = cluster.addr(survivor).to_string();
    let before: Vec<(String, Acked)> = (0..2)
        .map(|k| {
            let topic = format!("before-{k}");
            create_retried(&at, &topic, PARTITIONS, Duration::from_secs(30));
            // Usable here once created; the others apply it within a
            // heartbeat (the producer's retries may not outlast that under load).
            listed_everywhere(&cluster, &topic, PARTITIONS);
            let acked = records::produce(&at, &topic, k, 0..40, records::quick(10));
            (topic, acked)
        })
        .collect();

    let (answers, answered) = mpsc::channel();
    let creator = {
        let at = at.clone();
        std::thread::spawn(move || {
            for k in 0..RACING {
                let topic = format!("race-{k}");
                let outcome = Client::connect_with(&at, quick())
                    .and_then(|c| c.create_topic(&topic, PARTITIONS, &TopicSettings::default()))
                    .map(|_| ());
                answers.send((topic, outcome)).unwrap();
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(answered.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    cluster.kill(leader);
    outcomes.extend(answered.iter());
    creator.join().unwrap();
    assert_eq!(outcomes.len(), RACING);
    eprintln!("racing creates: {outcomes:?}");

    cluster.restart(leader);
    wait(
        "every broker admitted again",
        Duration::from_secs(60),
        || all_unfenced(&status(&direct), 3).then_some(()),
    );
    for (topic, outcome) in &outcomes {
        if let Err(e) = outcome {
            assert_ne!(
                e.code(),
                Some(ErrorCode::TopicExists),
                "{topic}: a first try answered TopicExists: {e}"
            );
            // Failed cleanly: tried again, it is done once.
            create_retried(&at, topic, PARTITIONS, Duration::from_secs(30));
        }
    }
    for (k, (topic, _)) in outcomes.iter().enumerate() {
        listed_everywhere(&cluster, topic, PARTITIONS);
        let acked = records::produce(&at, topic, 100 + k, 0..40, records::quick(10));
        let partitions: std::collections::BTreeSet<u32> = acked.keys().map(|&(p, _)| p).collect();
        assert_eq!(
            partitions.len(),
            PARTITIONS as usize,
            "{topic}: {partitions:?}"
        );
        records::consume_exactly(&at, topic, &acked, records::quick(10));
    }
    for (topic, acked) in &before {
        listed_everywhere(&cluster, topic, PARTITIONS);
        records::consume_exactly(&at, topic, acked, records::quick(10));
    }
    let s = status(&direct);
    assert_eq!(
        s["cluster"]["topics"].as_u64().unwrap(),
        (RACING + before.len() + 1) as u64,
        "the racing, earlier and offsets topics, each once: {s:#}"
    );
}
