//! The checker, in the spirit of Jepsen's queue workload: given what the
//! producers, the reader and the group saw during the run, and the whole
//! log read back at the end, it lists every violation and counts the rest.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::load::History;
use crate::members::Delivered;

/// The whole log after the run: (partition, offset) -> value.
pub type FinalLog = BTreeMap<(u32, i64), String>;

/// The counts of a run, printed and (with `CHAOS_SUMMARY`) written as JSON.
#[derive(Serialize, Default)]
pub struct Counts {
    pub acknowledged: usize,
    /// Of them, acknowledged to the Kafka-protocol producers.
    pub acknowledged_over_kafka: usize,
    /// Acknowledged records missing from the log or replaced (must be 0).
    pub lost: usize,
    /// Offsets seen with one record during the run and another after it.
    pub inconsistent_offsets: usize,
    pub records_in_log: usize,
    pub read_by_offset_during_run: usize,
    /// Distinct (partition, offset) the group delivered.
    pub delivered_to_group: usize,
    /// Deliveries to the group beyond the first of each record.
    pub duplicates_delivered: u64,
    /// Values present at more than one offset of the log.
    pub duplicate_records_in_log: usize,
    pub unacknowledged_sent: usize,
    /// Records sent but not acknowledged (a fault cut the answer off) that
    /// are in the log.
    pub unacknowledged_present: usize,
    pub group_memberships_joined: u64,
    pub group_member_exits: usize,
    /// Distinct (partition, offset) the Kafka clients' group delivered.
    pub delivered_to_kafka_group: usize,
    pub kafka_group_memberships_joined: u64,
}

/// The checks of a second group (the Kafka clients'), as for the first:
/// every acknowledged record delivered, no offset delivered with another
/// record than the log holds, no member violation. Its violations, and the
/// distinct records it delivered.
pub fn check_group(
    name: &str,
    h: &History,
    d: &Delivered,
    final_log: &FinalLog,
) -> (Vec<String>, usize) {
    let mut violations = Violations::default();
    for v in &d.violations {
        violations.push("group delivery", format!("{name}: {v}"));
    }
    for (at, value) in &h.acked {
        if !d.records.contains_key(at) {
            violations.push(
                "not delivered",
                format!("acknowledged {value} at {at:?} was never delivered to {name}"),
            );
        }
    }
    for ((p, o), (value, _)) in &d.records {
        if let Some(now) = final_log.get(&(*p, *o)).filter(|now| *now != value) {
            violations.push(
                "inconsistent",
                format!("offset {p}/{o} was delivered to {name} as {value}, the log has {now}"),
            );
        }
    }
    (violations.finish(), d.records.len())
}

/// Every violation (empty when all is well) and the counts.
pub fn check(
    h: &History,
    d: &Delivered,
    final_log: &FinalLog,
    partitions: u32,
) -> (Vec<String>, Counts) {
    let mut violations = Violations::default();
    for v in &h.acked_twice {
        violations.push("acknowledged twice", v.clone());
    }
    for v in &d.violations {
        violations.push("group delivery", v.clone());
    }
    let mut c = Counts {
        acknowledged: h.acked.len(),
        records_in_log: final_log.len(),
        read_by_offset_during_run: h.consumed.len(),
        delivered_to_group: d.records.len(),
        duplicates_delivered: d.records.values().map(|(_, n)| u64::from(n - 1)).sum(),
        unacknowledged_sent: h.unacked.len(),
        acknowledged_over_kafka: h.acked.values().filter(|v| v.starts_with('k')).count(),
        group_memberships_joined: d.joins,
        group_member_exits: d.exits.len(),
        ..Counts::default()
    };
    // No lost write: every acknowledged record is at its offset; and the
    // group was given every one (at least once).
    for (at, value) in &h.acked {
        match final_log.get(at) {
            Some(v) if v == value => {}
            other => {
                c.lost += 1;
                violations.push(
                    "lost",
                    format!("acknowledged {value} at {at:?} but the log has {other:?}"),
                );
            }
        }
        if !d.records.contains_key(at) {
            violations.push(
                "not delivered",
                format!("acknowledged {value} at {at:?} was never delivered to the group"),
            );
        }
    }
    // No offset ever held two records: what was read during the run is
    // what the log holds now.
    let during = h
        .consumed
        .iter()
        .map(|(p, o, v)| (*p, *o, v.as_str()))
        .chain(
            d.records
                .iter()
                .map(|((p, o), (v, _))| (*p, *o, v.as_str())),
        );
    for (p, o, value) in during {
        if let Some(now) = final_log.get(&(p, o)).filter(|now| *now != value) {
            c.inconsistent_offsets += 1;
            violations.push(
                "inconsistent",
                format!("offset {p}/{o} held {value} during the run, {now} after it"),
            );
        }
    }
    // Nothing reached the log that no producer sent (hostile batches).
    let sent: HashSet<&str> = h
        .acked
        .values()
        .chain(&h.unacked)
        .map(String::as_str)
        .collect();
    for ((p, o), value) in final_log {
        if !sent.contains(value.as_str()) {
            violations.push(
                "foreign record",
                format!("offset {p}/{o} holds {value:?}, which no producer sent"),
            );
        }
    }
    // Offsets are dense, and each producer's records are in sending order
    // within a partition.
    let acked_values: HashSet<&str> = h.acked.values().map(String::as_str).collect();
    for p in 0..partitions {
        let offsets: Vec<i64> = final_log
            .range((p, 0)..(p, i64::MAX))
            .map(|((_, o), _)| *o)
            .collect();
        if offsets
            .iter()
            .enumerate()
            .any(|(i, o)| *o != offsets[0] + i as i64)
        {
            violations.push("gap", format!("partition {p} has gaps between offsets"));
        }
        let mut last: HashMap<&str, u64> = HashMap::new();
        for ((_, o), value) in final_log.range((p, 0)..(p, i64::MAX)) {
            let Some((writer, seq)) = value.rsplit_once('-') else {
                continue; // Reported above as foreign.
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            if let Some(prev) = last.insert(writer, seq) {
                if seq <= prev && acked_values.contains(value.as_str()) {
                    violations.push(
                        "order",
                        format!("partition {p} offset {o}: {value} after {writer}-{prev}"),
                    );
                }
            }
        }
    }
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for v in final_log.values() {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    c.duplicate_records_in_log = seen.values().filter(|n| **n > 1).count();
    c.unacknowledged_present = h
        .unacked
        .iter()
        .filter(|v| seen.contains_key(v.as_str()))
        .count();
    (violations.finish(), c)
}

/// Violations by kind: the first few of each are kept, the rest counted.
#[derive(Default)]
struct Violations(BTreeMap<&'static str, (Vec<String>, usize)>);

impl Violations {
    const KEEP: usize = 5;

    fn push(&mut self, kind: &'static str, what: String) {
        let (kept, n) = self.0.entry(kind).or_default();
        *n += 1;
        if kept.len() < Self::KEEP {
            kept.push(what);
        }
    }

    fn finish(self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, (kept, n)) in self.0 {
            out.extend(kept.into_iter().map(|v| format!("{kind}: {v}")));
            if n > Self::KEEP {
                out.push(format!("{kind}: {} more", n - Self::KEEP));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run where producer w0 had offsets 0..3 of partition 0 acked,
    /// the log holds them, and the group got them all.
    fn clean() -> (History, Delivered, FinalLog) {
        let mut h = History::default();
        let mut d = Delivered::default();
        let mut log = FinalLog::new();
        for o in 0..3 {
            let v = format!("w0-{}", o + 1);
            h.acked.insert((0, o), v.clone());
            d.records.insert((0, o), (v.clone(), 1));
            log.insert((0, o), v);
        }
        (h, d, log)
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let (h, d, log) = clean();
        let (v, c) = check(&h, &d, &log, 1);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!((c.acknowledged, c.lost, c.duplicates_delivered), (3, 0, 0));
    }

    #[test]
    fn every_kind_of_violation_is_reported() {
        // Lost: the log ends early. Not delivered: the group missed one.
        let (h, mut d, mut log) = clean();
        log.remove(&(0, 2));
        d.records.remove(&(0, 1));
        let (v, c) = check(&h, &d, &log, 1);
        assert_eq!(c.lost, 1);
        assert!(
            v.iter().any(|v| v.starts_with("lost: acknowledged w0-3")),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|v| v.starts_with("not delivered: acknowledged w0-2")),
            "{v:?}"
        );

        // Inconsistent: the group saw another record at an offset; a
        // record no producer sent; out of order; a gap.
        let (mut h, mut d, mut log) = clean();
        d.records.insert((0, 1), ("w0-9".into(), 1));
        log.insert((0, 3), "good-0-1".into());
        log.insert((0, 4), "w0-1".into());
        h.unacked.push("w0-1".into());
        log.insert((0, 6), "w0-7".into());
        h.unacked.push("w0-7".into());
        let (v, c) = check(&h, &d, &log, 1);
        assert_eq!(c.inconsistent_offsets, 1, "{v:?}");
        assert_eq!(c.duplicate_records_in_log, 1);
        for kind in ["inconsistent:", "foreign record:", "order:", "gap:"] {
            assert!(v.iter().any(|v| v.starts_with(kind)), "no {kind} in {v:?}");
        }
    }
}
