//! The produce path: partition choice, validation before anything is sent,
//! one idempotent producer per cluster, delivery reports awaited per acks.
//!
//! Partitions are chosen here, not by librdkafka, so the answer is known
//! before delivery (acks=0 reports it too) and matches the embedded
//! backend: explicit partition, else murmur2 of the key (Java's and
//! librdkafka's `murmur2_random`), else one partition per call, rotating.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Timestamp;
use sluice_config::KafkaConfig;

use super::config::{self, Context, Role};
use super::errors::{self, unavailable};
use super::Deadline;
use crate::error::BrokerError;
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::record::{Acks, Header, ProduceRecord, ProducedOffset};

/// Pause before retrying a record librdkafka's full queue refused.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);
/// Bytes a record adds to its key, value and headers in a batch (lengths,
/// deltas, attributes), counted against `message.max.bytes` as librdkafka
/// does.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// Why a produce failed when librdkafka reported nothing in time.
const STALLED: &str = "no delivery report within the request timeout";

/// The producer of one cluster, renewed after a fatal error (an idempotent
/// producer that lost its sequence cannot go on) or a stall: a broker that
/// restarted without its state can leave an idempotent producer waiting
/// forever without declaring anything fatal.
pub struct ProducerHandle {
    cluster: Arc<str>,
    config: KafkaConfig,
    producer: RwLock<Option<Arc<FutureProducer<Context>>>>,
    /// When the producer was last renewed after a stall: at most one
    /// renewal per request timeout, so an outage does not churn producers.
    renewed_at: std::sync::Mutex<Option<std::time::Instant>>,
    sticky: StickyPartitioner,
    message_max_bytes: usize,
}

/// A record placed on its partition, ready to send.
struct Placed {
    partition: u32,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
    timestamp_ms: i64,
}

impl ProducerHandle {
    /// Creates the producer (no network traffic yet).
    pub fn new(cluster: &Arc<str>, config: &KafkaConfig) -> Result<Self, BrokerError> {
        Ok(Self {
            cluster: Arc::clone(cluster),
            producer: RwLock::new(Some(Arc::new(create(cluster, config)?))),
            renewed_at: std::sync::Mutex::new(None),
            config: config.clone(),
            sticky: StickyPartitioner::new(),
            message_max_bytes: config::message_max_bytes(config),
        })
    }

    fn current(&self) -> Result<Arc<FutureProducer<Context>>, BrokerError> {
        super::read(&self.producer)
            .clone()
            .ok_or_else(|| unavailable(&self.cluster, "producing", "the producer was shut down"))
    }

    /// Closes the producer (off the async workers); later produce calls
    /// fail. Records not delivered by then are dropped: flush first.
    pub fn close(&self) {
        if let Some(producer) = super::write(&self.producer).take() {
            super::dispose(producer);
        }
    }

    /// Replaces the producer if librdkafka declared it unusable, or if it
    /// stalled (and was not renewed for a stall within the request timeout).
    fn renew_if_broken(&self, seen: &Arc<FutureProducer<Context>>, stalled: bool) {
        let (code, reason) = match seen.client().fatal_error() {
            Some((code, reason)) => (Some(code), reason),
            None if stalled => {
                let mut renewed = super::lock(&self.renewed_at);
                let window = std::time::Duration::from_millis(self.config.request_timeout_ms);
                if renewed.is_some_and(|at| at.elapsed() < window) {
                    return;
                }
                *renewed = Some(std::time::Instant::now());
                (None, STALLED.to_owned())
            }
            None => return,
        };
        let mut slot = super::write(&self.producer);
        if !slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, seen))
        {
            return; // renewed by another call already, or shut down
        }
        match create(&self.cluster, &self.config) {
            Ok(fresh) => {
                tracing::warn!(cluster = %self.cluster, error = ?code, reason, "producer unusable; replaced it");
                if let Some(old) = slot.replace(Arc::new(fresh)) {
                    super::dispose(old);
                }
            }
            Err(e) => {
                tracing::error!(cluster = %self.cluster, error = %e, "cannot replace a failed producer");
            }
        }
    }

    /// Validates and places every record, then sends them all; with acks
    /// 1 or all, waits for every delivery report.
    ///
    /// The sending runs in its own task: a caller that stops waiting does
    /// not stop it halfway through the records.
    pub async fn produce(
        &self,
        topic: &str,
        partitions: u32,
        records: Vec<ProduceRecord>,
        acks: Acks,
        deadline: Deadline,
    ) -> Result<Vec<ProducedOffset>, BrokerError> {
        let placed = self.place(topic, partitions, records)?;
        let producer = self.current()?;
        let task = tokio::spawn(send_all(
            Arc::clone(&self.cluster),
            Arc::clone(&producer),
            topic.to_owned(),
            placed,
            acks,
            self.message_max_bytes,
            deadline,
        ));
        let result = match task.await {
            Ok(result) => result,
            Err(e) => Err(BrokerError::Io(std::io::Error::other(format!(
                "produce task failed: {e}"
            )))),
        };
        if let Err(e) = &result {
            let stalled =
                matches!(e, BrokerError::Unavailable { reason, .. } if reason.contains(STALLED));
            self.renew_if_broken(&producer, stalled);
        }
        result
    }

    fn place(
        &self,
        topic: &str,
        partitions: u32,
        records: Vec<ProduceRecord>,
    ) -> Result<Vec<Placed>, BrokerError> {
        let now = super::now_ms();
        let mut sticky = None;
        let mut placed = Vec::with_capacity(records.len());
        for record in records {
            let partition = match (record.partition, &record.key) {
                (Some(p), _) if p < partitions => p,
                (Some(p), _) => {
                    return Err(BrokerError::UnknownPartition {
                        topic: topic.to_owned(),
                        partition: p,
                    })
                }
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    *sticky.get_or_insert_with(|| self.sticky.next_partition(partitions))
                }
            };
            let size = record.size_bytes() + RECORD_OVERHEAD_BYTES;
            if size > self.message_max_bytes {
                return Err(BrokerError::RecordTooLarge {
                    size,
                    limit: self.message_max_bytes,
                });
            }
            placed.push(Placed {
                partition,
                key: record.key,
                value: record.value,
                headers: record.headers,
                timestamp_ms: record.timestamp_ms.unwrap_or(now),
            });
        }
        Ok(placed)
    }

    /// Waits until every record handed to librdkafka is delivered or failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BrokerError> {
        let Ok(producer) = self.current() else {
            return Ok(()); // closed: nothing left to flush
        };
        let cluster = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || {
            producer
                .flush(timeout)
                .map_err(|e| unavailable(&cluster, "flushing the producer", e))
        })
        .await
        .map_err(|e| BrokerError::Io(std::io::Error::other(format!("flush task failed: {e}"))))?
    }
}

impl Drop for ProducerHandle {
    fn drop(&mut self) {
        self.close();
    }
}

fn create(
    cluster: &Arc<str>,
    config: &KafkaConfig,
) -> Result<FutureProducer<Context>, BrokerError> {
    config::client_config(cluster, config, &Role::Producer)
        .create_with_context(Context::new(cluster, &Role::Producer))
        .map_err(|e| unavailable(cluster, "creating the producer", e))
}

async fn send_all(
    cluster: Arc<str>,
    producer: Arc<FutureProducer<Context>>,
    topic: String,
    placed: Vec<Placed>,
    acks: Acks,
    limit: usize,
    deadline: Deadline,
) -> Result<Vec<ProducedOffset>, BrokerError> {
    let mut deliveries = Vec::with_capacity(placed.len());
    for record in &placed {
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .partition(record.partition as i32)
            .timestamp(record.timestamp_ms);
        // No header list at all for records without headers: librdkafka
        // allocates one per message otherwise.
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for h in &record.headers {
                headers = headers.insert(KafkaHeader {
                    key: &h.name,
                    value: Some(&h.value[..]),
                });
            }
            out = out.headers(headers);
        }
        if let Some(key) = &record.key {
            out = out.key(&key[..]);
        }
        if let Some(value) = &record.value {
            out = out.payload(&value[..]);
        }
        loop {
            match producer.send_result(out) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if deadline.remaining().is_zero() {
                        return Err(unavailable(
                            &cluster,
                            "producing",
                            "the producer's queue stayed full for the whole request timeout",
                        ));
                    }
                    out = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(produce_error(&cluster, &topic, record, limit, &e)),
            }
        }
    }

    if acks == Acks::None {
        return Ok(placed
            .iter()
            .map(|r| ProducedOffset {
                partition: r.partition,
                offset: None,
                timestamp_ms: r.timestamp_ms,
            })
            .collect());
    }

    // Every record is in flight already: waiting for the reports in order
    // takes as long as the slowest one. One timer covers them all.
    let mut produced = Vec::with_capacity(placed.len());
    let reports = async {
        for (record, delivery) in placed.iter().zip(deliveries) {
            match delivery.await {
                Ok(Ok(delivered)) => produced.push(ProducedOffset {
                    partition: delivered.partition.max(0) as u32,
                    offset: Some(delivered.offset.max(0) as u64),
                    timestamp_ms: match delivered.timestamp {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                        Timestamp::NotAvailable => record.timestamp_ms,
                    },
                }),
                Ok(Err((e, _))) => return Err(produce_error(&cluster, &topic, record, limit, &e)),
                Err(_canceled) => {
                    return Err(unavailable(
                        &cluster,
                        "producing",
                        "the producer was shut down",
                    ))
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline.tokio_instant(), reports).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(unavailable(&cluster, "producing", STALLED)),
    }
    Ok(produced)
}

fn produce_error(
    cluster: &str,
    topic: &str,
    record: &Placed,
    limit: usize,
    error: &KafkaError,
) -> BrokerError {
    match errors::code(error) {
        Some(RDKafkaErrorCode::UnknownPartition) => BrokerError::UnknownPartition {
            topic: topic.to_owned(),
            partition: record.partition,
        },
        Some(code) if errors::is_unknown_topic(code) => BrokerError::UnknownTopic(topic.to_owned()),
        Some(code) if errors::is_too_large(code) => BrokerError::RecordTooLarge {
            size: record.key.as_ref().map_or(0, Bytes::len)
                + record.value.as_ref().map_or(0, Bytes::len)
                + record
                    .headers
                    .iter()
                    .map(|h| h.name.len() + h.value.len())
                    .sum::<usize>(),
            limit,
        },
        _ => unavailable(cluster, "producing", error),
    }
}
