//! Network faults between brokers on one machine, without `tc netem`: a
//! TCP proxy of our own on each directed link, whose two directions each
//! pass, delay, black-hole or cut the bytes, changed at run time.
//!
//! - [`Proxy`]: one listen address in front of one target; every
//!   accepted connection gets its own connection to the target and two
//!   pump threads, one per [`Direction`], each applying that direction's
//!   [`Fault`].
//! - [`Mesh`]: a proxy per directed link `i -> j` of a set of nodes, and the
//!   partitions of Jepsen's nemesis (isolate, partition, one-way, bridge,
//!   heal) as settings of those links.
//! - [`FaultPlan`]: a bounded list of mesh faults generated from a seed,
//!   printed, replayed exactly by the same seed.
//!
//! What each fault is at the TCP level (see [`Fault`]): `Drop` is a black
//! hole, not byte loss. TCP never delivers a stream with a hole in it: a
//! lost segment is sent again, or the connection dies. So a proxy that
//! discarded bytes of a connection never forwards a later byte of it: when
//! the fault lifts, that connection is reset, as a real one would be once
//! its retransmissions gave up; connections that lost nothing carry on.
//!
//! Invariants: std threads and blocking sockets only; every blocking call
//! has a timeout ([`limits`]), every buffer a bound; every thread exits
//! once its proxy is stopped (or dropped), within a bounded time.

mod mesh;
mod plan;
mod proxy;
mod rng;

pub use mesh::Mesh;
pub use plan::{Action, FaultPlan, Step};
pub use proxy::{Counters, Flow, Proxy};

/// What a proxy does to the bytes of one direction of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward every byte as it comes.
    #[default]
    Pass,
    /// Hold every chunk read `ms` milliseconds before forwarding it, order
    /// kept (reading goes on meanwhile, up to a bounded delay line).
    Delay {
        /// The added one-way latency, in milliseconds.
        ms: u64,
    },
    /// A black hole: bytes are read and discarded and the connection stays
    /// open, as over a partitioned network whose packets vanish. A
    /// connection that lost bytes is reset when this direction's fault
    /// becomes anything else (its stream has a hole TCP would never
    /// deliver); one that lost none goes on.
    Drop,
    /// A broken link: existing connections are reset (RST; a TCP
    /// connection cannot be reset one way, so a `Cut` in either direction
    /// resets the whole connection), new ones are accepted and reset at
    /// once (the proxy's listen socket still completes the handshake: the
    /// dialer sees a reset rather than a refusal).
    Cut,
    /// Seeded chaos: each chunk is forwarded, except that with probability
    /// `reset_per_mille / 1000` per chunk the connection is reset instead.
    /// This, not dropping bytes at random, is the honest TCP equivalent of
    /// a lossy link: TCP hides loss as delay, or fails the connection.
    /// Which chunk draws the reset depends on how the kernel splits the
    /// stream into reads, so a seed replays the draws, not their position
    /// in the bytes.
    Flaky {
        /// Chance of a reset per chunk read, in thousandths.
        reset_per_mille: u16,
    },
}

/// Which direction of a proxy's connections a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The bytes the dialing client sends to the target.
    Forward,
    /// The bytes the target sends back to the client.
    Backward,
    /// Both.
    Both,
}

/// Every bound of the crate, with its reason.
pub mod limits {
    use std::time::Duration;

    /// Longest a pump blocks in one read or write before it looks at its
    /// fault, the stop flag and the delay line again: how promptly
    /// `Proxy::set` and `Proxy::stop` take effect (within a few of these).
    pub const TICK: Duration = Duration::from_millis(10);
    /// How often the accept loop (a non-blocking listener) looks for a
    /// connection and for the stop flag.
    pub const ACCEPT_POLL: Duration = Duration::from_millis(5);
    /// Longest a new connection waits for the target's connect.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Bytes read at once: one chunk of a delay line.
    pub const CHUNK_BYTES: usize = 16 * 1024;
    /// Most bytes a direction holds in its delay line; past it, the pump
    /// stops reading (the sender then blocks, as behind a slow link).
    pub const DELAY_LINE_BYTES: usize = 1 << 20;
    /// Most connections a proxy carries at once; more are reset at accept.
    pub const MAX_CONNECTIONS: usize = 256;
    /// Most steps a `FaultPlan` may have.
    pub const MAX_PLAN_STEPS: usize = 10_000;
}
