//! The smoke run of the benchmark harness: the real broker (loadgen's own
//! `loadgen broker serve`, the broker's CLI linked in) on a temp dir, then
//! `loadgen produce`, `loadgen consume` and `loadgen compare` as a user runs
//! them. It checks the plumbing (counts, bytes, latency, broker CPU, the
//! verdict's exit codes), not the speed: the figures of a debug build on a
//! shared 2-core machine say nothing.

#![allow(clippy::unwrap_used)] // a test may unwrap: a failure is the test failing

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
const MESSAGES: u64 = 20_000;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(data: &Path) -> (Broker, String) {
    let (broker, line) = start_broker_line(data);
    let addr = ready_field(&line, "listen");
    (broker, addr)
}

/// Field `key` of the broker's ready line.
fn ready_field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the ready line {line:?}"))
        .to_owned()
}

fn start_broker_line(data: &Path) -> (Broker, String) {
    let mut child = Command::new(LOADGEN)
        .args([
            "broker",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .args(["--fsync", "never", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the broker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready "), "unexpected ready line {line:?}");
    (Broker(child), line)
}

fn loadgen(args: &[&str]) -> (i32, String) {
    let out = Command::new(LOADGEN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn produce_consume_compare_against_the_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start_broker(&dir.path().join("data"));
    let pid = broker.0.id().to_string();
    let produced = dir.path().join("produce.json");
    let consumed = dir.path().join("consume.json");
    let n = MESSAGES.to_string();

    let (code, out) = loadgen(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        "smoke",
        "--messages",
        &n,
        "--size",
        "200",
        "--batch",
        "50",
        "--partitions",
        "2",
        "--producers",
        "2",
        "--acks",
        "leader",
        "--broker-pid",
        &pid,
        "--out",
        produced.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let p = read_json(&produced);
    assert_eq!(p["system"], "broker");
    assert_eq!(p["messages"], MESSAGES);
    assert_eq!(p["bytes"], MESSAGES * 200);
    assert_eq!(p["parameters"]["batch"], 50);
    assert!(p["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(
        p["latency"]["samples"], MESSAGES,
        "every record's ack timed"
    );
    assert!(p["latency"]["p50_us"].as_f64().unwrap() <= p["latency"]["p99_us"].as_f64().unwrap());
    assert!(
        p["broker_cpu_s"].as_f64().unwrap() > 0.0,
        "the broker worked"
    );
    assert!(p["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!p["git_revision"].as_str().unwrap().is_empty());

    let (code, out) = loadgen(&[
        "consume",
        "--bootstrap",
        &addr,
        "--topic",
        "smoke",
        "--messages",
        &n,
        "--fetch-bytes",
        "204800",
        "--consumers",
        "2",
        "--broker-pid",
        &pid,
        "--out",
        consumed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let c = read_json(&consumed);
    assert_eq!(
        c["messages"], MESSAGES,
        "every produced message read back once"
    );
    assert_eq!(c["bytes"], MESSAGES * 200);

    // The committed baseline (a release build on this machine, see
    // bench-results/README.md) is read and compared figure by figure. The
    // threshold is wide open: this checks the plumbing (the committed
    // file's format, the table), not the speed of a debug build on a
    // loaded machine.
    let baseline = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench-results/baseline/broker-produce-batch50-durable.json"
    );
    let (code, out) = loadgen(&[
        "compare",
        baseline,
        produced.to_str().unwrap(),
        "--max-regression",
        "100000",
    ]);
    assert_eq!(code, 0, "{out}");
    for figure in ["msgs/s", "MB/s", "p99"] {
        assert!(out.contains(figure), "{figure} missing from\n{out}");
    }

    // The same run against itself passes; against a baseline 100x faster
    // with 10x lower latency it is a regression, exit code 1.
    let (code, out) = loadgen(&[
        "compare",
        produced.to_str().unwrap(),
        produced.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: ok"), "{out}");
    let mut fast = p.clone();
    fast["msgs_per_s"] = (p["msgs_per_s"].as_f64().unwrap() * 100.0).into();
    fast["latency"]["p99_us"] = (p["latency"]["p99_us"].as_f64().unwrap() / 10.0).into();
    let fast_path = dir.path().join("fast.json");
    std::fs::write(&fast_path, serde_json::to_string(&fast).unwrap()).unwrap();
    let (code, out) = loadgen(&[
        "compare",
        fast_path.to_str().unwrap(),
        produced.to_str().unwrap(),
        "--max-regression",
        "50",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("msgs/s") && out.contains("REGRESSED (fell)"),
        "{out}"
    );
    assert!(out.contains("REGRESSED (rose)"), "{out}");
    drop(broker);
}

/// The Kafka target against our broker's Kafka listener: produce over two
/// partitions from two threads with acks, consume it all back, and compare
/// the Kafka consume with a native one of the same records (systems
/// differ: a warning, not a failure).
#[test]
fn kafka_target_produces_and_consumes_through_the_kafka_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, line) = start_broker_line(&dir.path().join("data"));
    let native = ready_field(&line, "listen");
    let kafka = ready_field(&line, "kafka");
    let pid = broker.0.id().to_string();
    let n = MESSAGES.to_string();
    // Two partitions, made over the native protocol (the listener's
    // auto-creation would make one).
    let (code, out) = loadgen(&[
        "broker",
        "topic",
        "create",
        "ksmoke",
        "--partitions",
        "2",
        "--bootstrap",
        &native,
    ]);
    assert_eq!(code, 0, "{out}");

    let produced = dir.path().join("kafka-produce.json");
    let (code, out) = loadgen(&[
        "produce",
        "--protocol",
        "kafka",
        "--bootstrap",
        &kafka,
        "--topic",
        "ksmoke",
        "--messages",
        &n,
        "--size",
        "100",
        "--batch",
        "50",
        "--producers",
        "2",
        "--acks",
        "all",
        "--broker-pid",
        &pid,
        "--out",
        produced.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let p = read_json(&produced);
    assert_eq!(p["system"], "kafka");
    assert_eq!(p["parameters"]["protocol"], "kafka");
    assert_eq!(p["parameters"]["kafka_acks"], -1);
    assert_eq!(p["parameters"]["partitions"], 2);
    assert_eq!(p["messages"], MESSAGES);
    assert_eq!(p["bytes"], MESSAGES * 100);
    assert_eq!(
        p["latency"]["samples"], MESSAGES,
        "every record's ack timed"
    );
    assert!(p["broker_cpu_s"].as_f64().unwrap() > 0.0);

    let kafka_consumed = dir.path().join("kafka-consume.json");
    let (code, out) = loadgen(&[
        "consume",
        "--protocol",
        "kafka",
        "--bootstrap",
        &kafka,
        "--topic",
        "ksmoke",
        "--messages",
        &n,
        "--consumers",
        "2",
        "--fetch-bytes",
        "65536",
        "--out",
        kafka_consumed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let c = read_json(&kafka_consumed);
    assert_eq!(c["messages"], MESSAGES, "every record read back once");
    assert_eq!(c["bytes"], MESSAGES * 100);

    let native_consumed = dir.path().join("native-consume.json");
    let (code, out) = loadgen(&[
        "consume",
        "--bootstrap",
        &native,
        "--topic",
        "ksmoke",
        "--messages",
        &n,
        "--out",
        native_consumed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_json(&native_consumed)["messages"], MESSAGES);
    let (code, out) = loadgen(&[
        "compare",
        native_consumed.to_str().unwrap(),
        kafka_consumed.to_str().unwrap(),
        "--max-regression",
        "100000",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("systems differ"), "{out}");

    // acks none: the run ends on the end offsets, not on answers.
    let (code, out) = loadgen(&[
        "produce",
        "--protocol",
        "kafka",
        "--bootstrap",
        &kafka,
        "--topic",
        "ksmoke-auto",
        "--messages",
        "5000",
        "--batch",
        "1",
        "--acks",
        "none",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"messages\": 5000"), "{out}");
    drop(broker);
}
