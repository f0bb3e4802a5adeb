//! The record batch format: Kafka's RecordBatch v2 (magic 2), identical on the
//! wire and on disk. The byte layout is documented in
//! `schemas/record-batch.md`.
//!
//! This module owns parsing, validation and building of batches. It never
//! does I/O and never copies a batch: every reader borrows the caller's bytes.
//!
//! Invariants:
//! - The CRC (CRC-32C) covers everything the broker does not rewrite: bytes
//!   from `attributes` (offset 21) to the end. `base_offset` and
//!   `partition_leader_epoch` lie before it, so the broker may assign offsets
//!   in place without recomputing it.
//! - Decoding never allocates from a length or count field and never panics:
//!   every length is checked against the bytes that remain before it is used,
//!   and every loop consumes input or stops, so hostile input costs at most one
//!   pass over its bytes.
//! - A batch that [`validate`] accepts has a valid CRC, at least one record,
//!   `last_offset_delta == records_count - 1` and no trailing bytes, and is
//!   uncompressed or compressed with one of Kafka's codecs (gzip, snappy,
//!   lz4, zstd). An uncompressed one also has offset deltas
//!   `0..records_count`, record lengths that match their fields, and a
//!   `max_timestamp` equal to its records'; a compressed one is stored and
//!   served as it came, its records never decompressed by the broker.
//! - No batch exceeds [`MAX_BATCH_LEN`] bytes, so `usize` and `i64` length
//!   arithmetic on header fields cannot overflow.

mod builder;
mod record;
mod varint;

pub use builder::BatchBuilder;
pub use record::{Headers, Record, RecordIter};

/// Bytes of the fixed batch header, up to and including `records_count`.
pub const HEADER_LEN: usize = 61;
/// The only supported format: record batch v2.
pub const MAGIC: i8 = 2;
/// Bytes of `base_offset` and `batch_length`: what a reader needs to know a
/// batch's total size.
pub const LENGTH_FIELDS_LEN: usize = 12;
/// Hard upper bound on one batch's total size: 64 MiB.
///
/// Kafka's default `message.max.bytes` is 1 MiB; 64 MiB leaves room for
/// generous configurations while bounding what one request can make a shard
/// buffer, and keeps every offset into a batch far below `i32::MAX`, so the
/// format's `i32` lengths and our `usize` arithmetic cannot overflow. Callers
/// enforce their own, smaller limit on top.
pub const MAX_BATCH_LEN: usize = 64 << 20;

/// Mask of the compression codec in `attributes` (bits 0-2; 0 = none).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// The highest compression codec of Kafka's (1 gzip, 2 snappy, 3 lz4,
/// 4 zstd): batches compressed with one are accepted and stored as they
/// came; 5-7 are refused.
pub const MAX_CODEC: u8 = 4;
/// `attributes` bit 3: timestamps are the broker's append time, not the
/// producer's create time.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// `attributes` bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// `attributes` bit 5: the batch holds a control record (commit/abort marker).
pub const ATTR_CONTROL: i16 = 0x20;
/// `attributes` bit 6: `base_timestamp` holds a delete horizon (compaction).
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

/// The smallest legal `batch_length`: a header and nothing else.
const MIN_BATCH_LENGTH: usize = HEADER_LEN - LENGTH_FIELDS_LEN;
/// Offset of the CRC field.
const CRC_OFFSET: usize = 17;
/// Offset where the CRC's coverage starts (`attributes`).
const CRC_START: usize = 21;

/// The fixed header of a record batch, field for field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; assigned by the broker.
    pub base_offset: i64,
    /// Bytes after this field: the batch's total size minus 12.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended; set by the
    /// broker, -1 from clients.
    pub partition_leader_epoch: i32,
    /// Format version; always [`MAGIC`] once parsed.
    pub magic: i8,
    /// CRC-32C of bytes 21 to the end.
    pub crc: u32,
    /// Compression, timestamp type, transactional, control and delete-horizon
    /// flags (the `ATTR_*` constants).
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp the records' deltas are relative to.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when not idempotent.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 when not idempotent.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when not idempotent.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header from the first [`HEADER_LEN`] bytes.
    ///
    /// Checks only what is needed to walk batches safely: enough bytes, a
    /// `batch_length` of at least the header's and a total of at most
    /// [`MAX_BATCH_LEN`], magic 2 and a non-negative `last_offset_delta`. It
    /// does not check the CRC nor that `bytes` holds the whole batch.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let truncated = || BatchError::TruncatedHeader {
            available: bytes.len(),
        };
        // Check the length fields first, so garbage is reported as such even
        // when fewer than HEADER_LEN bytes follow.
        let batch_length = be_i32(bytes, 8).ok_or_else(truncated)?;
        check_batch_length(batch_length)?;
        let header = bytes.get(..HEADER_LEN).ok_or_else(truncated)?;
        let field = |at: usize, len: usize| -> u64 {
            header[at..at + len]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | u64::from(b))
        };
        let header = BatchHeader {
            base_offset: field(0, 8) as i64,
            batch_length,
            partition_leader_epoch: field(12, 4) as u32 as i32,
            magic: field(16, 1) as u8 as i8,
            crc: field(CRC_OFFSET, 4) as u32,
            attributes: field(21, 2) as u16 as i16,
            last_offset_delta: field(23, 4) as u32 as i32,
            base_timestamp: field(27, 8) as i64,
            max_timestamp: field(35, 8) as i64,
            producer_id: field(43, 8) as i64,
            producer_epoch: field(51, 2) as u16 as i16,
            base_sequence: field(53, 4) as u32 as i32,
            records_count: field(57, 4) as u32 as i32,
        };
        if header.magic != MAGIC {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::NegativeLastOffsetDelta(
                header.last_offset_delta,
            ));
        }
        Ok(header)
    }

    /// Encodes the header as it is, CRC field included (not recomputed).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.base_offset.to_be_bytes());
        put(&self.batch_length.to_be_bytes());
        put(&self.partition_leader_epoch.to_be_bytes());
        put(&self.magic.to_be_bytes());
        put(&self.crc.to_be_bytes());
        put(&self.attributes.to_be_bytes());
        put(&self.last_offset_delta.to_be_bytes());
        put(&self.base_timestamp.to_be_bytes());
        put(&self.max_timestamp.to_be_bytes());
        put(&self.producer_id.to_be_bytes());
        put(&self.producer_epoch.to_be_bytes());
        put(&self.base_sequence.to_be_bytes());
        put(&self.records_count.to_be_bytes());
        out
    }

    /// The batch's total size in bytes: 12 + `batch_length`.
    pub fn total_len(&self) -> usize {
        // A parsed header has 49 <= batch_length <= MAX_BATCH_LEN - 12.
        usize::try_from(self.batch_length).map_or(LENGTH_FIELDS_LEN, |len| LENGTH_FIELDS_LEN + len)
    }

    /// The offset after this batch's last: `base_offset + last_offset_delta + 1`
    /// (saturating at `i64::MAX`).
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
            .saturating_add(1)
    }

    /// Offsets this batch occupies: `last_offset_delta + 1`.
    pub fn record_count(&self) -> u32 {
        u32::try_from(i64::from(self.last_offset_delta) + 1).unwrap_or(0)
    }

    /// The compression codec (bits 0-2 of `attributes`); only 0, none, is
    /// supported.
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds a control record rather than data.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Everything that makes bytes not a valid record batch. Each message names
/// the field at fault and the values involved.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the fixed header.
    #[error("truncated batch: the header needs {needed} bytes, only {available} remain", needed = HEADER_LEN)]
    TruncatedHeader {
        /// Bytes there were.
        available: usize,
    },
    /// `batch_length` is smaller than the rest of the header.
    #[error("batch length {0} is below the {min}-byte header minimum", min = MIN_BATCH_LENGTH)]
    LengthBelowHeader(i32),
    /// The total size exceeds [`MAX_BATCH_LEN`].
    #[error("batch total length {0} bytes exceeds the {max}-byte limit", max = MAX_BATCH_LEN)]
    TooLarge(u64),
    /// A magic other than 2.
    #[error("unsupported magic {0}: only record batch v2 (magic 2) is supported")]
    UnsupportedMagic(i8),
    /// `last_offset_delta` is negative.
    #[error("last offset delta {0} is negative")]
    NegativeLastOffsetDelta(i32),
    /// The batch declares more bytes than remain.
    #[error("truncated batch: it declares {declared} bytes, only {available} remain")]
    Truncated {
        /// Total size from the header.
        declared: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The bytes given are not exactly one batch.
    #[error("batch declares a total length of {declared} bytes but {actual} bytes were given")]
    LengthMismatch {
        /// Total size from the header.
        declared: usize,
        /// Length of the slice.
        actual: usize,
    },
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC-32C of bytes 21 to the end.
        computed: u32,
    },
    /// The batch is compressed with a codec that is not Kafka's (5-7), or
    /// (where records are read) compressed at all.
    #[error("Unsupported compression codec {0} (the broker stores 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd, and reads records only of uncompressed batches)")]
    UnsupportedCompression(u8),
    /// `records_count` is below the minimum (1 for a produced batch).
    #[error("records count {count} is below the minimum of {min}")]
    InvalidRecordCount {
        /// `records_count` from the header.
        count: i32,
        /// The smallest count accepted here.
        min: i32,
    },
    /// `last_offset_delta` is not `records_count - 1`.
    #[error("last offset delta {last_offset_delta} does not match records count {records_count} (expected records count - 1)")]
    LastOffsetDeltaMismatch {
        /// From the header.
        last_offset_delta: i32,
        /// From the header.
        records_count: i32,
    },
    /// The bytes end before `records_count` records.
    #[error("batch declares {declared} records but its bytes end after {found}")]
    MissingRecords {
        /// `records_count` from the header.
        declared: u32,
        /// Records found.
        found: u32,
    },
    /// Bytes remain after the last declared record.
    #[error("{count} trailing bytes after the last record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// One record is malformed.
    #[error("record {index}: {fault}")]
    Record {
        /// The record's position in the batch, from 0.
        index: u32,
        /// What is wrong with it.
        fault: RecordFault,
    },
    /// `max_timestamp` is not the largest record timestamp.
    #[error("max timestamp {stored} does not match the records' maximum {computed}")]
    MaxTimestampMismatch {
        /// From the header.
        stored: i64,
        /// Maximum of `base_timestamp + timestamp_delta` over the records.
        computed: i64,
    },
}

/// What is wrong with one record (see [`BatchError::Record`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// A varint ends with the input.
    #[error("varint {field} is cut off by the end of the data")]
    VarintTruncated {
        /// The field being read.
        field: &'static str,
    },
    /// A varint is longer than its type allows.
    #[error("varint {field} is longer than {max_bytes} bytes")]
    VarintTooLong {
        /// The field being read.
        field: &'static str,
        /// 5 for an `i32`, 10 for an `i64`.
        max_bytes: usize,
    },
    /// A varint's last byte carries bits beyond its type's width.
    #[error("varint {field} overflows {bits} bits")]
    VarintOverflow {
        /// The field being read.
        field: &'static str,
        /// 32 or 64.
        bits: u8,
    },
    /// A field needs more bytes than remain in the record.
    #[error("{field} needs {needed} bytes, only {available} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes it declares.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// A length or count that may not be negative (nor null) is.
    #[error("{field} {length} is negative")]
    NegativeLength {
        /// The field.
        field: &'static str,
        /// Its value.
        length: i32,
    },
    /// A nullable length is below -1.
    #[error("{field} {length} is invalid: only -1 (null) or a length >= 0 is allowed")]
    InvalidLength {
        /// The field.
        field: &'static str,
        /// Its value.
        length: i32,
    },
    /// Record attributes are unused in v2 and must be 0.
    #[error("record attributes {0:#04x} must be 0")]
    Attributes(i8),
    /// The declared record length differs from what the fields take.
    #[error(
        "record declares {declared} bytes after its length field but its fields take {consumed}"
    )]
    LengthMismatch {
        /// The record's length field.
        declared: i32,
        /// Bytes its fields take.
        consumed: usize,
    },
    /// The offset delta is not the record's index.
    #[error("offset delta {offset_delta} is not the record's index {expected}")]
    OffsetDeltaMismatch {
        /// From the record.
        offset_delta: i32,
        /// The record's index.
        expected: u32,
    },
    /// `base_timestamp + timestamp_delta` overflows an `i64`.
    #[error("timestamp delta {timestamp_delta} overflows from base timestamp {base_timestamp}")]
    TimestampOverflow {
        /// From the header.
        base_timestamp: i64,
        /// From the record.
        timestamp_delta: i64,
    },
}

/// Reads the batch's total size from its first [`LENGTH_FIELDS_LEN`] bytes.
///
/// `None` if fewer bytes are given or the length is out of range (below the
/// header's size or above [`MAX_BATCH_LEN`]).
pub fn peek_total_len(bytes: &[u8]) -> Option<usize> {
    let batch_length = be_i32(bytes, 8)?;
    check_batch_length(batch_length).ok()
}

/// Fully validates exactly one batch occupying all of `bytes`, and returns
/// its header.
///
/// Checks the header ([`BatchHeader::parse`]), that the total length is
/// `bytes.len()`, the CRC, no compression, `records_count >= 1` and
/// `last_offset_delta == records_count - 1`; then that every record parses
/// with its index as offset delta and a length matching its fields, that no
/// bytes trail, and that `max_timestamp` is the records' largest timestamp.
/// Bounded work; allocates nothing.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = verify_crc(bytes)?;
    if header.compression() > MAX_CODEC {
        return Err(BatchError::UnsupportedCompression(header.compression()));
    }
    let declared = u32::try_from(header.records_count)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or(BatchError::InvalidRecordCount {
            count: header.records_count,
            min: 1,
        })?;
    if header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::LastOffsetDeltaMismatch {
            last_offset_delta: header.last_offset_delta,
            records_count: header.records_count,
        });
    }
    if header.compression() != 0 {
        // Stored and served as it came: its records are not decompressed
        // (the CRC has proved them intact since the producer made them).
        return Ok(header);
    }
    let mut max_timestamp = i64::MIN;
    for (index, record) in (0u32..).zip(RecordIter::new(records_area(bytes), declared)) {
        let record = record?;
        let fault = |fault| BatchError::Record { index, fault };
        if u32::try_from(record.offset_delta) != Ok(index) {
            return Err(fault(RecordFault::OffsetDeltaMismatch {
                offset_delta: record.offset_delta,
                expected: index,
            }));
        }
        let timestamp = record.timestamp(header.base_timestamp).ok_or_else(|| {
            fault(RecordFault::TimestampOverflow {
                base_timestamp: header.base_timestamp,
                timestamp_delta: record.timestamp_delta,
            })
        })?;
        max_timestamp = max_timestamp.max(timestamp);
    }
    // Under LogAppendTime the broker wrote its own time as the max
    // timestamp: the records' own no longer have to add up to it.
    if header.max_timestamp != max_timestamp && header.attributes & ATTR_LOG_APPEND_TIME == 0 {
        return Err(BatchError::MaxTimestampMismatch {
            stored: header.max_timestamp,
            computed: max_timestamp,
        });
    }
    Ok(header)
}

/// A batch that [`validate`] accepted, with its header: only
/// [`Validated::check`] and [`Validated::stamp_log_append_time`] make one,
/// so holding one proves the bytes were validated, and a layer that is
/// handed one (the log) need not validate them again.
#[derive(Debug, Clone, Copy)]
pub struct Validated<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> Validated<'a> {
    /// [`validate`]s exactly one batch occupying all of `bytes`.
    pub fn check(bytes: &'a [u8]) -> Result<Validated<'a>, BatchError> {
        let header = validate(bytes)?;
        Ok(Validated { bytes, header })
    }

    /// [`validate`]s the batch as it came, then sets its max timestamp to
    /// `now` and its LogAppendTime attribute and recomputes its CRC, as
    /// Kafka's `LogValidator` does for a topic with
    /// `message.timestamp.type=LogAppendTime`.
    pub fn stamp_log_append_time(
        batch: &'a mut [u8],
        now: i64,
    ) -> Result<Validated<'a>, BatchError> {
        const ATTRIBUTES: usize = 21;
        const MAX_TIMESTAMP: std::ops::Range<usize> = 35..43;
        let mut header = validate(batch)?;
        header.attributes |= ATTR_LOG_APPEND_TIME;
        header.max_timestamp = now;
        batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&header.attributes.to_be_bytes());
        batch[MAX_TIMESTAMP].copy_from_slice(&now.to_be_bytes());
        header.crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[CRC_OFFSET..CRC_START].copy_from_slice(&header.crc.to_be_bytes());
        Ok(Validated {
            bytes: batch,
            header,
        })
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

/// Checks the header, that the batch occupies exactly `bytes`, and the CRC;
/// not the records. For recovery, where records were validated when written.
pub fn verify_crc(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_exact(bytes)?;
    let computed = crc32c::crc32c(bytes.get(CRC_START..).unwrap_or_default());
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Overwrites `base_offset` (bytes 0..8) in place; the CRC stays valid as it
/// does not cover these bytes.
///
/// # Panics
/// If `batch` is shorter than [`HEADER_LEN`]: the caller passes a batch it
/// has validated, so a short slice is a bug that would corrupt the log.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(
        batch.len() >= HEADER_LEN,
        "set_base_offset on {} bytes, not a batch",
        batch.len()
    );
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites `partition_leader_epoch` (bytes 12..16) in place; the CRC
/// stays valid as it does not cover these bytes.
///
/// # Panics
/// If `batch` is shorter than [`HEADER_LEN`], as [`set_base_offset`].
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(
        batch.len() >= HEADER_LEN,
        "set_partition_leader_epoch on {} bytes, not a batch",
        batch.len()
    );
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Iterates the records of one uncompressed batch occupying all of `batch`.
///
/// Checks the header, the total length and the compression up front; each
/// record is checked as it is reached (a malformed one yields an error and
/// ends the iteration). The CRC is not checked: call [`validate`] or
/// [`verify_crc`] first when the bytes are untrusted. A batch with
/// `records_count` 0, which compaction may leave behind, yields nothing.
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, BatchError> {
    let header = parse_exact(batch)?;
    if header.compression() != 0 {
        return Err(BatchError::UnsupportedCompression(header.compression()));
    }
    let declared =
        u32::try_from(header.records_count).map_err(|_| BatchError::InvalidRecordCount {
            count: header.records_count,
            min: 0,
        })?;
    Ok(RecordIter::new(records_area(batch), declared))
}

/// Iterates the batches packed one after another in `bytes`: a fetch
/// response, a produce request carrying several batches, a segment scan.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches {
        bytes,
        pos: 0,
        done: false,
    }
}

/// Iterator over consecutive batches; see [`batches`].
///
/// Yields each batch's header and its whole bytes. Checks each header as
/// [`BatchHeader::parse`] does and that the batch fits in what remains; on a
/// truncated or malformed batch it yields one error, then `None`. Neither
/// CRCs nor records are checked.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Batches<'a> {
    /// Bytes of the batches yielded so far: where the next batch starts, or
    /// where the malformed one did.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if self.done || rest.is_empty() {
            return None;
        }
        let step = BatchHeader::parse(rest).and_then(|header| {
            let total = header.total_len();
            let batch = rest.get(..total).ok_or(BatchError::Truncated {
                declared: total,
                available: rest.len(),
            })?;
            Ok((header, batch))
        });
        match step {
            Ok((_, batch)) => self.pos += batch.len(),
            Err(_) => self.done = true,
        }
        Some(step)
    }
}

impl std::iter::FusedIterator for Batches<'_> {}

/// Parses the header of a batch that must occupy exactly `bytes`.
fn parse_exact(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_len() != bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_len(),
            actual: bytes.len(),
        });
    }
    Ok(header)
}

/// The records of a batch: everything after the header.
fn records_area(batch: &[u8]) -> &[u8] {
    batch.get(HEADER_LEN..).unwrap_or_default()
}

/// Checks `batch_length` and returns the total size it implies.
fn check_batch_length(batch_length: i32) -> Result<usize, BatchError> {
    match usize::try_from(batch_length) {
        Ok(len) if len < MIN_BATCH_LENGTH => Err(BatchError::LengthBelowHeader(batch_length)),
        Ok(len) if len + LENGTH_FIELDS_LEN > MAX_BATCH_LEN => {
            Err(BatchError::TooLarge(len as u64 + LENGTH_FIELDS_LEN as u64))
        }
        Ok(len) => Ok(len + LENGTH_FIELDS_LEN),
        Err(_) => Err(BatchError::LengthBelowHeader(batch_length)),
    }
}

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

#[cfg(test)]
mod tests;
