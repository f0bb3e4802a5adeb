//! The proxy over real TCP on 127.0.0.1: bytes pass byte for byte, a delay
//! delays, a drop black-holes one direction while the other works, a cut
//! resets, a heal restores, a change reaches an existing connection, the
//! counters count, and a stop ends everything.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{ErrorKind, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use broker_netfault::{Direction, Fault, Proxy};
use common::{
    pair, read_n, read_within, refused_or_reset, round_trip, silent, target, was_reset, SOON,
};

fn proxy_to(target: &TcpListener) -> Proxy {
    Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        target.local_addr().unwrap(),
        7,
    )
    .unwrap()
}

/// `n` bytes of a fixed pseudo-random sequence (every byte value).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect()
}

/// FNV-1a, to name a mismatch by checksum as well as by position.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + SOON;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pass_carries_megabytes_both_ways_byte_for_byte_and_counts_them() {
    let target = target();
    let proxy = proxy_to(&target);
    let (mut client, mut server) = pair(&proxy, &target);
    let up = bytes(3 << 20, 1);
    let down = bytes(2 << 20, 2);
    // Both directions at once, each written on its own thread while the
    // other end reads, so neither waits on a full socket buffer of the other.
    let (up_len, down_len) = (up.len(), down.len());
    let sent_up = up.clone();
    let mut client_w = client.try_clone().unwrap();
    let w1 = thread::spawn(move || client_w.write_all(&sent_up).unwrap());
    let sent_down = down.clone();
    let mut server_w = server.try_clone().unwrap();
    let w2 = thread::spawn(move || server_w.write_all(&sent_down).unwrap());
    let got_up = read_n(&mut server, up_len);
    let got_down = read_n(&mut client, down_len);
    w1.join().unwrap();
    w2.join().unwrap();
    assert_eq!(checksum(&got_up), checksum(&up));
    assert!(got_up == up, "forward bytes differ");
    assert_eq!(checksum(&got_down), checksum(&down));
    assert!(got_down == down, "backward bytes differ");
    eventually("every byte was counted", || {
        let c = proxy.counters();
        c.forward.forwarded_bytes == up_len as u64 && c.backward.forwarded_bytes == down_len as u64
    });
    let c = proxy.counters();
    assert_eq!(c.accepted, 1);
    assert_eq!(c.resets, 0);
    assert_eq!(c.forward.forwarded_bytes, up_len as u64);
    assert_eq!(c.backward.forwarded_bytes, down_len as u64);
    assert_eq!(c.forward.dropped_bytes + c.backward.dropped_bytes, 0);
    // A half-close travels too: the target sees EOF after the last byte.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_within(&mut server, SOON).unwrap(), b"");
}

#[test]
fn delay_adds_at_least_the_delay_each_way_to_a_round_trip() {
    let target = target();
    let proxy = proxy_to(&target);
    proxy.set(Direction::Forward, Fault::Delay { ms: 40 });
    proxy.set(Direction::Backward, Fault::Delay { ms: 60 });
    let (mut client, mut server) = pair(&proxy, &target);
    let rtt = round_trip(&mut client, &mut server);
    assert!(rtt >= Duration::from_millis(100), "round trip {rtt:?}");
    assert!(rtt < Duration::from_secs(2), "round trip {rtt:?}");
}

#[test]
fn delay_keeps_the_order_of_the_bytes() {
    let target = target();
    let proxy = proxy_to(&target);
    proxy.set(Direction::Forward, Fault::Delay { ms: 20 });
    let (mut client, mut server) = pair(&proxy, &target);
    let sent = bytes(256 << 10, 3);
    for piece in sent.chunks(1000) {
        client.write_all(piece).unwrap();
    }
    assert!(read_n(&mut server, sent.len()) == sent);
}

#[test]
fn drop_forward_black_holes_the_clients_bytes_while_the_target_still_reaches_it() {
    let target = target();
    let proxy = proxy_to(&target);
    let (mut client, mut server) = pair(&proxy, &target);
    proxy.set(Direction::Forward, Fault::Drop);
    client.write_all(b"lost").unwrap();
    assert!(silent(&mut server), "dropped bytes arrived");
    server.write_all(b"back").unwrap();
    assert_eq!(read_n(&mut client, 4), b"back");
    // A chunk is counted once its write returned: maybe after the peer read it.
    eventually("the answer was counted", || {
        proxy.counters().backward.forwarded_bytes == 4
    });
    let c = proxy.counters();
    assert_eq!(c.forward.dropped_bytes, 4);
    assert_eq!(c.forward.forwarded_bytes, 0);
    assert_eq!(c.resets, 0, "a black hole keeps the connection open");
}

#[test]
fn drop_backward_black_holes_the_answers_while_requests_still_arrive() {
    let target = target();
    let proxy = proxy_to(&target);
    proxy.set(Direction::Backward, Fault::Drop);
    let (mut client, mut server) = pair(&proxy, &target);
    client.write_all(b"ask").unwrap();
    assert_eq!(read_n(&mut server, 3), b"ask");
    server.write_all(b"answer").unwrap();
    assert!(silent(&mut client), "dropped answer arrived");
    assert_eq!(proxy.counters().backward.dropped_bytes, 6);
}

#[test]
fn lifting_a_drop_resets_connections_that_lost_bytes_and_keeps_the_others() {
    let target = target();
    let proxy = proxy_to(&target);
    let (mut holed, mut holed_server) = pair(&proxy, &target);
    let (mut idle, mut idle_server) = pair(&proxy, &target);
    proxy.set(Direction::Both, Fault::Drop);
    holed.write_all(b"gone").unwrap();
    eventually("the bytes were dropped", || {
        proxy.counters().forward.dropped_bytes == 4
    });
    proxy.heal();
    // A stream with a hole is never delivered: its connection is reset.
    assert!(was_reset(&mut holed), "the holed connection went on");
    assert!(was_reset(&mut holed_server));
    // The idle one lost nothing, and carries on.
    round_trip(&mut idle, &mut idle_server);
    // New connections pass.
    let (mut fresh, mut fresh_server) = pair(&proxy, &target);
    round_trip(&mut fresh, &mut fresh_server);
}

#[test]
fn cut_resets_existing_connections_and_every_new_one_until_healed() {
    let target = target();
    let proxy = proxy_to(&target);
    let (mut client, mut server) = pair(&proxy, &target);
    round_trip(&mut client, &mut server);
    let start = Instant::now();
    proxy.set(Direction::Backward, Fault::Cut);
    assert!(
        was_reset(&mut client),
        "the client's connection survived a cut"
    );
    assert!(
        was_reset(&mut server),
        "the target's connection survived a cut"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A new one is accepted and reset at once; the target never sees it.
    assert!(
        refused_or_reset(proxy.addr()),
        "a new connection passed a cut"
    );
    target.set_nonblocking(true).unwrap();
    assert!(
        target.accept().is_err(),
        "the target was dialed through a cut"
    );
    assert_eq!(proxy.counters().accepted, 2);
    assert_eq!(proxy.counters().resets, 2);
    proxy.heal();
    let (mut client, mut server) = pair(&proxy, &target);
    round_trip(&mut client, &mut server);
}

#[test]
fn set_changes_the_faults_of_an_existing_connection() {
    let target = target();
    let proxy = proxy_to(&target);
    let (mut client, mut server) = pair(&proxy, &target);
    // The bound on "fast" is loose (a loaded machine), the delay far above it.
    let fast_max = Duration::from_millis(250);
    assert!(round_trip(&mut client, &mut server) < fast_max);
    let delay = Fault::Delay { ms: 150 };
    proxy.set(Direction::Both, delay);
    assert_eq!(proxy.faults(), (delay, delay));
    // The next bytes of the same connection are delayed each way.
    let slow = round_trip(&mut client, &mut server);
    assert!(slow >= Duration::from_millis(300), "round trip {slow:?}");
    proxy.set(Direction::Both, Fault::Pass);
    let fast = round_trip(&mut client, &mut server);
    assert!(fast < fast_max, "round trip {fast:?}");
    proxy.set(Direction::Forward, Fault::Drop);
    client.write_all(b"x").unwrap();
    assert!(silent(&mut server));
}

#[test]
fn flaky_resets_on_a_sure_draw_and_passes_on_a_zero_chance() {
    let target = target();
    let proxy = proxy_to(&target);
    proxy.set(Direction::Forward, Fault::Flaky { reset_per_mille: 0 });
    let (mut client, mut server) = pair(&proxy, &target);
    round_trip(&mut client, &mut server);
    proxy.set(
        Direction::Forward,
        Fault::Flaky {
            reset_per_mille: 1000,
        },
    );
    client.write_all(b"doomed").unwrap();
    assert!(was_reset(&mut server), "a sure reset did not happen");
    assert_eq!(proxy.counters().resets, 1);
}

#[test]
fn an_unreachable_target_resets_the_client() {
    // A port that was free a moment ago: connecting to it is refused.
    let closed: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), closed, 1).unwrap();
    assert!(refused_or_reset(proxy.addr()));
    assert_eq!(proxy.counters().resets, 1);
}

#[test]
fn stop_resets_connections_and_closes_the_listener() {
    let target = target();
    let mut proxy = proxy_to(&target);
    let addr = proxy.addr();
    let (mut client, _server) = pair(&proxy, &target);
    let start = Instant::now();
    proxy.stop();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        start.elapsed()
    );
    assert!(was_reset(&mut client));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    // The target's side: accepted once, nothing more.
    target.set_nonblocking(true).unwrap();
    assert!(target.accept().is_err());
}
