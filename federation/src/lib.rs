//! Routing of logical topics across Sluice's broker clusters.
//!
//! [`Federation`] is the single entry point the gateway calls for every
//! produce, read and topic operation: it finds a topic's home cluster,
//! creates topics on first produce when the config allows, and merges topic
//! listings across clusters.

pub mod cursor;
pub mod placement;
pub mod ring;
pub mod store;

use std::sync::Arc;

use sluice_broker::{
    Acks, BrokerError, Cluster, FetchedBatch, Health, PartitionOffsets, ProduceRecord,
    ProducedOffset,
};
use sluice_config::TopicsConfig;

/// A topic as the gateway shows it: its metadata and its home cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Name of the home cluster.
    pub cluster: String,
}

/// An error from routing or from the home cluster.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The home cluster answered with an error.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The configuration names no cluster at all.
    #[error("no cluster is configured")]
    NoCluster,
}

/// Shorthand for federation results.
pub type Result<T> = std::result::Result<T, FederationError>;

/// Every cluster behind the gateway, presented as one.
pub struct Federation {
    clusters: Vec<Arc<dyn Cluster>>,
    topics: TopicsConfig,
}

impl Federation {
    /// A federation over these clusters.
    pub fn new(clusters: Vec<Arc<dyn Cluster>>, topics: TopicsConfig) -> Result<Self> {
        if clusters.is_empty() {
            return Err(FederationError::NoCluster);
        }
        Ok(Self { clusters, topics })
    }

    /// The clusters, in configuration order.
    pub fn clusters(&self) -> &[Arc<dyn Cluster>] {
        &self.clusters
    }

    /// The home cluster of a topic.
    fn home(&self, _topic: &str) -> &Arc<dyn Cluster> {
        &self.clusters[0]
    }

    fn check_name(topic: &str) -> Result<()> {
        if sluice_config::is_valid_topic_name(topic) {
            Ok(())
        } else {
            Err(BrokerError::InvalidTopicName(topic.to_owned()).into())
        }
    }

    fn info(&self, cluster: &Arc<dyn Cluster>, meta: sluice_broker::TopicMetadata) -> TopicInfo {
        TopicInfo {
            name: meta.name,
            partitions: meta.partitions,
            cluster: cluster.name().to_owned(),
        }
    }

    /// Creates a topic on its home cluster.
    pub async fn create_topic(&self, topic: &str, partitions: Option<u32>) -> Result<TopicInfo> {
        Self::check_name(topic)?;
        let home = self.home(topic);
        let partitions = partitions.unwrap_or(self.topics.default_partitions);
        let meta = home.create_topic(topic, partitions).await?;
        Ok(self.info(home, meta))
    }

    /// Deletes a topic from its home cluster.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        Self::check_name(topic)?;
        Ok(self.home(topic).delete_topic(topic).await?)
    }

    /// One topic with its home.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        Self::check_name(topic)?;
        let home = self.home(topic);
        let meta = home.describe_topic(topic).await?;
        Ok(self.info(home, meta))
    }

    /// Every topic on every cluster, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut all = Vec::new();
        for cluster in &self.clusters {
            for meta in cluster.list_topics().await? {
                all.push(self.info(cluster, meta));
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Produces to a topic's home, creating the topic first when it is
    /// unknown and auto-creation is on.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>> {
        Self::check_name(topic)?;
        let home = self.home(topic);
        if self.topics.auto_create {
            match home.describe_topic(topic).await {
                Ok(_) => {}
                Err(BrokerError::UnknownTopic(_)) => {
                    match home
                        .create_topic(topic, self.topics.default_partitions)
                        .await
                    {
                        Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(home.produce(topic, records, acks).await?)
    }

    /// Reads from a partition of a topic's home.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch> {
        Self::check_name(topic)?;
        Ok(self
            .home(topic)
            .fetch(topic, partition, offset, max_bytes)
            .await?)
    }

    /// Earliest and latest offsets of a partition.
    pub async fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        Self::check_name(topic)?;
        Ok(self.home(topic).offsets(topic, partition).await?)
    }

    /// Health of every cluster, by name.
    pub async fn health(&self) -> Vec<(String, Health)> {
        let mut out = Vec::with_capacity(self.clusters.len());
        for cluster in &self.clusters {
            out.push((cluster.name().to_owned(), cluster.health().await));
        }
        out
    }
}
