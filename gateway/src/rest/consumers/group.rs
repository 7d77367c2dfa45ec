//! [`Coordinator`]: the consumer groups this gateway owns, their instances,
//! assignments, positions and commits.
//!
//! Each group is one `tokio` mutex over its [`Group`]: membership changes,
//! rebalances, seeks and commits take it in turn. A records poll takes it
//! only to read the positions and to apply what it read, never while it
//! waits for records, so a long-poll holds nothing up; a poll whose
//! partition was moved or sought meanwhile drops what it read there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use regex::Regex;
use sluice_broker::{BrokerError, Record};
use sluice_config::ConsumersConfig;
use sluice_federation::cursor::Cursor;
use sluice_federation::placement::TopicPlacement;
use sluice_federation::{Federation, FederationError, ReadStart};
use tokio::time::Instant;

use super::assign::{self, TopicPartition};
use super::offsets::{self, Position};
use crate::error::ApiError;
use crate::rest::media::EmbeddedFormat;
use crate::telemetry::metrics::{CONSUMER_LAG_RECORDS, LABEL_CLUSTER, LABEL_GROUP};

/// Confluent's code for an unknown (or expired) consumer instance.
pub const CONSUMER_NOT_FOUND: u32 = 40403;
/// Confluent's code for creating an instance whose name is taken.
pub const CONSUMER_EXISTS: u32 = 40902;
/// Confluent's code for a request the instance's state forbids
/// (subscribe while manually assigned, seek on an unassigned partition).
pub const ILLEGAL_STATE: u32 = 40903;
/// Confluent's code for an invalid consumer configuration.
pub const INVALID_CONSUMER_CONFIG: u32 = 42204;
/// Confluent's code for an `Accept` that disagrees with the instance's format.
pub const FORMAT_MISMATCH: u32 = 40601;

/// Sleep between rounds of a long-poll that found nothing.
pub const DEFAULT_POLL_IDLE_MS: u64 = 20;
/// How often pattern subscriptions and subscribed topics' existence are
/// looked at again (a new matching topic joins the assignment).
pub const DEFAULT_TOPIC_REFRESH_MS: u64 = 1_000;
/// Longest interval of the expiry sweep.
pub const DEFAULT_SWEEP_MS: u64 = 1_000;

/// `auto.offset.reset`: where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The oldest record still held, in the topic's first epoch.
    Earliest,
    /// The end of the current epoch.
    Latest,
}

/// What the create request set.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Embedded format of keys and values in records answers.
    pub format: EmbeddedFormat,
    /// `auto.offset.reset`.
    pub reset: Reset,
    /// `auto.commit.enable`: commit consumed positions at each poll, on
    /// unsubscribe, on delete and when a partition is taken away.
    pub auto_commit: bool,
    /// `fetch.min.bytes`: a poll waits (up to its timeout) for this much.
    pub fetch_min_bytes: usize,
    /// `consumer.request.timeout.ms`: the poll timeout when `timeout` is absent.
    pub request_timeout_ms: Option<u64>,
}

/// What an instance reads.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// Nothing yet.
    None,
    /// These topics.
    Topics(BTreeSet<String>),
    /// Every topic whose whole name matches.
    Pattern(Regex),
}

#[derive(Debug, Default, Clone)]
struct Part {
    /// Next record to hand out; `None` until resolved from the committed
    /// offset or `auto.offset.reset`.
    position: Option<Position>,
    /// What this instance last committed (so auto-commit skips no-ops).
    committed: Option<Position>,
}

struct Instance {
    settings: InstanceSettings,
    last_seen: Instant,
    subscription: Subscription,
    /// Manually assigned partitions (`POST .../assignments`); such an
    /// instance takes no part in the group's assignment.
    manual: bool,
    parts: BTreeMap<TopicPartition, Part>,
    /// Where the next poll starts, for fairness across partitions.
    rotate: usize,
}

/// One consumer group: its instances and the generation of its assignment.
pub struct Group {
    name: String,
    generation: u64,
    instances: BTreeMap<String, Instance>,
    refreshed: Option<Instant>,
}

/// A commit to store: topic, partition, position.
type Commit = (String, u32, Position);

/// Records handed out by a poll, with their topics.
pub struct Polled {
    /// The instance's format.
    pub format: EmbeddedFormat,
    /// `(topic, record)` in the order read.
    pub records: Vec<(String, Record)>,
}

/// A committed offset as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to read, on the cluster of the epoch it is in.
    pub offset: u64,
}

fn not_found(group: &str, instance: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        CONSUMER_NOT_FOUND,
        format!(
            "Consumer instance {instance:?} not found in group {group:?} (it may have expired)"
        ),
    )
}

fn illegal(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ILLEGAL_STATE, message)
}

fn record_bytes(record: &Record) -> usize {
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

impl Group {
    fn instance(&mut self, id: &str) -> Result<&mut Instance, ApiError> {
        let name = self.name.clone();
        let instance = self
            .instances
            .get_mut(id)
            .ok_or_else(|| not_found(&name, id))?;
        instance.last_seen = Instant::now();
        Ok(instance)
    }

    /// Removes instances idle past `timeout` (no commit: a client that
    /// vanished may not have processed what it got). True if any went.
    fn expire(&mut self, timeout: Duration, count: &AtomicUsize) -> bool {
        let now = Instant::now();
        let before = self.instances.len();
        self.instances
            .retain(|_, i| now.duration_since(i.last_seen) < timeout);
        let gone = before - self.instances.len();
        count.fetch_sub(gone, Ordering::Relaxed);
        if gone > 0 {
            tracing::info!(group = %self.name, expired = gone, "consumer instances expired");
        }
        gone > 0
    }

    fn topics_of(subscription: &Subscription, federation: &Federation) -> BTreeSet<String> {
        match subscription {
            Subscription::None => BTreeSet::new(),
            Subscription::Topics(topics) => topics.clone(),
            Subscription::Pattern(regex) => federation
                .homes()
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| regex.is_match(t))
                .collect(),
        }
    }

    /// Recomputes the assignment of the subscribed instances; partitions
    /// taken from an auto-committing instance have their positions
    /// returned for committing, before anyone else reads them.
    fn rebalance(&mut self, federation: &Federation) -> Vec<Commit> {
        let mut subscriptions = BTreeMap::new();
        let mut partitions = BTreeMap::new();
        for (id, instance) in &self.instances {
            if instance.manual {
                continue;
            }
            let topics = Self::topics_of(&instance.subscription, federation);
            for topic in &topics {
                if let Some(p) = federation.placement(topic) {
                    partitions.insert(topic.clone(), p.partitions);
                }
            }
            subscriptions.insert(id.clone(), topics);
        }
        let assignment = assign::range(&subscriptions, &partitions);
        let mut commits = Vec::new();
        let mut changed = false;
        for (id, wanted) in assignment {
            let Some(instance) = self.instances.get_mut(&id) else {
                continue;
            };
            let current: BTreeSet<TopicPartition> = instance.parts.keys().cloned().collect();
            if current == wanted {
                continue;
            }
            changed = true;
            for tp in current.difference(&wanted) {
                if let Some(part) = instance.parts.remove(tp) {
                    if let (true, Some(at)) = (instance.settings.auto_commit, part.position) {
                        if part.committed != Some(at) {
                            commits.push((tp.0.clone(), tp.1, at));
                        }
                    }
                }
            }
            for tp in wanted.difference(&current) {
                instance.parts.insert(tp.clone(), Part::default());
            }
        }
        if changed {
            self.generation += 1;
            tracing::info!(group = %self.name, generation = self.generation, "consumer group rebalanced");
        }
        commits
    }

    /// Positions consumed since the last commit, for an auto-commit or a
    /// commit of everything consumed.
    fn uncommitted(&self, id: &str) -> Vec<Commit> {
        self.instances.get(id).map_or_else(Vec::new, |i| {
            i.parts
                .iter()
                .filter_map(|((t, p), part)| match part.position {
                    Some(at) if part.committed != Some(at) => Some((t.clone(), *p, at)),
                    _ => None,
                })
                .collect()
        })
    }

    fn note_committed(&mut self, id: &str, commits: &[Commit]) {
        if let Some(instance) = self.instances.get_mut(id) {
            for (t, p, at) in commits {
                if let Some(part) = instance.parts.get_mut(&(t.clone(), *p)) {
                    part.committed = Some(*at);
                }
            }
        }
    }
}

/// The consumer groups owned by this gateway.
pub struct Coordinator {
    federation: Arc<Federation>,
    config: ConsumersConfig,
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Group>>>>,
    instances: AtomicUsize,
    sweeping: std::sync::atomic::AtomicBool,
    /// The `(cluster, group)` pairs whose lag the last measurement set.
    lag_published: Mutex<Vec<(String, String)>>,
}

impl Coordinator {
    /// A coordinator with no groups. The expiry sweep starts with the
    /// first instance.
    pub fn new(federation: Arc<Federation>, config: ConsumersConfig) -> Arc<Self> {
        Arc::new(Self {
            federation,
            config,
            groups: Mutex::new(HashMap::new()),
            instances: AtomicUsize::new(0),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            lag_published: Mutex::new(Vec::new()),
        })
    }

    fn start_sweep(self: &Arc<Self>) {
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            let period = Duration::from_millis(
                (self.config.instance_timeout_ms / 4).clamp(1, DEFAULT_SWEEP_MS),
            );
            tokio::spawn(sweep(Arc::downgrade(self), period));
            let lag_period = Duration::from_millis(self.config.lag_interval_ms.max(1));
            tokio::spawn(measure_lag(Arc::downgrade(self), lag_period));
        }
    }

    /// Sets `sluice_consumer_lag_records` of every group with members: per
    /// cluster, the records between each partition's committed position
    /// and its end. A group and cluster measured before and not now (no
    /// members left, no commits there) goes to 0; one whose partitions'
    /// ends could not be read keeps its last value.
    async fn measure_lag_once(&self) {
        let groups = self.all_groups();
        let mut lag: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut unknown: BTreeSet<(String, String)> = BTreeSet::new();
        for entry in groups {
            // Taken under the group's lock, measured without it.
            let (name, committed) = {
                let g = entry.lock().await;
                let committed: BTreeMap<TopicPartition, Position> = g
                    .instances
                    .values()
                    .flat_map(|i| i.parts.iter())
                    .filter_map(|(tp, part)| part.committed.map(|at| (tp.clone(), at)))
                    .collect();
                (g.name.clone(), committed)
            };
            // In topic order: one placement per topic, not per partition.
            let mut placed: Option<(String, TopicPlacement)> = None;
            for ((topic, partition), at) in committed {
                if placed.as_ref().is_none_or(|(t, _)| *t != topic) {
                    placed = self
                        .federation
                        .placement(&topic)
                        .map(|p| (topic.clone(), p));
                }
                let Some((_, placement)) = placed.as_ref().filter(|(t, _)| *t == topic) else {
                    continue;
                };
                // A partition whose home does not answer leaves the lag of
                // every cluster it spans unknown this round: those keep
                // their last value rather than show a partial sum.
                let Ok(ends) = self.federation.offsets(&topic, partition).await else {
                    for e in placement.epochs.iter().filter(|e| e.epoch >= at.epoch) {
                        unknown.insert((e.cluster.clone(), name.clone()));
                    }
                    continue;
                };
                for (cluster, n) in offsets::lag(placement, partition, at, ends.latest) {
                    *lag.entry((cluster, name.clone())).or_default() += n;
                }
            }
        }
        let gauge = |(cluster, group): &(String, String)| metrics::gauge!(CONSUMER_LAG_RECORDS, LABEL_CLUSTER => cluster.clone(), LABEL_GROUP => group.clone());
        let mut published = self.lag_published.lock().unwrap_or_else(|e| e.into_inner());
        for key in published.iter() {
            if !lag.contains_key(key) && !unknown.contains(key) {
                gauge(key).set(0.0);
            }
        }
        for (key, n) in &lag {
            if !unknown.contains(key) {
                gauge(key).set(*n as f64);
            }
        }
        let kept: Vec<_> = published
            .iter()
            .filter(|key| unknown.contains(*key))
            .cloned()
            .collect();
        *published = lag.into_keys().chain(kept).collect();
        published.sort_unstable();
        published.dedup();
    }

    /// The consumers configuration.
    pub fn config(&self) -> &ConsumersConfig {
        &self.config
    }

    fn group(&self, name: &str) -> Arc<tokio::sync::Mutex<Group>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Group {
                    name: name.to_owned(),
                    generation: 0,
                    instances: BTreeMap::new(),
                    refreshed: None,
                }))
            })
            .clone()
    }

    fn existing_group(&self, name: &str) -> Option<Arc<tokio::sync::Mutex<Group>>> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.instance_timeout_ms)
    }

    /// Locks a group that exists, expiring idle instances first.
    async fn locked(
        &self,
        group: &str,
        instance: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Group>, ApiError> {
        let entry = self
            .existing_group(group)
            .ok_or_else(|| not_found(group, instance))?;
        let mut g = entry.lock_owned().await;
        if g.expire(self.timeout(), &self.instances) {
            let commits = g.rebalance(&self.federation);
            self.store(&g.name.clone(), &commits).await?;
        }
        Ok(g)
    }

    /// Creates an instance; `None` picks a name. Returns the name.
    pub async fn create(
        self: &Arc<Self>,
        group: &str,
        name: Option<String>,
        settings: InstanceSettings,
    ) -> Result<String, ApiError> {
        self.start_sweep();
        let name = name.unwrap_or_else(random_name);
        let entry = self.group(group);
        let mut g = entry.lock().await;
        g.expire(self.timeout(), &self.instances);
        if g.instances.contains_key(&name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                CONSUMER_EXISTS,
                format!("Consumer with instance name {name:?} already exists in group {group:?}"),
            ));
        }
        if self.instances.load(Ordering::Relaxed) >= self.config.max_instances {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                429,
                format!(
                    "this gateway holds its limit of {} consumer instances (consumers.max_instances); delete idle ones",
                    self.config.max_instances
                ),
            ));
        }
        self.instances.fetch_add(1, Ordering::Relaxed);
        g.instances.insert(
            name.clone(),
            Instance {
                settings,
                last_seen: Instant::now(),
                subscription: Subscription::None,
                manual: false,
                parts: BTreeMap::new(),
                rotate: 0,
            },
        );
        tracing::info!(group, instance = %name, "consumer instance created");
        Ok(name)
    }

    /// Deletes an instance (committing its positions under auto-commit) and
    /// rebalances the group.
    pub async fn delete(&self, group: &str, id: &str) -> Result<(), ApiError> {
        let mut g = self.locked(group, id).await?;
        let auto = g.instance(id)?.settings.auto_commit;
        if auto {
            let commits = g.uncommitted(id);
            self.store(group, &commits).await?;
        }
        g.instances.remove(id);
        self.instances.fetch_sub(1, Ordering::Relaxed);
        let commits = g.rebalance(&self.federation);
        self.store(group, &commits).await?;
        tracing::info!(group, instance = id, "consumer instance deleted");
        Ok(())
    }

    /// Subscribes an instance (replacing its subscription) and rebalances.
    pub async fn subscribe(
        &self,
        group: &str,
        id: &str,
        subscription: Subscription,
    ) -> Result<(), ApiError> {
        let mut g = self.locked(group, id).await?;
        let instance = g.instance(id)?;
        if instance.manual {
            return Err(illegal(
                "the instance has manually assigned partitions; subscription and manual assignment are exclusive",
            ));
        }
        instance.subscription = subscription;
        let commits = g.rebalance(&self.federation);
        g.refreshed = Some(Instant::now());
        self.store(group, &commits).await
    }

    /// The topics an instance is subscribed to (a pattern's current matches).
    pub async fn subscription(&self, group: &str, id: &str) -> Result<Vec<String>, ApiError> {
        let mut g = self.locked(group, id).await?;
        let instance = g.instance(id)?;
        Ok(Group::topics_of(&instance.subscription, &self.federation)
            .into_iter()
            .collect())
    }

    /// Drops a subscription (committing under auto-commit) and rebalances.
    pub async fn unsubscribe(&self, group: &str, id: &str) -> Result<(), ApiError> {
        let mut g = self.locked(group, id).await?;
        let auto = g.instance(id)?.settings.auto_commit;
        if auto {
            let commits = g.uncommitted(id);
            self.store(group, &commits).await?;
        }
        let instance = g.instance(id)?;
        instance.subscription = Subscription::None;
        instance.manual = false;
        instance.parts.clear();
        let commits = g.rebalance(&self.federation);
        self.store(group, &commits).await
    }

    /// The partitions an instance reads now.
    pub async fn assignments(
        &self,
        group: &str,
        id: &str,
    ) -> Result<Vec<TopicPartition>, ApiError> {
        let mut g = self.locked(group, id).await?;
        self.refresh(&mut g).await?;
        Ok(g.instance(id)?.parts.keys().cloned().collect())
    }

    /// Assigns partitions by hand (no group assignment for this instance).
    pub async fn assign(
        &self,
        group: &str,
        id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ApiError> {
        for (topic, partition) in &partitions {
            self.check_partition(topic, *partition)?;
        }
        let mut g = self.locked(group, id).await?;
        let instance = g.instance(id)?;
        if !matches!(instance.subscription, Subscription::None) {
            return Err(illegal(
                "the instance is subscribed; unsubscribe before assigning partitions by hand",
            ));
        }
        let wanted: BTreeSet<TopicPartition> = partitions.into_iter().collect();
        instance.parts.retain(|tp, _| wanted.contains(tp));
        for tp in wanted {
            instance.parts.entry(tp).or_default();
        }
        instance.manual = !instance.parts.is_empty();
        Ok(())
    }

    fn check_partition(&self, topic: &str, partition: u32) -> Result<TopicPlacement, ApiError> {
        if !sluice_config::is_valid_topic_name(topic) {
            return Err(BrokerError::InvalidTopicName(topic.to_owned()).into());
        }
        let placement = self
            .federation
            .placement(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        if partition >= placement.partitions {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            }
            .into());
        }
        Ok(placement)
    }

    /// Looks at pattern matches and subscribed topics' existence again, at
    /// most once per [`DEFAULT_TOPIC_REFRESH_MS`].
    async fn refresh(&self, g: &mut Group) -> Result<(), ApiError> {
        let due = g
            .refreshed
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(DEFAULT_TOPIC_REFRESH_MS));
        if due {
            g.refreshed = Some(Instant::now());
            let commits = g.rebalance(&self.federation);
            self.store(&g.name.clone(), &commits).await?;
        }
        Ok(())
    }

    /// Long-polls for records: returns as soon as `fetch.min.bytes` of
    /// records are in (one record by default), or empty at `timeout`.
    /// `accepted` is the format the client asked for, if it named one.
    pub async fn poll(
        &self,
        group: &str,
        id: &str,
        timeout: Option<Duration>,
        max_bytes: usize,
        accepted: Option<EmbeddedFormat>,
    ) -> Result<Polled, ApiError> {
        let max_bytes = max_bytes.max(1);
        let started = Instant::now();
        let mut out: Vec<(String, Record)> = Vec::new();
        let mut out_bytes = 0usize;
        let mut deadline = None;
        let mut format;
        loop {
            // 1. Under the lock: commit what the last poll handed out
            //    (auto-commit), resolve new partitions, read the positions.
            let (reads, min_bytes) = {
                let mut g = self.locked(group, id).await?;
                self.refresh(&mut g).await?;
                let settings = g.instance(id)?.settings.clone();
                format = settings.format;
                // Checked before anything is read, so a mismatch consumes nothing.
                if let Some(asked) = accepted.filter(|a| *a != format) {
                    return Err(ApiError::not_acceptable(
                        FORMAT_MISMATCH,
                        format!(
                            "the consumer instance was created with format {}; Accept asks for {}",
                            super::format_name(format),
                            super::format_name(asked)
                        ),
                    ));
                }
                if deadline.is_none() {
                    let ms = timeout.map_or_else(
                        || {
                            settings
                                .request_timeout_ms
                                .unwrap_or(self.config.request_timeout_ms)
                        },
                        |t| t.as_millis() as u64,
                    );
                    deadline = Some(
                        started + Duration::from_millis(ms.min(self.config.max_poll_timeout_ms)),
                    );
                    if settings.auto_commit {
                        let commits = g.uncommitted(id);
                        self.store(group, &commits).await?;
                        g.note_committed(id, &commits);
                    }
                }
                self.resolve(&mut g, id).await?;
                let instance = g.instance(id)?;
                let mut reads: Vec<(TopicPartition, Position)> = instance
                    .parts
                    .iter()
                    .filter_map(|(tp, part)| part.position.map(|at| (tp.clone(), at)))
                    .collect();
                if !reads.is_empty() {
                    let turn = instance.rotate % reads.len();
                    reads.rotate_left(turn);
                    instance.rotate = instance.rotate.wrapping_add(1);
                }
                (reads, settings.fetch_min_bytes)
            };

            // 2. Unlocked: read each partition in turn within the budget.
            let mut moved: Vec<(TopicPartition, Position, Position, Vec<Record>)> = Vec::new();
            let mut failure: Option<ApiError> = None;
            for ((topic, partition), at) in reads {
                if out_bytes >= max_bytes {
                    break;
                }
                let cursor = Cursor::at_epoch(at.epoch, [(partition, at.offset)]);
                let budget = max_bytes - out_bytes;
                match self
                    .federation
                    .read(&topic, partition, ReadStart::Cursor(cursor), budget)
                    .await
                {
                    Ok(batch) => {
                        let mut records = Vec::new();
                        let mut next = at;
                        for record in batch.records {
                            let size = record_bytes(&record);
                            let first = out.is_empty() && records.is_empty();
                            if !first && out_bytes + size > max_bytes {
                                break;
                            }
                            out_bytes += size;
                            next = Position {
                                epoch: batch.epoch,
                                offset: record.offset + 1,
                            };
                            records.push(record);
                        }
                        if records.is_empty() && batch.epoch != at.epoch {
                            // Crossed into a later epoch with nothing to hand out yet.
                            next = Position {
                                epoch: batch.epoch,
                                offset: batch.next_offset,
                            };
                        }
                        if next != at {
                            moved.push(((topic, partition), at, next, records));
                        }
                    }
                    Err(FederationError::Broker(BrokerError::OffsetOutOfRange {
                        log_start_offset,
                        ..
                    })) => {
                        // Retention dropped the position: continue at the log start.
                        let next = Position {
                            epoch: at.epoch,
                            offset: log_start_offset,
                        };
                        moved.push(((topic, partition), at, next, Vec::new()));
                    }
                    Err(e) => {
                        if failure.is_none() {
                            failure = Some(e.into());
                        }
                    }
                }
            }

            // 3. Under the lock: keep what was read where the position has
            //    not changed meanwhile (rebalance, seek).
            if !moved.is_empty() {
                let mut g = self.locked(group, id).await?;
                let instance = g.instance(id)?;
                for (tp, from, to, records) in moved {
                    let Some(part) = instance.parts.get_mut(&tp) else {
                        out_bytes -= records.iter().map(record_bytes).sum::<usize>();
                        continue;
                    };
                    if part.position != Some(from) {
                        out_bytes -= records.iter().map(record_bytes).sum::<usize>();
                        continue;
                    }
                    part.position = Some(to);
                    out.extend(records.into_iter().map(|r| (tp.0.clone(), r)));
                }
            }
            // Records may weigh nothing (tombstones without key or headers): one
            // record is enough unless `fetch.min.bytes` asks for more.
            let enough = !out.is_empty() && (min_bytes <= 1 || out_bytes >= min_bytes);
            let now = Instant::now();
            let deadline = deadline.unwrap_or(now);
            if enough || out_bytes >= max_bytes || now >= deadline {
                if out.is_empty() {
                    if let Some(error) = failure {
                        return Err(error);
                    }
                }
                return Ok(Polled {
                    format,
                    records: out,
                });
            }
            tokio::time::sleep(Duration::from_millis(DEFAULT_POLL_IDLE_MS).min(deadline - now))
                .await;
        }
    }

    /// Gives every unresolved partition of the instance its start: the
    /// group's committed position, else `auto.offset.reset`.
    async fn resolve(&self, g: &mut Group, id: &str) -> Result<(), ApiError> {
        let instance = g.instance(id)?;
        let reset = instance.settings.reset;
        let mut topics: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for ((t, p), part) in &instance.parts {
            if part.position.is_none() {
                topics.entry(t.clone()).or_default().push(*p);
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        let group = g.name.clone();
        let mut resolved = Vec::new();
        for (topic, partitions) in topics {
            let Some(placement) = self.federation.placement(&topic) else {
                continue;
            };
            let committed = self.load(&group, &topic, &placement).await?;
            for p in partitions {
                let at = match committed.get(&p) {
                    Some(at) => *at,
                    None => self.reset_position(&topic, p, &placement, reset).await?,
                };
                resolved.push(((topic.clone(), p), at));
            }
        }
        let instance = g.instance(id)?;
        for (tp, at) in resolved {
            if let Some(part) = instance.parts.get_mut(&tp) {
                if part.position.is_none() {
                    part.position = Some(at);
                    part.committed = Some(at);
                }
            }
        }
        Ok(())
    }

    async fn reset_position(
        &self,
        topic: &str,
        partition: u32,
        placement: &TopicPlacement,
        reset: Reset,
    ) -> Result<Position, ApiError> {
        match reset {
            Reset::Earliest => {
                let first = placement
                    .epochs
                    .first()
                    .ok_or_else(|| ApiError::internal(&format!("topic {topic:?} has no epoch")))?;
                Ok(Position {
                    epoch: first.epoch,
                    offset: first
                        .start_offsets
                        .get(partition as usize)
                        .copied()
                        .unwrap_or(0),
                })
            }
            Reset::Latest => {
                let current = placement
                    .current()
                    .ok_or_else(|| ApiError::internal(&format!("topic {topic:?} has no epoch")))?;
                let latest = self.federation.offsets(topic, partition).await?.latest;
                Ok(Position {
                    epoch: current.epoch,
                    offset: latest,
                })
            }
        }
    }

    /// The group's committed positions in a topic, by partition.
    async fn load(
        &self,
        group: &str,
        topic: &str,
        placement: &TopicPlacement,
    ) -> Result<BTreeMap<u32, Position>, ApiError> {
        let mut by_cluster: HashMap<String, HashMap<u32, u64>> = HashMap::new();
        for epoch in &placement.epochs {
            if by_cluster.contains_key(&epoch.cluster) {
                continue;
            }
            let member = self.member(topic, &epoch.cluster)?;
            let committed = member
                .cluster
                .committed_offsets(group, topic)
                .await
                .map_err(|e| self.cluster_error(&member, topic, e))?;
            by_cluster.insert(epoch.cluster.clone(), committed.into_iter().collect());
        }
        let mut out = BTreeMap::new();
        for p in 0..placement.partitions {
            let at = offsets::committed_position(placement, p, |c| {
                by_cluster.get(c).and_then(|m| m.get(&p)).copied()
            });
            if let Some(at) = at {
                out.insert(p, at);
            }
        }
        Ok(out)
    }

    fn member(
        &self,
        topic: &str,
        cluster: &str,
    ) -> Result<Arc<sluice_federation::members::Member>, ApiError> {
        let member = self
            .federation
            .member(cluster)
            .ok_or_else(|| ApiError::internal(&format!("no cluster {cluster:?}")))?
            .clone();
        if !member.is_up() {
            return Err(FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster: cluster.to_owned(),
                reason: member.down_reason().unwrap_or_default(),
            }
            .into());
        }
        Ok(member)
    }

    fn cluster_error(
        &self,
        member: &sluice_federation::members::Member,
        topic: &str,
        e: BrokerError,
    ) -> ApiError {
        match e {
            BrokerError::Unavailable { reason, .. } => FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster: member.name.clone(),
                reason,
            }
            .into(),
            e => e.into(),
        }
    }

    /// Stores commits on the clusters of their epochs.
    async fn store(&self, group: &str, commits: &[Commit]) -> Result<(), ApiError> {
        let mut by_topic: BTreeMap<&str, Vec<(u32, Position)>> = BTreeMap::new();
        for (t, p, at) in commits {
            by_topic.entry(t.as_str()).or_default().push((*p, *at));
        }
        for (topic, positions) in by_topic {
            let Some(placement) = self.federation.placement(topic) else {
                continue;
            };
            let mut by_cluster: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
            for (p, at) in positions {
                if let Some((cluster, offset)) = offsets::stored_at(&placement, p, at) {
                    by_cluster.entry(cluster).or_default().push((p, offset));
                }
            }
            for (cluster, list) in by_cluster {
                let member = self.member(topic, &cluster)?;
                member
                    .cluster
                    .commit_offsets(group, topic, &list)
                    .await
                    .map_err(|e| self.cluster_error(&member, topic, e))?;
            }
        }
        Ok(())
    }

    /// Commits explicit offsets (each the offset of the last record
    /// consumed, as Confluent's v2 API has it), or with `None` every
    /// position the instance consumed to.
    pub async fn commit(
        &self,
        group: &str,
        id: &str,
        explicit: Option<Vec<(String, u32, u64)>>,
    ) -> Result<(), ApiError> {
        let mut g = self.locked(group, id).await?;
        let commits = match explicit {
            None => {
                g.instance(id)?;
                g.uncommitted(id)
            }
            Some(list) => {
                let instance = g.instance(id)?;
                let mut commits = Vec::with_capacity(list.len());
                for (topic, partition, offset) in list {
                    let placement = self.check_partition(&topic, partition)?;
                    let hint = instance
                        .parts
                        .get(&(topic.clone(), partition))
                        .and_then(|p| p.position)
                        .map(|at| at.epoch);
                    let next = offset.checked_add(1).ok_or_else(|| {
                        ApiError::unprocessable(format!("offset {offset} is out of range"))
                    })?;
                    let at = offsets::position_of(&placement, partition, next, hint).ok_or_else(
                        || ApiError::internal(&format!("topic {topic:?} has no epoch")),
                    )?;
                    commits.push((topic, partition, at));
                }
                commits
            }
        };
        self.store(group, &commits).await?;
        g.note_committed(id, &commits);
        Ok(())
    }

    /// The group's committed offsets for `partitions` (the instance's
    /// assignment when `None`); partitions never committed are left out.
    pub async fn committed(
        &self,
        group: &str,
        id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<CommittedOffset>, ApiError> {
        let mut g = self.locked(group, id).await?;
        let wanted = match partitions {
            Some(list) => list,
            None => g.instance(id)?.parts.keys().cloned().collect(),
        };
        g.instance(id)?;
        drop(g);
        let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (t, p) in wanted {
            self.check_partition(&t, p)?;
            by_topic.entry(t).or_default().push(p);
        }
        let mut out = Vec::new();
        for (topic, partitions) in by_topic {
            let Some(placement) = self.federation.placement(&topic) else {
                continue;
            };
            let committed = self.load(group, &topic, &placement).await?;
            for p in partitions {
                if let Some(at) = committed.get(&p) {
                    let at = offsets::settle(&placement, p, *at);
                    out.push(CommittedOffset {
                        topic: topic.clone(),
                        partition: p,
                        offset: at.offset,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Moves the instance's positions: to plain offsets in each topic's
    /// current epoch, or to the beginning or end.
    pub async fn seek(&self, group: &str, id: &str, to: Seek) -> Result<(), ApiError> {
        let mut targets = Vec::new();
        match to {
            Seek::Offsets(list) => {
                for (topic, partition, offset) in list {
                    let placement = self.check_partition(&topic, partition)?;
                    let current = placement.current().map_or(1, |e| e.epoch);
                    targets.push((
                        (topic, partition),
                        Position {
                            epoch: current,
                            offset,
                        },
                    ));
                }
            }
            Seek::Beginning(list) | Seek::End(list) if list.is_empty() => {}
            Seek::Beginning(list) => {
                for (topic, partition) in list {
                    let placement = self.check_partition(&topic, partition)?;
                    let at = self
                        .reset_position(&topic, partition, &placement, Reset::Earliest)
                        .await?;
                    targets.push(((topic, partition), at));
                }
            }
            Seek::End(list) => {
                for (topic, partition) in list {
                    let placement = self.check_partition(&topic, partition)?;
                    let at = self
                        .reset_position(&topic, partition, &placement, Reset::Latest)
                        .await?;
                    targets.push(((topic, partition), at));
                }
            }
        }
        let mut g = self.locked(group, id).await?;
        let instance = g.instance(id)?;
        for ((topic, partition), _) in &targets {
            if !instance.parts.contains_key(&(topic.clone(), *partition)) {
                return Err(illegal(format!(
                    "partition {partition} of topic {topic:?} is not assigned to this instance"
                )));
            }
        }
        for (tp, at) in targets {
            if let Some(part) = instance.parts.get_mut(&tp) {
                part.position = Some(at);
            }
        }
        Ok(())
    }

    /// The group's generation and the instance's partitions (for WebSocket
    /// members, which announce assignment changes).
    pub async fn generation(&self, group: &str, id: &str) -> Result<u64, ApiError> {
        let mut g = self.locked(group, id).await?;
        g.instance(id)?;
        Ok(g.generation)
    }

    /// Every group held here, taken out of the map's lock.
    fn all_groups(&self) -> Vec<Arc<tokio::sync::Mutex<Group>>> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    async fn sweep_once(&self) {
        let groups = self.all_groups();
        for entry in groups {
            let mut g = entry.lock().await;
            if g.expire(self.timeout(), &self.instances) {
                let commits = g.rebalance(&self.federation);
                if let Err(e) = self.store(&g.name.clone(), &commits).await {
                    tracing::warn!(group = %g.name, error = %e, "committing after expiry failed");
                }
            }
        }
        // Forget groups with no instance left and no one holding them.
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|_, g| {
            Arc::strong_count(g) > 1 || g.try_lock().map_or(true, |g| !g.instances.is_empty())
        });
    }
}

/// Where a seek goes.
pub enum Seek {
    /// Plain offsets in each topic's current epoch.
    Offsets(Vec<(String, u32, u64)>),
    /// The oldest record still held.
    Beginning(Vec<TopicPartition>),
    /// The end of the current epoch.
    End(Vec<TopicPartition>),
}

async fn sweep(coordinator: Weak<Coordinator>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.sweep_once().await;
    }
}

async fn measure_lag(coordinator: Weak<Coordinator>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.measure_lag_once().await;
    }
}

/// A fresh instance name, `sluice-consumer-` and 16 random hex digits.
fn random_name() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    let rng = ring::rand::SystemRandom::new();
    if rng.fill(&mut bytes).is_err() {
        // The OS random source failing is near impossible; a clock-derived
        // name is still unique enough within one group.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = nanos.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sluice-consumer-{hex}")
}
