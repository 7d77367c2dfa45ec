//! Consumer-group offsets, kept by Kafka's group coordinator.
//!
//! A commit is an OffsetCommit of explicit offsets by a consumer whose
//! `group.id` is the group and that never joins it (no subscription): what
//! Kafka calls a standalone commit, accepted while the group has no active
//! members. Reading them back is an OffsetFetch. The consumers are pooled
//! by group, a bounded number, and closed off the async workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use sluice_config::KafkaConfig;

use super::config::{self, Context, Role};
use super::errors::{self, unavailable};
use super::{blocking, dispose, lock, Deadline};
use crate::error::BrokerError;

/// Groups whose consumers are kept open at most.
pub const DEFAULT_MAX_GROUP_CLIENTS: usize = 32;

struct GroupClient {
    consumer: BaseConsumer<Context>,
    last_used: Instant,
}

/// The group consumers of one cluster.
pub struct GroupClients {
    cluster: Arc<str>,
    config: KafkaConfig,
    idle: Mutex<HashMap<String, Vec<GroupClient>>>,
    max: usize,
}

impl GroupClients {
    /// An empty pool keeping at most `max` idle consumers.
    pub fn new(cluster: &Arc<str>, config: &KafkaConfig, max: usize) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            config: config.clone(),
            idle: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Commits `(partition, next offset)` pairs for `group` on `topic` and
    /// waits for the coordinator's answer.
    pub async fn commit(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
        deadline: Deadline,
    ) -> Result<(), BrokerError> {
        let client = self.checkout(group);
        let cluster = Arc::clone(&self.cluster);
        let config = self.config.clone();
        let (group_id, name, offsets) = (group.to_owned(), topic.to_owned(), offsets.to_vec());
        let (client, result) = blocking(&self.cluster, "committing offsets", deadline, move || {
            let client = match client {
                Some(client) => client,
                None => create(&cluster, &config, &group_id)?,
            };
            let result = commit_blocking(&cluster, &client.consumer, &name, &offsets);
            Ok((client, result))
        })
        .await?;
        self.checkin(group, client, result.is_ok());
        result
    }

    /// The offsets `group` committed on `topic`'s partitions `0..partitions`,
    /// by partition; partitions without a commit are left out.
    pub async fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: u32,
        deadline: Deadline,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        let client = self.checkout(group);
        let cluster = Arc::clone(&self.cluster);
        let config = self.config.clone();
        let (group_id, name) = (group.to_owned(), topic.to_owned());
        let what = "reading committed offsets";
        let (client, result) = blocking(&self.cluster, what, deadline, move || {
            let client = match client {
                Some(client) => client,
                None => create(&cluster, &config, &group_id)?,
            };
            let result =
                committed_blocking(&cluster, &client.consumer, &name, partitions, deadline);
            Ok((client, result))
        })
        .await?;
        self.checkin(group, client, result.is_ok());
        result
    }

    fn checkout(&self, group: &str) -> Option<GroupClient> {
        let mut idle = lock(&self.idle);
        let clients = idle.get_mut(group)?;
        let client = clients.pop();
        if clients.is_empty() {
            idle.remove(group);
        }
        client
    }

    /// Keeps a consumer that worked; closes the least recently used ones
    /// beyond the bound, and any that failed (its state is unknown).
    fn checkin(&self, group: &str, mut client: GroupClient, healthy: bool) {
        if !healthy {
            dispose(client);
            return;
        }
        client.last_used = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut idle = lock(&self.idle);
            idle.entry(group.to_owned()).or_default().push(client);
            let mut count: usize = idle.values().map(Vec::len).sum();
            while count > self.max {
                let oldest = idle
                    .iter()
                    .flat_map(|(g, cs)| {
                        cs.iter().enumerate().map(move |(i, c)| (g, i, c.last_used))
                    })
                    .min_by_key(|(_, _, used)| *used)
                    .map(|(g, i, _)| (g.clone(), i));
                let Some((g, i)) = oldest else { break };
                if let Some(clients) = idle.get_mut(&g) {
                    evicted.push(clients.swap_remove(i));
                    if clients.is_empty() {
                        idle.remove(&g);
                    }
                }
                count -= 1;
            }
        }
        if !evicted.is_empty() {
            dispose(evicted);
        }
    }

    /// Closes every idle consumer (shutdown), off the async workers.
    pub fn close_all(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        dispose(idle.into_values().collect::<Vec<_>>());
    }
}

fn create(
    cluster: &Arc<str>,
    config: &KafkaConfig,
    group: &str,
) -> Result<GroupClient, BrokerError> {
    let role = Role::Group(group.to_owned());
    let consumer = config::client_config(cluster, config, &role)
        .create_with_context(Context::new(cluster, &role))
        .map_err(|e| unavailable(cluster, "creating a group consumer", e))?;
    Ok(GroupClient {
        consumer,
        last_used: Instant::now(),
    })
}

/// A synchronous commit. librdkafka reports the result of a manual commit
/// only to a synchronous caller; it is bounded by the socket timeout once
/// sent, and by `session.timeout.ms` (pinned to the request timeout for
/// these consumers) while no coordinator is known.
fn commit_blocking(
    cluster: &str,
    consumer: &BaseConsumer<Context>,
    topic: &str,
    offsets: &[(u32, u64)],
) -> Result<(), BrokerError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
            .map_err(|e| unavailable(cluster, "committing offsets", e))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| commit_error(cluster, topic, &e))
}

fn committed_blocking(
    cluster: &str,
    consumer: &BaseConsumer<Context>,
    topic: &str,
    partitions: u32,
    deadline: Deadline,
) -> Result<Vec<(u32, u64)>, BrokerError> {
    let mut query = TopicPartitionList::with_capacity(partitions as usize);
    for p in 0..partitions {
        query.add_partition(topic, p as i32);
    }
    let answer = consumer
        .committed_offsets(query, deadline.remaining())
        .map_err(|e| commit_error(cluster, topic, &e))?;
    let mut committed = Vec::new();
    for element in answer.elements() {
        if let Err(e) = element.error() {
            return Err(commit_error(cluster, topic, &e));
        }
        if let (Offset::Offset(o), Ok(p)) = (element.offset(), u32::try_from(element.partition())) {
            if o >= 0 {
                committed.push((p, o as u64));
            }
        }
    }
    // A list returned by committed() must go before its consumer does, or
    // dropping the consumer can hang (an rdkafka pitfall).
    drop(answer);
    committed.sort_unstable();
    Ok(committed)
}

fn commit_error(cluster: &str, topic: &str, error: &KafkaError) -> BrokerError {
    match errors::code(error) {
        Some(code) if errors::is_unknown_topic(code) => BrokerError::UnknownTopic(topic.to_owned()),
        _ => unavailable(cluster, "committing or reading group offsets", error),
    }
}
