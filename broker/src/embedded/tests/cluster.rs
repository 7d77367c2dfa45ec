//! [`EmbeddedCluster`] through the [`Cluster`] trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_config::FsyncPolicy;

use super::{config, values};
use crate::embedded::storage::now_ms;
use crate::embedded::{EmbeddedCluster, MAX_PARTITIONS};
use crate::partitioner::partition_for_key;
use crate::record::{Acks, Header, ProduceRecord};
use crate::{BrokerError, Cluster, Health, PartitionOffsets};

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Arc<EmbeddedCluster> {
    EmbeddedCluster::open("local", dir, &config(fsync)).expect("open cluster")
}

fn value(v: &str) -> ProduceRecord {
    ProduceRecord {
        value: Some(Bytes::copy_from_slice(v.as_bytes())),
        ..ProduceRecord::default()
    }
}

fn keyed(key: &str, v: &str) -> ProduceRecord {
    ProduceRecord {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        ..value(v)
    }
}

fn to(partition: u32, v: &str) -> ProduceRecord {
    ProduceRecord {
        partition: Some(partition),
        ..value(v)
    }
}

async fn fetch_values(cluster: &EmbeddedCluster, topic: &str, partition: u32) -> Vec<String> {
    let fetched = cluster
        .fetch(topic, partition, 0, 1 << 20)
        .await
        .expect("fetch");
    values(&fetched.records)
}

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Never);
    for (name, partitions) in [("zeta", 1), ("alpha", 3), (".", 2), ("..", 1)] {
        let meta = cluster
            .create_topic(name, partitions)
            .await
            .expect("create");
        assert_eq!((meta.name.as_str(), meta.partitions), (name, partitions));
    }
    let names: Vec<String> = cluster
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, [".", "..", "alpha", "zeta"]);
    assert_eq!(
        cluster
            .describe_topic("alpha")
            .await
            .expect("describe")
            .partitions,
        3
    );
    assert!(matches!(
        cluster.create_topic("alpha", 1).await,
        Err(BrokerError::TopicExists(t)) if t == "alpha"
    ));

    cluster
        .produce("alpha", vec![to(1, "x")], Acks::All)
        .await
        .expect("produce");
    cluster.delete_topic("alpha").await.expect("delete");
    assert!(!dir.path().join("topics/alpha").exists());
    assert!(matches!(
        cluster.describe_topic("alpha").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        cluster.delete_topic("alpha").await,
        Err(BrokerError::UnknownTopic(_))
    ));
    // A new topic of the same name starts empty.
    cluster.create_topic("alpha", 2).await.expect("recreate");
    assert_eq!(
        cluster.offsets("alpha", 1).await.expect("offsets"),
        PartitionOffsets {
            earliest: 0,
            latest: 0
        }
    );
}

#[tokio::test]
async fn names_and_partition_counts_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Never);
    for bad in ["", "a b", "a/b", "ü", &"x".repeat(250)] {
        assert!(
            matches!(
                cluster.create_topic(bad, 1).await,
                Err(BrokerError::InvalidTopicName(_))
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            cluster.produce(bad, vec![value("v")], Acks::All).await,
            Err(BrokerError::InvalidTopicName(_))
        ));
    }
    cluster
        .create_topic(&"x".repeat(249), 1)
        .await
        .expect("longest name");
    for bad in [0, MAX_PARTITIONS + 1] {
        assert!(matches!(
            cluster.create_topic("t", bad).await,
            Err(BrokerError::InvalidPartitionCount(n)) if n == bad
        ));
    }
    assert!(matches!(
        cluster.commit_offsets("", "t", &[]).await,
        Err(BrokerError::InvalidGroupId { .. })
    ));
}

#[tokio::test]
async fn unknown_topics_and_partitions_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Never);
    cluster.create_topic("t", 2).await.expect("create");
    assert!(matches!(
        cluster.produce("nope", vec![value("v")], Acks::All).await,
        Err(BrokerError::UnknownTopic(t)) if t == "nope"
    ));
    assert!(matches!(
        cluster.fetch("nope", 0, 0, 100).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        cluster.fetch("t", 2, 0, 100).await,
        Err(BrokerError::UnknownPartition { partition: 2, .. })
    ));
    assert!(matches!(
        cluster.offsets("t", 7).await,
        Err(BrokerError::UnknownPartition { partition: 7, .. })
    ));
    assert!(matches!(
        cluster.offset_for_timestamp("t", 9, 0).await,
        Err(BrokerError::UnknownPartition { .. })
    ));
    assert!(matches!(
        cluster.commit_offsets("g", "t", &[(0, 1), (5, 1)]).await,
        Err(BrokerError::UnknownPartition { partition: 5, .. })
    ));
    assert!(matches!(
        cluster.committed_offsets("g", "nope").await,
        Err(BrokerError::UnknownTopic(_))
    ));

    // One bad record fails the whole call and nothing is appended.
    let err = cluster
        .produce(
            "t",
            vec![to(0, "ok"), keyed("k", "ok"), to(2, "bad")],
            Acks::All,
        )
        .await;
    assert!(matches!(
        err,
        Err(BrokerError::UnknownPartition { partition: 2, .. })
    ));
    for p in 0..2 {
        assert_eq!(cluster.offsets("t", p).await.expect("offsets").latest, 0);
    }
}

#[tokio::test]
async fn partitions_follow_explicit_choice_then_key_then_sticky() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Never);
    cluster.create_topic("t", 4).await.expect("create");

    let keys = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let records: Vec<ProduceRecord> = keys.iter().map(|k| keyed(k, k)).collect();
    let produced = cluster
        .produce("t", records, Acks::Leader)
        .await
        .expect("produce");
    for (key, p) in keys.iter().zip(&produced) {
        assert_eq!(p.partition, partition_for_key(key.as_bytes(), 4), "{key}");
    }

    let explicit = cluster
        .produce("t", vec![to(3, "x"), to(0, "y")], Acks::Leader)
        .await
        .expect("produce");
    assert_eq!((explicit[0].partition, explicit[1].partition), (3, 0));

    // Keyless records of one call share a partition; calls rotate.
    let mut seen = Vec::new();
    for call in 0..4 {
        let produced = cluster
            .produce("t", vec![value("a"), value("b"), value("c")], Acks::Leader)
            .await
            .expect("produce");
        assert!(
            produced
                .iter()
                .all(|p| p.partition == produced[0].partition),
            "call {call}"
        );
        // Offsets in one partition batch are consecutive.
        let first = produced[0].offset.expect("offset");
        let offsets: Vec<u64> = produced.iter().map(|p| p.offset.expect("offset")).collect();
        assert_eq!(offsets, [first, first + 1, first + 2]);
        seen.push(produced[0].partition);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);
}

#[tokio::test]
async fn records_round_trip_with_headers_nulls_and_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Always);
    cluster.create_topic("t", 1).await.expect("create");
    let headers = vec![
        Header {
            name: "traceparent".into(),
            value: Bytes::from_static(b"00-abc"),
        },
        Header {
            name: "traceparent".into(),
            value: Bytes::from_static(b"again"),
        },
    ];
    let before = now_ms();
    let produced = cluster
        .produce(
            "t",
            vec![
                ProduceRecord {
                    key: Some(Bytes::from_static(b"k")),
                    value: None,
                    headers: headers.clone(),
                    timestamp_ms: Some(42),
                    partition: None,
                },
                ProduceRecord::default(),
            ],
            Acks::All,
        )
        .await
        .expect("produce");
    let after = now_ms();
    assert_eq!(produced[0].timestamp_ms, 42);
    assert!((before..=after).contains(&produced[1].timestamp_ms));

    let fetched = cluster.fetch("t", 0, 0, 1 << 20).await.expect("fetch");
    assert_eq!(fetched.high_watermark, 2);
    let r = &fetched.records;
    assert_eq!(r[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(r[0].value, None);
    assert_eq!(r[0].headers, headers);
    assert_eq!(r[0].timestamp_ms, 42);
    assert_eq!((r[1].key.clone(), r[1].value.clone()), (None, None));
    assert_eq!(r[1].timestamp_ms, produced[1].timestamp_ms);
    assert_eq!(
        cluster
            .offset_for_timestamp("t", 0, 43)
            .await
            .expect("lookup"),
        Some(1)
    );
    assert_eq!(
        cluster
            .offset_for_timestamp("t", 0, after + 1)
            .await
            .expect("lookup"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fsync_policy_produces_readable_durable_data() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = open(dir.path(), fsync);
        cluster.create_topic("t", 2).await.expect("create");
        for i in 0..20 {
            cluster
                .produce("t", vec![to(i % 2, &format!("v{i}"))], Acks::All)
                .await
                .expect("produce");
        }
        let log = cluster.partition_log("t", 0).expect("log");
        match fsync {
            // Acknowledged means fsynced.
            FsyncPolicy::Always => assert_eq!(log.synced_offset(), 10),
            // The background thread catches up within a few intervals.
            FsyncPolicy::Interval => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while log.synced_offset() < 10 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(log.synced_offset(), 10);
            }
            FsyncPolicy::Never => assert_eq!(log.synced_offset(), 0),
        }
        drop(log);
        let expected: Vec<String> = (0..20).step_by(2).map(|i| format!("v{i}")).collect();
        assert_eq!(fetch_values(&cluster, "t", 0).await, expected, "{fsync:?}");

        let cluster = {
            let dir = dir.path().to_owned();
            tokio::task::spawn_blocking(move || {
                cluster.shutdown().expect("shutdown");
                drop(cluster);
                open(&dir, fsync)
            })
            .await
            .expect("reopen")
        };
        assert_eq!(fetch_values(&cluster, "t", 0).await, expected, "{fsync:?}");
        assert_eq!(fetch_values(&cluster, "t", 1).await.len(), 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_under_fsync_always_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Always);
    cluster.create_topic("t", 1).await.expect("create");
    let producers = 32;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let cluster = Arc::clone(&cluster);
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..5 {
                let produced = cluster
                    .produce("t", vec![value(&format!("{p}-{i}"))], Acks::All)
                    .await
                    .expect("produce");
                let offset = produced[0].offset.expect("offset");
                // Durable on return.
                let log = cluster.partition_log("t", 0).expect("log");
                assert!(log.synced_offset() > offset);
                offsets.push(offset);
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (0..producers * 5).collect::<Vec<u64>>());
    let log = cluster.partition_log("t", 0).expect("log");
    assert!(log.fsync_rounds() >= 1);
    let fetched = cluster.fetch("t", 0, 0, 1 << 20).await.expect("fetch");
    assert_eq!(fetched.records.len() as u64, producers * 5);
}

#[tokio::test]
async fn acks_zero_reports_no_offset_but_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Always);
    cluster.create_topic("t", 1).await.expect("create");
    let produced = cluster
        .produce("t", vec![value("a"), value("b")], Acks::None)
        .await
        .expect("produce");
    assert!(produced
        .iter()
        .all(|p| p.offset.is_none() && p.partition == 0));
    let produced = cluster
        .produce("t", vec![value("c")], Acks::Leader)
        .await
        .expect("produce");
    assert_eq!(produced[0].offset, Some(2));
    assert_eq!(fetch_values(&cluster, "t", 0).await, ["a", "b", "c"]);
}

#[tokio::test]
async fn topics_records_and_group_offsets_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let cluster = open(dir.path(), FsyncPolicy::Never);
        cluster.create_topic("orders", 3).await.expect("create");
        cluster.create_topic("..", 1).await.expect("create");
        cluster
            .produce("orders", vec![to(2, "o1"), to(2, "o2")], Acks::All)
            .await
            .expect("produce");
        cluster
            .commit_offsets("billing", "orders", &[(0, 0), (2, 1)])
            .await
            .expect("commit");
        cluster
            .commit_offsets("billing", "orders", &[(2, 2)])
            .await
            .expect("commit");
        cluster
            .commit_offsets("audit", "..", &[(0, 0)])
            .await
            .expect("commit");
    }
    let cluster = open(dir.path(), FsyncPolicy::Never);
    let names: Vec<_> = cluster
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(names, [("..".to_owned(), 1), ("orders".to_owned(), 3)]);
    assert_eq!(fetch_values(&cluster, "orders", 2).await, ["o1", "o2"]);
    assert_eq!(
        cluster
            .committed_offsets("billing", "orders")
            .await
            .expect("committed"),
        [(0, 0), (2, 2)]
    );
    assert_eq!(
        cluster
            .committed_offsets("audit", "..")
            .await
            .expect("committed"),
        [(0, 0)]
    );
    assert_eq!(
        cluster
            .committed_offsets("nobody", "orders")
            .await
            .expect("committed"),
        []
    );
    // Deleting a topic forgets the groups' offsets for it.
    cluster.delete_topic("orders").await.expect("delete");
    cluster.create_topic("orders", 3).await.expect("create");
    assert_eq!(
        cluster
            .committed_offsets("billing", "orders")
            .await
            .expect("committed"),
        []
    );
}

#[tokio::test]
async fn the_fault_switch_makes_everything_fail_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Always);
    cluster.create_topic("t", 1).await.expect("create");
    assert_eq!(cluster.health().await, Health::Up);

    cluster.set_available(false);
    assert!(!cluster.is_available());
    assert!(matches!(cluster.health().await, Health::Down(_)));
    let unavailable = |r: Result<(), BrokerError>| {
        assert!(
            matches!(&r, Err(e @ BrokerError::Unavailable { cluster, .. }) if cluster == "local" && e.is_retriable()),
            "{r:?}"
        );
    };
    unavailable(cluster.create_topic("u", 1).await.map(drop));
    unavailable(cluster.delete_topic("t").await);
    unavailable(cluster.list_topics().await.map(drop));
    unavailable(cluster.describe_topic("t").await.map(drop));
    unavailable(
        cluster
            .produce("t", vec![value("v")], Acks::All)
            .await
            .map(drop),
    );
    unavailable(cluster.fetch("t", 0, 0, 100).await.map(drop));
    unavailable(cluster.offsets("t", 0).await.map(drop));
    unavailable(cluster.offset_for_timestamp("t", 0, 0).await.map(drop));
    unavailable(cluster.commit_offsets("g", "t", &[(0, 0)]).await);
    unavailable(cluster.committed_offsets("g", "t").await.map(drop));

    cluster.set_available(true);
    assert_eq!(cluster.health().await, Health::Up);
    cluster
        .produce("t", vec![value("v")], Acks::All)
        .await
        .expect("produce after recovery");
}

#[tokio::test]
async fn shutdown_flushes_and_then_refuses_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Never);
    cluster.create_topic("t", 1).await.expect("create");
    cluster
        .produce("t", vec![value("v")], Acks::All)
        .await
        .expect("produce");
    let log = cluster.partition_log("t", 0).expect("log");
    assert_eq!(log.synced_offset(), 0);
    let shut = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || shut.shutdown())
        .await
        .expect("join")
        .expect("shutdown");
    assert_eq!(log.synced_offset(), 1);
    assert!(matches!(cluster.health().await, Health::Down(_)));
    assert!(matches!(
        cluster.fetch("t", 0, 0, 100).await,
        Err(BrokerError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn retention_runs_through_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(FsyncPolicy::Never);
    cfg.segment_bytes = 512;
    cfg.retention_ms = Some(60_000);
    let cluster = EmbeddedCluster::open("local", dir.path(), &cfg).expect("open");
    cluster.create_topic("t", 1).await.expect("create");
    let old = ProduceRecord {
        timestamp_ms: Some(1_000),
        partition: Some(0),
        ..value(&"o".repeat(200))
    };
    for _ in 0..10 {
        cluster
            .produce("t", vec![old.clone()], Acks::All)
            .await
            .expect("produce");
    }
    cluster
        .produce("t", vec![to(0, "new")], Acks::All)
        .await
        .expect("produce");
    let stats = cluster.run_retention().expect("retention");
    assert!(stats.segments > 0);
    let offsets = cluster.offsets("t", 0).await.expect("offsets");
    assert!(offsets.earliest > 0);
    assert_eq!(offsets.latest, 11);
    assert!(matches!(
        cluster.fetch("t", 0, 0, 100).await,
        Err(BrokerError::OffsetOutOfRange { .. })
    ));
    let rest = cluster
        .fetch("t", 0, offsets.earliest, 1 << 20)
        .await
        .expect("fetch");
    assert_eq!(rest.records.last().map(|r| r.offset), Some(10));
}

#[tokio::test]
async fn the_background_thread_applies_retention_and_stops_with_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(FsyncPolicy::Interval);
    cfg.segment_bytes = 512;
    cfg.retention_bytes = Some(600);
    cfg.retention_check_interval_ms = 5;
    let cluster = EmbeddedCluster::open("local", dir.path(), &cfg).expect("open");
    cluster.create_topic("t", 1).await.expect("create");
    for _ in 0..10 {
        cluster
            .produce("t", vec![to(0, &"x".repeat(200))], Acks::All)
            .await
            .expect("produce");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.offsets("t", 0).await.expect("offsets").earliest == 0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cluster.offsets("t", 0).await.expect("offsets").earliest > 0);

    let background_done = {
        let cluster = Arc::clone(&cluster);
        move || cluster.background.is_finished()
    };
    assert!(!background_done());
    cluster.set_available(false);
    let shut = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || shut.shutdown().expect("shutdown"))
        .await
        .expect("join");
    assert!(background_done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_produce_leaves_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = open(dir.path(), FsyncPolicy::Always);
    cluster.create_topic("t", 2).await.expect("create");
    for round in 0..20u64 {
        let records = vec![to(0, "a"), to(1, "b"), to(0, "c"), to(1, "d")];
        // A zero timeout polls the produce once (it appends, then waits for
        // the fsync) and then drops it.
        let _ =
            tokio::time::timeout(Duration::ZERO, cluster.produce("t", records, Acks::All)).await;
        for p in 0..2 {
            let latest = cluster.offsets("t", p).await.expect("offsets").latest;
            assert_eq!(latest, 2 * (round + 1), "partition {p} after round {round}");
        }
    }
    // The fsyncs the dropped futures started still complete.
    let log = cluster.partition_log("t", 0).expect("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.synced_offset() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(log.synced_offset(), 40);
}

#[test]
fn the_background_thread_ends_when_the_storage_is_gone() {
    use crate::embedded::background::{Background, Schedule};
    use crate::embedded::storage::Storage;

    let dir = tempfile::tempdir().expect("tempdir");
    let storage =
        Arc::new(Storage::open(dir.path(), &config(FsyncPolicy::Interval)).expect("open"));
    let schedule = Schedule {
        fsync_every: Some(Duration::from_millis(1)),
        retention_every: None,
    };
    let background = Background::start("t", Arc::downgrade(&storage), schedule).expect("start");
    assert!(!background.is_finished());
    drop(storage);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !background.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(background.is_finished());
}
