//! How a group's committed positions map to epochs.
//!
//! A position is an epoch and an offset on that epoch's cluster. A commit is
//! stored, through [`sluice_broker::Cluster::commit_offsets`], on the
//! cluster of the epoch it is in, as a plain offset: Kafka tools looking at
//! that cluster see ordinary committed offsets.
//!
//! Two rules make the stored offsets unambiguous when read back, even when
//! a topic returns to a cluster that holds an older epoch of it:
//!
//! - **No commit at an epoch's start.** A position at the very start of a
//!   later epoch is stored as the end of the epoch before (recursively past
//!   epochs empty on that partition). So an offset stored on a cluster
//!   either lies inside one of its epochs (after the start), or is the end of
//!   a sealed one.
//! - **Newest epoch first.** Reading back, the epochs are tried from the
//!   newest: the first whose cluster holds a committed offset strictly after
//!   the epoch's start (or anywhere in the first epoch) and not past its end
//!   is the position. A stale offset left on a cluster by an older epoch is
//!   at most that epoch's end, so it can never look like progress in a newer
//!   epoch on the same cluster (which starts at or after that end).
//!
//! Reading then continues from the position through
//! [`sluice_federation::Federation::read`], which finishes a sealed epoch
//! before the next: across a migration a group drains the old epoch first
//! and never skips or repeats committed progress.

use sluice_federation::placement::{Epoch, TopicPlacement};

/// A group's position in one partition: the epoch, and the next offset to
/// read on that epoch's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The epoch.
    pub epoch: u32,
    /// Next offset to read there.
    pub offset: u64,
}

fn start(e: &Epoch, partition: u32) -> u64 {
    e.start_offsets
        .get(partition as usize)
        .copied()
        .unwrap_or(0)
}

fn end(e: &Epoch, partition: u32) -> Option<u64> {
    if e.is_sealed() {
        e.end_offsets
            .as_ref()
            .and_then(|ends| ends.get(partition as usize).copied())
    } else {
        None
    }
}

/// Where a commit of `position` is stored: the cluster and the offset
/// there. `None` if the position names an epoch the topic does not have.
pub fn stored_at(
    placement: &TopicPlacement,
    partition: u32,
    position: Position,
) -> Option<(String, u64)> {
    let first = placement.epochs.first()?.epoch;
    let mut epoch = placement.epoch(position.epoch)?;
    let mut offset = position.offset.max(start(epoch, partition));
    if let Some(end) = end(epoch, partition) {
        offset = offset.min(end);
    }
    while epoch.epoch > first && offset <= start(epoch, partition) {
        epoch = placement.epoch(epoch.epoch - 1)?;
        offset = end(epoch, partition).unwrap_or_else(|| start(epoch, partition));
    }
    Some((epoch.cluster.clone(), offset))
}

/// The committed position, from what each cluster holds for the group
/// (`committed(cluster)`), or `None` when nothing was committed.
pub fn committed_position(
    placement: &TopicPlacement,
    partition: u32,
    committed: impl Fn(&str) -> Option<u64>,
) -> Option<Position> {
    let first = placement.epochs.first()?.epoch;
    for epoch in placement.epochs.iter().rev() {
        let Some(offset) = committed(&epoch.cluster) else {
            continue;
        };
        let low = start(epoch, partition);
        let after_start = offset > low || epoch.epoch == first;
        let before_end = end(epoch, partition).is_none_or(|end| offset <= end);
        if after_start && before_end {
            return Some(Position {
                epoch: epoch.epoch,
                offset,
            });
        }
    }
    None
}

/// Records from `at` to the end of the partition, by the cluster holding
/// them: the rest of `at`'s epoch, every later epoch whole, and the current
/// one up to `latest`. Every epoch from `at` on gives its cluster an entry,
/// 0 when there is nothing left to read there.
pub fn lag(
    placement: &TopicPlacement,
    partition: u32,
    at: Position,
    latest: u64,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for e in placement.epochs.iter().filter(|e| e.epoch >= at.epoch) {
        let from = match e.epoch == at.epoch {
            true => at.offset.max(start(e, partition)),
            false => start(e, partition),
        };
        let to = end(e, partition).unwrap_or(latest);
        let n = to.saturating_sub(from);
        match out.iter_mut().find(|(cluster, _)| *cluster == e.cluster) {
            Some((_, total)) => *total += n,
            None => out.push((e.cluster.clone(), n)),
        }
    }
    out
}

/// The position the reader is really at: past the end of a sealed epoch is
/// the start of the next.
pub fn settle(placement: &TopicPlacement, partition: u32, position: Position) -> Position {
    let mut position = position;
    while let Some(epoch) = placement.epoch(position.epoch) {
        position.offset = position.offset.max(start(epoch, partition));
        match (
            end(epoch, partition),
            placement.next_epoch_after(epoch.epoch),
        ) {
            (Some(end), Some(next)) if position.offset >= end => {
                position = Position {
                    epoch: next.epoch,
                    offset: start(next, partition),
                };
            }
            _ => break,
        }
    }
    position
}

/// The epoch a client-given "next offset" (one past a record it consumed)
/// belongs to: `hint` when that epoch holds it, else the newest epoch that
/// does, else the current epoch.
pub fn position_of(
    placement: &TopicPlacement,
    partition: u32,
    next_offset: u64,
    hint: Option<u32>,
) -> Option<Position> {
    let holds = |e: &Epoch| {
        next_offset > start(e, partition) && end(e, partition).is_none_or(|end| next_offset <= end)
    };
    let epoch = hint
        .and_then(|h| placement.epoch(h))
        .filter(|e| holds(e))
        .or_else(|| placement.epochs.iter().rev().find(|e| holds(e)))
        .or_else(|| placement.current())?;
    Some(Position {
        epoch: epoch.epoch,
        offset: next_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_federation::placement::{EpochReason, EpochState};

    fn epoch(n: u32, cluster: &str, start: u64, end: Option<u64>) -> Epoch {
        Epoch {
            epoch: n,
            cluster: cluster.into(),
            since_ms: 0,
            start_offsets: vec![start],
            end_offsets: end.map(|e| vec![e]),
            state: if end.is_some() {
                EpochState::Sealed
            } else {
                EpochState::Active
            },
            reason: EpochReason::Migration,
        }
    }

    /// a: epoch 1 [0,10); b: epoch 2 [0,5); a again: epoch 3 from 10.
    fn there_and_back() -> TopicPlacement {
        TopicPlacement {
            generation: 1,
            partitions: 1,
            epochs: vec![
                epoch(1, "a", 0, Some(10)),
                epoch(2, "b", 0, Some(5)),
                epoch(3, "a", 10, None),
            ],
        }
    }

    fn pos(epoch: u32, offset: u64) -> Position {
        Position { epoch, offset }
    }

    #[test]
    fn lag_counts_what_is_left_in_each_epoch_by_cluster() {
        let p = there_and_back();
        // In epoch 1 at 4: 6 left there, 5 in epoch 2, 12 - 10 in epoch 3.
        assert_eq!(
            lag(&p, 0, pos(1, 4), 12),
            vec![("a".into(), 8), ("b".into(), 5)]
        );
        // In epoch 2 at its end: only the current epoch is left.
        assert_eq!(
            lag(&p, 0, pos(2, 5), 12),
            vec![("b".into(), 0), ("a".into(), 2)]
        );
        // Caught up in the current epoch.
        assert_eq!(lag(&p, 0, pos(3, 12), 12), vec![("a".into(), 0)]);
        // An end that went backwards (retention, a recreated topic) is no lag.
        assert_eq!(lag(&p, 0, pos(3, 12), 11), vec![("a".into(), 0)]);
    }

    fn read_back(p: &TopicPlacement, stored: &[(&str, u64)]) -> Option<Position> {
        committed_position(p, 0, |c| {
            stored.iter().find(|(n, _)| *n == c).map(|(_, o)| *o)
        })
    }

    #[test]
    fn an_epoch_start_is_stored_as_the_previous_end() {
        let p = there_and_back();
        assert_eq!(stored_at(&p, 0, pos(3, 10)), Some(("b".into(), 5)));
        assert_eq!(stored_at(&p, 0, pos(2, 0)), Some(("a".into(), 10)));
        assert_eq!(stored_at(&p, 0, pos(3, 12)), Some(("a".into(), 12)));
        assert_eq!(stored_at(&p, 0, pos(1, 0)), Some(("a".into(), 0)));
    }

    #[test]
    fn a_stale_end_is_not_read_as_a_newer_epoch() {
        let p = there_and_back();
        // Epoch 1 finished, nothing committed in epoch 2 yet: "a" holds 10,
        // which is epoch 3's start too; it must mean "epoch 2 next".
        let at = read_back(&p, &[("a", 10)]).unwrap();
        assert_eq!(settle(&p, 0, at), pos(2, 0));
        // Progress in epoch 2 wins over the stale end on "a".
        assert_eq!(read_back(&p, &[("a", 10), ("b", 3)]), Some(pos(2, 3)));
        // Epoch 2 finished: settles at epoch 3's start.
        let at = read_back(&p, &[("a", 10), ("b", 5)]).unwrap();
        assert_eq!(settle(&p, 0, at), pos(3, 10));
        // Progress in epoch 3.
        assert_eq!(read_back(&p, &[("a", 14), ("b", 5)]), Some(pos(3, 14)));
        assert_eq!(read_back(&p, &[]), None);
    }

    #[test]
    fn every_position_round_trips() {
        let p = there_and_back();
        for position in [
            pos(1, 0),
            pos(1, 4),
            pos(1, 10),
            pos(2, 0),
            pos(2, 3),
            pos(2, 5),
            pos(3, 10),
            pos(3, 11),
        ] {
            let (cluster, offset) = stored_at(&p, 0, position).unwrap();
            // Only this commit, on top of a complete earlier history.
            let mut stored = vec![(cluster.as_str(), offset)];
            if cluster == "a" && position.epoch == 3 {
                stored.push(("b", 5));
            }
            let back = read_back(&p, &stored).unwrap();
            assert_eq!(settle(&p, 0, back), settle(&p, 0, position), "{position:?}");
        }
    }

    #[test]
    fn client_offsets_find_their_epoch() {
        let p = there_and_back();
        assert_eq!(position_of(&p, 0, 3, Some(2)), Some(pos(2, 3)));
        assert_eq!(position_of(&p, 0, 12, None), Some(pos(3, 12)));
        assert_eq!(position_of(&p, 0, 7, None), Some(pos(1, 7)));
    }
}
