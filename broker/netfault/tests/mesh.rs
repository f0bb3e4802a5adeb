//! The mesh over real TCP: three nodes on 127.0.0.1, .2 and .3 give six
//! distinct links that each reach their node, isolation blocks exactly the
//! links touching the node, partitions, bridges and one-way faults set the
//! links they say, a heal restores every link, and a seed replays its plan.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashSet,
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use broker_netfault::{Action, Fault, FaultPlan, Mesh};
use common::{dial, read_n, silent, Node};

/// Three answering nodes, 127.0.0.(i+1), and a mesh between them.
fn three() -> (Vec<Node>, Mesh) {
    let nodes: Vec<Node> = (0..3u8)
        .map(|i| Node::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i + 1)), i))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let mesh = Mesh::start(&addrs, 42).unwrap();
    (nodes, mesh)
}

/// A connection over every link that connects, `(i, j, stream)` (under a
/// cut the proxy's reset may come before the connect returns).
fn dial_all(mesh: &Mesh) -> Vec<(usize, usize, TcpStream)> {
    mesh.links()
        .filter_map(|(i, j, _)| {
            TcpStream::connect_timeout(&mesh.addr(i, j), Duration::from_secs(5))
                .ok()
                .map(|s| (i, j, s))
        })
        .collect()
}

/// Which links answer a ping now: each sends one byte, and those whose
/// node answered within the quiet time are returned.
fn answering(conns: &mut [(usize, usize, TcpStream)]) -> HashSet<(usize, usize)> {
    for (_, _, s) in conns.iter_mut() {
        // A write into a reset connection may fail: that link is down.
        let _ = s.write_all(b"?");
    }
    thread::sleep(Duration::from_millis(100));
    conns
        .iter_mut()
        .filter(|(_, _, s)| {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            let got = std::io::Read::read(&mut &*s, &mut b);
            let _ = s.set_nonblocking(false);
            matches!(got, Ok(1))
        })
        .map(|(i, j, _)| (*i, *j))
        .collect()
}

/// Every ordered pair of distinct nodes of three.
fn all_links() -> HashSet<(usize, usize)> {
    (0..3)
        .flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j)))
        .collect()
}

#[test]
fn three_nodes_give_six_distinct_links_each_reaching_its_node() {
    let (nodes, mesh) = three();
    assert_eq!(mesh.len(), 3);
    let links: Vec<_> = mesh.links().map(|(i, j, _)| (i, j)).collect();
    assert_eq!(links.len(), 6);
    let addrs: HashSet<SocketAddr> = links.iter().map(|&(i, j)| mesh.addr(i, j)).collect();
    assert_eq!(addrs.len(), 6, "links share an address");
    for &(i, j) in &links {
        assert_eq!(mesh.addr(i, j).ip(), nodes[j].addr.ip(), "link {i} -> {j}");
        assert_eq!(mesh.proxy(i, j).target(), nodes[j].addr);
        let mut s = dial(mesh.addr(i, j));
        s.write_all(b"?").unwrap();
        assert_eq!(
            read_n(&mut s, 1),
            [j as u8],
            "link {i} -> {j} reached another node"
        );
    }
}

#[test]
fn isolate_blocks_exactly_the_links_touching_the_node() {
    let (_nodes, mesh) = three();
    let mut conns = dial_all(&mesh);
    assert_eq!(answering(&mut conns), all_links());
    mesh.isolate(1, Fault::Drop);
    for (i, j, proxy) in mesh.links() {
        let want = if i == 1 || j == 1 {
            Fault::Drop
        } else {
            Fault::Pass
        };
        assert_eq!(proxy.faults(), (want, want), "link {i} -> {j}");
    }
    let expected: HashSet<_> = [(0, 2), (2, 0)].into();
    assert_eq!(answering(&mut conns), expected);
    // The black hole swallowed the pings of the four links through 1.
    let mut touching_1 = mesh.links().filter(|(i, j, _)| *i == 1 || *j == 1);
    assert!(touching_1.all(|(_, _, p)| p.counters().forward.dropped_bytes == 1));
}

#[test]
fn heal_restores_every_link_after_a_cut() {
    let (_nodes, mesh) = three();
    mesh.isolate(0, Fault::Cut);
    let mut conns = dial_all(&mesh);
    let expected: HashSet<_> = [(1, 2), (2, 1)].into();
    assert_eq!(answering(&mut conns), expected);
    mesh.heal();
    assert!(mesh
        .links()
        .all(|(_, _, p)| p.faults() == (Fault::Pass, Fault::Pass)));
    let mut conns = dial_all(&mesh);
    assert_eq!(answering(&mut conns), all_links());
}

#[test]
fn partition_and_bridge_block_the_links_between_their_sides() {
    let (_nodes, mesh) = three();
    let blocked = |mesh: &Mesh| -> HashSet<(usize, usize)> {
        mesh.links()
            .filter(|(_, _, p)| p.faults() == (Fault::Cut, Fault::Cut))
            .map(|(i, j, _)| (i, j))
            .collect()
    };
    mesh.partition(&[&[0], &[1, 2]], Fault::Cut);
    assert_eq!(blocked(&mesh), [(0, 1), (1, 0), (0, 2), (2, 0)].into());
    // A node in no group is cut off from all.
    mesh.partition(&[&[0, 2]], Fault::Cut);
    assert_eq!(blocked(&mesh), [(0, 1), (1, 0), (2, 1), (1, 2)].into());
    // The bridge: 0 and 2 apart, 1 sees both.
    mesh.bridge(&[0], 1, &[2], Fault::Cut);
    assert_eq!(blocked(&mesh), [(0, 2), (2, 0)].into());
    let mut conns = dial_all(&mesh);
    let expected: HashSet<_> = [(0, 1), (1, 0), (1, 2), (2, 1)].into();
    assert_eq!(answering(&mut conns), expected);
}

#[test]
fn one_way_loses_one_nodes_bytes_on_both_links_and_nothing_else() {
    let (_nodes, mesh) = three();
    mesh.one_way(0, 1, Fault::Drop);
    for (i, j, proxy) in mesh.links() {
        let want = match (i, j) {
            (0, 1) => (Fault::Drop, Fault::Pass),
            (1, 0) => (Fault::Pass, Fault::Drop),
            _ => (Fault::Pass, Fault::Pass),
        };
        assert_eq!(proxy.faults(), want, "link {i} -> {j}");
    }
    // 0's ping to 1 vanishes; 1's ping to 0 arrives, but 0's answer does not.
    let mut to_1 = dial(mesh.addr(0, 1));
    to_1.write_all(b"?").unwrap();
    assert!(silent(&mut to_1));
    let mut to_0 = dial(mesh.addr(1, 0));
    to_0.write_all(b"?").unwrap();
    assert!(silent(&mut to_0));
    assert_eq!(mesh.proxy(1, 0).counters().forward.forwarded_bytes, 1);
    assert_eq!(mesh.proxy(1, 0).counters().backward.dropped_bytes, 1);
}

#[test]
fn the_same_seed_gives_the_same_fault_plan() {
    let a = FaultPlan::generate(2026, 3, 50, 10..500);
    let b = FaultPlan::generate(2026, 3, 50, 10..500);
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    assert_ne!(a, FaultPlan::generate(2027, 3, 50, 10..500));
    assert_eq!(a.steps.len(), 100);
    for pair in a.steps.chunks(2) {
        assert_ne!(pair[0].action, Action::Heal);
        assert_eq!(pair[1].action, Action::Heal);
    }
    assert!(a.steps.iter().all(|s| (10..500).contains(&s.hold_ms)));
    // Every kind of fault shows up in a plan of this length.
    let text = a.to_string();
    for kind in ["isolate", "partition", "one-way", "bridge", "heal"] {
        assert!(text.contains(kind), "no {kind} in\n{text}");
    }
}

#[test]
fn every_step_of_a_generated_plan_applies_to_a_mesh() {
    let (_nodes, mesh) = three();
    let plan = FaultPlan::generate(7, 3, 40, 1..2);
    for step in &plan.steps {
        mesh.apply(&step.action);
        if step.action == Action::Heal {
            assert!(mesh
                .links()
                .all(|(_, _, p)| p.faults() == (Fault::Pass, Fault::Pass)));
        } else {
            assert!(
                mesh.links()
                    .any(|(_, _, p)| p.faults() != (Fault::Pass, Fault::Pass)),
                "{} changed no link",
                step.action
            );
        }
    }
}
