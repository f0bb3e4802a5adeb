//! The record framing shared by every file of the quorum: a 4-byte
//! little-endian payload length, the payload's CRC-32C (4 bytes, little
//! endian), then the payload. Pure: encodes into a buffer, reads from any
//! `Read`.
//!
//! A reader tells a torn record (the input ends inside it) from a corrupt one
//! (a length above the bound, a CRC mismatch), so recovery can log which.

use std::io::{self, Read};

/// Bytes of a record's header.
pub(crate) const HEADER_BYTES: usize = 8;

/// Appends one record holding `payload` to `out`.
pub(crate) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("record payloads are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What the next record of an input is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read1 {
    /// A whole record whose CRC matches; its encoded size is
    /// `HEADER_BYTES + payload.len()`.
    Record(Vec<u8>),
    /// The input ends exactly here, at a record boundary.
    End,
    /// The input ends inside a record.
    Torn,
    /// The record is corrupt: why.
    Corrupt(String),
}

/// Reads the next record from `input`, allocating at most `max_payload`
/// bytes for it (checked before the allocation).
pub(crate) fn read_record(input: &mut impl Read, max_payload: usize) -> io::Result<Read1> {
    let mut header = [0u8; HEADER_BYTES];
    match read_full(input, &mut header)? {
        0 => return Ok(Read1::End),
        n if n < HEADER_BYTES => return Ok(Read1::Torn),
        _ => {}
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > max_payload {
        return Ok(Read1::Corrupt(format!(
            "record length {len} above the bound {max_payload}"
        )));
    }
    let mut payload = vec![0u8; len];
    if read_full(input, &mut payload)? < len {
        return Ok(Read1::Torn);
    }
    let actual = crc32c::crc32c(&payload);
    if actual != crc {
        return Ok(Read1::Corrupt(format!(
            "CRC-32C {actual:#010x}, header says {crc:#010x}"
        )));
    }
    Ok(Read1::Record(payload))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_records() -> Vec<u8> {
        let mut buf = Vec::new();
        encode(b"first", &mut buf);
        encode(b"second record", &mut buf);
        buf
    }

    #[test]
    fn records_round_trip_and_end_at_a_boundary() {
        let buf = two_records();
        let mut input = &buf[..];
        assert_eq!(
            read_record(&mut input, 64).expect("in-memory read"),
            Read1::Record(b"first".to_vec())
        );
        assert_eq!(
            read_record(&mut input, 64).expect("in-memory read"),
            Read1::Record(b"second record".to_vec())
        );
        assert_eq!(
            read_record(&mut input, 64).expect("in-memory read"),
            Read1::End
        );
    }

    #[test]
    fn every_cut_inside_a_record_reads_as_torn() {
        let buf = two_records();
        let first = HEADER_BYTES + 5;
        for cut in first + 1..buf.len() {
            let mut input = &buf[..cut];
            assert_eq!(
                read_record(&mut input, 64).expect("in-memory read"),
                Read1::Record(b"first".to_vec())
            );
            assert_eq!(
                read_record(&mut input, 64).expect("in-memory read"),
                Read1::Torn,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_reads_as_corrupt() {
        let clean = two_records();
        for at in 0..HEADER_BYTES + 5 {
            let mut buf = clean.clone();
            buf[at] ^= 0x40;
            let mut input = &buf[..];
            let got = read_record(&mut input, 64).expect("in-memory read");
            // A flipped length reads as a bound violation, a CRC mismatch,
            // or (a larger length) a record torn by the end of the input.
            assert!(
                matches!(got, Read1::Corrupt(_) | Read1::Torn),
                "flip at {at}: {got:?}"
            );
        }
    }

    #[test]
    fn a_length_above_the_bound_is_refused_before_allocating() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        let mut input = &buf[..];
        assert!(matches!(
            read_record(&mut input, 1 << 20).expect("in-memory read"),
            Read1::Corrupt(_)
        ));
    }
}
