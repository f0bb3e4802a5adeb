//! The client against fake brokers: std TcpListener threads that decode
//! requests with the protocol codec and answer with FrameWriter frames, out
//! of order, wrongly or not at all, to check what the client does then.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use super::*;
use broker_format::{self as batch, BatchBuilder};
use broker_protocol::{
    decode_frame, limits::DEFAULT_MAX_FRAME_BYTES, Body, ErrorCode, FetchPosition, FrameError,
    FrameWriter, ResponseError, ShardAddress, TopicDescription,
};

/// Reads one whole frame; `None` once the peer closed.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len < 1 << 20, "test requests are small");
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// A listener whose first connection `serve` handles on its own thread.
fn fake(serve: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve(stream);
    });
    addr
}

fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn list_offsets_frame(w: &mut FrameWriter, out: &mut Vec<u8>, id: u64, partition: u32) {
    w.list_offsets_request(out, id, "t", partition, OffsetQuery::Latest)
        .unwrap();
}

/// Sends a ListOffsets for `partition` whose outcome goes to `tx`.
fn send_list_offsets(
    conn: &Connection,
    partition: u32,
    timeout: Duration,
    tx: &crossbeam_channel::Sender<(u32, ClientResult<i64>)>,
) {
    let tx = tx.clone();
    conn.request(
        timeout,
        |w, out, id| {
            list_offsets_frame(w, out, id, partition);
            Ok(broker_protocol::decode_prefix(out, usize::MAX)
                .unwrap()
                .unwrap())
        },
        &[],
        Box::new(move |r: ClientResult<Response>| {
            let r = r.and_then(|r| {
                let f = r.decode::<broker_protocol::generated::ListOffsetsResponse>()?;
                Ok(f.body.offset())
            });
            tx.send((partition, r)).unwrap();
        }),
    );
}

#[test]
fn pipelined_answers_out_of_order_reach_their_own_callers() {
    let addr = fake(|mut s| {
        let mut w = FrameWriter::new();
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(read_frame(&mut s).unwrap());
        }
        // Answer the last first: each answer carries its partition * 100.
        let mut out = Vec::new();
        for frame in requests.iter().rev() {
            let f = decode_frame(frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
            let Body::ListOffsetsRequest(r) = f.body else {
                panic!("expected ListOffsets, got {}", f.body.name());
            };
            let offset = i64::from(r.partition()) * 100;
            w.list_offsets_response(&mut out, f.header.request_id(), offset, 0, offset)
                .unwrap();
        }
        s.write_all(&out).unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let conn = Connection::connect(&addr, &config()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    for p in [1, 2, 3] {
        send_list_offsets(&conn, p, Duration::from_secs(5), &tx);
    }
    let mut got: Vec<(u32, i64)> = (0..3)
        .map(|_| {
            let (p, r) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            (p, r.unwrap())
        })
        .collect();
    // They came back in reverse order.
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [3, 2, 1]);
    got.sort();
    assert_eq!(got, [(1, 100), (2, 200), (3, 300)]);
    assert!(conn.is_alive());
}

#[test]
fn a_dropped_connection_fails_every_pending_request_and_later_ones() {
    let addr = fake(|mut s| {
        read_frame(&mut s).unwrap();
        read_frame(&mut s).unwrap();
        // Dropped without an answer.
    });
    let conn = Connection::connect(&addr, &config()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    send_list_offsets(&conn, 0, Duration::from_secs(5), &tx);
    send_list_offsets(&conn, 1, Duration::from_secs(5), &tx);
    for _ in 0..2 {
        let (_, r) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(r, Err(ClientError::Disconnected { .. })), "{r:?}");
    }
    assert!(!conn.is_alive());
    let started = Instant::now();
    send_list_offsets(&conn, 2, Duration::from_secs(5), &tx);
    let (_, r) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(matches!(r, Err(ClientError::Disconnected { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn an_oversized_frame_claim_is_refused_before_allocation() {
    let addr = fake(|mut s| {
        read_frame(&mut s).unwrap();
        // Claims 2 GiB, then sends a little and waits.
        s.write_all(&0x7fff_fff0u32.to_be_bytes()).unwrap();
        s.write_all(&[1, 1, 0, 12]).unwrap();
        thread::sleep(Duration::from_secs(2));
    });
    let small = ClientConfig {
        max_frame_bytes: 1 << 20,
        ..config()
    };
    let conn = Connection::connect(&addr, &small).unwrap();
    let started = Instant::now();
    let r = conn.call(
        Duration::from_secs(5),
        |w, out, id| w.list_topics_request(out, id),
        &[],
    );
    match r {
        Err(ClientError::Protocol {
            error: FrameError::TooLarge { frame_bytes, .. },
            ..
        }) => assert_eq!(frame_bytes, 0x7fff_fff0 + 4),
        other => panic!("expected a frame-too-large error, got {other:?}"),
    }
    // Refused on the length alone, not after waiting for the frame.
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!conn.is_alive());
}

#[test]
fn an_unanswered_request_times_out_and_closes_the_connection() {
    let addr = fake(|mut s| while read_frame(&mut s).is_some() {});
    let conn = Connection::connect(&addr, &config()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    send_list_offsets(&conn, 0, Duration::from_secs(30), &tx);
    send_list_offsets(&conn, 1, Duration::from_millis(200), &tx);
    let mut outcomes: HashMap<u32, ClientResult<i64>> = HashMap::new();
    for _ in 0..2 {
        let (p, r) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        outcomes.insert(p, r);
    }
    assert!(
        matches!(outcomes[&1], Err(ClientError::TimedOut { after, .. }) if after >= Duration::from_millis(200)),
        "{:?}",
        outcomes[&1]
    );
    assert!(
        matches!(outcomes[&0], Err(ClientError::Disconnected { .. })),
        "{:?}",
        outcomes[&0]
    );
    assert!(!conn.is_alive());
}

#[test]
fn an_answer_to_no_request_closes_the_connection() {
    let addr = fake(|mut s| {
        let frame = read_frame(&mut s).unwrap();
        let id = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES)
            .unwrap()
            .header
            .request_id();
        let mut out = Vec::new();
        FrameWriter::new()
            .list_topics_response(&mut out, id + 1000, &[])
            .unwrap();
        s.write_all(&out).unwrap();
        thread::sleep(Duration::from_secs(1));
    });
    let conn = Connection::connect(&addr, &config()).unwrap();
    let r = conn.call(
        Duration::from_secs(5),
        |w, out, id| w.list_topics_request(out, id),
        &[],
    );
    assert!(matches!(r, Err(ClientError::Disconnected { .. })), "{r:?}");
    assert!(!conn.is_alive());
}

#[test]
fn broker_errors_become_typed_errors_with_the_offset_range() {
    let addr = fake(|mut s| {
        let frame = read_frame(&mut s).unwrap();
        let f = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let mut out = Vec::new();
        FrameWriter::new()
            .error_response(
                &mut out,
                f.header.api_key(),
                f.header.request_id(),
                &ResponseError::offset_out_of_range("offset 99 is past the end", 5, 10),
            )
            .unwrap();
        s.write_all(&out).unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let conn = Connection::connect(&addr, &config()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    send_list_offsets(&conn, 0, Duration::from_secs(5), &tx);
    let (_, r) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange));
    assert_eq!(e.offset_range(), Some((5, 10)));
    assert!(e.to_string().contains("offset 99 is past the end"), "{e}");
    // A broker error leaves the connection usable.
    assert!(conn.is_alive());
}

/// A small in-memory broker: one topic "t" on shard 0, whose address is the
/// fake's own; produce appends batches, fetch returns whole batches from the
/// one holding the offset.
#[derive(Default)]
struct FakeLog {
    partitions: u32,
    /// Per partition: (base offset, batch bytes with the offset set).
    batches: HashMap<u32, Vec<(i64, Vec<u8>)>>,
    produce_requests: usize,
    metadata_requests: usize,
    fetch_requests: usize,
    /// Produce requests still to be answered NotOwner.
    not_owner: usize,
    /// Flip a byte of every fetched batch.
    corrupt_fetches: bool,
}

impl FakeLog {
    fn end(&self, partition: u32) -> i64 {
        self.batches
            .get(&partition)
            .and_then(|b| b.last())
            .map_or(0, |(_, bytes)| {
                batch::BatchHeader::parse(bytes).unwrap().next_offset()
            })
    }

    fn append(&mut self, partition: u32, payload: &[u8]) -> (i64, i64) {
        let base = self.end(partition);
        let mut next = base;
        for item in batch::batches(payload) {
            let (header, bytes) = item.unwrap();
            batch::validate(bytes).unwrap();
            let mut bytes = bytes.to_vec();
            batch::set_base_offset(&mut bytes, next);
            next += i64::from(header.record_count());
            self.batches
                .entry(partition)
                .or_default()
                .push((next - i64::from(header.record_count()), bytes));
        }
        (base, next - 1)
    }
}

fn fake_broker(log: Arc<Mutex<FakeLog>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = Arc::clone(&log);
            thread::spawn(move || serve_fake(stream, &log, addr.port()));
        }
    });
    addr.to_string()
}

fn serve_fake(mut s: TcpStream, log: &Mutex<FakeLog>, port: u16) {
    let mut w = FrameWriter::new();
    while let Some(frame) = read_frame(&mut s) {
        let f = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let id = f.header.request_id();
        let mut out = Vec::new();
        let mut payload = Vec::new();
        let mut log = log.lock().unwrap();
        match f.body {
            Body::MetadataRequest(_) => {
                log.metadata_requests += 1;
                let shards = vec![0u16; log.partitions as usize];
                w.metadata_response(
                    &mut out,
                    id,
                    &[ShardAddress {
                        host: "127.0.0.1",
                        port,
                    }],
                    &[TopicDescription {
                        name: "t",
                        error: None,
                        config: TopicSettings::default(),
                        partition_shards: &shards,
                    }],
                )
                .unwrap();
            }
            Body::ProduceRequest(r) => {
                log.produce_requests += 1;
                if log.not_owner > 0 {
                    log.not_owner -= 1;
                    w.error_response(
                        &mut out,
                        f.header.api_key(),
                        id,
                        &ResponseError::new(ErrorCode::NotOwner, "moved"),
                    )
                    .unwrap();
                } else {
                    let (base, last) = log.append(r.partition(), f.payload);
                    w.produce_response(&mut out, id, base, last).unwrap();
                }
            }
            Body::ListOffsetsRequest(r) => {
                let end = log.end(r.partition());
                let offset = match OffsetQuery::from_request(&r).unwrap() {
                    OffsetQuery::Earliest => 0,
                    _ => end,
                };
                w.list_offsets_response(&mut out, id, offset, 0, end)
                    .unwrap();
            }
            Body::FetchRequest(r) => {
                log.fetch_requests += 1;
                let end = log.end(r.partition());
                if r.offset() > end {
                    w.error_response(
                        &mut out,
                        f.header.api_key(),
                        id,
                        &ResponseError::offset_out_of_range("past the end", 0, end),
                    )
                    .unwrap();
                } else {
                    for (_, bytes) in log.batches.get(&r.partition()).into_iter().flatten() {
                        let next = batch::BatchHeader::parse(bytes).unwrap().next_offset();
                        if next > r.offset() && payload.len() < r.max_bytes() as usize {
                            payload.extend_from_slice(bytes);
                        }
                    }
                    if log.corrupt_fetches && !payload.is_empty() {
                        let last = payload.len() - 1;
                        payload[last] ^= 0xff;
                    }
                    let position = FetchPosition {
                        high_watermark: end,
                        log_start_offset: 0,
                        next_offset: end,
                    };
                    w.fetch_response(&mut out, id, &position, payload.len())
                        .unwrap();
                }
            }
            other => panic!("the fake broker does not serve {}", other.name()),
        }
        drop(log);
        out.extend_from_slice(&payload);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn fake_log(partitions: u32) -> Arc<Mutex<FakeLog>> {
    Arc::new(Mutex::new(FakeLog {
        partitions,
        ..FakeLog::default()
    }))
}

/// A producer of the fake at `addr` with `settings` and the tests'
/// connection settings.
fn fake_producer(addr: &str, settings: ProducerConfig) -> Producer {
    Producer::connect(
        addr,
        ProducerConfig {
            client: config(),
            ..settings
        },
    )
    .unwrap()
}

/// A producer of the fake at `addr` whose batches wait 50 ms for more.
fn lingering_producer(addr: &str) -> Producer {
    fake_producer(
        addr,
        ProducerConfig {
            linger_ms: 50,
            ..ProducerConfig::default()
        },
    )
}

#[test]
fn producer_batches_per_partition_and_resolves_each_record_to_its_offset() {
    let log = fake_log(3);
    let addr = fake_broker(Arc::clone(&log));
    let producer = lingering_producer(&addr);
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("key-{}", i % 7).into_bytes(),
                format!("value {i}").into_bytes(),
            )
        })
        .collect();
    let futures: Vec<_> = records
        .iter()
        .map(|(k, v)| producer.send("t", Some(k), v).unwrap())
        .collect();
    producer.flush();
    let mut next_per_partition: HashMap<u32, i64> = HashMap::new();
    for ((key, _), f) in records.iter().zip(&futures) {
        let meta = f.try_result().expect("flush resolved it").unwrap();
        assert_eq!(meta.partition, partition_for_key(key, 3));
        let next = next_per_partition.entry(meta.partition).or_insert(0);
        assert_eq!(meta.offset, Some(*next), "offsets follow send order");
        *next += 1;
    }
    let log = log.lock().unwrap();
    // Batched: one request per partition, not one per record.
    assert!(
        log.produce_requests <= 3,
        "{} requests",
        log.produce_requests
    );
    // The fake's log holds exactly what was sent, per partition in order.
    for (partition, batches) in &log.batches {
        let stored: Vec<(Vec<u8>, Vec<u8>)> = batches
            .iter()
            .flat_map(|(_, bytes)| {
                batch::records(bytes)
                    .unwrap()
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key.unwrap().to_vec(), r.value.unwrap().to_vec())
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let sent: Vec<(Vec<u8>, Vec<u8>)> = records
            .iter()
            .filter(|(k, _)| partition_for_key(k, 3) == *partition)
            .cloned()
            .collect();
        assert_eq!(stored, sent);
    }
}

#[test]
fn producer_refreshes_metadata_and_retries_after_not_owner() {
    let log = fake_log(1);
    log.lock().unwrap().not_owner = 2;
    let addr = fake_broker(Arc::clone(&log));
    let producer = Producer::connect(
        &addr,
        ProducerConfig {
            linger_ms: 0,
            retry_backoff_ms: 10,
            client: config(),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let f = producer.send("t", None, b"hello").unwrap();
    let meta = f.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(
        meta,
        RecordMetadata {
            partition: 0,
            offset: Some(0)
        }
    );
    let log = log.lock().unwrap();
    assert_eq!(log.produce_requests, 3);
    // The first lookup, then one refresh per NotOwner.
    assert_eq!(log.metadata_requests, 3);
}

#[test]
fn producer_gives_up_after_its_retries() {
    let log = fake_log(1);
    log.lock().unwrap().not_owner = 100;
    let addr = fake_broker(Arc::clone(&log));
    let producer = Producer::connect(
        &addr,
        ProducerConfig {
            linger_ms: 0,
            retries: 2,
            retry_backoff_ms: 1,
            client: config(),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let f = producer.send_to("t", 0, None, b"x").unwrap();
    producer.flush();
    let e = f.try_result().unwrap().unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotOwner));
    assert_eq!(log.lock().unwrap().produce_requests, 3);
    assert!(matches!(
        producer.send_to("t", 5, None, b"x"),
        Err(ClientError::UnknownPartition {
            partition: 5,
            partitions: 1,
            ..
        })
    ));
}

#[test]
fn send_batch_puts_a_call_in_one_batch_and_resolves_it_through_one_handle() {
    let log = fake_log(2);
    let addr = fake_broker(Arc::clone(&log));
    let producer = lingering_producer(&addr);
    let handle = producer.partition_handle("t", 1).unwrap();
    assert_eq!((handle.topic(), handle.partition()), ("t", 1));
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("v{i}").into_bytes()).collect();
    let delivery = producer
        .send_batch(&handle, values.iter().map(|v| Record::value(v)))
        .unwrap();
    assert_eq!(delivery.len(), 100);
    let second = producer
        .send_batch(&handle, [Record::value(b"last")])
        .unwrap();
    let meta = delivery
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(
        meta,
        BatchMetadata {
            partition: 1,
            records: 100,
            first_offset: Some(0),
            last_offset: Some(99),
        }
    );
    assert_eq!(second.wait().unwrap().first_offset, Some(100));
    // Per-record futures on request, each with its own offset.
    for i in [0, 57, 99] {
        let f = delivery.record(i).unwrap();
        assert_eq!(
            f.wait().unwrap(),
            RecordMetadata {
                partition: 1,
                offset: Some(i as i64)
            }
        );
    }
    assert!(delivery.record(100).is_none());
    let log = log.lock().unwrap();
    // Both calls shared the partition's one open batch (linger 50 ms).
    assert_eq!(log.produce_requests, 1);
    let stored: Vec<Vec<u8>> = log.batches[&1]
        .iter()
        .flat_map(|(_, bytes)| {
            batch::records(bytes)
                .unwrap()
                .map(|r| r.unwrap().value.unwrap().to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expected = values.clone();
    expected.push(b"last".to_vec());
    assert_eq!(stored, expected);
    assert!(!log.batches.contains_key(&0));
}

#[test]
fn a_call_larger_than_a_batch_spans_batches_under_one_handle() {
    let log = fake_log(1);
    let addr = fake_broker(Arc::clone(&log));
    let producer = fake_producer(
        &addr,
        ProducerConfig {
            linger_ms: 0,
            batch_bytes_max: 1_000,
            ..ProducerConfig::default()
        },
    );
    let handle = producer.partition_handle("t", 0).unwrap();
    let value = [7u8; 100];
    let delivery = producer
        .send_batch(&handle, std::iter::repeat_n(Record::value(&value), 50))
        .unwrap();
    let meta = delivery
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!((meta.first_offset, meta.last_offset), (Some(0), Some(49)));
    for i in 0..50 {
        let offset = delivery.record(i).unwrap().wait().unwrap().offset;
        assert_eq!(offset, Some(i as i64));
    }
    assert!(log.lock().unwrap().batches[&0].len() > 1, "several batches");
}

#[test]
fn a_failed_batch_reaches_the_handle_and_every_record_of_the_call() {
    let log = fake_log(1);
    log.lock().unwrap().not_owner = 100;
    let addr = fake_broker(Arc::clone(&log));
    let producer = fake_producer(
        &addr,
        ProducerConfig {
            linger_ms: 0,
            retries: 1,
            retry_backoff_ms: 1,
            ..ProducerConfig::default()
        },
    );
    let handle = producer.partition_handle("t", 0).unwrap();
    let delivery = producer
        .send_batch(&handle, (0..20).map(|_| Record::value(b"x")))
        .unwrap();
    let e = delivery
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotOwner));
    for i in 0..20 {
        let e = delivery.record(i).unwrap().wait().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotOwner), "record {i}");
    }
    assert_eq!(log.lock().unwrap().produce_requests, 2);
}

#[test]
fn a_partition_handle_works_with_its_own_producer_only() {
    let log = fake_log(1);
    let addr = fake_broker(Arc::clone(&log));
    let config = ProducerConfig {
        client: config(),
        ..ProducerConfig::default()
    };
    let a = Producer::connect(&addr, config.clone()).unwrap();
    let b = Producer::connect(&addr, config).unwrap();
    let handle = a.partition_handle("t", 0).unwrap();
    assert!(matches!(
        b.send_batch(&handle, [Record::value(b"x")]),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.partition_handle("t", 1),
        Err(ClientError::UnknownPartition {
            partition: 1,
            partitions: 1,
            ..
        })
    ));
    let empty = a.send_batch(&handle, []).unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        empty.try_result().unwrap().unwrap(),
        BatchMetadata {
            partition: 0,
            records: 0,
            first_offset: None,
            last_offset: None,
        }
    );
}

#[test]
fn records_without_a_timestamp_take_their_batchs_and_explicit_ones_stay() {
    let log = fake_log(1);
    let addr = fake_broker(Arc::clone(&log));
    let producer = lingering_producer(&addr);
    let handle = producer.partition_handle("t", 0).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records = [
        Record::value(b"a"),
        Record {
            timestamp: Some(1_000),
            ..Record::value(b"b")
        },
        Record::value(b"c"),
    ];
    producer
        .send_batch(&handle, records)
        .unwrap()
        .wait()
        .unwrap();
    let log = log.lock().unwrap();
    let (_, bytes) = &log.batches[&0][0];
    let header = batch::BatchHeader::parse(bytes).unwrap();
    let stamps: Vec<i64> = batch::records(bytes)
        .unwrap()
        .map(|r| header.base_timestamp + r.unwrap().timestamp_delta)
        .collect();
    assert_eq!(stamps[1], 1_000);
    assert_eq!(stamps[0], stamps[2], "one clock read per batch");
    assert!(stamps[0] >= before, "{stamps:?} vs {before}");
}

/// Two batches of 5 records each in partition 0 of a fresh fake.
fn fake_with_ten_records() -> (Arc<Mutex<FakeLog>>, String) {
    let log = fake_log(1);
    for first in [0, 5] {
        let mut b = BatchBuilder::new(1_000);
        for i in first..first + 5 {
            b.push(
                1_000 + i,
                Some(b"k"),
                Some(format!("v{i}").as_bytes()),
                &[(b"h", Some(b"x"))],
            );
        }
        log.lock().unwrap().append(0, &b.finish());
    }
    let addr = fake_broker(Arc::clone(&log));
    (log, addr)
}

fn consumer(addr: &str) -> Consumer {
    Consumer::connect(
        addr,
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            client: config(),
            ..ConsumerConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn consumer_skips_records_before_its_position_in_the_first_batch() {
    let (_log, addr) = fake_with_ten_records();
    let mut c = consumer(&addr);
    c.assign("t", 0, StartOffset::Offset(3)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 7 && Instant::now() < deadline {
        got.extend(c.poll(Duration::from_millis(200)).unwrap());
    }
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (3..10).collect::<Vec<_>>());
    for r in &got {
        assert_eq!(
            r.value.as_deref(),
            Some(format!("v{}", r.offset).as_bytes())
        );
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.timestamp, 1_000 + r.offset);
        assert_eq!(
            r.headers,
            vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"x")))]
        );
    }
    assert_eq!(c.position("t", 0), Some(10));
    assert_eq!(c.high_watermark("t", 0), Some(10));
    // Nothing new: an empty poll after the long poll.
    assert!(c.poll(Duration::from_millis(100)).unwrap().is_empty());
    // Rewind and read again.
    c.seek("t", 0, 8).unwrap();
    let mut again = Vec::new();
    while again.len() < 2 && Instant::now() < deadline {
        again.extend(c.poll(Duration::from_millis(200)).unwrap());
    }
    assert_eq!(again.iter().map(|r| r.offset).collect::<Vec<_>>(), [8, 9]);
}

#[test]
fn consumer_refuses_a_batch_whose_crc_fails() {
    let (log, addr) = fake_with_ten_records();
    log.lock().unwrap().corrupt_fetches = true;
    let mut c = consumer(&addr);
    c.assign("t", 0, StartOffset::Earliest).unwrap();
    let r = c.poll(Duration::from_secs(2));
    match r {
        Err(ClientError::CorruptBatch { error, .. }) => {
            assert!(
                matches!(error, broker_format::BatchError::CrcMismatch { .. }),
                "{error}"
            )
        }
        other => panic!("expected a corrupt batch, got {other:?}"),
    }
    assert_eq!(c.position("t", 0), Some(0));
}

#[test]
fn consumer_reports_offset_out_of_range_with_the_valid_range() {
    let (_log, addr) = fake_with_ten_records();
    let mut c = consumer(&addr);
    c.assign("t", 0, StartOffset::Offset(50)).unwrap();
    let e = c.poll(Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.offset_range(), Some((0, 10)));
    // The caller resets into the range and reads on.
    c.seek("t", 0, e.offset_range().unwrap().0).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 10 && Instant::now() < deadline {
        got.extend(c.poll(Duration::from_millis(200)).unwrap());
    }
    assert_eq!(got.len(), 10);
}

/// Regression: once a poll's time was up, every idle partition was fetched
/// again with a zero wait; the fake (like a broker at the end of its data)
/// answers those at once, an answer was always waiting, and `poll` spun
/// for seconds past its timeout (a group member then missed rebalances).
#[test]
fn consumer_poll_returns_on_time_while_empty_fetches_keep_completing() {
    // Enough fetches in flight that one answer is always waiting.
    const PARTITIONS: u32 = 16;
    let log = fake_log(PARTITIONS);
    let addr = fake_broker(Arc::clone(&log));
    let mut c = consumer(&addr);
    for p in 0..PARTITIONS {
        c.assign("t", p, StartOffset::Earliest).unwrap();
    }
    let fetches = || log.lock().unwrap().fetch_requests;
    // Polls with no time: each sends what is not in flight, takes at most
    // one answer once they are all waiting, and ends. The bug took every
    // waiting answer and fetched each partition again, and again.
    let settle = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetches() < PARTITIONS as usize && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
    settle();
    let before = fetches();
    for _ in 0..3 {
        assert!(c.poll(Duration::ZERO).unwrap().is_empty());
        settle();
    }
    let sent = fetches() - before;
    assert!(sent <= 3, "3 polls whose time was up sent {sent} fetches");
    // Timed polls end on time (generous slack for a loaded machine).
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
            slowest = slowest.max(started.elapsed());
        }
        let _ = tx.send(slowest);
    });
    let slowest = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("poll never returned");
    assert!(
        slowest < Duration::from_secs(1),
        "a 20 ms poll took {slowest:?}"
    );
}

#[test]
fn retry_backoff_doubles_up_to_its_maximum() {
    let config = ProducerConfig::default();
    let pauses: Vec<u64> = (1..=6)
        .map(|a| super::producer::retry_backoff(&config, a).as_millis() as u64)
        .collect();
    assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
    let total: u64 = (1..=config.retries)
        .map(|a| super::producer::retry_backoff(&config, a).as_millis() as u64)
        .sum();
    assert_eq!(total, 7500, "the default retries' span");
    // A maximum below the first pause does not shorten it.
    let odd = ProducerConfig {
        retry_backoff_ms: 300,
        retry_backoff_max_ms: 10,
        ..ProducerConfig::default()
    };
    assert_eq!(super::producer::retry_backoff(&odd, 3).as_millis(), 300);
}
