//! Errors of the broker layer, tagged with where they came from and whether
//! a retry may help, so federation can choose between failover and an error.

use std::io;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// The request was wrong; the client must change it.
    Client,
    /// The cluster failed or is unreachable.
    Cluster,
    /// A bug or an unexpected state in Sluice.
    Internal,
}

/// An error from a [`crate::Cluster`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic does not exist (and was not auto-created).
    #[error("topic {0:?} not found")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("partition {partition} of topic {topic:?} not found")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// The topic name breaks Kafka's rule.
    #[error("invalid topic name {0:?}: {rule}", rule = sluice_config::TOPIC_NAME_RULE)]
    InvalidTopicName(String),
    /// Creating a topic that exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A consumer group id the cluster does not accept.
    #[error("invalid group id {group:?}: {rule}")]
    InvalidGroupId {
        /// The id given.
        group: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A partition count outside what the cluster accepts.
    #[error("invalid partition count {0}: must be between 1 and 10000")]
    InvalidPartitionCount(u32),
    /// The requested offset is below the log start (retention dropped it).
    #[error("offset {requested} is out of range for partition {partition} of {topic:?}: records start at {log_start_offset}, the next is {high_watermark}")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        requested: u64,
        /// Earliest offset held.
        log_start_offset: u64,
        /// Next offset to be written.
        high_watermark: u64,
    },
    /// A record or batch larger than the cluster accepts.
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// Size of the batch.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The cluster cannot serve now (down, read-only, shutting down).
    #[error("cluster {cluster:?} unavailable: {reason}")]
    Unavailable {
        /// The cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// Stored data failed its checksum; it is never served.
    #[error("corrupt data in {location}: {reason}")]
    Corrupt {
        /// File and position.
        location: String,
        /// What was wrong.
        reason: String,
    },
    /// An I/O error from the storage.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

impl BrokerError {
    /// Who caused it.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            Self::UnknownTopic(_)
            | Self::UnknownPartition { .. }
            | Self::InvalidTopicName(_)
            | Self::InvalidGroupId { .. }
            | Self::TopicExists(_)
            | Self::InvalidPartitionCount(_)
            | Self::OffsetOutOfRange { .. }
            | Self::RecordTooLarge { .. } => ErrorOrigin::Client,
            Self::Unavailable { .. } | Self::Io(_) => ErrorOrigin::Cluster,
            Self::Corrupt { .. } => ErrorOrigin::Internal,
        }
    }

    /// Whether the same request may succeed later or elsewhere.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Io(_))
    }
}
