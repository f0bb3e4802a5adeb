//! Zero-copy decoding of the records inside one uncompressed batch.
//!
//! A record is parsed completely (headers included) before it is yielded, so
//! a [`Record`] in hand is well formed: its declared length equals what its
//! fields take. Every length is checked against the bytes that remain before
//! anything is sliced, and nothing is allocated, so hostile counts and lengths
//! cost at most one pass over the input.

use std::iter::FusedIterator;

use super::varint::{self, VarintFault};
use super::{BatchError, RecordFault};

/// A zero-copy view of one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of this record relative to the batch's base offset; in a valid
    /// batch, the record's index.
    pub offset_delta: i32,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// The key; `None` when null (length -1).
    pub key: Option<&'a [u8]>,
    /// The value; `None` when null (a tombstone under compaction).
    pub value: Option<&'a [u8]>,
    /// The encoded headers, exactly `headers_count` of them.
    headers: &'a [u8],
    headers_count: u32,
    /// Position in the batch, for error messages.
    index: u32,
}

impl<'a> Record<'a> {
    /// The record's absolute timestamp given its batch's base timestamp, or
    /// `None` if the sum overflows.
    pub fn timestamp(&self, base_timestamp: i64) -> Option<i64> {
        base_timestamp.checked_add(self.timestamp_delta)
    }

    /// How many headers the record carries.
    pub fn headers_count(&self) -> u32 {
        self.headers_count
    }

    /// The headers as `(key, value)` pairs, in order; a null value is `None`.
    ///
    /// The record was checked when it was decoded, so this yields no error in
    /// practice; it stays fallible so that a bug can never become a panic.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            reader: Reader::new(self.headers),
            remaining: self.headers_count,
            index: self.index,
            done: false,
        }
    }
}

/// Iterator over a record's headers; see [`Record::headers`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    reader: Reader<'a>,
    remaining: u32,
    index: u32,
    done: bool,
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            // The record was parsed whole, so its headers end exactly here.
            debug_assert_eq!(self.reader.remaining(), 0);
            self.done = true;
            return None;
        }
        self.remaining -= 1;
        match read_header(&mut self.reader) {
            Ok(header) => Some(Ok(header)),
            Err(fault) => {
                self.done = true;
                Some(Err(BatchError::Record {
                    index: self.index,
                    fault,
                }))
            }
        }
    }
}

impl FusedIterator for Headers<'_> {}

/// Iterator over the records of one batch; see [`super::records`].
///
/// Yields exactly `records_count` records, then an error if bytes remain; it
/// stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    declared: u32,
    index: u32,
    done: bool,
}

impl<'a> RecordIter<'a> {
    /// `rest` is the batch after its header; `declared` its records count.
    pub(super) fn new(rest: &'a [u8], declared: u32) -> Self {
        RecordIter {
            rest,
            declared,
            index: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.declared {
            self.done = true;
            let count = self.rest.len();
            return (count != 0).then_some(Err(BatchError::TrailingBytes { count }));
        }
        if self.rest.is_empty() {
            self.done = true;
            return Some(Err(BatchError::MissingRecords {
                declared: self.declared,
                found: self.index,
            }));
        }
        match parse_record(self.rest, self.index) {
            Ok((record, used)) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                self.index += 1;
                Some(Ok(record))
            }
            Err(fault) => {
                self.done = true;
                Some(Err(BatchError::Record {
                    index: self.index,
                    fault,
                }))
            }
        }
    }
}

impl FusedIterator for RecordIter<'_> {}

/// Parses the record at the start of `bytes`; returns it and the bytes it
/// took (its length field included).
fn parse_record(bytes: &[u8], index: u32) -> Result<(Record<'_>, usize), RecordFault> {
    let mut outer = Reader::new(bytes);
    let length = outer.varint("record length")?;
    let declared = usize::try_from(length).map_err(|_| RecordFault::NegativeLength {
        field: "record length",
        length,
    })?;
    let body = outer.take("record", declared)?;

    let mut r = Reader::new(body);
    let attributes = r
        .take("attributes", 1)?
        .first()
        .copied()
        .unwrap_or_default();
    if attributes != 0 {
        return Err(RecordFault::Attributes(attributes as i8));
    }
    let timestamp_delta = r.varlong("timestamp delta")?;
    let offset_delta = r.varint("offset delta")?;
    let key = r.nullable("key length", "key")?;
    let value = r.nullable("value length", "value")?;
    let count = r.varint("headers count")?;
    let headers_count = u32::try_from(count).map_err(|_| RecordFault::NegativeLength {
        field: "headers count",
        length: count,
    })?;
    let headers_start = r.pos;
    // Bounded by the body: each header takes at least two bytes or fails.
    for _ in 0..headers_count {
        read_header(&mut r)?;
    }
    let headers = body.get(headers_start..r.pos).unwrap_or_default();
    if r.remaining() != 0 {
        return Err(RecordFault::LengthMismatch {
            declared: length,
            consumed: r.pos,
        });
    }
    let record = Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
        headers_count,
        index,
    };
    Ok((record, outer.pos))
}

fn read_header<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], Option<&'a [u8]>), RecordFault> {
    let length = r.varint("header key length")?;
    let key_len = usize::try_from(length).map_err(|_| RecordFault::NegativeLength {
        field: "header key length",
        length,
    })?;
    let key = r.take("header key", key_len)?;
    let value = r.nullable("header value length", "header value")?;
    Ok((key, value))
}

/// A cursor that checks every read against the bytes that remain.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], RecordFault> {
        let available = self.remaining();
        let bytes = self.rest().get(..len).ok_or(RecordFault::Truncated {
            field,
            needed: len,
            available,
        })?;
        self.pos += len;
        Ok(bytes)
    }

    fn varint(&mut self, field: &'static str) -> Result<i32, RecordFault> {
        let (value, used) = varint::read_varint(self.rest()).map_err(|f| fault(field, f, 32))?;
        self.pos += used;
        Ok(value)
    }

    fn varlong(&mut self, field: &'static str) -> Result<i64, RecordFault> {
        let (value, used) = varint::read_varlong(self.rest()).map_err(|f| fault(field, f, 64))?;
        self.pos += used;
        Ok(value)
    }

    /// A length (-1 = null) followed by that many bytes.
    fn nullable(
        &mut self,
        length_field: &'static str,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, RecordFault> {
        match self.varint(length_field)? {
            -1 => Ok(None),
            length => {
                let len = usize::try_from(length).map_err(|_| RecordFault::InvalidLength {
                    field: length_field,
                    length,
                })?;
                self.take(field, len).map(Some)
            }
        }
    }
}

fn fault(field: &'static str, f: VarintFault, bits: u8) -> RecordFault {
    match f {
        VarintFault::Truncated => RecordFault::VarintTruncated { field },
        VarintFault::TooLong => RecordFault::VarintTooLong {
            field,
            max_bytes: if bits == 32 {
                varint::VARINT_MAX_LEN
            } else {
                varint::VARLONG_MAX_LEN
            },
        },
        VarintFault::Overflow => RecordFault::VarintOverflow { field, bits },
    }
}
