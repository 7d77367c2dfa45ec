//! Placement shared by several gateways: a compacted Kafka topic on a
//! designated metadata cluster.
//!
//! The topic has one partition, so every gateway sees every change in the
//! same order. Each change is a record keyed by the topic it places, whose
//! value is the change as JSON; compaction keeps the last change per topic,
//! which is enough because a change carries the topic's whole placement (see
//! `placement`). `load` reads the topic to its end; `watch` tails it from
//! there on a thread of its own and hands every change to the federation,
//! which applies it idempotently (its own changes come back as duplicates).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::placement::{PlacementChange, PlacementTable};
use crate::store::{PlacementStore, Result, StoreError, Watched};

/// How long one poll of the tailing consumer waits; bounds how late a
/// dropped watcher notices it is no longer wanted.
const TAIL_POLL: Duration = Duration::from_millis(100);

/// How often the tail asks where the placement topic ends, to report
/// that it has read everything stored before the question.
const TAIL_CONFIRM: Duration = Duration::from_millis(200);

/// The placement log on a Kafka topic.
pub struct KafkaStore {
    topic: String,
    client: ClientConfig,
    producer: ThreadedProducer<DefaultProducerContext>,
    timeout: Duration,
    /// Where `load` stopped: the watcher starts there.
    loaded_to: Mutex<i64>,
}

fn kafka_error(op: &'static str, e: KafkaError) -> StoreError {
    StoreError::Io {
        op,
        path: "kafka".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl KafkaStore {
    /// Connects to the metadata cluster and creates the compacted topic if
    /// it is missing. `properties` are librdkafka settings applied after
    /// the defaults (security settings, for example).
    pub fn open(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap_servers);
        for (k, v) in properties {
            client.set(k, v);
        }
        let mut producer_config = client.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Changes are rare and each must be durable before it is used:
            // no lingering for a batch.
            .set("linger.ms", "0")
            .set("message.timeout.ms", timeout.as_millis().to_string());
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config
            .create()
            .map_err(|e| kafka_error("create a producer for", e))?;
        let store = Self {
            topic: topic.to_owned(),
            client,
            producer,
            timeout,
            loaded_to: Mutex::new(0),
        };
        store.ensure_topic()?;
        Ok(store)
    }

    fn ensure_topic(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client
            .create()
            .map_err(|e| kafka_error("create an admin client for", e))?;
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        // A runtime of its own on a thread of its own: this is called from
        // startup code that may itself run inside the gateway's runtime.
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| StoreError::Io {
                            op: "start a runtime for",
                            path: "kafka".into(),
                            source: e,
                        })?;
                    runtime
                        .block_on(admin.create_topics([&topic], &options))
                        .map_err(|e| kafka_error("create the placement topic on", e))
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(StoreError::Encode(
                        "the topic-creation thread panicked".into(),
                    ))
                })
        })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(StoreError::Io {
                        op: "create the placement topic",
                        path: name.into(),
                        source: std::io::Error::other(code.to_string()),
                    })
                }
            }
        }
        Ok(())
    }

    fn consumer(&self, from: i64) -> Result<BaseConsumer> {
        let mut config = self.client.clone();
        config
            .set("group.id", "sluice-placement-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("create a consumer for", e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, 0, Offset::Offset(from))
            .map_err(|e| kafka_error("assign", e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| kafka_error("assign", e))?;
        Ok(consumer)
    }

    fn decode(&self, payload: Option<&[u8]>, offset: i64) -> Result<Option<PlacementChange>> {
        let Some(payload) = payload else {
            // A tombstone: nothing to apply (deletes are changes of their own).
            return Ok(None);
        };
        serde_json::from_slice(payload)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: format!("kafka topic {} offset {offset}", self.topic).into(),
                line: 0,
                why: e.to_string(),
            })
    }
}

impl PlacementStore for KafkaStore {
    fn shared(&self) -> bool {
        true
    }

    fn load(&self) -> Result<PlacementTable> {
        let consumer = self.consumer(0)?;
        let mut table = PlacementTable::new();
        let deadline = Instant::now() + self.timeout;
        let mut next = 0i64;
        loop {
            if Instant::now() > deadline {
                return Err(kafka_error(
                    "read the placement topic to its end on",
                    KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            match consumer.poll(TAIL_POLL) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    if let Some(change) = self.decode(message.payload(), message.offset())? {
                        table.apply(&change).map_err(|e| StoreError::Corrupt {
                            path: format!("kafka topic {}", self.topic).into(),
                            line: message.offset() as usize,
                            why: e.to_string(),
                        })?;
                    }
                }
                // End of the partition as of the last fetch: the high
                // watermark of a fetch response, which is right even where
                // a broker's ListOffsets is not.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(kafka_error("read the placement topic on", e)),
                None => {}
            }
        }
        *self.loaded_to.lock().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(table)
    }

    fn append(&self, change: &PlacementChange) -> Result<()> {
        let value = serde_json::to_vec(change).map_err(|e| StoreError::Encode(e.to_string()))?;
        let key = change.topic().to_owned();
        self.producer
            .send(
                BaseRecord::<String, Vec<u8>>::to(&self.topic)
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| kafka_error("append to the placement topic on", e))?;
        // Durable (acks=all) before the change is used.
        self.producer
            .flush(self.timeout)
            .map_err(|e| kafka_error("append to the placement topic on", e))?;
        Ok(())
    }

    fn watch(&self, confirm: bool) -> Option<mpsc::UnboundedReceiver<Watched>> {
        let from = *self.loaded_to.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.timeout;
        let consumer = match self.consumer(from) {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::error!(error = %e, "cannot tail the placement topic; changes by other gateways will not be seen");
                return None;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let topic = self.topic.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-placement-tail".into())
            .spawn(move || {
                // The next offset to read, and when the end was last asked.
                let mut next = from;
                let mut confirmed = Instant::now();
                while !tx.is_closed() {
                    match consumer.poll(TAIL_POLL) {
                        Some(Ok(message)) => {
                            next = message.offset() + 1;
                            let Some(payload) = message.payload() else {
                                continue;
                            };
                            match serde_json::from_slice::<PlacementChange>(payload) {
                                Ok(change) => {
                                    if tx.send(Watched::Change(change)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => tracing::error!(topic, offset = message.offset(), error = %e, "undecodable placement change skipped"),
                            }
                            continue;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                        Some(Err(e)) => {
                            tracing::warn!(topic, error = %e, "tailing the placement topic");
                        }
                    }
                    // Idle: everything below the end, as asked after
                    // `asked`, has been read and reported.
                    if confirm && confirmed.elapsed() >= TAIL_CONFIRM {
                        let asked = Instant::now();
                        match consumer.fetch_watermarks(&topic, 0, timeout) {
                            Ok((_, end)) if next >= end => {
                                if tx.send(Watched::CaughtUp(asked)).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(topic, error = %e, "cannot learn where the placement topic ends"),
                        }
                        confirmed = Instant::now();
                    }
                }
            });
        match spawned {
            Ok(_) => Some(rx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the placement tail thread");
                None
            }
        }
    }
}
