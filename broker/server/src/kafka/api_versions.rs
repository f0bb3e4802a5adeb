//! ApiVersions (key 18), versions 0-4: the apis and versions this broker
//! serves ([`super::APIS`]). Its answer's header is always v0 (no tagged
//! fields), whatever the version, so that a client that does not know our
//! versions yet can read it; a version newer than ours gets a v0 answer
//! with UNSUPPORTED_VERSION and the ranges (KIP-511), and the client retries
//! with one we serve.

use super::errors;
use super::wire::{DecodeResult, Encoder};
use super::{Reply, Request, Response, APIS};

/// Answers an ApiVersions request. The body (v3+: the client's software
/// name and version) is informational and not decoded.
pub fn handle(request: Request<'_>) -> DecodeResult<Reply> {
    let mut e = Response::start(&request, 0);
    body(&mut e, request.version, errors::NONE);
    Ok(Reply::Send(Response::finish(e, Vec::new())))
}

/// The v0 answer to a version we do not serve.
pub fn unsupported(correlation_id: i32) -> Response {
    let mut e = Encoder::new(Vec::with_capacity(128));
    e.i32(0);
    e.i32(correlation_id);
    body(&mut e, 0, errors::UNSUPPORTED_VERSION);
    Response::finish(e, Vec::new())
}

fn body(e: &mut Encoder, version: i16, error: i16) {
    let flexible = version >= 3;
    e.i16(error);
    e.array_len(flexible, APIS.len());
    for a in APIS {
        e.i16(a.key);
        e.i16(a.min);
        e.i16(a.max);
        e.tagged_fields(flexible);
    }
    if version >= 1 {
        e.i32(0); // throttle_time_ms
    }
    e.tagged_fields(flexible);
}
