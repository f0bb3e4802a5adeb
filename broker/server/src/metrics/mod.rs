//! Metrics: counters, gauges and latency histograms kept per shard and per
//! partition, rendered as Prometheus text on scrape, plus the HTTP endpoint
//! (`/metrics`, `/health`) on its own thread, off the data path.
//!
//! Cost on the hot path: a relaxed atomic add on a cache line only its shard
//! writes. No lock, no allocation: every series exists before the first
//! request (requests by api and code are a fixed array; a partition's
//! series are made when it opens). Locks are taken only when a partition
//! opens or closes, when a group snapshot is published (every 100 ms), and
//! by the scraper.

use std::{
    collections::BTreeMap,
    fmt::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

pub use broker_log::histogram::Histogram;
use broker_log::IoStats;
use broker_protocol::{ApiKey, ErrorCode};

/// Api keys counted (0..APIS); larger keys count under the last slot.
const APIS: usize = 64;
/// Error codes counted (0..CODES); larger codes count under the last slot.
const CODES: usize = 64;

/// One partition's series.
pub struct PartitionMetrics {
    /// Its topic.
    pub topic: String,
    /// Its number.
    pub partition: u32,
    /// Records appended.
    pub records_in: AtomicU64,
    /// Bytes appended (whole batches).
    pub bytes_in: AtomicU64,
    /// Records fetched (approximate: counted from the requested offset).
    pub records_out: AtomicU64,
    /// Bytes fetched.
    pub bytes_out: AtomicU64,
    /// The log start offset.
    pub start_offset: AtomicU64,
    /// The high watermark.
    pub end_offset: AtomicU64,
    /// Bytes on disk.
    pub size_bytes: AtomicU64,
    /// Segments on disk.
    pub segments: AtomicU64,
    /// The log's disk activity: writes, fdatasyncs and their latency.
    pub io: Arc<IoStats>,
}

impl PartitionMetrics {
    /// The series of a partition that opens now.
    pub fn new(topic: &str, partition: u32, io: Arc<IoStats>) -> PartitionMetrics {
        PartitionMetrics {
            topic: topic.to_owned(),
            partition,
            records_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            start_offset: AtomicU64::new(0),
            end_offset: AtomicU64::new(0),
            size_bytes: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            io,
        }
    }
}

/// A group as its coordinator last published it.
#[derive(Debug, Clone, Default)]
pub struct GroupSnapshot {
    /// Members now.
    pub members: u32,
    /// Current generation.
    pub generation: i32,
    /// Committed offsets.
    pub committed: BTreeMap<(String, u32), i64>,
}

/// Kafka api keys counted one by one (higher ones are counted together
/// under the last).
const KAFKA_APIS: usize = 80;

/// How a Kafka-protocol request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaOutcome {
    /// Answered (its errors, if any, are per topic or partition inside).
    Answered,
    /// Not answered, as asked (a produce with acks=0).
    NoAnswer,
    /// The connection was closed (a malformed request, an unsupported api
    /// or version, a failed acks=0 produce).
    Closed,
}

impl KafkaOutcome {
    const ALL: [KafkaOutcome; 3] = [
        KafkaOutcome::Answered,
        KafkaOutcome::NoAnswer,
        KafkaOutcome::Closed,
    ];

    fn name(self) -> &'static str {
        match self {
            KafkaOutcome::Answered => "answered",
            KafkaOutcome::NoAnswer => "no_answer",
            KafkaOutcome::Closed => "closed",
        }
    }
}

/// One shard's series.
pub struct ShardMetrics {
    /// The shard.
    pub shard: u16,
    requests: Box<[AtomicU64]>,
    /// Kafka-protocol requests by api key and [`KafkaOutcome`].
    kafka_requests: Box<[AtomicU64]>,
    /// Produce requests, arrival to answer.
    pub produce_latency: Histogram,
    /// Fetch requests, arrival to answer (long-poll waits included).
    pub fetch_latency: Histogram,
    /// Time the shard's executor ran tasks, in nanoseconds.
    pub busy_ns: AtomicU64,
    /// Open client connections.
    pub connections: AtomicU64,
    partitions: Mutex<Vec<Arc<PartitionMetrics>>>,
    groups: Mutex<BTreeMap<String, GroupSnapshot>>,
}

impl ShardMetrics {
    fn new(shard: u16) -> ShardMetrics {
        ShardMetrics {
            shard,
            requests: (0..APIS * CODES).map(|_| AtomicU64::new(0)).collect(),
            kafka_requests: (0..KAFKA_APIS * KafkaOutcome::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            produce_latency: Histogram::default(),
            fetch_latency: Histogram::default(),
            busy_ns: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            partitions: Mutex::new(Vec::new()),
            groups: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a request of `api` answered with `code`.
    #[inline]
    pub fn request(&self, api: ApiKey, code: ErrorCode) {
        let a = usize::from(api.0).min(APIS - 1);
        let c = usize::from(code.0).min(CODES - 1);
        self.requests[a * CODES + c].fetch_add(1, Relaxed);
    }

    /// Counts a Kafka-protocol request of api `key` and how it ended.
    #[inline]
    pub fn kafka_request(&self, key: i16, outcome: KafkaOutcome) {
        let k = usize::try_from(key)
            .unwrap_or(KAFKA_APIS - 1)
            .min(KAFKA_APIS - 1);
        self.kafka_requests[k * KafkaOutcome::ALL.len() + outcome as usize].fetch_add(1, Relaxed);
    }

    /// Registers a partition's series (when it opens).
    pub fn add_partition(&self, p: Arc<PartitionMetrics>) {
        if let Ok(mut list) = self.partitions.lock() {
            list.push(p);
        }
    }

    /// Drops a topic's partitions' series (when it is deleted).
    pub fn remove_topic(&self, topic: &str) {
        if let Ok(mut list) = self.partitions.lock() {
            list.retain(|p| p.topic != topic);
        }
    }

    /// Replaces the published snapshot of this shard's groups.
    pub fn publish_groups(&self, groups: BTreeMap<String, GroupSnapshot>) {
        if let Ok(mut g) = self.groups.lock() {
            *g = groups;
        }
    }
}

/// Every shard's series, and whether the broker is ready.
#[derive(Default)]
pub struct Metrics {
    shards: Mutex<Vec<Arc<ShardMetrics>>>,
    ready: AtomicBool,
}

impl Metrics {
    /// Empty: shards register as they start.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The series of shard `shard`, made on first use.
    pub fn shard(&self, shard: u16) -> Arc<ShardMetrics> {
        let mut shards = match self.shards.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = shards.iter().find(|s| s.shard == shard) {
            return s.clone();
        }
        let s = Arc::new(ShardMetrics::new(shard));
        shards.push(s.clone());
        shards.sort_by_key(|s| s.shard);
        s
    }

    /// Every partition has been recovered and every shard serves.
    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    /// Whether [`Metrics::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let shards: Vec<Arc<ShardMetrics>> = match self.shards.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut out = String::with_capacity(16 << 10);
        family(
            &mut out,
            "broker_ready",
            "gauge",
            "1 once every partition is recovered and every shard serves.",
        );
        let _ = writeln!(out, "broker_ready {}", u8::from(self.is_ready()));

        family(
            &mut out,
            "broker_requests_total",
            "counter",
            "Requests handled, by shard, api and error code.",
        );
        for s in &shards {
            for (i, n) in s.requests.iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let api = ApiKey((i / CODES) as u16);
                let code = ErrorCode((i % CODES) as u16);
                let _ = writeln!(
                    out,
                    "broker_requests_total{{shard=\"{}\",api=\"{}\",code=\"{}\"}} {n}",
                    s.shard,
                    api.variant_name().unwrap_or("Unknown"),
                    code.variant_name().unwrap_or("Unknown")
                );
            }
        }
        family(
            &mut out,
            "broker_kafka_requests_total",
            "counter",
            "Kafka-protocol requests handled, by shard, api key and outcome.",
        );
        for s in &shards {
            for (i, n) in s.kafka_requests.iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let outcome = KafkaOutcome::ALL[i % KafkaOutcome::ALL.len()];
                let _ = writeln!(
                    out,
                    "broker_kafka_requests_total{{shard=\"{}\",api_key=\"{}\",outcome=\"{}\"}} {n}",
                    s.shard,
                    i / KafkaOutcome::ALL.len(),
                    outcome.name()
                );
            }
        }
        for (name, help, pick) in [
            (
                "broker_produce_latency_seconds",
                "Produce requests, arrival to answer.",
                0,
            ),
            (
                "broker_fetch_latency_seconds",
                "Fetch requests, arrival to answer, long-poll waits included.",
                1,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            for s in &shards {
                let h = if pick == 0 {
                    &s.produce_latency
                } else {
                    &s.fetch_latency
                };
                h.render(&mut out, name, &format!("shard=\"{}\"", s.shard));
            }
        }
        family(
            &mut out,
            "broker_shard_busy_seconds_total",
            "counter",
            "Time each shard's executor spent running tasks.",
        );
        for s in &shards {
            let busy = s.busy_ns.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "broker_shard_busy_seconds_total{{shard=\"{}\"}} {busy}",
                s.shard
            );
        }
        family(
            &mut out,
            "broker_connections",
            "gauge",
            "Open client connections.",
        );
        for s in &shards {
            let n = s.connections.load(Relaxed);
            let _ = writeln!(out, "broker_connections{{shard=\"{}\"}} {n}", s.shard);
        }

        let mut partitions: Vec<(u16, Arc<PartitionMetrics>)> = Vec::new();
        for s in &shards {
            if let Ok(list) = s.partitions.lock() {
                partitions.extend(list.iter().map(|p| (s.shard, p.clone())));
            }
        }
        partitions.sort_by(|a, b| (&a.1.topic, a.1.partition).cmp(&(&b.1.topic, b.1.partition)));
        type Field = fn(&PartitionMetrics) -> &AtomicU64;
        let series: [(&str, &str, &str, Field); 11] = [
            (
                "broker_partition_records_in_total",
                "counter",
                "Records appended.",
                |p| &p.records_in,
            ),
            (
                "broker_partition_bytes_in_total",
                "counter",
                "Bytes of record batches appended.",
                |p| &p.bytes_in,
            ),
            (
                "broker_partition_records_out_total",
                "counter",
                "Records fetched.",
                |p| &p.records_out,
            ),
            (
                "broker_partition_bytes_out_total",
                "counter",
                "Bytes of record batches fetched.",
                |p| &p.bytes_out,
            ),
            (
                "broker_partition_log_start_offset",
                "gauge",
                "First readable offset.",
                |p| &p.start_offset,
            ),
            (
                "broker_partition_log_end_offset",
                "gauge",
                "High watermark.",
                |p| &p.end_offset,
            ),
            (
                "broker_partition_size_bytes",
                "gauge",
                "Bytes on disk.",
                |p| &p.size_bytes,
            ),
            (
                "broker_partition_segments",
                "gauge",
                "Segments on disk.",
                |p| &p.segments,
            ),
            (
                "broker_partition_disk_writes_total",
                "counter",
                "Direct-I/O data writes completed.",
                |p| &p.io.writes,
            ),
            (
                "broker_partition_disk_write_bytes_total",
                "counter",
                "Bytes those writes carried (whole blocks; a partial tail block is rewritten by the next write).",
                |p| &p.io.write_bytes,
            ),
            (
                "broker_partition_fsyncs_total",
                "counter",
                "Data fdatasyncs issued (one carries every append of its group commit).",
                |p| &p.io.syncs,
            ),
        ];
        for (name, kind, help, field) in series {
            family(&mut out, name, kind, help);
            for (shard, p) in &partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\",shard=\"{shard}\"}} {}",
                    p.topic,
                    p.partition,
                    field(p).load(Relaxed)
                );
            }
        }
        family(
            &mut out,
            "broker_partition_fsync_latency_seconds",
            "histogram",
            "How long each data fdatasync took.",
        );
        for (shard, p) in &partitions {
            let labels = format!(
                "topic=\"{}\",partition=\"{}\",shard=\"{shard}\"",
                p.topic, p.partition
            );
            p.io.sync_latency
                .render(&mut out, "broker_partition_fsync_latency_seconds", &labels);
        }

        let ends: BTreeMap<(&str, u32), u64> = partitions
            .iter()
            .map(|(_, p)| ((p.topic.as_str(), p.partition), p.end_offset.load(Relaxed)))
            .collect();
        let mut groups: Vec<(String, GroupSnapshot)> = Vec::new();
        for s in &shards {
            if let Ok(g) = s.groups.lock() {
                groups.extend(g.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        family(
            &mut out,
            "broker_group_members",
            "gauge",
            "Members of each consumer group.",
        );
        for (name, g) in &groups {
            let _ = writeln!(
                out,
                "broker_group_members{{group=\"{name}\"}} {}",
                g.members
            );
        }
        family(
            &mut out,
            "broker_group_generation",
            "gauge",
            "Current generation of each consumer group.",
        );
        for (name, g) in &groups {
            let _ = writeln!(
                out,
                "broker_group_generation{{group=\"{name}\"}} {}",
                g.generation
            );
        }
        family(
            &mut out,
            "broker_group_lag",
            "gauge",
            "Records between a group's committed offset and the partition's end.",
        );
        for (name, g) in &groups {
            for ((topic, partition), committed) in &g.committed {
                if let Some(end) = ends.get(&(topic.as_str(), *partition)) {
                    let lag = end.saturating_sub((*committed).max(0) as u64);
                    let _ = writeln!(
                        out,
                        "broker_group_lag{{group=\"{name}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}"
                    );
                }
            }
        }
        out
    }
}

/// Writes the HELP and TYPE lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the HTTP server said.
        reason: String,
    },
    /// The bound address is not an IP address.
    #[error("metrics address {addr} is not an IP address")]
    NotIp {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The serving thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// Serves `/metrics` (Prometheus text) and `/health` (200 "ready" once the
/// broker serves, 503 before) on `addr`, on a thread of its own. Returns the
/// address bound (port 0 picks one).
pub fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, MetricsError> {
    let server = tiny_http::Server::http(addr).map_err(|e| MetricsError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or(MetricsError::NotIp { addr })?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, body, kind) = match request.url() {
                    "/metrics" => (200, metrics.render(), "text/plain; version=0.0.4"),
                    "/health" if metrics.is_ready() => (200, "ready\n".to_string(), "text/plain"),
                    "/health" => (
                        503,
                        "starting: recovering partitions\n".to_string(),
                        "text/plain",
                    ),
                    _ => (404, "try /metrics or /health\n".to_string(), "text/plain"),
                };
                let mut response = tiny_http::Response::from_string(body).with_status_code(status);
                if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", kind) {
                    response = response.with_header(h);
                }
                let _ = request.respond(response);
            }
        })
        .map_err(MetricsError::Thread)?;
    Ok(bound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_counters_histograms_and_lag() {
        let m = Metrics::new();
        let s = m.shard(0);
        s.request(ApiKey::Produce, ErrorCode::None);
        s.kafka_request(0, KafkaOutcome::NoAnswer);
        s.kafka_request(3, KafkaOutcome::Answered);
        s.kafka_request(3, KafkaOutcome::Answered);
        s.request(ApiKey::Produce, ErrorCode::None);
        s.request(ApiKey::Fetch, ErrorCode::OffsetOutOfRange);
        s.produce_latency.observe(Duration::from_micros(700));
        let p = Arc::new(PartitionMetrics::new("t", 0, Default::default()));
        p.end_offset.store(100, Relaxed);
        p.io.syncs.fetch_add(3, Relaxed);
        p.io.sync_latency.observe(Duration::from_micros(300));
        s.add_partition(p);
        let mut committed = BTreeMap::new();
        committed.insert(("t".to_string(), 0), 60);
        s.publish_groups(
            [(
                "g".to_string(),
                GroupSnapshot {
                    members: 2,
                    generation: 3,
                    committed,
                },
            )]
            .into(),
        );
        let text = m.render();
        assert!(text.contains("broker_requests_total{shard=\"0\",api=\"Produce\",code=\"None\"} 2"));
        assert!(text.contains(
            "broker_kafka_requests_total{shard=\"0\",api_key=\"3\",outcome=\"answered\"} 2"
        ));
        assert!(text.contains(
            "broker_kafka_requests_total{shard=\"0\",api_key=\"0\",outcome=\"no_answer\"} 1"
        ));
        assert!(text.contains(
            "broker_requests_total{shard=\"0\",api=\"Fetch\",code=\"OffsetOutOfRange\"} 1"
        ));
        assert!(text.contains("broker_produce_latency_seconds_bucket{shard=\"0\",le=\"0.0005\"} 0"));
        assert!(text.contains("broker_produce_latency_seconds_bucket{shard=\"0\",le=\"0.001\"} 1"));
        assert!(text.contains("broker_produce_latency_seconds_count{shard=\"0\"} 1"));
        assert!(text.contains("broker_group_lag{group=\"g\",topic=\"t\",partition=\"0\"} 40"));
        assert!(text.contains("broker_ready 0"));
        let labels = "topic=\"t\",partition=\"0\",shard=\"0\"";
        assert!(text.contains(&format!("broker_partition_fsyncs_total{{{labels}}} 3")));
        assert!(text.contains(&format!(
            "broker_partition_fsync_latency_seconds_bucket{{{labels},le=\"0.00025\"}} 0"
        )));
        assert!(text.contains(&format!(
            "broker_partition_fsync_latency_seconds_bucket{{{labels},le=\"0.0005\"}} 1"
        )));
    }
}
