//! The placement table: where each topic lives, epoch by epoch.
//!
//! A topic's history is a list of [`Epoch`]s numbered from 1. The last epoch
//! is the *current* (write) epoch and is [`EpochState::Active`]; every
//! earlier one is [`EpochState::Sealed`] with the offsets where it ends on
//! its cluster. Migration and failover seal the current epoch and open the
//! next one on another cluster.
//!
//! Everything here is pure. The planning operations ([`PlacementTable::create`],
//! [`PlacementTable::seal_and_open`], [`PlacementTable::delete`]) check the
//! request against the table and return a [`PlacementChange`] without
//! touching the table; the caller persists it (see `crate::store`) and then
//! [`PlacementTable::apply`]s it:
//!
//! ```
//! # use sluice_federation::placement::PlacementTable;
//! let mut table = PlacementTable::new();
//! let change = table.create("orders", 3, "east", 1_700_000_000_000)?;
//! // store.append(&change)?;   -- durable first
//! table.apply(&change)?;
//! assert_eq!(table.current("orders").unwrap().cluster, "east");
//! # Ok::<(), sluice_federation::placement::PlacementError>(())
//! ```
//!
//! # Changes are states, applied idempotently
//!
//! A change carries the topic's whole resulting [`TopicPlacement`], not a
//! delta, and every placement has a version: its `generation` (bumped when a
//! deleted name is created again) and its current epoch number. `apply`
//! keeps whichever is newer, so replaying a log twice, applying duplicates,
//! or reading a log compacted down to the last change per topic all give the
//! same table. Two gateways sharing a log converge by applying it in log
//! order: of two changes with the same version, the first wins and the
//! second comes back as [`Applied::Conflict`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether an epoch still takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochState {
    /// The current epoch: writes go here.
    Active,
    /// Closed: its records end at the epoch's `end_offsets`.
    Sealed,
}

/// Why an epoch was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochReason {
    /// The topic's first epoch.
    Created,
    /// A planned move (rebalance, drain, pin): drain-then-switch.
    Migration,
    /// The previous home was down and the topic's policy is `failover`.
    Failover,
}

/// One stretch of a topic's life on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// 1-based, increasing by one.
    pub epoch: u32,
    /// The cluster that holds this epoch's records.
    pub cluster: String,
    /// When the epoch was opened, in milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// Per partition: the offset on `cluster` where this epoch's records
    /// start (usually 0, higher when the topic comes back to a cluster that
    /// still holds older records of it).
    pub start_offsets: Vec<u64>,
    /// Per partition: the offset on `cluster` where this epoch's records
    /// end (exclusive); set when the epoch is sealed.
    pub end_offsets: Option<Vec<u64>>,
    /// Active or sealed.
    pub state: EpochState,
    /// Why it was opened.
    pub reason: EpochReason,
}

impl Epoch {
    /// Whether the epoch is sealed.
    pub fn is_sealed(&self) -> bool {
        self.state == EpochState::Sealed
    }
}

/// A topic's partition count and epochs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPlacement {
    /// Incarnation of the topic name: 1 at first creation, one more each
    /// time the name is created again after a delete.
    pub generation: u64,
    /// Partition count; the same on every epoch's cluster.
    pub partitions: u32,
    /// Oldest first; the last is the current epoch.
    pub epochs: Vec<Epoch>,
}

impl TopicPlacement {
    /// The current (write) epoch.
    pub fn current(&self) -> Option<&Epoch> {
        self.epochs.last()
    }

    /// Epoch number `n`.
    pub fn epoch(&self, n: u32) -> Option<&Epoch> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.epochs.get(i).filter(|e| e.epoch == n)
    }

    /// The epoch after epoch `n`.
    pub fn next_epoch_after(&self, n: u32) -> Option<&Epoch> {
        self.epoch(n.checked_add(1)?)
    }

    /// `(generation, current epoch)`: which of two placements is newer.
    pub fn version(&self) -> (u64, u32) {
        (self.generation, self.current().map_or(0, |e| e.epoch))
    }

    /// Checks the invariants every stored placement keeps.
    fn check(&self, topic: &str) -> Result<(), PlacementError> {
        let bad = |why: String| {
            Err(PlacementError::InvalidChange {
                topic: topic.to_owned(),
                why,
            })
        };
        if self.generation == 0 {
            return bad("generation 0".into());
        }
        if self.partitions == 0 {
            return bad("zero partitions".into());
        }
        if self.epochs.is_empty() {
            return bad("no epoch".into());
        }
        let n = self.partitions as usize;
        let last = self.epochs.len() - 1;
        for (i, e) in self.epochs.iter().enumerate() {
            if e.epoch as usize != i + 1 {
                return bad(format!("epoch {} at position {}", e.epoch, i + 1));
            }
            if e.cluster.is_empty() {
                return bad(format!("epoch {} has no cluster", e.epoch));
            }
            if e.start_offsets.len() != n {
                return bad(format!(
                    "epoch {} has {} start offsets for {n} partitions",
                    e.epoch,
                    e.start_offsets.len()
                ));
            }
            if (i == 0) != (e.reason == EpochReason::Created) {
                return bad(format!("epoch {} has reason {:?}", e.epoch, e.reason));
            }
            match (i == last, e.state, &e.end_offsets) {
                (true, EpochState::Active, None) => {}
                (false, EpochState::Sealed, Some(end)) => {
                    if end.len() != n {
                        return bad(format!(
                            "epoch {} has {} end offsets for {n} partitions",
                            e.epoch,
                            end.len()
                        ));
                    }
                    if let Some(p) = (0..n).find(|&p| end[p] < e.start_offsets[p]) {
                        return bad(format!("epoch {} ends before it starts on partition {p}", e.epoch));
                    }
                }
                _ => {
                    return bad(format!(
                        "epoch {} is {:?} but only the last epoch may be active, and sealed ones need end offsets",
                        e.epoch, e.state
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether `self` continues the history in `older`: the same epochs,
    /// with `older`'s current epoch possibly sealed since.
    fn extends(&self, older: &TopicPlacement) -> bool {
        if self.generation != older.generation
            || self.partitions != older.partitions
            || self.epochs.len() < older.epochs.len()
        {
            return false;
        }
        let Some((last, sealed)) = older.epochs.split_last() else {
            return false;
        };
        if self.epochs[..sealed.len()] != *sealed {
            return false;
        }
        let mine = &self.epochs[sealed.len()];
        mine.epoch == last.epoch
            && mine.cluster == last.cluster
            && mine.since_ms == last.since_ms
            && mine.start_offsets == last.start_offsets
            && mine.reason == last.reason
    }
}

/// A change to the table, as persisted by a store and replayed by
/// [`PlacementTable::apply`].
///
/// Each change but `Delete` carries the topic's whole placement after the
/// change, so the latest change of a topic is enough to rebuild it (a
/// compacted log keyed by topic keeps exactly that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PlacementChange {
    /// A topic was created with its first epoch.
    Create {
        /// The topic.
        topic: String,
        /// Its placement: one active epoch.
        placement: TopicPlacement,
    },
    /// Epoch `sealed_epoch` was sealed and the next one opened.
    SealAndOpen {
        /// The topic.
        topic: String,
        /// The epoch that was sealed.
        sealed_epoch: u32,
        /// The placement after the switch.
        placement: TopicPlacement,
    },
    /// A topic was deleted.
    Delete {
        /// The topic.
        topic: String,
        /// The generation that was deleted.
        generation: u64,
    },
}

impl PlacementChange {
    /// The topic it changes.
    pub fn topic(&self) -> &str {
        match self {
            Self::Create { topic, .. }
            | Self::SealAndOpen { topic, .. }
            | Self::Delete { topic, .. } => topic,
        }
    }
}

/// What [`PlacementTable::apply`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The table changed.
    Changed,
    /// The table already held exactly this; nothing changed.
    Duplicate,
    /// The table already holds something newer; nothing changed.
    Superseded,
    /// The table holds a different placement of the same version (another
    /// gateway's change won the race); nothing changed.
    Conflict,
}

/// A request to seal a topic's current epoch and open the next one; see
/// [`PlacementTable::seal_and_open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSwitch {
    /// The epoch the caller believes is current. The switch fails with
    /// [`PlacementError::EpochMoved`] if it is not (compare-and-set).
    pub expected_epoch: u32,
    /// Per partition: where the sealed epoch ends on its cluster (the
    /// log-end offsets once writes to it stopped).
    pub end_offsets: Vec<u64>,
    /// The new epoch's cluster.
    pub cluster: String,
    /// Per partition: where the new epoch starts on `cluster` (its current
    /// log-end offsets; zeros for a topic new to that cluster).
    pub start_offsets: Vec<u64>,
    /// `Migration` or `Failover`.
    pub reason: EpochReason,
}

/// Where a reader goes next; from [`PlacementTable::resolve_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFrom<'a> {
    /// The cluster to fetch from.
    pub cluster: &'a str,
    /// The epoch being read (store it in the reader's cursor).
    pub epoch: u32,
    /// The offset to fetch from on `cluster`.
    pub offset: u64,
    /// For a sealed epoch, where it ends: hand out no record at or past this
    /// offset from this epoch, then resolve again.
    pub end: Option<u64>,
}

/// An error from the placement table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The name breaks Kafka's topic-name rule.
    #[error("invalid topic name {0:?}: names must match [a-zA-Z0-9._-]{{1,249}}")]
    InvalidTopicName(String),
    /// `create` of a topic that exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic is not in the table.
    #[error("topic {0:?} is not placed")]
    UnknownTopic(String),
    /// A partition count of 0.
    #[error("topic {0:?}: a topic needs at least one partition")]
    ZeroPartitions(String),
    /// A cluster name that is empty.
    #[error("topic {0:?}: the cluster name is empty")]
    EmptyClusterName(String),
    /// The current epoch is not the one the caller expected: someone else
    /// switched it first. Reload and decide again.
    #[error("topic {topic:?}: expected current epoch {expected}, but it is {current}")]
    EpochMoved {
        /// The topic.
        topic: String,
        /// The epoch the caller expected.
        expected: u32,
        /// The actual current epoch.
        current: u32,
    },
    /// A per-partition offset list of the wrong length.
    #[error("topic {topic:?}: {what} has {got} entries for {partitions} partitions")]
    OffsetCount {
        /// The topic.
        topic: String,
        /// Which list.
        what: &'static str,
        /// The partition count.
        partitions: u32,
        /// The list's length.
        got: usize,
    },
    /// A sealed epoch would end before it starts.
    #[error("topic {topic:?}: partition {partition} would end at {end}, before its start {start}")]
    EndBeforeStart {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch's start offset there.
        start: u64,
        /// The requested end offset.
        end: u64,
    },
    /// `Created` is the reason of a first epoch only.
    #[error("topic {0:?}: a switch needs reason migration or failover")]
    CreatedIsNotASwitch(String),
    /// No such epoch.
    #[error("topic {topic:?} has no epoch {epoch}")]
    UnknownEpoch {
        /// The topic.
        topic: String,
        /// The epoch asked for.
        epoch: u32,
    },
    /// A partition past the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions, no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The partition count.
        partitions: u32,
    },
    /// A change that breaks the table's invariants (a bug or a damaged log).
    #[error("invalid placement change for topic {topic:?}: {why}")]
    InvalidChange {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
}

impl PlacementError {
    /// Whether the same request may succeed after reloading the table.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::EpochMoved { .. })
    }
}

/// Shorthand for placement results.
pub type Result<T, E = PlacementError> = std::result::Result<T, E>;

/// Every placed topic and its epochs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementTable {
    topics: BTreeMap<String, TopicPlacement>,
    /// Deleted names and the last generation deleted, so a late copy of an
    /// older change cannot bring a deleted topic back.
    deleted: BTreeMap<String, u64>,
}

impl PlacementTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    // ------------------------------------------------------------ planning

    /// Plans the creation of `topic` with `partitions` partitions on
    /// `cluster`: epoch 1, starting at offset 0 everywhere.
    pub fn create(
        &self,
        topic: &str,
        partitions: u32,
        cluster: &str,
        now_ms: i64,
    ) -> Result<PlacementChange> {
        if !sluice_config::is_valid_topic_name(topic) {
            return Err(PlacementError::InvalidTopicName(topic.to_owned()));
        }
        if self.topics.contains_key(topic) {
            return Err(PlacementError::TopicExists(topic.to_owned()));
        }
        if partitions == 0 {
            return Err(PlacementError::ZeroPartitions(topic.to_owned()));
        }
        if cluster.is_empty() {
            return Err(PlacementError::EmptyClusterName(topic.to_owned()));
        }
        let generation = self.deleted.get(topic).map_or(1, |g| g + 1);
        Ok(PlacementChange::Create {
            topic: topic.to_owned(),
            placement: TopicPlacement {
                generation,
                partitions,
                epochs: vec![Epoch {
                    epoch: 1,
                    cluster: cluster.to_owned(),
                    since_ms: now_ms,
                    start_offsets: vec![0; partitions as usize],
                    end_offsets: None,
                    state: EpochState::Active,
                    reason: EpochReason::Created,
                }],
            },
        })
    }

    /// Plans sealing the current epoch of `topic` at `switch.end_offsets`
    /// and opening the next epoch on `switch.cluster`.
    ///
    /// Compare-and-set: fails with [`PlacementError::EpochMoved`] unless the
    /// current epoch is `switch.expected_epoch`.
    pub fn seal_and_open(
        &self,
        topic: &str,
        switch: EpochSwitch,
        now_ms: i64,
    ) -> Result<PlacementChange> {
        let placement = self.get_or_err(topic)?;
        let current = placement
            .current()
            .ok_or_else(|| PlacementError::UnknownTopic(topic.to_owned()))?;
        if current.epoch != switch.expected_epoch {
            return Err(PlacementError::EpochMoved {
                topic: topic.to_owned(),
                expected: switch.expected_epoch,
                current: current.epoch,
            });
        }
        if switch.reason == EpochReason::Created {
            return Err(PlacementError::CreatedIsNotASwitch(topic.to_owned()));
        }
        if switch.cluster.is_empty() {
            return Err(PlacementError::EmptyClusterName(topic.to_owned()));
        }
        let n = placement.partitions;
        for (what, list) in [
            ("end_offsets", &switch.end_offsets),
            ("start_offsets", &switch.start_offsets),
        ] {
            if list.len() != n as usize {
                return Err(PlacementError::OffsetCount {
                    topic: topic.to_owned(),
                    what,
                    partitions: n,
                    got: list.len(),
                });
            }
        }
        for (p, (&start, &end)) in current
            .start_offsets
            .iter()
            .zip(&switch.end_offsets)
            .enumerate()
        {
            if end < start {
                return Err(PlacementError::EndBeforeStart {
                    topic: topic.to_owned(),
                    partition: p as u32,
                    start,
                    end,
                });
            }
        }
        let next_epoch =
            current
                .epoch
                .checked_add(1)
                .ok_or_else(|| PlacementError::InvalidChange {
                    topic: topic.to_owned(),
                    why: "epoch numbers exhausted".into(),
                })?;

        let mut next = placement.clone();
        if let Some(sealed) = next.epochs.last_mut() {
            sealed.state = EpochState::Sealed;
            sealed.end_offsets = Some(switch.end_offsets);
        }
        next.epochs.push(Epoch {
            epoch: next_epoch,
            cluster: switch.cluster,
            since_ms: now_ms,
            start_offsets: switch.start_offsets,
            end_offsets: None,
            state: EpochState::Active,
            reason: switch.reason,
        });
        Ok(PlacementChange::SealAndOpen {
            topic: topic.to_owned(),
            sealed_epoch: current.epoch,
            placement: next,
        })
    }

    /// Plans the deletion of `topic`.
    pub fn delete(&self, topic: &str) -> Result<PlacementChange> {
        let placement = self.get_or_err(topic)?;
        Ok(PlacementChange::Delete {
            topic: topic.to_owned(),
            generation: placement.generation,
        })
    }

    // ------------------------------------------------------------ applying

    /// Applies a change, idempotently; see the module docs.
    ///
    /// Errors only for a change that breaks the table's invariants, and then
    /// leaves the table as it was.
    pub fn apply(&mut self, change: &PlacementChange) -> Result<Applied> {
        match change {
            PlacementChange::Create { topic, placement } => {
                if placement.epochs.len() != 1 {
                    return Err(PlacementError::InvalidChange {
                        topic: topic.clone(),
                        why: format!("create with {} epochs", placement.epochs.len()),
                    });
                }
                self.upsert(topic, placement)
            }
            PlacementChange::SealAndOpen {
                topic,
                sealed_epoch,
                placement,
            } => {
                if placement.epochs.len() < 2
                    || placement.current().map(|e| e.epoch) != sealed_epoch.checked_add(1)
                {
                    return Err(PlacementError::InvalidChange {
                        topic: topic.clone(),
                        why: format!(
                            "seal of epoch {sealed_epoch} must open epoch {}",
                            u64::from(*sealed_epoch) + 1
                        ),
                    });
                }
                self.upsert(topic, placement)
            }
            PlacementChange::Delete { topic, generation } => Ok(self.remove(topic, *generation)),
        }
    }

    fn upsert(&mut self, topic: &str, placement: &TopicPlacement) -> Result<Applied> {
        if !sluice_config::is_valid_topic_name(topic) {
            return Err(PlacementError::InvalidTopicName(topic.to_owned()));
        }
        placement.check(topic)?;
        if self
            .deleted
            .get(topic)
            .is_some_and(|&g| g >= placement.generation)
        {
            return Ok(Applied::Superseded);
        }
        if let Some(mine) = self.topics.get(topic) {
            let (theirs_v, mine_v) = (placement.version(), mine.version());
            if theirs_v < mine_v {
                return Ok(Applied::Superseded);
            }
            if theirs_v == mine_v {
                return Ok(if placement == mine {
                    Applied::Duplicate
                } else {
                    Applied::Conflict
                });
            }
            if placement.generation == mine.generation && !placement.extends(mine) {
                // A newer epoch, but built on a history we do not have: a
                // branch that lost a race.
                return Ok(Applied::Conflict);
            }
        }
        self.deleted.remove(topic);
        self.topics.insert(topic.to_owned(), placement.clone());
        Ok(Applied::Changed)
    }

    fn remove(&mut self, topic: &str, generation: u64) -> Applied {
        if let Some(mine) = self.topics.get(topic) {
            if mine.generation > generation {
                return Applied::Superseded;
            }
            self.topics.remove(topic);
            self.deleted.insert(topic.to_owned(), generation);
            return Applied::Changed;
        }
        match self.deleted.get(topic) {
            Some(&g) if g >= generation => Applied::Duplicate,
            _ => {
                // A delete seen before its create (e.g. a compacted log):
                // remember it so the create is ignored when it comes.
                self.deleted.insert(topic.to_owned(), generation);
                Applied::Changed
            }
        }
    }

    /// The table as changes that rebuild it when applied to an empty table:
    /// one per topic (its latest state) and one `Delete` per remembered
    /// deletion. Stores write this as a snapshot.
    pub fn to_changes(&self) -> Vec<PlacementChange> {
        let mut out = Vec::with_capacity(self.topics.len() + self.deleted.len());
        for (topic, generation) in &self.deleted {
            out.push(PlacementChange::Delete {
                topic: topic.clone(),
                generation: *generation,
            });
        }
        for (topic, placement) in &self.topics {
            let current = placement.current().map_or(1, |e| e.epoch);
            out.push(if current <= 1 {
                PlacementChange::Create {
                    topic: topic.clone(),
                    placement: placement.clone(),
                }
            } else {
                PlacementChange::SealAndOpen {
                    topic: topic.clone(),
                    sealed_epoch: current - 1,
                    placement: placement.clone(),
                }
            });
        }
        out
    }

    // ------------------------------------------------------------ lookups

    /// A topic's placement.
    pub fn get(&self, topic: &str) -> Option<&TopicPlacement> {
        self.topics.get(topic)
    }

    fn get_or_err(&self, topic: &str) -> Result<&TopicPlacement> {
        self.topics
            .get(topic)
            .ok_or_else(|| PlacementError::UnknownTopic(topic.to_owned()))
    }

    /// Whether the topic is placed.
    pub fn contains(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// A topic's current (write) epoch.
    pub fn current(&self, topic: &str) -> Option<&Epoch> {
        self.topics.get(topic)?.current()
    }

    /// A topic's current cluster: where writes go.
    pub fn home(&self, topic: &str) -> Option<&str> {
        self.current(topic).map(|e| e.cluster.as_str())
    }

    /// Epoch `n` of a topic.
    pub fn epoch(&self, topic: &str, n: u32) -> Option<&Epoch> {
        self.topics.get(topic)?.epoch(n)
    }

    /// The epoch after epoch `n` of a topic.
    pub fn next_epoch_after(&self, topic: &str, n: u32) -> Option<&Epoch> {
        self.topics.get(topic)?.next_epoch_after(n)
    }

    /// Topics whose current epoch is on `cluster`, by name.
    pub fn topics_on<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.homes()
            .filter(move |(_, home)| *home == cluster)
            .map(|(topic, _)| topic)
    }

    /// Topics with an epoch on `cluster`, current or sealed: the topics
    /// whose readers may still need that cluster.
    pub fn topics_reading_from<'a>(
        &'a self,
        cluster: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.topics
            .iter()
            .filter(move |(_, p)| p.epochs.iter().any(|e| e.cluster == cluster))
            .map(|(t, _)| t.as_str())
    }

    /// `(topic, current cluster)` for every topic, by name: the input of
    /// [`crate::ring::RebalancePlan::compute`].
    pub fn homes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.topics
            .iter()
            .filter_map(|(topic, p)| p.current().map(|e| (topic.as_str(), e.cluster.as_str())))
    }

    /// Every topic and its placement, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TopicPlacement)> {
        self.topics.iter().map(|(t, p)| (t.as_str(), p))
    }

    /// Number of placed topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether no topic is placed.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    // ------------------------------------------------------------ reading

    /// Where a reader positioned at `offset` of `partition` in `epoch` reads
    /// next.
    ///
    /// While `epoch` is active, or sealed with `offset` before its end, the
    /// answer is that epoch on its cluster. Once a sealed epoch is read to
    /// its end (`offset >= end_offsets[partition]`), the reader moves to the
    /// next epoch at its `start_offsets[partition]`, across as many epochs as
    /// needed. An offset below an epoch's start moves up to the start (older
    /// records on that cluster belong to an earlier epoch).
    ///
    /// Per-partition order holds because epoch N is read to its end before
    /// any record of epoch N+1, and every record acknowledged in epoch N is
    /// below the end offsets it was sealed with.
    pub fn resolve_read(
        &self,
        topic: &str,
        epoch: u32,
        partition: u32,
        offset: u64,
    ) -> Result<ReadFrom<'_>> {
        let placement = self.get_or_err(topic)?;
        if partition >= placement.partitions {
            return Err(PlacementError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: placement.partitions,
            });
        }
        let p = partition as usize;
        let mut e = placement
            .epoch(epoch)
            .ok_or_else(|| PlacementError::UnknownEpoch {
                topic: topic.to_owned(),
                epoch,
            })?;
        let mut offset = offset;
        loop {
            // Invariants checked on apply: lists have one entry per partition.
            let start = e.start_offsets.get(p).copied().unwrap_or(0);
            offset = offset.max(start);
            let end = match (&e.end_offsets, e.state) {
                (Some(end), EpochState::Sealed) => end.get(p).copied(),
                _ => None,
            };
            match (end, placement.next_epoch_after(e.epoch)) {
                (Some(end), Some(next)) if offset >= end => {
                    e = next;
                    offset = 0;
                }
                _ => {
                    return Ok(ReadFrom {
                        cluster: &e.cluster,
                        epoch: e.epoch,
                        offset,
                        end,
                    })
                }
            }
        }
    }
}
