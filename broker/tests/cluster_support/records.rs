//! Records for the cluster tests: deterministic keyed values with every
//! byte value in them, produced with every acknowledgement awaited, and
//! read back byte for byte.

use std::{
    collections::HashMap,
    ops::Range,
    time::{Duration, Instant},
};

use broker_client::{
    Acks, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
};

/// A record's key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Acknowledged records by (partition, offset).
pub type Acked = HashMap<(u32, i64), KeyValue>;

/// Client timeouts short enough to see a dead, paused or partitioned
/// broker quickly: `request_s` seconds per request, 1 s to connect.
pub fn quick(request_s: u64) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(request_s),
        ..ClientConfig::default()
    }
}

/// Deterministic bytes with every byte value, zeros and newlines included,
/// different for every `seed` and record `i`.
pub fn value(seed: usize, i: usize) -> Vec<u8> {
    (0..(i * 37) % 300 + 1)
        .map(|j| ((seed * 71 + i * 131 + j * 7) % 256) as u8)
        .collect()
}

/// Produces records `ids` (key `key-{i}`, value `value(seed, i)`) to
/// `topic` through `bootstrap` and waits for every acknowledgement.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    seed: usize,
    ids: Range<usize>,
    client: ClientConfig,
) -> Acked {
    produce_with(bootstrap, topic, seed, ids, client, Acks::Leader)
}

/// [`produce`] with the acknowledgement asked for.
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    seed: usize,
    ids: Range<usize>,
    client: ClientConfig,
    acks: Acks,
) -> Acked {
    let producer = Producer::connect(
        bootstrap,
        ProducerConfig {
            client,
            acks,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let sent: Vec<KeyValue> = ids
        .map(|i| (format!("key-{i}").into_bytes(), value(seed, i)))
        .collect();
    let acks: Vec<_> = sent
        .iter()
        .map(|(k, v)| producer.send(topic, Some(k), v).unwrap())
        .collect();
    producer.flush();
    sent.into_iter()
        .zip(acks)
        .map(|(record, ack)| {
            let meta = ack.wait().unwrap();
            ((meta.partition, meta.offset.unwrap()), record)
        })
        .collect()
}

/// Reads `topic` from the start through `bootstrap` until `expected` came
/// (at most 20 s), and checks that it holds exactly that, byte for byte.
pub fn consume_exactly(bootstrap: &str, topic: &str, expected: &Acked, client: ClientConfig) {
    let mut consumer = Consumer::connect(
        bootstrap,
        ConsumerConfig {
            fetch_max_wait_ms: 100,
            client,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.assign_all(topic, StartOffset::Earliest).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = HashMap::new();
    while got.len() < expected.len() && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).unwrap() {
            got.insert(
                (r.partition, r.offset),
                (
                    r.key.map(|k| k.to_vec()).unwrap_or_default(),
                    r.value.map(|v| v.to_vec()).unwrap_or_default(),
                ),
            );
        }
    }
    assert_eq!(got.len(), expected.len(), "records of {topic} read back");
    for (at, record) in expected {
        assert!(got.get(at) == Some(record), "{topic} at {at:?} differs");
    }
}
