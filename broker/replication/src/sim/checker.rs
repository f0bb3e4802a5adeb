//! The simulator's checker: the invariants of kafka-tlaplus
//! `kip_966_properties.tla`, checked after every simulated millisecond,
//! incrementally (each check costs what changed, not the log's length).
//!
//! It keeps the committed log: every prefix any leader's high watermark
//! ever covered (the model's `inv_true_hwm` and `inv_consumed`), and for
//! each broker the longest prefix of its log known equal to it. Then:
//! - ConsistentRead / Log Matching (§6.6): every running replica's log
//!   equals the committed log below its local high watermark; a leader's
//!   high watermark only extends it;
//! - LeaderCandidateCompleteness: every member of the controller's ISR and
//!   ELR holds the whole committed log, on its disk (so a crashed member
//!   too: only what was durable survives);
//! - NoCommittedRecordLost: every acks=all acknowledgement names records
//!   that are committed at the offsets it gave, and they are in the final
//!   log exactly once;
//! - at most one leader per leader epoch;
//! - the high watermark a consumer sees never goes back, and what it reads
//!   is committed.
//!
//! After an unclean election (only on a topic that allows it) data may be
//! lost: the checker then counts each loss it sees (a leader whose log
//! differs below its high watermark, a read that goes back, an
//! acknowledged record missing at the end) instead of failing, and takes
//! the new leader's log as the committed one.

use std::collections::{BTreeMap, BTreeSet};

use super::{Rec, SimBroker, PARTITION};
use crate::{Acks, BrokerId, Controller, LeaderEpoch, Offset, PartitionRegistration, RoleKind};

/// The checker's state.
#[derive(Debug, Default)]
pub struct Checker {
    committed: Vec<u64>,
    /// Per broker: the length of its log's prefix equal to `committed`.
    matched: Vec<usize>,
    leaders: BTreeMap<LeaderEpoch, BrokerId>,
    acked_all: BTreeMap<u64, u64>,
    acked_one: BTreeMap<u64, u64>,
    unclean_topic: bool,
    /// Off: only what clients could see is checked (leaders' committed
    /// prefixes, acknowledgements, reads, the final log), not the
    /// replicas' internal invariants.
    internal_checks: bool,
    lossy: bool,
    losses: u64,
}

impl Checker {
    /// For `brokers` brokers; `unclean_topic`: unclean elections allowed.
    pub fn new(brokers: usize, unclean_topic: bool) -> Checker {
        Checker {
            matched: vec![0; brokers],
            unclean_topic,
            internal_checks: true,
            ..Checker::default()
        }
    }

    /// Checks only what clients could see (to show that a flaw the
    /// internal checks catch does lose acknowledged writes).
    pub fn client_view_only(&mut self) {
        self.internal_checks = false;
    }

    /// The committed log's values.
    pub fn committed(&self) -> &[u64] {
        &self.committed
    }

    /// Losses seen after unclean elections.
    pub fn losses(&self) -> u64 {
        self.losses
    }

    /// A loss: fatal unless an unclean election made it possible.
    fn loss(&mut self, what: String) -> Result<(), String> {
        if self.lossy {
            self.losses += 1;
            Ok(())
        } else {
            Err(what)
        }
    }

    /// The checks after one step. `truncated_to[b]`: the lowest log end
    /// broker `b` was truncated to since the last check (`usize::MAX`:
    /// none).
    pub fn check(
        &mut self,
        brokers: &[SimBroker],
        truncated_to: &[usize],
        controller: &Controller,
    ) -> Result<(), String> {
        if controller.unclean_elections() > 0 {
            if !self.unclean_topic {
                return Err("an unclean election on a topic that does not allow it".into());
            }
            self.lossy = true;
        }
        for (b, broker) in brokers.iter().enumerate() {
            self.matched[b] = self.matched[b].min(truncated_to[b]).min(broker.log.len());
            self.extend_match(b, &broker.log);
        }
        // Leaders: one per epoch; each extends the committed log.
        for (b, broker) in brokers.iter().enumerate() {
            let Some(r) = broker.replica() else { continue };
            if r.role() != RoleKind::Leader {
                continue;
            }
            let epoch = r.leader_epoch().ok_or("a leader without an epoch")?;
            let first = *self.leaders.entry(epoch).or_insert(broker.id);
            if first != broker.id {
                return Err(format!(
                    "two leaders in epoch {epoch}: broker {first} and broker {}",
                    broker.id
                ));
            }
            self.leader_high_watermark(brokers, b, r.high_watermark().0 as usize)?;
        }
        for (b, broker) in brokers.iter().enumerate() {
            self.extend_match(b, &broker.log);
        }
        if !self.internal_checks {
            return Ok(());
        }
        // Log Matching below every replica's local high watermark.
        for (b, broker) in brokers.iter().enumerate() {
            let Some(r) = broker.replica() else { continue };
            let hw = r.high_watermark().0 as usize;
            if hw > self.committed.len() && !self.lossy {
                return Err(format!(
                    "broker {} has high watermark {hw} past anything committed ({})",
                    broker.id,
                    self.committed.len()
                ));
            }
            if self.matched[b] < hw.min(self.committed.len()) {
                self.loss(format!(
                    "broker {} differs from the committed log at offset {} below its high watermark {hw}",
                    broker.id, self.matched[b]
                ))?;
            }
        }
        // Leader Candidate Completeness, on disk.
        if let Some(reg) = controller.partition(PARTITION) {
            for id in reg.isr.iter().chain(&reg.elr) {
                let Some(b) = brokers.iter().position(|x| x.id == *id) else {
                    continue;
                };
                if self.matched[b] < self.committed.len() && !self.lossy {
                    let which = if reg.isr.contains(id) { "ISR" } else { "ELR" };
                    return Err(format!(
                        "broker {id} is in the {which} ({:?} / ELR {:?}, leader {:?} epoch {}) but its log (end {}, up {}) matches the committed log only to {} of {}",
                        reg.isr,
                        reg.elr,
                        reg.leader,
                        reg.leader_epoch,
                        brokers[b].log.len(),
                        brokers[b].up(),
                        self.matched[b],
                        self.committed.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Leader `b` has high watermark `hw`: its log below it is committed.
    /// Called after every step and at once when a leader moves it (it may
    /// lose leadership before the step ends).
    pub fn leader_high_watermark(
        &mut self,
        brokers: &[SimBroker],
        b: usize,
        hw: usize,
    ) -> Result<(), String> {
        let broker = &brokers[b];
        self.matched[b] = self.matched[b]
            .min(broker.truncated_to)
            .min(broker.log.len());
        self.extend_match(b, &broker.log);
        if self.matched[b] < hw.min(self.committed.len()) {
            self.loss(format!(
                "leader {} differs from the committed log at offset {} below its high watermark {hw}",
                broker.id, self.matched[b]
            ))?;
            // After an unclean election: its log is the truth now.
            self.committed = broker.log[..hw].iter().map(|r| r.value).collect();
            self.matched.fill(0);
            for (o, other) in brokers.iter().enumerate() {
                self.extend_match(o, &other.log);
            }
        }
        if hw > self.committed.len() {
            let start = self.committed.len();
            self.committed
                .extend(broker.log[start..hw].iter().map(|r| r.value));
            self.extend_match(b, &broker.log);
        }
        Ok(())
    }

    fn extend_match(&mut self, b: usize, log: &[Rec]) {
        let limit = log.len().min(self.committed.len());
        let mut m = self.matched[b].min(limit);
        while m < limit && log[m].value == self.committed[m] {
            m += 1;
        }
        self.matched[b] = m;
    }

    /// The registration's own invariants (`ValidControllerIsrAndElr`).
    pub fn on_registration(
        &mut self,
        reg: &PartitionRegistration,
        _brokers: &[SimBroker],
    ) -> Result<(), String> {
        let replicas: BTreeSet<BrokerId> = reg.replicas.iter().copied().collect();
        if !reg.isr.is_subset(&replicas) || !reg.elr.is_subset(&replicas) {
            return Err(format!("ISR or ELR outside the replicas: {reg:?}"));
        }
        if !reg.isr.is_disjoint(&reg.elr) {
            return Err(format!("a broker in both ISR and ELR: {reg:?}"));
        }
        if reg.isr.len() >= reg.min_insync_replicas && !reg.elr.is_empty() {
            return Err(format!("an ELR beside a full ISR: {reg:?}"));
        }
        if reg.leader.is_some_and(|l| !reg.isr.contains(&l)) {
            return Err(format!("a leader outside the ISR: {reg:?}"));
        }
        Ok(())
    }

    /// A produce acknowledged at `base`.
    pub fn on_ack(&mut self, base: Offset, values: &[u64], acks: Acks) -> Result<(), String> {
        for (i, v) in values.iter().enumerate() {
            let offset = base.0 + i as u64;
            match acks {
                Acks::Leader => {
                    self.acked_one.insert(offset, *v);
                }
                Acks::All => {
                    if self.committed.get(offset as usize) != Some(v) {
                        self.loss(format!(
                            "acks=all acknowledged value {v} at offset {offset}, but the committed log has {:?} there",
                            self.committed.get(offset as usize)
                        ))?;
                    }
                    self.acked_all.insert(offset, *v);
                }
            }
        }
        Ok(())
    }

    /// A consumer's read: high watermark `hw` after `before`, `values`
    /// from `from`.
    pub fn on_read(
        &mut self,
        consumer: usize,
        before: Offset,
        hw: Offset,
        from: Offset,
        values: &[u64],
    ) -> Result<(), String> {
        if hw < before {
            self.loss(format!(
                "consumer {consumer} saw the high watermark go back from {before} to {hw}"
            ))?;
        }
        for (i, v) in values.iter().enumerate() {
            let offset = from.0 as usize + i;
            if self.committed.get(offset) != Some(v) {
                self.loss(format!(
                    "consumer {consumer} read {v} at offset {offset}, the committed log has {:?}",
                    self.committed.get(offset)
                ))?;
            }
        }
        Ok(())
    }

    /// At the end, on the converged leader's log: every acks=all record
    /// at its offset, exactly once. Returns (acks=all lost, acks=1 lost).
    pub fn final_check(&mut self, log: &[Rec]) -> Result<(u64, u64), String> {
        let mut count: BTreeMap<u64, u32> = BTreeMap::new();
        for r in log {
            *count.entry(r.value).or_default() += 1;
        }
        let mut lost_all = 0;
        for (offset, v) in self.acked_all.clone() {
            let at = log.get(offset as usize).map(|r| r.value);
            if at != Some(v) || count.get(&v) != Some(&1) {
                lost_all += 1;
                self.loss(format!(
                    "acks=all value {v} at offset {offset}: the final log has {at:?} there and the value {} times",
                    count.get(&v).copied().unwrap_or(0)
                ))?;
            }
        }
        if !self.lossy
            && !log
                .iter()
                .map(|r| r.value)
                .take(self.committed.len())
                .eq(self.committed.iter().copied())
        {
            return Err("the committed log is not a prefix of the final log".into());
        }
        let lost_one = self
            .acked_one
            .iter()
            .filter(|(o, v)| log.get(**o as usize).map(|r| r.value) != Some(**v))
            .count() as u64;
        Ok((lost_all, lost_one))
    }
}
