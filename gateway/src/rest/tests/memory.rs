//! An in-memory [`Cluster`] for router tests: enough behaviour to answer
//! every route, plus a switch that makes every call fail, so the 5xx
//! mappings can be exercised without a broken disk.
//!
//! The trait is declared with `async_trait`, which the gateway does not
//! depend on; the methods below are written in the form that macro expands
//! to, each delegating to a plain synchronous method.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use sluice_broker::{
    Acks, BrokerError, Cluster, FetchedBatch, Health, PartitionOffsets, ProduceRecord,
    ProducedOffset, Record, TopicMetadata,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Timestamp stamped on records produced without one.
pub const NOW_MS: i64 = 1_714_564_800_000;

#[derive(Default)]
struct Partition {
    log_start: u64,
    records: Vec<Record>,
}

/// The test double.
#[derive(Default)]
pub struct MemoryCluster {
    topics: Mutex<BTreeMap<String, Vec<Partition>>>,
    failure: Mutex<Option<fn() -> BrokerError>>,
}

impl MemoryCluster {
    /// Makes every later call fail with `error()`.
    pub fn fail_with(&self, error: fn() -> BrokerError) {
        *self.failure.lock().expect("lock") = Some(error);
    }

    /// Drops the records of a partition below `offset`, as retention would.
    pub fn drop_before(&self, topic: &str, partition: u32, offset: u64) {
        let mut topics = self.topics.lock().expect("lock");
        let p = &mut topics.get_mut(topic).expect("topic")[partition as usize];
        p.records.retain(|r| r.offset >= offset);
        p.log_start = offset;
    }

    fn check(&self) -> Result<(), BrokerError> {
        match *self.failure.lock().expect("lock") {
            Some(error) => Err(error()),
            None => Ok(()),
        }
    }

    fn create(&self, topic: &str, partitions: u32) -> Result<TopicMetadata, BrokerError> {
        self.check()?;
        if partitions == 0 || partitions > 10_000 {
            return Err(BrokerError::InvalidPartitionCount(partitions));
        }
        let mut topics = self.topics.lock().expect("lock");
        if topics.contains_key(topic) {
            return Err(BrokerError::TopicExists(topic.to_owned()));
        }
        topics.insert(
            topic.to_owned(),
            (0..partitions).map(|_| Partition::default()).collect(),
        );
        Ok(TopicMetadata {
            name: topic.to_owned(),
            partitions,
        })
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&mut Partition) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        self.check()?;
        let mut topics = self.topics.lock().expect("lock");
        let parts = topics
            .get_mut(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let p = parts
            .get_mut(partition as usize)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        f(p)
    }

    fn describe(&self, topic: &str) -> Result<TopicMetadata, BrokerError> {
        self.check()?;
        let topics = self.topics.lock().expect("lock");
        let parts = topics
            .get(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        Ok(TopicMetadata {
            name: topic.to_owned(),
            partitions: parts.len() as u32,
        })
    }

    fn append(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> Result<Vec<ProducedOffset>, BrokerError> {
        let count = self.describe(topic)?.partitions;
        // Validate every record before appending any, as the trait promises.
        for r in &records {
            if let Some(p) = r.partition.filter(|p| *p >= count) {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                });
            }
        }
        let mut out = Vec::new();
        for r in records {
            let partition = r
                .partition
                .unwrap_or_else(|| r.key.as_ref().map_or(0, |k| k.len() as u32 % count));
            let timestamp_ms = r.timestamp_ms.unwrap_or(NOW_MS);
            let offset = self.with_partition(topic, partition, |p| {
                let offset = p.log_start + p.records.len() as u64;
                p.records.push(Record {
                    partition,
                    offset,
                    timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
                Ok(offset)
            })?;
            out.push(ProducedOffset {
                partition,
                offset: (acks != Acks::None).then_some(offset),
                timestamp_ms,
            });
        }
        Ok(out)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<FetchedBatch, BrokerError> {
        self.with_partition(topic, partition, |p| {
            let high_watermark = p.log_start + p.records.len() as u64;
            if offset < p.log_start {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    requested: offset,
                    log_start_offset: p.log_start,
                    high_watermark,
                });
            }
            let mut records = Vec::new();
            let mut size = 0;
            for r in p.records.iter().filter(|r| r.offset >= offset) {
                size += r.value.as_ref().map_or(0, |v| v.len());
                if !records.is_empty() && size > max_bytes {
                    break;
                }
                records.push(r.clone());
            }
            Ok(FetchedBatch {
                records,
                high_watermark,
                log_start_offset: p.log_start,
            })
        })
    }
}

impl Cluster for MemoryCluster {
    fn name(&self) -> &str {
        "memory"
    }

    fn create_topic<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
        partitions: u32,
    ) -> BoxFuture<'f, Result<TopicMetadata, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.create(topic, partitions) })
    }

    fn delete_topic<'s, 't, 'f>(&'s self, topic: &'t str) -> BoxFuture<'f, Result<(), BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.check()?;
            match self.topics.lock().expect("lock").remove(topic) {
                Some(_) => Ok(()),
                None => Err(BrokerError::UnknownTopic(topic.to_owned())),
            }
        })
    }

    fn list_topics<'s, 'f>(&'s self) -> BoxFuture<'f, Result<Vec<TopicMetadata>, BrokerError>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.check()?;
            let topics = self.topics.lock().expect("lock");
            Ok(topics
                .iter()
                .map(|(name, parts)| TopicMetadata {
                    name: name.clone(),
                    partitions: parts.len() as u32,
                })
                .collect())
        })
    }

    fn describe_topic<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
    ) -> BoxFuture<'f, Result<TopicMetadata, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.describe(topic) })
    }

    fn produce<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
        records: Vec<ProduceRecord>,
        acks: Acks,
    ) -> BoxFuture<'f, Result<Vec<ProducedOffset>, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.append(topic, records, acks) })
    }

    fn fetch<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'f, Result<FetchedBatch, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.read(topic, partition, offset, max_bytes) })
    }

    fn offsets<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
        partition: u32,
    ) -> BoxFuture<'f, Result<PartitionOffsets, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.with_partition(topic, partition, |p| {
                Ok(PartitionOffsets {
                    earliest: p.log_start,
                    latest: p.log_start + p.records.len() as u64,
                })
            })
        })
    }

    fn offset_for_timestamp<'s, 't, 'f>(
        &'s self,
        topic: &'t str,
        partition: u32,
        timestamp_ms: i64,
    ) -> BoxFuture<'f, Result<Option<u64>, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.with_partition(topic, partition, |p| {
                Ok(p.records
                    .iter()
                    .find(|r| r.timestamp_ms >= timestamp_ms)
                    .map(|r| r.offset))
            })
        })
    }

    fn commit_offsets<'s, 'g, 't, 'o, 'f>(
        &'s self,
        _group: &'g str,
        _topic: &'t str,
        _offsets: &'o [(u32, u64)],
    ) -> BoxFuture<'f, Result<(), BrokerError>>
    where
        's: 'f,
        'g: 'f,
        't: 'f,
        'o: 'f,
        Self: 'f,
    {
        // The REST routes under test never commit.
        Box::pin(async move { self.check() })
    }

    fn committed_offsets<'s, 'g, 't, 'f>(
        &'s self,
        _group: &'g str,
        _topic: &'t str,
    ) -> BoxFuture<'f, Result<Vec<(u32, u64)>, BrokerError>>
    where
        's: 'f,
        'g: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.check().map(|()| Vec::new()) })
    }

    fn topic_size_bytes<'s, 't, 'f>(
        &'s self,
        _topic: &'t str,
    ) -> BoxFuture<'f, Result<u64, BrokerError>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.check().map(|()| 0) })
    }

    fn health<'s, 'f>(&'s self) -> BoxFuture<'f, Health>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move { Health::Up })
    }
}
