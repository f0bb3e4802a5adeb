//! Idempotent producers' state of one partition: pure (no I/O), fed the
//! producer fields of each batch's header (KIP-98's idempotence, as Kafka's
//! `ProducerStateManager` keeps it).
//!
//! A batch whose `producer_id` is -1 is not idempotent and never looked at.
//! For the others, per producer id: its epoch and the last
//! [`CACHED_BATCHES`] batches (sequence range, and their offsets once the
//! log acknowledged them; a producer keeps at most 5 requests in flight per
//! partition, so a retry is always among them). A batch is then:
//! - a duplicate of a cached one (same epoch, same first and last
//!   sequence): not appended again; answered with the original's offsets,
//!   once the original is acknowledged;
//! - the next one (same epoch, first sequence = the last cached + 1,
//!   wrapping at i32::MAX to 0; or a new epoch or a new producer starting at
//!   sequence 0): appended;
//! - otherwise refused: an older epoch is fenced (INVALID_PRODUCER_EPOCH), a
//!   gap or a reordering is OUT_OF_ORDER_SEQUENCE_NUMBER, and a producer
//!   this partition does not know that does not start at 0 is
//!   UNKNOWN_PRODUCER_ID (KIP-360: the producer bumps its epoch and goes on).
//!
//! Appends are pipelined: a batch is recorded when it is placed in the log
//! ([`Producers::placed`]), before it is acknowledged, so the next pipelined
//! batch checks against it; a failed append is taken back
//! ([`Producers::failed`]) so that its retry is accepted. At recovery the
//! state is rebuilt from the batches of the log's active segment
//! ([`Producers::recovered`]).

use std::collections::{HashMap, VecDeque};

use broker_format::BatchHeader;

/// Batches remembered per producer for duplicate detection: Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence.
pub const CACHED_BATCHES: usize = 5;

/// The producer fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIds {
    /// The producer id (>= 0).
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The first record's sequence.
    pub first_sequence: i32,
    /// The last record's sequence.
    pub last_sequence: i32,
}

impl BatchIds {
    /// The producer fields of an idempotent batch; None for a batch without
    /// a producer id.
    pub fn of(header: &BatchHeader) -> Option<BatchIds> {
        if header.producer_id < 0 {
            return None;
        }
        Some(BatchIds {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: add_sequence(header.base_sequence, header.records_count - 1),
        })
    }
}

/// `sequence + n`, wrapping from i32::MAX to 0 as Kafka's sequences do.
fn add_sequence(sequence: i32, n: i32) -> i32 {
    let sum = i64::from(sequence) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it (then call [`Producers::placed`] before any await).
    Append,
    /// A retry of a batch already in the log: answer with its offsets
    /// (`[base, next)`), or, while the original is not acknowledged yet
    /// (None), wait for it.
    Duplicate(Option<(u64, u64)>),
    /// Refuse it.
    Refuse(Refusal),
}

/// Why a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its epoch is older than the producer's current one.
    Fenced {
        /// The producer's epoch here.
        current: i16,
    },
    /// Its first sequence is not the next one expected.
    OutOfOrder {
        /// The sequence expected.
        expected: i32,
    },
    /// The producer is unknown here and does not start at sequence 0.
    UnknownProducer,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    first: i32,
    last: i32,
    offsets: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Cached>,
}

/// The state of every idempotent producer of one partition.
#[derive(Debug, Default)]
pub struct Producers {
    producers: HashMap<i64, Producer>,
}

impl Producers {
    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// What to do with batch `b`.
    pub fn check(&self, b: &BatchIds) -> Check {
        let Some(p) = self.producers.get(&b.producer_id) else {
            return if b.first_sequence == 0 {
                Check::Append
            } else {
                Check::Refuse(Refusal::UnknownProducer)
            };
        };
        if b.epoch < p.epoch {
            return Check::Refuse(Refusal::Fenced { current: p.epoch });
        }
        if b.epoch > p.epoch {
            return if b.first_sequence == 0 {
                Check::Append
            } else {
                Check::Refuse(Refusal::OutOfOrder { expected: 0 })
            };
        }
        if let Some(c) = p
            .batches
            .iter()
            .find(|c| c.first == b.first_sequence && c.last == b.last_sequence)
        {
            return Check::Duplicate(c.offsets);
        }
        let expected = p
            .batches
            .back()
            .map_or(0, |last| add_sequence(last.last, 1));
        if b.first_sequence == expected {
            Check::Append
        } else {
            Check::Refuse(Refusal::OutOfOrder { expected })
        }
    }

    /// Records `b`, which [`Producers::check`] said to append, as placed in
    /// the log (not acknowledged yet).
    pub fn placed(&mut self, b: &BatchIds) {
        self.record(b, None);
    }

    /// The log acknowledged `b` at `[base, next)`.
    pub fn acked(&mut self, b: &BatchIds, base: u64, next: u64) {
        if let Some(p) = self.producers.get_mut(&b.producer_id) {
            if p.epoch == b.epoch {
                if let Some(c) = p
                    .batches
                    .iter_mut()
                    .find(|c| c.first == b.first_sequence && c.last == b.last_sequence)
                {
                    c.offsets = Some((base, next));
                }
            }
        }
    }

    /// The append of `b` failed: it is forgotten, so that its retry is the
    /// next batch again (with the batches placed after it, which fail too).
    pub fn failed(&mut self, b: &BatchIds) {
        if let Some(p) = self.producers.get_mut(&b.producer_id) {
            if p.epoch == b.epoch {
                if let Some(i) = p
                    .batches
                    .iter()
                    .position(|c| c.first == b.first_sequence && c.last == b.last_sequence)
                {
                    p.batches.truncate(i);
                }
            }
        }
    }

    /// A batch found in the log at recovery, at `[base, next)`.
    pub fn recovered(&mut self, b: &BatchIds, base: u64, next: u64) {
        self.record(b, Some((base, next)));
    }

    fn record(&mut self, b: &BatchIds, offsets: Option<(u64, u64)>) {
        let p = self.producers.entry(b.producer_id).or_insert(Producer {
            epoch: b.epoch,
            batches: VecDeque::new(),
        });
        if b.epoch != p.epoch {
            p.epoch = b.epoch;
            p.batches.clear();
        }
        if p.batches.len() == CACHED_BATCHES {
            p.batches.pop_front();
        }
        p.batches.push_back(Cached {
            first: b.first_sequence,
            last: b.last_sequence,
            offsets,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pid: i64, epoch: i16, first: i32, count: i32) -> BatchIds {
        BatchIds {
            producer_id: pid,
            epoch,
            first_sequence: first,
            last_sequence: add_sequence(first, count - 1),
        }
    }

    /// Appends `b` as the partition does: check, place, acknowledge.
    fn append(s: &mut Producers, b: &BatchIds, base: u64) -> Check {
        let c = s.check(b);
        if c == Check::Append {
            s.placed(b);
            let n = (i64::from(b.last_sequence) - i64::from(b.first_sequence) + 1) as u64;
            s.acked(b, base, base + n);
        }
        c
    }

    #[test]
    fn a_retried_batch_is_a_duplicate_with_its_original_offsets() {
        let mut s = Producers::default();
        assert_eq!(append(&mut s, &ids(7, 0, 0, 10), 100), Check::Append);
        assert_eq!(append(&mut s, &ids(7, 0, 10, 5), 110), Check::Append);
        assert_eq!(
            s.check(&ids(7, 0, 0, 10)),
            Check::Duplicate(Some((100, 110)))
        );
        assert_eq!(
            s.check(&ids(7, 0, 10, 5)),
            Check::Duplicate(Some((110, 115)))
        );
        assert_eq!(s.check(&ids(7, 0, 15, 1)), Check::Append);
    }

    #[test]
    fn a_gap_or_reorder_is_refused_and_an_old_epoch_fenced() {
        let mut s = Producers::default();
        append(&mut s, &ids(1, 3, 0, 4), 0);
        assert_eq!(
            s.check(&ids(1, 3, 5, 1)),
            Check::Refuse(Refusal::OutOfOrder { expected: 4 })
        );
        assert_eq!(
            s.check(&ids(1, 2, 4, 1)),
            Check::Refuse(Refusal::Fenced { current: 3 })
        );
        // A new epoch starts again at 0, and only at 0.
        assert_eq!(
            s.check(&ids(1, 4, 4, 1)),
            Check::Refuse(Refusal::OutOfOrder { expected: 0 })
        );
        assert_eq!(append(&mut s, &ids(1, 4, 0, 1), 4), Check::Append);
        // An unknown producer must start at 0 (else it is told it is unknown).
        assert_eq!(
            s.check(&ids(2, 0, 9, 1)),
            Check::Refuse(Refusal::UnknownProducer)
        );
    }

    #[test]
    fn pipelined_batches_check_against_placed_ones_and_a_failure_is_taken_back() {
        let mut s = Producers::default();
        let (a, b) = (ids(5, 0, 0, 2), ids(5, 0, 2, 2));
        assert_eq!(s.check(&a), Check::Append);
        s.placed(&a);
        // In flight: the next batch follows it; a retry waits for it.
        assert_eq!(s.check(&b), Check::Append);
        s.placed(&b);
        assert_eq!(s.check(&a), Check::Duplicate(None));
        // a fails (and b with it): a's retry is the next batch again.
        s.failed(&a);
        assert_eq!(s.check(&a), Check::Append);
        assert_eq!(
            s.check(&b),
            Check::Refuse(Refusal::OutOfOrder { expected: 0 })
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = Producers::default();
        for i in 0..7 {
            append(&mut s, &ids(9, 0, i, 1), i as u64);
        }
        assert_eq!(s.check(&ids(9, 0, 2, 1)), Check::Duplicate(Some((2, 3))));
        assert!(matches!(s.check(&ids(9, 0, 1, 1)), Check::Refuse(_)));
        let mut s = Producers::default();
        s.recovered(&ids(3, 0, i32::MAX - 1, 2), 0, 2);
        assert_eq!(s.check(&ids(3, 0, 0, 1)), Check::Append);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(ids(3, 0, i32::MAX, 3).last_sequence, 1);
    }
}
