//! Ring lookups per second.
//!
//! `cargo bench -p sluice-federation --bench ring`. Every iteration looks up
//! the same pre-built topic names, so the figure is the ring's cost alone:
//! no allocation of names, no I/O.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_federation::ring::{StableRingHash, TopicRing};

const TOPICS: usize = 10_000;

fn topics() -> Vec<String> {
    (0..TOPICS)
        .map(|i| format!("tenant-{}.events-{i:05}", i % 97))
        .collect()
}

fn lookups(c: &mut Criterion) {
    let names = topics();
    let three = TopicRing::new([("east", 100), ("west", 100), ("north", 100)]).unwrap();
    let ten = TopicRing::new((0..10).map(|i| (format!("cluster-{i}"), 100))).unwrap();

    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(TOPICS as u64));

    group.bench_function("owner/3-clusters", |b| {
        b.iter(|| {
            for t in &names {
                black_box(three.owner(black_box(t)));
            }
        })
    });
    group.bench_function("owner/10-clusters", |b| {
        b.iter(|| {
            for t in &names {
                black_box(ten.owner(black_box(t)));
            }
        })
    });
    group.bench_function("candidates/3-clusters", |b| {
        b.iter(|| {
            for t in &names {
                for c in three.candidates(black_box(t)) {
                    black_box(c);
                }
            }
        })
    });
    // Where the time goes: the topic hash alone.
    group.bench_function("topic_hash", |b| {
        b.iter(|| {
            for t in &names {
                black_box(StableRingHash::topic_hash(black_box(t)));
            }
        })
    });
    group.finish();

    c.bench_function("ring/build/3-clusters", |b| {
        b.iter(|| TopicRing::new(black_box([("east", 100), ("west", 100), ("north", 100)])))
    });
}

criterion_group!(benches, lookups);
criterion_main!(benches);
