//! Feeds arbitrary bytes to the wire protocol's frame decoders. They must
//! never panic, never accept a frame beyond the limit, and agree with each
//! other: what `decode_prefix` announces is what `decode_frame` returns.
//!
//! The input is used twice: as a byte stream a connection might deliver
//! (frames back to back, as the server splits them), and as a flatbuffer
//! header behind a valid prefix, so the verifier of every table is reached
//! even though random bytes rarely form a valid prefix.
#![no_main]

use broker_protocol::generated::{FetchResponse, MetadataResponse, ReplicaFetchResponse};
use broker_protocol::limits::{DEFAULT_MAX_FRAME_BYTES, MAX_HEADER_BYTES};
use broker_protocol::{
    decode_as, decode_frame, decode_prefix, encode_prefix, replica_fetch_slices, ApiKey,
    FrameHeader, FRAME_PREFIX_LEN,
};
use libfuzzer_sys::fuzz_target;

mod alloc_bound;

#[global_allocator]
static ALLOC: alloc_bound::Tracking = alloc_bound::Tracking;

/// Every api key of the schema, plus one nobody defined.
const KEYS: [u16; 8] = [1, 2, 3, 4, 10, 11, 12, 0xBEEF];

fuzz_target!(|data: &[u8]| alloc_bound::check(data.len(), || {
    as_stream(data, DEFAULT_MAX_FRAME_BYTES);
    // A small limit, chosen by the input, reaches the size checks.
    if let Some(&b) = data.first() {
        as_stream(&data[1..], usize::from(b) * 8);
    }
    if data.len() >= 2 {
        behind_valid_prefix(data);
    }
}));

/// Splits `data` into frames as a connection would, decoding each one.
fn as_stream(data: &[u8], max_frame: usize) {
    let mut rest = data;
    loop {
        match decode_prefix(rest, max_frame) {
            Ok(Some(h)) => {
                assert!(h.frame_bytes() <= max_frame);
                assert!(h.header_len() <= MAX_HEADER_BYTES);
                assert_eq!(
                    h.frame_bytes(),
                    FRAME_PREFIX_LEN + h.header_len() + h.payload_len()
                );
                assert_eq!(encode_prefix(&h), rest[..FRAME_PREFIX_LEN]);
                let Some(frame) = rest.get(..h.frame_bytes()) else {
                    // Truncated: the whole-frame decoder refuses it cleanly.
                    assert!(decode_frame(rest, max_frame).is_err());
                    return;
                };
                check_frame(frame, h, max_frame);
                rest = &rest[h.frame_bytes()..];
            }
            Ok(None) => {
                assert!(rest.len() < FRAME_PREFIX_LEN);
                return;
            }
            Err(e) => {
                assert!(e.is_fatal(), "{e}");
                let _ = (e.to_string(), e.error_code());
                return;
            }
        }
    }
}

/// Decodes one delimited frame every way, walking every field it accepts
/// (the generated Debug impls read them all).
fn check_frame(frame: &[u8], h: FrameHeader, max_frame: usize) {
    match decode_frame(frame, max_frame) {
        Ok(f) => {
            assert_eq!(f.header, h);
            assert_eq!(f.payload.len(), h.payload_len());
            let _ = format!("{:?}", f.body);
        }
        Err(e) => {
            assert!(!e.is_fatal(), "a delimited frame failed fatally: {e}");
            let _ = (e.to_string(), e.error_code());
        }
    }
    if let Ok(f) = decode_as::<FetchResponse>(frame, max_frame) {
        let _ = format!("{:?}", f.body);
    }
    if let Ok(f) = decode_as::<MetadataResponse>(frame, max_frame) {
        let _ = format!("{:?}", f.body);
    }
    // A follower slices an accepted answer's payload by its results.
    if let Ok(f) = decode_as::<ReplicaFetchResponse>(frame, max_frame) {
        if let Ok(slices) = replica_fetch_slices(&f.body, f.payload) {
            assert_eq!(
                slices.iter().map(|s| s.len()).sum::<usize>(),
                f.payload.len()
            );
        }
    }
}

/// `data[0]` picks the api and direction, `data[1]` how many trailing bytes
/// are payload, the rest is the header.
fn behind_valid_prefix(data: &[u8]) {
    let api = ApiKey(KEYS[usize::from(data[0] & 7)]);
    let response = data[0] & 8 != 0;
    let body = &data[2..];
    let payload_len = usize::from(data[1]).min(body.len());
    let header_len = body.len() - payload_len;
    let Ok(h) = FrameHeader::new(api, response, 1, header_len, payload_len) else {
        return;
    };
    let mut frame = Vec::with_capacity(FRAME_PREFIX_LEN + body.len());
    frame.extend_from_slice(&encode_prefix(&h));
    frame.extend_from_slice(body);
    assert_eq!(decode_prefix(&frame, DEFAULT_MAX_FRAME_BYTES), Ok(Some(h)));
    check_frame(&frame, h, DEFAULT_MAX_FRAME_BYTES);
}
