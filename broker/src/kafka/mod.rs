//! The Kafka backend: a real Apache Kafka (or Kafka-protocol) cluster
//! behind the [`Cluster`] trait, through librdkafka (the `rdkafka` crate
//! with librdkafka 2.12 built from source).
//!
//! - [`KafkaCluster`] (this file): the [`Cluster`] implementation; every
//!   call bounded by the cluster's `request_timeout_ms`, validation as in
//!   the embedded backend, health.
//! - [`config`]: librdkafka settings per client (defaults, the config's
//!   `properties`, pinned settings) and the clients' context (logs).
//! - [`producer`]: partition choice and the idempotent producer.
//! - `batch`: records handed to librdkafka a partition's run per call
//!   (its C API directly: the crate's one `unsafe` code).
//! - [`reader`]: the reader pool serving `fetch`, and the probes that find
//!   where a log ends (the `latest` offset).
//! - [`metadata`]: metadata, watermarks, offsets by timestamp, health, and
//!   the cache of partition counts.
//! - [`admin`]: topic creation and deletion.
//! - [`groups`]: consumer-group offsets through the group coordinator.
//! - [`errors`]: librdkafka errors as [`BrokerError`]s.
//!
//! How each operation maps to Kafka is described in `docs/kafka.md`.

pub mod admin;
mod batch;
pub mod config;
pub mod errors;
pub mod groups;
pub mod metadata;
pub mod producer;
pub mod reader;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::consumer::BaseConsumer;
use sluice_config::KafkaConfig;

use crate::cluster::{Cluster, Health, PartitionOffsets, TopicMetadata};
use crate::embedded::{groups::check_group_id, topic::check_partition_count};
use crate::error::BrokerError;
use crate::record::{Acks, FetchedBatch, ProduceRecord, ProducedOffset};

use config::{Context, Role};
use errors::unavailable;
use groups::GroupClients;
use metadata::MetaClient;
use producer::ProducerHandle;
use reader::{ProbePool, ReaderPool};

pub(crate) use crate::embedded::storage::now_ms;

/// Time a blocking librdkafka call gets beyond its own timeout before the
/// caller stops waiting for it.
const BLOCKING_GRACE: Duration = Duration::from_millis(50);
/// How often idle readers are looked at for closing.
const EVICTION_INTERVAL: Duration = Duration::from_secs(5);

/// A Kafka cluster behind the [`Cluster`] trait.
///
/// [`KafkaCluster::connect`] creates the clients without talking to the
/// cluster, so a gateway starts while a cluster is down (its health says
/// so). Every call is bounded by `request_timeout_ms`; a cluster that does
/// not answer yields [`BrokerError::Unavailable`].
pub struct KafkaCluster {
    name: Arc<str>,
    config: KafkaConfig,
    request_timeout: Duration,
    producer: ProducerHandle,
    meta: MetaClient,
    admin: AdminClient<Context>,
    readers: ReaderPool,
    probes: ProbePool,
    groups: GroupClients,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("name", &self.name)
            .field("bootstrap_servers", &self.config.bootstrap_servers)
            .field("request_timeout", &self.request_timeout)
            .field("readers", &self.readers.live())
            .finish_non_exhaustive()
    }
}

impl KafkaCluster {
    /// Creates the cluster's clients (producer, metadata and admin
    /// handles; readers and group consumers come on demand). Fails only on
    /// a configuration librdkafka refuses, e.g. an unknown property; an
    /// unreachable cluster is not an error here.
    ///
    /// Inside a tokio runtime it also starts a task that closes readers
    /// idle for [`reader::READER_IDLE_TIMEOUT`]; it ends with the cluster.
    pub fn connect(name: &str, config: &KafkaConfig) -> Result<Arc<KafkaCluster>, BrokerError> {
        let cluster: Arc<str> = Arc::from(name);
        let meta: BaseConsumer<Context> = config::client_config(&cluster, config, &Role::Meta)
            .create_with_context(Context::new(&cluster, &Role::Meta))
            .map_err(|e| unavailable(name, "creating the metadata client", e))?;
        let admin: AdminClient<Context> = config::client_config(&cluster, config, &Role::Admin)
            .create_with_context(Context::new(&cluster, &Role::Admin))
            .map_err(|e| unavailable(name, "creating the admin client", e))?;
        let this = Arc::new(Self {
            request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            producer: ProducerHandle::new(&cluster, config)?,
            meta: MetaClient::new(&cluster, meta),
            admin,
            readers: ReaderPool::new(&cluster, config, reader::DEFAULT_MAX_READERS),
            probes: ProbePool::new(&cluster, config, reader::DEFAULT_MAX_PROBES),
            groups: GroupClients::new(&cluster, config, groups::DEFAULT_MAX_GROUP_CLIENTS),
            config: config.clone(),
            name: cluster,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&this);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(EVICTION_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(cluster) = weak.upgrade() else { break };
                    cluster.readers.evict_idle(reader::READER_IDLE_TIMEOUT);
                }
            });
        }
        tracing::info!(cluster = name, bootstrap_servers = %config.bootstrap_servers, "kafka cluster configured");
        Ok(this)
    }

    /// The settings it was created with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Readers open now (for tests and metrics).
    pub fn open_readers(&self) -> usize {
        self.readers.live()
    }

    /// Waits up to `timeout` for every record handed to librdkafka to be
    /// delivered or failed (acks=0 records included), e.g. before shutdown.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BrokerError> {
        self.producer.flush(timeout).await
    }

    /// Flushes the producer (within the request timeout) and closes it and
    /// the idle readers and group consumers; produce calls fail with
    /// [`BrokerError::Unavailable`] afterwards.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        let flushed = self.flush(self.request_timeout).await;
        self.producer.close();
        reader::close_all(&self.readers, &self.probes);
        self.groups.close_all();
        flushed
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.request_timeout)
    }

    /// Runs one operation within its deadline (plus a little grace for the
    /// inner timeouts to report their own error first).
    async fn bounded<T>(
        &self,
        what: &str,
        deadline: Deadline,
        operation: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout_at(deadline.tokio_instant() + BLOCKING_GRACE, operation).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(
                &self.name,
                what,
                format!("no answer within {} ms", self.request_timeout.as_millis()),
            )),
        }
    }

    /// The partition count of an existing topic, and that `partition` is one of them.
    async fn check_partition(
        &self,
        topic: &str,
        partition: u32,
        deadline: Deadline,
    ) -> Result<u32, BrokerError> {
        check_topic_name(topic)?;
        let partitions = self.meta.partitions(topic, deadline).await?;
        if partition >= partitions {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(partitions)
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        reader::close_all(&self.readers, &self.probes);
        self.groups.close_all();
    }
}

fn check_topic_name(topic: &str) -> Result<(), BrokerError> {
    if sluice_config::is_valid_topic_name(topic) {
        Ok(())
    } else {
        Err(BrokerError::InvalidTopicName(topic.to_owned()))
    }
}

#[async_trait]
impl Cluster for KafkaCluster {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicMetadata, BrokerError> {
        check_topic_name(topic)?;
        check_partition_count(partitions)?;
        let deadline = self.deadline();
        self.bounded("creating a topic", deadline, async {
            admin::create_topic(
                &self.name,
                &self.admin,
                &self.meta,
                topic,
                partitions,
                deadline,
            )
            .await?;
            self.meta.remember(topic, Some(partitions));
            Ok(TopicMetadata {
                name: topic.to_owned(),
                partitions,
            })
        })
        .await
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError> {
        check_topic_name(topic)?;
        let deadline = self.deadline();
        self.bounded("deleting a topic", deadline, async {
            let deleted =
                admin::delete_topic(&self.name, &self.admin, &self.meta, topic, deadline).await;
            if deleted.is_ok() || matches!(deleted, Err(BrokerError::UnknownTopic(_))) {
                self.meta.remember(topic, None);
                self.readers.forget_topic(topic);
            }
            deleted
        })
        .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicMetadata>, BrokerError> {
        let deadline = self.deadline();
        self.bounded("listing topics", deadline, async {
            let topics = self.meta.topics(deadline).await?;
            Ok(topics
                .into_iter()
                // Kafka's own topics (__consumer_offsets, ...) are not the
                // gateway's to show.
                .filter(|(name, _)| !name.starts_with("__"))
                .map(|(name, info)| TopicMetadata {
                    name,
                    partitions: info.partitions,
                })
                .collect())
        })
        .await
    }

    async fn describe_topic(&self, topic: &str) -> Result<TopicMetadata, BrokerError> {
        check_topic_name(topic)?;
        let deadline = self.deadline();
        self.bounded("describing a topic", deadline, async {
            let topics = self.meta.topics(deadline).await?;
            topics
                .get(topic)
                .map(|info| TopicMetadata {
                    name: topic.to_owned(),
                    partitions: info.partitions,
                })
                .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
        })
        .await
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>, BrokerError> {
        check_topic_name(topic)?;
        let deadline = self.deadline();
        let produced = self
            .bounded("producing", deadline, async {
                let partitions = self.meta.partitions(topic, deadline).await?;
                let produced = self
                    .producer
                    .produce(topic, partitions, records, acks, deadline)
                    .await;
                if let Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. }) =
                    &produced
                {
                    // The cache was stale (deleted or changed elsewhere).
                    self.meta.forget(topic);
                }
                produced
            })
            .await;
        if let Err(BrokerError::Unavailable { .. }) = &produced {
            // librdkafka holds records for a topic the cluster does not have
            // until they time out, which looks like an outage. Ask the
            // cluster, so a missing topic is reported as one.
            // A short look: a cluster that answers does so in milliseconds,
            // and one that is down must not double the time to fail.
            self.meta.forget(topic);
            let look = Deadline::after((self.request_timeout / 4).min(Duration::from_secs(1)));
            if let Err(BrokerError::UnknownTopic(t)) = self.meta.partitions(topic, look).await {
                return Err(BrokerError::UnknownTopic(t));
            }
        }
        produced
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch, BrokerError> {
        let deadline = self.deadline();
        self.bounded("fetching", deadline, async {
            self.check_partition(topic, partition, deadline).await?;
            let fetched = self
                .readers
                .fetch(
                    &self.meta,
                    &self.probes,
                    topic,
                    partition,
                    offset,
                    max_bytes,
                    deadline,
                )
                .await;
            if let Err(BrokerError::UnknownTopic(_)) = &fetched {
                self.meta.forget(topic);
            }
            fetched
        })
        .await
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BrokerError> {
        let deadline = self.deadline();
        self.bounded("reading offsets", deadline, async {
            self.check_partition(topic, partition, deadline).await?;
            reader::end_offsets(&self.meta, &self.probes, topic, partition, deadline).await
        })
        .await
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, BrokerError> {
        let deadline = self.deadline();
        self.bounded("looking up an offset by timestamp", deadline, async {
            self.check_partition(topic, partition, deadline).await?;
            self.meta
                .offset_for_time(topic, partition, timestamp_ms, deadline)
                .await
        })
        .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), BrokerError> {
        check_group_id(group)?;
        check_topic_name(topic)?;
        let deadline = self.deadline();
        self.bounded("committing offsets", deadline, async {
            let partitions = self.meta.partitions(topic, deadline).await?;
            if let Some(&(partition, _)) = offsets.iter().find(|(p, _)| *p >= partitions) {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                });
            }
            if offsets.is_empty() {
                return Ok(());
            }
            self.groups.commit(group, topic, offsets, deadline).await
        })
        .await
    }

    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        check_group_id(group)?;
        check_topic_name(topic)?;
        let deadline = self.deadline();
        self.bounded("reading committed offsets", deadline, async {
            let partitions = self.meta.partitions(topic, deadline).await?;
            self.groups
                .committed(group, topic, partitions, deadline)
                .await
        })
        .await
    }

    /// Kafka reports a topic's size only through DescribeLogDirs, which
    /// neither librdkafka nor the `rdkafka` crate offers: Kafka clusters
    /// report 0 for existing topics (see `docs/kafka.md`).
    async fn topic_size_bytes(&self, topic: &str) -> Result<u64, BrokerError> {
        check_topic_name(topic)?;
        let deadline = self.deadline();
        self.bounded("sizing a topic", deadline, async {
            self.meta.partitions(topic, deadline).await?;
            Ok(0)
        })
        .await
    }

    async fn health(&self) -> Health {
        let deadline = self.deadline();
        match self
            .bounded("probing health", deadline, self.meta.health(deadline))
            .await
        {
            Ok(()) => Health::Up,
            Err(e) => Health::Down(e.to_string()),
        }
    }
}

/// When an operation must be done by: one per call to the cluster,
/// shared by its steps.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The deadline as tokio's instant.
    pub fn tokio_instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0)
    }
}

/// Runs a blocking librdkafka call on tokio's blocking pool, waiting for it
/// no longer than the deadline (plus [`BLOCKING_GRACE`]). A call still
/// running then finishes on its own thread; its result is dropped there.
async fn blocking<T: Send + 'static>(
    cluster: &str,
    what: &str,
    deadline: Deadline,
    call: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, BrokerError> {
    let task = tokio::task::spawn_blocking(call);
    match tokio::time::timeout_at(deadline.tokio_instant() + BLOCKING_GRACE, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(BrokerError::Io(std::io::Error::other(format!(
            "{what}: task failed: {e}"
        )))),
        Err(_) => Err(unavailable(
            cluster,
            what,
            "no answer within the request timeout",
        )),
    }
}

/// Drops librdkafka handles on a thread of their own: closing a consumer
/// or producer waits for the broker (bounded by librdkafka), which must not
/// hold up an async worker.
fn dispose<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("sluice-kafka-close".into())
        .spawn(move || drop(value));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to close Kafka clients; closed them inline");
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
