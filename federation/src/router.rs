//! [`Federation`]: every produce, read and topic operation goes through here.
//!
//! A topic's home is fixed when it is placed (pin, else ring owner) and is
//! recorded in the placement table; it changes only by a migration or a
//! failover, each of which seals the current epoch and opens the next one.
//!
//! Writes to a topic hold its *gate* for reading while they run; an epoch
//! switch takes the gate for writing, so it waits for in-flight produces to
//! finish, reads where the old epoch ends, records the switch durably, and
//! only then lets writes through to the new home. That is what makes the
//! sealed end offsets cover every acknowledged record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_broker::{
    Acks, BrokerError, Cluster, FetchedBatch, Health, PartitionOffsets, ProduceRecord,
    ProducedOffset, Record,
};
use sluice_config::{
    ClusterConfig, ClusterState, Config, DownPolicy, FederationConfig, TopicsConfig,
};
use tokio::task::JoinHandle;

use crate::cursor::Cursor;
use crate::members::{spawn_health_probe, Member, Members};
use crate::placement::{EpochReason, EpochSwitch, PlacementChange, PlacementTable, TopicPlacement};
use crate::rebalance::RebalanceState;
use crate::ring::TopicRing;
use crate::store::{MemoryStore, PlacementStore, Watched};
use crate::{FederationError, Result};

/// A topic as the gateway shows it: its metadata and its home cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Name of the home cluster (the current epoch's).
    pub cluster: String,
    /// The current epoch.
    pub epoch: u32,
}

/// Where produced records went: their offsets, and the epoch (of the
/// topic's placement) they were written in.
#[derive(Debug, Clone)]
pub struct Produced {
    /// One per record, in order.
    pub offsets: Vec<ProducedOffset>,
    /// The epoch whose cluster took them.
    pub epoch: u32,
}

/// Where a read starts.
#[derive(Debug, Clone)]
pub enum ReadStart {
    /// From a cursor handed out earlier.
    Cursor(Cursor),
    /// A plain offset in the topic's current epoch (Confluent-compatible).
    Offset(u64),
    /// The oldest record still held, in the first epoch.
    Earliest,
}

/// Records read from one epoch of one partition, and where to continue.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// Records in offset order (offsets are those of the epoch's cluster).
    pub records: Vec<Record>,
    /// The epoch they were read from.
    pub epoch: u32,
    /// The offset to continue from in that epoch.
    pub next_offset: u64,
}

impl ReadBatch {
    /// The cursor to resume after `record` (which must come from this batch).
    pub fn cursor_after(&self, topic: &str, record: &Record) -> String {
        Cursor::at_epoch(self.epoch, [(record.partition, record.offset + 1)]).encode(topic)
    }

    /// The cursor to resume after the whole batch.
    pub fn next_cursor(&self, topic: &str, partition: u32) -> String {
        Cursor::at_epoch(self.epoch, [(partition, self.next_offset)]).encode(topic)
    }
}

/// Per-topic write state.
pub(crate) struct TopicRoute {
    /// Produces hold it shared; an epoch switch holds it exclusively.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Per partition, the highest offset + 1 this gateway has seen
    /// acknowledged in the current epoch: where a failover seals the old
    /// epoch when its cluster cannot be asked.
    high_water: Mutex<Vec<u64>>,
    /// Bumped after every produce this gateway completes on the topic, so
    /// its readers wake at once instead of at their next poll.
    appended: tokio::sync::watch::Sender<u64>,
}

impl TopicRoute {
    fn new(start: Vec<u64>) -> Self {
        Self {
            gate: tokio::sync::RwLock::new(()),
            high_water: Mutex::new(start),
            appended: tokio::sync::watch::Sender::new(0),
        }
    }

    fn observe(&self, produced: &[ProducedOffset]) {
        {
            let mut hw = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
            for p in produced {
                if let (Some(offset), Some(slot)) = (p.offset, hw.get_mut(p.partition as usize)) {
                    *slot = (*slot).max(offset + 1);
                }
            }
        }
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn observe_latest(&self, partition: u32, latest: u64) {
        let mut hw = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = hw.get_mut(partition as usize) {
            *slot = (*slot).max(latest);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.high_water
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn reset(&self, start: Vec<u64>) {
        *self.high_water.lock().unwrap_or_else(|e| e.into_inner()) = start;
    }
}

/// Applies changes other gateways stored, until the federation is gone or
/// the store stops reporting.
async fn follow(
    federation: std::sync::Weak<Federation>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Watched>,
) {
    while let Some(watched) = changes.recv().await {
        let Some(federation) = federation.upgrade() else {
            return;
        };
        match watched {
            Watched::Change(change) => federation.apply_remote(&change),
            // Everything stored before `at` is applied: the view is current as of then.
            Watched::CaughtUp(at) => federation.confirmed(at),
        }
    }
}

/// Waits `grace`, then copies what landed on the old home past the seal
/// ([`Federation::copy_sealed_tail`]), unless the federation is gone.
async fn copy_late_writes(federation: Weak<Federation>, sealed: Sealed, grace: Duration) {
    tokio::time::sleep(grace).await;
    if let Some(federation) = federation.upgrade() {
        federation.copy_sealed_tail(&sealed).await;
    }
}

/// Every cluster behind the gateway, presented as one.
pub struct Federation {
    pub(crate) members: Arc<Members>,
    pub(crate) ring: RwLock<TopicRing>,
    pub(crate) table: RwLock<PlacementTable>,
    store: Arc<dyn PlacementStore>,
    routes: RwLock<HashMap<String, Arc<TopicRoute>>>,
    /// Serialises placing new topics, so two first produces agree on a home.
    create_lock: tokio::sync::Mutex<()>,
    config: FederationConfig,
    topics: TopicsConfig,
    pub(crate) rebalance: Mutex<RebalanceState>,
    probe: Mutex<Option<JoinHandle<()>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
    /// Itself, for the tasks an epoch switch leaves behind; set by `open`.
    this: OnceLock<Weak<Federation>>,
    /// When the federation was built: the zero of `confirmed_ns`.
    born: Instant,
    /// Nanoseconds after `born` up to which a shared store's changes are
    /// known to be applied (the placement lease).
    confirmed_ns: AtomicU64,
}

/// Bytes asked for per fetch when copying late writes.
const LATE_WRITE_FETCH_BYTES: usize = 1024 * 1024;

/// Fetches that may come back empty in a row before copying late writes
/// gives up.
const LATE_WRITE_EMPTY_FETCHES: u32 = 5;

/// What an epoch switch sealed on its old home, for the later look for
/// writes that landed there after the seal.
struct Sealed {
    topic: String,
    generation: u64,
    epoch: u32,
    source: Arc<Member>,
    end_offsets: Vec<u64>,
}

impl Drop for Federation {
    fn drop(&mut self) {
        for task in [&self.probe, &self.watcher] {
            if let Some(task) = task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock_read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Federation {
    /// A federation over clusters of equal weight with placement kept in
    /// memory only: for tests and tools, not for a gateway (placement would
    /// not survive a restart).
    pub fn new(clusters: Vec<Arc<dyn Cluster>>, topics: TopicsConfig) -> Result<Self> {
        let members = clusters
            .into_iter()
            .map(|c| {
                let config = ClusterConfig::embedded(c.name());
                Arc::new(Member::new(&config, c))
            })
            .collect();
        let store: Arc<dyn PlacementStore> = Arc::new(MemoryStore::new());
        let table = store.load()?;
        Self::build(members, FederationConfig::default(), topics, store, table)
    }

    fn build(
        members: Vec<Arc<Member>>,
        config: FederationConfig,
        topics: TopicsConfig,
        store: Arc<dyn PlacementStore>,
        table: PlacementTable,
    ) -> Result<Self> {
        if members.is_empty() {
            return Err(FederationError::NoCluster);
        }
        let members = Arc::new(Members::new(members));
        let ring = TopicRing::new(members.active_weights())
            .map_err(|e| FederationError::Config(e.to_string()))?;
        Ok(Self {
            members,
            ring: RwLock::new(ring),
            table: RwLock::new(table),
            store,
            routes: RwLock::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            config,
            topics,
            rebalance: Mutex::new(RebalanceState::default()),
            probe: Mutex::new(None),
            watcher: Mutex::new(None),
            this: OnceLock::new(),
            // `load` has just read the store to its end.
            born: Instant::now(),
            confirmed_ns: AtomicU64::new(0),
        })
    }

    /// Notes that every change stored before `at` is applied.
    fn confirmed(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.born).as_nanos() as u64;
        self.confirmed_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// With `federation.placement.lease_ms` on a shared store: refuses
    /// writes while this gateway's view of placement was last confirmed
    /// longer ago than the lease, so a gateway cut off from the store stops
    /// writing to homes that may have moved.
    fn check_lease(&self) -> Result<()> {
        let lease_ms = self.config.placement.lease_ms;
        if lease_ms == 0 || !self.store.shared() {
            return Ok(());
        }
        let confirmed = self.born + Duration::from_nanos(self.confirmed_ns.load(Ordering::Relaxed));
        let age_ms = confirmed.elapsed().as_millis() as u64;
        if age_ms > lease_ms {
            return Err(FederationError::PlacementStale { age_ms, lease_ms });
        }
        Ok(())
    }

    /// Opens the federation for a gateway: loads placement from `store`,
    /// adopts topics found on clusters but not yet placed, learns where each
    /// placed topic's current epoch ends, and starts probing cluster health.
    pub async fn open(
        clusters: Vec<(ClusterConfig, Arc<dyn Cluster>)>,
        config: &Config,
        store: Arc<dyn PlacementStore>,
    ) -> Result<Arc<Self>> {
        let members = clusters
            .iter()
            .map(|(c, cluster)| Arc::new(Member::new(c, cluster.clone())))
            .collect();
        // A shared store reads over the network: keep it off the runtime's workers.
        let loader = store.clone();
        let table = tokio::task::spawn_blocking(move || loader.load())
            .await
            .map_err(|e| FederationError::Internal(format!("placement load task: {e}")))??;
        let federation = Arc::new(Self::build(
            members,
            config.federation.clone(),
            config.topics.clone(),
            store,
            table,
        )?);
        let _ = federation.this.set(Arc::downgrade(&federation));
        federation.reconcile().await?;
        // The tail asks where the store ends only when a lease needs it.
        let confirm = federation.config.placement.lease_ms > 0;
        if let Some(changes) = federation.store.watch(confirm) {
            let task = tokio::spawn(follow(Arc::downgrade(&federation), changes));
            *federation.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        let probe = spawn_health_probe(
            federation.members.clone(),
            Duration::from_millis(config.federation.health_check_interval_ms),
            Duration::from_millis(config.federation.health_check_timeout_ms),
        );
        *federation.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
        Ok(federation)
    }

    /// Places topics that exist on a cluster but not in the table (created
    /// before placement was kept, or outside Sluice), and primes each placed
    /// topic's high-water marks.
    async fn reconcile(&self) -> Result<()> {
        let members: Vec<_> = self.members.iter().cloned().collect();
        for member in members {
            let topics = match member.cluster.list_topics().await {
                Ok(topics) => topics,
                Err(e) => {
                    member.observe(&Health::Down(e.to_string()));
                    continue;
                }
            };
            for meta in topics {
                let change = {
                    let table = lock_read(&self.table);
                    if table.contains(&meta.name) {
                        None
                    } else {
                        Some(table.create(&meta.name, meta.partitions, &member.name, now_ms())?)
                    }
                };
                if let Some(change) = change {
                    tracing::info!(topic = %meta.name, cluster = %member.name, "adopting unplaced topic");
                    self.persist(change).await?;
                }
            }
            // A failover seals the current epoch at the high-water marks,
            // and a fresh process has seen no produce yet: learn where each
            // epoch homed here ends now, or a failover before the next
            // produce would seal it at its start and cursors would skip
            // every record written before the restart.
            let homed: Vec<(String, u32)> = lock_read(&self.table)
                .iter()
                .filter(|(_, p)| p.current().is_some_and(|e| e.cluster == member.name))
                .map(|(t, p)| (t.to_owned(), p.partitions))
                .collect();
            for (topic, partitions) in homed {
                let Some(route) = self.route(&topic) else {
                    continue;
                };
                for p in 0..partitions {
                    match member.cluster.offsets(&topic, p).await {
                        Ok(o) => route.observe_latest(p, o.latest),
                        Err(e) => {
                            tracing::warn!(topic, partition = p, cluster = %member.name, error = %e, "cannot learn where the current epoch ends");
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a change another gateway stored: its own writes and reads
    /// follow the new epoch from the next request on.
    pub fn apply_remote(&self, change: &PlacementChange) {
        let applied = lock_write(&self.table).apply(change);
        match applied {
            Ok(crate::placement::Applied::Changed) => {
                let topic = change.topic();
                let start = lock_read(&self.table)
                    .current(topic)
                    .map(|e| e.start_offsets.clone());
                match start {
                    Some(start) => {
                        if let Some(route) = lock_read(&self.routes).get(topic) {
                            route.reset(start);
                        }
                    }
                    None => {
                        lock_write(&self.routes).remove(topic);
                    }
                }
                tracing::info!(topic, "placement changed by another gateway");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a placement change from the shared store")
            }
        }
    }

    /// The members, in configuration order.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.members.iter()
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<&Arc<Member>> {
        self.members.get(name)
    }

    fn member_or_err(&self, name: &str) -> Result<&Arc<Member>> {
        self.members
            .get(name)
            .ok_or_else(|| FederationError::UnknownCluster(name.to_owned()))
    }

    fn check_name(topic: &str) -> Result<()> {
        if sluice_config::is_valid_topic_name(topic) {
            Ok(())
        } else {
            Err(BrokerError::InvalidTopicName(topic.to_owned()).into())
        }
    }

    /// The down policy for a topic: exact entry, else longest prefix, else the default.
    pub fn policy(&self, topic: &str) -> DownPolicy {
        let mut best: Option<(usize, DownPolicy)> = None;
        for p in &self.config.topic_policies {
            if p.topic.as_deref() == Some(topic) {
                return p.on_cluster_down;
            }
            if let Some(prefix) = p.prefix.as_deref() {
                if topic.starts_with(prefix) && best.is_none_or(|(len, _)| prefix.len() > len) {
                    best = Some((prefix.len(), p.on_cluster_down));
                }
            }
        }
        best.map_or(self.config.on_cluster_down, |(_, p)| p)
    }

    /// The pinned cluster of a topic: exact pin, else longest prefix pin.
    fn pin(&self, topic: &str) -> Option<&str> {
        let mut best: Option<(usize, &str)> = None;
        for pin in &self.config.pins {
            if pin.topic.as_deref() == Some(topic) {
                return Some(&pin.cluster);
            }
            if let Some(prefix) = pin.prefix.as_deref() {
                if topic.starts_with(prefix) && best.is_none_or(|(len, _)| prefix.len() > len) {
                    best = Some((prefix.len(), &pin.cluster));
                }
            }
        }
        best.map(|(_, c)| c)
    }

    /// Where a topic belongs now: its pin, else its ring owner.
    pub fn desired_home(&self, topic: &str) -> Option<String> {
        if let Some(pin) = self.pin(topic) {
            return Some(pin.to_owned());
        }
        lock_read(&self.ring).owner(topic).map(str::to_owned)
    }

    /// Placement candidates in failover order: the pin (if any), then the ring's.
    fn candidates(&self, topic: &str) -> Vec<String> {
        let ring = lock_read(&self.ring);
        let mut out: Vec<String> = Vec::new();
        if let Some(pin) = self.pin(topic) {
            out.push(pin.to_owned());
        }
        for c in ring.candidates(topic) {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_owned());
            }
        }
        out
    }

    /// Rebuilds the ring from the members' current states.
    pub(crate) fn rebuild_ring(&self) -> Result<()> {
        let ring = TopicRing::new(self.members.active_weights())
            .map_err(|e| FederationError::Config(e.to_string()))?;
        *lock_write(&self.ring) = ring;
        Ok(())
    }

    /// Stores a change durably, then applies it.
    pub(crate) async fn persist(&self, change: PlacementChange) -> Result<()> {
        let store = self.store.clone();
        let stored = change.clone();
        tokio::task::spawn_blocking(move || store.append(&stored))
            .await
            .map_err(|e| FederationError::Internal(format!("placement store task: {e}")))??;
        lock_write(&self.table).apply(&change)?;
        if let PlacementChange::Delete { topic, .. } = &change {
            lock_write(&self.routes).remove(topic);
        }
        Ok(())
    }

    fn info(topic: &str, placement: &TopicPlacement) -> Option<TopicInfo> {
        let current = placement.current()?;
        Some(TopicInfo {
            name: topic.to_owned(),
            partitions: placement.partitions,
            cluster: current.cluster.clone(),
            epoch: current.epoch,
        })
    }

    fn placed_info(&self, topic: &str) -> Option<TopicInfo> {
        let table = lock_read(&self.table);
        table.get(topic).and_then(|p| Self::info(topic, p))
    }

    /// A topic's placement history.
    pub fn placement(&self, topic: &str) -> Option<TopicPlacement> {
        lock_read(&self.table).get(topic).cloned()
    }

    /// The cluster holding a topic's epoch `epoch` (which never changes
    /// once the epoch exists): where a produce or a read went.
    pub fn epoch_cluster(&self, topic: &str, epoch: u32) -> Option<String> {
        lock_read(&self.table)
            .epoch(topic, epoch)
            .map(|e| e.cluster.clone())
    }

    /// Every placed topic with its home, sorted by name.
    pub fn homes(&self) -> Vec<(String, String)> {
        lock_read(&self.table)
            .homes()
            .map(|(t, c)| (t.to_owned(), c.to_owned()))
            .collect()
    }

    /// Places a topic (pin, else ring owner; the next healthy candidate
    /// under the failover policy) and creates it there.
    async fn place(
        &self,
        topic: &str,
        partitions: Option<u32>,
        explicit: bool,
    ) -> Result<TopicInfo> {
        let _serial = self.create_lock.lock().await;
        if let Some(info) = self.placed_info(topic) {
            return if explicit {
                Err(BrokerError::TopicExists(topic.to_owned()).into())
            } else {
                Ok(info)
            };
        }
        let candidates = self.candidates(topic);
        let first = candidates
            .first()
            .ok_or_else(|| FederationError::NoHealthyCluster {
                topic: topic.to_owned(),
            })?;
        let usable = |name: &str| {
            self.members
                .get(name)
                .is_some_and(|m| m.is_up() && m.state() == ClusterState::Active)
        };
        let chosen =
            if usable(first) {
                first.clone()
            } else {
                match self.policy(topic) {
                    DownPolicy::Reject => {
                        let member = self.member_or_err(first)?;
                        return Err(FederationError::HomeDown {
                            topic: topic.to_owned(),
                            cluster: first.clone(),
                            reason: member.down_reason().unwrap_or_else(|| "not active".into()),
                        });
                    }
                    DownPolicy::Failover => candidates
                        .iter()
                        .find(|c| usable(c))
                        .cloned()
                        .ok_or_else(|| FederationError::NoHealthyCluster {
                            topic: topic.to_owned(),
                        })?,
                }
            };
        let member = self.member_or_err(&chosen)?.clone();
        let partitions = partitions.unwrap_or(self.topics.default_partitions);
        let (partitions, existed) = match member.cluster.create_topic(topic, partitions).await {
            Ok(meta) => (meta.partitions, false),
            Err(BrokerError::TopicExists(_)) => {
                (member.cluster.describe_topic(topic).await?.partitions, true)
            }
            Err(e) => return Err(self.cluster_error(&member, topic, e)),
        };
        let change = lock_read(&self.table).create(topic, partitions, &chosen, now_ms())?;
        self.persist(change).await?;
        if existed && explicit {
            return Err(BrokerError::TopicExists(topic.to_owned()).into());
        }
        self.placed_info(topic).ok_or_else(|| {
            FederationError::Internal(format!("topic {topic:?} vanished after placing"))
        })
    }

    /// Turns a cluster's error into the federation's, noting a cluster that
    /// turned out to be down so the next request does not wait for the probe.
    fn cluster_error(&self, member: &Member, topic: &str, e: BrokerError) -> FederationError {
        if let BrokerError::Unavailable { reason, .. } = &e {
            member.observe(&Health::Down(reason.clone()));
            return FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster: member.name.clone(),
                reason: reason.clone(),
            };
        }
        e.into()
    }

    /// Creates a topic on the cluster its placement picks.
    pub async fn create_topic(&self, topic: &str, partitions: Option<u32>) -> Result<TopicInfo> {
        Self::check_name(topic)?;
        if let Some(p) = partitions {
            if !(1..=10_000).contains(&p) {
                return Err(BrokerError::InvalidPartitionCount(p).into());
            }
        }
        self.place(topic, partitions, true).await
    }

    /// Deletes a topic from every cluster that holds one of its epochs, then
    /// from the placement table.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        Self::check_name(topic)?;
        let placement = self
            .placement(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let mut clusters: Vec<&str> = placement
            .epochs
            .iter()
            .map(|e| e.cluster.as_str())
            .collect();
        clusters.dedup();
        for name in clusters {
            let member = self.member_or_err(name)?;
            match member.cluster.delete_topic(topic).await {
                Ok(()) | Err(BrokerError::UnknownTopic(_)) => {}
                Err(e) => return Err(self.cluster_error(member, topic, e)),
            }
        }
        let change = lock_read(&self.table).delete(topic)?;
        self.persist(change).await
    }

    /// One topic with its home.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        Self::check_name(topic)?;
        self.placed_info(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()).into())
    }

    /// Every placed topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let table = lock_read(&self.table);
        Ok(table.iter().filter_map(|(t, p)| Self::info(t, p)).collect())
    }

    /// A receiver that changes whenever this gateway completes a produce
    /// to `topic`: readers tailing the topic wait on it between polls, so a
    /// record written here reaches them at once. Records written through
    /// other gateways are not signalled; readers still poll for those.
    /// `None` while the topic is not placed. The sender goes away when the
    /// topic is deleted, which a receiver sees as an error from `changed`.
    pub fn watch_appends(&self, topic: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.route(topic).map(|route| route.appended.subscribe())
    }

    fn route(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        if let Some(route) = lock_read(&self.routes).get(topic) {
            return Some(route.clone());
        }
        let start = lock_read(&self.table).current(topic)?.start_offsets.clone();
        Some(
            lock_write(&self.routes)
                .entry(topic.to_owned())
                .or_insert_with(|| Arc::new(TopicRoute::new(start)))
                .clone(),
        )
    }

    /// Produces to a topic's home, placing the topic first when it is new
    /// and auto-creation is on. While the home is down, the topic's policy
    /// decides: a fast [`FederationError::HomeDown`], or a failover.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>> {
        Ok(self.produce_to_epoch(topic, records, acks).await?.offsets)
    }

    /// [`Federation::produce`], also telling which epoch the records went
    /// to, so a caller can hand out cursors for them.
    pub async fn produce_to_epoch(
        &self,
        topic: &str,
        mut records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Produced> {
        Self::check_name(topic)?;
        self.check_lease()?;
        // Bounded: each turn either returns or makes progress (places the
        // topic, fails it over to another cluster, or finds its home down).
        for _ in 0..=self.members.iter().count() + 1 {
            let Some(route) = self.route(topic) else {
                if !self.topics.auto_create {
                    return Err(BrokerError::UnknownTopic(topic.to_owned()).into());
                }
                self.place(topic, None, false).await?;
                continue;
            };
            let guard = route.gate.read().await;
            let Some((cluster, epoch)) = lock_read(&self.table)
                .current(topic)
                .map(|e| (e.cluster.clone(), e.epoch))
            else {
                // Deleted meanwhile; place it again on the next turn.
                continue;
            };
            let member = self.member_or_err(&cluster)?.clone();
            if !member.is_up() || member.state() == ClusterState::ReadOnly {
                drop(guard);
                let reason = member
                    .down_reason()
                    .unwrap_or_else(|| "read-only".to_owned());
                match self.policy(topic) {
                    DownPolicy::Reject => {
                        return Err(FederationError::HomeDown {
                            topic: topic.to_owned(),
                            cluster,
                            reason,
                        })
                    }
                    DownPolicy::Failover => {
                        self.switch_epoch(topic, epoch, None, EpochReason::Failover)
                            .await?;
                        continue;
                    }
                }
            }
            // Kept for a failover topic: a home found down by this very
            // produce (before any probe) fails over on the next turn.
            let again = (self.policy(topic) == DownPolicy::Failover).then(|| records.clone());
            let produced = member.cluster.produce(topic, records, acks).await;
            // Observed under the gate: an epoch switch resets the marks for
            // the new epoch, and must not get this epoch's offsets after it.
            if let Ok(offsets) = &produced {
                route.observe(offsets);
            }
            drop(guard);
            match produced {
                Ok(offsets) => return Ok(Produced { offsets, epoch }),
                Err(BrokerError::UnknownTopic(_)) if self.topics.auto_create => {
                    // The home lost a placed topic (deleted out of band, or a
                    // broker that kept nothing over a restart). Like Kafka's
                    // auto-creation, make it again there with the partition
                    // count placement knows; the client retries.
                    return Err(self.recreate_on_home(&member, topic).await);
                }
                Err(e) => match (self.cluster_error(&member, topic, e), again) {
                    // Unavailable is retriable elsewhere; the member is now
                    // marked down, so the next turn switches the epoch.
                    (FederationError::HomeDown { .. }, Some(again)) => records = again,
                    (e, _) => return Err(e),
                },
            }
        }
        Err(FederationError::NoHealthyCluster {
            topic: topic.to_owned(),
        })
    }

    async fn recreate_on_home(&self, member: &Member, topic: &str) -> FederationError {
        let partitions = lock_read(&self.table).get(topic).map(|p| p.partitions);
        let Some(partitions) = partitions else {
            return BrokerError::UnknownTopic(topic.to_owned()).into();
        };
        tracing::warn!(topic, cluster = %member.name, partitions, "home cluster lost the topic; creating it again");
        match member.cluster.create_topic(topic, partitions).await {
            Ok(_) | Err(BrokerError::TopicExists(_)) => FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster: member.name.clone(),
                reason: "the topic was missing on its home and has been created again; retry"
                    .into(),
            },
            Err(e) => self.cluster_error(member, topic, e),
        }
    }

    /// Reads a partition of a topic from where `start` says, crossing into
    /// later epochs once an earlier one is read to its end. One call reads
    /// from one epoch; the batch says which, and where to continue.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        start: ReadStart,
        max_bytes: usize,
    ) -> Result<ReadBatch> {
        Self::check_name(topic)?;
        let (mut epoch, mut offset) = {
            let table = lock_read(&self.table);
            let placement = table
                .get(topic)
                .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
            if partition >= placement.partitions {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                }
                .into());
            }
            match &start {
                ReadStart::Cursor(cursor) => {
                    let position = cursor
                        .position(partition)
                        .ok_or(FederationError::CursorPartition { partition })?;
                    (position.epoch, position.next_offset)
                }
                ReadStart::Offset(offset) => {
                    let current = placement.current().ok_or_else(|| {
                        FederationError::Internal(format!("topic {topic:?} has no epoch"))
                    })?;
                    (current.epoch, *offset)
                }
                ReadStart::Earliest => (placement.epochs.first().map_or(1, |e| e.epoch), 0),
            }
        };
        let epochs = self.placement(topic).map_or(1, |p| p.epochs.len());
        for _ in 0..=epochs {
            let (cluster, read_epoch, read_offset, end) = {
                let table = lock_read(&self.table);
                let from = table.resolve_read(topic, epoch, partition, offset)?;
                (from.cluster.to_owned(), from.epoch, from.offset, from.end)
            };
            let member = self.member_or_err(&cluster)?.clone();
            if !member.is_up() {
                return Err(FederationError::HomeDown {
                    topic: topic.to_owned(),
                    cluster,
                    reason: member.down_reason().unwrap_or_default(),
                });
            }
            let batch = match member
                .cluster
                .fetch(topic, partition, read_offset, max_bytes)
                .await
            {
                Ok(batch) => batch,
                // "From the oldest record" means from wherever retention
                // left the log start, not a 416 for a request that named no offset.
                Err(BrokerError::OffsetOutOfRange {
                    log_start_offset, ..
                }) if matches!(start, ReadStart::Earliest) && log_start_offset > read_offset => {
                    epoch = read_epoch;
                    offset = log_start_offset;
                    continue;
                }
                Err(e) => return Err(self.cluster_error(&member, topic, e)),
            };
            let mut records = batch.records;
            if let Some(end) = end {
                records.retain(|r| r.offset < end);
                if records.is_empty() && batch.high_watermark >= end && read_offset < end {
                    // The sealed epoch holds nothing more below its end
                    // (retention, or an unacknowledged tail): move on.
                    epoch = read_epoch;
                    offset = end;
                    continue;
                }
            }
            let next_offset = records.last().map_or(read_offset, |r| r.offset + 1);
            return Ok(ReadBatch {
                records,
                epoch: read_epoch,
                next_offset,
            });
        }
        Err(FederationError::Internal(format!(
            "topic {topic:?}: reading partition {partition} did not settle on an epoch"
        )))
    }

    /// Reads a partition of the topic's current epoch at a plain offset
    /// (the Confluent-compatible read).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch> {
        let (member, _) = self.current_member(topic)?;
        member
            .cluster
            .fetch(topic, partition, offset, max_bytes)
            .await
            .map_err(|e| self.cluster_error(&member, topic, e))
    }

    fn current_member(&self, topic: &str) -> Result<(Arc<Member>, u32)> {
        Self::check_name(topic)?;
        let (cluster, epoch) = lock_read(&self.table)
            .current(topic)
            .map(|e| (e.cluster.clone(), e.epoch))
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let member = self.member_or_err(&cluster)?.clone();
        if !member.is_up() {
            return Err(FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster,
                reason: member.down_reason().unwrap_or_default(),
            });
        }
        Ok((member, epoch))
    }

    /// Earliest and latest offsets of a partition in the topic's current epoch.
    pub async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        let (member, _) = self.current_member(topic)?;
        let offsets = member
            .cluster
            .offsets(topic, partition)
            .await
            .map_err(|e| self.cluster_error(&member, topic, e))?;
        if let Some(route) = self.route(topic) {
            route.observe_latest(partition, offsets.latest);
        }
        Ok(offsets)
    }

    /// Health of every cluster as last observed, by name.
    pub async fn health(&self) -> Vec<(String, Health)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.health()))
            .collect()
    }

    /// Probes every cluster once now (the background probe does this on its
    /// interval); returns the fresh health.
    pub async fn probe_now(&self) -> Vec<(String, Health)> {
        for member in self.members.iter() {
            member.observe(&member.cluster.health().await);
        }
        self.health().await
    }

    /// Seals a topic's current epoch (which must be `expected_epoch`) and
    /// opens the next one on `to`, or for a failover on the first usable
    /// candidate. Waits for in-flight produces, so the sealed end offsets
    /// cover every acknowledged record; readers finish the old epoch first.
    pub(crate) async fn switch_epoch(
        &self,
        topic: &str,
        expected_epoch: u32,
        to: Option<&str>,
        reason: EpochReason,
    ) -> Result<()> {
        let route = self
            .route(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let _exclusive = route.gate.write().await;
        let (from, current_epoch, partitions, start_offsets, generation) = {
            let table = lock_read(&self.table);
            let placement = table
                .get(topic)
                .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
            let current = placement.current().ok_or_else(|| {
                FederationError::Internal(format!("topic {topic:?} has no epoch"))
            })?;
            (
                current.cluster.clone(),
                current.epoch,
                placement.partitions,
                current.start_offsets.clone(),
                placement.generation,
            )
        };
        if current_epoch != expected_epoch {
            // Someone switched it while this waited for the gate.
            return Ok(());
        }
        let usable = |name: &str| {
            self.members
                .get(name)
                .is_some_and(|m| m.is_up() && m.state() == ClusterState::Active)
        };
        let to = match to {
            Some(to) => to.to_owned(),
            None => self
                .candidates(topic)
                .into_iter()
                .find(|c| *c != from && usable(c))
                .ok_or_else(|| FederationError::NoHealthyCluster {
                    topic: topic.to_owned(),
                })?,
        };
        if to == from {
            return Ok(());
        }
        let target = self.member_or_err(&to)?.clone();
        if target.state() != ClusterState::Active {
            return Err(FederationError::Conflict(format!(
                "cluster {to:?} is {:?} and takes no topics; only an active cluster can become a home",
                target.state()
            )));
        }
        if !target.is_up() {
            return Err(FederationError::HomeDown {
                topic: topic.to_owned(),
                cluster: to,
                reason: target.down_reason().unwrap_or_default(),
            });
        }
        let source = self.member_or_err(&from)?.clone();

        // Where the old epoch ends: asked of its cluster when it answers
        // (exact), else what this gateway saw acknowledged (failover).
        let mut end_offsets = Vec::with_capacity(partitions as usize);
        let known = route.snapshot();
        for p in 0..partitions {
            let floor = start_offsets.get(p as usize).copied().unwrap_or(0);
            let seen = known.get(p as usize).copied().unwrap_or(0).max(floor);
            let end = if source.is_up() {
                match source.cluster.offsets(topic, p).await {
                    Ok(o) => o.latest.max(floor),
                    Err(e) if reason == EpochReason::Failover => {
                        tracing::warn!(topic, partition = p, error = %e, "sealing at the last acknowledged offset");
                        seen
                    }
                    Err(e) => return Err(self.cluster_error(&source, topic, e)),
                }
            } else if reason == EpochReason::Failover {
                seen
            } else {
                return Err(FederationError::HomeDown {
                    topic: topic.to_owned(),
                    cluster: from,
                    reason: source.down_reason().unwrap_or_default(),
                });
            };
            end_offsets.push(end);
        }

        // The new home: create the topic there (or find it, e.g. when it
        // moves back), and start the new epoch at its current end.
        match target.cluster.create_topic(topic, partitions).await {
            Ok(_) => {}
            Err(BrokerError::TopicExists(_)) => {
                let meta = target.cluster.describe_topic(topic).await?;
                if meta.partitions != partitions {
                    return Err(FederationError::Conflict(format!(
                        "topic {topic:?} exists on cluster {to:?} with {} partitions, not {partitions}",
                        meta.partitions
                    )));
                }
            }
            Err(e) => return Err(self.cluster_error(&target, topic, e)),
        }
        let mut new_start = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let o = target
                .cluster
                .offsets(topic, p)
                .await
                .map_err(|e| self.cluster_error(&target, topic, e))?;
            new_start.push(o.latest);
        }

        let sealed = Sealed {
            topic: topic.to_owned(),
            generation,
            epoch: expected_epoch,
            source: source.clone(),
            end_offsets: end_offsets.clone(),
        };
        let switch = EpochSwitch {
            expected_epoch,
            end_offsets,
            cluster: to.clone(),
            start_offsets: new_start.clone(),
            reason,
        };
        let change = lock_read(&self.table).seal_and_open(topic, switch, now_ms())?;
        self.persist(change).await?;
        route.reset(new_start);
        tracing::info!(topic, from = %from, to = %to, epoch = expected_epoch + 1, ?reason, "topic switched to a new epoch");
        // Other gateways write to the old home until they see the switch.
        if self.store.shared() {
            if let Some(this) = self.this.get().cloned() {
                let grace = Duration::from_millis(self.config.placement.late_write_grace_ms);
                tokio::spawn(copy_late_writes(this, sealed, grace));
            }
        }
        Ok(())
    }

    /// Copies records written to `sealed`'s old home past its end (by
    /// gateways that had not yet seen the switch: acknowledged, but past
    /// where readers leave the epoch) into the topic's current epoch, with
    /// their partition, key, value, headers and timestamp. They are read
    /// after what the current epoch held by then: late, never lost.
    ///
    /// Boxed with `Send` spelled out: copying produces, a produce can fail
    /// over and so switch an epoch, and a switch spawns this again; the
    /// compiler cannot infer `Send` around that cycle.
    fn copy_sealed_tail<'a>(
        &'a self,
        sealed: &'a Sealed,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.copy_sealed_tail_inner(sealed))
    }

    async fn copy_sealed_tail_inner(&self, sealed: &Sealed) {
        let topic = sealed.topic.as_str();
        let Some(placement) = self.placement(topic) else {
            return;
        };
        // Another incarnation of the name, or the epoch gone: nothing of
        // ours to copy.
        if placement.generation != sealed.generation || placement.epoch(sealed.epoch).is_none() {
            return;
        }
        for (p, &end) in sealed.end_offsets.iter().enumerate() {
            let p = p as u32;
            // Where a later epoch on the same cluster starts, if the topic
            // came back there: its records are its own.
            let bound = placement
                .epochs
                .iter()
                .filter(|e| e.epoch > sealed.epoch && e.cluster == sealed.source.name)
                .filter_map(|e| e.start_offsets.get(p as usize).copied())
                .min();
            let latest = match sealed.source.cluster.offsets(topic, p).await {
                Ok(o) => o.latest,
                Err(e) => {
                    tracing::warn!(topic, partition = p, cluster = %sealed.source.name, error = %e, "cannot look for late writes on the old home");
                    continue;
                }
            };
            let stop = bound.map_or(latest, |b| b.min(latest));
            let mut at = end;
            let mut copied = 0usize;
            let mut empty = 0;
            while at < stop {
                let batch = match sealed
                    .source
                    .cluster
                    .fetch(topic, p, at, LATE_WRITE_FETCH_BYTES)
                    .await
                {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::error!(topic, partition = p, offset = at, cluster = %sealed.source.name, error = %e, "cannot read late writes on the old home; they stay unread");
                        break;
                    }
                };
                // Nothing at or after `at` (a fetch can come back empty):
                // a few more tries, then give up loudly.
                let Some(last) = batch.records.last().map(|r| r.offset).filter(|l| *l >= at) else {
                    empty += 1;
                    if empty >= LATE_WRITE_EMPTY_FETCHES {
                        tracing::error!(topic, partition = p, offset = at, end = stop, cluster = %sealed.source.name, "the old home returns nothing where it reports records; late writes stay unread");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let records: Vec<ProduceRecord> = batch
                    .records
                    .into_iter()
                    .filter(|r| r.offset >= at && r.offset < stop)
                    .map(|r| ProduceRecord {
                        partition: Some(p),
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        timestamp_ms: Some(r.timestamp_ms),
                    })
                    .collect();
                let n = records.len();
                if n > 0 {
                    if let Err(e) = self.produce(topic, records, Acks::All).await {
                        tracing::error!(topic, partition = p, offset = at, error = %e, "cannot copy late writes into the current epoch; they stay unread");
                        break;
                    }
                }
                copied += n;
                at = last + 1;
            }
            if copied > 0 {
                tracing::warn!(topic, partition = p, copied, cluster = %sealed.source.name, "copied records another gateway wrote to the old home after the switch into the current epoch");
            }
        }
    }

    /// Moves one topic to `to` now (drain-then-switch).
    pub async fn migrate(&self, topic: &str, to: &str) -> Result<()> {
        Self::check_name(topic)?;
        self.member_or_err(to)?;
        let epoch = lock_read(&self.table)
            .current(topic)
            .map(|e| e.epoch)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        self.switch_epoch(topic, epoch, Some(to), EpochReason::Migration)
            .await
    }
}
