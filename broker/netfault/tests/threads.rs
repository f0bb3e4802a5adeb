//! A stopped proxy leaves no thread behind: alone in its test binary, so
//! that the process's thread count is this test's own.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use broker_netfault::{Direction, Fault, Proxy};
use common::{pair, round_trip, target};

/// The threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn stop_leaves_no_thread_behind() {
    let before = threads();
    let target = target();
    let mut proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        target.local_addr().unwrap(),
        3,
    )
    .unwrap();
    let mut conns: Vec<_> = (0..5).map(|_| pair(&proxy, &target)).collect();
    for (client, server) in &mut conns {
        round_trip(client, server);
    }
    // Some connections mid-delay, one black-holed: every pump busy.
    proxy.set(Direction::Forward, Fault::Delay { ms: 500 });
    proxy.set(Direction::Backward, Fault::Drop);
    for (client, server) in &mut conns {
        std::io::Write::write_all(client, b"pending").unwrap();
        std::io::Write::write_all(server, b"lost").unwrap();
    }
    // The accept thread and two pumps per connection.
    assert_eq!(threads(), before + 1 + 2 * conns.len());
    let start = Instant::now();
    proxy.stop();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(threads(), before);
}
