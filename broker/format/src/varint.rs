//! Zigzag varints and varlongs as Kafka's record format writes them: the
//! zigzag-mapped value in little-endian base-128 groups, high bit = "more".
//!
//! Decoding is strict about size: an `i32` takes at most 5 bytes and an `i64`
//! at most 10, and the last allowed byte may not carry bits beyond the type's
//! width. Non-minimal encodings (`0x80 0x00` for 0) are accepted, as Kafka
//! accepts them; the encoder always writes the minimal form.

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintFault {
    /// The input ended before the last byte (one without the high bit).
    Truncated,
    /// The encoding is longer than the type's maximum (5 or 10 bytes).
    TooLong,
    /// The last allowed byte carries bits beyond the type's width.
    Overflow,
}

/// Most bytes an `i32` varint may take: ceil(32 / 7).
pub(crate) const VARINT_MAX_LEN: usize = 5;
/// Most bytes an `i64` varlong may take: ceil(64 / 7).
pub(crate) const VARLONG_MAX_LEN: usize = 10;

/// Decodes a zigzag `i32` varint from the start of `buf`; returns the value
/// and the number of bytes it took.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintFault> {
    let (raw, used) = read_unsigned(buf, VARINT_MAX_LEN, 32)?;
    // `read_unsigned` guarantees `raw` fits in 32 bits.
    let raw = raw as u32;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), used))
}

/// Decodes a zigzag `i64` varlong from the start of `buf`; returns the value
/// and the number of bytes it took.
pub(crate) fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintFault> {
    let (raw, used) = read_unsigned(buf, VARLONG_MAX_LEN, 64)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), used))
}

/// Base-128 decoding of at most `max_len` bytes holding at most `bits` bits.
fn read_unsigned(buf: &[u8], max_len: usize, bits: u32) -> Result<(u64, usize), VarintFault> {
    // The one- and two-byte forms (every value below 2^14: most lengths
    // and deltas) can be neither too long nor too wide for either type.
    match *buf {
        [b0, ..] if b0 & 0x80 == 0 => return Ok((u64::from(b0), 1)),
        [b0, b1, ..] if b1 & 0x80 == 0 => {
            return Ok((u64::from(b0 & 0x7f) | u64::from(b1) << 7, 2));
        }
        _ => {}
    }
    let mut raw: u64 = 0;
    for i in 0..max_len {
        let Some(&byte) = buf.get(i) else {
            return Err(VarintFault::Truncated);
        };
        let group = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if i + 1 == max_len && byte & 0x80 == 0 && group >> (bits - shift) != 0 {
            return Err(VarintFault::Overflow);
        }
        raw |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((raw, i + 1));
        }
    }
    Err(VarintFault::TooLong)
}

/// The zigzag mapping of an `i32`: small magnitudes to small numbers.
pub(crate) fn zigzag_i32(value: i32) -> u64 {
    u64::from(((value << 1) ^ (value >> 31)) as u32)
}

/// The zigzag mapping of an `i64`.
pub(crate) fn zigzag_i64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Gives the minimal base-128 encoding of `raw` to `put`, byte by byte.
pub(crate) fn encode_unsigned(mut raw: u64, mut put: impl FnMut(u8)) {
    while raw >= 0x80 {
        put((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    put(raw as u8);
}

/// Appends the minimal zigzag encoding of `value`.
pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    encode_unsigned(zigzag_i32(value), |b| out.push(b));
}

/// Appends the minimal zigzag encoding of `value` (the builder encodes
/// its one varlong, the timestamp delta, through `encode_unsigned`).
#[cfg(test)]
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    encode_unsigned(zigzag_i64(value), |b| out.push(b));
}

/// Bytes [`put_varint`] writes for `value`.
pub(crate) fn varint_len(value: i32) -> usize {
    unsigned_len(zigzag_i32(value))
}

/// Bytes the minimal zigzag encoding of `value` takes (the builder learns
/// it from the bytes it encoded).
#[cfg(test)]
pub(crate) fn varlong_len(value: i64) -> usize {
    unsigned_len(zigzag_i64(value))
}

fn unsigned_len(raw: u64) -> usize {
    // One byte per started group of 7 bits; zero still takes one byte.
    let significant = 64 - (raw | 1).leading_zeros() as usize;
    significant.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_known_answers_match_kafka() {
        // Values from the zigzag definition: 0→0, -1→1, 1→2, -2→3, 64→128.
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len(), "length of {value}");
            assert_eq!(
                read_varint(bytes),
                Ok((value, bytes.len())),
                "decoding {value}"
            );
        }
    }

    #[test]
    fn varlong_extremes_round_trip_in_ten_bytes() {
        for value in [i64::MIN, i64::MAX, -1, 0, 1 << 62, -(1 << 62)] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out.len(), varlong_len(value));
            assert_eq!(read_varlong(&out), Ok((value, out.len())));
        }
        let mut out = Vec::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(out.len(), VARLONG_MAX_LEN);
    }

    #[test]
    fn varint_rejects_sixth_byte_and_overflowing_fifth() {
        assert_eq!(read_varint(&[0x80; 6]), Err(VarintFault::TooLong));
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintFault::TooLong)
        );
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintFault::Overflow)
        );
        assert_eq!(read_varint(&[0x80, 0x80]), Err(VarintFault::Truncated));
        assert_eq!(read_varint(&[]), Err(VarintFault::Truncated));
    }

    #[test]
    fn varlong_rejects_eleventh_byte_and_overflowing_tenth() {
        assert_eq!(read_varlong(&[0x80; 11]), Err(VarintFault::TooLong));
        let mut overflowing = [0xff; 10];
        overflowing[9] = 0x02;
        assert_eq!(read_varlong(&overflowing), Err(VarintFault::Overflow));
        overflowing[9] = 0x01;
        assert_eq!(read_varlong(&overflowing), Ok((i64::MIN, 10)));
    }

    #[test]
    fn non_minimal_encodings_decode() {
        assert_eq!(read_varint(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(read_varlong(&[0x82, 0x80, 0x00]), Ok((1, 3)));
    }
}
