//! Hostile input against the real binary's Kafka listener (the `kafka=`
//! address of the ready line): size prefixes out of range, unknown apis and
//! versions, ApiVersions newer than ours (KIP-511), random bytes behind valid
//! headers, a produce with a corrupt CRC, a fetch asking to wait a minute;
//! then the broker is alive and serves a new connection. And pipelining:
//! requests sent back to back on one connection are answered in order of
//! their correlation ids, an acks=0 produce among them taking its turn
//! without an answer.
//!
//! Requests are encoded by hand (the broker's own `kafka::wire::Encoder`
//! only writes the primitive types) in classic versions: Metadata v1,
//! ApiVersions v0, Produce v3, Fetch v4, ListOffsets v1.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use broker_format::BatchBuilder;
use broker_server::kafka::wire::{Decoder, Encoder};
use broker_server::kafka::{api, APIS};
use server_support::Broker;

/// The frame limit the broker runs with here.
const MAX_FRAME: usize = 1 << 20;
/// CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;
/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// A `broker serve` child on free ports (killed on drop) and its Kafka
/// address.
struct Kafka {
    broker: Broker,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Kafka {
    fn start() -> Kafka {
        let dir = tempfile::tempdir().unwrap();
        let max_frame = MAX_FRAME.to_string();
        let broker = Broker::start(
            &dir.path().join("data"),
            2,
            &[
                "--fsync",
                "never",
                "--log-level",
                "error",
                "--max-frame-bytes",
                &max_frame,
            ],
        );
        let addr = broker.kafka.expect("kafka= in the ready line");
        Kafka {
            broker,
            addr,
            _dir: dir,
        }
    }

    fn connect(&self) -> Conn {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(45)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream }
    }

    fn alive(&mut self) -> bool {
        self.broker.alive()
    }
}

struct Conn {
    stream: TcpStream,
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next answer (after its size prefix); None once the broker closed
    /// the connection.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut size = [0u8; 4];
        match self.stream.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading an answer: {e}"),
        }
        let mut body = vec![0; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Some(body)
    }

    /// Sends `request` and reads its answer, checking the correlation id.
    fn call(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        let answer = self.recv().expect("an answer");
        assert_eq!(answer[..4], request[8..12], "correlation id");
        answer
    }

    /// Whether the broker closes the connection (without an answer) soon.
    fn closed_without_answer(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

/// A size-prefixed request with a v1 header (client id "hostile").
fn request(
    key: i16,
    version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut Encoder),
) -> Vec<u8> {
    let mut e = Encoder::default();
    e.i32(0);
    e.i16(key);
    e.i16(version);
    e.i32(correlation_id);
    e.nullable_string(false, Some("hostile"));
    body(&mut e);
    let size = (e.buf.len() - 4) as i32;
    e.buf[..4].copy_from_slice(&size.to_be_bytes());
    e.buf
}

fn metadata(correlation_id: i32, topics: &[&str]) -> Vec<u8> {
    request(api::METADATA, 1, correlation_id, |e| {
        e.array_len(false, topics.len());
        for t in topics {
            e.string(false, t);
        }
    })
}

fn api_versions(correlation_id: i32) -> Vec<u8> {
    request(api::API_VERSIONS, 0, correlation_id, |_| {})
}

fn produce(correlation_id: i32, topic: &str, acks: i16, batch: &[u8]) -> Vec<u8> {
    request(api::PRODUCE, 3, correlation_id, |e| {
        e.nullable_string(false, None);
        e.i16(acks);
        e.i32(10_000);
        e.array_len(false, 1);
        e.string(false, topic);
        e.array_len(false, 1);
        e.i32(0);
        e.bytes_len(false, Some(batch.len()));
        e.buf.extend_from_slice(batch);
    })
}

fn fetch(
    correlation_id: i32,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> Vec<u8> {
    request(api::FETCH, 4, correlation_id, |e| {
        e.i32(-1);
        e.i32(max_wait_ms);
        e.i32(min_bytes);
        e.i32(1 << 20);
        e.i8(0);
        e.array_len(false, 1);
        e.string(false, topic);
        e.array_len(false, 1);
        e.i32(0);
        e.i64(offset);
        e.i32(1 << 20);
    })
}

fn list_offsets_latest(correlation_id: i32, topic: &str) -> Vec<u8> {
    request(api::LIST_OFFSETS, 1, correlation_id, |e| {
        e.i32(-1);
        e.array_len(false, 1);
        e.string(false, topic);
        e.array_len(false, 1);
        e.i32(0);
        e.i64(-1);
    })
}

/// A record batch of `n` records.
fn batch(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for i in 0..n {
        b.push(
            1_000 + i as i64,
            None,
            Some(format!("value {i}").as_bytes()),
            &[],
        );
    }
    b.finish()
}

/// A Produce v3 answer's (error, base offset) of its one partition.
fn produce_answer(answer: &[u8]) -> (i16, i64) {
    let mut d = Decoder::new(&answer[4..]);
    assert_eq!(d.count(false, 1).unwrap(), 1);
    d.string(false).unwrap();
    assert_eq!(d.count(false, 1).unwrap(), 1);
    assert_eq!(d.i32().unwrap(), 0);
    (d.i16().unwrap(), d.i64().unwrap())
}

/// A ListOffsets v1 answer's (error, offset) of its one partition.
fn list_offsets_answer(answer: &[u8]) -> (i16, i64) {
    let mut d = Decoder::new(&answer[4..]);
    assert_eq!(d.count(false, 1).unwrap(), 1);
    d.string(false).unwrap();
    assert_eq!(d.count(false, 1).unwrap(), 1);
    assert_eq!(d.i32().unwrap(), 0);
    let code = d.i16().unwrap();
    d.i64().unwrap();
    (code, d.i64().unwrap())
}

/// A Fetch v4 answer's (error, high watermark, record bytes) of its one
/// partition.
fn fetch_answer(answer: &[u8]) -> (i16, i64, usize) {
    let mut d = Decoder::new(&answer[4..]);
    d.i32().unwrap(); // throttle
    assert_eq!(d.count(false, 1).unwrap(), 1);
    d.string(false).unwrap();
    assert_eq!(d.count(false, 1).unwrap(), 1);
    assert_eq!(d.i32().unwrap(), 0);
    let code = d.i16().unwrap();
    let hw = d.i64().unwrap();
    d.i64().unwrap(); // last stable offset
    for _ in 0..d.count(false, 16).unwrap() {
        d.i64().unwrap();
        d.i64().unwrap();
    }
    let records = d.bytes(false).unwrap().len();
    (code, hw, records)
}

/// Creates `topics` (Metadata auto-creates them) and checks they exist.
fn create(conn: &mut Conn, topics: &[&str]) {
    let answer = conn.call(&metadata(1, topics));
    let mut d = Decoder::new(&answer[4..]);
    for _ in 0..d.count(false, 1).unwrap() {
        d.i32().unwrap();
        d.string(false).unwrap();
        d.i32().unwrap();
        d.nullable_string(false).unwrap();
    }
    d.i32().unwrap(); // controller
    assert_eq!(d.count(false, 1).unwrap(), topics.len());
    for _ in topics {
        assert_eq!(d.i16().unwrap(), 0, "topic created");
        d.string(false).unwrap();
        d.bool().unwrap();
        let partitions = d.count(false, 1).unwrap();
        assert!(partitions > 0);
        for _ in 0..partitions {
            assert_eq!(d.i16().unwrap(), 0);
            d.i32().unwrap();
            d.i32().unwrap();
            for _ in 0..2 {
                for _ in 0..d.count(false, 4).unwrap() {
                    d.i32().unwrap();
                }
            }
        }
    }
}

/// A tiny deterministic generator (xorshift), seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hostile_kafka_requests_close_or_are_refused_and_the_broker_keeps_serving() {
    let mut broker = Kafka::start();
    let mut good = broker.connect();
    create(&mut good, &["hostile", "empty"]);
    let (code, base) = produce_answer(&good.call(&produce(2, "hostile", -1, &batch(3))));
    assert_eq!((code, base), (0, 0));

    // A fetch asking to wait a minute on an empty topic is answered by the
    // broker's cap (30 s), meanwhile everything else goes on.
    let mut waiter = broker.connect();
    let long_poll = thread::spawn(move || {
        let start = Instant::now();
        let answer = waiter.call(&fetch(77, "empty", 0, 60_000, 1));
        (start.elapsed(), fetch_answer(&answer))
    });

    let size_prefixes: [&[u8]; 3] = [
        &(-1i32).to_be_bytes(),
        &((MAX_FRAME + 1) as i32).to_be_bytes(),
        &[0, 0, 0, 5, 1, 2, 3, 4, 5],
    ];
    for (i, bytes) in size_prefixes.iter().enumerate() {
        let mut c = broker.connect();
        c.send(bytes);
        assert!(c.closed_without_answer(), "size prefix #{i} {bytes:?}");
    }

    let mut c = broker.connect();
    c.send(&request(0x7777, 0, 3, |_| {}));
    assert!(c.closed_without_answer(), "an unknown api key");
    for v in [0, 13, -1, i16::MAX] {
        let mut c = broker.connect();
        c.send(
            &metadata(4, &[])
                .iter()
                .enumerate()
                .map(|(i, &b)| match i {
                    6 => v.to_be_bytes()[0],
                    7 => v.to_be_bytes()[1],
                    _ => b,
                })
                .collect::<Vec<u8>>(),
        );
        assert!(c.closed_without_answer(), "Metadata v{v}");
    }

    // KIP-511: a v0 answer, UNSUPPORTED_VERSION, our ranges.
    let mut c = broker.connect();
    let answer = c.call(&request(api::API_VERSIONS, 9, 5, |e| {
        e.tagged_fields(true);
        e.string(true, "future-client");
        e.string(true, "9.9");
        e.tagged_fields(true);
    }));
    let mut d = Decoder::new(&answer[4..]);
    assert_eq!(d.i16().unwrap(), UNSUPPORTED_VERSION);
    let ranges: Vec<(i16, i16, i16)> = (0..d.count(false, 6).unwrap())
        .map(|_| (d.i16().unwrap(), d.i16().unwrap(), d.i16().unwrap()))
        .collect();
    let ours: Vec<(i16, i16, i16)> = APIS.iter().map(|a| (a.key, a.min, a.max)).collect();
    assert_eq!(ranges, ours);
    assert_eq!(
        d.remaining(),
        0,
        "a v0 answer: no throttle, no tagged fields"
    );
    // The client retries with a version we serve, on the same connection.
    c.call(&api_versions(6));

    // Random bytes behind valid headers of every api but Fetch (a fetch
    // that decodes may rightly wait): either the connection is closed, or
    // the request is answered and the ApiVersions behind it too.
    let mut rng = Rng(0x5eed_cafe);
    let keys = [
        api::PRODUCE,
        api::LIST_OFFSETS,
        api::METADATA,
        api::INIT_PRODUCER_ID,
    ];
    for round in 0..120 {
        let key = keys[round % keys.len()];
        let Some(range) = APIS.iter().find(|a| a.key == key) else {
            continue;
        };
        let version = range.min + (rng.next() % (range.max - range.min + 1) as u64) as i16;
        let len = (rng.next() % 64) as usize;
        let mut c = broker.connect();
        c.send(&request(key, version, 10, |e| {
            e.buf.extend((0..len).map(|_| rng.next() as u8));
        }));
        c.send(&api_versions(11));
        // Closed (malformed), or answered in order: 10 (unless an acks=0
        // produce decoded), then 11 (unless 10 closed the connection).
        let ids: Vec<i32> = std::iter::from_fn(|| c.recv())
            .map(|a| i32::from_be_bytes([a[0], a[1], a[2], a[3]]))
            .take(2)
            .collect();
        assert!(
            [&[][..], &[10], &[11], &[10, 11]].contains(&ids.as_slice()),
            "round {round} (api {key} v{version}): answers {ids:?}"
        );
    }

    // A corrupt CRC: CORRUPT_MESSAGE for that partition, nothing appended.
    let mut bad = batch(2);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let (code, _) = produce_answer(&good.call(&produce(20, "hostile", -1, &bad)));
    assert_eq!(code, CORRUPT_MESSAGE);
    let (code, end) = list_offsets_answer(&good.call(&list_offsets_latest(21, "hostile")));
    assert_eq!((code, end), (0, 3), "the log is unchanged");
    let (code, hw, records) = fetch_answer(&good.call(&fetch(22, "hostile", 3, 0, 0)));
    assert_eq!(
        (code, hw, records),
        (0, 3, 0),
        "nothing to fetch after the good batch"
    );

    let (waited, (code, hw, records)) = long_poll.join().unwrap();
    assert_eq!((code, hw, records), (0, 0, 0));
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(40),
        "a 60 s max_wait answered after {waited:?}"
    );

    assert!(broker.alive(), "the broker survived");
    let mut fresh = broker.connect();
    fresh.call(&api_versions(30));
    let (code, base) = produce_answer(&fresh.call(&produce(31, "hostile", 1, &batch(1))));
    assert_eq!((code, base), (0, 3));
}

/// Sends `requests` back to back, then reads until `expected` answers came,
/// returning their correlation ids.
fn pipeline(conn: &mut Conn, requests: &[Vec<u8>], expected: usize) -> Vec<i32> {
    let all: Vec<u8> = requests.concat();
    let mut writer = conn.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&all).unwrap());
    let ids = (0..expected)
        .map(|_| {
            let a = conn.recv().expect("an answer");
            i32::from_be_bytes([a[0], a[1], a[2], a[3]])
        })
        .collect();
    sender.join().unwrap();
    ids
}

/// 50 requests of four apis; `acks0` says which produces send acks=0.
fn mixed(first_id: i32, acks0: impl Fn(usize) -> bool) -> (Vec<Vec<u8>>, Vec<i32>) {
    let mut requests = Vec::new();
    let mut answered = Vec::new();
    for i in 0..50 {
        let id = first_id + i as i32;
        let r = match i % 4 {
            0 => metadata(id, &["pipe"]),
            1 => api_versions(id),
            2 => produce(id, "pipe", if acks0(i) { 0 } else { -1 }, &batch(1 + i % 3)),
            // Some fetches wait (min_bytes above what is there) while the
            // requests behind them are served: their answers must wait too.
            _ if i % 8 == 3 => fetch(id, "pipe", 0, 300, 1 << 30),
            _ => fetch(id, "pipe", 0, 0, 0),
        };
        requests.push(r);
        if !(i % 4 == 2 && acks0(i)) {
            answered.push(id);
        }
    }
    (requests, answered)
}

#[test]
fn pipelined_kafka_requests_are_answered_in_order_even_around_acks0_produces() {
    let broker = Kafka::start();
    let mut conn = broker.connect();
    create(&mut conn, &["pipe"]);

    let (requests, answered) = mixed(100, |_| false);
    assert_eq!(answered.len(), 50);
    assert_eq!(pipeline(&mut conn, &requests, 50), answered);

    let (requests, answered) = mixed(1_000, |i| i % 8 == 2);
    assert_eq!(answered.len(), 50 - 6);
    assert_eq!(pipeline(&mut conn, &requests, answered.len()), answered);

    // Every produce was appended, the acks=0 ones too: 2 rounds of 12
    // produces of 1-3 records.
    let records: i64 = (0..50)
        .filter(|i| i % 4 == 2)
        .map(|i| 1 + i % 3)
        .sum::<i64>()
        * 2;
    let (code, end) = list_offsets_answer(&conn.call(&list_offsets_latest(5_000, "pipe")));
    assert_eq!((code, end), (0, records));
}
