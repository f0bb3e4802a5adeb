//! A seeded schedule of mesh faults: bounded, printable, and the same for
//! the same seed, so that a failing run names its seed and replays.

use std::{fmt, ops::Range};

use crate::{limits::MAX_PLAN_STEPS, rng::Rng, Fault};

/// A setting of a whole [`Mesh`](crate::Mesh) (see [`Mesh::apply`](crate::Mesh::apply)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Every link to or from `node` gets `fault`.
    Isolate {
        /// The node cut off.
        node: usize,
        /// What its links do.
        fault: Fault,
    },
    /// Only nodes in a common group talk; other links get `fault`.
    Partition {
        /// The groups.
        groups: Vec<Vec<usize>>,
        /// What the links between groups do.
        fault: Fault,
    },
    /// `left` and `right` apart (`fault`), `middle` sees both.
    Bridge {
        /// One half.
        left: Vec<usize>,
        /// The node in both halves.
        middle: usize,
        /// The other half.
        right: Vec<usize>,
        /// What the links between the halves do.
        fault: Fault,
    },
    /// Bytes from `from` to `to` get `fault`; nothing else changes.
    OneWay {
        /// The sender whose bytes suffer.
        from: usize,
        /// Their receiver.
        to: usize,
        /// What happens to them.
        fault: Fault,
    },
    /// Every link passes.
    Heal,
}

/// One step of a plan: an action, then how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to set.
    pub action: Action,
    /// How long to leave it before the next step, in milliseconds.
    pub hold_ms: u64,
}

/// A list of steps generated from a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// The seed that generated it.
    pub seed: u64,
    /// The nodes it was made for.
    pub nodes: usize,
    /// The steps, in order: each fault is followed by a `Heal`.
    pub steps: Vec<Step>,
}

impl FaultPlan {
    /// `faults` faults on a mesh of `nodes` nodes (at least 2), each followed
    /// by a heal, every step held for a time drawn from `hold_ms`: isolation,
    /// partition into two sides, bridge (3 nodes or more) and one-way
    /// faults, with Drop, Cut or (one-way) a delay of 10 to 200 ms.
    /// Panics when `nodes < 2`, `hold_ms` is empty, or the plan would have
    /// more than [`MAX_PLAN_STEPS`] steps.
    pub fn generate(seed: u64, nodes: usize, faults: usize, hold_ms: Range<u64>) -> FaultPlan {
        assert!(
            nodes >= 2,
            "a fault plan needs 2 nodes or more, not {nodes}"
        );
        assert!(!hold_ms.is_empty(), "empty hold range {hold_ms:?}");
        assert!(
            faults.saturating_mul(2) <= MAX_PLAN_STEPS,
            "{faults} faults exceed {MAX_PLAN_STEPS} steps"
        );
        let mut rng = Rng::new(seed);
        let hold = |rng: &mut Rng| hold_ms.start + rng.below(hold_ms.end - hold_ms.start);
        let mut steps = Vec::with_capacity(faults * 2);
        for _ in 0..faults {
            let kinds = if nodes >= 3 { 4 } else { 3 };
            let blocking = if rng.below(2) == 0 {
                Fault::Drop
            } else {
                Fault::Cut
            };
            let action = match rng.below(kinds) {
                0 => Action::Isolate {
                    node: rng.below(nodes as u64) as usize,
                    fault: blocking,
                },
                1 => {
                    let order = rng.permutation(nodes);
                    let split = 1 + rng.below(nodes as u64 - 1) as usize;
                    Action::Partition {
                        groups: vec![sorted(&order[..split]), sorted(&order[split..])],
                        fault: blocking,
                    }
                }
                2 => {
                    let from = rng.below(nodes as u64) as usize;
                    let to = (from + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
                    let fault = match rng.below(3) {
                        0 => Fault::Delay {
                            ms: 10 + rng.below(191),
                        },
                        _ => blocking,
                    };
                    Action::OneWay { from, to, fault }
                }
                _ => {
                    let order = rng.permutation(nodes);
                    let half = 1 + (nodes - 1) / 2;
                    Action::Bridge {
                        middle: order[0],
                        left: sorted(&order[1..half]),
                        right: sorted(&order[half..]),
                        fault: blocking,
                    }
                }
            };
            steps.push(Step {
                action,
                hold_ms: hold(&mut rng),
            });
            steps.push(Step {
                action: Action::Heal,
                hold_ms: hold(&mut rng),
            });
        }
        FaultPlan { seed, nodes, steps }
    }
}

fn sorted(nodes: &[usize]) -> Vec<usize> {
    let mut v = nodes.to_vec();
    v.sort_unstable();
    v
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fault plan: seed {}, {} nodes, {} steps",
            self.seed,
            self.nodes,
            self.steps.len()
        )?;
        for (k, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>3}. {} for {} ms", k + 1, step.action, step.hold_ms)?;
        }
        Ok(())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Isolate { node, fault } => write!(f, "isolate {node} ({fault:?})"),
            Action::Partition { groups, fault } => write!(f, "partition {groups:?} ({fault:?})"),
            Action::Bridge {
                left,
                middle,
                right,
                fault,
            } => write!(f, "bridge {left:?} <- {middle} -> {right:?} ({fault:?})"),
            Action::OneWay { from, to, fault } => write!(f, "one-way {from} -> {to} ({fault:?})"),
            Action::Heal => write!(f, "heal"),
        }
    }
}
