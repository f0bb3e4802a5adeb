//! Counters that prove the fetch path's zero-copy claim: bytes of record
//! batches written to sockets straight from a log buffer, and bytes copied
//! because a fetch was forwarded from another shard. Process-wide relaxed
//! atomics, kept in debug builds only (tests read them; release builds pay
//! nothing).

#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(debug_assertions)]
static FROM_LOG_BUFFERS: AtomicU64 = AtomicU64::new(0);
#[cfg(debug_assertions)]
static COPIED_FOR_FORWARD: AtomicU64 = AtomicU64::new(0);

/// `len` record bytes were written to a socket from a log buffer.
#[inline]
pub fn sent_from_log_buffer(len: usize) {
    #[cfg(debug_assertions)]
    FROM_LOG_BUFFERS.fetch_add(len as u64, Ordering::Relaxed);
    #[cfg(not(debug_assertions))]
    let _ = len;
}

/// `len` record bytes were copied into a forwarded response.
#[inline]
pub fn forwarded(len: usize) {
    #[cfg(debug_assertions)]
    COPIED_FOR_FORWARD.fetch_add(len as u64, Ordering::Relaxed);
    #[cfg(not(debug_assertions))]
    let _ = len;
}

/// (bytes sent from log buffers, bytes copied for forwarding) so far; both
/// zero in release builds.
pub fn snapshot() -> (u64, u64) {
    #[cfg(debug_assertions)]
    return (
        FROM_LOG_BUFFERS.load(Ordering::Relaxed),
        COPIED_FOR_FORWARD.load(Ordering::Relaxed),
    );
    #[cfg(not(debug_assertions))]
    (0, 0)
}
