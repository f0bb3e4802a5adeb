//! The Kafka admin apis against the real broker, driven by real clients:
//! confluent_kafka's AdminClient (librdkafka), kafka-python's
//! KafkaAdminClient and `kcat -L`. Each client runs as a small inline
//! python script that prints one JSON document; the test checks it.
//!
//! The clients come from scripts/install-kafka-clients.sh (scripts/test.sh
//! runs it); without them these tests fail, saying so.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use serde_json::Value;
use server_support::Broker;

/// Starts the broker with 2 shards and returns it with its Kafka address
/// (the `kafka=` field of its ready line).
fn start(dir: &tempfile::TempDir) -> (Broker, SocketAddr) {
    let broker = Broker::start(&dir.path().join("data"), 2, &["--fsync", "never"]);
    let kafka = broker.kafka.expect("kafka= in the ready line");
    (broker, kafka)
}

/// Fails the test unless the python clients are installed (CI installs
/// them).
fn require_python_clients() {
    let ok = Command::new("python3")
        .args(["-c", "import confluent_kafka, kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with confluent_kafka and kafka (kafka-python) is not installed: \
         run scripts/install-kafka-clients.sh"
    );
}

/// Runs `script` with BOOTSTRAP set to `kafka` and parses what it prints.
fn python(broker: &Broker, kafka: SocketAddr, script: &str) -> Value {
    python_with_log(broker, kafka, script).0
}

/// [`python`], and what the script wrote to stderr (librdkafka's debug log).
fn python_with_log(broker: &Broker, kafka: SocketAddr, script: &str) -> (Value, String) {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", script])
        .env("BOOTSTRAP", kafka.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\nbroker log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.stderr()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (value, String::from_utf8_lossy(&out.stderr).into_owned())
}

const CONFLUENT_ADMIN: &str = r#"
import json, os
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
a = AdminClient({'bootstrap.servers': os.environ['BOOTSTRAP']})
out = {}
def outcome(futures):
    r = {}
    for name, f in futures.items():
        try:
            f.result()
            r[name] = 'ok'
        except Exception as e:
            r[name] = [e.args[0].code(), e.args[0].str()]
    return r
out['validate'] = outcome(a.create_topics([NewTopic('ck-check', 2, 1)], validate_only=True))
out['create'] = outcome(a.create_topics([
    NewTopic('ck', 3, 1, config={'retention.ms': '60000', 'segment.bytes': '1048576',
                                 'cleanup.policy': 'delete'}),
    NewTopic('ck-rf3', 1, 3),
    NewTopic('ck-unknown', 1, 1, config={'flush.messages': '1'}),
    NewTopic('ck-compact', 1, 1, config={'cleanup.policy': 'compact'}),
    NewTopic('ck-zero', 0, 1),
    NewTopic('bad name', 1, 1),
]))
out['again'] = outcome(a.create_topics([NewTopic('ck', 3, 1)]))
md = a.list_topics(timeout=10)
out['listed'] = {t: len(m.partitions) for t, m in md.topics.items()}
described = {}
for res, f in a.describe_configs([ConfigResource('topic', 'ck'), ConfigResource('broker', '0')]).items():
    described[res.name] = {k: [v.value, int(v.source), v.is_read_only] for k, v in f.result().items()}
out['configs'] = described
try:
    a.describe_configs([ConfigResource('topic', 'nope')])[ConfigResource('topic', 'nope')].result()
    out['missing'] = 'ok'
except Exception as e:
    out['missing'] = e.args[0].code()
out['delete'] = outcome(a.delete_topics(['ck', 'nope'], operation_timeout=10))
out['after'] = sorted(a.list_topics(timeout=10).topics)
print(json.dumps(out))
"#;

#[test]
fn confluent_admin_creates_describes_lists_and_deletes_a_topic_with_configs() {
    require_python_clients();
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    let out = python(&broker, kafka, CONFLUENT_ADMIN);
    assert_eq!(out["validate"]["ck-check"], "ok", "{out}");
    let create = &out["create"];
    assert_eq!(create["ck"], "ok", "{out}");
    assert_eq!(create["ck-rf3"][0], 38, "{out}");
    assert!(
        create["ck-rf3"][1].as_str().unwrap().contains("one copy"),
        "{out}"
    );
    assert_eq!(create["ck-unknown"][0], 40, "{out}");
    assert!(
        create["ck-unknown"][1]
            .as_str()
            .unwrap()
            .contains("flush.messages"),
        "{out}"
    );
    assert_eq!(create["ck-compact"][0], 40, "{out}");
    assert!(
        create["ck-compact"][1]
            .as_str()
            .unwrap()
            .contains("compaction is not supported"),
        "{out}"
    );
    assert_eq!(create["ck-zero"][0], 37, "{out}");
    assert_eq!(create["bad name"][0], 17, "{out}");
    assert_eq!(out["again"]["ck"][0], 36, "{out}");
    // Only the created topic exists: validate_only created nothing.
    assert_eq!(out["listed"], serde_json::json!({"ck": 3}), "{out}");

    let topic = &out["configs"]["ck"];
    assert_eq!(
        topic["retention.ms"],
        serde_json::json!(["60000", 1, false])
    );
    assert_eq!(
        topic["segment.bytes"],
        serde_json::json!(["1048576", 1, false])
    );
    assert_eq!(topic["retention.bytes"][0], "-1");
    assert_eq!(topic["retention.bytes"][1], 5, "the broker's default");
    assert_eq!(
        topic["cleanup.policy"],
        serde_json::json!(["delete", 5, true])
    );
    assert_eq!(topic["message.timestamp.type"][0], "CreateTime");
    assert_eq!(topic["min.insync.replicas"][0], "1");
    assert_eq!(topic["max.message.bytes"][0], "8388608");
    let brokers = &out["configs"]["0"];
    assert_eq!(brokers["num.partitions"][0], "1", "{out}");
    assert_eq!(brokers["default.replication.factor"][0], "1");
    assert_eq!(brokers["auto.create.topics.enable"][0], "true");
    assert_eq!(brokers["message.max.bytes"][0], "8388608");
    assert_eq!(brokers["log.retention.ms"][0], "604800000");
    assert_eq!(out["missing"], 3, "UNKNOWN_TOPIC_OR_PARTITION: {out}");

    assert_eq!(out["delete"]["ck"], "ok", "{out}");
    assert_eq!(out["delete"]["nope"][0], 3, "{out}");
    assert_eq!(out["after"], serde_json::json!([]), "{out}");
}

const KAFKA_PYTHON_ADMIN: &str = r#"
import json, os
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
a = KafkaAdminClient(bootstrap_servers=os.environ['BOOTSTRAP'], request_timeout_ms=10000)
out = {}
r = a.create_topics([NewTopic('kp', 2, 1, topic_configs={'retention.bytes': '1000000'})],
                    validate_only=True)
out['validated'] = r['topics'][0]['error_code']
out['listed_after_validate'] = sorted(a.list_topics())
r = a.create_topics([NewTopic('kp', 2, 1, topic_configs={'retention.bytes': '1000000'})])
t = r['topics'][0]
out['created'] = [t['error_code'], t['num_partitions'], t['replication_factor'],
                  t['configs']['retention.bytes']['value']]
errors = {}
for name, bad in [('exists', NewTopic('kp', 1, 1)), ('rf', NewTopic('kp-rf', 1, 3)),
                  ('config', NewTopic('kp-c', 1, 1, topic_configs={'x.y': '1'}))]:
    try:
        a.create_topics([bad])
        errors[name] = 'ok'
    except Exception as e:
        errors[name] = type(e).__name__
out['errors'] = errors
c = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp')], config_filter='all')
out['configs'] = {k: v['value'] for k, v in c['topic']['kp'].items()}
c = a.describe_configs([ConfigResource(ConfigResourceType.BROKER, '0',
                                       configs=['num.partitions', 'no.such.config'])],
                       config_filter='all')
out['broker'] = {k: v['value'] for k, v in c['broker']['0'].items()}
out['listed'] = sorted(a.list_topics())
out['topics'] = {t['name']: len(t['partitions']) for t in a.describe_topics(['kp'])}
r = a.delete_topics(['kp'])
out['deleted'] = [t['error_code'] for t in r['topics']]
out['after'] = sorted(a.list_topics())
print(json.dumps(out))
"#;

#[test]
fn kafka_python_admin_creates_describes_lists_and_deletes_a_topic() {
    require_python_clients();
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    let out = python(&broker, kafka, KAFKA_PYTHON_ADMIN);
    assert_eq!(out["validated"], 0, "{out}");
    assert_eq!(out["listed_after_validate"], serde_json::json!([]), "{out}");
    assert_eq!(
        out["created"],
        serde_json::json!([0, 2, 1, "1000000"]),
        "{out}"
    );
    assert_eq!(
        out["errors"],
        serde_json::json!({
            "exists": "TopicAlreadyExistsError",
            "rf": "InvalidReplicationFactorError",
            "config": "InvalidConfigurationError",
        }),
        "{out}"
    );
    assert_eq!(out["configs"]["retention.bytes"], "1000000", "{out}");
    assert_eq!(out["configs"]["cleanup.policy"], "delete", "{out}");
    assert_eq!(out["configs"]["retention.ms"], "604800000", "{out}");
    assert_eq!(
        out["broker"],
        serde_json::json!({"num.partitions": "1"}),
        "{out}"
    );
    assert_eq!(out["listed"], serde_json::json!(["kp"]), "{out}");
    assert_eq!(out["topics"], serde_json::json!({"kp": 2}), "{out}");
    assert_eq!(out["deleted"], serde_json::json!([0]), "{out}");
    assert_eq!(out["after"], serde_json::json!([]), "{out}");
}

const CONFLUENT_VALIDATE_POSITION: &str = r#"
import json, os
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = os.environ['BOOTSTRAP']
admin = AdminClient({'bootstrap.servers': b})
admin.create_topics([NewTopic('epochs', 1, 1)])['epochs'].result()
p = Producer({'bootstrap.servers': b})
for i in range(10):
    p.produce('epochs', value=str(i).encode(), partition=0)
assert p.flush(10) == 0
# A seek to a position with a leader epoch makes librdkafka validate it
# with OffsetForLeaderEpoch before fetching (rd_kafka_toppar_op_seek);
# auto.offset.reset=error turns a wrong "truncation" or reset into an
# error instead of a silent seek.
c = Consumer({'bootstrap.servers': b, 'group.id': 'epoch-check', 'enable.auto.commit': False,
              'auto.offset.reset': 'error', 'debug': 'fetch'})
c.assign([TopicPartition('epochs', 0, 0)])
values, errors = [], []
for _ in range(100):
    m = c.poll(0.2)
    if m is not None:
        break
c.seek(TopicPartition('epochs', 0, 5, leader_epoch=0))
for _ in range(100):
    m = c.poll(0.2)
    if m is None:
        if len(values) >= 5:
            break
        continue
    if m.error():
        errors.append(str(m.error()))
        break
    values.append(m.value().decode())
c.close()
print(json.dumps({'values': values, 'errors': errors}))
"#;

#[test]
fn librdkafka_validates_a_position_with_a_leader_epoch_without_a_reset() {
    require_python_clients();
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    let (out, log) = python_with_log(&broker, kafka, CONFLUENT_VALIDATE_POSITION);
    assert_eq!(
        out,
        serde_json::json!({"values": ["5", "6", "7", "8", "9"], "errors": []}),
        "client log:\n{log}\nbroker log:\n{}",
        broker.stderr()
    );
    // The client did ask, and took the answer.
    assert!(
        log.contains(
            "offset and epoch validation succeeded: broker end offset 10 (offset leader epoch 0)"
        ),
        "{log}"
    );
}

#[test]
fn kcat_lists_a_topic_created_by_an_admin_client() {
    require_python_clients();
    assert!(
        Command::new("kcat").arg("-V").output().is_ok(),
        "kcat is not installed: run scripts/install-kafka-clients.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    python(
        &broker,
        kafka,
        r#"
import os
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({'bootstrap.servers': os.environ['BOOTSTRAP']})
admin.create_topics([NewTopic('listed', 4, 1)])['listed'].result()
print('{}')
"#,
    );
    let out = Command::new("timeout")
        .args(["30", "kcat", "-b", &kafka.to_string(), "-L", "-t", "listed"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 brokers:"), "{text}");
    assert!(
        text.contains("topic \"listed\" with 4 partitions:"),
        "{text}"
    );
}

/// DeleteTopics v6 by hand (no client sends topic ids to a broker whose
/// Metadata has none): an entry by id only is UNKNOWN_TOPIC_ID with its id
/// echoed, an entry by name is deleted.
const DELETE_BY_ID: &str = r#"
import json, os, socket, struct
from confluent_kafka.admin import AdminClient, NewTopic
b = os.environ['BOOTSTRAP']
admin = AdminClient({'bootstrap.servers': b})
admin.create_topics([NewTopic('by-name', 1, 1)])['by-name'].result()
host, port = b.rsplit(':', 1)
s = socket.create_connection((host, int(port)))
topic_id = bytes(range(1, 17))
body = bytes([3])                                  # 2 entries (compact)
body += bytes([0]) + topic_id + bytes([0])         # name null, id, tags
body += bytes([8]) + b'by-name' + bytes(16) + bytes([0])
body += struct.pack('>i', 5000) + bytes([0])       # timeout_ms, tags
header = struct.pack('>hhih', 20, 6, 42, 4) + b'test' + bytes([0])
req = header + body
s.sendall(struct.pack('>i', len(req)) + req)
def read(n):
    out = b''
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk
        out += chunk
    return out
resp = read(struct.unpack('>i', read(4))[0])
pos = 0
corr, = struct.unpack_from('>i', resp, pos); pos += 4
pos += 1                                           # header tags
pos += 4                                           # throttle_time_ms
n = resp[pos] - 1; pos += 1
entries = []
for _ in range(n):
    ln = resp[pos] - 1; pos += 1
    name = None if ln < 0 else resp[pos:pos + ln].decode(); pos += max(ln, 0)
    tid = resp[pos:pos + 16]; pos += 16
    code, = struct.unpack_from('>h', resp, pos); pos += 2
    ln = resp[pos] - 1; pos += 1
    msg = None if ln < 0 else resp[pos:pos + ln].decode(); pos += max(ln, 0)
    pos += 1
    entries.append([name, tid == topic_id, code, msg])
print(json.dumps({'corr': corr, 'entries': entries, 'left': sorted(admin.list_topics(timeout=10).topics)}))
"#;

#[test]
fn delete_topics_v6_refuses_an_id_only_entry_and_deletes_by_name() {
    require_python_clients();
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    let out = python(&broker, kafka, DELETE_BY_ID);
    assert_eq!(out["corr"], 42, "{out}");
    let entries = out["entries"].as_array().unwrap();
    assert_eq!(entries[0][0], Value::Null, "{out}");
    assert_eq!(entries[0][1], true, "the id is echoed: {out}");
    assert_eq!(entries[0][2], 100, "UNKNOWN_TOPIC_ID: {out}");
    assert!(
        entries[0][3].as_str().unwrap().contains("topic ids"),
        "{out}"
    );
    assert_eq!(
        entries[1],
        serde_json::json!(["by-name", false, 0, null]),
        "{out}"
    );
    assert_eq!(out["left"], serde_json::json!([]), "{out}");
}

const CONFLUENT_LOG_APPEND_TIME: &str = r#"
import json, os, time
from confluent_kafka import Producer, Consumer, TopicPartition, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import AdminClient, NewTopic
b = os.environ['BOOTSTRAP']
admin = AdminClient({'bootstrap.servers': b})
for f in admin.create_topics([
        NewTopic('stamped', 1, 1, config={'message.timestamp.type': 'LogAppendTime'}),
        NewTopic('created', 1, 1)]).values():
    f.result()
before = int(time.time() * 1000)
out = {}
# Plain and idempotent producers: both paths stamp the batch.
for idempotent in (False, True):
    p = Producer({'bootstrap.servers': b, 'enable.idempotence': idempotent, 'linger.ms': 5})
    reports = []
    for topic in ('stamped', 'created'):
        for i in range(5):
            p.produce(topic, value=f'{topic}-{idempotent}-{i}'.encode(), partition=0, timestamp=1000 + i,
                      on_delivery=lambda err, m: reports.append((m.topic(), m.timestamp()[0], str(err))))
    assert p.flush(10) == 0
    out[f'reports-{idempotent}'] = sorted(set(reports))
after = int(time.time() * 1000)
for topic in ('stamped', 'created'):
    c = Consumer({'bootstrap.servers': b, 'group.id': 'ts-' + topic, 'enable.auto.commit': False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    for _ in range(100):
        m = c.poll(0.2)
        if m is None:
            if len(got) >= 10:
                break
            continue
        assert m.error() is None, str(m.error())
        kind, ts = m.timestamp()
        got.append([m.value().decode(), kind, before <= ts <= after if kind == TIMESTAMP_LOG_APPEND_TIME else ts])
    c.close()
    out[topic] = got
out['kinds'] = [TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME]
print(json.dumps(out))
"#;

#[test]
fn log_append_time_topics_stamp_the_broker_clock_and_create_time_topics_keep_the_producers() {
    require_python_clients();
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start(&dir);
    let out = python(&broker, kafka, CONFLUENT_LOG_APPEND_TIME);
    let [create, append] = [out["kinds"][0].clone(), out["kinds"][1].clone()];
    for idempotent in ["False", "True"] {
        // librdkafka reports the broker's LogAppendTime from the produce answer.
        assert_eq!(
            out[format!("reports-{idempotent}")],
            serde_json::json!([["created", create, "None"], ["stamped", append, "None"]]),
            "{out}"
        );
    }
    let expect = |topic: &str, stamp: &dyn Fn(i64) -> Value, kind: &Value| {
        let rows: Vec<Value> = ["False", "True"]
            .iter()
            .flat_map(|idem| (0..5).map(move |i| (format!("{topic}-{idem}-{i}"), i)))
            .map(|(v, i)| serde_json::json!([v, kind, stamp(i)]))
            .collect();
        assert_eq!(out[topic], Value::Array(rows), "{out}");
    };
    // Stamped: the broker's clock (between the script's start and end), not 1000 + i.
    expect("stamped", &|_| Value::Bool(true), &append);
    expect("created", &|i| serde_json::json!(1000 + i), &create);
}
