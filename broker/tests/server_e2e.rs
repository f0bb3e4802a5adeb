//! The real `broker` binary, driven frame by frame over TCP: topics, produce
//! and fetch byte for byte across 2 shards, forwarding from the main port,
//! NotOwner on a shard port, long poll, restart after SIGKILL, bad input,
//! and shard pinning.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::time::{Duration, Instant};

use broker_format::BatchBuilder;
use broker_protocol::generated::{
    CreateTopicResponse, FetchResponse, ListOffsetsResponse, ListTopicsResponse, MetadataResponse,
    ProduceResponse,
};
use broker_protocol::{Acks, ErrorCode, FetchParams, OffsetQuery, TopicSettings};
use server_support::{Broker, Conn, RawFrame};

fn batch(tag: &str, records: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..records {
        let value = format!("{tag}-{i}-{}", "v".repeat(i % 50));
        b.push(
            1_700_000_000_000 + i as i64,
            Some(tag.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.finish()
}

fn create(conn: &mut Conn, name: &str, partitions: i32) -> RawFrame {
    conn.call(&[], |w, out, id| {
        w.create_topic_request(out, id, name, partitions, &TopicSettings::default())
            .unwrap();
    })
}

fn produce(conn: &mut Conn, topic: &str, partition: u32, batch: &[u8]) -> RawFrame {
    conn.call(batch, |w, out, id| {
        w.produce_request(out, id, topic, partition, Acks::Leader, batch.len())
            .unwrap();
    })
}

fn fetch(conn: &mut Conn, topic: &str, partition: u32, offset: i64, max_wait_ms: u32) -> RawFrame {
    conn.call(&[], |w, out, id| {
        w.fetch_request(
            out,
            id,
            &FetchParams {
                topic,
                partition,
                offset,
                max_bytes: 1 << 20,
                max_wait_ms,
            },
        )
        .unwrap();
    })
}

/// The owning shard of every partition of `topic`, from Metadata.
fn owners(conn: &mut Conn, topic: &str) -> (Vec<u16>, Vec<u16>) {
    let f = conn.call(&[], |w, out, id| {
        w.metadata_request(out, id, &[topic]).unwrap();
    });
    let m = f.decode::<MetadataResponse>().body;
    let ports: Vec<u16> = m.shards().unwrap().iter().map(|s| s.port()).collect();
    let t = m.topics().unwrap().get(0);
    assert!(t.error().is_none());
    let owners = t.partitions().unwrap().iter().map(|p| p.shard()).collect();
    (owners, ports)
}

/// Every batch of a partition from offset 0, fetched through `conn`.
fn fetch_all(conn: &mut Conn, topic: &str, partition: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let f = fetch(conn, topic, partition, at, 0);
        let frame = f.decode::<FetchResponse>();
        assert!(frame.body.error().is_none(), "{:?}", f.error());
        if frame.payload.is_empty() {
            return out;
        }
        out.extend_from_slice(frame.payload);
        at = frame.body.next_offset();
    }
}

/// The batch with its base offset as the broker assigns it.
fn stored(batch: &[u8], base: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    broker_format::set_base_offset(&mut b, base);
    b
}

#[test]
fn produce_and_fetch_across_two_shards_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &["--fsync", "never"]);
    assert_eq!(broker.shards.len(), 2);
    let mut main = Conn::connect(broker.listen);
    let f = create(&mut main, "orders", 4);
    assert!(f.error().is_none(), "{:?}", f.error());
    assert_eq!(f.decode::<CreateTopicResponse>().body.partitions(), 4);
    assert_eq!(
        create(&mut main, "orders", 4).error().unwrap().0,
        ErrorCode::TopicExists
    );

    let (owners, ports) = owners(&mut main, "orders");
    assert_eq!(
        ports,
        broker.shards.iter().map(|a| a.port()).collect::<Vec<_>>()
    );
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");

    // Through the main port: half the partitions live on the other shard of
    // whichever shard accepted this connection, so forwarding is exercised.
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for round in 0..5 {
        for p in 0..4u32 {
            let b = batch(&format!("p{p}r{round}"), 1 + round * 7);
            let f = produce(&mut main, "orders", p, &b);
            let r = f.decode::<ProduceResponse>().body;
            assert!(r.error().is_none(), "{:?}", f.error());
            let base = r.base_offset();
            let records = 1 + round as i64 * 7;
            assert_eq!(r.last_offset(), base + records - 1);
            expected[p as usize].extend(stored(&b, base));
        }
    }
    for p in 0..4u32 {
        assert_eq!(
            fetch_all(&mut main, "orders", p),
            expected[p as usize],
            "partition {p} via main"
        );
        // The owner's shard port serves it directly...
        let owner = owners[p as usize] as usize;
        let mut direct = Conn::connect(broker.shards[owner]);
        assert_eq!(fetch_all(&mut direct, "orders", p), expected[p as usize]);
        // ...and the other shard's port refuses it.
        let mut wrong = Conn::connect(broker.shards[1 - owner]);
        let f = fetch(&mut wrong, "orders", p, 0, 0);
        assert_eq!(f.error().unwrap().0, ErrorCode::NotOwner);
        let f = produce(&mut wrong, "orders", p, &batch("x", 1));
        assert_eq!(f.error().unwrap().0, ErrorCode::NotOwner);
    }

    // Topics are listed, and list offsets agree with what was produced.
    let f = main.call(&[], |w, out, id| {
        w.list_topics_request(out, id).unwrap();
    });
    let topics = f.decode::<ListTopicsResponse>().body.topics().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics.get(0).name(), Some("orders"));
    for (query, want) in [
        (OffsetQuery::Earliest, 0),
        (OffsetQuery::Latest, 1 + 8 + 15 + 22 + 29),
    ] {
        let f = main.call(&[], |w, out, id| {
            w.list_offsets_request(out, id, "orders", 3, query).unwrap();
        });
        assert_eq!(f.decode::<ListOffsetsResponse>().body.offset(), want);
    }
}

#[test]
fn pipelined_produces_on_one_connection_keep_their_order() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &["--fsync", "always"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "seq", 2).error().is_none());
    // 300 requests in flight at once, alternating partitions (one of them
    // forwarded), then all answers.
    let mut sent = Vec::new();
    for i in 0..300u32 {
        let b = batch(&format!("n{i}"), 2);
        let p = i % 2;
        let id = conn.send(&b, |w, out, id| {
            w.produce_request(out, id, "seq", p, Acks::Leader, b.len())
                .unwrap();
        });
        sent.push((id, p, b));
    }
    let mut base_of = std::collections::HashMap::new();
    for _ in 0..300 {
        let f = conn.recv().unwrap();
        let r = f.decode::<ProduceResponse>().body;
        assert!(r.error().is_none(), "{:?}", f.error());
        base_of.insert(f.request_id(), r.base_offset());
    }
    for p in 0..2u32 {
        let mut next = 0;
        let mut expected = Vec::new();
        for (id, _, b) in sent.iter().filter(|(_, q, _)| *q == p) {
            assert_eq!(base_of[id], next, "partition {p}: out of order");
            expected.extend(stored(b, next));
            next += 2;
        }
        assert_eq!(fetch_all(&mut conn, "seq", p), expected);
    }
}

#[test]
fn long_poll_wakes_on_data_and_expires_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &["--fsync", "never"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "poll", 2).error().is_none());

    // Empty partition, max wait 300 ms: an empty answer, after the wait.
    let start = Instant::now();
    let f = fetch(&mut conn, "poll", 1, 0, 300);
    let waited = start.elapsed();
    let r = f.decode::<FetchResponse>();
    assert!(r.body.error().is_none());
    assert!(r.payload.is_empty());
    assert_eq!(r.body.next_offset(), 0);
    assert!(
        waited >= Duration::from_millis(290),
        "answered after {waited:?}"
    );

    // A 20 s long poll answered by data produced 200 ms later, on both the
    // owner's port and the main port (forwarded).
    for addr in [broker.listen, broker.shards[0], broker.shards[1]] {
        let mut poller = Conn::connect(addr);
        let hw = {
            let f = conn.call(&[], |w, out, id| {
                w.list_offsets_request(out, id, "poll", 1, OffsetQuery::Latest)
                    .unwrap();
            });
            f.decode::<ListOffsetsResponse>().body.offset()
        };
        let (owners, _) = owners(&mut conn, "poll");
        if addr != broker.listen && broker.shards[owners[1] as usize] != addr {
            continue;
        }
        let listen = broker.listen;
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut c = Conn::connect(listen);
            let f = produce(&mut c, "poll", 1, &batch("late", 3));
            assert!(f.error().is_none());
        });
        let start = Instant::now();
        let f = fetch(&mut poller, "poll", 1, hw, 20_000);
        let waited = start.elapsed();
        producer.join().unwrap();
        let r = f.decode::<FetchResponse>();
        assert!(r.body.error().is_none());
        assert!(!r.payload.is_empty(), "the long poll returned empty");
        assert_eq!(r.body.next_offset(), hw + 3);
        assert!(
            waited < Duration::from_secs(10),
            "woken only after {waited:?}"
        );
    }
}

#[test]
fn everything_acknowledged_survives_sigkill_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, 2, &["--fsync", "always"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "durable", 3).error().is_none());
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); 3];
    for i in 0..60u32 {
        let p = i % 3;
        let b = batch(&format!("d{i}"), 5);
        let f = produce(&mut conn, "durable", p, &b);
        let r = f.decode::<ProduceResponse>().body;
        assert!(r.error().is_none());
        expected[p as usize].extend(stored(&b, r.base_offset()));
    }
    let (owners_before, _) = owners(&mut conn, "durable");
    drop(conn);
    broker.kill();

    let broker = Broker::start(&data, 2, &["--fsync", "always"]);
    let mut conn = Conn::connect(broker.listen);
    let (owners_after, _) = owners(&mut conn, "durable");
    assert_eq!(owners_before, owners_after, "placement is persisted");
    for p in 0..3u32 {
        assert_eq!(fetch_all(&mut conn, "durable", p), expected[p as usize]);
    }
    // And it takes new writes after the restart, at the right offsets.
    let f = produce(&mut conn, "durable", 0, &batch("after", 1));
    assert_eq!(f.decode::<ProduceResponse>().body.base_offset(), 100);
}

#[test]
fn bad_requests_get_documented_errors_and_the_broker_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        &tmp.path().join("data"),
        2,
        &["--max-frame-bytes", "1048576"],
    );
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "t", 1).error().is_none());
    let good = batch("good", 4);
    assert!(produce(&mut conn, "t", 0, &good).error().is_none());

    // Unknown topic, unknown partition.
    assert_eq!(
        fetch(&mut conn, "nope", 0, 0, 0).error().unwrap().0,
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        produce(&mut conn, "nope", 0, &good).error().unwrap().0,
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        fetch(&mut conn, "t", 7, 0, 0).error().unwrap().0,
        ErrorCode::UnknownPartition
    );

    // Offset out of range carries the valid range.
    let f = fetch(&mut conn, "t", 0, 99, 0);
    let r = f.decode::<FetchResponse>().body;
    let e = r.error().unwrap();
    assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);
    assert_eq!((e.log_start_offset(), e.high_watermark()), (0, 4));

    // A corrupt batch (one flipped byte under the CRC) is refused and
    // nothing is appended; so is a payload that is not whole batches.
    let mut bad = batch("bad", 3);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert_eq!(
        produce(&mut conn, "t", 0, &bad).error().unwrap().0,
        ErrorCode::CorruptBatch
    );
    assert_eq!(
        produce(&mut conn, "t", 0, &good[..good.len() - 3])
            .error()
            .unwrap()
            .0,
        ErrorCode::CorruptBatch
    );
    assert_eq!(
        produce(&mut conn, "t", 0, &[]).error().unwrap().0,
        ErrorCode::InvalidRequest
    );
    // Invalid topic settings and names.
    assert_eq!(
        create(&mut conn, "bad/name", 1).error().unwrap().0,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        create(&mut conn, "zero", 0).error().unwrap().0,
        ErrorCode::InvalidRequest
    );
    let f = fetch(&mut conn, "t", 0, 0, 0);
    assert_eq!(
        f.decode::<FetchResponse>().body.high_watermark(),
        4,
        "nothing bad reached the log"
    );

    // A frame claiming 1 GiB: FrameTooLarge, then the connection is closed.
    let mut huge = Conn::connect(broker.listen);
    let mut prefix = Vec::new();
    prefix.extend_from_slice(&(1u32 << 30).to_be_bytes());
    prefix.extend_from_slice(&[1, 0, 0, 11]);
    prefix.extend_from_slice(&77u64.to_be_bytes());
    prefix.extend_from_slice(&0u32.to_be_bytes());
    std::io::Write::write_all(&mut huge.stream, &prefix).unwrap();
    let f = huge.recv().expect("an error answer before the close");
    assert_eq!(f.request_id(), 77);
    assert_eq!(f.error().unwrap().0, ErrorCode::FrameTooLarge);
    assert!(huge.is_closed_by_peer());

    // Random garbage: answered or closed, never a crash.
    let mut rng = 0x1234_5678_u64;
    for _ in 0..20 {
        let mut junk = Conn::connect(broker.listen);
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let _ = std::io::Write::write_all(&mut junk.stream, &bytes);
        junk.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(junk.is_closed_by_peer());
    }
    // A connection abandoned mid-frame.
    {
        let mut half = Conn::connect(broker.listen);
        std::io::Write::write_all(&mut half.stream, &prefix[..10]).unwrap();
    }

    // Everyone else is still served, and the data is intact.
    assert!(broker.alive());
    let mut other = Conn::connect(broker.listen);
    let f = fetch(&mut other, "t", 0, 0, 0);
    assert_eq!(f.decode::<FetchResponse>().payload, stored(&good, 0));
    assert!(produce(&mut conn, "t", 0, &good).error().is_none());
}

#[test]
fn topics_are_deleted_and_can_be_created_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let broker = Broker::start(&data, 2, &["--fsync", "never"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "gone", 3).error().is_none());
    for p in 0..3 {
        assert!(produce(&mut conn, "gone", p, &batch("g", 2))
            .error()
            .is_none());
    }
    let f = conn.call(&[], |w, out, id| {
        w.delete_topic_request(out, id, "gone").unwrap();
    });
    assert!(f.error().is_none(), "{:?}", f.error());
    assert_eq!(
        fetch(&mut conn, "gone", 0, 0, 0).error().unwrap().0,
        ErrorCode::UnknownTopic
    );
    assert!(!data.join("topics/gone").exists());
    let f = conn.call(&[], |w, out, id| {
        w.delete_topic_request(out, id, "gone").unwrap();
    });
    assert_eq!(f.error().unwrap().0, ErrorCode::UnknownTopic);
    // Created again: empty, offsets from 0.
    assert!(create(&mut conn, "gone", 1).error().is_none());
    let f = produce(&mut conn, "gone", 0, &batch("new", 1));
    assert_eq!(f.decode::<ProduceResponse>().body.base_offset(), 0);
    drop(conn);
    broker.kill();
    // A restart sees the new topic only.
    let broker = Broker::start(&data, 2, &[]);
    let mut conn = Conn::connect(broker.listen);
    let (owners, _) = owners(&mut conn, "gone");
    assert_eq!(owners.len(), 1);
}

#[test]
fn each_shard_thread_is_pinned_to_its_own_core() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 2, &[]);
    let pid = broker.child.id();
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let Some(shard) = name.trim().strip_prefix("shard-") else {
            continue;
        };
        // glommio appends its executor id: "shard-<ours>-<glommio's>".
        let Ok(shard) = shard.split('-').next().unwrap_or("").parse::<usize>() else {
            continue;
        };
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        pinned.push((shard, cpus));
    }
    pinned.sort();
    // Each executor thread and its blocking-pool thread carry the name.
    pinned.dedup();
    let online: Vec<usize> = broker_shard::online_cpus().unwrap();
    assert_eq!(
        pinned,
        vec![(0, online[0].to_string()), (1, online[1].to_string())],
        "each shard thread allows exactly its own CPU"
    );
}

#[test]
fn a_produce_of_several_batches_is_validated_whole_then_appended_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("data"), 1, &["--fsync", "never"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "multi", 1).error().is_none());
    let parts = [batch("a", 3), batch("b", 1), batch("c", 6)];
    let payload: Vec<u8> = parts.concat();
    let f = produce(&mut conn, "multi", 0, &payload);
    let r = f.decode::<ProduceResponse>().body;
    assert!(r.error().is_none(), "{:?}", f.error());
    assert_eq!((r.base_offset(), r.last_offset()), (0, 9));

    // The third batch is corrupt: the request fails and none of it lands.
    let mut bad = [batch("x", 2), batch("y", 2), batch("z", 2)];
    bad[2][70] ^= 1;
    let f = produce(&mut conn, "multi", 0, &bad.concat());
    assert_eq!(f.error().unwrap().0, ErrorCode::CorruptBatch);

    let expected: Vec<u8> = [
        stored(&parts[0], 0),
        stored(&parts[1], 3),
        stored(&parts[2], 4),
    ]
    .concat();
    assert_eq!(fetch_all(&mut conn, "multi", 0), expected);
}

#[test]
fn sigterm_under_load_exits_cleanly_and_the_restart_truncates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // fsync=never: only the graceful stop makes the data durable.
    let mut broker = Broker::start(&data, 2, &["--fsync", "never"]);
    let mut conn = Conn::connect(broker.listen);
    assert!(create(&mut conn, "load", 2).error().is_none());
    let addr = broker.listen;
    let producer = std::thread::spawn(move || {
        let mut conn = Conn::connect(addr);
        let mut acked: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        for i in 0u32.. {
            let p = i % 2;
            let b = batch(&format!("l{i}"), 10);
            let id = conn.send(&b, |w, out, id| {
                w.produce_request(out, id, "load", p, Acks::Leader, b.len())
                    .unwrap();
            });
            match conn.recv() {
                Some(f) if f.request_id() == id && f.error().is_none() => {
                    let base = f.decode::<ProduceResponse>().body.base_offset();
                    acked[p as usize].push(stored(&b, base));
                }
                // Refused or cut off by the stop: not acknowledged.
                _ => return acked,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = broker.terminate();
    assert!(status.success(), "exit status {status:?}");
    let acked = producer.join().unwrap();
    assert!(
        acked[0].len() > 5,
        "the load ran ({} batches)",
        acked[0].len()
    );
    assert!(broker.stderr().contains("shard stopped"));

    let broker = Broker::start(&data, 2, &["--fsync", "never"]);
    let mut conn = Conn::connect(broker.listen);
    for p in 0..2u32 {
        assert_eq!(fetch_all(&mut conn, "load", p), acked[p as usize].concat());
    }
    let log = broker.stderr();
    assert!(
        !log.contains("truncated"),
        "recovery truncated after a graceful stop:\n{log}"
    );
}

#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _first = Broker::start(&data, 1, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn serve_with_default_flags_keeps_data_in_dot_data() {
    // `broker serve` with nothing but a free port (so tests can run side by
    // side): the data directory is the relative ./data.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let listen: std::net::SocketAddr = line
        .split(' ')
        .find_map(|f| f.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no ready line: {line:?}"))
        .parse()
        .unwrap();
    let mut conn = Conn::connect(listen);
    assert!(create(&mut conn, "here", 1).error().is_none());
    assert!(produce(&mut conn, "here", 0, &batch("x", 1))
        .error()
        .is_none());
    let _ = child.kill();
    let _ = child.wait();
    assert!(tmp.path().join("data/broker.json").exists());
    assert!(tmp.path().join("data/topics/here/0").is_dir());
}

#[test]
fn the_config_file_is_read_flags_win_and_bad_keys_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("broker.toml");
    std::fs::write(
        &file,
        "shards = 1\nfsync = \"never\"\nlisten = \"127.0.0.1:0\"\ndefault_partitions = 3\n\
         group_min_session_timeout_ms = 2000\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_broker");
    let out = std::process::Command::new(bin)
        .args(["config", "print", "--config"])
        .arg(&file)
        .args(["--fsync", "interval"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("fsync = \"interval\""), "{printed}");
    assert!(printed.contains("default_partitions = 3"), "{printed}");
    assert!(printed.contains("max_frame_bytes = 67108864"), "{printed}");

    // The file drives a real broker: a topic created without a count gets
    // the file's default of 3 partitions.
    let data = tmp.path().join("data");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let listen: std::net::SocketAddr = line
        .split(' ')
        .find_map(|f| f.strip_prefix("listen="))
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = Conn::connect(listen);
    let f = create(&mut conn, "defaulted", -1);
    assert_eq!(f.decode::<CreateTopicResponse>().body.partitions(), 3);
    // The file's group limit holds: a member asking for a shorter session
    // is refused, naming the setting; one at the limit joins.
    let join = |conn: &mut Conn, session_ms: u32| {
        conn.call(&[], |w, out, id| {
            w.join_group_request(out, id, "g", "", &["defaulted"], session_ms)
                .unwrap();
        })
    };
    let (code, message) = join(&mut conn, 1999).error().unwrap();
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(
        message.contains("group_min_session_timeout_ms"),
        "{message}"
    );
    assert!(join(&mut conn, 2000).error().is_none());
    let _ = child.kill();
    let _ = child.wait();

    std::fs::write(&file, "shards = 1\nfsink = \"never\"\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `fsink`"), "{stderr}");
}
