//! The service over real shards: two glommio executors in this process,
//! one thread each, joined by a channel mesh and serving their partitions
//! of one topic from one temporary data directory, built as
//! [`crate::start`] builds them (without the listeners, the groups and
//! retention). Each shard runs the receiver loop that hands every message
//! from its peer to [`Shard::on_message`]; the tests call the service on
//! shard 0 and check what comes back and what the logs hold.
//!
//! Every wait is bounded: a step that takes longer than [`STEP`] fails the
//! test instead of hanging it.
#![allow(clippy::unwrap_used)]

use std::{
    cell::Cell,
    future::Future,
    net::SocketAddr,
    rc::Rc,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use glommio::{
    channels::channel_mesh::{Full, MeshBuilder},
    LocalExecutorBuilder, Placement,
};

use super::{
    fetch, list_offsets, produce_many, Acks, FetchRequest, OffsetQuery, ProducePartition, Produced,
    Route,
};
use crate::config::ServerConfig;
use crate::error::{ErrorKind, ServiceResult};
use crate::metadata::{self, DataDir, TopicMeta, TopicTable};
use crate::metrics::Metrics;
use crate::shard::{self, Shard, ShardMessage, ShardParts};
use broker_format::BatchBuilder;
use broker_shard::ShardId;

/// The topic every test produces to.
const TOPIC: &str = "t";
/// Its partitions: two on each shard.
const PARTITIONS: u32 = 4;
/// The shards.
const SHARDS: u16 = 2;
/// The longest one step (a request, opening the partitions, joining the
/// mesh, a shutdown) may take.
const STEP: Duration = Duration::from_secs(20);
/// The longest a whole test may take.
const WHOLE_TEST: Duration = Duration::from_secs(120);

/// `fut`, or a failure naming `what` once `limit` has passed.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what}: not done within {limit:?}"))
}

/// What every shard starts from.
#[derive(Clone)]
struct Boot {
    config: Arc<ServerConfig>,
    data: DataDir,
    topics: TopicTable,
    metrics: Arc<Metrics>,
}

/// Holds a shard's receiver loop back until opened from another shard (to
/// let the mesh channel into it fill up).
#[derive(Clone, Default)]
struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Lets the receiver loop run, [`Gate::DELAY`] from now at the earliest.
    fn open(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// How long after it is opened the gate lets the loop run.
    const DELAY: Duration = Duration::from_millis(2);

    async fn wait(&self) {
        while !self.0.load(Ordering::Acquire) {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        glommio::timer::sleep(Gate::DELAY).await;
    }
}

/// Opens shard `id`'s partitions, joins the mesh and starts the receiver
/// loop, as `run_shard` does (behind `gate` when there is one).
async fn start_shard(
    id: ShardId,
    mesh: MeshBuilder<ShardMessage, Full>,
    boot: Boot,
    gate: Option<Gate>,
) -> Rc<Shard> {
    let metrics = boot.metrics.shard(id);
    let partitions = within(
        STEP,
        "opening the partitions",
        shard::open_all(id, &metrics, &boot.config, &boot.data, &boot.topics),
    )
    .await
    .unwrap();
    let mesh = within(STEP, "joining the mesh", broker_shard::join_mesh(mesh))
        .await
        .unwrap();
    assert_eq!(
        mesh.senders.peer_id(),
        usize::from(id),
        "the mesh must index shards by their id"
    );
    let shard = Rc::new(Shard::new(ShardParts {
        id,
        shard_count: SHARDS,
        config: boot.config.clone(),
        data: boot.data.clone(),
        endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 0)); usize::from(SHARDS)],
        kafka_endpoints: Vec::new(),
        kafka_main: None,
        cluster_id: "test-cluster".into(),
        producer_ids: Some(0),
        topics: boot.topics.clone(),
        partitions,
        peers: mesh.senders,
        metrics,
        open_connections: Arc::default(),
        cluster: None,
    }));
    let mut receivers = mesh.receivers;
    for (_, receiver) in receivers.streams() {
        let (shard, gate) = (shard.clone(), gate.clone());
        glommio::spawn_local(async move {
            if let Some(gate) = gate {
                within(WHOLE_TEST, "waiting for the gate", gate.wait()).await;
            }
            while let Some(msg) = receiver.recv().await {
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.on_message(msg).await }).detach();
            }
        })
        .detach();
    }
    shard
}

/// Runs `test` on shard 0 of two shards over a fresh data directory holding
/// topic [`TOPIC`], while shard 1 serves what shard 0 sends it; then shuts
/// both down.
fn with_two_shards<F, Fut>(test: F)
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    with_two_shards_gated(None, test);
}

/// [`with_two_shards`], shard 1's receiver loop behind `gate` if given.
fn with_two_shards_gated<F, Fut>(gate: Option<Gate>, test: F)
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let tmp = tempfile::tempdir().unwrap();
    // Absolute: glommio's io_uring opens fail on relative paths.
    let data = DataDir::new(tmp.path().canonicalize().unwrap());
    let config = ServerConfig {
        data_dir: data.root().to_path_buf(),
        shards: Some(usize::from(SHARDS)),
        fsync: broker_log::FsyncPolicy::Never,
        ..ServerConfig::default()
    };
    let meta = TopicMeta::new(TOPIC, PARTITIONS, config.topic_defaults, SHARDS);
    for s in 0..SHARDS {
        assert_eq!(
            meta.shards.iter().filter(|&&o| o == s).count(),
            2,
            "placement: {:?}",
            meta.shards
        );
    }
    metadata::create_topic_blocking(&data, &meta).unwrap();
    let topics = metadata::open_data_dir(&data).unwrap();
    assert_eq!(topics.get(TOPIC).map(|t| &**t), Some(&meta));
    let boot = Boot {
        config: Arc::new(config),
        data,
        topics,
        metrics: Metrics::new(),
    };

    let cpus = broker_shard::online_cpus().unwrap();
    let mesh = MeshBuilder::full(usize::from(SHARDS), broker_shard::MESH_CHANNEL_CAPACITY);
    let (finished_tx, finished) = crossbeam_channel::unbounded::<ShardId>();
    // Shard 0 says when it is done; dropped unsent (shard 0 failed), it
    // tells shard 1 as much.
    let (done_tx, done_rx) = futures_channel::oneshot::channel::<()>();
    let mut test = Some(test);
    let mut done_tx = Some(done_tx);
    let mut done_rx = Some(done_rx);
    let mut handles = Vec::new();
    // Spawned in shard order: glommio orders the mesh by executor id, which
    // grows with each executor made.
    for id in 0..SHARDS {
        let (mesh, boot, finished_tx) = (mesh.clone(), boot.clone(), finished_tx.clone());
        let gate = if id == 1 { gate.clone() } else { None };
        let (test, done_tx, done_rx) = if id == 0 {
            (test.take(), done_tx.take(), None)
        } else {
            (None, None, done_rx.take())
        };
        let cpu = cpus[usize::from(id) % cpus.len()];
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("test-shard-{id}"))
            .io_memory(2 << 20)
            .spawn(move || async move {
                broker_shard::spawn_park_guard();
                let shard = start_shard(id, mesh, boot, gate).await;
                if let Some(test) = test {
                    test(shard.clone()).await;
                }
                if let Some(done) = done_rx {
                    // Ok, or shard 0 failed: either way there is no more to serve.
                    let _ = within(WHOLE_TEST, "waiting for shard 0", done).await;
                }
                within(STEP, "shutting the shard down", shard.shut_down(STEP)).await;
                if let Some(done) = done_tx {
                    let _ = done.send(());
                }
                let _ = finished_tx.send(id);
            })
            .unwrap();
        handles.push(handle);
    }
    drop(finished_tx);

    let deadline = std::time::Instant::now() + WHOLE_TEST + STEP;
    let mut count = 0;
    while count < SHARDS {
        match finished.recv_deadline(deadline) {
            Ok(_) => count += 1,
            // A shard panicked (its message is above): join says which.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                panic!("the shards did not finish within {:?}", WHOLE_TEST + STEP)
            }
        }
    }
    for (id, handle) in handles.into_iter().enumerate() {
        if let Err(e) = handle.join() {
            panic!("shard {id} failed: {e}");
        }
    }
    drop(tmp);
}

/// A batch of `records` records whose values name `tag` and their index.
fn batch(tag: &str, records: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..records {
        let value = format!("{tag}/record-{i}");
        b.push(
            1_700_000_000_000 + i as i64,
            None,
            Some(value.as_bytes()),
            &[],
        );
    }
    b.finish()
}

/// `batch` with a byte flipped after the CRC field (in the last record's
/// value): its CRC no longer matches.
fn corrupt(mut batch: Vec<u8>) -> Vec<u8> {
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    batch
}

/// A part of a produce request: `batches` back to back.
fn part(partition: u32, batches: &[Vec<u8>]) -> ProducePartition {
    ProducePartition {
        topic: TOPIC.to_owned(),
        partition,
        batches: Bytes::from(batches.concat()),
    }
}

/// What each partition must hold: its batches as stored (base offsets
/// assigned), in order.
#[derive(Default)]
struct Model {
    stored: std::collections::HashMap<u32, Vec<Vec<u8>>>,
}

impl Model {
    /// One past the partition's last offset.
    fn end(&self, partition: u32) -> u64 {
        self.stored
            .get(&partition)
            .and_then(|b| b.last())
            .map_or(0, |b| {
                let h = broker_format::BatchHeader::parse(b).unwrap();
                h.next_offset() as u64
            })
    }

    /// Records that `batches` are appended to `partition` and returns the
    /// answer their produce must get.
    fn append(&mut self, partition: u32, batches: &[Vec<u8>]) -> Produced {
        let base = self.end(partition);
        let mut next = base;
        for b in batches {
            let mut stored = b.clone();
            broker_format::set_base_offset(&mut stored, next as i64);
            next += u64::from(broker_format::BatchHeader::parse(b).unwrap().record_count());
            self.stored.entry(partition).or_default().push(stored);
        }
        Produced {
            base_offset: base,
            last_offset: next - 1,
            log_append_time: None,
            log_start_offset: 0,
        }
    }

    /// Fetches every partition from offset 0 through `shard` (forwarded to
    /// the owner when it is another shard) and checks it holds exactly the
    /// model's batches, byte for byte, and nothing more.
    async fn check(&self, shard: &Rc<Shard>) {
        for p in 0..PARTITIONS {
            let expected = self.stored.get(&p).cloned().unwrap_or_default();
            let (got, high_watermark) = fetch_all(shard, p).await;
            assert_eq!(
                high_watermark,
                self.end(p),
                "partition {p}: the high watermark"
            );
            assert_eq!(
                got.len(),
                expected.len(),
                "partition {p}: the number of batches"
            );
            for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    got == expected,
                    "partition {p}: batch {i} differs from what was produced"
                );
            }
        }
    }
}

/// Every batch of `partition` from offset 0, fetched from `shard` with
/// [`Route::Forward`], and the high watermark.
async fn fetch_all(shard: &Rc<Shard>, partition: u32) -> (Vec<Vec<u8>>, u64) {
    let mut batches = Vec::new();
    let mut at = 0;
    loop {
        let request = FetchRequest {
            topic: TOPIC.to_owned(),
            partition,
            offset: at as i64,
            max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
        };
        let fetched = within(STEP, "a fetch", fetch(shard, request, Route::Forward))
            .await
            .unwrap();
        let position = fetched.position;
        let bytes = fetched.records.as_slice();
        if bytes.is_empty() {
            assert_eq!(
                at, position.high_watermark,
                "partition {partition}: nothing read below the high watermark"
            );
            return (batches, position.high_watermark);
        }
        for b in broker_format::batches(bytes) {
            batches.push(b.unwrap().1.to_vec());
        }
        assert!(position.next_offset > at, "a fetch must move forward");
        at = position.next_offset;
    }
}

/// The partitions shard `owner` owns, by number.
fn owned_by(shard: &Shard, owner: ShardId) -> Vec<u32> {
    let meta = shard.topic(TOPIC).unwrap();
    (0..PARTITIONS)
        .filter(|&p| meta.owner(p) == Some(owner))
        .collect()
}

/// Checks `answers` one by one against `expected`: the same success, or an
/// error of the same kind.
fn check_answers(answers: &[ServiceResult<Produced>], expected: &[Result<Produced, ErrorKind>]) {
    assert_eq!(answers.len(), expected.len(), "one answer per part");
    for (i, (got, want)) in answers.iter().zip(expected).enumerate() {
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "part {i}"),
            (Err(got), Err(kind)) => assert_eq!(got.kind, *kind, "part {i}: {got}"),
            _ => panic!("part {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn produce_many_scatters_over_shards_and_gathers_in_request_order() {
    with_two_shards(|shard| async move {
        let (here, there) = (owned_by(&shard, 0), owned_by(&shard, 1));
        let mut model = Model::default();
        // Owners interleaved; one partition of each shard asked twice, the
        // remote one the second time with two batches.
        let plan: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (there[0], vec![batch("p0-a", 3)]),
            (here[0], vec![batch("p1-a", 2)]),
            (there[1], vec![batch("p2-a", 4)]),
            (here[1], vec![batch("p3-a", 1)]),
            (there[0], vec![batch("p4-a", 2), batch("p4-b", 5)]),
            (here[0], vec![batch("p5-a", 6)]),
        ];
        let expected: Vec<Result<Produced, ErrorKind>> = plan
            .iter()
            .map(|(p, batches)| Ok(model.append(*p, batches)))
            .collect();
        let parts = plan.iter().map(|(p, b)| part(*p, b)).collect();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::Forward),
        )
        .await;
        check_answers(&answers, &expected);
        // The second part of a partition lands right after its first.
        for (first, second) in [(0, 4), (1, 5)] {
            let (a, b) = (
                answers[first].as_ref().unwrap(),
                answers[second].as_ref().unwrap(),
            );
            assert_eq!(
                b.base_offset,
                a.last_offset + 1,
                "parts {first} and {second}"
            );
        }
        model.check(&shard).await;

        // A second request continues every partition where the first left it.
        let plan: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (here[1], vec![batch("q0-a", 2)]),
            (there[1], vec![batch("q1-a", 3)]),
            (here[0], vec![batch("q2-a", 1)]),
            (there[0], vec![batch("q3-a", 2)]),
        ];
        let expected: Vec<Result<Produced, ErrorKind>> = plan
            .iter()
            .map(|(p, batches)| Ok(model.append(*p, batches)))
            .collect();
        let parts = plan.iter().map(|(p, b)| part(*p, b)).collect();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::Forward),
        )
        .await;
        check_answers(&answers, &expected);
        model.check(&shard).await;
    });
}

#[test]
fn produce_many_fails_only_the_parts_with_a_corrupt_batch() {
    with_two_shards(|shard| async move {
        let (here, there) = (owned_by(&shard, 0), owned_by(&shard, 1));
        let mut model = Model::default();
        // Something in every partition first, so that an append of a corrupt
        // part would show after it.
        let plan: Vec<(u32, Vec<Vec<u8>>)> = (0..PARTITIONS)
            .map(|p| (p, vec![batch(&format!("seed-{p}"), 2)]))
            .collect();
        let expected: Vec<_> = plan.iter().map(|(p, b)| Ok(model.append(*p, b))).collect();
        let parts = plan.iter().map(|(p, b)| part(*p, b)).collect();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::Forward),
        )
        .await;
        check_answers(&answers, &expected);

        // In the middle: a remote part whose only batch is corrupt (the
        // owner's log refuses it), and a local part whose second batch is
        // (refused before its good first batch is appended).
        let good_before = (there[1], vec![batch("c0-a", 3)]);
        let bad_remote = (there[0], vec![corrupt(batch("c1-a", 2))]);
        let good_middle = (here[0], vec![batch("c2-a", 1)]);
        let bad_local = (here[1], vec![batch("c3-a", 2), corrupt(batch("c3-b", 2))]);
        let good_after = (there[0], vec![batch("c4-a", 4)]);
        let expected = vec![
            Ok(model.append(good_before.0, &good_before.1)),
            Err(ErrorKind::CorruptBatch),
            Ok(model.append(good_middle.0, &good_middle.1)),
            Err(ErrorKind::CorruptBatch),
            Ok(model.append(good_after.0, &good_after.1)),
        ];
        let parts = [good_before, bad_remote, good_middle, bad_local, good_after]
            .iter()
            .map(|(p, b)| part(*p, b))
            .collect();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::Forward),
        )
        .await;
        check_answers(&answers, &expected);
        // The good part after the refused one on the same partition got the
        // offset right after the seed: nothing of the corrupt part took one.
        assert_eq!(answers[4].as_ref().unwrap().base_offset, 2);
        model.check(&shard).await;
    });
}

#[test]
fn produce_many_owner_only_refuses_the_parts_another_shard_owns() {
    with_two_shards(|shard| async move {
        let (here, there) = (owned_by(&shard, 0), owned_by(&shard, 1));
        let mut model = Model::default();
        let plan: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (here[0], vec![batch("o0-a", 2)]),
            (there[0], vec![batch("o1-a", 3)]),
            (here[1], vec![batch("o2-a", 1)]),
            (there[1], vec![batch("o3-a", 2)]),
            (here[0], vec![batch("o4-a", 3)]),
        ];
        let expected: Vec<Result<Produced, ErrorKind>> = plan
            .iter()
            .map(|(p, batches)| {
                if here.contains(p) {
                    Ok(model.append(*p, batches))
                } else {
                    Err(ErrorKind::NotOwner)
                }
            })
            .collect();
        let parts = plan.iter().map(|(p, b)| part(*p, b)).collect();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::OwnerOnly),
        )
        .await;
        check_answers(&answers, &expected);
        // Shard 1's partitions are untouched; shard 0's hold their parts.
        model.check(&shard).await;
    });
}

#[test]
fn produce_many_keeps_a_partitions_parts_in_order_when_the_owners_channel_is_full() {
    let gate = Gate::default();
    let opener = gate.clone();
    with_two_shards_gated(Some(gate), |shard| async move {
        let (here, there) = (owned_by(&shard, 0), owned_by(&shard, 1));
        // Fill the channel to shard 1 (its receiver loop is held back): one
        // ListOffsets per slot, each sent on its task's first poll.
        let sent = Rc::new(Cell::new(0));
        let filled = there[1];
        let mut fillers = Vec::new();
        for _ in 0..broker_shard::MESH_CHANNEL_CAPACITY {
            let (shard, sent) = (shard.clone(), sent.clone());
            fillers.push(glommio::spawn_local(async move {
                sent.set(sent.get() + 1);
                list_offsets(&shard, TOPIC, filled, OffsetQuery::Latest, Route::Forward)
                    .await
                    .unwrap();
            }));
        }
        while sent.get() < broker_shard::MESH_CHANNEL_CAPACITY {
            futures_lite::future::yield_now().await;
        }
        futures_lite::future::yield_now().await;

        // Shard 1 starts draining a moment from now: the first part waits
        // for room, and the middle part (a local one whose many batches take
        // a while to check, the last one corrupt) gives shard 1 the time to
        // make some before the last part is sent.
        let slow: Vec<Vec<u8>> = (0..200)
            .map(|i| batch(&format!("slow-{i}"), 1000))
            .chain([corrupt(batch("slow-last", 1))])
            .collect();
        let mut model = Model::default();
        let first = (there[0], vec![batch("first", 3)]);
        let second = (there[0], vec![batch("second", 2)]);
        let expected = vec![
            Ok(model.append(first.0, &first.1)),
            Err(ErrorKind::CorruptBatch),
            Ok(model.append(second.0, &second.1)),
        ];
        let parts = vec![
            part(first.0, &first.1),
            part(here[0], &slow),
            part(second.0, &second.1),
        ];
        opener.open();
        let answers = within(
            STEP,
            "produce_many",
            produce_many(&shard, parts, Acks::Leader, Route::Forward),
        )
        .await;
        for f in fillers {
            within(STEP, "a ListOffsets", f).await;
        }
        check_answers(&answers, &expected);
        model.check(&shard).await;
    });
}
