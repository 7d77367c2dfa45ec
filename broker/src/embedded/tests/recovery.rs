//! Recovery: torn and corrupt files, damaged indexes, reopen.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::BrokerError;

const FIRST_SEGMENT: &str = "00000000000000000000.log";

fn one_segment_settings() -> LogSettings {
    LogSettings {
        segment_bytes: 1 << 20,
        index_interval_bytes: 64,
    }
}

/// Writes batches `["a","b"]`, `["c"]`, `["d","e","f"]` into one segment and
/// returns the segment's bytes and where each batch ends.
fn three_batches() -> (Vec<u8>, Vec<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_log(dir.path(), one_segment_settings());
    let mut ends = Vec::new();
    for (values, ts) in [
        (&["a", "b"][..], 1),
        (&["c"][..], 2),
        (&["d", "e", "f"][..], 3),
    ] {
        append_values(&log, values, ts);
        ends.push(log.size_bytes());
    }
    let bytes = fs::read(dir.path().join(FIRST_SEGMENT)).expect("read segment");
    (bytes, ends)
}

fn segment_len(dir: &Path) -> u64 {
    fs::metadata(dir.join(FIRST_SEGMENT)).expect("stat").len()
}

#[test]
fn a_log_cut_at_every_byte_recovers_every_whole_batch() {
    let (bytes, ends) = three_batches();
    let all = ["a", "b", "c", "d", "e", "f"];
    let offsets_after = [2usize, 3, 6];
    for cut in 0..=bytes.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FIRST_SEGMENT), &bytes[..cut]).expect("write");
        let log = open_log(dir.path(), one_segment_settings());

        let whole = ends.iter().filter(|&&end| end <= cut as u64).count();
        let kept = if whole == 0 {
            0
        } else {
            offsets_after[whole - 1]
        };
        let valid_bytes = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(log.offsets().latest, kept as u64, "cut at {cut}");
        assert_eq!(
            values(&read_all(&log, 1 << 20)),
            all[..kept],
            "cut at {cut}"
        );
        assert_eq!(segment_len(dir.path()), valid_bytes, "cut at {cut}");

        // The log goes on from there, and keeps it across a reopen.
        let appended = append_values(&log, &["g"], 9);
        assert_eq!(appended.base_offset, kept as u64);
        drop(log);
        let log = open_log(dir.path(), one_segment_settings());
        let mut expected: Vec<&str> = all[..kept].to_vec();
        expected.push("g");
        assert_eq!(values(&read_all(&log, 1 << 20)), expected, "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_truncates_the_log_at_that_batch() {
    let (bytes, ends) = three_batches();
    // Every byte of the middle batch, header and records alike.
    for at in ends[0]..ends[1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x20;
        fs::write(dir.path().join(FIRST_SEGMENT), &damaged).expect("write");
        let log = open_log(dir.path(), one_segment_settings());
        assert_eq!(log.offsets().latest, 2, "flip at {at}");
        assert_eq!(values(&read_all(&log, 1 << 20)), ["a", "b"], "flip at {at}");
        assert_eq!(segment_len(dir.path()), ends[0], "flip at {at}");
    }
}

#[test]
fn zeroes_after_the_last_batch_are_cut() {
    // What a file system may leave after a crash: the size grew, the data did not.
    let (mut bytes, ends) = three_batches();
    bytes.extend_from_slice(&[0u8; 4096]);
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join(FIRST_SEGMENT), &bytes).expect("write");
    let log = open_log(dir.path(), one_segment_settings());
    assert_eq!(log.offsets().latest, 6);
    assert_eq!(segment_len(dir.path()), ends[2]);
}

/// A log with several sealed segments; returns their `.index` paths.
fn multi_segment_log(dir: &Path) -> Vec<PathBuf> {
    let log = open_log(dir, small_settings());
    let value = "v".repeat(90);
    for i in 0..40 {
        append_values(&log, &[&format!("{i:02}{value}")], i);
    }
    assert!(log.segment_count() >= 4);
    let mut indexes: Vec<PathBuf> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    assert_eq!(
        indexes.len(),
        log.segment_count() - 1,
        "one index per sealed segment"
    );
    indexes
}

fn assert_reads_from_every_offset(log: &PartitionLog, count: u64) {
    assert_eq!(log.offsets().latest, count);
    for start in 0..count {
        let fetched = log.read(start, 200).expect("read");
        assert_eq!(fetched.records[0].offset, start);
        let prefix = format!("{start:02}");
        assert!(fetched.records[0]
            .value
            .as_deref()
            .is_some_and(|v| v.starts_with(prefix.as_bytes())));
    }
}

#[test]
fn missing_or_damaged_indexes_of_sealed_segments_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indexes = multi_segment_log(dir.path());
    let originals: Vec<Vec<u8>> = indexes.iter().map(|p| fs::read(p).expect("read")).collect();

    fs::remove_file(&indexes[0]).expect("rm");
    fs::write(&indexes[1], b"garbage").expect("write");
    let mut flipped = originals[2].clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    fs::write(&indexes[2], &flipped).expect("write");

    let log = open_log(dir.path(), small_settings());
    assert_reads_from_every_offset(&log, 40);
    // Rebuilt the same as written at seal time.
    for (path, original) in indexes.iter().zip(&originals).take(3) {
        assert_eq!(
            &fs::read(path).expect("read"),
            original,
            "{}",
            path.display()
        );
    }
}

#[test]
fn an_index_damaged_after_open_is_rebuilt_on_first_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indexes = multi_segment_log(dir.path());
    let log = open_log(dir.path(), small_settings());
    // The summary was checked at open; the entries are read lazily.
    for path in &indexes {
        let mut bytes = fs::read(path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(path, &bytes).expect("write");
    }
    assert_reads_from_every_offset(&log, 40);
}

#[test]
fn damage_inside_a_sealed_segment_is_reported_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_segment_log(dir.path());
    let path = dir.path().join(FIRST_SEGMENT);
    let mut bytes = fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).expect("write");

    let log = open_log(dir.path(), small_settings());
    assert_eq!(
        log.offsets().latest,
        40,
        "sealed segments are never truncated"
    );
    // Records before the damage are served, then the damaged batch is an error.
    let before = log.read(0, 1 << 20).expect("read up to the damage");
    let damaged_at = before.records.last().map_or(0, |r| r.offset + 1);
    assert!(damaged_at > 0 && damaged_at < 20, "damage at {damaged_at}");
    match log.read(damaged_at, 1 << 20) {
        Err(BrokerError::Corrupt { location, reason }) => {
            assert!(location.contains(FIRST_SEGMENT), "{location}");
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Later segments are unaffected.
    let later = log.read(20, 1 << 20).expect("read");
    assert_eq!(later.records[0].offset, 20);
}

#[test]
fn leftovers_are_cleaned_and_unknown_files_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_segment_log(dir.path());
    let tmp = dir.path().join("00000000000000000000.index.tmp");
    let orphan = dir.path().join("00000000000000099999.index");
    let stranger = dir.path().join("notes.txt");
    fs::write(&tmp, b"half").expect("write");
    fs::write(&orphan, b"old").expect("write");
    fs::write(&stranger, b"hello").expect("write");
    let log = open_log(dir.path(), small_settings());
    assert!(!tmp.exists());
    assert!(!orphan.exists());
    assert!(stranger.exists());
    assert_reads_from_every_offset(&log, 40);
}

#[test]
fn a_reopened_log_keeps_everything_and_appends_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    multi_segment_log(dir.path());
    let log = open_log(dir.path(), small_settings());
    let segments = log.segment_count();
    assert_reads_from_every_offset(&log, 40);
    let appended = append_values(&log, &["40"], 40);
    assert_eq!(appended.base_offset, 40);
    drop(log);
    let log = open_log(dir.path(), small_settings());
    assert_eq!(log.offsets().latest, 41);
    assert!(log.segment_count() >= segments);
    assert_eq!(log.offset_for_timestamp(40).expect("lookup"), Some(40));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_segment_content_never_panics_and_keeps_the_valid_prefix(
        garbage in proptest::collection::vec(any::<u8>(), 0..600),
        keep in 0usize..4,
    ) {
        let (bytes, ends) = three_batches();
        let keep = keep.min(ends.len());
        let prefix = if keep == 0 { 0 } else { ends[keep - 1] as usize };
        let mut content = bytes[..prefix].to_vec();
        content.extend_from_slice(&garbage);
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FIRST_SEGMENT), &content).expect("write");
        fs::write(dir.path().join("00000000000000000000.index"), &garbage).expect("write");
        let log = open_log(dir.path(), one_segment_settings());
        let offsets_after = [0u64, 2, 3, 6];
        // Random bytes could only extend the log by forging a CRC32C.
        prop_assert!(log.offsets().latest >= offsets_after[keep]);
        let records = read_all(&log, 1 << 20);
        prop_assert_eq!(records.len() as u64, log.offsets().latest);
    }
}

#[test]
fn a_segment_named_at_the_end_of_the_offset_space_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = crate::embedded::files::segment_file_name(u64::MAX - 1, "log");
    fs::write(dir.path().join(name), b"").expect("write");
    let log = open_log(dir.path(), small_settings());
    assert_eq!(log.offsets().latest, u64::MAX - 1);
    append_values(&log, &["last"], 1);
    assert_eq!(log.offsets().latest, u64::MAX);
    let mut batch = batch_of(&[Plain::value("more", 1)]);
    assert!(matches!(log.append(&mut batch), Err(BrokerError::Io(_))));
    assert_eq!(
        values(&log.read(u64::MAX - 1, 100).expect("read").records),
        ["last"]
    );
}
