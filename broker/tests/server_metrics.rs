//! The metrics endpoint of the real binary: Prometheus text that parses,
//! counters that move by exactly what was produced and fetched, and a
//! health check that says ready.
#![allow(clippy::unwrap_used)]

mod server_support;

use broker_format::BatchBuilder;
use broker_protocol::generated::{FetchResponse, ProduceResponse};
use broker_protocol::{Acks, FetchParams, TopicSettings};
use server_support::{http_get, Broker, Conn};

/// Every sample line as (name, labels, value); panics on a line that is
/// not Prometheus text.
fn parse(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"))),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?}"
        );
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert!(v.starts_with('"') && v.ends_with('"'), "{line:?}");
        }
        out.push((name.to_string(), labels.to_string(), value));
    }
    out
}

fn sum(samples: &[(String, String, f64)], name: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && l.contains(label))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_count_exactly_what_was_produced_and_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        &tmp.path().join("data"),
        2,
        &["--fsync", "never", "--metrics", "127.0.0.1:0"],
    );
    let metrics = broker.metrics.expect("metrics= in the ready line");
    assert_eq!(http_get(metrics, "/health"), (200, "ready\n".to_string()));

    let mut conn = Conn::connect(broker.listen);
    let f = conn.call(&[], |w, out, id| {
        w.create_topic_request(out, id, "m", 2, &TopicSettings::default())
            .unwrap();
    });
    assert!(f.error().is_none());
    let before = parse(&http_get(metrics, "/metrics").1);
    assert_eq!(
        sum(&before, "broker_partition_records_in_total", "topic=\"m\""),
        0.0
    );

    let (batches, records) = (17u32, 9usize);
    let mut bytes = 0;
    for i in 0..batches {
        let mut b = BatchBuilder::new(0);
        for r in 0..records {
            b.push(r as i64, None, Some(format!("{i}-{r}").as_bytes()), &[]);
        }
        let b = b.finish();
        bytes += b.len();
        let f = conn.call(&b, |w, out, id| {
            w.produce_request(out, id, "m", i % 2, Acks::Leader, b.len())
                .unwrap();
        });
        assert!(f.decode::<ProduceResponse>().body.error().is_none());
    }
    // One fetch of partition 0 from the start, and one out-of-range fetch.
    let mut fetched = 0;
    for offset in [0, 10_000] {
        let f = conn.call(&[], |w, out, id| {
            w.fetch_request(
                out,
                id,
                &FetchParams {
                    topic: "m",
                    partition: 0,
                    offset,
                    max_bytes: 1 << 20,
                    max_wait_ms: 0,
                },
            )
            .unwrap();
        });
        fetched += f.decode::<FetchResponse>().payload.len();
    }

    let text = http_get(metrics, "/metrics").1;
    let after = parse(&text);
    let m = "topic=\"m\"";
    assert_eq!(
        sum(&after, "broker_partition_records_in_total", m),
        f64::from(batches) * records as f64
    );
    assert_eq!(
        sum(&after, "broker_partition_bytes_in_total", m),
        bytes as f64
    );
    assert_eq!(
        sum(&after, "broker_partition_log_end_offset", m),
        f64::from(batches) * records as f64
    );
    assert_eq!(
        sum(&after, "broker_partition_bytes_out_total", m),
        fetched as f64
    );
    // Requests by api and code, counted once each (forwarded ones by the
    // shard that received them).
    assert_eq!(
        sum(
            &after,
            "broker_requests_total",
            "api=\"Produce\",code=\"None\""
        ),
        f64::from(batches)
    );
    assert_eq!(
        sum(
            &after,
            "broker_requests_total",
            "api=\"Fetch\",code=\"OffsetOutOfRange\""
        ),
        1.0
    );
    assert_eq!(
        sum(&after, "broker_produce_latency_seconds_count", ""),
        f64::from(batches)
    );
    assert_eq!(sum(&after, "broker_ready", ""), 1.0);
    assert!(sum(&after, "broker_connections", "") >= 1.0);
    assert_eq!(http_get(metrics, "/nope").0, 404);
}

#[test]
fn fsyncs_and_disk_writes_are_counted_per_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        &tmp.path().join("data"),
        1,
        &["--fsync", "always", "--metrics", "127.0.0.1:0"],
    );
    let metrics = broker.metrics.expect("metrics= in the ready line");
    let mut conn = Conn::connect(broker.listen);
    let f = conn.call(&[], |w, out, id| {
        w.create_topic_request(out, id, "s", 1, &TopicSettings::default())
            .unwrap();
    });
    assert!(f.error().is_none());
    let m = "topic=\"s\"";
    let before = parse(&http_get(metrics, "/metrics").1);
    assert_eq!(sum(&before, "broker_partition_fsyncs_total", m), 0.0);

    // One produce at a time: with fsync=always each waits for its own
    // write and fdatasync, so nothing is shared between them.
    let produces = 12u32;
    for i in 0..produces {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(format!("v{i}").as_bytes()), &[]);
        let b = b.finish();
        let f = conn.call(&b, |w, out, id| {
            w.produce_request(out, id, "s", 0, Acks::Leader, b.len())
                .unwrap();
        });
        assert!(f.decode::<ProduceResponse>().body.error().is_none());
    }
    let after = parse(&http_get(metrics, "/metrics").1);
    let n = f64::from(produces);
    assert_eq!(sum(&after, "broker_partition_fsyncs_total", m), n);
    assert_eq!(sum(&after, "broker_partition_disk_writes_total", m), n);
    // Each write is one 4 KiB block: the batches share the tail block,
    // rewritten by every write.
    assert_eq!(
        sum(&after, "broker_partition_disk_write_bytes_total", m),
        n * 4096.0
    );
    assert_eq!(
        sum(&after, "broker_partition_fsync_latency_seconds_count", m),
        n
    );
    assert!(sum(&after, "broker_partition_fsync_latency_seconds_sum", m) > 0.0);
    // The shard did work, and its busy time (published every 100 ms) is a
    // counter: it never goes down while the shard idles.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let later = parse(&http_get(metrics, "/metrics").1);
    let busy = sum(&later, "broker_shard_busy_seconds_total", "");
    assert!(busy > 0.0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let idle = parse(&http_get(metrics, "/metrics").1);
    assert!(sum(&idle, "broker_shard_busy_seconds_total", "") >= busy);
}
