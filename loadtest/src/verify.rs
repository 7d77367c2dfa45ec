//! Verification: every acknowledged record reached every subscriber, once,
//! and each subscriber saw each partition in offset order.
//!
//! Producers register each acknowledged record (its stamp and the
//! partition and offset in the ack) in the shared [`AckLog`]; each
//! subscriber keeps its own [`Delivery`] (a bitmap per producer of the
//! sequence numbers it received, the last offset per partition, and an
//! order-independent hash of `(partition, offset, producer, seq)`). At the
//! end the two are compared: a record acknowledged but not received is
//! lost, one received twice is a duplicate, an offset not above the
//! previous one on its partition is out of order, and equal hashes say the
//! records sit at the partitions and offsets their acks named.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::payload::Stamp;

/// A growable bitmap of sequence numbers.
#[derive(Debug, Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets `i`; returns whether it was set already.
    fn set(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        was
    }

    fn word(&self, i: usize) -> u64 {
        self.0.get(i).copied().unwrap_or(0)
    }
}

fn mix(partition: u32, offset: u64, producer: u32, seq: u64) -> u64 {
    let mut z = offset
        ^ (u64::from(partition) << 48)
        ^ (u64::from(producer)).rotate_left(24)
        ^ seq.rotate_left(40);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Default)]
struct AckState {
    acked: HashMap<u32, Bits>,
    count: u64,
    hash: u64,
    /// Records whose outcome is unknown (connection lost before the answer).
    uncertain: u64,
    /// Acks without offsets (acks=0): these cannot be placed.
    unplaced: u64,
}

/// What producers registered; shared by all of them.
#[derive(Debug, Default, Clone)]
pub struct AckLog {
    state: Arc<Mutex<AckState>>,
}

impl AckLog {
    /// Records `(stamp producer, seqs first..)` acknowledged at `(partition, offset)` each.
    pub fn acked(&self, producer: u32, first_seq: u64, placed: &[(u32, Option<u64>)]) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *s;
        let bits = s.acked.entry(producer).or_default();
        for (i, (partition, offset)) in placed.iter().enumerate() {
            let seq = first_seq + i as u64;
            bits.set(seq);
            s.count += 1;
            match offset {
                Some(offset) => {
                    s.hash = s.hash.wrapping_add(mix(*partition, *offset, producer, seq))
                }
                None => s.unplaced += 1,
            }
        }
    }

    /// `n` records whose outcome is unknown.
    pub fn uncertain(&self, n: u64) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .uncertain += n;
    }

    /// Records acknowledged so far.
    pub fn count(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count
    }

    /// Compares every subscriber's deliveries with the acks.
    pub fn check(&self, deliveries: &[Delivery]) -> VerifyReport {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = VerifyReport {
            subscribers: deliveries.len() as u64,
            acknowledged: s.count,
            uncertain: s.uncertain,
            unplaced: s.unplaced,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            unreadable: 0,
            placement_mismatches: 0,
            subscribers_complete: 0,
            problems: Vec::new(),
            ok: false,
        };
        for (index, d) in deliveries.iter().enumerate() {
            let mut lost = 0u64;
            let mut unexpected = 0u64;
            for (producer, acked) in &s.acked {
                let received = d.received.get(producer);
                for (w, word) in acked.0.iter().enumerate() {
                    let got = received.map_or(0, |r| r.word(w));
                    lost += u64::from((word & !got).count_ones());
                    unexpected += u64::from((got & !word).count_ones());
                }
            }
            for (producer, received) in &d.received {
                let acked = s.acked.get(producer);
                for (w, word) in received.0.iter().enumerate() {
                    if acked.is_none_or(|a| w >= a.0.len()) {
                        unexpected += u64::from(word.count_ones());
                    }
                }
            }
            // With nothing unexpected and every ack placed, the hashes must match.
            let mismatch = lost == 0 && unexpected == 0 && s.unplaced == 0 && d.hash != s.hash;
            if lost == 0 && d.duplicates == 0 && d.out_of_order == 0 && !mismatch {
                report.subscribers_complete += 1;
            }
            if report.problems.len() < 10 {
                if lost > 0 {
                    report.problems.push(format!(
                        "subscriber {index}: {lost} acknowledged records not delivered"
                    ));
                }
                if d.duplicates > 0 {
                    report
                        .problems
                        .push(format!("subscriber {index}: {} duplicates", d.duplicates));
                }
                if let Some(example) = &d.first_disorder {
                    report
                        .problems
                        .push(format!("subscriber {index}: {example}"));
                }
                if mismatch {
                    report.problems.push(format!(
                        "subscriber {index}: records not at the partitions/offsets their acks named"
                    ));
                }
            }
            report.lost += lost;
            report.unexpected += unexpected;
            report.duplicates += d.duplicates;
            report.out_of_order += d.out_of_order;
            report.unreadable += d.unreadable;
            report.placement_mismatches += u64::from(mismatch);
        }
        // Unexpected records are fine only when some sends had no answer
        // (they may have been written).
        let unexplained = report
            .unexpected
            .saturating_sub(report.uncertain * report.subscribers);
        report.ok = report.lost == 0
            && report.duplicates == 0
            && report.out_of_order == 0
            && report.placement_mismatches == 0
            && unexplained == 0
            && report.acknowledged > 0;
        report
    }
}

/// One subscriber's deliveries.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    received: HashMap<u32, Bits>,
    last_offset: HashMap<u32, u64>,
    hash: u64,
    duplicates: u64,
    out_of_order: u64,
    unreadable: u64,
    first_disorder: Option<String>,
    /// Records delivered.
    pub count: u64,
}

impl Delivery {
    /// A record arrived at `(partition, offset)` with `stamp` (None: its value had no stamp).
    pub fn record(&mut self, partition: u32, offset: u64, stamp: Option<Stamp>) {
        self.count += 1;
        if let Some(&last) = self.last_offset.get(&partition) {
            if offset <= last {
                self.out_of_order += 1;
                if self.first_disorder.is_none() {
                    self.first_disorder = Some(format!(
                        "partition {partition}: offset {offset} after {last}"
                    ));
                }
            }
        }
        self.last_offset.insert(partition, offset);
        let Some(stamp) = stamp else {
            self.unreadable += 1;
            return;
        };
        if self
            .received
            .entry(stamp.producer)
            .or_default()
            .set(stamp.seq)
        {
            self.duplicates += 1;
        } else {
            self.hash = self
                .hash
                .wrapping_add(mix(partition, offset, stamp.producer, stamp.seq));
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Subscribers checked.
    pub subscribers: u64,
    /// Records acknowledged to producers.
    pub acknowledged: u64,
    /// Records sent without an answer (connection lost): may or may not be written.
    pub uncertain: u64,
    /// Acknowledged without an offset (acks=0).
    pub unplaced: u64,
    /// Acknowledged records a subscriber did not receive (summed over subscribers).
    pub lost: u64,
    /// Records a subscriber received more than once.
    pub duplicates: u64,
    /// Records that came at or below the previous offset of their partition.
    pub out_of_order: u64,
    /// Records received that were never acknowledged.
    pub unexpected: u64,
    /// Records whose value carried no stamp (not from this run).
    pub unreadable: u64,
    /// Subscribers whose records are not where the acks placed them.
    pub placement_mismatches: u64,
    /// Subscribers with everything, once, in order.
    pub subscribers_complete: u64,
    /// The first few problems, in words.
    pub problems: Vec<String>,
    /// No loss, no duplicate, in order, every record where its ack said.
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(producer: u32, seq: u64) -> Option<Stamp> {
        Some(Stamp {
            producer,
            seq,
            sent_us: 0,
        })
    }

    #[test]
    fn complete_in_order_delivery_passes() {
        let log = AckLog::default();
        log.acked(1, 0, &[(0, Some(0)), (1, Some(0)), (0, Some(1))]);
        let mut d = Delivery::default();
        d.record(1, 0, stamp(1, 1));
        d.record(0, 0, stamp(1, 0));
        d.record(0, 1, stamp(1, 2));
        let r = log.check(&[d]);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.subscribers_complete, 1);
    }

    #[test]
    fn loss_duplicates_disorder_and_misplacement_are_found() {
        let log = AckLog::default();
        log.acked(1, 0, &[(0, Some(0)), (0, Some(1)), (0, Some(2))]);
        let mut lossy = Delivery::default();
        lossy.record(0, 0, stamp(1, 0));
        lossy.record(0, 1, stamp(1, 1));
        let mut dup = Delivery::default();
        for (o, s) in [(0, 0), (1, 1), (2, 2), (2, 2)] {
            dup.record(0, o, stamp(1, s));
        }
        let mut swapped = Delivery::default();
        for (o, s) in [(0, 0), (1, 2), (2, 1)] {
            swapped.record(0, o, stamp(1, s));
        }
        let r = log.check(&[lossy, dup, swapped]);
        assert!(!r.ok);
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.placement_mismatches, 1);
    }
}
