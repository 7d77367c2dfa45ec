//! Reads: a bounded pool of readers serving `fetch`, and a pool of probes
//! that find where a partition's log ends.
//!
//! A reader is a librdkafka consumer with one partition assigned at an
//! explicit offset: no group membership, nothing committed. After a fetch
//! it goes back to the pool still assigned, prefetching; the next fetch of
//! that partition at the offset it stopped at reuses it (a tailing reader
//! costs no round trip), any other fetch takes a fresh or idle reader and
//! assigns it. Readers idle for [`READER_IDLE_TIMEOUT`] are closed.
//!
//! Where a log ends: ListOffsets(LATEST) is the high watermark on Kafka,
//! but not on every Kafka-protocol broker (tansu answers the first offset
//! of the last batch + 1). A probe therefore fetches from the listed end
//! to the partition's EOF, which librdkafka reports when a fetch response
//! says the fetch position is the high watermark; the end is the larger of
//! the two. On Kafka the probe's fetch is empty and costs one round trip
//! (probes ask the broker not to hold the fetch).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_config::KafkaConfig;

use super::config::{self, Context, Role};
use super::errors::{self, unavailable};
use super::metadata::MetaClient;
use super::{blocking, dispose, lock, Deadline};
use crate::cluster::PartitionOffsets;
use crate::embedded::MAX_FETCH_BYTES;
use crate::error::BrokerError;
use crate::record::{FetchedBatch, Header, Record};

/// Readers a cluster keeps at most (each is a librdkafka consumer with its
/// own connection and threads).
pub const DEFAULT_MAX_READERS: usize = 32;
/// End probes a cluster keeps at most.
pub const DEFAULT_MAX_PROBES: usize = 4;
/// A reader unused this long is closed.
pub const READER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause while every reader is busy.
const BUSY_BACKOFF: Duration = Duration::from_millis(2);

/// A librdkafka consumer of the pool; dropping it frees its slot.
struct Slot {
    consumer: BaseConsumer<Context>,
    live: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where an assigned reader stands.
#[derive(Debug)]
struct Position {
    topic: String,
    partition: u32,
    /// Offset after the last record polled.
    next: u64,
    /// A record polled but not handed out (it did not fit the last fetch).
    pending: Option<Record>,
    /// EOF was reported at `next` and nothing arrived since.
    at_end: bool,
    /// The highest end of the log known (EOF, probe, records seen).
    high_watermark: u64,
    /// The log start when the reader was assigned.
    log_start: u64,
}

impl Position {
    /// The offset the next fetch must ask for to reuse this reader.
    fn resume_offset(&self) -> u64 {
        self.pending.as_ref().map_or(self.next, |r| r.offset)
    }
}

struct Reader {
    slot: Slot,
    at: Option<Position>,
    last_used: Instant,
}

/// What a blocking read says besides records.
enum ReadError {
    /// The offset is no longer (or not yet) in the log: look again.
    Reassess,
    /// A final error.
    Broker(BrokerError),
}

/// The readers of one cluster.
pub struct ReaderPool {
    cluster: Arc<str>,
    config: KafkaConfig,
    idle: Mutex<Vec<Reader>>,
    live: Arc<AtomicUsize>,
    max: usize,
}

enum Checkout {
    /// Assigned where the fetch starts.
    Warm(Reader),
    /// To be (re)assigned; `None`: create a consumer.
    Cold(Option<Reader>),
}

impl ReaderPool {
    /// An empty pool of at most `max` readers.
    pub fn new(cluster: &Arc<str>, config: &KafkaConfig, max: usize) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            config: config.clone(),
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// Readers open now (idle and busy).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Reads from `offset` on, up to about `max_bytes` (at least one record
    /// when any is available). What is available now: a reader at the end
    /// of the log answers at once.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        meta: &MetaClient,
        probes: &ProbePool,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        deadline: Deadline,
    ) -> Result<FetchedBatch, BrokerError> {
        let budget = max_bytes.min(MAX_FETCH_BYTES);
        let mut reassessed = false;
        loop {
            let checkout = self.checkout(topic, partition, offset, deadline).await?;
            let reader = match checkout {
                Checkout::Warm(reader) => reader,
                Checkout::Cold(reader) => {
                    let ends = match end_offsets(meta, probes, topic, partition, deadline).await {
                        Ok(ends) => ends,
                        Err(e) => {
                            self.checkin(reader);
                            return Err(e);
                        }
                    };
                    if offset < ends.earliest {
                        self.checkin(reader);
                        return Err(BrokerError::OffsetOutOfRange {
                            topic: topic.to_owned(),
                            partition,
                            requested: offset,
                            log_start_offset: ends.earliest,
                            high_watermark: ends.latest,
                        });
                    }
                    if offset > ends.latest {
                        // Past the end: nothing to read, and Kafka would
                        // refuse the fetch; keep no reader there.
                        self.checkin(reader);
                        return Ok(FetchedBatch {
                            records: Vec::new(),
                            high_watermark: ends.latest,
                            log_start_offset: ends.earliest,
                        });
                    }
                    let position = Position {
                        topic: topic.to_owned(),
                        partition,
                        next: offset,
                        pending: None,
                        // The probe just saw the end here: answer at once,
                        // and stay to tail what comes next.
                        at_end: offset == ends.latest,
                        high_watermark: ends.latest,
                        log_start: ends.earliest,
                    };
                    self.assign(reader, position, deadline).await?
                }
            };
            let outcome = self.read(reader, offset, budget, deadline).await?;
            match outcome {
                Ok(batch) => return Ok(batch),
                Err(ReadError::Reassess) if !reassessed => {
                    reassessed = true;
                    continue;
                }
                Err(ReadError::Reassess) => {
                    return Err(unavailable(
                        &self.cluster,
                        "fetching",
                        "the partition's offsets kept moving under the read",
                    ))
                }
                Err(ReadError::Broker(e)) => return Err(e),
            }
        }
    }

    /// Takes the reader assigned where the fetch starts, else a fresh or
    /// idle one to assign; waits (bounded) while every reader is busy.
    async fn checkout(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        deadline: Deadline,
    ) -> Result<Checkout, BrokerError> {
        loop {
            {
                let mut idle = lock(&self.idle);
                let warm = idle.iter().position(|r| {
                    r.at.as_ref().is_some_and(|p| {
                        p.topic == topic && p.partition == partition && p.resume_offset() == offset
                    })
                });
                if let Some(i) = warm {
                    return Ok(Checkout::Warm(idle.swap_remove(i)));
                }
                let live = self.live.load(Ordering::Acquire);
                if live < self.max
                    && self
                        .live
                        .compare_exchange(live, live + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    return Ok(Checkout::Cold(None));
                }
                let oldest = idle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| r.last_used)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    return Ok(Checkout::Cold(Some(idle.swap_remove(i))));
                }
            }
            if deadline.remaining() <= BUSY_BACKOFF {
                return Err(unavailable(
                    &self.cluster,
                    "fetching",
                    format!(
                        "all {} readers stayed busy for the request timeout",
                        self.max
                    ),
                ));
            }
            tokio::time::sleep(BUSY_BACKOFF).await;
        }
    }

    /// Returns a reader to the pool (or a reserved slot, when `None`), and
    /// closes readers idle too long.
    fn checkin(&self, reader: Option<Reader>) {
        match reader {
            Some(mut reader) => {
                reader.last_used = Instant::now();
                lock(&self.idle).push(reader);
            }
            // A slot reserved for a consumer that was never created.
            None => {
                self.live.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.evict_idle(READER_IDLE_TIMEOUT);
    }

    /// Closes readers unused for `idle_for`, off the async workers.
    pub fn evict_idle(&self, idle_for: Duration) {
        let now = Instant::now();
        let stale: Vec<Reader> = {
            let mut idle = lock(&self.idle);
            let (stale, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|r| now.saturating_duration_since(r.last_used) >= idle_for);
            *idle = keep;
            stale
        };
        if !stale.is_empty() {
            dispose(stale);
        }
    }

    /// Closes the idle readers of a topic (deleted: their partitions are gone).
    pub fn forget_topic(&self, topic: &str) {
        let gone: Vec<Reader> = {
            let mut idle = lock(&self.idle);
            let (gone, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|r| r.at.as_ref().is_some_and(|p| p.topic == topic));
            *idle = keep;
            gone
        };
        if !gone.is_empty() {
            dispose(gone);
        }
    }

    /// Creates the consumer if needed and assigns it at the position.
    async fn assign(
        &self,
        reader: Option<Reader>,
        position: Position,
        deadline: Deadline,
    ) -> Result<Reader, BrokerError> {
        let cluster = Arc::clone(&self.cluster);
        let config = self.config.clone();
        let live = Arc::clone(&self.live);
        blocking(&self.cluster, "assigning a reader", deadline, move || {
            let mut reader = match reader {
                Some(reader) => reader,
                None => {
                    let consumer = match create_consumer(&cluster, &config, &Role::Reader) {
                        Ok(consumer) => consumer,
                        Err(e) => {
                            live.fetch_sub(1, Ordering::AcqRel);
                            return Err(e);
                        }
                    };
                    Reader {
                        slot: Slot { consumer, live },
                        at: None,
                        last_used: Instant::now(),
                    }
                }
            };
            reader.at = None;
            assign_at(
                &cluster,
                &reader.slot.consumer,
                &position.topic,
                position.partition,
                position.next,
            )?;
            reader.at = Some(position);
            Ok(reader)
        })
        .await
    }

    /// Polls the reader for the fetch; puts it back in the pool unless it
    /// failed.
    async fn read(
        &self,
        mut reader: Reader,
        offset: u64,
        budget: usize,
        deadline: Deadline,
    ) -> Result<Result<FetchedBatch, ReadError>, BrokerError> {
        let cluster = Arc::clone(&self.cluster);
        let (reader, outcome) = blocking(&self.cluster, "fetching", deadline, move || {
            let outcome = read_blocking(&cluster, &mut reader, offset, budget, deadline);
            Ok((reader, outcome))
        })
        .await?;
        if outcome.is_ok() {
            self.checkin(Some(reader));
        } else {
            // Its position is unknown now: close it rather than guess.
            dispose(reader);
        }
        Ok(outcome)
    }
}

/// Earliest and latest offsets of a partition: ListOffsets, with the end
/// confirmed by a probe's fetch.
pub async fn end_offsets(
    meta: &MetaClient,
    probes: &ProbePool,
    topic: &str,
    partition: u32,
    deadline: Deadline,
) -> Result<PartitionOffsets, BrokerError> {
    let (earliest, listed) = meta.watermarks(topic, partition, deadline).await?;
    let start = listed.max(earliest);
    let end = probes.find_end(topic, partition, start, deadline).await?;
    Ok(PartitionOffsets {
        earliest,
        latest: end.max(listed),
    })
}

fn create_consumer(
    cluster: &Arc<str>,
    config: &KafkaConfig,
    role: &Role,
) -> Result<BaseConsumer<Context>, BrokerError> {
    config::client_config(cluster, config, role)
        .create_with_context(Context::new(cluster, role))
        .map_err(|e| unavailable(cluster, "creating a consumer", e))
}

/// Drops leftover events (of an earlier assignment), then assigns one
/// partition at an explicit offset.
fn assign_at(
    cluster: &str,
    consumer: &BaseConsumer<Context>,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<(), BrokerError> {
    consumer
        .unassign()
        .map_err(|e| unavailable(cluster, "unassigning a consumer", e))?;
    while consumer.poll(Duration::ZERO).is_some() {}
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
        .map_err(|e| unavailable(cluster, "assigning a consumer", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| unavailable(cluster, "assigning a consumer", e))
}

fn read_blocking(
    cluster: &str,
    reader: &mut Reader,
    offset: u64,
    budget: usize,
    deadline: Deadline,
) -> Result<FetchedBatch, ReadError> {
    let consumer = &reader.slot.consumer;
    let Some(at) = reader.at.as_mut() else {
        return Err(ReadError::Reassess);
    };
    let mut records = Vec::new();
    let mut used = 0usize;
    if let Some(record) = at.pending.take() {
        used += record_bytes(&record);
        records.push(record);
    }
    while records.is_empty() || used < budget {
        // Wait for the first record (or the end); after that, take only
        // what has arrived.
        let wait = if records.is_empty() && !at.at_end {
            deadline.remaining()
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            None if records.is_empty() && !at.at_end => {
                return Err(ReadError::Broker(unavailable(
                    cluster,
                    "fetching",
                    "no fetch answer within the request timeout",
                )));
            }
            None => break,
            Some(Ok(message)) => {
                let Some(record) = to_record(&message, at.partition) else {
                    continue;
                };
                if record.offset < at.next {
                    continue; // from before the assignment
                }
                at.next = record.offset + 1;
                at.at_end = false;
                at.high_watermark = at.high_watermark.max(at.next);
                let size = record_bytes(&record);
                if !records.is_empty() && used + size > budget {
                    at.pending = Some(record);
                    break;
                }
                used += size;
                records.push(record);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                at.at_end = true;
                at.high_watermark = at.high_watermark.max(at.next);
                if records.is_empty() {
                    break;
                }
            }
            Some(Err(e)) => match errors::code(&e) {
                Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
                    return Err(ReadError::Reassess)
                }
                Some(code) if errors::is_unknown_topic(code) => {
                    return Err(ReadError::Broker(BrokerError::UnknownTopic(
                        at.topic.clone(),
                    )))
                }
                _ if errors::is_cluster_down(&e) => {
                    return Err(ReadError::Broker(unavailable(cluster, "fetching", e)))
                }
                // librdkafka retries a dropped connection by itself.
                _ => tracing::debug!(cluster, error = %e, "consumer error while fetching"),
            },
        }
    }
    if let Some(first) = records.first() {
        if first.offset < offset {
            // A record before the requested offset can only come from a
            // reader that was not where it claimed to be.
            return Err(ReadError::Reassess);
        }
    }
    Ok(FetchedBatch {
        records,
        high_watermark: at.high_watermark.max(at.next),
        log_start_offset: at.log_start,
    })
}

/// Bytes a record counts against a fetch's `max_bytes`: key, value and
/// headers.
fn record_bytes(record: &Record) -> usize {
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

fn to_record(message: &BorrowedMessage<'_>, partition: u32) -> Option<Record> {
    let offset = u64::try_from(message.offset()).ok()?;
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    name: h.key.to_owned().into(),
                    value: h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Record {
        partition,
        offset,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(Bytes::copy_from_slice),
        value: message.payload().map(Bytes::copy_from_slice),
        headers,
    })
}

/// Consumers that find where a partition's log ends; assigned only while
/// they look.
pub struct ProbePool {
    cluster: Arc<str>,
    config: KafkaConfig,
    idle: Mutex<Vec<Slot>>,
    live: Arc<AtomicUsize>,
    max: usize,
}

impl ProbePool {
    /// An empty pool of at most `max` probes.
    pub fn new(cluster: &Arc<str>, config: &KafkaConfig, max: usize) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            config: config.clone(),
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// The offset after the last record of the partition, fetching from
    /// `start` (which must not be past the end) to EOF.
    pub async fn find_end(
        &self,
        topic: &str,
        partition: u32,
        start: u64,
        deadline: Deadline,
    ) -> Result<u64, BrokerError> {
        let slot = loop {
            if let Some(slot) = lock(&self.idle).pop() {
                break Some(slot);
            }
            let live = self.live.load(Ordering::Acquire);
            if live < self.max
                && self
                    .live
                    .compare_exchange(live, live + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break None;
            }
            if deadline.remaining() <= BUSY_BACKOFF {
                return Err(unavailable(
                    &self.cluster,
                    "finding the end of a partition",
                    format!(
                        "all {} probes stayed busy for the request timeout",
                        self.max
                    ),
                ));
            }
            tokio::time::sleep(BUSY_BACKOFF).await;
        };
        let cluster = Arc::clone(&self.cluster);
        let config = self.config.clone();
        let live = Arc::clone(&self.live);
        let name = topic.to_owned();
        let what = "finding the end of a partition";
        let (slot, end) = blocking(&self.cluster, what, deadline, move || {
            let slot = match slot {
                Some(slot) => slot,
                None => match create_consumer(&cluster, &config, &Role::Probe) {
                    Ok(consumer) => Slot { consumer, live },
                    Err(e) => {
                        live.fetch_sub(1, Ordering::AcqRel);
                        return Err(e);
                    }
                },
            };
            let end = probe_blocking(&cluster, &slot.consumer, &name, partition, start, deadline);
            let _ = slot.consumer.unassign();
            Ok((slot, end))
        })
        .await?;
        match end {
            Ok(end) => {
                lock(&self.idle).push(slot);
                Ok(end)
            }
            Err(e) => {
                dispose(slot);
                Err(e)
            }
        }
    }
}

fn probe_blocking(
    cluster: &str,
    consumer: &BaseConsumer<Context>,
    topic: &str,
    partition: u32,
    start: u64,
    deadline: Deadline,
) -> Result<u64, BrokerError> {
    let what = "finding the end of a partition";
    assign_at(cluster, consumer, topic, partition, start)?;
    let mut end = start;
    loop {
        match consumer.poll(deadline.remaining()) {
            None => {
                return Err(unavailable(
                    cluster,
                    what,
                    "no fetch answer within the request timeout",
                ))
            }
            Some(Ok(message)) => {
                if let Ok(offset) = u64::try_from(message.offset()) {
                    end = end.max(offset + 1);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(end),
            Some(Err(e)) => match errors::code(&e) {
                Some(code) if errors::is_unknown_topic(code) => {
                    return Err(BrokerError::UnknownTopic(topic.to_owned()))
                }
                Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
                    return Err(unavailable(cluster, what, e))
                }
                _ if errors::is_cluster_down(&e) => return Err(unavailable(cluster, what, e)),
                _ => tracing::debug!(cluster, error = %e, "consumer error while probing"),
            },
        }
    }
}

/// Closes every reader and probe now (shutdown), off the async workers.
pub fn close_all(readers: &ReaderPool, probes: &ProbePool) {
    let idle: Vec<Reader> = std::mem::take(&mut *lock(&readers.idle));
    let slots: Vec<Slot> = std::mem::take(&mut *lock(&probes.idle));
    dispose((idle, slots));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bytes_counts_key_value_and_headers() {
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(b"value")),
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from_static(b"xy"),
            }],
        };
        assert_eq!(record_bytes(&record), 3 + 5 + 1 + 2);
    }

    #[test]
    fn resume_offset_is_the_pending_record() {
        let mut p = Position {
            topic: "t".into(),
            partition: 0,
            next: 10,
            pending: None,
            at_end: false,
            high_watermark: 10,
            log_start: 0,
        };
        assert_eq!(p.resume_offset(), 10);
        p.pending = Some(Record {
            partition: 0,
            offset: 9,
            timestamp_ms: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        });
        assert_eq!(p.resume_offset(), 9);
    }
}
