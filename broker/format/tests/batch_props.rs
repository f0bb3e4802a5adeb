//! Property tests of the record batch codec: what the builder writes decodes
//! to exactly what went in, and no input, random or a damaged valid batch,
//! makes a decoder panic or accept what it should not.
//!
//! The seed is fixed so runs are reproducible; set `PROPTEST_RNG_SEED` to
//! explore others. A failure prints the seed and the minimal failing input.
#![allow(clippy::unwrap_used)]

use broker_format::{
    self as batch, batches, records, validate, verify_crc, BatchBuilder, BatchError, BatchHeader,
    HEADER_LEN,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// A header (owned key, nullable value).
type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

/// One record as the test pushes it and expects it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Input {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<OwnedHeader>,
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0x00ba_7c4e_5eed);
    }
    // Captured by the harness: shown only when a property fails.
    eprintln!("proptest seed: {}", config.rng_seed);
    config
}

/// Timestamps far enough from the extremes that any two differ by an i64.
const TS_RANGE: std::ops::Range<i64> = -(1 << 61)..(1 << 61);

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop_oneof![TS_RANGE, -1000i64..1000],
        prop::option::of(bytes(300)),
        prop::option::of(bytes(2000)),
        prop::collection::vec((bytes(20), prop::option::of(bytes(40))), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Input {
            timestamp,
            key,
            value,
            headers,
        })
}

fn batch_inputs() -> impl Strategy<Value = (i64, Vec<Input>)> {
    (
        prop_oneof![TS_RANGE, -1000i64..1000],
        prop::collection::vec(input(), 1..20),
    )
}

fn build(base_timestamp: i64, inputs: &[Input]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(base_timestamp);
    for r in inputs {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        builder.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    let expected_len = builder.encoded_len();
    let batch = builder.finish();
    assert_eq!(batch.len(), expected_len);
    batch
}

fn decode(batch: &[u8]) -> Result<Vec<Input>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let mut out = Vec::new();
    for r in records(batch)? {
        let r = r?;
        let headers = r
            .headers()
            .map(|h| h.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(headers.len() as u32, r.headers_count());
        out.push(Input {
            timestamp: header.base_timestamp + r.timestamp_delta,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers,
        });
    }
    Ok(out)
}

/// Runs every decoder over `bytes` to the end, checking that they agree:
/// what `validate` accepts, `verify_crc` and `records` accept too.
fn exercise(bytes: &[u8]) {
    let parsed = BatchHeader::parse(bytes);
    if let Some(total) = batch::peek_total_len(bytes) {
        assert!((HEADER_LEN..=batch::MAX_BATCH_LEN).contains(&total));
    }
    if let Ok(header) = validate(bytes) {
        assert_eq!(Ok(header), parsed);
        assert_eq!(verify_crc(bytes), Ok(header));
        let n = drain_records(bytes).unwrap();
        assert_eq!(n, header.records_count as usize);
    }
    let _ = verify_crc(bytes);
    let _ = drain_records(bytes);
    let mut consumed = 0;
    let mut errors = 0;
    let mut it = batches(bytes);
    for item in it.by_ref() {
        match item {
            Ok((header, b)) => {
                assert_eq!(b.len(), header.total_len());
                consumed += b.len();
                let _ = validate(b);
                let _ = drain_records(b);
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1, "batches() yields at most one error");
    assert_eq!(it.consumed(), consumed);
    assert_eq!(errors == 0, consumed == bytes.len());
}

/// Iterates every record and header; returns how many records were yielded
/// if none failed.
fn drain_records(bytes: &[u8]) -> Result<usize, BatchError> {
    let mut n = 0;
    for r in records(bytes)? {
        for h in r?.headers() {
            h?;
        }
        n += 1;
    }
    Ok(n)
}

/// Wraps arbitrary record bytes in a header with a correct length and CRC, so
/// they reach the record parser.
fn wrap_records(records: &[u8], count: i32) -> Vec<u8> {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (HEADER_LEN - 12 + records.len()) as i32,
        partition_leader_epoch: -1,
        magic: batch::MAGIC,
        crc: 0,
        attributes: 0,
        last_offset_delta: count.saturating_sub(1).max(0),
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count,
    };
    let mut b = header.to_bytes().to_vec();
    b.extend_from_slice(records);
    fix_crc(&mut b);
    b
}

fn fix_crc(b: &mut [u8]) {
    if b.len() >= 21 {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    if b.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip { at, mask } => {
            let at = at % b.len();
            b[at] ^= mask;
        }
        Mutation::Truncate { at } => b.truncate(at % b.len()),
        Mutation::Insert { at, byte } => {
            let at = at % (b.len() + 1);
            b.insert(at, byte);
        }
        Mutation::Remove { at } => {
            let at = at % b.len();
            b.remove(at);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn built_batches_validate_and_decode_to_their_input((base, inputs) in batch_inputs()) {
        let batch = build(base, &inputs);
        let header = validate(&batch).unwrap();
        prop_assert_eq!(header.records_count as usize, inputs.len());
        prop_assert_eq!(header.record_count() as usize, inputs.len());
        prop_assert_eq!(header.base_timestamp, base);
        prop_assert_eq!(header.max_timestamp, inputs.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (-1, -1, -1));
        let decoded = decode(&batch).unwrap();
        prop_assert_eq!(&decoded, &inputs);
        for (i, r) in records(&batch).unwrap().enumerate() {
            prop_assert_eq!(r.unwrap().offset_delta as usize, i);
        }
        // The encoding is canonical: rebuilding the decoded records gives the same bytes.
        prop_assert_eq!(build(base, &decoded), batch);
    }

    #[test]
    fn random_bytes_never_panic(bytes in bytes(1024)) {
        exercise(&bytes);
    }

    #[test]
    fn random_records_behind_a_valid_header_never_panic(
        records in bytes(512),
        count in prop_oneof![0i32..4, any::<i32>()],
    ) {
        exercise(&wrap_records(&records, count));
    }

    #[test]
    fn mutated_batches_never_panic(
        (base, inputs) in batch_inputs(),
        mutations in prop::collection::vec(mutation(), 1..4),
        recompute_crc in any::<bool>(),
    ) {
        let mut b = build(base, &inputs);
        for m in &mutations {
            apply(&mut b, m);
        }
        if recompute_crc {
            fix_crc(&mut b);
        }
        exercise(&b);
    }

    #[test]
    fn any_change_from_attributes_on_is_rejected(
        (base, inputs) in batch_inputs(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut b = build(base, &inputs);
        let at = 21 + at.index(b.len() - 21);
        b[at] ^= mask;
        prop_assert!(validate(&b).is_err());
        prop_assert!(verify_crc(&b).is_err());
    }

    #[test]
    fn base_offset_and_leader_epoch_are_outside_the_crc(
        (base, inputs) in batch_inputs(),
        offset in any::<i64>(),
        epoch in any::<i32>(),
    ) {
        let mut b = build(base, &inputs);
        batch::set_base_offset(&mut b, offset);
        batch::set_partition_leader_epoch(&mut b, epoch);
        let header = validate(&b).unwrap();
        prop_assert_eq!((header.base_offset, header.partition_leader_epoch), (offset, epoch));
    }

    #[test]
    fn batches_splits_a_concatenation_exactly(
        parts in prop::collection::vec((batch_inputs(), any::<i64>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let built: Vec<Vec<u8>> = parts
            .iter()
            .map(|((base, inputs), offset)| {
                let mut b = build(*base, inputs);
                batch::set_base_offset(&mut b, *offset);
                b
            })
            .collect();
        let all = built.concat();
        let got: Vec<_> = batches(&all).map(Result::unwrap).collect();
        prop_assert_eq!(got.len(), built.len());
        for ((header, bytes), (expected, ((base, _), offset))) in got.iter().zip(built.iter().zip(&parts)) {
            prop_assert_eq!(*bytes, &expected[..]);
            prop_assert_eq!(header.base_offset, *offset);
            prop_assert_eq!(header.base_timestamp, *base);
            prop_assert_eq!(*header, BatchHeader::parse(expected).unwrap());
        }

        // Cut anywhere: the whole batches before the cut, then one error
        // unless the cut falls on a boundary.
        let cut = cut.index(all.len() + 1);
        let whole = built.iter().scan(0, |end, b| { *end += b.len(); Some(*end) }).filter(|&end| end <= cut).count();
        let on_boundary = cut == 0 || built.iter().scan(0, |end, b| { *end += b.len(); Some(*end) }).any(|end| end == cut);
        let items: Vec<_> = batches(&all[..cut]).collect();
        prop_assert_eq!(items.iter().filter(|i| i.is_ok()).count(), whole);
        prop_assert_eq!(items.len(), if on_boundary { whole } else { whole + 1 });
    }
}
