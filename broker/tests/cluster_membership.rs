//! A cluster's membership on real processes: three brokers that are also
//! the controllers elect a leader and admit every broker (each with its
//! own epoch); `broker cluster status` shows the same leader and term
//! from every controller; SIGKILL of the leader gives a new one, fences
//! the dead broker once its session expires and readmits it with a new
//! epoch when it restarts; a graceful stop is a controlled shutdown
//! (fenced at once, not after the session timeout); the whole cluster
//! SIGKILLed and restarted keeps its metadata.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use cluster_support::{status, Cluster, SESSION_TIMEOUT_MS};
use serde_json::Value;

/// Polls the status until `done` holds of it (at most `limit`); returns it.
fn wait_status(cluster: &Cluster, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(&cluster.controllers());
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {limit:?}; last status:\n{s:#}\nstderr of broker 1:\n{}",
            cluster.stderr(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The brokers of a status, by id: (epoch, state).
fn brokers(s: &Value) -> Vec<(u64, u64, String)> {
    s["cluster"]["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["epoch"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every controller that answered agrees on the leader and the term.
fn agreed(s: &Value) -> bool {
    let views: Vec<&Value> = s["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("status"))
        .collect();
    !views.is_empty()
        && s["leader"].is_u64()
        && views
            .iter()
            .all(|v| v["leader"] == s["leader"] && v["term"] == s["term"])
}

fn all_unfenced(s: &Value, n: usize) -> bool {
    let b = brokers(s);
    b.len() == n && b.iter().all(|(_, _, state)| state == "unfenced")
}

#[test]
fn three_controllers_elect_one_leader_and_admit_every_broker_with_its_own_epoch() {
    let cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let s = wait_status(&cluster, Duration::from_secs(20), |s| {
        agreed(s) && all_unfenced(s, 3)
    });
    let b = brokers(&s);
    assert_eq!(
        b.iter().map(|b| b.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{s:#}"
    );
    let mut epochs: Vec<u64> = b.iter().map(|b| b.1).collect();
    epochs.dedup();
    assert_eq!(epochs.len(), 3, "epochs are distinct: {s:#}");
    let answered = s["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("status").is_some())
        .count();
    assert_eq!(answered, 3, "{s:#}");
}

#[test]
fn a_killed_leader_is_replaced_and_its_broker_fenced_then_readmitted_with_a_new_epoch() {
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let s = wait_status(&cluster, Duration::from_secs(20), |s| {
        agreed(s) && all_unfenced(s, 3)
    });
    let leader = s["leader"].as_u64().unwrap();
    let old_epoch = brokers(&s).into_iter().find(|b| b.0 == leader).unwrap().1;
    let killed_at = Instant::now();
    cluster.kill(leader as usize - 1);
    // A new leader among the other two, which then fences the dead broker
    // once its session expires (the new leader gives it a fresh session
    // first: at least one timeout after it took over).
    let s = wait_status(&cluster, Duration::from_secs(30), |s| {
        agreed(s)
            && s["leader"].as_u64() != Some(leader)
            && brokers(s).iter().any(|b| b.0 == leader && b.2 == "fenced")
    });
    assert!(
        killed_at.elapsed() >= Duration::from_millis(SESSION_TIMEOUT_MS),
        "fenced before its session could expire: {s:#}"
    );
    // Every other broker still serves.
    assert!(
        brokers(&s)
            .iter()
            .all(|b| b.0 == leader || b.2 == "unfenced"),
        "{s:#}"
    );
    cluster.restart(leader as usize - 1);
    let s = wait_status(&cluster, Duration::from_secs(30), |s| all_unfenced(s, 3));
    let new_epoch = brokers(&s).into_iter().find(|b| b.0 == leader).unwrap().1;
    assert!(new_epoch > old_epoch, "{old_epoch} -> {new_epoch}: {s:#}");
}

#[test]
fn a_graceful_stop_is_a_controlled_shutdown_and_the_restarted_cluster_keeps_its_metadata() {
    let mut cluster = Cluster::start_members(3, 1, 3, |_| vec![]);
    let s = wait_status(&cluster, Duration::from_secs(20), |s| {
        agreed(s) && all_unfenced(s, 3)
    });
    let leader = s["leader"].as_u64().unwrap();
    // A broker that is not the leader stops gracefully: fenced at once
    // (ShutDown), well before its session would have expired.
    let other = (1..=3).find(|&i| i != leader).unwrap();
    let stopped_at = Instant::now();
    assert!(cluster.terminate(other as usize - 1).success());
    let s = wait_status(&cluster, Duration::from_secs(10), |s| {
        brokers(s)
            .iter()
            .any(|b| b.0 == other && b.2 == "shut_down")
    });
    assert!(
        stopped_at.elapsed() < Duration::from_millis(SESSION_TIMEOUT_MS),
        "not a controlled shutdown: {s:#}"
    );
    let before = brokers(&s);
    let version = s["cluster"]["version"].as_u64().unwrap();
    // Everything SIGKILLed, then started again: the metadata survives.
    cluster.restart_all();
    let s = wait_status(&cluster, Duration::from_secs(40), |s| {
        agreed(s) && all_unfenced(s, 3)
    });
    assert!(s["cluster"]["version"].as_u64().unwrap() > version, "{s:#}");
    for (id, epoch, _) in brokers(&s) {
        let old = before.iter().find(|b| b.0 == id).unwrap().1;
        assert!(epoch > old, "broker {id}: epoch {old} -> {epoch}");
    }
}

#[test]
fn a_second_process_with_a_live_brokers_id_is_never_admitted_and_never_serves() {
    // Broker 1 is the only controller: broker 2's id is not a controller's.
    let cluster = Cluster::start_members(3, 1, 1, |_| vec![]);
    let s = wait_status(&cluster, Duration::from_secs(20), |s| {
        agreed(s) && all_unfenced(s, 3)
    });
    let epoch_2 = brokers(&s).into_iter().find(|b| b.0 == 2).unwrap().1;
    // Another process configured as broker 2, on an address of its own.
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.9:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let impostor = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &listen.to_string(), "--shards", "1"])
        .args(["--kafka-listen", "off", "--node-id", "2"])
        .args(["--controllers", &cluster.controllers()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    /// Killed when dropped, a failing test included.
    struct Killed(Option<std::process::Child>);
    impl Drop for Killed {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut impostor = Killed(Some(impostor));
    // It binds its ports, but answers nobody: a request on its main port
    // gets no answer while it waits to be admitted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match std::net::TcpStream::connect(listen) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the second process never bound {listen}: {e}"),
        }
    };
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // Any bytes: a serving broker answers (an error frame) or closes.
    conn.write_all(&[0u8; 64]).unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(n) => panic!("the unadmitted process answered {n} bytes"),
    }
    // The live broker 2 is untouched.
    let s = status(&cluster.controllers());
    assert!(
        brokers(&s).contains(&(2, epoch_2, "unfenced".to_owned())),
        "{s:#}"
    );
    let mut child = impostor.0.take().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "it printed a ready line: {:?}",
        out.stdout
    );
}
