//! Conformance of the broker backends: one set of checks, written against
//! `Arc<dyn Cluster>`, run against the embedded backend (in a temporary
//! directory) and against the Kafka backend (a tansu broker started by
//! `sluice-testbed` on loopback). The gateway relies on exactly what is
//! checked here, so both backends must pass the same checks.
//!
//! tansu is a Kafka-protocol broker, not Kafka. Where it answers
//! differently from Kafka, the check says so and accepts tansu's answer as
//! well; the product stays Kafka-correct (see `docs/kafka.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_broker::embedded::EmbeddedCluster;
use sluice_broker::kafka::KafkaCluster;
use sluice_broker::partitioner::partition_for_key;
use sluice_broker::{
    Acks, BrokerError, Cluster, FetchedBatch, Header, Health, PartitionOffsets, ProduceRecord,
    Record,
};
use sluice_config::{EmbeddedConfig, KafkaConfig};
use sluice_testbed::KafkaTestbed;

/// Request timeout of the Kafka clusters under test: long enough for a
/// loaded CI machine, short enough that the down-cluster checks are quick.
const KAFKA_REQUEST_TIMEOUT_MS: u64 = 3_000;

enum Kind {
    Embedded {
        cluster: Arc<EmbeddedCluster>,
        _dir: tempfile::TempDir,
    },
    Kafka {
        cluster: Arc<KafkaCluster>,
        testbed: KafkaTestbed,
    },
}

struct Backend {
    cluster: Arc<dyn Cluster>,
    kind: Kind,
}

impl Backend {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let cluster = tokio::task::spawn_blocking(move || {
            EmbeddedCluster::open("embedded-test", &path, &EmbeddedConfig::default())
        })
        .await
        .expect("open task")
        .expect("embedded cluster opens");
        Self {
            cluster: cluster.clone(),
            kind: Kind::Embedded { cluster, _dir: dir },
        }
    }

    async fn kafka() -> Self {
        let testbed = KafkaTestbed::start(1).await.expect("tansu test bed starts");
        let config = KafkaConfig {
            bootstrap_servers: testbed.bootstrap(0),
            request_timeout_ms: KAFKA_REQUEST_TIMEOUT_MS,
            properties: BTreeMap::new(),
        };
        let cluster = KafkaCluster::connect("kafka-test", &config).expect("kafka cluster");
        Self {
            cluster: cluster.clone(),
            kind: Kind::Kafka { cluster, testbed },
        }
    }

    /// Whether the cluster is a tansu broker (where it differs from Kafka).
    fn is_tansu(&self) -> bool {
        matches!(self.kind, Kind::Kafka { .. })
    }

    /// Makes the cluster unreachable: the embedded fault switch, or SIGKILL
    /// to the broker.
    fn take_down(&self) {
        match &self.kind {
            Kind::Embedded { cluster, .. } => cluster.set_available(false),
            Kind::Kafka { testbed, .. } => testbed.kill(0).expect("kill the broker"),
        }
    }

    /// The longest a call to a down cluster may take before it fails.
    fn failure_bound(&self) -> Duration {
        match self.kind {
            Kind::Embedded { .. } => Duration::from_millis(500),
            // The request timeout, plus room for a loaded machine.
            Kind::Kafka { .. } => Duration::from_millis(KAFKA_REQUEST_TIMEOUT_MS + 1_500),
        }
    }
}

fn record(key: Option<&str>, value: &str) -> ProduceRecord {
    ProduceRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..ProduceRecord::default()
    }
}

fn header(name: &str, value: &[u8]) -> Header {
    Header {
        name: name.to_owned().into(),
        value: Bytes::copy_from_slice(value),
    }
}

/// Reads a partition from `from` to its current end, fetch after fetch.
async fn read_to_end(cluster: &dyn Cluster, topic: &str, partition: u32, from: u64) -> Vec<Record> {
    let end = cluster
        .offsets(topic, partition)
        .await
        .expect("offsets")
        .latest;
    let mut records = Vec::new();
    let mut offset = from;
    let deadline = Instant::now() + Duration::from_secs(20);
    while offset < end {
        assert!(
            Instant::now() < deadline,
            "reading {topic}/{partition} from {from} to {end} stalled at {offset}"
        );
        let batch = cluster
            .fetch(topic, partition, offset, 1024 * 1024)
            .await
            .expect("fetch");
        if let Some(last) = batch.records.last() {
            offset = last.offset + 1;
        }
        records.extend(batch.records);
    }
    records
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, BrokerError>, what: &str) {
    match result {
        Err(BrokerError::Unavailable { .. }) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The checks.

async fn health_is_up(b: &Backend) {
    assert_eq!(b.cluster.health().await, Health::Up);
}

async fn topic_lifecycle(b: &Backend) {
    let c = &*b.cluster;
    let created = c.create_topic("orders", 3).await.expect("create");
    assert_eq!(created.name, "orders");
    assert_eq!(created.partitions, 3);
    c.create_topic("audit.log-1", 1).await.expect("create");

    assert!(matches!(
        c.create_topic("orders", 3).await,
        Err(BrokerError::TopicExists(t)) if t == "orders"
    ));
    let described = c.describe_topic("orders").await.expect("describe");
    assert_eq!(described.partitions, 3);

    let listed: Vec<(String, u32)> = c
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(
        listed,
        vec![("audit.log-1".to_owned(), 1), ("orders".to_owned(), 3)],
        "sorted by name, internal topics hidden"
    );

    c.delete_topic("orders").await.expect("delete");
    assert!(matches!(
        c.describe_topic("orders").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.delete_topic("orders").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    let names: Vec<String> = c
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["audit.log-1".to_owned()]);

    // The name can be used again, with a new shape.
    let again = c.create_topic("orders", 2).await.expect("create again");
    assert_eq!(again.partitions, 2);
    assert_eq!(
        c.describe_topic("orders")
            .await
            .expect("describe")
            .partitions,
        2
    );
}

async fn topic_names_and_partition_counts_are_validated(b: &Backend) {
    let c = &*b.cluster;
    for bad in ["", "has space", "slash/no", "ümlaut", &"x".repeat(250)] {
        assert!(
            matches!(
                c.create_topic(bad, 1).await,
                Err(BrokerError::InvalidTopicName(_))
            ),
            "create {bad:?}"
        );
        assert!(
            matches!(
                c.describe_topic(bad).await,
                Err(BrokerError::InvalidTopicName(_))
            ),
            "describe {bad:?}"
        );
        assert!(
            matches!(
                c.produce(bad, vec![record(None, "v")], Acks::All).await,
                Err(BrokerError::InvalidTopicName(_))
            ),
            "produce {bad:?}"
        );
    }
    assert!(matches!(
        c.create_topic("zero", 0).await,
        Err(BrokerError::InvalidPartitionCount(0))
    ));
    assert!(matches!(
        c.create_topic("too-many", 10_001).await,
        Err(BrokerError::InvalidPartitionCount(10_001))
    ));
    c.create_topic(&"x".repeat(249), 1)
        .await
        .expect("249 characters is the longest name");
}

async fn produce_then_fetch_back_exactly(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("events", 3).await.expect("create");
    let t0 = 1_700_000_000_000i64;
    let records = vec![
        ProduceRecord {
            partition: Some(2),
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"{\"n\":1}")),
            headers: vec![
                header("traceparent", b"00-abc-def-01"),
                header("dup", b"first"),
                header("dup", b"second"),
                header("empty", b""),
            ],
            timestamp_ms: Some(t0),
        },
        ProduceRecord {
            partition: Some(2),
            key: None,
            value: Some(Bytes::from(vec![0u8, 159, 146, 150, 255])),
            headers: Vec::new(),
            timestamp_ms: Some(t0 + 5),
        },
        ProduceRecord {
            // A tombstone: a key and a null value.
            partition: Some(2),
            key: Some(Bytes::from_static(b"user-1")),
            value: None,
            headers: vec![header("reason", b"gdpr")],
            timestamp_ms: Some(t0 + 10),
        },
        ProduceRecord {
            partition: Some(0),
            key: Some(Bytes::new()),
            value: Some(Bytes::from_static(b"elsewhere")),
            headers: Vec::new(),
            timestamp_ms: None,
        },
    ];
    let before = Instant::now();
    let produced = c
        .produce("events", records.clone(), Acks::All)
        .await
        .expect("produce");
    assert_eq!(produced.len(), 4);
    let placed: Vec<(u32, Option<u64>)> =
        produced.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(
        placed,
        vec![(2, Some(0)), (2, Some(1)), (2, Some(2)), (0, Some(0))]
    );
    assert_eq!(produced[0].timestamp_ms, t0);
    assert_eq!(produced[2].timestamp_ms, t0 + 10);
    let stamped = produced[3].timestamp_ms;
    let now = storage_now_ms();
    assert!(
        (now - before.elapsed().as_millis() as i64 - 1_000..=now + 1_000).contains(&stamped),
        "a record without a timestamp is stamped on produce: {stamped} vs now {now}"
    );

    let read = read_to_end(c, "events", 2, 0).await;
    assert_eq!(read.len(), 3);
    for (i, (got, sent)) in read.iter().zip(&records).enumerate() {
        assert_eq!(got.partition, 2, "record {i}");
        assert_eq!(got.offset, i as u64, "record {i}");
        assert_eq!(got.key, sent.key, "record {i}");
        assert_eq!(got.value, sent.value, "record {i}");
        assert_eq!(got.headers, sent.headers, "record {i}");
        assert_eq!(Some(got.timestamp_ms), sent.timestamp_ms, "record {i}");
    }
    let other = read_to_end(c, "events", 0, 0).await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].key, Some(Bytes::new()));
    assert_eq!(other[0].value.as_deref(), Some(&b"elsewhere"[..]));
    assert_eq!(other[0].timestamp_ms, stamped);
    assert!(read_to_end(c, "events", 1, 0).await.is_empty());
}

fn storage_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn keyed_records_land_on_the_murmur2_partition(b: &Backend) {
    let c = &*b.cluster;
    let partitions = 7;
    c.create_topic("keyed", partitions).await.expect("create");
    let keys: Vec<String> = (0..60).map(|i| format!("customer-{i}")).collect();
    let produced = c
        .produce(
            "keyed",
            keys.iter().map(|k| record(Some(k), "v")).collect(),
            Acks::All,
        )
        .await
        .expect("produce");
    let mut per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (key, p) in keys.iter().zip(&produced) {
        assert_eq!(
            p.partition,
            partition_for_key(key.as_bytes(), partitions),
            "key {key}"
        );
        per_partition
            .entry(p.partition)
            .or_default()
            .push(key.clone());
    }
    assert!(
        per_partition.len() > 3,
        "60 keys spread over the partitions"
    );
    let answered: BTreeMap<&str, Option<u64>> = keys
        .iter()
        .map(String::as_str)
        .zip(produced.iter().map(|p| p.offset))
        .collect();
    for (partition, expected) in per_partition {
        let read = read_to_end(c, "keyed", partition, 0).await;
        let read_keys: Vec<String> = read
            .iter()
            .map(|r| String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(
            read_keys, expected,
            "partition {partition} in produce order"
        );
        for (record, key) in read.iter().zip(&read_keys) {
            assert_eq!(
                answered[key.as_str()],
                Some(record.offset),
                "the offset answered for {key} is where it was read"
            );
        }
    }
}

async fn keyless_records_of_one_call_share_a_partition(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("sticky", 4).await.expect("create");
    let mut seen = std::collections::BTreeSet::new();
    for call in 0..8 {
        let produced = c
            .produce(
                "sticky",
                (0..5)
                    .map(|i| record(None, &format!("{call}-{i}")))
                    .collect(),
                Acks::All,
            )
            .await
            .expect("produce");
        let first = produced[0].partition;
        assert!(produced.iter().all(|p| p.partition == first));
        seen.insert(first);
    }
    assert_eq!(seen.len(), 4, "successive calls rotate over the partitions");
}

async fn unknown_topics_and_partitions_are_errors(b: &Backend) {
    let c = &*b.cluster;
    assert!(matches!(
        c.produce("nowhere", vec![record(None, "v")], Acks::All).await,
        Err(BrokerError::UnknownTopic(t)) if t == "nowhere"
    ));
    assert!(matches!(
        c.fetch("nowhere", 0, 0, 1024).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.offsets("nowhere", 0).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.describe_topic("nowhere").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.topic_size_bytes("nowhere").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    // Asking did not create it.
    assert!(c.list_topics().await.expect("list").is_empty());

    c.create_topic("three", 3).await.expect("create");
    // An unknown partition fails the whole call: nothing is written.
    let mixed = vec![
        ProduceRecord {
            partition: Some(0),
            ..record(None, "fine")
        },
        ProduceRecord {
            partition: Some(3),
            ..record(None, "no such partition")
        },
    ];
    assert!(matches!(
        c.produce("three", mixed, Acks::All).await,
        Err(BrokerError::UnknownPartition { topic, partition: 3 }) if topic == "three"
    ));
    for p in 0..3 {
        assert_eq!(
            c.offsets("three", p).await.expect("offsets"),
            PartitionOffsets {
                earliest: 0,
                latest: 0
            },
            "partition {p} stays empty"
        );
    }
    assert!(matches!(
        c.fetch("three", 3, 0, 1024).await,
        Err(BrokerError::UnknownPartition { partition: 3, .. })
    ));
    assert!(matches!(
        c.offsets("three", 9).await,
        Err(BrokerError::UnknownPartition { partition: 9, .. })
    ));
    assert!(matches!(
        c.offset_for_timestamp("three", 3, 0).await,
        Err(BrokerError::UnknownPartition { partition: 3, .. })
    ));
}

async fn fetch_edges(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("edges", 1).await.expect("create");
    // One call: one multi-record batch.
    let produced = c
        .produce(
            "edges",
            (0..10)
                .map(|i| record(None, &format!("value-{i}")))
                .collect(),
            Acks::All,
        )
        .await
        .expect("produce");
    assert_eq!(produced.last().and_then(|p| p.offset), Some(9));

    // At the end: nothing, at once, with the high watermark.
    let started = Instant::now();
    let at_end = c.fetch("edges", 0, 10, 1024).await.expect("fetch at end");
    assert_eq!(
        at_end,
        FetchedBatch {
            records: Vec::new(),
            high_watermark: 10,
            log_start_offset: 0
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a fetch at the end is not a long poll: {:?}",
        started.elapsed()
    );
    // Past the end: nothing either.
    let past = c.fetch("edges", 0, 15, 1024).await.expect("fetch past end");
    assert!(past.records.is_empty());
    assert_eq!(past.high_watermark, 10);

    // Inside the log (inside the batch): from that offset on.
    let mid = c
        .fetch("edges", 0, 4, 1024 * 1024)
        .await
        .expect("fetch mid");
    assert!(!mid.records.is_empty());
    assert_eq!(mid.records[0].offset, 4);
    assert_eq!(mid.records[0].value.as_deref(), Some(&b"value-4"[..]));
    let offsets: Vec<u64> = mid.records.iter().map(|r| r.offset).collect();
    let expected: Vec<u64> = (4..4 + offsets.len() as u64).collect();
    assert_eq!(offsets, expected, "consecutive");
    assert!(mid.high_watermark >= 4 + offsets.len() as u64);

    // Reading on where the last fetch stopped, to the end, and once more
    // at the end (a tailing reader).
    let rest = read_to_end(c, "edges", 0, 4).await;
    assert_eq!(rest.len(), 6);
    let tail = c.fetch("edges", 0, 10, 1024).await.expect("tail");
    assert!(tail.records.is_empty());
    assert_eq!(tail.high_watermark, 10);
    c.produce("edges", vec![record(None, "value-10")], Acks::All)
        .await
        .expect("produce more");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batch = c.fetch("edges", 0, 10, 1024).await.expect("tail");
        if let Some(first) = batch.records.first() {
            assert_eq!(first.offset, 10);
            assert_eq!(first.value.as_deref(), Some(&b"value-10"[..]));
            break;
        }
        assert!(Instant::now() < deadline, "a new record reaches the tail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn max_bytes_is_honoured_with_at_least_one_record(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("sized", 1).await.expect("create");
    let value = "x".repeat(100);
    c.produce(
        "sized",
        (0..10).map(|_| record(None, &value)).collect(),
        Acks::All,
    )
    .await
    .expect("produce");

    // Smaller than one record: still one record.
    let one = c.fetch("sized", 0, 0, 1).await.expect("fetch");
    assert_eq!(one.records.len(), 1);
    assert_eq!(one.records[0].offset, 0);

    // Room for about two records (key, value and headers counted; the
    // embedded backend also counts its encoding overhead).
    let some = c.fetch("sized", 0, 1, 250).await.expect("fetch");
    assert!(
        (1..=2).contains(&some.records.len()),
        "{} records",
        some.records.len()
    );
    assert_eq!(some.records[0].offset, 1);
    let payload: usize = some
        .records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    assert!(payload <= 250 || some.records.len() == 1);

    // The reader goes on from there without losing a record.
    let next = 1 + some.records.len() as u64;
    let rest = read_to_end(c, "sized", 0, next).await;
    let offsets: Vec<u64> = rest.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (next..10).collect::<Vec<_>>());
}

async fn offsets_follow_produce(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("counted", 2).await.expect("create");
    assert_eq!(
        c.offsets("counted", 0).await.expect("offsets"),
        PartitionOffsets {
            earliest: 0,
            latest: 0
        }
    );
    // Several multi-record batches: on tansu, ListOffsets(LATEST) would
    // answer 1 + the first offset of the last batch; the backend must
    // still report the true end (federation seals epochs there).
    let mut total = 0;
    for batch in [5, 1, 7, 3] {
        c.produce(
            "counted",
            (0..batch)
                .map(|i| ProduceRecord {
                    partition: Some(0),
                    ..record(None, &format!("r{i}"))
                })
                .collect(),
            Acks::All,
        )
        .await
        .expect("produce");
        total += batch;
        assert_eq!(
            c.offsets("counted", 0).await.expect("offsets"),
            PartitionOffsets {
                earliest: 0,
                latest: total
            },
            "after {total} records"
        );
    }
    assert_eq!(
        c.offsets("counted", 1).await.expect("offsets").latest,
        0,
        "the other partition is untouched"
    );
    let fetched = c.fetch("counted", 0, 0, 1024 * 1024).await.expect("fetch");
    assert!(fetched.high_watermark >= fetched.records.len() as u64);
    assert_eq!(fetched.log_start_offset, 0);
}

async fn offset_for_timestamp_finds_the_first_record_at_or_after(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("timed", 1).await.expect("create");
    let t0 = 1_700_000_000_000i64;
    for i in 0..3 {
        c.produce(
            "timed",
            vec![ProduceRecord {
                timestamp_ms: Some(t0 + 1_000 * i),
                ..record(None, &format!("at-{i}"))
            }],
            Acks::All,
        )
        .await
        .expect("produce");
    }
    let cases = [
        (t0 - 1, Some(0)),
        (t0, Some(0)),
        (t0 + 500, Some(1)),
        (t0 + 1_000, Some(1)),
        (t0 + 2_000, Some(2)),
        (t0 + 2_001, None),
    ];
    for (timestamp, expected) in cases {
        let got = c
            .offset_for_timestamp("timed", 0, timestamp)
            .await
            .expect("offset for timestamp");
        if b.is_tansu() {
            // tansu 0.6 answers ListOffsets by timestamp with the log start
            // offset whatever the timestamp (Kafka: the first offset at or
            // after it, or -1). Accept any offset that does not skip a
            // wanted record.
            assert!(
                matches!((got, expected), (Some(o), Some(e)) if o <= e)
                    || matches!((got, expected), (Some(_), None)),
                "t0{:+}: got {got:?}, want {expected:?} or earlier",
                timestamp - t0
            );
        } else {
            assert_eq!(got, expected, "t0{:+}", timestamp - t0);
        }
    }
}

async fn group_offsets_are_committed_and_read_back(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("consumed", 3).await.expect("create");
    assert!(c
        .committed_offsets("billing", "consumed")
        .await
        .expect("committed")
        .is_empty());
    c.commit_offsets("billing", "consumed", &[(0, 5), (2, 9)])
        .await
        .expect("commit");
    assert_eq!(
        c.committed_offsets("billing", "consumed")
            .await
            .expect("committed"),
        vec![(0, 5), (2, 9)]
    );
    c.commit_offsets("billing", "consumed", &[(0, 7)])
        .await
        .expect("commit again");
    assert_eq!(
        c.committed_offsets("billing", "consumed")
            .await
            .expect("committed"),
        vec![(0, 7), (2, 9)],
        "later commits replace a partition's offset and keep the others"
    );
    c.commit_offsets("shipping", "consumed", &[(1, 1)])
        .await
        .expect("other group");
    assert_eq!(
        c.committed_offsets("shipping", "consumed")
            .await
            .expect("committed"),
        vec![(1, 1)]
    );
    assert_eq!(
        c.committed_offsets("billing", "consumed")
            .await
            .expect("committed"),
        vec![(0, 7), (2, 9)],
        "groups are independent"
    );

    assert!(matches!(
        c.commit_offsets("billing", "consumed", &[(3, 1)]).await,
        Err(BrokerError::UnknownPartition { partition: 3, .. })
    ));
    assert!(matches!(
        c.commit_offsets("billing", "nowhere", &[(0, 1)]).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.committed_offsets("billing", "nowhere").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        c.commit_offsets("", "consumed", &[(0, 1)]).await,
        Err(BrokerError::InvalidGroupId { .. })
    ));
}

async fn acks_none_does_not_wait_but_records_arrive(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("fire-and-forget", 2).await.expect("create");
    let produced = c
        .produce(
            "fire-and-forget",
            (0..5)
                .map(|i| ProduceRecord {
                    partition: Some(1),
                    ..record(None, &format!("f{i}"))
                })
                .collect(),
            Acks::None,
        )
        .await
        .expect("produce");
    assert!(produced
        .iter()
        .all(|p| p.partition == 1 && p.offset.is_none()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .offsets("fire-and-forget", 1)
        .await
        .expect("offsets")
        .latest
        < 5
    {
        assert!(Instant::now() < deadline, "acks=0 records arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = read_to_end(c, "fire-and-forget", 1, 0).await;
    assert_eq!(read.len(), 5);
}

async fn many_produce_calls_in_flight(b: &Backend) {
    let c = &b.cluster;
    c.create_topic("busy", 4).await.expect("create");
    let calls: Vec<_> = (0..40)
        .map(|call| {
            let c = Arc::clone(c);
            tokio::spawn(async move {
                c.produce(
                    "busy",
                    (0..25)
                        .map(|i| record(Some(&format!("k{call}-{i}")), "v"))
                        .collect(),
                    Acks::All,
                )
                .await
            })
        })
        .collect();
    let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for call in calls {
        for p in call.await.expect("task").expect("produce") {
            offsets
                .entry(p.partition)
                .or_default()
                .push(p.offset.expect("acks=all reports offsets"));
        }
    }
    let mut total = 0;
    for (partition, mut got) in offsets {
        got.sort_unstable();
        let n = got.len() as u64;
        assert_eq!(
            got,
            (0..n).collect::<Vec<_>>(),
            "partition {partition}: unique, gapless"
        );
        assert_eq!(
            c.offsets("busy", partition).await.expect("offsets").latest,
            n
        );
        total += n;
    }
    assert_eq!(total, 1_000);
}

async fn a_down_cluster_fails_fast(b: &Backend) {
    let c = &*b.cluster;
    c.create_topic("doomed", 1).await.expect("create");
    c.produce("doomed", vec![record(None, "before")], Acks::All)
        .await
        .expect("produce");
    assert_eq!(
        c.fetch("doomed", 0, 0, 1024)
            .await
            .expect("fetch")
            .records
            .len(),
        1
    );
    b.take_down();

    let bound = b.failure_bound();
    let started = Instant::now();
    match c.health().await {
        Health::Down(_) => {}
        Health::Up => panic!("health of a down cluster"),
    }
    assert!(
        started.elapsed() < bound,
        "health took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    assert_unavailable(
        c.produce("doomed", vec![record(None, "after")], Acks::All)
            .await,
        "produce",
    );
    assert!(
        started.elapsed() < bound,
        "produce took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    assert_unavailable(c.offsets("doomed", 0).await, "offsets");
    assert!(
        started.elapsed() < bound,
        "offsets took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    assert_unavailable(c.list_topics().await, "list topics");
    assert!(
        started.elapsed() < bound,
        "list took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let fetched = c.fetch("doomed", 0, 0, 1024).await;
    assert!(
        started.elapsed() < bound,
        "fetch took {:?}",
        started.elapsed()
    );
    match fetched {
        Err(e) => assert!(e.is_retriable(), "fetch: {e}"),
        // A reader still holding the record may hand it out; nothing new.
        Ok(batch) => assert!(batch.records.len() <= 1),
    }
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod embedded_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let backend = super::Backend::embedded().await;
                    super::$check(&backend).await;
                }
            )+
        }

        mod kafka_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let backend = super::Backend::kafka().await;
                    super::$check(&backend).await;
                }
            )+
        }
    };
}

conformance!(
    health_is_up,
    topic_lifecycle,
    topic_names_and_partition_counts_are_validated,
    produce_then_fetch_back_exactly,
    keyed_records_land_on_the_murmur2_partition,
    keyless_records_of_one_call_share_a_partition,
    unknown_topics_and_partitions_are_errors,
    fetch_edges,
    max_bytes_is_honoured_with_at_least_one_record,
    offsets_follow_produce,
    offset_for_timestamp_finds_the_first_record_at_or_after,
    group_offsets_are_committed_and_read_back,
    acks_none_does_not_wait_but_records_arrive,
    many_produce_calls_in_flight,
    a_down_cluster_fails_fast,
);

// ---------------------------------------------------------------------------
// Kafka only: what landed, seen by an independent client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_are_in_the_broker_as_an_independent_client_reads_them() {
    let backend = Backend::kafka().await;
    let Kind::Kafka { testbed, .. } = &backend.kind else {
        unreachable!("a Kafka backend");
    };
    let c = &*backend.cluster;
    c.create_topic("checked", 3).await.expect("create");
    let sent = vec![
        ProduceRecord {
            key: Some(Bytes::from_static(b"order-17")),
            value: Some(Bytes::from_static(b"{\"total\":12.5}")),
            headers: vec![
                header(
                    "traceparent",
                    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                header("content-type", b"application/json"),
            ],
            timestamp_ms: Some(1_700_000_123_456),
            partition: None,
        },
        ProduceRecord {
            key: None,
            value: Some(Bytes::from_static(b"\x00\x01binary")),
            headers: vec![header("h", b"\xff")],
            timestamp_ms: Some(1_700_000_123_457),
            partition: Some(1),
        },
    ];
    let produced = c
        .produce("checked", sent.clone(), Acks::All)
        .await
        .expect("produce");

    let read = sluice_testbed::read_topic(&testbed.bootstrap(0), "checked")
        .await
        .expect("confluent-kafka reads the topic");
    assert_eq!(read.len(), 2, "{read:?}");
    for (record, placed) in sent.iter().zip(&produced) {
        let found = read
            .iter()
            .find(|r| r.partition == placed.partition && Some(r.offset) == placed.offset)
            .unwrap_or_else(|| panic!("{placed:?} not found in {read:?}"));
        assert_eq!(found.key.as_deref(), record.key.as_deref());
        assert_eq!(found.value.as_deref(), record.value.as_deref());
        assert_eq!(Some(found.timestamp_ms), record.timestamp_ms);
        let headers: Vec<(String, Option<Vec<u8>>)> = record
            .headers
            .iter()
            .map(|h| (h.name.to_string(), Some(h.value.to_vec())))
            .collect();
        assert_eq!(found.headers, headers);
    }
    assert_eq!(
        produced[0].partition,
        partition_for_key(b"order-17", 3),
        "the key's murmur2 partition, as the Java client would pick"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cluster_recovers_after_a_broker_restart() {
    let backend = Backend::kafka().await;
    let Kind::Kafka { testbed, .. } = &backend.kind else {
        unreachable!("a Kafka backend");
    };
    let c = &*backend.cluster;
    c.create_topic("phoenix", 1).await.expect("create");
    testbed.kill(0).expect("kill");
    assert!(matches!(c.health().await, Health::Down(_)));
    testbed.restart(0).await.expect("restart");
    // tansu keeps topics in memory: the restarted broker is empty.
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.health().await != Health::Up {
        assert!(Instant::now() < deadline, "health comes back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.create_topic("phoenix", 1)
        .await
        .expect("create after restart");
    // Health is the metadata client's view; the producer reconnects on its
    // own schedule. A client retries what the gateway calls retriable (503)
    // until the cluster takes the record, and every error on the way must
    // be one it may retry.
    let mut failures = Vec::new();
    let produced = loop {
        match c
            .produce("phoenix", vec![record(Some("k"), "v")], Acks::All)
            .await
        {
            Ok(produced) => break produced,
            Err(e) => {
                assert!(e.is_retriable(), "produce after restart: {e}");
                failures.push(e.to_string());
                assert!(
                    Instant::now() < deadline + Duration::from_secs(15),
                    "produce after restart kept failing: {failures:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let offset = produced[0].offset.expect("acks=all gives an offset");
    let read = read_to_end(c, "phoenix", 0, 0).await;
    let found = read
        .iter()
        .find(|r| r.offset == offset)
        .unwrap_or_else(|| panic!("acknowledged offset {offset} not in {read:?}"));
    assert_eq!(found.value.as_deref(), Some(&b"v"[..]));
    // A retry after a timed-out attempt may have written a copy first,
    // never more than one per failed attempt.
    assert!(
        read.len() <= 1 + failures.len(),
        "{read:?} after {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_readers_are_reused_while_tailing_and_bounded() {
    let backend = Backend::kafka().await;
    let Kind::Kafka { cluster, .. } = &backend.kind else {
        unreachable!("a Kafka backend");
    };
    let c = &*backend.cluster;
    c.create_topic("tailed", 1).await.expect("create");
    c.produce(
        "tailed",
        (0..5).map(|i| record(None, &format!("t{i}"))).collect(),
        Acks::All,
    )
    .await
    .expect("produce");
    // Record by record, then at the end: one reader serves them all.
    let mut offset = 0;
    while offset < 5 {
        let batch = c.fetch("tailed", 0, offset, 1).await.expect("fetch");
        assert_eq!(
            batch.records.len(),
            1,
            "at least one record, at most max_bytes"
        );
        assert_eq!(batch.records[0].offset, offset);
        offset += 1;
    }
    assert!(c
        .fetch("tailed", 0, 5, 1)
        .await
        .expect("fetch")
        .records
        .is_empty());
    assert_eq!(cluster.open_readers(), 1, "the tailing reader was reused");

    // More partitions than readers: the pool stays bounded.
    let partitions = sluice_broker::kafka::reader::DEFAULT_MAX_READERS as u32 + 8;
    c.create_topic("wide", partitions).await.expect("create");
    for p in 0..partitions {
        c.produce(
            "wide",
            vec![ProduceRecord {
                partition: Some(p),
                ..record(None, "w")
            }],
            Acks::All,
        )
        .await
        .expect("produce");
    }
    for p in 0..partitions {
        let batch = c.fetch("wide", p, 0, 1024).await.expect("fetch");
        assert_eq!(batch.records.len(), 1, "partition {p}");
    }
    assert!(cluster.open_readers() <= sluice_broker::kafka::reader::DEFAULT_MAX_READERS);
}

/// A broker of its own and a Kafka cluster on it whose producer queue
/// holds `messages` records.
async fn small_queue_cluster(messages: u32) -> (KafkaTestbed, Arc<KafkaCluster>) {
    let testbed = KafkaTestbed::start(1).await.expect("tansu test bed starts");
    let config = KafkaConfig {
        bootstrap_servers: testbed.bootstrap(0),
        request_timeout_ms: 10_000,
        properties: BTreeMap::from([(
            "queue.buffering.max.messages".to_owned(),
            messages.to_string(),
        )]),
    };
    let cluster = KafkaCluster::connect("kafka-small-queue", &config).expect("kafka cluster");
    (testbed, cluster)
}

/// librdkafka's queue holds 10 messages here: a produce of 300 records
/// fills it again and again, and waits for room each time; every record is
/// acknowledged, in call order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_produce_waits_for_room_when_the_producer_queue_is_full() {
    let (_testbed, cluster) = small_queue_cluster(10).await;
    cluster.create_topic("narrow", 1).await.expect("create");
    let records: Vec<_> = (0..300).map(|i| record(None, &format!("v{i}"))).collect();
    let produced = cluster
        .produce("narrow", records, Acks::All)
        .await
        .expect("every record goes through, room after room");
    let offsets: Vec<_> = produced.iter().map(|p| p.offset).collect();
    let expected: Vec<_> = (0..300).map(Some).collect();
    assert_eq!(offsets, expected);
    let read = read_to_end(&*cluster, "narrow", 0, 0).await;
    assert_eq!(read.len(), 300);
    assert_eq!(read[299].value.as_deref(), Some(&b"v299"[..]));
}

/// The same with keyed records over three partitions: the producer's queue
/// fills partway through a partition's records again and again; every
/// record is acknowledged once, at the offset it is read back from, in
/// call order within its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_keyed_produce_over_partitions_survives_a_full_queue() {
    let (_testbed, cluster) = small_queue_cluster(7).await;
    cluster.create_topic("spread", 3).await.expect("create");
    let keys: Vec<String> = (0..200).map(|i| format!("k{}", i % 23)).collect();
    let records: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| record(Some(k), &format!("v{i}")))
        .collect();
    let produced = cluster
        .produce("spread", records, Acks::All)
        .await
        .expect("every record goes through, room after room");
    assert_eq!(produced.len(), 200);
    let mut next = [0u64; 3];
    for (i, (p, key)) in produced.iter().zip(&keys).enumerate() {
        assert_eq!(
            p.partition,
            partition_for_key(key.as_bytes(), 3),
            "record {i}"
        );
        assert_eq!(p.offset, Some(next[p.partition as usize]), "record {i}");
        next[p.partition as usize] += 1;
    }
    for partition in 0..3 {
        let read = read_to_end(&*cluster, "spread", partition, 0).await;
        let expected: Vec<String> = produced
            .iter()
            .enumerate()
            .filter(|(_, p)| p.partition == partition)
            .map(|(i, _)| format!("v{i}"))
            .collect();
        let got: Vec<String> = read
            .iter()
            .map(|r| String::from_utf8(r.value.clone().expect("value").to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(got, expected, "partition {partition}");
    }
}
