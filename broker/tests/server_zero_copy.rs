//! The fetch path copies no record bytes in user space: a fetch served by
//! the owning shard writes the payload to the socket straight from the
//! log's buffer. The server counts, in debug builds, bytes written from log
//! buffers and bytes copied to forward an answer across shards; a copy
//! added anywhere on the owner's fetch path (into the response head, into a
//! `Vec`) moves the bytes out of the first counter and fails this test.
#![allow(clippy::unwrap_used)]

mod server_support;

use broker_format::BatchBuilder;
use broker_protocol::generated::{FetchResponse, MetadataResponse, ProduceResponse};
use broker_protocol::{Acks, FetchParams, TopicSettings};
use broker_server::{copy_stats, ServerConfig};
use server_support::Conn;

#[test]
fn fetch_from_the_owner_writes_log_buffers_without_a_copy() {
    if !cfg!(debug_assertions) {
        eprintln!("the copy counters exist in debug builds only");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: tmp.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        fsync: broker_log::FsyncPolicy::Never,
        ..ServerConfig::default()
    };
    let server = broker_server::start(config).unwrap();
    let mut main = Conn::connect(server.listen);
    let f = main.call(&[], |w, out, id| {
        w.create_topic_request(out, id, "zc", 2, &TopicSettings::default())
            .unwrap();
    });
    assert!(f.error().is_none());
    let mut b = BatchBuilder::new(0);
    for i in 0..100 {
        b.push(i, None, Some(&[i as u8; 200]), &[]);
    }
    let batch = b.finish();
    for p in 0..2 {
        let f = main.call(&batch, |w, out, id| {
            w.produce_request(out, id, "zc", p, Acks::Leader, batch.len())
                .unwrap();
        });
        assert!(f.decode::<ProduceResponse>().body.error().is_none());
    }
    let f = main.call(&[], |w, out, id| {
        w.metadata_request(out, id, &["zc"]).unwrap();
    });
    let owners: Vec<u16> = f
        .decode::<MetadataResponse>()
        .body
        .topics()
        .unwrap()
        .get(0)
        .partitions()
        .unwrap()
        .iter()
        .map(|p| p.shard())
        .collect();

    let fetch = |conn: &mut Conn, p: u32| -> usize {
        let f = conn.call(&[], |w, out, id| {
            w.fetch_request(
                out,
                id,
                &FetchParams {
                    topic: "zc",
                    partition: p,
                    offset: 0,
                    max_bytes: 1 << 20,
                    max_wait_ms: 0,
                },
            )
            .unwrap();
        });
        let frame = f.decode::<FetchResponse>();
        let mut expected = batch.clone();
        broker_format::set_base_offset(&mut expected, 0);
        assert_eq!(frame.payload, expected.as_slice());
        frame.payload.len()
    };

    for p in 0..2u32 {
        // From the owner's own port: every payload byte from a log buffer.
        let mut direct = Conn::connect(server.shard_addrs[owners[p as usize] as usize]);
        let (sent0, copied0) = copy_stats::snapshot();
        let len = fetch(&mut direct, p);
        let (sent1, copied1) = copy_stats::snapshot();
        assert_eq!(
            sent1 - sent0,
            len as u64,
            "partition {p}: payload not sent from the log buffer"
        );
        assert_eq!(
            copied1, copied0,
            "partition {p}: a copy on the owner's fetch path"
        );

        // From the main port: zero-copy when the accepting shard owns it,
        // one counted copy when the answer is forwarded; never both.
        let (sent0, copied0) = copy_stats::snapshot();
        let len = fetch(&mut main, p);
        let (sent1, copied1) = copy_stats::snapshot();
        assert_eq!((sent1 - sent0) + (copied1 - copied0), len as u64);
    }
}
