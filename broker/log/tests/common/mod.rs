//! Helpers shared by the log's integration tests: a glommio executor per
//! test, deterministic batches, and a model of what the log must hold.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;

use broker_format::BatchBuilder;

/// Runs `fut` on a fresh glommio executor on this thread.
pub fn run<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor")
        .run(async move {
            broker_shard::spawn_park_guard();
            fut.await
        })
}

/// A small deterministic PRNG (splitmix64): tests print their seed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A batch of `records` records whose values are derived from `seed`, each
/// `value_len` bytes, with timestamps from `base_ts`.
pub fn make_batch(seed: u64, records: usize, value_len: usize, base_ts: i64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut b = BatchBuilder::new(base_ts);
    for i in 0..records {
        let value: Vec<u8> = (0..value_len).map(|_| rng.next() as u8).collect();
        let key = format!("k{seed}-{i}");
        b.push(base_ts + i as i64, Some(key.as_bytes()), Some(&value), &[]);
    }
    b.finish()
}

/// The batch as the log stores it: with its base offset assigned.
pub fn with_base(batch: &[u8], base: u64) -> Vec<u8> {
    let mut b = batch.to_vec();
    broker_format::set_base_offset(&mut b, base as i64);
    b
}

/// Every batch of the log from its start to the high watermark, read back
/// through `Log::read`.
pub async fn read_all(log: &broker_log::Log) -> Vec<Vec<u8>> {
    let mut at = log.log_start_offset();
    let mut out = Vec::new();
    while at < log.high_watermark() {
        let r = log.read(at, 1 << 20).await.unwrap();
        out.extend(split(r.bytes.as_slice()));
        at = r.next_offset;
    }
    out
}

/// Splits concatenated batches.
pub fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    broker_format::batches(bytes)
        .map(|r| r.expect("well-formed batches").1.to_vec())
        .collect()
}

/// Appends `n` batches of 1 to 8 records of 10 to 1,500 bytes, one at a
/// time; returns each as the log stores it: (base offset, next offset,
/// bytes).
pub async fn fill_random(
    log: &broker_log::Log,
    rng: &mut Rng,
    n: usize,
) -> Vec<(u64, u64, Vec<u8>)> {
    let mut model = Vec::new();
    for i in 0..n {
        let records = 1 + rng.below(8) as usize;
        let value_len = 10 + rng.below(1_500) as usize;
        let batch = make_batch(rng.next(), records, value_len, i as i64);
        let a = log.append(&batch).await.unwrap();
        model.push((
            a.base_offset,
            a.next_offset,
            with_base(&batch, a.base_offset),
        ));
    }
    model
}
