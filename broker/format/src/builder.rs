//! Encoding of uncompressed batches, for clients and tests.
//!
//! The builder keeps the whole batch in one buffer, header space first, so
//! `finish` only fills the header and computes the CRC: no copy of records.

use super::varint::{encode_unsigned, put_varint, varint_len, zigzag_i32, zigzag_i64};
use super::{
    BatchHeader, CRC_OFFSET, CRC_START, HEADER_LEN, LENGTH_FIELDS_LEN, MAGIC, MAX_BATCH_LEN,
};

/// Builds one uncompressed record batch, offsets assigned from 0.
///
/// The producer id, epoch and base sequence are -1 (not idempotent), the
/// partition leader epoch is -1 and the base offset is 0: the broker
/// overwrites the base offset when it appends the batch.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// Header space (filled by `finish`) followed by the encoded records.
    buf: Vec<u8>,
    base_timestamp: i64,
    max_timestamp: i64,
    records: u32,
}

impl BatchBuilder {
    /// An empty batch whose record timestamps are relative to `base_timestamp`.
    pub fn new(base_timestamp: i64) -> Self {
        Self::with_capacity(base_timestamp, HEADER_LEN)
    }

    /// Like [`BatchBuilder::new`], with room for `bytes` bytes of finished
    /// batch before the buffer grows.
    pub fn with_capacity(base_timestamp: i64, bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            base_timestamp,
            max_timestamp: i64::MIN,
            records: 0,
        }
    }

    /// Appends a record; its offset delta is the number of records before it.
    ///
    /// # Panics
    /// If `timestamp - base_timestamp` overflows an `i64`, or a key, value or
    /// header is longer than `i32::MAX` bytes (far beyond [`MAX_BATCH_LEN`],
    /// which [`BatchBuilder::finish`] enforces).
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let offset_delta =
            i32::try_from(self.records).expect("a batch holds at most i32::MAX records");
        let timestamp_delta = timestamp
            .checked_sub(self.base_timestamp)
            .expect("timestamp - base_timestamp overflows i64");
        let headers_count = i32::try_from(headers.len()).expect("at most i32::MAX headers");

        // The fields before the key (and without a key, the value's
        // length too) are encoded once, on the stack, behind room for the
        // record's length, which goes in front once the body is known: the
        // buffer then takes them as one slice (pushed byte by byte, each
        // checked the buffer's capacity; their lengths were computed apart).
        let mut head = RecordHead::new();
        head.byte(0); // attributes
        head.varlong(timestamp_delta);
        head.varint(offset_delta);
        head.nullable_len(key);
        let value_len = value.map_or(-1, len_i32);
        if key.is_none() {
            head.varint(value_len);
        }
        let mut body = head.fields_len() + value.map_or(0, <[u8]>::len) + varint_len(headers_count);
        if let Some(k) = key {
            body += k.len() + varint_len(value_len);
        }
        for &(k, v) in headers {
            body += nullable_len(Some(k)) + nullable_len(v);
        }
        let body_len = i32::try_from(body).expect("a record is at most i32::MAX bytes");
        head.prepend_length(body_len);

        let buf = &mut self.buf;
        buf.reserve(varint_len(body_len) + body);
        let start = buf.len();
        buf.extend_from_slice(head.bytes());
        if let Some(k) = key {
            buf.extend_from_slice(k);
            put_varint(buf, value_len);
        }
        if let Some(v) = value {
            buf.extend_from_slice(v);
        }
        put_varint(buf, headers_count);
        for &(k, v) in headers {
            put_nullable(buf, Some(k));
            put_nullable(buf, v);
        }
        debug_assert_eq!(buf.len() - start, varint_len(body_len) + body);

        self.records += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Records pushed so far.
    pub fn len_records(&self) -> usize {
        self.records as usize
    }

    /// Bytes the finished batch will take, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Fills the header, computes the CRC and returns the batch.
    ///
    /// # Panics
    /// If no record was pushed (a batch holds at least one) or the batch
    /// exceeds [`MAX_BATCH_LEN`]; check [`BatchBuilder::encoded_len`] first.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.records > 0, "a record batch needs at least one record");
        assert!(
            self.buf.len() <= MAX_BATCH_LEN,
            "batch of {} bytes exceeds MAX_BATCH_LEN ({MAX_BATCH_LEN})",
            self.buf.len()
        );
        // Both fit: the batch is at most MAX_BATCH_LEN bytes.
        let records_count = i32::try_from(self.records).expect("bounded by MAX_BATCH_LEN");
        let batch_length =
            i32::try_from(self.buf.len() - LENGTH_FIELDS_LEN).expect("bounded by MAX_BATCH_LEN");
        let header = BatchHeader {
            base_offset: 0,
            batch_length,
            partition_leader_epoch: -1,
            magic: MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: records_count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        // The CRC field lies before the range it covers, so it is written last.
        let crc = crc32c::crc32c(&self.buf[CRC_START..]);
        self.buf[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// The start of a record, encoded on the stack: room for its length
/// (a varint of at most 5 bytes, written last, in front), then at most the
/// attributes (1), the timestamp delta (10), the offset delta (5), a key
/// length (5) and a value length (5).
struct RecordHead {
    bytes: [u8; RecordHead::FIELDS_AT + 26],
    /// Where the length begins, once it is written.
    start: usize,
    end: usize,
}

impl RecordHead {
    /// Where the fields after the length begin.
    const FIELDS_AT: usize = 5;

    fn new() -> RecordHead {
        RecordHead {
            bytes: [0; RecordHead::FIELDS_AT + 26],
            start: RecordHead::FIELDS_AT,
            end: RecordHead::FIELDS_AT,
        }
    }

    /// Bytes of the fields after the length.
    fn fields_len(&self) -> usize {
        self.end - RecordHead::FIELDS_AT
    }

    /// The length and the fields, once the length is written.
    fn bytes(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn byte(&mut self, b: u8) {
        self.bytes[self.end] = b;
        self.end += 1;
    }

    fn varint(&mut self, value: i32) {
        encode_unsigned(zigzag_i32(value), |b| self.byte(b));
    }

    fn varlong(&mut self, value: i64) {
        encode_unsigned(zigzag_i64(value), |b| self.byte(b));
    }

    fn nullable_len(&mut self, bytes: Option<&[u8]>) {
        self.varint(bytes.map_or(-1, len_i32));
    }

    /// Writes the record's length in front of the fields.
    fn prepend_length(&mut self, body_len: i32) {
        self.start = RecordHead::FIELDS_AT - varint_len(body_len);
        let mut at = self.start;
        encode_unsigned(zigzag_i32(body_len), |b| {
            self.bytes[at] = b;
            at += 1;
        });
        debug_assert_eq!(at, RecordHead::FIELDS_AT);
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(b) => varint_len(len_i32(b)) + b.len(),
    }
}

fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, len_i32(b));
            buf.extend_from_slice(b);
        }
    }
}

fn len_i32(bytes: &[u8]) -> i32 {
    i32::try_from(bytes.len()).expect("a key, value or header is at most i32::MAX bytes")
}
