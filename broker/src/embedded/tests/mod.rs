//! Tests of the embedded backend against real files in temp directories.
//!
//! - `log`: [`PartitionLog`] appends, reads, segments, timestamps, retention.
//! - `recovery`: torn and corrupt files, damaged indexes, reopen.
//! - `cluster`: [`EmbeddedCluster`] through the [`crate::Cluster`] trait.

mod cluster;
mod log;
mod recovery;

use std::path::Path;

use bytes::Bytes;
use sluice_config::{EmbeddedConfig, FsyncPolicy};

use super::{BatchBuilder, LogSettings, PartitionLog};
use crate::record::{Header, Record};

/// Small segments and a dense index, so a few records exercise rolls and
/// index lookups.
fn small_settings() -> LogSettings {
    LogSettings {
        segment_bytes: 1024,
        index_interval_bytes: 128,
    }
}

fn open_log(dir: &Path, settings: LogSettings) -> PartitionLog {
    PartitionLog::open(dir, "t", 0, settings).expect("open log")
}

/// A record as the tests describe it: key, value, timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plain {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp_ms: i64,
}

impl Plain {
    fn value(value: &str, timestamp_ms: i64) -> Self {
        Self {
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            timestamp_ms,
        }
    }

    fn headers(&self) -> Vec<Header> {
        self.headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone().into(),
                value: Bytes::copy_from_slice(value),
            })
            .collect()
    }

    fn matches(&self, record: &Record) -> bool {
        record.key.as_deref() == self.key.as_deref()
            && record.value.as_deref() == self.value.as_deref()
            && record.headers == self.headers()
            && record.timestamp_ms == self.timestamp_ms
    }
}

fn batch_of(records: &[Plain]) -> BatchBuilder {
    let mut batch = BatchBuilder::new();
    for r in records {
        batch.push(
            r.timestamp_ms,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers(),
        );
    }
    batch
}

/// Appends one batch of the given values (timestamp = value index).
fn append_values(log: &PartitionLog, values: &[&str], timestamp_ms: i64) -> super::Appended {
    let records: Vec<Plain> = values
        .iter()
        .map(|v| Plain::value(v, timestamp_ms))
        .collect();
    log.append(&mut batch_of(&records)).expect("append")
}

/// Reads the whole log from its start in reads of `max_bytes`.
fn read_all(log: &PartitionLog, max_bytes: usize) -> Vec<Record> {
    let mut offset = log.offsets().earliest;
    let mut out = Vec::new();
    loop {
        let fetched = log.read(offset, max_bytes).expect("read");
        let Some(last) = fetched.records.last() else {
            return out;
        };
        offset = last.offset + 1;
        out.extend(fetched.records);
    }
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"<null>")).into_owned())
        .collect()
}

fn config(fsync: FsyncPolicy) -> EmbeddedConfig {
    EmbeddedConfig {
        fsync,
        fsync_interval_ms: 5,
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        retention_bytes: None,
        retention_check_interval_ms: 60_000,
    }
}
