//! The embedded backend: a durable, segmented log on local disk.
//!
//! - [`EmbeddedCluster`] (this file): the [`Cluster`] implementation; async
//!   facade, produce path (partition choice, one batch per partition,
//!   durability per acks and fsync policy), fault switch, shutdown.
//! - [`storage`]: the cluster directory, topics map, create/delete, sync and
//!   retention over all partitions (blocking).
//! - [`topic`]: one topic: metadata file and its partitions.
//! - [`partition`]: [`PartitionLog`], one partition's log: append, read,
//!   group-commit fsync, recovery, retention.
//! - [`segment`]: segment files, the batch reader, recovery scans.
//! - [`index`]: the sparse offset index and its file format.
//! - [`batch`]: the batch and record encoding, CRC32C.
//! - [`groups`]: committed offsets of consumer groups.
//! - [`background`]: the thread doing interval fsync and retention.
//! - [`files`]: crash-safe file replacement, directory fsync, file names.
//!
//! The on-disk format is described in `docs/storage.md`.

pub mod background;
pub mod batch;
pub mod files;
pub mod groups;
pub mod index;
pub mod partition;
pub mod segment;
pub mod storage;
pub mod topic;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_config::{EmbeddedConfig, FsyncPolicy};

pub use batch::{BatchBuilder, MAX_BATCH_BYTES};
pub use groups::{is_valid_group_id, GROUP_ID_RULE, MAX_GROUP_ID_BYTES};
pub use partition::{
    Appended, LogSettings, PartitionLog, RetentionPolicy, RetentionStats, MAX_FETCH_BYTES,
};
pub use topic::MAX_PARTITIONS;

use background::{Background, Schedule};
use storage::Storage;

use crate::cluster::{Cluster, Health, PartitionOffsets, TopicMetadata};
use crate::error::BrokerError;
use crate::partitioner::partition_for_key;
use crate::record::{Acks, FetchedBatch, ProduceRecord, ProducedOffset};

/// A broker cluster living in this process, on local disk.
///
/// Open it with [`EmbeddedCluster::open`]; it starts a background thread
/// for interval fsync and retention, which stops when the cluster is shut
/// down or dropped. Produce appends synchronously inside the call (a
/// dropped produce future never leaves half a batch); reads, fsyncs and
/// admin operations run on tokio's blocking pool.
#[derive(Debug)]
pub struct EmbeddedCluster {
    name: String,
    fsync: FsyncPolicy,
    storage: Arc<Storage>,
    background: Background,
    available: AtomicBool,
    shut_down: AtomicBool,
}

impl EmbeddedCluster {
    /// Opens the cluster stored in `dir` (created if missing), recovering
    /// every topic, partition and group committed there. Blocking: call it
    /// at startup or from `spawn_blocking`.
    pub fn open(
        name: &str,
        dir: &Path,
        config: &EmbeddedConfig,
    ) -> Result<Arc<EmbeddedCluster>, BrokerError> {
        let storage = Arc::new(Storage::open(dir, config)?);
        let schedule = Schedule {
            fsync_every: (config.fsync == FsyncPolicy::Interval)
                .then(|| Duration::from_millis(config.fsync_interval_ms.max(1))),
            retention_every: (config.retention_ms.is_some() || config.retention_bytes.is_some())
                .then(|| Duration::from_millis(config.retention_check_interval_ms.max(1))),
        };
        let background = Background::start(name, Arc::downgrade(&storage), schedule)?;
        tracing::info!(cluster = name, dir = %dir.display(), topics = storage.list_topics().len(), "embedded cluster opened");
        Ok(Arc::new(Self {
            name: name.to_owned(),
            fsync: config.fsync,
            storage,
            background,
            available: AtomicBool::new(true),
            shut_down: AtomicBool::new(false),
        }))
    }

    /// Stops the background thread and fsyncs every partition. Blocking
    /// (call it from `spawn_blocking` inside a runtime). Afterwards every
    /// operation returns [`BrokerError::Unavailable`]. Idempotent.
    pub fn shutdown(&self) -> Result<(), BrokerError> {
        self.shut_down.store(true, Ordering::Release);
        self.background.stop();
        self.storage.sync_all()
    }

    /// The fault switch, for tests of federation and failover: while
    /// unavailable, every operation fails fast with
    /// [`BrokerError::Unavailable`] and [`Cluster::health`] is `Down`.
    /// Data already written stays and background work continues.
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Release);
    }

    /// Whether the cluster serves requests.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire) && !self.shut_down.load(Ordering::Acquire)
    }

    /// Applies the retention policy to every partition now, as the
    /// background thread does every `retention_check_interval_ms`. Blocking.
    pub fn run_retention(&self) -> Result<RetentionStats, BrokerError> {
        self.storage.run_retention()
    }

    /// Fsyncs every partition now. Blocking.
    pub fn sync_all(&self) -> Result<(), BrokerError> {
        self.storage.sync_all()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.storage.dir()
    }

    /// Direct access to a partition's log (tools, tests, benchmarks).
    pub fn partition_log(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, BrokerError> {
        self.check_available()?;
        let topic = self.storage.topic(topic)?;
        topic.partition(partition).cloned()
    }

    fn check_available(&self) -> Result<(), BrokerError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(self.unavailable("shut down"));
        }
        if !self.available.load(Ordering::Acquire) {
            return Err(self.unavailable("marked unavailable"));
        }
        Ok(())
    }

    fn unavailable(&self, reason: &str) -> BrokerError {
        BrokerError::Unavailable {
            cluster: self.name.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.background.stop();
        // Interval and never policies may hold unsynced writes; a clean
        // drop flushes them as shutdown would.
        if !self.shut_down.load(Ordering::Acquire) {
            let _ = self.storage.sync_all();
        }
    }
}

/// Runs blocking storage work off the async workers. The work completes
/// even if the awaiting future is dropped.
/// Reads starting within this many records of a partition's end are
/// served inline (see `fetch`).
const TAIL_READ_RECORDS: u64 = 1024;
/// Most bytes an inline tail read returns; the reader asks again for more.
const TAIL_READ_BYTES: usize = 1024 * 1024;

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BrokerError::Io(io::Error::other(format!("storage task failed: {e}"))))?
}

#[async_trait]
impl Cluster for EmbeddedCluster {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicMetadata, BrokerError> {
        self.check_available()?;
        let storage = Arc::clone(&self.storage);
        let topic = topic.to_owned();
        blocking(move || storage.create_topic(&topic, partitions)).await
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError> {
        self.check_available()?;
        let storage = Arc::clone(&self.storage);
        let topic = topic.to_owned();
        blocking(move || storage.delete_topic(&topic)).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicMetadata>, BrokerError> {
        self.check_available()?;
        Ok(self.storage.list_topics())
    }

    async fn describe_topic(&self, topic: &str) -> Result<TopicMetadata, BrokerError> {
        self.check_available()?;
        Ok(self.storage.topic(topic)?.metadata())
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>, BrokerError> {
        self.check_available()?;
        let topic = self.storage.topic(topic)?;
        let partitions = topic.partition_count();

        // Validate and place every record before anything is written.
        let mut sticky = None;
        let mut placed = Vec::with_capacity(records.len());
        for record in &records {
            let partition = match (record.partition, &record.key) {
                (Some(p), _) if p < partitions => p,
                (Some(p), _) => {
                    return Err(BrokerError::UnknownPartition {
                        topic: topic.name.clone(),
                        partition: p,
                    })
                }
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    *sticky.get_or_insert_with(|| topic.sticky.next_partition(partitions))
                }
            };
            placed.push(partition);
        }

        // One batch per partition, records in call order within each.
        let now = storage::now_ms();
        let mut batches: BTreeMap<u32, BatchBuilder> = BTreeMap::new();
        let mut slots = Vec::with_capacity(records.len());
        for (record, &partition) in records.iter().zip(&placed) {
            let timestamp = record.timestamp_ms.unwrap_or(now);
            let batch = batches
                .entry(partition)
                .or_insert_with(|| BatchBuilder::with_capacity(256));
            slots.push((partition, batch.record_count(), timestamp));
            batch.push(
                timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            );
        }
        if let Some(batch) = batches.values().find(|b| b.len_bytes() > MAX_BATCH_BYTES) {
            return Err(BrokerError::RecordTooLarge {
                size: batch.len_bytes(),
                limit: MAX_BATCH_BYTES,
            });
        }

        // The appends: synchronous, no await until all are written, so a
        // dropped future cannot stop between two of them.
        let mut appended = BTreeMap::new();
        for (&partition, batch) in &mut batches {
            let log = topic.partition(partition)?;
            appended.insert(partition, (Arc::clone(log), log.append(batch)?));
        }

        if self.fsync == FsyncPolicy::Always {
            // Start every partition's fsync before waiting for any.
            for (log, _) in appended.values() {
                log.request_sync();
            }
            if acks == Acks::All {
                for (log, done) in appended.values() {
                    log.wait_durable(done.next_offset()).await?;
                }
            }
        }

        Ok(slots
            .into_iter()
            .map(|(partition, index, timestamp_ms)| ProducedOffset {
                partition,
                offset: match acks {
                    Acks::None => None,
                    Acks::Leader | Acks::All => appended
                        .get(&partition)
                        .map(|(_, done)| done.base_offset + u64::from(index)),
                },
                timestamp_ms,
            })
            .collect())
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch, BrokerError> {
        self.check_available()?;
        let log = Arc::clone(self.storage.topic(topic)?.partition(partition)?);
        // A reader at the tail (the common case of a live subscription)
        // reads what was just appended: page-cache bytes, a `pread` of at
        // most TAIL_READ_BYTES, done inline rather than handed to the
        // blocking pool and back (two thread wake-ups per read).
        if log.is_tail(offset, TAIL_READ_RECORDS) {
            return log.read(offset, max_bytes.min(TAIL_READ_BYTES));
        }
        blocking(move || log.read(offset, max_bytes)).await
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BrokerError> {
        self.check_available()?;
        Ok(self.storage.topic(topic)?.partition(partition)?.offsets())
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, BrokerError> {
        self.check_available()?;
        let log = Arc::clone(self.storage.topic(topic)?.partition(partition)?);
        blocking(move || log.offset_for_timestamp(timestamp_ms)).await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), BrokerError> {
        self.check_available()?;
        groups::check_group_id(group)?;
        let found = self.storage.topic(topic)?;
        for &(partition, _) in offsets {
            found.partition(partition)?;
        }
        let storage = Arc::clone(&self.storage);
        let (group, topic, offsets) = (group.to_owned(), topic.to_owned(), offsets.to_vec());
        blocking(move || storage.groups().commit(&group, &topic, &offsets)).await
    }

    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        self.check_available()?;
        groups::check_group_id(group)?;
        self.storage.topic(topic)?;
        Ok(self.storage.groups().committed(group, topic))
    }

    async fn topic_size_bytes(&self, topic: &str) -> Result<u64, BrokerError> {
        self.check_available()?;
        let topic = self.storage.topic(topic)?;
        let mut bytes = 0;
        for p in 0..topic.partition_count() {
            bytes += topic.partition(p)?.size_bytes();
        }
        Ok(bytes)
    }

    async fn health(&self) -> Health {
        if self.shut_down.load(Ordering::Acquire) {
            Health::Down("shut down".to_owned())
        } else if !self.available.load(Ordering::Acquire) {
            Health::Down("marked unavailable".to_owned())
        } else {
            Health::Up
        }
    }
}
