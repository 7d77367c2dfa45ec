//! The [`Cluster`] trait: what the gateway and the federation need from a
//! broker cluster, whatever the backend.

use async_trait::async_trait;

use crate::error::BrokerError;
use crate::record::{Acks, FetchedBatch, ProduceRecord, ProducedOffset};

/// A topic as a cluster holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Number of partitions, numbered `0..partitions`.
    pub partitions: u32,
}

/// The offsets bounding a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Earliest offset still held (Kafka's log start offset).
    pub earliest: u64,
    /// Next offset to be written (Kafka's high watermark / log end offset).
    pub latest: u64,
}

/// Health as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Up,
    /// Not serving, with the reason.
    Down(String),
}

/// A broker cluster: topics of partitioned, append-only logs, and the
/// committed offsets of consumer groups.
///
/// Every method is cancel-safe in the sense the gateway needs: a dropped
/// `produce` future may or may not have appended, but never half a batch.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// The cluster's configured name.
    fn name(&self) -> &str;

    /// Creates a topic. [`BrokerError::TopicExists`] if it exists.
    async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicMetadata, BrokerError>;

    /// Deletes a topic and its data.
    async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError>;

    /// All topics, sorted by name.
    async fn list_topics(&self) -> Result<Vec<TopicMetadata>, BrokerError>;

    /// One topic; [`BrokerError::UnknownTopic`] if absent.
    async fn describe_topic(&self, topic: &str) -> Result<TopicMetadata, BrokerError>;

    /// Appends records to a topic that exists, choosing partitions for
    /// records without one (murmur2 of the key, else sticky). All records
    /// are validated before any is appended: an unknown partition fails the
    /// whole call. Returns one result per record, in order.
    async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>, BrokerError>;

    /// Reads records from `offset` on, up to about `max_bytes` (at least one
    /// record is returned when any is available, whatever its size).
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch, BrokerError>;

    /// Earliest and latest offsets of a partition.
    async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets, BrokerError>;

    /// The earliest offset whose timestamp is >= `timestamp_ms`; `None` if
    /// every record is older.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, BrokerError>;

    /// Stores a consumer group's committed offsets (next offset to read),
    /// durably before returning.
    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), BrokerError>;

    /// A group's committed offsets for a topic, by partition.
    async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, u64)>, BrokerError>;

    /// Bytes a topic occupies on this cluster (all partitions), for
    /// rebalance plans and the admin API.
    async fn topic_size_bytes(&self, topic: &str) -> Result<u64, BrokerError>;

    /// Current health.
    async fn health(&self) -> Health;
}
