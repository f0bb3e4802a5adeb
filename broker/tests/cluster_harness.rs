//! The multi-broker harness for real, before brokers form a cluster: three
//! independent brokers on 127.0.0.1, .2 and .3 each keep records byte for
//! byte; a SIGKILLed one restarts on its ports and directory with its
//! acknowledged records; a SIGSTOPped one times a client out and answers
//! again once resumed; a SIGTERMed one exits cleanly; dropping a cluster
//! leaves no process, paused ones included; and a client that
//! reaches a broker only through netfault proxies gets through with Pass,
//! fails within its timeout under Drop, and gets through again after heal.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use broker_client::{
    Client, ClientConfig, ClientError, ClientResult, Producer, ProducerConfig, TopicListing,
    TopicSettings,
};
use broker_netfault::{Direction, Fault, Proxy};
use cluster_support::{
    records::{self, Acked},
    Cluster,
};

/// Timeouts short enough for a test to see a dead, paused or partitioned
/// broker quickly.
fn quick() -> ClientConfig {
    records::quick(1)
}

fn produce(bootstrap: &str, topic: &str, broker: usize, n: usize) -> Acked {
    records::produce(bootstrap, topic, broker, 0..n, quick())
}

fn consume_exactly(bootstrap: &str, topic: &str, expected: &Acked) {
    records::consume_exactly(bootstrap, topic, expected, quick())
}

/// Creates `topic` with 3 partitions on the broker at `bootstrap`.
fn create(bootstrap: &str, topic: &str) {
    Client::connect_with(bootstrap, quick())
        .unwrap()
        .create_topic(topic, 3, &TopicSettings::default())
        .unwrap();
}

/// The topics of the broker at `bootstrap`, asked on a new client.
fn topics(bootstrap: &str) -> ClientResult<Vec<TopicListing>> {
    Client::connect_with(bootstrap, quick()).and_then(|c| c.list_topics())
}

#[test]
fn three_brokers_on_their_own_loopback_ips_each_keep_records_byte_for_byte() {
    let cluster = Cluster::start(3, 1, |_| Vec::new());
    for i in 0..cluster.len() {
        let addr = cluster.addr(i);
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1)));
        let topic = format!("only-on-{i}");
        create(&addr.to_string(), &topic);
        let sent = produce(&addr.to_string(), &topic, i, 300);
        consume_exactly(&addr.to_string(), &topic, &sent);
    }
    // Three brokers, not one: each knows only its own topic.
    for i in 0..cluster.len() {
        let names: Vec<String> = topics(&cluster.addr(i).to_string())
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .filter(|n| !n.starts_with("__"))
            .collect();
        assert_eq!(names, [format!("only-on-{i}")], "broker {i}");
    }
}

#[test]
fn a_killed_broker_restarts_on_its_ports_and_dir_with_its_acknowledged_records() {
    let mut cluster = Cluster::start(3, 1, |_| Vec::new());
    let bootstrap = cluster.addr(1).to_string();
    create(&bootstrap, "kept");
    let mut sent = produce(&bootstrap, "kept", 1, 500);
    cluster.kill(1);
    let refused = topics(&bootstrap);
    assert!(
        matches!(refused, Err(ClientError::Connect { .. })),
        "{refused:?}"
    );
    // The others do not notice.
    topics(&cluster.addr(0).to_string()).unwrap();
    topics(&cluster.addr(2).to_string()).unwrap();
    cluster.restart(1);
    assert_eq!(cluster.addr(1).to_string(), bootstrap);
    consume_exactly(&bootstrap, "kept", &sent);
    // New records go after the old ones.
    let more = produce(&bootstrap, "kept", 1, 50);
    assert!(more.keys().all(|at| !sent.contains_key(at)));
    sent.extend(more);
    consume_exactly(&bootstrap, "kept", &sent);
    // A graceful stop is a clean exit, and the records outlive it too.
    let status = cluster.terminate(1);
    assert!(
        status.success(),
        "{status:?}; stderr:\n{}",
        cluster.stderr(1)
    );
    cluster.restart(1);
    consume_exactly(&bootstrap, "kept", &sent);
}

#[test]
fn a_paused_broker_times_a_client_out_and_answers_again_once_resumed() {
    let mut cluster = Cluster::start(3, 1, |_| Vec::new());
    let bootstrap = cluster.addr(2).to_string();
    create(&bootstrap, "paused");
    let sent = produce(&bootstrap, "paused", 2, 100);
    cluster.pause(2);
    let start = Instant::now();
    let answer = topics(&bootstrap);
    assert!(answer.is_err(), "a stopped broker answered: {answer:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    topics(&cluster.addr(0).to_string()).unwrap();
    cluster.resume(2);
    topics(&bootstrap).unwrap();
    consume_exactly(&bootstrap, "paused", &sent);
}

#[test]
fn dropping_a_cluster_leaves_no_process_even_a_paused_one() {
    let mut cluster = Cluster::start(2, 1, |_| Vec::new());
    let pids: Vec<u32> = (0..2).map(|i| cluster.pid(i).unwrap()).collect();
    cluster.pause(1);
    drop(cluster);
    for pid in pids {
        // Killed and reaped: not even a zombie is left.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "broker {pid} outlived its cluster"
        );
    }
}

/// The IP on which the proxies stand in for broker 0.
const PROXY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));

#[test]
fn a_client_through_proxies_passes_fails_within_its_timeout_under_drop_and_recovers_on_heal() {
    // The broker advertises the proxies' IP, so that the client's shard
    // connections, named by the metadata, go through the proxies too:
    // each proxy listens on PROXY_IP with the port of what it forwards to.
    let cluster = Cluster::start(1, 1, |_| {
        vec!["--advertised-host".into(), PROXY_IP.to_string()]
    });
    let real: Vec<SocketAddr> = [cluster.addr(0)]
        .into_iter()
        .chain(cluster.shard_addrs(0))
        .collect();
    let proxies: Vec<Proxy> = real
        .iter()
        .enumerate()
        .map(|(k, &to)| Proxy::start(SocketAddr::new(PROXY_IP, to.port()), to, k as u64).unwrap())
        .collect();
    let bootstrap = proxies[0].addr().to_string();
    create(&bootstrap, "proxied");
    let mut sent = produce(&bootstrap, "proxied", 0, 200);
    consume_exactly(&bootstrap, "proxied", &sent);
    for p in &proxies {
        let c = p.counters();
        assert!(c.forward.forwarded_bytes > 0 && c.backward.forwarded_bytes > 0);
    }

    for p in &proxies {
        p.set(Direction::Both, Fault::Drop);
    }
    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            client: quick(),
            retries: 0,
            ..ProducerConfig::default()
        },
    );
    let start = Instant::now();
    let failed = producer.and_then(|p| p.send("proxied", None, b"into the void")?.wait());
    assert!(
        failed.is_err(),
        "a produce through a black hole: {failed:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(proxies
        .iter()
        .any(|p| p.counters().forward.dropped_bytes > 0));

    for p in &proxies {
        p.heal();
    }
    sent.extend(produce(&bootstrap, "proxied", 0, 100));
    consume_exactly(&bootstrap, "proxied", &sent);
}
