//! Hostile input for the real binary, shared by the hostile-client test and
//! the chaos run: each attempt opens a connection and misbehaves in one way.
//! Nothing here panics when the broker is down or closes the connection:
//! the chaos run attacks a broker that is being killed and paused.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use broker_format::BatchBuilder;
use broker_protocol::{Acks, FrameWriter};

/// xorshift64: a fixed seed replays the same bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A valid batch of four records "good-TAG-I".
pub fn good_batch(tag: u32) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for i in 0..4 {
        b.push(
            1_000 + i,
            None,
            Some(format!("good-{tag}-{i}").as_bytes()),
            &[],
        );
    }
    b.finish()
}

/// Recomputes the CRC-32C of a batch after a deliberate change, so the
/// change reaches the record-level checks.
pub fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Batches the broker must refuse (CorruptBatch), by what is wrong.
pub fn corrupt_batches() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_crc = good_batch(0);
    let n = bad_crc.len();
    bad_crc[n - 2] ^= 0x10;
    let mut wrong_count = good_batch(0);
    wrong_count[57..61].copy_from_slice(&7u32.to_be_bytes());
    fix_crc(&mut wrong_count);
    let mut bad_delta = good_batch(0);
    // The second record's offset delta (after its length and attributes
    // varints): find the first record's length to skip it.
    let first_len = (bad_delta[61] as i8 >> 1) as usize; // zigzag varint, small
    let second = 61 + 1 + first_len;
    bad_delta[second + 3] = 2 * 5; // offset delta 5 instead of 1 (zigzag)
    fix_crc(&mut bad_delta);
    vec![
        ("bad crc", bad_crc),
        ("wrong count", wrong_count),
        ("bad delta", bad_delta),
    ]
}

/// The kinds of attempt, in the order `attempt` cycles through them.
pub const KINDS: [&str; 6] = [
    "random bytes",
    "4 GiB length claim",
    "truncated frame",
    "request flood",
    "abandoned connection",
    "corrupt batch",
];

/// One hostile connection to `addr` of kind `KINDS[kind % KINDS.len()]`;
/// corrupt batches are sent to `topic` partition 0. Errors (the broker is
/// down, it closed the connection) are the attempt's business, not ours.
pub fn attempt(addr: SocketAddr, kind: usize, rng: &mut Rng, topic: &str) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut writer = FrameWriter::new();
    let bytes = match kind % KINDS.len() {
        0 => {
            let n = 1 + (rng.next() % 4096) as usize;
            rng.bytes(n)
        }
        1 => {
            let mut v = u32::MAX.to_be_bytes().to_vec();
            v.extend(rng.bytes(64));
            v
        }
        // A plausible prefix of a 5,000-byte frame, then silence.
        2 => {
            let mut v = 5000u32.to_be_bytes().to_vec();
            v.extend([1, 0, 0, 10]);
            v.extend(rng.bytes(100));
            v
        }
        // Tiny valid requests whose answers are never read.
        3 => {
            let mut v = Vec::new();
            for id in 1..=200 {
                let _ = writer.list_topics_request(&mut v, id);
            }
            v
        }
        4 => Vec::new(),
        // A valid produce frame carrying a corrupt batch.
        _ => {
            let batches = corrupt_batches();
            let (_, batch) = &batches[(rng.next() % batches.len() as u64) as usize];
            let mut v = Vec::new();
            if writer
                .produce_request(&mut v, 1, topic, 0, Acks::Leader, batch.len())
                .is_err()
            {
                return;
            }
            v.extend_from_slice(batch);
            v
        }
    };
    let _ = s.write_all(&bytes);
}
