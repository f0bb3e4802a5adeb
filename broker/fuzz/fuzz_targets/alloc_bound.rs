//! A global allocator that remembers the largest single allocation, so a
//! target can check that no length or count field of its input drove an
//! allocation by itself: every allocation while a decoder runs must stay
//! within a small multiple of the input's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Largest allocation allowed per input byte.
const FACTOR: usize = 8;
/// Allowed on top, whatever the input: fixed-size buffers and tables.
const SLACK: usize = 64 << 10;

/// The system allocator, watched.
pub struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is a relaxed atomic maximum.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` (which decodes an input of `input_len` bytes) and panics when
/// any single allocation it made exceeded `FACTOR * input_len + SLACK`.
pub fn check<R>(input_len: usize, f: impl FnOnce() -> R) -> R {
    LARGEST.store(0, Relaxed);
    let r = f();
    let largest = LARGEST.load(Relaxed);
    let bound = FACTOR * input_len + SLACK;
    assert!(
        largest <= bound,
        "an allocation of {largest} bytes while decoding {input_len} input bytes (bound {bound})"
    );
    r
}
