//! The cluster chaos run's checker: pure functions over what the run
//! collected (acknowledgements, the records read back, the topic admin
//! outcomes, every broker's topic list, every controller's status), so
//! that its unit tests feed it hand-made lost, misplaced, duplicated and
//! diverging inputs without a process.

use std::collections::BTreeMap;

use serde::Serialize;

/// One acknowledged record: a promise that `value` is at (`topic`,
/// `partition`, `offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub value: Vec<u8>,
}

/// What was read back, per (topic, partition): offset -> value.
pub type ReadBack = BTreeMap<(String, u32), BTreeMap<i64, Vec<u8>>>;

/// The records' figures.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCounts {
    /// Acknowledged records.
    pub acknowledged: u64,
    /// Acknowledged records whose offset holds nothing.
    pub lost: u64,
    /// Acknowledged records whose offset holds another value.
    pub misplaced: u64,
    /// Offsets acknowledged twice, for different values.
    pub acked_twice: u64,
    /// Records read back in all.
    pub read: u64,
    /// Acknowledged values also present at another offset (a retry of a
    /// produce whose first answer was lost: allowed, counted).
    pub duplicated: u64,
}

/// Checks every acknowledgement against what was read back.
pub fn check_records(acks: &[Ack], read: &ReadBack) -> (RecordCounts, Vec<String>) {
    let mut counts = RecordCounts {
        acknowledged: acks.len() as u64,
        read: read.values().map(|p| p.len() as u64).sum(),
        ..RecordCounts::default()
    };
    let mut violations = Vec::new();
    let mut promised: BTreeMap<(&str, u32, i64), &[u8]> = BTreeMap::new();
    for a in acks {
        let at = (a.topic.as_str(), a.partition, a.offset);
        if let Some(before) = promised.insert(at, &a.value) {
            if before != a.value.as_slice() {
                counts.acked_twice += 1;
                violations.push(format!(
                    "{}/{} offset {} acknowledged for two values: {} and {}",
                    a.topic,
                    a.partition,
                    a.offset,
                    show(before),
                    show(&a.value)
                ));
            }
        }
    }
    // Where each value was read (to count duplicates).
    let mut seen: BTreeMap<&[u8], u64> = BTreeMap::new();
    for p in read.values() {
        for v in p.values() {
            *seen.entry(v.as_slice()).or_default() += 1;
        }
    }
    for a in acks {
        let got = read
            .get(&(a.topic.clone(), a.partition))
            .and_then(|p| p.get(&a.offset));
        match got {
            None => {
                counts.lost += 1;
                violations.push(format!(
                    "acknowledged record lost: {}/{} offset {} ({})",
                    a.topic,
                    a.partition,
                    a.offset,
                    show(&a.value)
                ));
            }
            Some(v) if *v != a.value => {
                counts.misplaced += 1;
                violations.push(format!(
                    "acknowledged record misplaced: {}/{} offset {} holds {} instead of {}",
                    a.topic,
                    a.partition,
                    a.offset,
                    show(v),
                    show(&a.value)
                ));
            }
            Some(_) => {}
        }
        if seen.get(a.value.as_slice()).copied().unwrap_or(0) > 1 {
            counts.duplicated += 1;
        }
    }
    (counts, violations)
}

/// A record's value for a message: its id (what precedes the filler).
fn show(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    format!("{:?}", s.split('|').next().unwrap_or(""))
}

/// What a topic admin request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    /// Created with this many partitions (acknowledged).
    Created(u32),
    /// A create that failed or timed out: the topic may or may not exist.
    CreateFailed,
    /// Deleted (acknowledged).
    Deleted,
    /// A delete that failed or timed out: it may or may not be gone.
    DeleteFailed,
}

/// What must hold of a topic at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It exists with this many partitions.
    Exists(u32),
    /// It does not exist.
    Gone,
    /// Either.
    Unknown,
}

/// Every topic's expected end state from its admin history, in order.
pub fn expected_topics(history: &[(String, AdminOp)]) -> BTreeMap<String, Expect> {
    let mut out = BTreeMap::new();
    for (name, op) in history {
        let e = match op {
            AdminOp::Created(n) => Expect::Exists(*n),
            AdminOp::Deleted => Expect::Gone,
            AdminOp::CreateFailed | AdminOp::DeleteFailed => Expect::Unknown,
        };
        out.insert(name.clone(), e);
    }
    out
}

/// One broker's topic list: (name, partitions), as it answered.
pub type Listing = Vec<(String, u32)>;

/// Checks every broker's list (`listings[i]`: broker `i`, `None` if it
/// did not answer) against `expected`: each existing topic present once
/// with its partitions, each gone one absent, no name twice.
pub fn check_topics(
    expected: &BTreeMap<String, Expect>,
    listings: &[Option<Listing>],
) -> Vec<String> {
    let mut violations = Vec::new();
    for (i, listing) in listings.iter().enumerate() {
        let Some(listing) = listing else {
            violations.push(format!("broker {i} did not list its topics"));
            continue;
        };
        let mut by_name: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (name, partitions) in listing {
            by_name.entry(name).or_default().push(*partitions);
        }
        for (name, counts) in &by_name {
            if counts.len() > 1 {
                violations.push(format!(
                    "broker {i} lists topic {name} {} times",
                    counts.len()
                ));
            }
        }
        for (name, e) in expected {
            let got = by_name.get(name.as_str());
            match (e, got) {
                (Expect::Exists(_), None) => {
                    violations.push(format!("broker {i}: acknowledged topic {name} lost"));
                }
                (Expect::Exists(n), Some(c)) if c.iter().any(|c| c != n) => {
                    violations.push(format!(
                        "broker {i}: topic {name} has {c:?} partitions, created with {n}"
                    ));
                }
                (Expect::Gone, Some(_)) => {
                    violations.push(format!("broker {i}: deleted topic {name} still listed"));
                }
                _ => {}
            }
        }
    }
    violations
}

/// One controller's own view, from `broker cluster status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerView {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// Its image's version.
    pub version: u64,
    /// How many topics its image has.
    pub topics: u64,
}

/// The metadata is the same everywhere: every broker's topic list (with
/// partition counts) equal, every one of `controllers` controllers
/// answered, all with one leader, term, applied index, image version and
/// topic count, and that topic count the brokers' list's length plus
/// `hidden` (the internal topics the brokers do not list: the offsets
/// topic).
pub fn check_metadata(
    listings: &[Option<Listing>],
    views: &[ControllerView],
    controllers: usize,
    hidden: u64,
) -> Vec<String> {
    let mut violations = Vec::new();
    let answered: Vec<(usize, &Listing)> = listings
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.as_ref()?)))
        .collect();
    if let Some((first, reference)) = answered.first() {
        let mut reference = (*reference).clone();
        reference.sort();
        for (i, l) in &answered[1..] {
            let mut l = (*l).clone();
            l.sort();
            if l != reference {
                violations.push(format!(
                    "broker {i}'s topics differ from broker {first}'s: {l:?} vs {reference:?}"
                ));
            }
        }
    }
    if views.len() != controllers {
        violations.push(format!(
            "{} of {controllers} controllers answered",
            views.len()
        ));
    }
    if let Some(first) = views.first() {
        if first.leader.is_none() {
            violations.push(format!("controller {} knows no leader", first.node_id));
        }
        for v in &views[1..] {
            let key = |v: &ControllerView| (v.leader, v.term, v.last_applied, v.version, v.topics);
            if key(v) != key(first) {
                violations.push(format!("controllers disagree: {v:?} vs {first:?}"));
            }
        }
        if let Some((i, l)) = answered.first() {
            if l.len() as u64 + hidden != first.topics {
                violations.push(format!(
                    "broker {i} lists {} topics (and {hidden} hidden), controller {}'s image has {}",
                    l.len(),
                    first.node_id,
                    first.topics
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(topic: &str, p: u32, o: i64, v: &str) -> Ack {
        Ack {
            topic: topic.into(),
            partition: p,
            offset: o,
            value: v.as_bytes().to_vec(),
        }
    }

    fn read(items: &[(&str, u32, i64, &str)]) -> ReadBack {
        let mut r = ReadBack::new();
        for (t, p, o, v) in items {
            r.entry(((*t).into(), *p))
                .or_default()
                .insert(*o, v.as_bytes().to_vec());
        }
        r
    }

    #[test]
    fn every_ack_at_its_place_passes_and_duplicates_are_counted_not_failed() {
        let acks = [
            ack("a", 0, 0, "x"),
            ack("a", 0, 2, "y"),
            ack("b", 1, 0, "z"),
        ];
        let r = read(&[
            ("a", 0, 0, "x"),
            ("a", 0, 1, "x"),
            ("a", 0, 2, "y"),
            ("a", 0, 3, "unacked"),
            ("b", 1, 0, "z"),
        ]);
        let (c, v) = check_records(&acks, &r);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!((c.acknowledged, c.lost, c.misplaced, c.read), (3, 0, 0, 5));
        assert_eq!(c.duplicated, 1);
    }

    #[test]
    fn a_lost_record_is_caught() {
        let acks = [ack("a", 0, 0, "x"), ack("a", 0, 1, "y")];
        let (c, v) = check_records(&acks, &read(&[("a", 0, 0, "x")]));
        assert_eq!(c.lost, 1);
        assert!(v[0].contains("lost") && v[0].contains("offset 1"), "{v:?}");
        // A partition never read back at all: all of it lost.
        let (c, _) = check_records(&acks, &ReadBack::new());
        assert_eq!(c.lost, 2);
    }

    #[test]
    fn a_record_at_another_offset_or_partition_is_caught() {
        let acks = [ack("a", 0, 5, "x")];
        // At offset 5: something else; "x" sits elsewhere.
        let (c, v) = check_records(&acks, &read(&[("a", 0, 5, "w"), ("a", 1, 5, "x")]));
        assert_eq!(c.misplaced, 1, "{v:?}");
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn one_offset_acknowledged_for_two_values_is_caught() {
        let acks = [ack("a", 0, 0, "x"), ack("a", 0, 0, "y")];
        let (c, v) = check_records(&acks, &read(&[("a", 0, 0, "x")]));
        assert_eq!(c.acked_twice, 1);
        assert_eq!(c.misplaced, 1);
        assert!(v.iter().any(|v| v.contains("two values")), "{v:?}");
    }

    fn listing(items: &[(&str, u32)]) -> Option<Listing> {
        Some(items.iter().map(|(n, p)| ((*n).into(), *p)).collect())
    }

    #[test]
    fn topic_expectations_follow_the_admin_history() {
        let e = expected_topics(&[
            ("t1".into(), AdminOp::Created(3)),
            ("t2".into(), AdminOp::Created(2)),
            ("t2".into(), AdminOp::Deleted),
            ("t3".into(), AdminOp::CreateFailed),
            ("t1".into(), AdminOp::DeleteFailed),
            ("t4".into(), AdminOp::Created(1)),
        ]);
        assert_eq!(e["t1"], Expect::Unknown);
        assert_eq!(e["t2"], Expect::Gone);
        assert_eq!(e["t3"], Expect::Unknown);
        assert_eq!(e["t4"], Expect::Exists(1));
        // Either state of an unknown topic passes.
        let ok = [
            listing(&[("t1", 3), ("t4", 1)]),
            listing(&[("t4", 1), ("t1", 3)]),
        ];
        assert!(check_topics(&e, &ok).is_empty());
        assert!(check_topics(&e, &[listing(&[("t3", 9), ("t4", 1)])]).is_empty());
    }

    #[test]
    fn a_lost_a_resurrected_a_resized_and_a_doubled_topic_are_caught() {
        let e = expected_topics(&[
            ("kept".into(), AdminOp::Created(6)),
            ("gone".into(), AdminOp::Created(2)),
            ("gone".into(), AdminOp::Deleted),
        ]);
        let lost = check_topics(&e, &[listing(&[("other", 1)])]);
        assert!(lost.iter().any(|v| v.contains("kept lost")), "{lost:?}");
        let back = check_topics(&e, &[listing(&[("kept", 6), ("gone", 2)])]);
        assert!(back.iter().any(|v| v.contains("still listed")), "{back:?}");
        let resized = check_topics(&e, &[listing(&[("kept", 5)])]);
        assert!(
            resized.iter().any(|v| v.contains("partitions")),
            "{resized:?}"
        );
        let twice = check_topics(
            &e,
            &[
                listing(&[("kept", 6)]),
                listing(&[("kept", 6), ("kept", 6)]),
            ],
        );
        assert_eq!(twice.len(), 1, "{twice:?}");
        assert!(twice[0].contains("broker 1") && twice[0].contains("2 times"));
        let silent = check_topics(&e, &[None]);
        assert!(silent[0].contains("did not list"));
    }

    fn view(node_id: u64, term: u64, applied: u64, version: u64) -> ControllerView {
        ControllerView {
            node_id,
            leader: Some(1),
            term,
            last_applied: Some(applied),
            version,
            topics: 2,
        }
    }

    #[test]
    fn metadata_the_same_everywhere_passes() {
        let l = [
            listing(&[("a", 6), ("b", 6)]),
            listing(&[("b", 6), ("a", 6)]),
        ];
        let v = [view(1, 3, 40, 20), view(2, 3, 40, 20), view(3, 3, 40, 20)];
        assert!(check_metadata(&l, &v, 3, 0).is_empty());
    }

    #[test]
    fn diverging_metadata_is_caught() {
        let same = [view(1, 3, 40, 20), view(2, 3, 40, 20), view(3, 3, 40, 20)];
        // A broker missing a topic, or with another partition count.
        let l = [listing(&[("a", 6), ("b", 6)]), listing(&[("a", 6)])];
        let v = check_metadata(&l, &same, 3, 0);
        assert!(
            v.iter().any(|v| v.contains("broker 1's topics differ")),
            "{v:?}"
        );
        let l = [
            listing(&[("a", 6), ("b", 6)]),
            listing(&[("a", 6), ("b", 7)]),
        ];
        assert_eq!(check_metadata(&l, &same, 3, 0).len(), 1);
        // A controller behind, one in another term, one silent, none leading.
        let ok = [listing(&[("a", 6), ("b", 6)])];
        let behind = [view(1, 3, 40, 20), view(2, 3, 39, 19), view(3, 3, 40, 20)];
        assert_eq!(check_metadata(&ok, &behind, 3, 0).len(), 1);
        let term = [view(1, 3, 40, 20), view(2, 4, 40, 20), view(3, 3, 40, 20)];
        assert_eq!(check_metadata(&ok, &term, 3, 0).len(), 1);
        let silent = [view(1, 3, 40, 20), view(2, 3, 40, 20)];
        assert!(check_metadata(&ok, &silent, 3, 0)[0].contains("2 of 3"));
        let mut leaderless = same.clone();
        for v in &mut leaderless {
            v.leader = None;
        }
        assert!(check_metadata(&ok, &leaderless, 3, 0)[0].contains("no leader"));
        // The brokers agree with one another but not with the image.
        let mut more = same.clone();
        for v in &mut more {
            v.topics = 3;
        }
        let v = check_metadata(&ok, &more, 3, 0);
        assert!(v[0].contains("image has 3"), "{v:?}");
        // Unless the third is a hidden one.
        assert!(check_metadata(&ok, &more, 3, 1).is_empty());
    }
}
