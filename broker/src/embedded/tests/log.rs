//! [`PartitionLog`]: appends, reads, segments, timestamps, retention.

use std::fs;

use proptest::prelude::*;

use super::*;
use crate::embedded::partition::RetentionPolicy;
use crate::BrokerError;

fn plain_strategy() -> impl Strategy<Value = Plain> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
    (
        proptest::option::of(bytes()),
        proptest::option::of(bytes()),
        proptest::collection::vec(
            (
                "[a-z\\-é]{0,8}",
                proptest::collection::vec(any::<u8>(), 0..20),
            ),
            0..4,
        ),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, timestamp_ms)| Plain {
            key,
            value,
            headers,
            timestamp_ms,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn what_is_appended_reads_back_identically_before_and_after_reopen(
        batches in proptest::collection::vec(proptest::collection::vec(plain_strategy(), 1..20), 1..12),
        max_bytes in 0usize..3000,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path(), small_settings());
        let mut expected = Vec::new();
        for batch in &batches {
            let appended = log.append(&mut batch_of(batch)).expect("append");
            prop_assert_eq!(appended.base_offset, expected.len() as u64);
            expected.extend(batch.iter().cloned());
        }
        prop_assert_eq!(log.offsets().latest, expected.len() as u64);

        let check = |log: &PartitionLog| -> Result<(), TestCaseError> {
            let records = read_all(log, max_bytes);
            prop_assert_eq!(records.len(), expected.len());
            for (i, (record, plain)) in records.iter().zip(&expected).enumerate() {
                prop_assert_eq!(record.offset, i as u64);
                prop_assert_eq!(record.partition, 0);
                prop_assert!(plain.matches(record), "record {} differs: {:?} vs {:?}", i, record, plain);
            }
            Ok(())
        };
        check(&log)?;
        drop(log);
        check(&open_log(dir.path(), small_settings()))?;
    }
}

#[test]
fn segments_roll_at_the_size_limit_and_reads_cross_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    let value = "v".repeat(100);
    for i in 0..60 {
        append_values(&log, &[&format!("{i}-{value}")], i);
    }
    assert!(
        log.segment_count() > 4,
        "only {} segments",
        log.segment_count()
    );
    let names: Vec<String> = fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"00000000000000000000.log".to_owned()));
    for entry in fs::read_dir(dir.path()).expect("ls") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            // One batch may overshoot a segment, never more.
            assert!(fs::metadata(&path).expect("stat").len() <= 1024 + 200);
        }
    }

    // One read spanning many segments.
    let fetched = log.read(0, 1 << 20).expect("read");
    assert_eq!(fetched.records.len(), 60);
    assert_eq!(fetched.high_watermark, 60);
    // And a read from every offset starts exactly there.
    for start in 0..60u64 {
        let fetched = log.read(start, 300).expect("read");
        assert_eq!(fetched.records[0].offset, start);
        let expected = format!("{start}-{value}");
        assert_eq!(
            fetched.records[0].value.as_deref(),
            Some(expected.as_bytes())
        );
    }
}

#[test]
fn reads_start_inside_a_batch_and_respect_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    append_values(&log, &["a", "b", "c", "d", "e"], 1);
    let fetched = log.read(2, 1 << 20).expect("read");
    assert_eq!(values(&fetched.records), ["c", "d", "e"]);
    assert_eq!(fetched.records[0].offset, 2);

    // max_bytes 0 still yields one record; small budgets yield few.
    assert_eq!(log.read(0, 0).expect("read").records.len(), 1);
    let few = log.read(0, 10).expect("read").records.len();
    assert!((1..5).contains(&few), "{few} records for 10 bytes");

    // A record larger than the budget still comes back alone.
    let big = "x".repeat(5000);
    append_values(&log, &[&big], 2);
    let fetched = log.read(5, 10).expect("read");
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(
        fetched.records[0].value.as_deref().map(<[u8]>::len),
        Some(5000)
    );

    // Huge budgets are capped (at MAX_FETCH_BYTES), not allocated.
    assert_eq!(log.read(0, usize::MAX).expect("read").records.len(), 6);
}

#[test]
fn reads_at_or_past_the_end_are_empty_and_below_the_start_are_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    let empty = log.read(0, 100).expect("read");
    assert!(empty.records.is_empty());
    assert_eq!((empty.log_start_offset, empty.high_watermark), (0, 0));

    append_values(&log, &["a", "b"], 1);
    assert!(log.read(2, 100).expect("read").records.is_empty());
    let past = log.read(1000, 100).expect("read");
    assert!(past.records.is_empty());
    assert_eq!(past.high_watermark, 2);

    // Push the log start forward with retention, then read below it.
    let big = "x".repeat(600);
    for _ in 0..4 {
        append_values(&log, &[&big, &big], 1);
    }
    let stats = log
        .apply_retention(
            &RetentionPolicy {
                retention_ms: Some(1),
                retention_bytes: None,
            },
            1_000_000,
        )
        .expect("retention");
    assert!(stats.segments > 0);
    let start = log.offsets().earliest;
    assert!(start > 0);
    match log.read(0, 100) {
        Err(BrokerError::OffsetOutOfRange {
            requested,
            log_start_offset,
            high_watermark,
            ..
        }) => {
            assert_eq!(requested, 0);
            assert_eq!(log_start_offset, start);
            assert_eq!(high_watermark, 10);
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(log.read(start, 100).expect("read").records[0].offset, start);
}

#[test]
fn offset_for_timestamp_finds_the_first_offset_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), None);
    // Timestamps are not monotonic: offset 1 (20) comes before offset 2 (15).
    let records = [
        Plain::value("a", 10),
        Plain::value("b", 20),
        Plain::value("c", 15),
    ];
    log.append(&mut batch_of(&records)).expect("append");
    let filler = "f".repeat(300);
    for ts in [30, 40, 50, 60, 70] {
        append_values(&log, &[&filler, &filler], ts);
    }
    assert!(log.segment_count() > 2);
    let lookup = |ts| log.offset_for_timestamp(ts).expect("lookup");
    assert_eq!(lookup(i64::MIN), Some(0));
    assert_eq!(lookup(10), Some(0));
    assert_eq!(lookup(11), Some(1));
    assert_eq!(lookup(15), Some(1));
    assert_eq!(lookup(21), Some(3));
    assert_eq!(lookup(45), Some(7));
    assert_eq!(lookup(70), Some(11));
    assert_eq!(lookup(71), None);

    let reopened = open_log(dir.path(), small_settings());
    assert_eq!(reopened.offset_for_timestamp(45).expect("lookup"), Some(7));
}

#[test]
fn retention_by_age_deletes_old_sealed_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    let value = "v".repeat(300);
    // Old data fills a few segments, then recent data.
    for _ in 0..8 {
        append_values(&log, &[&value], 1_000);
    }
    for _ in 0..4 {
        append_values(&log, &[&value], 1_000_000);
    }
    let segments = log.segment_count();
    let policy = RetentionPolicy {
        retention_ms: Some(10_000),
        retention_bytes: None,
    };
    let stats = log.apply_retention(&policy, 1_005_000).expect("retention");
    assert!(stats.segments > 0);
    assert_eq!(log.segment_count(), segments - stats.segments);
    let offsets = log.offsets();
    assert_eq!(offsets.latest, 12);
    assert!(offsets.earliest > 0 && offsets.earliest <= 8);
    // Every remaining segment holds recent data, or is the first after the old ones.
    let remaining = read_all(&log, 1 << 20);
    assert_eq!(remaining.first().map(|r| r.offset), Some(offsets.earliest));
    assert!(remaining.iter().filter(|r| r.timestamp_ms == 1_000).count() < 8);
    assert_eq!(
        remaining
            .iter()
            .filter(|r| r.timestamp_ms == 1_000_000)
            .count(),
        4
    );

    // The log start survives reopen, and the active segment is never
    // deleted even when everything is old.
    let log = open_log(dir.path(), small_settings());
    assert_eq!(log.offsets(), offsets);
    log.apply_retention(&policy, i64::MAX).expect("retention");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.offsets().latest, 12);
    append_values(&log, &["after"], 5);
    assert_eq!(log.offsets().latest, 13);
}

#[test]
fn retention_by_bytes_deletes_oldest_segments_until_under_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    let value = "v".repeat(300);
    for i in 0..20 {
        append_values(&log, &[&value], i);
    }
    let before = log.size_bytes();
    let policy = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(2500),
    };
    let stats = log.apply_retention(&policy, 0).expect("retention");
    assert!(stats.segments > 0);
    assert_eq!(log.size_bytes(), before - stats.bytes);
    assert!(log.size_bytes() <= 2500, "{} bytes left", log.size_bytes());
    // Whole segments from the start: the rest reads contiguously to the end.
    let start = log.offsets().earliest;
    let records = read_all(&log, 1 << 20);
    assert_eq!(records.len() as u64, 20 - start);
    // A second pass has nothing left to do.
    assert_eq!(
        log.apply_retention(&policy, 0).expect("retention").segments,
        0
    );
    // Deleted files are gone from disk.
    let logs = fs::read_dir(dir.path())
        .expect("ls")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert_eq!(logs, log.segment_count());
}

#[test]
fn one_fsync_round_covers_every_earlier_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(open_log(dir.path(), small_settings()));
    for i in 0..5 {
        append_values(&log, &["a", "b"], i);
    }
    assert_eq!(log.synced_offset(), 0);
    log.sync().expect("sync");
    assert_eq!(log.fsync_rounds(), 1);
    assert_eq!(log.synced_offset(), 10);
    // Nothing new: no fsync.
    log.sync().expect("sync");
    assert_eq!(log.fsync_rounds(), 1);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        append_values(&log, &["c"], 9);
        append_values(&log, &["d"], 9);
        // Waiting for the later offset makes the earlier one durable too.
        log.wait_durable(12).await.expect("durable");
        assert_eq!(log.fsync_rounds(), 2);
        log.wait_durable(11).await.expect("durable");
        assert_eq!(log.fsync_rounds(), 2);
    });
}

#[test]
fn oversized_batches_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), small_settings());
    let huge = vec![0u8; crate::embedded::MAX_BATCH_BYTES];
    let mut batch = BatchBuilder::new();
    batch.push(0, None, Some(&huge), &[]);
    assert!(matches!(
        log.append(&mut batch),
        Err(BrokerError::RecordTooLarge { .. })
    ));
    assert_eq!(log.offsets().latest, 0);
    assert_eq!(log.size_bytes(), 0);
}
