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

/// Kafka producer `w`: a confluent-kafka (librdkafka) process over the
/// Kafka listener, acks=all with idempotence on (kafka_producer.py), values
/// "k{w}-{seq}", restarted after it ends (a broker kill makes librdkafka
/// fail its in-flight records after its message timeout, and the process
/// goes on by itself; one killed with the run's end leaves its unanswered
/// sends unacknowledged).
pub fn kafka_producer(w: u32, t: Target, kafka: String) -> thread::JoinHandle<()> {
    use std::io::BufRead;
    thread::spawn(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chaos/kafka_producer.py");
        let mut next = 1u64;
        while !t.stop.load(Ordering::Relaxed) {
            let child = std::process::Command::new("python3")
                .arg(script)
                .args(["--bootstrap", &kafka, "--topic", t.topic])
                .args(["--partitions", &t.partitions.to_string()])
                .args(["--writer", &format!("k{w}"), "--start", &next.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn();
            let Ok(mut child) = child else {
                panic!("cannot run python3 {script}: run scripts/install-kafka-clients.sh");
            };
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take();
            let child = Arc::new(Mutex::new(child));
            let done = Arc::new(AtomicBool::new(false));
            let stopper = {
                let (stop, done, child) = (t.stop.clone(), done.clone(), child.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(50));
                    }
                    // The run is over: close its stdin (it flushes and
                    // ends), and kill it if it has not within 12 s.
                    drop(stdin);
                    for _ in 0..240 {
                        if done.load(Ordering::Relaxed) {
                            return;
                        }
                        thread::sleep(Duration::from_millis(50));
                    }
                    let _ = child.lock().unwrap().kill();
                })
            };
            let mut pending = std::collections::HashSet::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut f = line.split(' ');
                let mut h = t.history.lock().unwrap();
                match (f.next(), f.next(), f.next(), f.next()) {
                    (Some("send"), Some(value), _, _) => {
                        if let Some(seq) = value
                            .rsplit_once('-')
                            .and_then(|(_, s)| s.parse::<u64>().ok())
                        {
                            next = next.max(seq + 1);
                        }
                        pending.insert(value.to_owned());
                    }
                    (Some("ack"), Some(p), Some(o), Some(value)) => {
                        pending.remove(value);
                        let at = (p.parse().unwrap_or(u32::MAX), o.parse().unwrap_or(-1));
                        if let Some(old) = h.acked.insert(at, value.to_owned()) {
                            h.acked_twice
                                .push(format!("offset {at:?} acknowledged for {old} and {value}"));
                        }
                    }
                    (Some("fail"), Some(value), _, _) => {
                        pending.remove(value);
                        h.unacked.push(value.to_owned());
                    }
                    _ => {}
                }
            }
            done.store(true, Ordering::Relaxed);
            let _ = stopper.join();
            let _ = child.lock().unwrap().wait();
            t.history.lock().unwrap().unacked.extend(pending);
            if !t.stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
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
