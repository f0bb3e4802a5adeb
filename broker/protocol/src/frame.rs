//! The frame: a fixed 20-byte big-endian prefix, a flatbuffer header, an
//! opaque payload.
//!
//! ```text
//! offset size field
//!  0     4    frame_len   u32 BE: bytes after this field (16 + header_len + payload)
//!  4     1    version     PROTOCOL_VERSION (1)
//!  5     1    flags       bit 0: response; other bits must be 0
//!  6     2    api_key     u16 BE (generated::ApiKey); a response repeats its request's
//!  8     8    request_id  u64 BE, chosen by the requester, echoed in the response
//! 16     4    header_len  u32 BE: bytes of the flatbuffer that follows
//! 20     ..   header      flatbuffer; root table = the api's Request or Response
//!  ..    ..   payload     frame_len - 16 - header_len bytes (record batches, or none)
//! ```
//!
//! This file owns the prefix: [`decode_prefix`] reads and checks it from the
//! first bytes of a stream, [`encode_prefix`] writes it. Everything is checked
//! against a limit before a length is trusted, and nothing here allocates, so
//! a peer cannot make a receiver buffer more than its `max_frame` by lying in
//! a length field.
//!
//! The meaning of the first five bytes (`frame_len`, `version`) never
//! changes between versions, so a receiver can always find the end of a frame
//! and refuse a version it does not speak.

use super::error::FrameError;
use super::generated::ApiKey;
use super::limits::{MAX_ENCODABLE_FRAME_BYTES, MAX_HEADER_BYTES};

/// Bytes of the fixed prefix, from `frame_len` to `header_len` inclusive.
pub const FRAME_PREFIX_LEN: usize = 20;

/// The protocol version this code writes and the only one it reads.
pub const PROTOCOL_VERSION: u8 = 1;

/// `flags` bit 0: the frame is a response.
pub const FLAG_RESPONSE: u8 = 0x01;

/// Every flag version 1 defines; other bits are refused so they can be given
/// a meaning later.
const KNOWN_FLAGS: u8 = FLAG_RESPONSE;

/// Bytes of the `frame_len` field.
const LEN_FIELD: usize = 4;

/// Bytes of the prefix that `frame_len` counts (version to header_len).
const PREFIX_AFTER_LEN: u32 = (FRAME_PREFIX_LEN - LEN_FIELD) as u32;

/// The fixed prefix of a frame, decoded and checked.
///
/// Built only by [`decode_prefix`] or [`FrameHeader::new`], so its lengths
/// always fit the format and [`encode_prefix`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    version: u8,
    flags: u8,
    api_key: ApiKey,
    request_id: u64,
    header_len: u32,
    payload_len: u32,
}

impl FrameHeader {
    /// A version-[`PROTOCOL_VERSION`] prefix for a header of `header_len`
    /// bytes followed by `payload_len` payload bytes.
    ///
    /// Fails when the header exceeds [`MAX_HEADER_BYTES`] or the frame
    /// exceeds what `frame_len` can express.
    pub fn new(
        api_key: ApiKey,
        response: bool,
        request_id: u64,
        header_len: usize,
        payload_len: usize,
    ) -> Result<FrameHeader, FrameError> {
        if header_len > MAX_HEADER_BYTES {
            return Err(FrameError::HeaderTooLarge {
                header_len: header_len as u64,
                max: MAX_HEADER_BYTES,
            });
        }
        let frame_bytes = (FRAME_PREFIX_LEN as u64)
            .saturating_add(header_len as u64)
            .saturating_add(payload_len as u64);
        if frame_bytes > MAX_ENCODABLE_FRAME_BYTES {
            return Err(FrameError::TooLarge {
                frame_bytes,
                max_frame_bytes: MAX_ENCODABLE_FRAME_BYTES,
            });
        }
        // Both fit: their sum with the prefix does.
        Ok(FrameHeader {
            version: PROTOCOL_VERSION,
            flags: if response { FLAG_RESPONSE } else { 0 },
            api_key,
            request_id,
            header_len: header_len as u32,
            payload_len: payload_len as u32,
        })
    }

    /// The protocol version byte.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the frame is a response (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// The api key, possibly one this code does not know.
    pub fn api_key(&self) -> ApiKey {
        self.api_key
    }

    /// The request id, echoed by the response.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Bytes of the flatbuffer header.
    pub fn header_len(&self) -> usize {
        self.header_len as usize
    }

    /// Bytes of the payload after the header.
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }

    /// The `frame_len` field: bytes after it.
    pub fn frame_len(&self) -> u32 {
        // FrameHeader's constructors keep this sum within u32.
        PREFIX_AFTER_LEN + self.header_len + self.payload_len
    }

    /// The whole frame's size: prefix, header and payload.
    pub fn frame_bytes(&self) -> usize {
        LEN_FIELD + self.frame_len() as usize
    }
}

/// Reads the prefix at the start of `buf`, the bytes received so far.
///
/// `Ok(None)`: not enough bytes yet to decide. As soon as the 4 length bytes
/// are there, a frame shorter than a prefix or larger than `max_frame` bytes
/// (prefix included) is refused, before anything is allocated for it; the
/// rest is checked once all [`FRAME_PREFIX_LEN`] bytes are there. On success
/// the frame is complete once `buf` holds [`FrameHeader::frame_bytes`].
///
/// Every error from here is fatal for the connection
/// ([`FrameError::is_fatal`]).
pub fn decode_prefix(buf: &[u8], max_frame: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(frame_len) = be_u32(buf, 0) else {
        return Ok(None);
    };
    if frame_len < PREFIX_AFTER_LEN {
        return Err(FrameError::TooShort { frame_len });
    }
    let frame_bytes = LEN_FIELD as u64 + u64::from(frame_len);
    if frame_bytes > max_frame as u64 {
        return Err(FrameError::TooLarge {
            frame_bytes,
            max_frame_bytes: max_frame as u64,
        });
    }
    let Some(prefix) = buf.get(..FRAME_PREFIX_LEN) else {
        return Ok(None);
    };
    let version = prefix[4];
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    let flags = prefix[5];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::UnknownFlags { flags });
    }
    let api_key = ApiKey(u16::from_be_bytes([prefix[6], prefix[7]]));
    let mut request_id = [0u8; 8];
    request_id.copy_from_slice(&prefix[8..16]);
    let request_id = u64::from_be_bytes(request_id);
    let header_len = u32::from_be_bytes([prefix[16], prefix[17], prefix[18], prefix[19]]);
    let available = frame_len - PREFIX_AFTER_LEN;
    if header_len > available {
        return Err(FrameError::HeaderOverrun {
            header_len,
            available,
        });
    }
    if header_len as usize > MAX_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge {
            header_len: u64::from(header_len),
            max: MAX_HEADER_BYTES,
        });
    }
    Ok(Some(FrameHeader {
        version,
        flags,
        api_key,
        request_id,
        header_len,
        payload_len: available - header_len,
    }))
}

/// The prefix of `header`'s frame, to be followed by its header and payload.
pub fn encode_prefix(header: &FrameHeader) -> [u8; FRAME_PREFIX_LEN] {
    let mut out = [0u8; FRAME_PREFIX_LEN];
    out[0..4].copy_from_slice(&header.frame_len().to_be_bytes());
    out[4] = header.version;
    out[5] = header.flags;
    out[6..8].copy_from_slice(&header.api_key.0.to_be_bytes());
    out[8..16].copy_from_slice(&header.request_id.to_be_bytes());
    out[16..20].copy_from_slice(&header.header_len.to_be_bytes());
    out
}

/// Splits one whole frame into its checked prefix, header bytes and payload,
/// without looking inside the header. `frame` must be exactly one frame.
pub(super) fn split_frame(
    frame: &[u8],
    max_frame: usize,
) -> Result<(FrameHeader, &[u8], &[u8]), FrameError> {
    let Some(header) = decode_prefix(frame, max_frame)? else {
        return Err(FrameError::LengthMismatch {
            declared: declared_len(frame),
            actual: frame.len(),
        });
    };
    if frame.len() != header.frame_bytes() {
        return Err(FrameError::LengthMismatch {
            declared: header.frame_bytes(),
            actual: frame.len(),
        });
    }
    let (body, payload) = frame[FRAME_PREFIX_LEN..].split_at(header.header_len());
    Ok((header, body, payload))
}

/// The size a truncated frame declares, as far as its bytes tell (a frame is
/// at least a prefix).
fn declared_len(frame: &[u8]) -> usize {
    match be_u32(frame, 0) {
        Some(frame_len) => LEN_FIELD.saturating_add(frame_len as usize),
        None => FRAME_PREFIX_LEN,
    }
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}
