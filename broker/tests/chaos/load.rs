//! The load of the chaos run: producers writing uniquely numbered records
//! (acknowledged after fsync) and a reader following every partition by
//! offset, each starting over with a fresh client after a fault. What they
//! saw goes into the [`History`].

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use broker_client::{
    ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
};

/// What the producers and the reader saw.
#[derive(Default)]
pub struct History {
    /// (partition, offset) -> value, for every acknowledged record.
    pub acked: BTreeMap<(u32, i64), String>,
    /// Offsets acknowledged for two different records (a broker that
    /// forgot an acknowledged record and gave its offset away again).
    pub acked_twice: Vec<String>,
    /// Values sent but never acknowledged (failed or unknown).
    pub unacked: Vec<String>,
    /// (partition, offset, value) of every record the reader saw.
    pub consumed: Vec<(u32, i64, String)>,
}

/// What every load thread is given.
#[derive(Clone)]
pub struct Target {
    pub bootstrap: String,
    pub client: ClientConfig,
    pub topic: &'static str,
    pub partitions: u32,
    pub history: Arc<Mutex<History>>,
    /// Set when the run's load ends.
    pub stop: Arc<AtomicBool>,
}

/// Producer `w`: values "w{w}-{seq}", round robin over the partitions, in
/// windows of 20 sends followed by their acks.
pub fn producer(w: u32, t: Target) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut seq = 0u64;
        while !t.stop.load(Ordering::Relaxed) {
            let config = ProducerConfig {
                linger_ms: 2,
                retries: 0,
                client: t.client.clone(),
                ..ProducerConfig::default()
            };
            let Ok(producer) = Producer::connect(&t.bootstrap, config) else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            while !t.stop.load(Ordering::Relaxed) {
                let mut window = Vec::new();
                for _ in 0..20 {
                    seq += 1;
                    let value = format!("w{w}-{seq}");
                    let partition = (seq % u64::from(t.partitions)) as u32;
                    match producer.send_to(t.topic, partition, None, value.as_bytes()) {
                        Ok(f) => window.push((value, Some(f))),
                        Err(_) => window.push((value, None)),
                    }
                }
                let mut failed = false;
                let mut seen = Vec::new();
                for (value, f) in window {
                    match f.map(|f| f.wait()) {
                        Some(Ok(meta)) if meta.offset.is_some() => {
                            seen.push((Some((meta.partition, meta.offset.unwrap_or(-1))), value))
                        }
                        _ => {
                            failed = true;
                            seen.push((None, value));
                        }
                    }
                }
                let mut h = t.history.lock().unwrap();
                for (at, value) in seen {
                    match at {
                        Some(at) => {
                            if let Some(old) = h.acked.insert(at, value.clone()) {
                                h.acked_twice.push(format!(
                                    "offset {at:?} acknowledged for {old} and {value}"
                                ));
                            }
                        }
                        None => h.unacked.push(value),
                    }
                }
                drop(h);
                if failed {
                    // Start over with a fresh producer after a fault.
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    })
}

/// A reader of every partition by offset (no group), resuming where it
/// was after each fault.
pub fn reader(t: Target) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut positions = vec![0i64; t.partitions as usize];
        while !t.stop.load(Ordering::Relaxed) {
            let config = ConsumerConfig {
                fetch_max_wait_ms: 100,
                retries: 2,
                client: t.client.clone(),
                ..ConsumerConfig::default()
            };
            let Ok(mut consumer) = Consumer::connect(&t.bootstrap, config) else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let assigned = (0..t.partitions).all(|p| {
                consumer
                    .assign(t.topic, p, StartOffset::Offset(positions[p as usize]))
                    .is_ok()
            });
            if !assigned {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            while !t.stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(200)) {
                    Ok(records) => {
                        let mut h = t.history.lock().unwrap();
                        for r in records {
                            let value =
                                String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string();
                            positions[r.partition as usize] = r.offset + 1;
                            h.consumed.push((r.partition, r.offset, value));
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    })
}
