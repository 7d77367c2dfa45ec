//! [`MetaClient`]: metadata, watermarks, offsets for times and health,
//! through one consumer handle without a group, and the [`TopicCache`] of
//! partition counts that produce and fetch validate against.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};

use super::config::Context;
use super::errors::{self, unavailable};
use super::{blocking, Deadline};
use crate::error::BrokerError;

/// How long a cached partition count is trusted before a metadata request
/// checks it again (a miss always asks at once).
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(10);
/// Events drained from the handle's queue per use, at most.
const DRAIN_EVENTS: usize = 64;

/// A topic as the cluster's metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Partition count.
    pub partitions: u32,
    /// Partitions that have a leader and no error.
    pub ready_partitions: u32,
}

/// Metadata and offset look-ups of one cluster.
pub struct MetaClient {
    cluster: Arc<str>,
    consumer: Arc<BaseConsumer<Context>>,
    cache: RwLock<TopicCache>,
    /// One metadata refresh at a time; callers that waited reuse its answer.
    refresh: tokio::sync::Mutex<()>,
}

/// Partition counts by topic, as last seen.
#[derive(Debug, Default)]
pub struct TopicCache {
    fetched_at: Option<Instant>,
    topics: BTreeMap<String, u32>,
}

impl MetaClient {
    /// Wraps a consumer created for [`super::config::Role::Meta`].
    pub fn new(cluster: &Arc<str>, consumer: BaseConsumer<Context>) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            consumer: Arc::new(consumer),
            cache: RwLock::new(TopicCache::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Every topic the cluster has, fresh from a metadata request (internal
    /// ones included); refreshes the cache.
    pub async fn topics(
        &self,
        deadline: Deadline,
    ) -> Result<BTreeMap<String, TopicInfo>, BrokerError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = deadline.remaining();
        let cluster = Arc::clone(&self.cluster);
        let topics = blocking(&self.cluster, "fetching metadata", deadline, move || {
            drain(&consumer);
            let metadata = consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| unavailable(&cluster, "fetching metadata", e))?;
            Ok(topics_of(&metadata))
        })
        .await?;
        let mut cache = super::write(&self.cache);
        cache.topics = topics
            .iter()
            .map(|(name, info)| (name.clone(), info.partitions))
            .collect();
        cache.fetched_at = Some(Instant::now());
        Ok(topics)
    }

    /// The partition count of a topic: from the cache while it is fresh,
    /// else (and on a miss) from a metadata request.
    pub async fn partitions(&self, topic: &str, deadline: Deadline) -> Result<u32, BrokerError> {
        let asked_at = Instant::now();
        if let Some(count) = self.cached(topic, asked_at) {
            return Ok(count);
        }
        let _one_at_a_time = self.refresh.lock().await;
        // Someone else refreshed while this call waited: use their answer.
        let refreshed = super::read(&self.cache)
            .fetched_at
            .is_some_and(|at| at >= asked_at);
        if !refreshed {
            self.topics(deadline).await?;
        }
        super::read(&self.cache)
            .topics
            .get(topic)
            .copied()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))
    }

    fn cached(&self, topic: &str, now: Instant) -> Option<u32> {
        let cache = super::read(&self.cache);
        let fresh = cache
            .fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) < METADATA_MAX_AGE);
        if fresh {
            cache.topics.get(topic).copied()
        } else {
            None
        }
    }

    /// Records what this process learnt: a topic it created or deleted.
    pub fn remember(&self, topic: &str, partitions: Option<u32>) {
        let mut cache = super::write(&self.cache);
        match partitions {
            Some(count) => {
                cache.topics.insert(topic.to_owned(), count);
            }
            None => {
                cache.topics.remove(topic);
            }
        }
    }

    /// Drops a topic from the cache, so the next use asks the cluster.
    pub fn forget(&self, topic: &str) {
        let mut cache = super::write(&self.cache);
        cache.topics.remove(topic);
        cache.fetched_at = None;
    }

    /// ListOffsets(EARLIEST) and ListOffsets(LATEST) of a partition.
    ///
    /// LATEST is the high watermark on Kafka; callers that need it exact on
    /// every Kafka-protocol broker confirm it with a fetch (see
    /// `super::reader::ProbePool`).
    pub async fn watermarks(
        &self,
        topic: &str,
        partition: u32,
        deadline: Deadline,
    ) -> Result<(u64, u64), BrokerError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = deadline.remaining();
        let cluster = Arc::clone(&self.cluster);
        let name = topic.to_owned();
        blocking(&self.cluster, "listing offsets", deadline, move || {
            drain(&consumer);
            let (low, high) = consumer
                .fetch_watermarks(&name, partition as i32, timeout)
                .map_err(|e| offsets_error(&cluster, &name, partition, "listing offsets", &e))?;
            Ok((low.max(0) as u64, high.max(0) as u64))
        })
        .await
    }

    /// The earliest offset whose timestamp is >= `timestamp_ms`
    /// (ListOffsets by timestamp); `None` when every record is older.
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
        deadline: Deadline,
    ) -> Result<Option<u64>, BrokerError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = deadline.remaining();
        let cluster = Arc::clone(&self.cluster);
        let name = topic.to_owned();
        let what = "looking up an offset by timestamp";
        blocking(&self.cluster, what, deadline, move || {
            drain(&consumer);
            let mut query = TopicPartitionList::with_capacity(1);
            query
                .add_partition_offset(&name, partition as i32, Offset::Offset(timestamp_ms))
                .map_err(|e| unavailable(&cluster, what, e))?;
            let answer = consumer
                .offsets_for_times(query, timeout)
                .map_err(|e| offsets_error(&cluster, &name, partition, what, &e))?;
            let elements = answer.elements();
            let Some(element) = elements.first() else {
                return Err(unavailable(&cluster, what, "empty answer"));
            };
            if let Err(e) = element.error() {
                return Err(offsets_error(&cluster, &name, partition, what, &e));
            }
            Ok(match element.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            })
        })
        .await
    }

    /// Whether the cluster answers a metadata request, and with brokers.
    pub async fn health(&self, deadline: Deadline) -> Result<(), BrokerError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = deadline.remaining();
        let cluster = Arc::clone(&self.cluster);
        blocking(&self.cluster, "probing health", deadline, move || {
            drain(&consumer);
            let metadata = consumer
                .fetch_metadata(None, timeout)
                .map_err(|e| unavailable(&cluster, "fetching metadata", e))?;
            if metadata.brokers().is_empty() {
                return Err(unavailable(&cluster, "fetching metadata", "no brokers"));
            }
            Ok(())
        })
        .await
    }
}

fn offsets_error(
    cluster: &str,
    topic: &str,
    partition: u32,
    what: &str,
    error: &KafkaError,
) -> BrokerError {
    match errors::code(error) {
        Some(RDKafkaErrorCode::UnknownPartition) => BrokerError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        },
        Some(code) if errors::is_unknown_topic(code) => BrokerError::UnknownTopic(topic.to_owned()),
        _ => unavailable(cluster, what, error),
    }
}

/// Serves the events waiting on a group-less handle's queue (errors,
/// logs), which nothing else polls.
pub fn drain(consumer: &BaseConsumer<Context>) {
    for _ in 0..DRAIN_EVENTS {
        if consumer.poll(Duration::ZERO).is_none() {
            break;
        }
    }
}

fn topics_of(metadata: &Metadata) -> BTreeMap<String, TopicInfo> {
    metadata
        .topics()
        .iter()
        .filter(|t| {
            !matches!(
                t.error().map(RDKafkaErrorCode::from),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            )
        })
        .map(|t| {
            let partitions = t.partitions();
            let ready = partitions
                .iter()
                .filter(|p| p.error().is_none() && p.leader() >= 0)
                .count();
            (
                t.name().to_owned(),
                TopicInfo {
                    partitions: partitions.len() as u32,
                    ready_partitions: ready as u32,
                },
            )
        })
        .collect()
}
