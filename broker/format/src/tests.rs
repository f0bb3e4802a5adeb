//! Unit tests of the batch format: known answers laid out by hand and by a
//! third-party encoder, CRC coverage, and one test per error variant driven by
//! real bad bytes.
#![allow(clippy::unwrap_used)]

use super::*;

const BASE_TS: i64 = 1_700_000_000_000;

/// The two-record batch of `builder_matches_hand_laid_batch`, byte by byte.
fn hand_laid_batch() -> Vec<u8> {
    let mut records = Vec::new();
    // Record 0: length 76 (zigzag 152 = 0x98 0x01), attributes 0,
    // timestamp delta 5 (0x0a), offset delta 0, key "k" (length 1 = 0x02),
    // value 64 x 0xab (length 64 = zigzag 128 = 0x80 0x01),
    // one header (0x02): key "h", value "x".
    records.extend_from_slice(&[0x98, 0x01, 0x00, 0x0a, 0x00, 0x02, b'k', 0x80, 0x01]);
    records.extend_from_slice(&[0xab; 64]);
    records.extend_from_slice(&[0x02, 0x02, b'h', 0x02, b'x']);
    // Record 1: length 9 (0x12), attributes 0, timestamp delta -1 (0x01),
    // offset delta 1 (0x02), null key (0x01), null value (0x01),
    // one header: key "n", null value.
    records.extend_from_slice(&[0x12, 0x00, 0x01, 0x02, 0x01, 0x01, 0x02, 0x02, b'n', 0x01]);
    assert_eq!(records.len(), 88);

    let mut b = Vec::new();
    b.extend_from_slice(&[0; 8]); // base offset 0
    b.extend_from_slice(&[0x00, 0x00, 0x00, 137]); // batch length 49 + 88
    b.extend_from_slice(&[0xff; 4]); // partition leader epoch -1
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // CRC, filled below
    b.extend_from_slice(&[0x00, 0x00]); // attributes
    b.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // last offset delta
    b.extend_from_slice(&BASE_TS.to_be_bytes()); // base timestamp
    b.extend_from_slice(&(BASE_TS + 5).to_be_bytes()); // max timestamp
    b.extend_from_slice(&[0xff; 8]); // producer id -1
    b.extend_from_slice(&[0xff; 2]); // producer epoch -1
    b.extend_from_slice(&[0xff; 4]); // base sequence -1
    b.extend_from_slice(&[0x00, 0x00, 0x00, 0x02]); // records count
    assert_eq!(b.len(), 61);
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn built_batch() -> Vec<u8> {
    let mut builder = BatchBuilder::new(BASE_TS);
    builder.push(
        BASE_TS + 5,
        Some(b"k"),
        Some(&[0xab; 64]),
        &[(b"h", Some(b"x"))],
    );
    builder.push(BASE_TS - 1, None, None, &[(b"n", None)]);
    builder.finish()
}

/// A batch around hand-made record bytes, with a correct CRC and length.
fn batch_with_records(records: &[u8], count: i32, base_ts: i64, max_ts: i64) -> Vec<u8> {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (49 + records.len()) as i32,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count,
    };
    let mut b = header.to_bytes().to_vec();
    b.extend_from_slice(records);
    recrc(&mut b);
    b
}

/// Recomputes the CRC after a test edited covered bytes.
fn recrc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites header fields of `b` and recomputes the CRC.
fn edit_header(b: &mut [u8], edit: impl FnOnce(&mut BatchHeader)) {
    let mut h = BatchHeader::parse(b).unwrap();
    edit(&mut h);
    b[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    recrc(b);
}

/// One record with the given fields, encoded by hand (single-byte varints).
fn one_record(body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 64);
    let mut r = vec![(body.len() * 2) as u8];
    r.extend_from_slice(body);
    r
}

fn record_fault(b: &[u8]) -> (u32, RecordFault) {
    match validate(b) {
        Err(BatchError::Record { index, fault }) => (index, fault),
        other => panic!("expected a record fault, got {other:?}"),
    }
}

#[test]
fn crc32c_crate_is_castagnoli() {
    // The standard check value of CRC-32C.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn builder_matches_hand_laid_batch() {
    let expected = hand_laid_batch();
    assert_eq!(built_batch(), expected);
    let header = validate(&expected).unwrap();
    assert_eq!(
        header,
        BatchHeader {
            base_offset: 0,
            batch_length: 137,
            partition_leader_epoch: -1,
            magic: 2,
            crc: u32::from_be_bytes(expected[17..21].try_into().unwrap()),
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: BASE_TS,
            max_timestamp: BASE_TS + 5,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 2,
        }
    );
    assert_eq!(header.total_len(), 149);
    assert_eq!(header.next_offset(), 2);
    assert_eq!(header.record_count(), 2);
    assert_eq!(header.to_bytes(), expected[..HEADER_LEN]);
}

#[test]
fn records_of_hand_laid_batch_decode() {
    let batch = hand_laid_batch();
    let records: Vec<Record<'_>> = records(&batch).unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].offset_delta, 0);
    assert_eq!(records[0].timestamp_delta, 5);
    assert_eq!(records[0].timestamp(BASE_TS), Some(BASE_TS + 5));
    assert_eq!(records[0].key, Some(&b"k"[..]));
    assert_eq!(records[0].value, Some(&[0xab; 64][..]));
    let headers: Vec<_> = records[0].headers().map(Result::unwrap).collect();
    assert_eq!(headers, vec![(&b"h"[..], Some(&b"x"[..]))]);
    assert_eq!(records[1].offset_delta, 1);
    assert_eq!(records[1].timestamp_delta, -1);
    assert_eq!((records[1].key, records[1].value), (None, None));
    assert_eq!(records[1].headers_count(), 1);
    let headers: Vec<_> = records[1].headers().map(Result::unwrap).collect();
    assert_eq!(headers, vec![(&b"n"[..], None)]);
}

/// The "uncompressed record" batch of the Sarama (Go client) test suite,
/// CRC included: an encoder other than ours agrees on layout and CRC.
fn sarama_uncompressed_batch() -> Vec<u8> {
    let mut b = vec![
        0, 0, 0, 0, 0, 0, 0, 0, // base offset
        0, 0, 0, 70, // batch length
        0, 0, 0, 0, // partition leader epoch
        2, // magic
        84, 121, 97, 253, // CRC
        0, 0, // attributes
        0, 0, 0, 0, // last offset delta
        0, 0, 1, 88, 141, 205, 89, 56, // base timestamp 1479847795000
        0, 0, 0, 0, 0, 0, 0, 0, // max timestamp 0
        0, 0, 0, 0, 0, 0, 0, 0, // producer id
        0, 0, // producer epoch
        0, 0, 0, 0, // base sequence
        0, 0, 0, 1, // records count
    ];
    b.extend_from_slice(&[
        40, 0, 10, 0, // length 20, attributes, timestamp delta 5, offset delta 0
        8, 1, 2, 3, 4, // key
        6, 5, 6, 7, // value
        2, 6, 8, 9, 10, 4, 11, 12, // one header
    ]);
    b
}

#[test]
fn third_party_batch_passes_crc_and_decodes() {
    let batch = sarama_uncompressed_batch();
    let header = verify_crc(&batch).unwrap();
    assert_eq!(header.base_timestamp, 1_479_847_795_000);
    let records: Vec<_> = records(&batch).unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].timestamp_delta, 5);
    assert_eq!(records[0].key, Some(&[1, 2, 3, 4][..]));
    assert_eq!(records[0].value, Some(&[5, 6, 7][..]));
    let headers: Vec<_> = records[0].headers().map(Result::unwrap).collect();
    assert_eq!(headers, vec![(&[8, 9, 10][..], Some(&[11, 12][..]))]);
    // Sarama leaves max_timestamp 0 here; we require it to be exact.
    assert_eq!(
        validate(&batch),
        Err(BatchError::MaxTimestampMismatch {
            stored: 0,
            computed: 1_479_847_795_005
        })
    );
}

#[test]
fn crc_covers_attributes_to_end_and_nothing_before() {
    let batch = built_batch();
    for i in 0..batch.len() {
        let mut b = batch.clone();
        b[i] ^= 0x01;
        let verdict = verify_crc(&b);
        match i {
            0..=7 | 12..=15 => {
                assert_eq!(
                    verify_crc(&b).map(|h| h.crc),
                    Ok(BatchHeader::parse(&batch).unwrap().crc)
                );
                assert!(validate(&b).is_ok(), "byte {i} is not covered by the CRC");
            }
            8..=11 => assert!(verdict.is_err(), "byte {i}: the length changed"),
            16 => assert_eq!(verdict, Err(BatchError::UnsupportedMagic(3))),
            _ => assert!(
                matches!(verdict, Err(BatchError::CrcMismatch { .. })),
                "byte {i}: {verdict:?}"
            ),
        }
    }
}

#[test]
fn every_bit_flip_in_records_fails_crc() {
    let batch = built_batch();
    for i in HEADER_LEN..batch.len() {
        for bit in 0..8 {
            let mut b = batch.clone();
            b[i] ^= 1 << bit;
            assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
        }
    }
}

#[test]
fn set_base_offset_keeps_crc_valid() {
    let mut batch = built_batch();
    set_base_offset(&mut batch, 1_000_000);
    set_partition_leader_epoch(&mut batch, 7);
    let header = validate(&batch).unwrap();
    assert_eq!(header.base_offset, 1_000_000);
    assert_eq!(header.partition_leader_epoch, 7);
    assert_eq!(header.next_offset(), 1_000_002);
    assert_eq!(&batch[..8], &1_000_000i64.to_be_bytes());
}

#[test]
fn stamping_log_append_time_sets_max_timestamp_and_attribute_and_a_valid_crc() {
    let original = built_batch();
    let mut batch = original.clone();
    let now = BASE_TS + 60_000;
    let stamped = Validated::stamp_log_append_time(&mut batch, now).unwrap();
    assert_eq!(stamped.header().max_timestamp, now);
    assert_ne!(stamped.header().attributes & ATTR_LOG_APPEND_TIME, 0);
    let header = *stamped.header();
    // What the bytes now say, read afresh, is what the stamp returned.
    assert_eq!(validate(&batch).unwrap(), header);
    // Only the attributes, the max timestamp and the CRC changed.
    let changed: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i] != original[i])
        .collect();
    assert!(
        changed
            .iter()
            .all(|i| (17..23).contains(i) || (35..43).contains(i)),
        "{changed:?}"
    );
    // A corrupt batch is refused before it is stamped.
    let mut corrupt = original.clone();
    corrupt[70] ^= 1;
    let before = corrupt.clone();
    assert!(matches!(
        Validated::stamp_log_append_time(&mut corrupt, now),
        Err(BatchError::CrcMismatch { .. })
    ));
    assert_eq!(corrupt, before);
}

#[test]
fn validated_check_is_validate() {
    let batch = built_batch();
    let v = Validated::check(&batch).unwrap();
    assert_eq!(*v.header(), validate(&batch).unwrap());
    assert_eq!(v.bytes(), &batch[..]);
    let mut bad = batch.clone();
    bad[70] ^= 1;
    assert!(Validated::check(&bad).is_err());
}

#[test]
fn next_offset_saturates() {
    let mut batch = built_batch();
    set_base_offset(&mut batch, i64::MAX - 1);
    assert_eq!(BatchHeader::parse(&batch).unwrap().next_offset(), i64::MAX);
}

#[test]
fn peek_total_len_reads_length_fields_only() {
    let batch = built_batch();
    assert_eq!(peek_total_len(&batch[..12]), Some(batch.len()));
    assert_eq!(peek_total_len(&batch[..11]), None);
    let mut b = batch[..12].to_vec();
    b[8..12].copy_from_slice(&48i32.to_be_bytes());
    assert_eq!(peek_total_len(&b), None);
    b[8..12].copy_from_slice(&49i32.to_be_bytes());
    assert_eq!(peek_total_len(&b), Some(61));
    b[8..12].copy_from_slice(&((MAX_BATCH_LEN - 12) as i32).to_be_bytes());
    assert_eq!(peek_total_len(&b), Some(MAX_BATCH_LEN));
    b[8..12].copy_from_slice(&((MAX_BATCH_LEN - 11) as i32).to_be_bytes());
    assert_eq!(peek_total_len(&b), None);
}

#[test]
fn batches_yields_each_then_stops_at_truncation() {
    let a = built_batch();
    let mut b = built_batch();
    set_base_offset(&mut b, 2);
    let mut bytes = [a.clone(), b.clone()].concat();
    let got: Vec<_> = batches(&bytes).map(Result::unwrap).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].1, got[1].1), (&a[..], &b[..]));
    assert_eq!(got[1].0.base_offset, 2);

    bytes.extend_from_slice(&a[..a.len() - 1]);
    let mut it = batches(&bytes);
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.consumed(), a.len() + b.len());
    assert_eq!(
        it.next(),
        Some(Err(BatchError::Truncated {
            declared: a.len(),
            available: a.len() - 1
        }))
    );
    assert_eq!(it.next(), None);
    assert_eq!(it.consumed(), a.len() + b.len());
    assert_eq!(batches(&[]).next(), None);
}

#[test]
fn truncated_header_is_reported() {
    let batch = built_batch();
    assert_eq!(
        BatchHeader::parse(&batch[..40]),
        Err(BatchError::TruncatedHeader { available: 40 })
    );
    assert_eq!(
        BatchHeader::parse(&batch[..5]),
        Err(BatchError::TruncatedHeader { available: 5 })
    );
    assert_eq!(
        batches(&batch[..60]).next(),
        Some(Err(BatchError::TruncatedHeader { available: 60 }))
    );
}

#[test]
fn batch_length_below_header_is_rejected() {
    let mut b = built_batch();
    b[8..12].copy_from_slice(&12i32.to_be_bytes());
    let err = BatchHeader::parse(&b).unwrap_err();
    assert_eq!(err, BatchError::LengthBelowHeader(12));
    assert_eq!(
        err.to_string(),
        "batch length 12 is below the 49-byte header minimum"
    );
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(validate(&b), Err(BatchError::LengthBelowHeader(-1)));
}

#[test]
fn batch_above_max_len_is_rejected() {
    let mut b = built_batch();
    b[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(
        BatchHeader::parse(&b),
        Err(BatchError::TooLarge(i32::MAX as u64 + 12))
    );
}

#[test]
fn wrong_magic_is_rejected() {
    let mut b = built_batch();
    b[16] = 1;
    assert_eq!(validate(&b), Err(BatchError::UnsupportedMagic(1)));
}

#[test]
fn negative_last_offset_delta_is_rejected() {
    let mut b = built_batch();
    b[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(
        BatchHeader::parse(&b),
        Err(BatchError::NegativeLastOffsetDelta(-1))
    );
}

#[test]
fn slice_longer_or_shorter_than_batch_is_rejected() {
    let mut b = built_batch();
    let declared = b.len();
    b.push(0);
    assert_eq!(
        validate(&b),
        Err(BatchError::LengthMismatch {
            declared,
            actual: declared + 1
        })
    );
    assert_eq!(
        verify_crc(&b[..declared - 1]),
        Err(BatchError::LengthMismatch {
            declared,
            actual: declared - 1
        })
    );
    assert!(matches!(
        records(&b),
        Err(BatchError::LengthMismatch { .. })
    ));
}

#[test]
fn crc_mismatch_names_both_values() {
    let mut b = built_batch();
    let stored = u32::from_be_bytes(b[17..21].try_into().unwrap());
    b[17..21].copy_from_slice(&(stored ^ 1).to_be_bytes());
    let computed = stored;
    let err = validate(&b).unwrap_err();
    assert_eq!(
        err,
        BatchError::CrcMismatch {
            stored: stored ^ 1,
            computed
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            stored ^ 1
        )
    );
}

#[test]
fn kafka_codecs_are_stored_as_they_came_and_others_refused() {
    for codec in 1..=4 {
        let mut b = built_batch();
        edit_header(&mut b, |h| h.attributes = codec);
        let h = validate(&b).unwrap();
        assert_eq!(h.compression(), codec as u8);
    }
    for codec in 5..=7 {
        let mut b = built_batch();
        edit_header(&mut b, |h| h.attributes = codec);
        let err = validate(&b).unwrap_err();
        assert_eq!(err, BatchError::UnsupportedCompression(codec as u8));
        assert!(err.to_string().starts_with("Unsupported compression"));
    }
    // A compressed batch's header is still checked.
    let mut b = built_batch();
    edit_header(&mut b, |h| {
        h.attributes = 1;
        h.last_offset_delta += 1;
    });
    assert!(validate(&b).is_err());
    let mut b = built_batch();
    edit_header(&mut b, |h| h.attributes = 1);
    assert!(matches!(
        records(&b),
        Err(BatchError::UnsupportedCompression(1))
    ));
    // Other attribute bits are not compression.
    let mut b = built_batch();
    edit_header(&mut b, |h| h.attributes = ATTR_TRANSACTIONAL);
    assert!(validate(&b).unwrap().is_transactional());
}

#[test]
fn empty_batch_is_rejected_by_validate_but_iterable() {
    // Sarama's "empty record" batch: records count 0, CRC by a third party.
    let b: Vec<u8> = [
        &[
            0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 49, 0, 0, 0, 0, 2, 89, 95, 183, 221,
        ][..],
        &[0; 40][..],
    ]
    .concat();
    assert!(verify_crc(&b).is_ok());
    assert_eq!(
        validate(&b),
        Err(BatchError::InvalidRecordCount { count: 0, min: 1 })
    );
    assert_eq!(records(&b).unwrap().count(), 0);
    let mut b = b;
    edit_header(&mut b, |h| h.records_count = -1);
    assert_eq!(
        validate(&b),
        Err(BatchError::InvalidRecordCount { count: -1, min: 1 })
    );
    assert!(matches!(
        records(&b),
        Err(BatchError::InvalidRecordCount { count: -1, min: 0 })
    ));
}

#[test]
fn last_offset_delta_must_match_records_count() {
    let mut b = built_batch();
    edit_header(&mut b, |h| h.last_offset_delta = 5);
    assert_eq!(
        validate(&b),
        Err(BatchError::LastOffsetDeltaMismatch {
            last_offset_delta: 5,
            records_count: 2
        })
    );
}

#[test]
fn fewer_records_than_declared_is_rejected() {
    let mut b = built_batch();
    edit_header(&mut b, |h| {
        h.records_count = 3;
        h.last_offset_delta = 2;
    });
    assert_eq!(
        validate(&b),
        Err(BatchError::MissingRecords {
            declared: 3,
            found: 2
        })
    );
}

#[test]
fn trailing_bytes_after_records_are_rejected() {
    let mut b = built_batch();
    b.push(0);
    edit_header(&mut b, |h| h.batch_length += 1);
    assert_eq!(validate(&b), Err(BatchError::TrailingBytes { count: 1 }));
    let mut it = records(&b).unwrap();
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.next(), Some(Err(BatchError::TrailingBytes { count: 1 })));
    assert_eq!(it.next(), None);
}

#[test]
fn max_timestamp_must_be_exact() {
    let mut b = built_batch();
    edit_header(&mut b, |h| h.max_timestamp += 1);
    assert_eq!(
        validate(&b),
        Err(BatchError::MaxTimestampMismatch {
            stored: BASE_TS + 6,
            computed: BASE_TS + 5
        })
    );
}

#[test]
fn malformed_varints_are_rejected() {
    let cases: [(&[u8], RecordFault); 3] = [
        (
            &[0x80],
            RecordFault::VarintTruncated {
                field: "record length",
            },
        ),
        (
            &[0x80; 6],
            RecordFault::VarintTooLong {
                field: "record length",
                max_bytes: 5,
            },
        ),
        (
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            RecordFault::VarintOverflow {
                field: "record length",
                bits: 32,
            },
        ),
    ];
    for (records, fault) in cases {
        let b = batch_with_records(records, 1, 0, 0);
        assert_eq!(record_fault(&b), (0, fault));
    }
    // A timestamp delta of 11 bytes: a varlong takes at most 10.
    let mut body = vec![0x00];
    body.extend_from_slice(&[0x80; 10]);
    body.push(0x00);
    let b = batch_with_records(&one_record(&body), 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::VarintTooLong {
                field: "timestamp delta",
                max_bytes: 10
            }
        )
    );
}

#[test]
fn record_longer_than_batch_is_rejected() {
    // Declares 50 bytes (zigzag 100), carries 3.
    let b = batch_with_records(&[100, 0, 0, 0], 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::Truncated {
                field: "record",
                needed: 50,
                available: 3
            }
        )
    );
}

#[test]
fn negative_lengths_are_rejected() {
    let b = batch_with_records(&[0x01], 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::NegativeLength {
                field: "record length",
                length: -1
            }
        )
    );
    // Key length -2 (zigzag 3).
    let b = batch_with_records(&one_record(&[0, 0, 0, 0x03, 0x01, 0x00]), 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::InvalidLength {
                field: "key length",
                length: -2
            }
        )
    );
    // Null header key.
    let b = batch_with_records(
        &one_record(&[0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x01]),
        1,
        0,
        0,
    );
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::NegativeLength {
                field: "header key length",
                length: -1
            }
        )
    );
    // Headers count -1.
    let b = batch_with_records(&one_record(&[0, 0, 0, 0x01, 0x01, 0x01]), 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::NegativeLength {
                field: "headers count",
                length: -1
            }
        )
    );
}

#[test]
fn key_running_past_record_is_rejected() {
    // Key of 5 bytes (zigzag 10) in a record with 2 bytes left.
    let b = batch_with_records(&one_record(&[0, 0, 0, 0x0a, 1, 2]), 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::Truncated {
                field: "key",
                needed: 5,
                available: 2
            }
        )
    );
}

#[test]
fn nonzero_record_attributes_are_rejected() {
    let b = batch_with_records(&one_record(&[0x04, 0, 0, 0x01, 0x01, 0x00]), 1, 0, 0);
    assert_eq!(record_fault(&b), (0, RecordFault::Attributes(4)));
}

#[test]
fn record_length_must_match_fields() {
    // Fields take 6 bytes; the length claims 7 and a padding byte follows.
    let b = batch_with_records(&[14, 0, 0, 0, 0x01, 0x01, 0x00, 0xee], 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::LengthMismatch {
                declared: 7,
                consumed: 6
            }
        )
    );
    // Length claims 5: the headers count falls outside the record.
    let b = batch_with_records(&[10, 0, 0, 0, 0x01, 0x01, 0x00], 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::VarintTruncated {
                field: "headers count"
            }
        )
    );
}

#[test]
fn offset_delta_must_be_index() {
    let b = batch_with_records(&one_record(&[0, 0, 0x02, 0x01, 0x01, 0x00]), 1, 0, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::OffsetDeltaMismatch {
                offset_delta: 1,
                expected: 0
            }
        )
    );
}

#[test]
fn timestamp_overflow_is_rejected() {
    // Timestamp delta 1 (zigzag 2) from base i64::MAX.
    let b = batch_with_records(&one_record(&[0, 0x02, 0, 0x01, 0x01, 0x00]), 1, i64::MAX, 0);
    assert_eq!(
        record_fault(&b),
        (
            0,
            RecordFault::TimestampOverflow {
                base_timestamp: i64::MAX,
                timestamp_delta: 1
            }
        )
    );
}

#[test]
fn error_in_second_record_names_its_index() {
    let mut records = one_record(&[0, 0, 0, 0x01, 0x01, 0x00]);
    records.extend_from_slice(&one_record(&[0, 0, 0x04, 0x01, 0x01, 0x00]));
    let b = batch_with_records(&records, 2, 0, 0);
    let err = validate(&b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 1: offset delta 2 is not the record's index 1"
    );
}

#[test]
#[should_panic(expected = "at least one record")]
fn finishing_empty_builder_panics() {
    BatchBuilder::new(0).finish();
}

#[test]
fn builder_reports_its_size() {
    let mut builder = BatchBuilder::with_capacity(0, 1024);
    assert_eq!(
        (builder.len_records(), builder.encoded_len()),
        (0, HEADER_LEN)
    );
    builder.push(3, Some(b"key"), Some(b"value"), &[]);
    builder.push(1, None, Some(&[7; 300]), &[(b"a", None), (b"b", Some(b""))]);
    let len = builder.encoded_len();
    assert_eq!(builder.len_records(), 2);
    let batch = builder.finish();
    assert_eq!(batch.len(), len);
    assert_eq!(validate(&batch).unwrap().max_timestamp, 3);
}
