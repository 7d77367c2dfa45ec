//! Criterion benchmarks of the embedded log, on [`PartitionLog`] directly
//! (no runtime): appends of 100-byte records in batches of 1, 100 and 1000
//! under each fsync policy, and a sequential read of a large partition.
//!
//! Run: `cargo bench -p sluice-broker --bench log`. Results are recorded in
//! `bench/RESULTS.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_broker::embedded::{BatchBuilder, LogSettings, PartitionLog};
use sluice_config::{
    DEFAULT_FSYNC_INTERVAL_MS, DEFAULT_INDEX_INTERVAL_BYTES, DEFAULT_SEGMENT_BYTES,
};

const RECORD_BYTES: usize = 100;
const READ_RECORDS: u64 = 1_000_000;
const READ_MAX_BYTES: usize = 1024 * 1024;

fn settings() -> LogSettings {
    LogSettings {
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
    }
}

fn fill(batch: &mut BatchBuilder, records: usize, value: &[u8]) {
    batch.clear();
    for i in 0..records {
        batch.push(1_700_000_000_000 + i as i64, None, Some(value), &[]);
    }
}

/// Fsyncs the log every `fsync_interval_ms`, as the cluster's background
/// thread does under `fsync = "interval"`.
struct IntervalSyncer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl IntervalSyncer {
    fn start(log: Arc<PartitionLog>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(DEFAULT_FSYNC_INTERVAL_MS));
                log.sync().expect("interval fsync");
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for IntervalSyncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn append(c: &mut Criterion) {
    let value = vec![0x5a; RECORD_BYTES];
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for policy in ["always", "interval", "never"] {
        for batch_size in [1usize, 100, 1000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log =
                Arc::new(PartitionLog::open(dir.path(), "bench", 0, settings()).expect("open"));
            let _syncer = (policy == "interval").then(|| IntervalSyncer::start(Arc::clone(&log)));
            let mut batch = BatchBuilder::with_capacity(batch_size * (RECORD_BYTES + 16));
            group.throughput(Throughput::Elements(batch_size as u64));
            group.bench_function(BenchmarkId::new(policy, batch_size), |b| {
                b.iter(|| {
                    fill(&mut batch, batch_size, &value);
                    log.append(&mut batch).expect("append");
                    if policy == "always" {
                        log.sync().expect("fsync");
                    }
                });
            });
        }
    }
    group.finish();
}

fn sequential_read(c: &mut Criterion) {
    let value = vec![0x5a; RECORD_BYTES];
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), "bench", 0, settings()).expect("open");
    let mut batch = BatchBuilder::with_capacity(1000 * (RECORD_BYTES + 16));
    for _ in 0..READ_RECORDS / 1000 {
        fill(&mut batch, 1000, &value);
        log.append(&mut batch).expect("append");
    }
    log.sync().expect("fsync");

    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(READ_RECORDS));
    group.bench_function(
        BenchmarkId::new("sequential_1MiB_fetches", READ_RECORDS),
        |b| {
            b.iter(|| {
                let mut offset = 0;
                let mut read = 0u64;
                while offset < READ_RECORDS {
                    let fetched = log.read(offset, READ_MAX_BYTES).expect("read");
                    let last = fetched.records.last().expect("records").offset;
                    read += fetched.records.len() as u64;
                    offset = last + 1;
                }
                assert_eq!(read, READ_RECORDS);
            });
        },
    );
    group.finish();
}

criterion_group!(benches, append, sequential_read);
criterion_main!(benches);
