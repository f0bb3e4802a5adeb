//! A proxy per directed link of a set of nodes, and Jepsen's partitions as
//! settings of those links.
//!
//! Link `i -> j` is the proxy node `i` dials to reach node `j`: its
//! forward direction carries `i`'s bytes to `j`, its backward direction
//! `j`'s answers. "Bytes from `i` to `j` are lost" therefore means two
//! directions: forward on `i -> j` and backward on `j -> i`.

use std::{io, net::SocketAddr};

use crate::{rng::derive, Action, Direction, Fault, Proxy};

/// One [`Proxy`] per ordered pair of distinct nodes. Dropping it stops
/// every proxy.
pub struct Mesh {
    nodes: Vec<SocketAddr>,
    /// Link `i -> j` at `i * n + j`; `None` on the diagonal.
    links: Vec<Option<Proxy>>,
}

impl Mesh {
    /// A proxy for every link `i -> j` (`i != j`) of `nodes` (each node's
    /// real listen address), listening on a free port of node `j`'s IP and
    /// forwarding to `nodes[j]`. Link `(i, j)`'s `Flaky` draws come from a
    /// seed derived from `seed` and the link.
    pub fn start(nodes: &[SocketAddr], seed: u64) -> io::Result<Mesh> {
        let n = nodes.len();
        let mut links = Vec::with_capacity(n * n);
        for i in 0..n {
            for (j, &target) in nodes.iter().enumerate() {
                links.push(if i == j {
                    None
                } else {
                    let listen = SocketAddr::new(target.ip(), 0);
                    Some(Proxy::start(
                        listen,
                        target,
                        derive(seed, (i * n + j) as u64),
                    )?)
                });
            }
        }
        Ok(Mesh {
            nodes: nodes.to_vec(),
            links,
        })
    }

    /// How many nodes it joins.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it joins no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The address node `i` must dial to reach node `j`. Panics when
    /// `i == j` or either is not a node.
    pub fn addr(&self, i: usize, j: usize) -> SocketAddr {
        self.proxy(i, j).addr()
    }

    /// The proxy of link `i -> j` (its faults and counters). Panics when
    /// `i == j` or either is not a node.
    pub fn proxy(&self, i: usize, j: usize) -> &Proxy {
        let n = self.nodes.len();
        assert!(i < n && j < n, "link {i} -> {j} of a mesh of {n}");
        match &self.links[i * n + j] {
            Some(p) => p,
            None => panic!("no link from node {i} to itself"),
        }
    }

    /// Every link: `(i, j, proxy)`.
    pub fn links(&self) -> impl Iterator<Item = (usize, usize, &Proxy)> {
        let n = self.nodes.len();
        self.links
            .iter()
            .enumerate()
            .filter_map(move |(k, p)| p.as_ref().map(|p| (k / n, k % n, p)))
    }

    /// Node `i` cut off: every link to or from it gets `fault` both ways,
    /// every other link passes.
    pub fn isolate(&self, i: usize, fault: Fault) {
        self.apply(&Action::Isolate { node: i, fault });
    }

    /// Two nodes talk only when some group names both; every other link
    /// gets `fault` both ways. Disjoint groups are a partition; a node
    /// named in no group is cut off from all; a node named in two groups
    /// sees both (see [`Mesh::bridge`]).
    pub fn partition(&self, groups: &[&[usize]], fault: Fault) {
        self.apply(&Action::Partition {
            groups: groups.iter().map(|g| g.to_vec()).collect(),
            fault,
        });
    }

    /// Jepsen's bridge: `left` and `right` cannot reach each other
    /// (`fault`), `middle` reaches both.
    pub fn bridge(&self, left: &[usize], middle: usize, right: &[usize], fault: Fault) {
        self.apply(&Action::Bridge {
            left: left.to_vec(),
            middle,
            right: right.to_vec(),
            fault,
        });
    }

    /// Bytes from `from` to `to` get `fault` (on every connection, whoever
    /// dialed it); bytes from `to` to `from` and every other link are left
    /// as they are.
    pub fn one_way(&self, from: usize, to: usize, fault: Fault) {
        self.apply(&Action::OneWay { from, to, fault });
    }

    /// Every link passes again.
    pub fn heal(&self) {
        self.apply(&Action::Heal);
    }

    /// Sets the links as `action` says (every link, except for `OneWay`).
    pub fn apply(&self, action: &Action) {
        match action {
            Action::Isolate { node, fault } => {
                self.set_all(|i, j| i != *node && j != *node, *fault);
            }
            Action::Partition { groups, fault } => {
                self.set_all(|i, j| talk(groups, i, j), *fault);
            }
            Action::Bridge {
                left,
                middle,
                right,
                fault,
            } => {
                let groups = [
                    left.iter().chain([middle]).copied().collect(),
                    right.iter().chain([middle]).copied().collect(),
                ];
                self.set_all(|i, j| talk(&groups, i, j), *fault);
            }
            Action::OneWay { from, to, fault } => {
                self.proxy(*from, *to).set(Direction::Forward, *fault);
                self.proxy(*to, *from).set(Direction::Backward, *fault);
            }
            Action::Heal => self.set_all(|_, _| true, Fault::Pass),
        }
    }

    /// Every link `i -> j` passes both ways where `connected(i, j)`, and
    /// gets `fault` both ways elsewhere.
    fn set_all(&self, connected: impl Fn(usize, usize) -> bool, fault: Fault) {
        for (i, j, proxy) in self.links() {
            let f = if connected(i, j) { Fault::Pass } else { fault };
            proxy.set(Direction::Both, f);
        }
    }
}

/// Whether some group names both `i` and `j`.
fn talk(groups: &[Vec<usize>], i: usize, j: usize) -> bool {
    groups.iter().any(|g| g.contains(&i) && g.contains(&j))
}
