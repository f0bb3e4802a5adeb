//! A wake-up for tasks waiting for something to change (new data in a
//! partition, a group forming a generation, a shard draining): a generation
//! counter bumped on every change, and the wakers of the tasks waiting for it
//! to move. Lives on one shard (`Cell`, `RefCell`).

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    task::{Poll, Waker},
    time::Duration,
};

use futures_lite::FutureExt;

/// A wake-up for long-polling readers: a generation counter bumped on every
/// arrival, and the wakers of the tasks waiting for it to move. A reader
/// takes the generation before it reads, so an arrival between its read and
/// its wait is never missed. A waiter that gives up (timeout, dropped
/// request) takes its waker out, so idle partitions collect no wakers.
#[derive(Default)]
pub struct Arrivals {
    generation: Cell<u64>,
    next_waiter: Cell<u64>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Arrivals {
    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// New data is readable: wake every waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// The number of registered waiters.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Waits until the generation differs from `seen`, or `wait` elapsed.
    /// Returns whether new data arrived.
    pub async fn wait(&self, seen: u64, wait: Duration) -> bool {
        let id = self.next_waiter.get();
        self.next_waiter.set(id.wrapping_add(1));
        let _registration = Registration { arrivals: self, id };
        let arrived = poll_fn(|cx| {
            if self.generation.get() != seen {
                return Poll::Ready(true);
            }
            let mut waiters = self.waiters.borrow_mut();
            match waiters.iter_mut().find(|(i, _)| *i == id) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => waiters.push((id, cx.waker().clone())),
            }
            Poll::Pending
        });
        let expired = async {
            glommio::timer::sleep(wait).await;
            false
        };
        arrived.or(expired).await
    }
}

/// Removes a waiter's waker when its wait ends, however it ends.
struct Registration<'a> {
    arrivals: &'a Arrivals,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.arrivals
            .waiters
            .borrow_mut()
            .retain(|(i, _)| *i != self.id);
    }
}
