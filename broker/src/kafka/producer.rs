//! The produce path: partition choice, validation before anything is sent,
//! one idempotent producer per cluster, delivery reports awaited per acks.
//!
//! Delivery reports are counted into the request they belong to (one
//! shared count per produce call, not one future per record): the
//! producer's polling thread records each report and wakes the caller once,
//! when the last one is in.
//!
//! Partitions are chosen here, not by librdkafka, so the answer is known
//! before delivery (acks=0 reports it too) and matches the embedded
//! backend: explicit partition, else murmur2 of the key (Java's and
//! librdkafka's `murmur2_random`), else one partition per call, rotating.
//!
//! A call whose records carry no headers or timestamps of their own goes
//! to librdkafka one partition's run per call (the `batch` module); any
//! other goes one record per call.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Timestamp};
use sluice_config::KafkaConfig;
use tokio::sync::Notify;

use super::batch::{self, TopicHandle, TopicHandles, Unstamped};
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
    producer: RwLock<Option<Arc<KafkaProducer>>>,
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
    /// The client gave the timestamp (else it is the time of the call).
    stamped: bool,
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

    fn current(&self) -> Result<Arc<KafkaProducer>, BrokerError> {
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
    fn renew_if_broken(&self, seen: &Arc<KafkaProducer>, stalled: bool) {
        let (code, reason) = match seen.client.client().fatal_error() {
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
    /// Records are handed to librdkafka on the caller's task, with no await
    /// in between, so a caller that stops waiting cannot stop the sending
    /// halfway. Only when librdkafka's queue is full (which needs waiting)
    /// does the rest go to a task of its own, for the same reason.
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
        let request = Request::new(placed.len());
        let mode = Mode::choose(&producer, topic, &placed);
        let sending = Sending {
            cluster: Arc::clone(&self.cluster),
            producer: Arc::clone(&producer),
            topic: topic.to_owned(),
            placed,
            mode,
            acks,
            limit: self.message_max_bytes,
            deadline,
            request,
        };
        let result = match sending.send_from(0) {
            Err(e) => Err(e),
            Ok(None) => sending.finish().await,
            Ok(Some(stopped_at)) => {
                match tokio::spawn(async move { sending.send_rest(stopped_at).await }).await {
                    Ok(result) => result,
                    Err(e) => Err(BrokerError::Io(std::io::Error::other(format!(
                        "produce task failed: {e}"
                    )))),
                }
            }
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
                stamped: record.timestamp_ms.is_some(),
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
                .client
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

/// The producer of a cluster, with the topic handles of its batch path.
struct KafkaProducer {
    /// Declared before the client so that it is dropped first: librdkafka
    /// wants topic handles destroyed before their client.
    topics: TopicHandles,
    client: ThreadedProducer<ProduceContext>,
}

fn create(cluster: &Arc<str>, config: &KafkaConfig) -> Result<KafkaProducer, BrokerError> {
    let client: ThreadedProducer<ProduceContext> =
        config::client_config(cluster, config, &Role::Producer)
            .create_with_context(ProduceContext(Context::new(cluster, &Role::Producer)))
            .map_err(|e| unavailable(cluster, "creating the producer", e))?;
    let topics = TopicHandles::new(client.client().native_ptr()).ok_or_else(|| {
        unavailable(
            cluster,
            "creating the producer",
            "librdkafka returned no client",
        )
    })?;
    Ok(KafkaProducer { topics, client })
}

/// The producer's context: logs and errors as every client's, and each
/// delivery report counted into its request.
pub struct ProduceContext(Context);

impl ClientContext for ProduceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = Arc<Request>;

    fn delivery(&self, result: &DeliveryResult<'_>, request: Arc<Request>) {
        request.report(result);
    }
}

/// The delivery reports of one produce call.
pub struct Request {
    state: Mutex<Reports>,
    done: Notify,
}

#[derive(Default)]
struct Reports {
    /// Reports still to come.
    remaining: usize,
    /// (partition, offset, timestamp) of each delivered record, in the
    /// order the reports came.
    delivered: Vec<(i32, i64, Timestamp)>,
    /// The first failure, with its record's partition.
    failed: Option<(i32, KafkaError)>,
}

impl Request {
    fn new(records: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Reports {
                remaining: records,
                delivered: Vec::with_capacity(records),
                failed: None,
            }),
            done: Notify::new(),
        })
    }

    fn report(&self, result: &DeliveryResult<'_>) {
        let mut reports = super::lock(&self.state);
        match result {
            Ok(message) => {
                reports.delivered.push((
                    message.partition(),
                    message.offset(),
                    message.timestamp(),
                ));
            }
            Err((error, message)) => {
                if reports.failed.is_none() {
                    reports.failed = Some((message.partition(), error.clone()));
                }
            }
        }
        reports.remaining = reports.remaining.saturating_sub(1);
        if reports.remaining == 0 {
            drop(reports);
            // Stored as a permit when the caller is not waiting yet.
            self.done.notify_one();
        }
    }

    fn take(&self) -> Reports {
        std::mem::take(&mut *super::lock(&self.state))
    }
}

/// How a produce call's records go to librdkafka.
enum Mode {
    /// One `rd_kafka_producev` call per record, in call order: records
    /// with headers or timestamps of their own, which the batch call
    /// cannot carry.
    EachRecord,
    /// One `rd_kafka_produce_batch` call per partition: `order` is the
    /// records' indices grouped by partition, in call order within each.
    Runs {
        topic: TopicHandle,
        order: Vec<usize>,
    },
}

impl Mode {
    fn choose(producer: &KafkaProducer, topic: &str, placed: &[Placed]) -> Self {
        if !placed.iter().all(|r| r.headers.is_empty() && !r.stamped) {
            return Self::EachRecord;
        }
        let Some(topic) = producer.topics.get(topic) else {
            return Self::EachRecord;
        };
        let mut order: Vec<usize> = (0..placed.len()).collect();
        order.sort_by_key(|&i| placed[i].partition); // stable: call order kept
        Self::Runs { topic, order }
    }
}

/// One produce call's records on their way to librdkafka.
struct Sending {
    cluster: Arc<str>,
    producer: Arc<KafkaProducer>,
    topic: String,
    placed: Vec<Placed>,
    mode: Mode,
    acks: Acks,
    limit: usize,
    deadline: Deadline,
    request: Arc<Request>,
}

impl Sending {
    /// Hands the records from position `first` on to librdkafka, without
    /// waiting; returns where its queue was full, if it was.
    fn send_from(&self, first: usize) -> Result<Option<usize>, BrokerError> {
        match &self.mode {
            Mode::EachRecord => self.send_each_from(first),
            Mode::Runs { topic, order } => self.send_runs_from(*topic, order, first),
        }
    }

    /// A run of records of one partition per call, from position `first`
    /// of `order` on.
    fn send_runs_from(
        &self,
        topic: TopicHandle,
        order: &[usize],
        first: usize,
    ) -> Result<Option<usize>, BrokerError> {
        let mut start = first;
        let mut run = Vec::new();
        while let Some(&head) = order.get(start) {
            let partition = self.placed[head].partition;
            let len = order[start..]
                .iter()
                .take_while(|&&i| self.placed[i].partition == partition)
                .count();
            run.clear();
            run.extend(order[start..start + len].iter().map(|&i| Unstamped {
                key: self.placed[i].key.as_deref(),
                value: self.placed[i].value.as_deref(),
            }));
            match batch::produce(topic, partition as i32, &run, &self.request) {
                (_, None) => {}
                (taken, Some(RDKafkaErrorCode::QueueFull)) => return Ok(Some(start + taken)),
                // Records taken before this one still report into the
                // request; nobody waits for it any more.
                (taken, Some(code)) => {
                    return Err(produce_error(
                        &self.cluster,
                        &self.topic,
                        &self.placed[order[start + taken]],
                        self.limit,
                        &KafkaError::MessageProduction(code),
                    ))
                }
            }
            start += len;
        }
        Ok(None)
    }

    /// One record per call, from record `first` on.
    fn send_each_from(&self, first: usize) -> Result<Option<usize>, BrokerError> {
        for (i, record) in self.placed.iter().enumerate().skip(first) {
            let mut out: BaseRecord<'_, [u8], [u8], Arc<Request>> =
                BaseRecord::with_opaque_to(&self.topic, Arc::clone(&self.request))
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
            match self.producer.client.send(out) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Ok(Some(i));
                }
                // Records sent before this one still report into the
                // request; nobody waits for it any more.
                Err((e, _)) => {
                    return Err(produce_error(
                        &self.cluster,
                        &self.topic,
                        record,
                        self.limit,
                        &e,
                    ))
                }
            }
        }
        Ok(None)
    }

    /// Sends the records from `first` on, waiting for room in librdkafka's
    /// queue until the deadline, then finishes.
    async fn send_rest(self, mut first: usize) -> Result<Vec<ProducedOffset>, BrokerError> {
        loop {
            if self.deadline.remaining().is_zero() {
                return Err(unavailable(
                    &self.cluster,
                    "producing",
                    "the producer's queue stayed full for the whole request timeout",
                ));
            }
            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            match self.send_from(first)? {
                None => return self.finish().await,
                Some(stopped_at) => first = stopped_at,
            }
        }
    }

    /// Every record is in librdkafka's hands: with acks, waits for their
    /// reports (one wake-up when the last is in) and gives the offsets.
    async fn finish(self) -> Result<Vec<ProducedOffset>, BrokerError> {
        let Self {
            cluster,
            topic,
            placed,
            acks,
            limit,
            deadline,
            request,
            ..
        } = self;
        if placed.is_empty() {
            return Ok(Vec::new());
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
        if tokio::time::timeout_at(deadline.tokio_instant(), request.done.notified())
            .await
            .is_err()
        {
            return Err(unavailable(&cluster, "producing", STALLED));
        }
        let reports = request.take();
        if let Some((partition, error)) = reports.failed {
            let record = placed
                .iter()
                .find(|r| r.partition as i32 == partition)
                .unwrap_or(&placed[0]);
            return Err(produce_error(&cluster, &topic, record, limit, &error));
        }
        assign_offsets(&cluster, &placed, reports.delivered)
    }
}

/// Gives each record its offset. The producer is idempotent, so the
/// records of one partition are written in the order they were sent: the
/// partition's offsets, ascending, belong to its records in call order.
fn assign_offsets(
    cluster: &str,
    placed: &[Placed],
    mut delivered: Vec<(i32, i64, Timestamp)>,
) -> Result<Vec<ProducedOffset>, BrokerError> {
    delivered.sort_unstable_by_key(|&(partition, offset, _)| (partition, offset));
    let mut next = Vec::<(i32, usize)>::new(); // partition -> next index in `delivered`
    let mut produced = Vec::with_capacity(placed.len());
    for record in placed {
        let partition = record.partition as i32;
        let slot = match next.iter().position(|&(p, _)| p == partition) {
            Some(slot) => slot,
            None => {
                next.push((partition, delivered.partition_point(|d| d.0 < partition)));
                next.len() - 1
            }
        };
        let Some(&(_, offset, timestamp)) =
            delivered.get(next[slot].1).filter(|d| d.0 == partition)
        else {
            return Err(unavailable(
                cluster,
                "producing",
                format!("fewer delivery reports than records for partition {partition}"),
            ));
        };
        next[slot].1 += 1;
        produced.push(ProducedOffset {
            partition: record.partition,
            offset: Some(offset.max(0) as u64),
            timestamp_ms: match timestamp {
                Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                Timestamp::NotAvailable => record.timestamp_ms,
            },
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(partition: u32, timestamp_ms: i64) -> Placed {
        Placed {
            partition,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms,
            stamped: true,
        }
    }

    #[test]
    fn offsets_go_to_records_in_call_order_per_partition_whatever_the_report_order() {
        let records = [
            placed(1, 10),
            placed(0, 11),
            placed(1, 12),
            placed(2, 13),
            placed(1, 14),
        ];
        // Reports as a polling thread may see them: partitions interleaved,
        // not in offset order.
        let delivered = vec![
            (2, 7, Timestamp::NotAvailable),
            (1, 41, Timestamp::CreateTime(12)),
            (0, 3, Timestamp::LogAppendTime(99)),
            (1, 42, Timestamp::CreateTime(14)),
            (1, 40, Timestamp::CreateTime(10)),
        ];
        let produced =
            assign_offsets("c", &records, delivered).expect("as many reports as records");
        let got: Vec<(u32, Option<u64>, i64)> = produced
            .iter()
            .map(|p| (p.partition, p.offset, p.timestamp_ms))
            .collect();
        assert_eq!(
            got,
            [
                (1, Some(40), 10),
                (0, Some(3), 99), // the broker's append time wins
                (1, Some(41), 12),
                (2, Some(7), 13), // no timestamp reported: the record's own
                (1, Some(42), 14),
            ]
        );
    }

    #[test]
    fn a_missing_report_is_an_error_not_a_wrong_offset() {
        let records = [placed(0, 1), placed(0, 2)];
        let delivered = vec![(0, 5, Timestamp::NotAvailable)];
        let error = assign_offsets("c", &records, delivered).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("fewer delivery reports than records"),
            "{error}"
        );
    }
}
