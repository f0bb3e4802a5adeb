//! Feeds arbitrary bytes to every record batch decoder and walks everything
//! they yield, headers included. Decoders must never panic, and must agree:
//! a batch `validate` accepts, `verify_crc` and `records` accept too, whole.
#![no_main]

use broker_format::{self as batch, BatchHeader};
use libfuzzer_sys::fuzz_target;

mod alloc_bound;

#[global_allocator]
static ALLOC: alloc_bound::Tracking = alloc_bound::Tracking;

/// Where the CRC's coverage starts; the CRC field is the 4 bytes before.
const CRC_START: usize = 21;

fuzz_target!(|data: &[u8]| alloc_bound::check(data.len(), || {
    let _ = BatchHeader::parse(data);
    let _ = batch::peek_total_len(data);
    check_one(data);

    // Random bytes almost never carry a matching CRC; with it recomputed, the
    // record-level checks of `validate` are reached too.
    if data.len() > CRC_START {
        let mut fixed = data.to_vec();
        let crc = crc32c::crc32c(&fixed[CRC_START..]);
        fixed[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_be_bytes());
        check_one(&fixed);
    }

    // The same bytes as a stream of batches, as a fetch or a segment scan
    // sees them; each batch found is then decoded on its own.
    let mut consumed = 0;
    let mut errors = 0;
    let mut it = batch::batches(data);
    for item in it.by_ref() {
        match item {
            Ok((header, bytes)) => {
                assert_eq!(bytes.len(), header.total_len());
                consumed += bytes.len();
                check_one(bytes);
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1, "batches() yields at most one error");
    assert_eq!(it.consumed(), consumed);
    assert_eq!(errors == 0, consumed == data.len());
}));

fn check_one(bytes: &[u8]) {
    let validated = batch::validate(bytes);
    let crc_ok = batch::verify_crc(bytes);
    let walked = walk_records(bytes);
    if let Ok(header) = validated {
        assert_eq!(crc_ok, Ok(header));
        assert_eq!(walked, Some(header.records_count as usize));
    }
}

/// Iterates every record and header; the number of records if none failed.
fn walk_records(bytes: &[u8]) -> Option<usize> {
    let mut n = 0;
    let mut failed = false;
    for record in batch::records(bytes).ok()? {
        match record {
            Ok(r) => {
                let _ = (r.key, r.value, r.timestamp_delta, r.offset_delta);
                for h in r.headers() {
                    failed |= h.is_err();
                }
                n += 1;
            }
            Err(_) => failed = true,
        }
    }
    (!failed).then_some(n)
}
