//! Sluice's broker layer: the [`Cluster`] trait every backend implements, and
//! the backends.
//!
//! - [`record`]: records as produced and as read, acks.
//! - [`cluster`]: the [`Cluster`] trait, topic metadata, offsets, health.
//! - [`error`]: [`BrokerError`], tagged with its origin and whether a retry may help.
//! - [`partitioner`]: Kafka's default partitioner (murmur2 of the key), so
//!   records land where Java and librdkafka clients would put them.
//! - [`embedded`]: the embedded backend, a durable segmented log on disk.
//! - [`kafka`]: the Kafka backend, a real Kafka cluster through librdkafka.

pub mod cluster;
pub mod embedded;
pub mod error;
pub mod kafka;
pub mod partitioner;
pub mod record;

pub use cluster::{Cluster, Health, PartitionOffsets, TopicMetadata};
pub use error::{BrokerError, ErrorOrigin};
pub use record::{Acks, FetchedBatch, Header, ProduceRecord, ProducedOffset, Record};
