//! The client library against the real `broker` binary (2 shards): records
//! produced with keys come back byte for byte from every partition, and so
//! do batches sent through partition handles (one delivery handle per call,
//! per-record futures on request), the metadata names the shard ports of
//! the ready line, long polls wake on new data, out-of-range reads carry the
//! valid range, offsets can be looked up and replayed, acks = none
//! delivers, a dead broker surfaces as an error, to every record of a
//! batch, and a partition of several segments read from disk after a
//! restart (the log's read-ahead serving sequential fetches) comes back
//! byte for byte in order, also when the reader resumes after another
//! restart.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use broker_client::{
    Acks, Client, ClientError, ConsumedRecord, Consumer, ConsumerConfig, ErrorCode, OffsetQuery,
    Producer, ProducerConfig, Record, StartOffset, TopicSettings,
};
use server_support::Broker;

/// A record's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// A record's key, value and explicit timestamp.
type Sent = (Option<Vec<u8>>, Vec<u8>, Option<i64>);

fn start() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);
    (dir, broker)
}

fn bootstrap(broker: &Broker) -> String {
    broker.listen.to_string()
}

fn consumer(broker: &Broker) -> Consumer {
    Consumer::connect(
        &bootstrap(broker),
        ConsumerConfig {
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    )
    .unwrap()
}

/// Polls until `n` records came or 20 s passed.
fn consume_n(c: &mut Consumer, n: usize) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(c.poll(Duration::from_millis(200)).unwrap());
    }
    got
}

/// A producer that retries twice, 10 ms apart, then fails the batch.
fn producer_that_gives_up_soon(broker: &Broker) -> Producer {
    Producer::connect(
        &bootstrap(broker),
        ProducerConfig {
            retries: 2,
            retry_backoff_ms: 10,
            ..ProducerConfig::default()
        },
    )
    .unwrap()
}

/// The errors of a producer whose broker is gone.
fn lost_the_broker(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Disconnected { .. }
    )
}

/// Deterministic bytes with every byte value, newlines and zeros included.
fn value(i: usize) -> Vec<u8> {
    (0..(i * 37) % 300)
        .map(|j| ((i * 131 + j * 7) % 256) as u8)
        .collect()
}

#[test]
fn keyed_records_come_back_byte_for_byte_from_every_partition() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    client
        .create_topic("events", 4, &TopicSettings::default())
        .unwrap();
    let producer = Producer::with_client(client.clone(), ProducerConfig::default()).unwrap();
    let n = 2_000;
    let sent: Vec<KeyValue> = (0..n)
        .map(|i| (format!("key-{}", i % 13).into_bytes(), value(i)))
        .collect();
    let futures: Vec<_> = sent
        .iter()
        .map(|(k, v)| producer.send("events", Some(k), v).unwrap())
        .collect();
    producer.flush();
    let mut by_position: HashMap<(u32, i64), &KeyValue> = HashMap::new();
    for (record, f) in sent.iter().zip(&futures) {
        let meta = f.try_result().unwrap().unwrap();
        assert_eq!(
            meta.partition,
            broker_client::partition_for_key(&record.0, 4)
        );
        let offset = meta.offset.unwrap();
        assert!(by_position
            .insert((meta.partition, offset), record)
            .is_none());
    }
    // Keys spread over all four partitions, hence both shards.
    let partitions: std::collections::HashSet<u32> = by_position.keys().map(|k| k.0).collect();
    assert_eq!(partitions.len(), 4);

    let mut c = consumer(&broker);
    c.assign_all("events", StartOffset::Earliest).unwrap();
    let got = consume_n(&mut c, n);
    assert_eq!(got.len(), n);
    let mut last: HashMap<u32, i64> = HashMap::new();
    for r in &got {
        let (key, val) = by_position[&(r.partition, r.offset)];
        assert_eq!(r.key.as_deref(), Some(&key[..]));
        assert_eq!(r.value.as_deref(), Some(&val[..]));
        let prev = last.insert(r.partition, r.offset);
        assert_eq!(prev.map_or(0, |p| p + 1), r.offset, "in order, no gap");
    }
    // Nothing more.
    assert!(c.poll(Duration::from_millis(300)).unwrap().is_empty());
}

#[test]
fn batches_sent_through_partition_handles_come_back_byte_for_byte() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    client
        .create_topic("handles", 4, &TopicSettings::default())
        .unwrap();
    let producer = Producer::with_client(client.clone(), ProducerConfig::default()).unwrap();
    // Every partition, hence both shards; a call of 500 records each, some
    // with keys, headers and their own timestamps.
    let handles: Vec<_> = (0..4)
        .map(|p| producer.partition_handle("handles", p).unwrap())
        .collect();
    let header_value = b"h\0v".to_vec();
    let mut sent: HashMap<u32, Vec<Sent>> = HashMap::new();
    let mut deliveries = Vec::new();
    for round in 0..3 {
        for h in &handles {
            let records: Vec<Sent> = (0..500)
                .map(|i| {
                    let n = round * 500 + i;
                    let key = (n % 3 == 0).then(|| format!("k{n}").into_bytes());
                    let ts = (n % 5 == 0).then_some(1_600_000_000_000 + n as i64);
                    (key, value(n + h.partition() as usize), ts)
                })
                .collect();
            let headers = [(&b"trace"[..], Some(&header_value[..]))];
            let delivery = producer
                .send_batch(
                    h,
                    records.iter().map(|(k, v, ts)| Record {
                        key: k.as_deref(),
                        value: Some(v),
                        headers: if k.is_some() { &headers[..] } else { &[] },
                        timestamp: *ts,
                    }),
                )
                .unwrap();
            assert_eq!(delivery.len(), 500);
            sent.entry(h.partition()).or_default().extend(records);
            deliveries.push(delivery);
        }
    }
    for d in &deliveries {
        let meta = d.wait().unwrap();
        assert_eq!(meta.records, 500);
        let (first, last) = (meta.first_offset.unwrap(), meta.last_offset.unwrap());
        // One producer per partition: the records of a call are consecutive.
        assert_eq!(last - first, 499);
        assert_eq!(d.record(7).unwrap().wait().unwrap().offset, Some(first + 7));
    }
    let mut c = consumer(&broker);
    c.assign_all("handles", StartOffset::Earliest).unwrap();
    let got = consume_n(&mut c, 4 * 1500);
    assert_eq!(got.len(), 4 * 1500);
    let mut next: HashMap<u32, usize> = HashMap::new();
    for r in &got {
        let i = next.entry(r.partition).or_insert(0);
        let (key, val, ts) = &sent[&r.partition][*i];
        assert_eq!(r.offset, *i as i64, "in order, no gap");
        assert_eq!(r.key.as_deref(), key.as_deref());
        assert_eq!(r.value.as_deref(), Some(&val[..]));
        if let Some(ts) = ts {
            assert_eq!(r.timestamp, *ts);
        }
        let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.as_ref().map(|v| v.to_vec())))
            .collect();
        if key.is_some() {
            assert_eq!(
                headers,
                vec![(b"trace".to_vec(), Some(header_value.clone()))]
            );
        } else {
            assert!(headers.is_empty());
        }
        *i += 1;
    }
    assert!(c.poll(Duration::from_millis(300)).unwrap().is_empty());
}

#[test]
fn a_batch_that_fails_reaches_every_record_of_the_call() {
    let (_dir, broker) = start();
    let producer = producer_that_gives_up_soon(&broker);
    producer
        .client()
        .create_topic("dead-batch", 2, &TopicSettings::default())
        .unwrap();
    let handle = producer.partition_handle("dead-batch", 1).unwrap();
    producer
        .send_batch(&handle, [Record::value(b"before")])
        .unwrap()
        .wait()
        .unwrap();
    broker.kill();
    let delivery = producer
        .send_batch(&handle, (0..100).map(|_| Record::value(b"after")))
        .unwrap();
    let e = delivery
        .wait_timeout(Duration::from_secs(20))
        .expect("resolved")
        .unwrap_err();
    assert!(lost_the_broker(&e), "{e:?}");
    for i in 0..100 {
        let e = delivery
            .record(i)
            .unwrap()
            .try_result()
            .unwrap()
            .unwrap_err();
        assert!(lost_the_broker(&e), "record {i}: {e:?}");
    }
}

#[test]
fn metadata_names_the_shard_ports_of_the_ready_line() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    let created = client
        .create_topic("placed", 6, &TopicSettings::default())
        .unwrap();
    assert_eq!(created.partitions, 6);
    let info = client.describe_topic("placed").unwrap();
    assert_eq!(info.partitions.len(), 6);
    let mut shards_used = std::collections::HashSet::new();
    for p in &info.partitions {
        assert_eq!(p.address, broker.shards[p.shard as usize].to_string());
        shards_used.insert(p.shard);
    }
    assert_eq!(shards_used.len(), 2, "partitions on both shards");
    let listed = client.list_topics().unwrap();
    assert!(listed
        .iter()
        .any(|t| t.name == "placed" && t.partitions == 6));
}

#[test]
fn a_long_poll_wakes_when_data_arrives_and_ends_empty_after_its_wait() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    client
        .create_topic("lp", 1, &TopicSettings::default())
        .unwrap();
    let mut c = Consumer::connect(
        &bootstrap(&broker),
        ConsumerConfig {
            fetch_max_wait_ms: 10_000,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    c.assign("lp", 0, StartOffset::Latest).unwrap();
    let started = Instant::now();
    assert!(c.poll(Duration::from_millis(300)).unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));

    let bootstrap = bootstrap(&broker);
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let p = Producer::connect(&bootstrap, ProducerConfig::default()).unwrap();
        p.send("lp", None, b"wake up").unwrap().wait().unwrap()
    });
    let started = Instant::now();
    let got = consume_n(&mut c, 1);
    let waited = started.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"wake up"[..]));
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert_eq!(writer.join().unwrap().offset, Some(0));
}

#[test]
fn an_out_of_range_offset_reports_the_valid_range_and_can_be_reset() {
    let (_dir, broker) = start();
    let producer = Producer::connect(&bootstrap(&broker), ProducerConfig::default()).unwrap();
    producer
        .client()
        .create_topic("oor", 1, &TopicSettings::default())
        .unwrap();
    for i in 0..3 {
        producer
            .send("oor", None, format!("r{i}").as_bytes())
            .unwrap();
    }
    producer.flush();
    let mut c = consumer(&broker);
    c.assign("oor", 0, StartOffset::Offset(100)).unwrap();
    let e = c.poll(Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange), "{e}");
    assert_eq!(e.offset_range(), Some((0, 3)));
    c.seek("oor", 0, 1).unwrap();
    let got = consume_n(&mut c, 2);
    let values: Vec<_> = got.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, [b"r1".to_vec(), b"r2".to_vec()]);
}

#[test]
fn offsets_can_be_listed_and_a_partition_replayed_from_any_of_them() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    client
        .create_topic("replay", 2, &TopicSettings::default())
        .unwrap();
    let producer = Producer::with_client(client.clone(), ProducerConfig::default()).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..10 {
        let f = producer
            .send_to("replay", 1, None, format!("m{i}").as_bytes())
            .unwrap();
        assert_eq!(f.wait().unwrap().offset, Some(i));
    }
    let earliest = client
        .list_offsets("replay", 1, OffsetQuery::Earliest)
        .unwrap();
    let latest = client
        .list_offsets("replay", 1, OffsetQuery::Latest)
        .unwrap();
    assert_eq!((earliest.offset, latest.offset), (0, 10));
    let by_time = client
        .list_offsets("replay", 1, OffsetQuery::Timestamp(before))
        .unwrap();
    assert_eq!(by_time.offset, 0);
    let future = client
        .list_offsets("replay", 1, OffsetQuery::Timestamp(i64::MAX / 2))
        .unwrap();
    assert_eq!(future.offset, 10, "no record that late: the high watermark");

    let mut c = consumer(&broker);
    c.assign("replay", 1, StartOffset::Offset(4)).unwrap();
    let got = consume_n(&mut c, 6);
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|r| r.timestamp >= before));
    c.seek_to("replay", 1, StartOffset::Earliest).unwrap();
    assert_eq!(c.position("replay", 1), Some(0));
    let again = consume_n(&mut c, 10);
    assert_eq!(again[0].value.as_deref(), Some(&b"m0"[..]));
    assert_eq!(again.len(), 10);
}

#[test]
fn acks_none_records_are_delivered_without_offsets() {
    let (_dir, broker) = start();
    let producer = Producer::connect(
        &bootstrap(&broker),
        ProducerConfig {
            acks: Acks::None,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    producer
        .client()
        .create_topic("fire", 1, &TopicSettings::default())
        .unwrap();
    let futures: Vec<_> = (0..100)
        .map(|i| {
            producer
                .send("fire", None, format!("f{i}").as_bytes())
                .unwrap()
        })
        .collect();
    producer.flush();
    for f in &futures {
        assert_eq!(f.try_result().unwrap().unwrap().offset, None);
    }
    let mut c = consumer(&broker);
    c.assign("fire", 0, StartOffset::Earliest).unwrap();
    let got = consume_n(&mut c, 100);
    let values: Vec<_> = got.iter().map(|r| r.value.clone().unwrap()).collect();
    let expected: Vec<_> = (0..100).map(|i| format!("f{i}").into_bytes()).collect();
    assert_eq!(values, expected);
}

#[test]
fn topics_are_created_refused_twice_and_deleted() {
    let (_dir, broker) = start();
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    let settings = TopicSettings {
        retention_ms: 60_000,
        segment_bytes: 1 << 20,
        ..TopicSettings::default()
    };
    let created = client.create_topic("t1", 3, &settings).unwrap();
    assert_eq!(created.settings.retention_ms, 60_000);
    assert_eq!(created.settings.segment_bytes, 1 << 20);
    let again = client.create_topic("t1", 3, &settings).unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::TopicExists));
    client.delete_topic("t1").unwrap();
    let gone = client.describe_topic("t1").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UnknownTopic));
    assert!(client.list_topics().unwrap().iter().all(|t| t.name != "t1"));
}

#[test]
fn a_dead_broker_surfaces_as_an_error() {
    let (_dir, broker) = start();
    let producer = producer_that_gives_up_soon(&broker);
    producer
        .client()
        .create_topic("dead", 1, &TopicSettings::default())
        .unwrap();
    producer
        .send("dead", None, b"before")
        .unwrap()
        .wait()
        .unwrap();
    broker.kill();
    let f = producer.send("dead", None, b"after").unwrap();
    let e = f
        .wait_timeout(Duration::from_secs(20))
        .expect("resolved")
        .unwrap_err();
    assert!(lost_the_broker(&e), "{e:?}");
    assert!(e.is_retriable());
}

/// Reads at least `n` records of `topic`/0 from `from` with fetches of
/// `fetch_bytes` and checks each against `sent` (value by offset): in
/// order, no gap, none past what was sent.
fn read_back(
    broker: &Broker,
    topic: &str,
    from: usize,
    n: usize,
    fetch_bytes: u32,
    sent: &[Vec<u8>],
) {
    let mut c = Consumer::connect(
        &bootstrap(broker),
        ConsumerConfig {
            fetch_max_bytes: fetch_bytes,
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    c.assign(topic, 0, StartOffset::Offset(from as i64))
        .unwrap();
    // A poll may bring more than `n`: those must be right too.
    let got = consume_n(&mut c, n);
    assert!(
        got.len() >= n,
        "fetch {fetch_bytes} from {from}: {} records",
        got.len()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, (from + i) as i64, "in order, no gap");
        assert_eq!(
            r.value.as_deref(),
            Some(&sent[from + i][..]),
            "offset {}",
            r.offset
        );
    }
}

#[test]
fn a_partition_read_from_disk_comes_back_byte_for_byte_across_segment_rolls_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 1, &[]);
    let client = Client::connect(&bootstrap(&broker)).unwrap();
    let settings = TopicSettings {
        segment_bytes: 1 << 20,
        ..TopicSettings::default()
    };
    client.create_topic("rolls", 1, &settings).unwrap();
    // Several produce requests in flight on one connection (the default):
    // they must land in order across the rolls too (they did not: an
    // append waiting out a roll could be overtaken by a newer one).
    let producer = Producer::with_client(client, ProducerConfig::default()).unwrap();
    let handle = producer.partition_handle("rolls", 0).unwrap();
    // About 6 MB: six segments of 1 MiB.
    let sent: Vec<Vec<u8>> = (0..40_000).map(|i| value(i + 1)).collect();
    for chunk in sent.chunks(1_000) {
        producer
            .send_batch(&handle, chunk.iter().map(|v| Record::value(v)))
            .unwrap();
    }
    producer.flush();
    producer.close();
    let segments = std::fs::read_dir(data.join("topics/rolls/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
        .count();
    assert!(
        segments >= 5,
        "the data spans several segments ({segments})"
    );
    // After a restart nothing is in the broker's tail cache: every fetch is
    // a disk read (or its read-ahead), small ones and ones of 1 MiB.
    broker.terminate();
    let mut broker = Broker::start(&data, 1, &[]);
    for fetch_bytes in [16 << 10, 1 << 20] {
        read_back(&broker, "rolls", 0, sent.len(), fetch_bytes, &sent);
    }
    // A reader that stopped half-way goes on after another restart.
    read_back(&broker, "rolls", 0, 17_000, 64 << 10, &sent);
    broker.terminate();
    let broker = Broker::start(&data, 1, &[]);
    read_back(
        &broker,
        "rolls",
        17_000,
        sent.len() - 17_000,
        64 << 10,
        &sent,
    );
}
