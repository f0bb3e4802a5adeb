//! The `broker` command line against the real binary (2 shards): topics
//! created, listed, described and deleted; lines produced from stdin come
//! back byte for byte from `broker consume`; failures give exit code 1.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use server_support::Broker;

fn start() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);
    (dir, broker)
}

/// Runs `broker ARGS --bootstrap ADDR` with `stdin`, and waits for it.
fn cli(broker: &Broker, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .args(["--bootstrap", &broker.listen.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // A command that does not read stdin may close it early.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lines_produced_from_stdin_are_consumed_byte_for_byte() {
    let (_dir, broker) = start();
    let created = ok(&cli(
        &broker,
        &["topic", "create", "lines", "--partitions", "3"],
        b"",
    ));
    assert!(created.contains("lines"), "{created}");
    // Non-UTF-8 bytes, tabs, a carriage return, an empty line.
    let mut input = Vec::new();
    for i in 0..500u32 {
        input.extend_from_slice(format!("line {i}\t").as_bytes());
        input.extend_from_slice(&[0xff, 0x00, (i % 256) as u8 | 0x80]);
        if i % 100 == 7 {
            input.push(b'\r');
        }
        input.push(b'\n');
    }
    input.extend_from_slice(b"\n");
    let produced = cli(&broker, &["produce", "lines", "--partition", "1"], &input);
    assert_eq!(ok(&produced), "", "nothing on stdout");
    let out = cli(
        &broker,
        &[
            "consume",
            "lines",
            "--partition",
            "1",
            "--max-messages",
            "501",
        ],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, input, "byte for byte");
    // Only partition 1 got them.
    let other = cli(
        &broker,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--timeout-ms",
            "300",
        ],
        b"",
    );
    assert_eq!(ok(&other), "");
}

#[test]
fn keyed_lines_keep_their_order_per_key_across_all_partitions() {
    let (_dir, broker) = start();
    ok(&cli(
        &broker,
        &["topic", "create", "keyed", "--partitions", "4"],
        b"",
    ));
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&format!("user-{}=event {i} of user-{}\n", i % 10, i % 10));
    }
    ok(&cli(
        &broker,
        &["produce", "keyed", "--key-separator", "="],
        input.as_bytes(),
    ));
    let started = Instant::now();
    let out = ok(&cli(
        &broker,
        &["consume", "keyed", "--timeout-ms", "1000"],
        b"",
    ));
    assert!(started.elapsed() < Duration::from_secs(15));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 300, "every value once, keys stripped");
    let mut last: HashMap<&str, u32> = HashMap::new();
    for line in &lines {
        let (event, user) = line.split_once(" of ").unwrap();
        let n: u32 = event.trim_start_matches("event ").parse().unwrap();
        if let Some(prev) = last.insert(user, n) {
            assert!(prev < n, "{user}: {prev} then {n}");
        }
    }
    // The describe table and JSON agree with what was produced.
    let json = ok(&cli(
        &broker,
        &["topic", "describe", "keyed", "--output", "json"],
        b"",
    ));
    let d: serde_json::Value = serde_json::from_str(&json).unwrap();
    let partitions = d["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4);
    let total: i64 = partitions
        .iter()
        .map(|p| p["latest"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 300);
    let shard_addrs: Vec<String> = broker.shards.iter().map(|a| a.to_string()).collect();
    for p in partitions {
        let shard = p["shard"].as_u64().unwrap() as usize;
        assert_eq!(p["address"].as_str().unwrap(), shard_addrs[shard]);
        assert_eq!(p["earliest"].as_i64().unwrap(), 0);
    }
    let table = ok(&cli(&broker, &["topic", "describe", "keyed"], b""));
    assert!(table.contains("PARTITION  SHARD  ADDRESS"), "{table}");
    assert!(table.contains(&shard_addrs[1]), "{table}");
}

#[test]
fn topics_are_listed_and_deleted() {
    let (_dir, broker) = start();
    ok(&cli(
        &broker,
        &["topic", "create", "a", "--partitions", "2"],
        b"",
    ));
    ok(&cli(
        &broker,
        &[
            "topic",
            "create",
            "b",
            "--partitions",
            "1",
            "--retention-ms",
            "-2",
            "--segment-bytes",
            "1048576",
        ],
        b"",
    ));
    let json = ok(&cli(&broker, &["topic", "list", "--output", "json"], b""));
    let topics: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        topics,
        serde_json::json!([{"name": "a", "partitions": 2}, {"name": "b", "partitions": 1}])
    );
    let table = ok(&cli(&broker, &["topic", "list"], b""));
    assert_eq!(table, "NAME  PARTITIONS\na     2\nb     1\n");
    let described = ok(&cli(&broker, &["topic", "describe", "b"], b""));
    assert!(described.contains("retention.ms none"), "{described}");
    assert!(described.contains("segment.bytes 1048576"), "{described}");
    ok(&cli(&broker, &["topic", "delete", "a"], b""));
    let table = ok(&cli(&broker, &["topic", "list"], b""));
    assert_eq!(table, "NAME  PARTITIONS\nb     1\n");
    let again = cli(&broker, &["topic", "create", "b"], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("TopicExists"));
}

#[test]
fn failures_give_exit_code_1_and_a_message() {
    let (_dir, broker) = start();
    ok(&cli(
        &broker,
        &["topic", "create", "small", "--partitions", "1"],
        b"",
    ));
    let unknown = cli(&broker, &["produce", "nope"], b"x\n");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("UnknownTopic"));
    let bad_partition = cli(
        &broker,
        &["produce", "small", "--partition", "7"],
        b"x\ny\n",
    );
    assert_eq!(bad_partition.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_partition.stderr);
    assert!(stderr.contains("2 of 2 records failed"), "{stderr}");
    let consume_unknown = cli(&broker, &["consume", "nope", "--max-messages", "1"], b"");
    assert_eq!(consume_unknown.status.code(), Some(1));
    let bad_offset = cli(&broker, &["consume", "small", "--offset", "soon"], b"");
    assert_eq!(bad_offset.status.code(), Some(2), "a usage error");
    // An idle topic: --timeout-ms ends the consumer, with nothing printed.
    let started = Instant::now();
    let idle = cli(&broker, &["consume", "small", "--timeout-ms", "300"], b"");
    assert_eq!(ok(&idle), "");
    assert!(started.elapsed() < Duration::from_secs(10));
}
