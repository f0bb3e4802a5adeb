//! Feeds arbitrary bytes to the Kafka request decoders
//! (`broker_server::kafka::check_request`: the header, then the body
//! decoder of its api). They must never panic, and no count or length field
//! may drive an allocation beyond a constant factor of the input's size.
//!
//! The input is used twice: as a whole request (after its size prefix), as
//! a connection hands it to the codec; and with its first four bytes
//! replaced by an api and a version this broker serves (chosen by those
//! bytes), so every body decoder of every version is reached even when the
//! mutated header would be refused. The seed corpus (corpus/kafka_decode/,
//! `cargo run --example kafka_corpus`) is real requests of every api and
//! version, as the `kafka-protocol` crate encodes them.
#![no_main]

use broker_server::kafka::{check_request, APIS};
use libfuzzer_sys::fuzz_target;

mod alloc_bound;

#[global_allocator]
static ALLOC: alloc_bound::Tracking = alloc_bound::Tracking;

fuzz_target!(|data: &[u8]| alloc_bound::check(data.len(), || {
    check_one(data);
    if data.len() >= 4 {
        let api = APIS[usize::from(data[0]) % APIS.len()];
        let span = u16::try_from(api.max - api.min + 1).unwrap_or(1);
        let version = api.min + (u16::from(data[1]) % span) as i16;
        let mut served = data.to_vec();
        served[..2].copy_from_slice(&api.key.to_be_bytes());
        served[2..4].copy_from_slice(&version.to_be_bytes());
        check_one(&served);
    }
}));

/// Decodes one request; a request accepted stays accepted with a byte
/// appended (trailing bytes are tolerated, as Kafka does), and the verdict
/// does not depend on anything but the bytes.
fn check_one(frame: &[u8]) {
    let verdict = check_request(frame);
    assert_eq!(verdict, check_request(frame), "decoding is deterministic");
    if verdict.is_ok() {
        let mut longer = Vec::with_capacity(frame.len() + 1);
        longer.extend_from_slice(frame);
        longer.push(0);
        assert_eq!(
            check_request(&longer),
            Ok(()),
            "a trailing byte made an accepted request fail"
        );
    }
}
