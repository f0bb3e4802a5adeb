//! Kafka's primitive types, decoded from a request without trusting it and
//! encoded into an answer.
//!
//! Bounds: [`Decoder`] reads from one request's bytes and never allocates.
//! Every length or count field is checked against the bytes that remain
//! before anything uses it: an array of `n` elements whose smallest encoding
//! is `min` bytes is refused unless `n * min` bytes remain, so a caller that
//! collects the elements allocates at most a constant factor of the
//! request's own size. Strings and byte fields are borrowed (a range of the
//! request), never copied. Truncated or malformed input is a
//! [`DecodeError`], never a panic.
//!
//! Flexible versions (KIP-482) use unsigned varints for lengths ("compact"
//! strings, bytes and arrays, stored as length + 1, 0 meaning null) and end
//! every structure with tagged fields, which are skipped here (none that
//! this broker reads is tagged).

use std::ops::Range;

/// A request that cannot be decoded: what was being read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Kafka request: {what} at byte {at}")]
pub struct DecodeError {
    /// What was wrong ("truncated i32", "array of 70000 entries in 12 bytes", ...).
    pub what: String,
    /// The offset in the request body (after the size prefix).
    pub at: usize,
}

/// The result of a decode.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// A cursor over one request's bytes.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf, pos: 0 }
    }

    /// The position in the request.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn error<T>(&self, what: impl Into<String>) -> DecodeResult<T> {
        Err(DecodeError {
            what: what.into(),
            at: self.pos,
        })
    }

    fn take(&mut self, n: usize, what: &str) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return self.error(format!(
                "{what} of {n} bytes, but only {} remain",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> DecodeResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// An INT8.
    pub fn i8(&mut self) -> DecodeResult<i8> {
        Ok(i8::from_be_bytes(self.array("INT8")?))
    }

    /// An INT16.
    pub fn i16(&mut self) -> DecodeResult<i16> {
        Ok(i16::from_be_bytes(self.array("INT16")?))
    }

    /// An INT32.
    pub fn i32(&mut self) -> DecodeResult<i32> {
        Ok(i32::from_be_bytes(self.array("INT32")?))
    }

    /// An INT64.
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_be_bytes(self.array("INT64")?))
    }

    /// A BOOLEAN.
    pub fn bool(&mut self) -> DecodeResult<bool> {
        Ok(self.i8()? != 0)
    }

    /// A UUID (16 bytes).
    pub fn uuid(&mut self) -> DecodeResult<[u8; 16]> {
        self.array("UUID")
    }

    /// An UNSIGNED_VARINT (at most 5 bytes, fits a u32).
    pub fn uvarint(&mut self) -> DecodeResult<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let Some(&b) = self.buf.get(self.pos) else {
                return self.error("truncated varint");
            };
            self.pos += 1;
            if i == 4 && b > 0x0f {
                return self.error("varint longer than 32 bits");
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        self.error("varint longer than 5 bytes")
    }

    /// A length: INT16 (strings) or INT32 (bytes, arrays) in classic
    /// versions, an UNSIGNED_VARINT of length + 1 in flexible ones. None is
    /// null (-1, or 0 in a compact form).
    fn length(&mut self, flexible: bool, wide: bool, what: &str) -> DecodeResult<Option<usize>> {
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => self.error(format!("{what} length {n}")),
            n => Ok(Some(n as usize)),
        }
    }

    /// A NULLABLE_STRING (or COMPACT_NULLABLE_STRING), borrowed.
    pub fn nullable_string(&mut self, flexible: bool) -> DecodeResult<Option<&'a str>> {
        let Some(len) = self.length(flexible, false, "string")? else {
            return Ok(None);
        };
        let at = self.pos;
        let bytes = self.take(len, "string")?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(DecodeError {
                what: "string is not UTF-8".into(),
                at,
            }),
        }
    }

    /// A STRING (or COMPACT_STRING): null is an error.
    pub fn string(&mut self, flexible: bool) -> DecodeResult<&'a str> {
        match self.nullable_string(flexible)? {
            Some(s) => Ok(s),
            None => self.error("null string where one is required"),
        }
    }

    /// NULLABLE_BYTES (or COMPACT_NULLABLE_BYTES, or RECORDS): the range
    /// they occupy in the request, so that a caller holding the request as
    /// `Bytes` slices it without a copy.
    pub fn nullable_bytes(&mut self, flexible: bool) -> DecodeResult<Option<Range<usize>>> {
        let Some(len) = self.length(flexible, true, "bytes")? else {
            return Ok(None);
        };
        let start = self.pos;
        self.take(len, "bytes")?;
        Ok(Some(start..start + len))
    }

    /// BYTES (or COMPACT_BYTES): null is read as empty.
    pub fn bytes(&mut self, flexible: bool) -> DecodeResult<&'a [u8]> {
        Ok(match self.nullable_bytes(flexible)? {
            Some(r) => &self.buf[r],
            None => &[],
        })
    }

    /// An array's element count (None: null), refused unless `min_element`
    /// bytes per element remain: the count a caller may allocate for is
    /// bounded by the request's size.
    pub fn array_len(&mut self, flexible: bool, min_element: usize) -> DecodeResult<Option<usize>> {
        let at = self.pos;
        let Some(n) = self.length(flexible, true, "array")? else {
            return Ok(None);
        };
        if n.saturating_mul(min_element.max(1)) > self.remaining() {
            return Err(DecodeError {
                what: format!(
                    "array of {n} entries in {} remaining bytes",
                    self.remaining()
                ),
                at,
            });
        }
        Ok(Some(n))
    }

    /// [`Decoder::array_len`] with null read as empty.
    pub fn count(&mut self, flexible: bool, min_element: usize) -> DecodeResult<usize> {
        Ok(self.array_len(flexible, min_element)?.unwrap_or(0))
    }

    /// The tagged fields that end a structure in a flexible version:
    /// skipped (each bounded by what remains).
    pub fn tagged_fields(&mut self, flexible: bool) -> DecodeResult<()> {
        if !flexible {
            return Ok(());
        }
        let n = self.uvarint()?;
        if n as usize > self.remaining() {
            return self.error(format!("{n} tagged fields in {} bytes", self.remaining()));
        }
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len, "tagged field")?;
        }
        Ok(())
    }

    /// The rest of the request, checked to be nothing: trailing bytes are
    /// tolerated (a newer client may append), as Kafka does.
    pub fn finish(self) -> DecodeResult<()> {
        Ok(())
    }
}

/// An answer being built: Kafka's primitive types, big-endian.
#[derive(Debug, Default)]
pub struct Encoder {
    /// The bytes so far.
    pub buf: Vec<u8>,
}

impl Encoder {
    /// An encoder appending to `buf`.
    pub fn new(buf: Vec<u8>) -> Encoder {
        Encoder { buf }
    }

    /// An INT8.
    pub fn i8(&mut self, v: i8) {
        self.buf.push(v as u8);
    }

    /// An INT16.
    pub fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An INT32.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An INT64.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An UNSIGNED_VARINT.
    pub fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// An array's length (or a compact one's, + 1).
    pub fn array_len(&mut self, flexible: bool, n: usize) {
        if flexible {
            self.uvarint(n as u32 + 1);
        } else {
            self.i32(n as i32);
        }
    }

    /// A STRING or COMPACT_STRING.
    pub fn string(&mut self, flexible: bool, s: &str) {
        if flexible {
            self.uvarint(s.len() as u32 + 1);
        } else {
            self.i16(s.len() as i16);
        }
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A NULLABLE_STRING or COMPACT_NULLABLE_STRING.
    pub fn nullable_string(&mut self, flexible: bool, s: Option<&str>) {
        match s {
            Some(s) => self.string(flexible, s),
            None if flexible => self.uvarint(0),
            None => self.i16(-1),
        }
    }

    /// The length of a NULLABLE_BYTES / RECORDS field whose `len` bytes
    /// follow (written by the caller, or straight from a log buffer).
    pub fn bytes_len(&mut self, flexible: bool, len: Option<usize>) {
        match (flexible, len) {
            (true, Some(n)) => self.uvarint(n as u32 + 1),
            (true, None) => self.uvarint(0),
            (false, Some(n)) => self.i32(n as i32),
            (false, None) => self.i32(-1),
        }
    }

    /// An empty set of tagged fields, in a flexible version.
    pub fn tagged_fields(&mut self, flexible: bool) {
        if flexible {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut e = Encoder::default();
            e.uvarint(v);
            let mut d = Decoder::new(&e.buf);
            assert_eq!(d.uvarint().unwrap(), v);
            assert_eq!(d.remaining(), 0);
        }
        assert!(Decoder::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
            .uvarint()
            .is_err());
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0xff, 0x1f])
            .uvarint()
            .is_err());
        assert!(Decoder::new(&[0x80]).uvarint().is_err());
    }

    #[test]
    fn an_array_count_larger_than_the_input_is_refused_before_any_use() {
        let mut e = Encoder::default();
        e.i32(i32::MAX);
        e.i32(7);
        let err = Decoder::new(&e.buf).array_len(false, 4).unwrap_err();
        assert!(err.what.contains("array of 2147483647 entries"), "{err}");
        let mut e = Encoder::default();
        e.uvarint(u32::MAX);
        assert!(Decoder::new(&e.buf).array_len(true, 1).is_err());
        // Two INT32 elements fit.
        let mut e = Encoder::default();
        e.i32(2);
        e.i32(1);
        e.i32(2);
        assert_eq!(Decoder::new(&e.buf).array_len(false, 4).unwrap(), Some(2));
    }

    #[test]
    fn strings_and_bytes_are_borrowed_and_null_is_distinguished() {
        for flexible in [false, true] {
            let mut e = Encoder::default();
            e.string(flexible, "topic-a");
            e.nullable_string(flexible, None);
            e.bytes_len(flexible, Some(3));
            e.buf.extend_from_slice(b"xyz");
            e.bytes_len(flexible, None);
            e.tagged_fields(flexible);
            let mut d = Decoder::new(&e.buf);
            assert_eq!(d.string(flexible).unwrap(), "topic-a");
            assert_eq!(d.nullable_string(flexible).unwrap(), None);
            let r = d.nullable_bytes(flexible).unwrap().unwrap();
            assert_eq!(&e.buf[r], b"xyz");
            assert_eq!(d.nullable_bytes(flexible).unwrap(), None);
            d.tagged_fields(flexible).unwrap();
            assert_eq!(d.remaining(), 0);
        }
    }

    #[test]
    fn truncated_and_bad_input_is_an_error_never_a_panic() {
        let mut e = Encoder::default();
        e.string(false, "abcdef");
        for cut in 0..e.buf.len() {
            assert!(Decoder::new(&e.buf[..cut]).string(false).is_err());
        }
        assert!(Decoder::new(&[0, 2, 0xff, 0xfe]).string(false).is_err());
        assert!(Decoder::new(&[0xff, 0xfe]).string(false).is_err());
        // A tagged field claiming more than remains.
        assert!(Decoder::new(&[1, 0, 50, 1]).tagged_fields(true).is_err());
    }
}
