//! The broker's Kafka-protocol listener driven by real Kafka clients:
//! confluent-kafka (librdkafka) and kafka-python through the scripts of
//! tests/kafka_clients/, and kcat. Each test starts its own broker (2
//! shards, a temp dir, free ports) and checks, byte for byte, that what the
//! clients produced (acks 0, 1 and all; every codec; the idempotent
//! producer) is what they consume; that Metadata shows every shard as its
//! own node (or the one bootstrap node with `--kafka-advertise broker`);
//! that topics are created on first use (or not); and that no acknowledged
//! record is lost when the broker is SIGKILLed mid-produce.
//!
//! The clients are installed by scripts/install-kafka-clients.sh (which
//! scripts/test.sh runs); without them these tests fail, saying so.
//! Consumer groups over the Kafka protocol are in kafka_groups.rs.
#![allow(clippy::unwrap_used)]

mod server_support;
#[path = "kafka_clients/support.rs"]
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    args, create_topic, describe, kafka_addr, mixed_records, native_cli, native_owners, run_kcat,
    run_script, script_cmd, start_kafka_broker, write_records, Ack, Consumed, Lib, Proc, Record,
};

/// What a client script may take, whatever it does (its own --timeout is
/// shorter: this only catches a script that hangs regardless).
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);
/// The --timeout given to the client scripts, in seconds.
const CLIENT_TIMEOUT: &str = "30";

/// Produces `records` with `lib` and returns the acknowledgements, one per
/// record (checked).
fn produce(
    lib: Lib,
    kafka: &str,
    topic: &str,
    input: &std::path::Path,
    records: &[Record],
    extra: &[&str],
) -> Vec<Ack> {
    let mut a = args(&["--bootstrap", kafka, "--topic", topic, "--timeout"]);
    a.push(CLIENT_TIMEOUT.to_owned());
    a.push("--input".to_owned());
    a.push(input.to_str().unwrap().to_owned());
    a.extend(args(extra));
    let out = run_script(&lib.script("produce"), &a, SCRIPT_LIMIT).ok();
    let acks: Vec<Ack> = out.events("ack").iter().map(Ack::from_json).collect();
    let done = out.events("done");
    assert_eq!(
        done.len(),
        1,
        "{} printed no done line: {}",
        lib.name(),
        out.stderr
    );
    let indexes: BTreeSet<usize> = acks.iter().map(|a| a.index).collect();
    assert_eq!(
        (acks.len(), indexes.len()),
        (records.len(), records.len()),
        "{} {extra:?}: every record acknowledged exactly once",
        lib.name()
    );
    acks
}

/// Reads `topic` from the beginning with `lib`: `--count N`, or `--to-end`
/// when `count` is None.
fn consume(lib: Lib, kafka: &str, topic: &str, count: Option<usize>) -> Vec<Consumed> {
    let mut a = args(&["--bootstrap", kafka, "--topic", topic, "--timeout"]);
    a.push(CLIENT_TIMEOUT.to_owned());
    match count {
        Some(n) => a.extend(args(&["--count", &n.to_string()])),
        None => a.push("--to-end".to_owned()),
    }
    let out = run_script(&lib.script("consume"), &a, SCRIPT_LIMIT).ok();
    out.events("record")
        .iter()
        .map(Consumed::from_json)
        .collect()
}

/// Checks that `consumed` is exactly `records` as `acks` placed them: per
/// partition, offsets 0, 1, 2, ... holding the records sent there in the
/// order they were sent, byte for byte; with `offsets_known` (acks 1 and
/// all) each record at the offset its acknowledgement gave.
fn check_round_trip(
    what: &str,
    records: &[Record],
    acks: &[Ack],
    consumed: &[Consumed],
    offsets_known: bool,
) {
    // Each consumed record once, at offsets 0.. of its partition.
    let mut by_partition: BTreeMap<u32, Vec<&Consumed>> = BTreeMap::new();
    for c in consumed {
        by_partition.entry(c.partition).or_default().push(c);
    }
    for (p, list) in &mut by_partition {
        list.sort_by_key(|c| c.offset);
        let offsets: Vec<i64> = list.iter().map(|c| c.offset).collect();
        let expected: Vec<i64> = (0..list.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "{what}: partition {p}'s offsets are not 0.. once each"
        );
    }
    // What was sent to each partition, in the order it was sent.
    let mut sent: BTreeMap<u32, Vec<&Ack>> = BTreeMap::new();
    for a in acks {
        sent.entry(a.partition).or_default().push(a);
    }
    for list in sent.values_mut() {
        list.sort_by_key(|a| a.index);
    }
    let sent_counts: BTreeMap<u32, usize> = sent.iter().map(|(p, l)| (*p, l.len())).collect();
    let read_counts: BTreeMap<u32, usize> =
        by_partition.iter().map(|(p, l)| (*p, l.len())).collect();
    assert_eq!(
        read_counts, sent_counts,
        "{what}: records per partition, read vs sent"
    );
    for (p, list) in &sent {
        let read = &by_partition[p];
        for (at, (a, c)) in list.iter().zip(read.iter()).enumerate() {
            let r = &records[a.index];
            if offsets_known {
                assert_eq!(
                    a.offset, c.offset,
                    "{what}: record {} was acknowledged at {p}/{}, but the {at}th record \
                     sent to partition {p} was read at offset {}",
                    a.index, a.offset, c.offset
                );
            }
            assert!(
                c.key == r.key && c.value == r.value,
                "{what}: at {p}/{} read {}, but record {} sent there was {}",
                c.offset,
                describe(&c.key, &c.value),
                a.index,
                describe(&r.key, &r.value)
            );
            assert_eq!(c.digest, a.digest, "{what}: digest at {p}/{}", c.offset);
        }
    }
}

/// Produces a mix of records with `lib` (acks, codec, idempotence as
/// given), then reads them back with each of `readers` and compares.
fn round_trip(lib: Lib, acks: &str, codec: &str, idempotence: bool, readers: &[Lib], seed: u64) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &[]);
    let kafka = kafka_addr(&broker);
    let topic = "round-trip";
    create_topic(&broker, topic, 3);
    let records = mixed_records(seed, 60);
    let input = tmp.path().join("records.jsonl");
    write_records(&input, &records);
    let idem = if idempotence { "on" } else { "off" };
    let sent = produce(
        lib,
        &kafka,
        topic,
        &input,
        &records,
        &[
            "--acks",
            acks,
            "--compression",
            codec,
            "--idempotence",
            idem,
        ],
    );
    let partitions: BTreeSet<u32> = sent.iter().map(|a| a.partition).collect();
    assert!(
        partitions.len() > 1,
        "the records should spread over the partitions: {partitions:?}"
    );
    for &reader in readers {
        let what = format!(
            "{} acks={acks} compression={codec} idempotence={idem}, read by {}",
            lib.name(),
            reader.name()
        );
        // acks=0: the broker answers nothing, so no high watermark says when
        // everything is there; read until the count instead.
        let count = (acks == "0").then_some(records.len());
        let consumed = consume(reader, &kafka, topic, count);
        check_round_trip(&what, &records, &sent, &consumed, acks != "0");
        println!(
            "{what}: {} records, {} bytes, identical ({:?})",
            records.len(),
            records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>(),
            started.elapsed()
        );
    }
}

macro_rules! round_trips {
    ($($name:ident: $lib:expr, $acks:literal, $codec:literal, $idempotence:literal, $readers:expr, $seed:literal;)*) => {
        $(
            #[test]
            fn $name() {
                round_trip($lib, $acks, $codec, $idempotence, &$readers, $seed);
            }
        )*
    };
}

const C: Lib = Lib::Confluent;
const K: Lib = Lib::KafkaPython;

round_trips! {
    confluent_acks_0: C, "0", "none", false, [C], 11;
    confluent_acks_1: C, "1", "none", false, [C], 12;
    confluent_acks_all: C, "all", "none", false, [C], 13;
    confluent_gzip: C, "all", "gzip", false, [C, K], 14;
    confluent_snappy: C, "all", "snappy", false, [C, K], 15;
    confluent_lz4: C, "all", "lz4", false, [C, K], 16;
    confluent_zstd: C, "all", "zstd", false, [C, K], 17;
    confluent_idempotent: C, "all", "none", true, [C], 18;
    kafka_python_acks_0: K, "0", "none", false, [K], 21;
    kafka_python_acks_1: K, "1", "none", false, [K], 22;
    kafka_python_acks_all: K, "all", "none", false, [K], 23;
    kafka_python_gzip: K, "all", "gzip", false, [K, C], 24;
    kafka_python_snappy: K, "all", "snappy", false, [K, C], 25;
    kafka_python_lz4: K, "all", "lz4", false, [K, C], 26;
    kafka_python_zstd: K, "all", "zstd", false, [K, C], 27;
    kafka_python_idempotent: K, "all", "none", true, [K], 28;
}

/// `kcat -L -J` against `addr`: the metadata document.
fn kcat_metadata(addr: &str) -> Value {
    let out = run_kcat(&["-L", "-J", "-b", addr, "-m", "20"], b"", SCRIPT_LIMIT).ok();
    let text = out.stdout.join("\n");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("kcat -L -J printed no JSON ({e}): {text}"))
}

/// node id -> "host:port" of a kcat metadata document.
fn kcat_brokers(md: &Value) -> BTreeMap<i64, String> {
    md["brokers"]
        .as_array()
        .unwrap_or_else(|| panic!("no brokers in {md:#}"))
        .iter()
        .map(|b| {
            (
                b["id"].as_i64().unwrap(),
                b["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// partition -> leader of `topic` in a kcat metadata document.
fn kcat_leaders(md: &Value, topic: &str) -> BTreeMap<u32, i64> {
    let t = md["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .unwrap_or_else(|| panic!("{topic} is not in the metadata: {md:#}"));
    assert!(t.get("error").is_none(), "{topic}: {t:#}");
    t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p.get("error").is_none(), "{topic}: {p:#}");
            (
                p["partition"].as_u64().unwrap() as u32,
                p["leader"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kcat_metadata_lists_every_shard_as_its_own_node() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &[]);
    assert_eq!(
        broker.kafka_shards.len(),
        2,
        "kafka_shards= in the ready line"
    );
    create_topic(&broker, "meta", 4);
    let expected: BTreeMap<i64, String> = broker
        .kafka_shards
        .iter()
        .enumerate()
        .map(|(i, a)| (i as i64, a.to_string()))
        .collect();
    let owners = native_owners(&broker, "meta");
    // The same answer from the bootstrap port and from each shard's own.
    let mut addrs = vec![kafka_addr(&broker)];
    addrs.extend(broker.kafka_shards.iter().map(|a| a.to_string()));
    for addr in &addrs {
        let md = kcat_metadata(addr);
        assert_eq!(
            kcat_brokers(&md),
            expected,
            "brokers asked at {addr}: {md:#}"
        );
        let leaders = kcat_leaders(&md, "meta");
        let want: BTreeMap<u32, i64> = owners.iter().map(|(p, s)| (*p, *s as i64)).collect();
        assert_eq!(
            leaders, want,
            "asked at {addr}: each partition led by the node of the shard that owns it"
        );
    }
}

#[test]
fn kcat_metadata_with_advertise_broker_is_one_node() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(
        &tmp.path().join("data"),
        2,
        &["--kafka-advertise", "broker"],
    );
    create_topic(&broker, "one-node", 4);
    let kafka = kafka_addr(&broker);
    let md = kcat_metadata(&kafka);
    let brokers = kcat_brokers(&md);
    assert_eq!(brokers.len(), 1, "{md:#}");
    let (&id, name) = brokers.iter().next().unwrap();
    assert_eq!(name, &kafka, "the one node is the bootstrap address");
    let leaders = kcat_leaders(&md, "one-node");
    assert_eq!(leaders.len(), 4);
    assert!(leaders.values().all(|&l| l == id), "{leaders:?}");
    // Produce and consume through that one address: it forwards to owners.
    kcat_round_trip(&kafka, "one-node", 200);
}

/// kcat -P of `n` keyed lines, then kcat -C -e from the beginning: the same
/// records, in order per partition.
fn kcat_round_trip(kafka: &str, topic: &str, n: usize) {
    let sent: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("k{}", i % 17),
                format!("value {i} {}", "x".repeat(i % 50)),
            )
        })
        .collect();
    let mut input = String::new();
    for (k, v) in &sent {
        input.push_str(&format!("{k}\t{v}\n"));
    }
    run_kcat(
        &["-P", "-b", kafka, "-t", topic, "-K", "\t", "-X", "acks=all"],
        input.as_bytes(),
        SCRIPT_LIMIT,
    )
    .ok();
    let out = run_kcat(
        &[
            "-C",
            "-b",
            kafka,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-J",
        ],
        b"",
        SCRIPT_LIMIT,
    )
    .ok();
    let mut by_partition: BTreeMap<i64, Vec<(i64, String, String)>> = BTreeMap::new();
    for line in &out.stdout {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("kcat -C -J line is not JSON ({e}): {line}"));
        by_partition
            .entry(v["partition"].as_i64().unwrap())
            .or_default()
            .push((
                v["offset"].as_i64().unwrap(),
                v["key"].as_str().unwrap_or("<null>").to_owned(),
                v["payload"].as_str().unwrap_or("<null>").to_owned(),
            ));
    }
    let mut read = 0;
    for (p, list) in &mut by_partition {
        list.sort();
        let offsets: Vec<i64> = list.iter().map(|r| r.0).collect();
        assert_eq!(
            offsets,
            (0..list.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
        // Same key, same partition; per key the values in the order sent.
        read += list.len();
    }
    assert_eq!(read, n, "kcat read back {read} of {n} records");
    let mut got_per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for list in by_partition.values() {
        for (_, k, v) in list {
            got_per_key.entry(k.clone()).or_default().push(v.clone());
        }
    }
    let mut sent_per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &sent {
        sent_per_key.entry(k.clone()).or_default().push(v.clone());
    }
    assert_eq!(
        got_per_key, sent_per_key,
        "per key, the values in the order sent"
    );
    let keys_per_partition: Vec<BTreeSet<&String>> = by_partition
        .values()
        .map(|l| l.iter().map(|r| &r.1).collect())
        .collect();
    for (i, a) in keys_per_partition.iter().enumerate() {
        for b in &keys_per_partition[i + 1..] {
            assert!(a.is_disjoint(b), "a key in two partitions");
        }
    }
}

#[test]
fn kcat_produce_then_consume() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &[]);
    create_topic(&broker, "kcat", 3);
    kcat_round_trip(&kafka_addr(&broker), "kcat", 500);
}

#[test]
fn topics_are_created_on_first_produce() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(&tmp.path().join("data"), 2, &["--default-partitions", "3"]);
    let kafka = kafka_addr(&broker);
    for (lib, topic) in [(C, "made-by-confluent"), (K, "made-by-kafka-python")] {
        let mut a = args(&["--bootstrap", &kafka, "--topic", topic, "--timeout"]);
        a.push(CLIENT_TIMEOUT.to_owned());
        a.extend(args(&["--count", "30", "--keys", "--acks", "all"]));
        let out = run_script(&lib.script("produce"), &a, SCRIPT_LIMIT).ok();
        assert_eq!(out.events("ack").len(), 30, "{}", lib.name());
        let owners = native_owners(&broker, topic);
        assert_eq!(owners.len(), 3, "{topic}: --default-partitions");
        let consumed = consume(lib, &kafka, topic, None);
        assert_eq!(consumed.len(), 30, "{topic}");
    }
}

#[test]
fn unknown_topics_are_refused_without_auto_create() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = start_kafka_broker(
        &tmp.path().join("data"),
        2,
        &["--auto-create-topics", "false"],
    );
    let kafka = kafka_addr(&broker);
    for (lib, topic) in [(C, "never-made-c"), (K, "never-made-k")] {
        let a = args(&[
            "--bootstrap",
            &kafka,
            "--topic",
            topic,
            "--timeout",
            "5",
            "--count",
            "1",
        ]);
        let out = run_script(&lib.script("produce"), &a, SCRIPT_LIMIT);
        assert!(
            !out.status.success(),
            "{}: a produce to an unknown topic succeeded: {:?}",
            lib.name(),
            out.stdout
        );
        assert!(out.events("ack").is_empty(), "{}", lib.name());
        let listed = native_cli(&broker, &["topic", "list"]);
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(topic)),
            "{topic} was created: {listed}"
        );
        println!(
            "{}: refused as expected: {}",
            lib.name(),
            last_error(&out.stderr)
        );
    }
}

/// The last "error: " line of a script's stderr.
fn last_error(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("")
}

#[test]
fn no_acknowledged_record_is_lost_when_the_broker_is_killed_mid_produce() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let broker = start_kafka_broker(&data, 2, &[]);
    let kafka = kafka_addr(&broker);
    create_topic(&broker, "crash", 4);
    let mut a = args(&["--bootstrap", &kafka, "--topic", "crash"]);
    a.extend(args(&[
        "--acks",
        "all",
        "--count",
        "0",
        "--duration",
        "60",
        "--keys",
        "--value-size",
        "300",
        "--keep-going",
        "--linger-ms",
        "2",
        "--timeout",
        "10",
    ]));
    let producer = Proc::spawn(script_cmd(&C.script("produce"), &a));
    // Kill the broker once a good number are acknowledged (or 15 s passed).
    let started = Instant::now();
    loop {
        let acked = producer.stdout.lock().unwrap().len();
        if acked >= 3000 || started.elapsed() > Duration::from_secs(15) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    broker.kill();
    thread::sleep(Duration::from_millis(500));
    let out = producer.kill();
    let acks: Vec<Ack> = out
        .json()
        .iter()
        .filter(|v| v["event"] == "ack")
        .map(Ack::from_json)
        .collect();
    assert!(
        acks.len() >= 100,
        "only {} records acknowledged before the kill: {}",
        acks.len(),
        out.stderr
    );
    println!(
        "{} acknowledged before the SIGKILL, after {:?}",
        acks.len(),
        started.elapsed()
    );

    let broker = start_kafka_broker(&data, 2, &[]);
    let kafka = kafka_addr(&broker);
    let mut a = args(&["--bootstrap", &kafka, "--topic", "crash", "--to-end"]);
    a.extend(args(&["--digest-only", "--timeout", "60"]));
    let read = run_script(&C.script("consume"), &a, SCRIPT_LIMIT).ok();
    let consumed: BTreeMap<(u32, i64), String> = read
        .events("record")
        .iter()
        .map(|v| {
            (
                (
                    v["partition"].as_u64().unwrap() as u32,
                    v["offset"].as_i64().unwrap(),
                ),
                v["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut lost = Vec::new();
    for ack in &acks {
        match consumed.get(&(ack.partition, ack.offset)) {
            Some(d) if *d == ack.digest => {}
            other => lost.push((ack.index, ack.partition, ack.offset, other.cloned())),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost or changed after the restart \
         (index, partition, offset, what is there): {:?}",
        lost.len(),
        acks.len(),
        &lost[..lost.len().min(10)]
    );
    println!(
        "all {} acknowledged records read back after the restart ({} records there)",
        acks.len(),
        consumed.len()
    );
}
