//! Topic creation and deletion through Kafka's admin API, waiting until the
//! cluster's metadata shows the change, so a topic is usable (or gone) when
//! the call returns, as with the embedded backend.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;

use super::config::Context;
use super::errors::unavailable;
use super::metadata::MetaClient;
use super::Deadline;
use crate::error::BrokerError;

/// Pause between two metadata checks while a change propagates.
const PROPAGATION_POLL: Duration = Duration::from_millis(25);

/// Creates a topic with the broker's default replication factor and waits
/// until every partition has a leader.
pub async fn create_topic(
    cluster: &str,
    admin: &AdminClient<Context>,
    meta: &MetaClient,
    topic: &str,
    partitions: u32,
    deadline: Deadline,
) -> Result<(), BrokerError> {
    let options = options(deadline);
    // -1: the broker's `default.replication.factor` (KIP-464).
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| unavailable(cluster, "creating a topic", e))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(match code {
                RDKafkaErrorCode::TopicAlreadyExists => BrokerError::TopicExists(topic.to_owned()),
                RDKafkaErrorCode::InvalidTopic => BrokerError::InvalidTopicName(topic.to_owned()),
                RDKafkaErrorCode::InvalidPartitions => {
                    BrokerError::InvalidPartitionCount(partitions)
                }
                other => unavailable(cluster, "creating a topic", other),
            });
        }
    }
    loop {
        let topics = meta.topics(deadline).await?;
        if topics
            .get(topic)
            .is_some_and(|t| t.partitions == partitions && t.ready_partitions == partitions)
        {
            return Ok(());
        }
        wait_or_give_up(cluster, "waiting for a new topic's partitions", deadline).await?;
    }
}

/// Deletes a topic and waits until the metadata no longer shows it.
pub async fn delete_topic(
    cluster: &str,
    admin: &AdminClient<Context>,
    meta: &MetaClient,
    topic: &str,
    deadline: Deadline,
) -> Result<(), BrokerError> {
    let options = options(deadline);
    let results = admin
        .delete_topics(&[topic], &options)
        .await
        .map_err(|e| unavailable(cluster, "deleting a topic", e))?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    BrokerError::UnknownTopic(topic.to_owned())
                }
                other => unavailable(cluster, "deleting a topic", other),
            });
        }
    }
    loop {
        if !meta.topics(deadline).await?.contains_key(topic) {
            return Ok(());
        }
        wait_or_give_up(cluster, "waiting for a topic to disappear", deadline).await?;
    }
}

fn options(deadline: Deadline) -> AdminOptions {
    let remaining = deadline.remaining().max(Duration::from_millis(1));
    AdminOptions::new()
        .request_timeout(Some(remaining))
        .operation_timeout(Some(remaining))
}

async fn wait_or_give_up(cluster: &str, what: &str, deadline: Deadline) -> Result<(), BrokerError> {
    if deadline.remaining() <= PROPAGATION_POLL {
        return Err(unavailable(
            cluster,
            what,
            "the change did not show in the metadata within the request timeout",
        ));
    }
    tokio::time::sleep(PROPAGATION_POLL).await;
    Ok(())
}
