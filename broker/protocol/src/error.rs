//! FrameError: why bytes are not a frame we accept, or why a frame cannot be
//! built, and what the receiver answers.

use super::generated::{ApiKey, ErrorCode};

/// Why a frame was refused on decode, or could not be encoded.
///
/// Two kinds, told apart by [`FrameError::is_fatal`]: errors in the fixed
/// prefix leave the byte stream without trustworthy boundaries (or demand
/// too much of it), so the receiver answers if it can and closes the
/// connection; errors inside a well-delimited frame (unknown api, unreadable
/// header, broken limit) are answered with an error response and the
/// connection carries on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// `frame_len` is smaller than the fixed part of the prefix it must
    /// cover.
    #[error(
        "frame length {frame_len} is below the 16 bytes every frame has after its length field"
    )]
    TooShort {
        /// The `frame_len` field.
        frame_len: u32,
    },
    /// The frame is larger than the receiver's limit (or, on encode, than
    /// the format can express). Refused before anything is allocated for it.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    TooLarge {
        /// The frame's total size, prefix included.
        frame_bytes: u64,
        /// The limit it broke.
        max_frame_bytes: u64,
    },
    /// The prefix's version byte is not one this code speaks.
    #[error("unsupported protocol version {version} (this broker speaks version {supported})", supported = super::frame::PROTOCOL_VERSION)]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// Flag bits that version 1 does not define are set.
    #[error("unknown flag bits {flags:#04x} in the frame prefix")]
    UnknownFlags {
        /// The flags byte received.
        flags: u8,
    },
    /// `header_len` claims more bytes than the frame holds after its prefix.
    #[error(
        "header length {header_len} exceeds the {available} bytes the frame holds after its prefix"
    )]
    HeaderOverrun {
        /// The `header_len` field.
        header_len: u32,
        /// Bytes after the prefix: `frame_len - 16`.
        available: u32,
    },
    /// The flatbuffer header is larger than [`super::limits::MAX_HEADER_BYTES`].
    #[error("header of {header_len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// The header's length.
        header_len: u64,
        /// The limit it broke.
        max: usize,
    },
    /// The bytes given to a whole-frame decoder are not exactly one frame:
    /// a caller error (pass `&buf[..header.frame_bytes()]`), never the peer's.
    #[error("the buffer holds {actual} bytes but the frame's prefix declares {declared}")]
    LengthMismatch {
        /// Total frame size from the prefix; [`super::FRAME_PREFIX_LEN`]
        /// (the least a frame has) when even the length field is cut.
        declared: usize,
        /// Bytes passed in.
        actual: usize,
    },
    /// The api key is not one this code knows.
    #[error("unknown api key {api_key}")]
    UnknownApi {
        /// The raw api key.
        api_key: u16,
    },
    /// The frame is not the message the caller expected (another api, or a
    /// request where a response was due).
    #[error("expected a {expected} but got {api_key:?} {kind}", kind = if *.response { "response" } else { "request" })]
    UnexpectedMessage {
        /// What was expected, e.g. "FetchResponse".
        expected: &'static str,
        /// The frame's api key.
        api_key: ApiKey,
        /// Whether the frame is a response.
        response: bool,
    },
    /// The flatbuffer header failed verification as its api's table.
    #[error("invalid {table} header: {source}")]
    InvalidHeader {
        /// The table the header should hold, e.g. "ProduceRequest".
        table: &'static str,
        /// What the flatbuffers verifier found.
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },
    /// A payload follows a header whose api carries none.
    #[error("{table} carries no payload, but {payload_len} bytes follow its header")]
    UnexpectedPayload {
        /// The table of the header.
        table: &'static str,
        /// Bytes after the header.
        payload_len: usize,
    },
    /// A field of a request breaks a limit of [`super::limits`].
    #[error("{field} is {value}, above the limit of {max}")]
    LimitExceeded {
        /// Which field, e.g. "MetadataRequest.topics".
        field: &'static str,
        /// Its value (a count or a length).
        value: u64,
        /// The limit.
        max: u64,
    },
    /// An enum field of a request holds a value the schema does not define
    /// (e.g. a newer client's acks mode).
    #[error("{field} has unknown value {value}")]
    UnknownEnumValue {
        /// Which field, e.g. "ProduceRequest.acks".
        field: &'static str,
        /// The raw value.
        value: u64,
    },
    /// The per-partition byte counts of a response do not add up to its
    /// payload exactly (a ReplicaFetchResponse's `payload_bytes`), so its
    /// batches cannot be told apart.
    #[error("{table} results claim {claimed} payload bytes, but the frame carries {payload_len}")]
    PayloadMismatch {
        /// The table of the header, e.g. "ReplicaFetchResponse".
        table: &'static str,
        /// The sum of the results' byte counts.
        claimed: u64,
        /// Bytes after the header.
        payload_len: usize,
    },
}

impl FrameError {
    /// Whether the connection must be closed after answering: the error lies
    /// in the prefix, so the next frame's start is unknown or too costly to
    /// reach (or the caller passed a wrong slice).
    pub fn is_fatal(&self) -> bool {
        match self {
            FrameError::TooShort { .. }
            | FrameError::TooLarge { .. }
            | FrameError::UnsupportedVersion { .. }
            | FrameError::UnknownFlags { .. }
            | FrameError::HeaderOverrun { .. }
            | FrameError::HeaderTooLarge { .. }
            | FrameError::LengthMismatch { .. } => true,
            FrameError::UnknownApi { .. }
            | FrameError::UnexpectedMessage { .. }
            | FrameError::InvalidHeader { .. }
            | FrameError::UnexpectedPayload { .. }
            | FrameError::LimitExceeded { .. }
            | FrameError::UnknownEnumValue { .. }
            | FrameError::PayloadMismatch { .. } => false,
        }
    }

    /// The wire error code a receiver answers this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::UnknownApi { .. } => ErrorCode::UnsupportedApi,
            _ => ErrorCode::InvalidRequest,
        }
    }
}
