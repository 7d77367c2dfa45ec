//! Produce throughput through the federation: one embedded cluster against
//! three, in the same run.
//!
//! `cargo bench -p sluice-federation --bench produce`. Real
//! [`EmbeddedCluster`]s in temp dirs with `fsync = "never"` (the disk would
//! otherwise dominate), behind [`Federation::open`] with a [`MemoryStore`],
//! on a two-worker tokio runtime. Each iteration is one round of
//! [`TOPICS`] produce calls of [`BATCH_RECORDS`] records with
//! [`VALUE_BYTES`]-byte values, acks=1, one call per topic (round-robin),
//! driven by [`PRODUCERS`] concurrent tasks. The topics are placed and
//! created by a first produce before measuring, so placement is not in the
//! figure; building the records is outside the timed section.
//!
//! - `produce/direct-1-cluster`: the same rounds straight to one
//!   [`EmbeddedCluster`], no federation: the floor the others are read against.
//! - `produce/federated-1-cluster` (case A) and
//!   `produce/federated-3-clusters` (case B): the target is B/A >= 0.95.
//! - `route/*`: the routing cost alone, on the three-cluster federation:
//!   `describe_topic` (a placement table lookup), and a one-record produce
//!   straight to the topic's home cluster against the same through the
//!   federation; the difference is what routing adds to each call.
//!
//! The criterion cases run one after another, seconds apart, and on a
//! shared two-core machine the load (and the page-cache writeback of the
//! earlier cases' data) changes between them by more than the 5 % that
//! B/A is about. So after them the bench also alternates B with A, and A
//! with the direct case, in short blocks of rounds and prints the paired
//! ratios (see [`paired_ratio`]); only under `cargo bench`, not
//! `cargo test --benches` or `--list`.
//!
//! All three setups stay open for the whole run and are shut down and
//! removed at its end; the run writes a few GB to the temp dir's file
//! system (page cache, written back by the OS). Results are recorded in
//! `bench/RESULTS.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_broker::embedded::EmbeddedCluster;
use sluice_broker::{Acks, Cluster, ProduceRecord};
use sluice_config::{ClusterConfig, Config, EmbeddedConfig, FsyncPolicy};
use sluice_federation::store::MemoryStore;
use sluice_federation::Federation;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Topics written per round, each once.
const TOPICS: usize = 64;
/// Records per produce call.
const BATCH_RECORDS: usize = 100;
/// Bytes of each record's value (no key, no headers).
const VALUE_BYTES: usize = 100;
/// Concurrent producer tasks; producer `p` writes topics `p`, `p + PRODUCERS`, ...
const PRODUCERS: usize = 8;
/// Runtime workers: the machine's cores.
const WORKERS: usize = 2;

static VALUE: [u8; VALUE_BYTES] = [0x5a; VALUE_BYTES];

fn records(count: usize) -> Vec<ProduceRecord> {
    (0..count)
        .map(|_| ProduceRecord {
            // A static slice: cloned per record without allocating.
            value: Some((&VALUE[..]).into()),
            ..ProduceRecord::default()
        })
        .collect()
}

fn topic_names() -> Arc<[String]> {
    (0..TOPICS)
        .map(|i| format!("bench.produce-{i:02}"))
        .collect()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn embedded_config() -> EmbeddedConfig {
    EmbeddedConfig {
        fsync: FsyncPolicy::Never,
        // No retention thread waking up in the middle of a measurement.
        retention_ms: None,
        ..EmbeddedConfig::default()
    }
}

/// Embedded clusters, each in its own temp dir, shut down on [`Self::close`].
struct Clusters {
    clusters: Vec<Arc<EmbeddedCluster>>,
    dirs: Vec<TempDir>,
}

impl Clusters {
    fn open(count: usize) -> Self {
        let config = embedded_config();
        let (clusters, dirs) = (0..count)
            .map(|i| {
                let dir = tempfile::tempdir().expect("tempdir");
                let cluster = EmbeddedCluster::open(&format!("bench-{i}"), dir.path(), &config)
                    .expect("open embedded cluster");
                (cluster, dir)
            })
            .unzip();
        Self { clusters, dirs }
    }

    fn close(self) {
        for cluster in &self.clusters {
            cluster.shutdown().expect("shut down embedded cluster");
        }
        drop(self.clusters);
        for dir in self.dirs {
            dir.close().expect("remove cluster dir");
        }
    }
}

/// A federation over fresh embedded clusters, its topics placed and created.
struct Federated {
    federation: Arc<Federation>,
    clusters: Clusters,
}

impl Federated {
    fn open(rt: &Runtime, count: usize, topics: &[String]) -> Self {
        let clusters = Clusters::open(count);
        let config = Config {
            clusters: clusters
                .clusters
                .iter()
                .map(|c| ClusterConfig {
                    embedded: embedded_config(),
                    ..ClusterConfig::embedded(c.name())
                })
                .collect(),
            ..Config::default()
        };
        let members = config
            .clusters
            .iter()
            .cloned()
            .zip(
                clusters
                    .clusters
                    .iter()
                    .map(|c| Arc::clone(c) as Arc<dyn Cluster>),
            )
            .collect();
        let federation = rt.block_on(async {
            let federation = Federation::open(members, &config, Arc::new(MemoryStore::new()))
                .await
                .expect("open federation");
            for topic in topics {
                federation
                    .produce(topic, records(BATCH_RECORDS), Acks::Leader)
                    .await
                    .expect("first produce places the topic");
            }
            federation
        });
        Self {
            federation,
            clusters,
        }
    }

    /// How many topics each cluster is home to, for the record.
    fn spread(&self) -> String {
        let homes = self.federation.homes();
        self.clusters
            .clusters
            .iter()
            .map(|c| {
                let n = homes.iter().filter(|(_, home)| home == c.name()).count();
                format!("{}={n}", c.name())
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn close(self) {
        // Dropping the federation aborts its health probe.
        drop(self.federation);
        self.clusters.close();
    }
}

/// Where a round's produce calls go.
#[derive(Clone)]
enum Target {
    Direct(Arc<EmbeddedCluster>),
    Federated(Arc<Federation>),
}

impl Target {
    async fn produce(&self, topic: &str, batch: Vec<ProduceRecord>) {
        let produced = match self {
            Self::Direct(cluster) => cluster
                .produce(topic, batch, Acks::Leader)
                .await
                .expect("direct produce"),
            Self::Federated(federation) => federation
                .produce(topic, batch, Acks::Leader)
                .await
                .expect("federated produce"),
        };
        debug_assert_eq!(produced.len(), BATCH_RECORDS);
        black_box(produced);
    }
}

/// One round's batches, per producer: `(topic index, records)`.
fn round() -> Vec<Vec<(usize, Vec<ProduceRecord>)>> {
    (0..PRODUCERS)
        .map(|p| {
            (p..TOPICS)
                .step_by(PRODUCERS)
                .map(|t| (t, records(BATCH_RECORDS)))
                .collect()
        })
        .collect()
}

async fn run_round(
    target: &Target,
    topics: &Arc<[String]>,
    work: Vec<Vec<(usize, Vec<ProduceRecord>)>>,
) {
    let mut producers = JoinSet::new();
    for batches in work {
        let (target, topics) = (target.clone(), Arc::clone(topics));
        producers.spawn(async move {
            for (t, batch) in batches {
                target.produce(&topics[t], batch).await;
            }
        });
    }
    while let Some(done) = producers.join_next().await {
        done.expect("producer task");
    }
}

/// Times `iters` rounds; building each round's records is not timed.
fn time_rounds(rt: &Runtime, target: &Target, topics: &Arc<[String]>, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let work = round();
        let start = Instant::now();
        rt.block_on(run_round(target, topics, work));
        total += start.elapsed();
    }
    total
}

fn produce(c: &mut Criterion) {
    let rt = runtime();
    let topics = topic_names();

    let direct = Clusters::open(1);
    rt.block_on(async {
        for topic in topics.iter() {
            direct.clusters[0]
                .create_topic(topic, sluice_config::DEFAULT_PARTITIONS)
                .await
                .expect("create topic");
        }
    });
    let one = Federated::open(&rt, 1, &topics);
    let three = Federated::open(&rt, 3, &topics);
    eprintln!("topics per cluster, 3 clusters: {}", three.spread());

    let cases = [
        (
            "direct-1-cluster",
            Target::Direct(Arc::clone(&direct.clusters[0])),
        ),
        (
            "federated-1-cluster",
            Target::Federated(Arc::clone(&one.federation)),
        ),
        (
            "federated-3-clusters",
            Target::Federated(Arc::clone(&three.federation)),
        ),
    ];
    let mut group = c.benchmark_group("produce");
    group
        .throughput(Throughput::Elements((TOPICS * BATCH_RECORDS) as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    for (name, target) in &cases {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| time_rounds(&rt, target, &topics, iters))
        });
    }
    group.finish();
    if measuring() {
        let [direct_case, one_case, three_case] = &cases;
        paired_ratio(&rt, one_case, three_case, &topics);
        paired_ratio(&rt, direct_case, one_case, &topics);
    }
    drop(cases);

    route(c, &rt, &three, &topics);

    direct.close();
    one.close();
    three.close();
}

/// Whether criterion is measuring (`cargo bench`), rather than testing
/// (`cargo test --benches`), listing or profiling.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--list" || a == "--test" || a.starts_with("--profile-time"))
}

/// Blocks of rounds alternating between case A and case B.
const PAIRED_BLOCKS: usize = 200;
/// Rounds per block (a round is 6,400 records, 1 to 3 ms here): short, so
/// the two blocks of a pair see nearly the same load.
const PAIRED_ROUNDS: u64 = 20;

/// Throughput of `b` over that of `a`, measured in alternating blocks and
/// printed to stderr: both cases run under the same load, so the per-block
/// ratios cancel it out.
fn paired_ratio(
    rt: &Runtime,
    (name_a, a): &(&str, Target),
    (name_b, b): &(&str, Target),
    topics: &Arc<[String]>,
) {
    let (mut total_a, mut total_b) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(PAIRED_BLOCKS);
    for block in 0..PAIRED_BLOCKS {
        // Neither case always goes first.
        let (ta, tb) = if block % 2 == 0 {
            let ta = time_rounds(rt, a, topics, PAIRED_ROUNDS);
            (ta, time_rounds(rt, b, topics, PAIRED_ROUNDS))
        } else {
            let tb = time_rounds(rt, b, topics, PAIRED_ROUNDS);
            (time_rounds(rt, a, topics, PAIRED_ROUNDS), tb)
        };
        total_a += ta;
        total_b += tb;
        // Throughput b / throughput a = time a / time b.
        ratios.push(ta.as_secs_f64() / tb.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    // A distribution-free 95 % interval for the median: the order
    // statistics n/2 -+ 0.98 sqrt(n) (the normal approximation of the
    // binomial), which holds whatever the shape of the per-block noise.
    let n = PAIRED_BLOCKS as f64;
    let half_width = 0.98 * n.sqrt();
    let low = ((n / 2.0 - half_width).floor() as usize).min(PAIRED_BLOCKS - 1);
    let high = ((n / 2.0 + half_width).ceil() as usize).min(PAIRED_BLOCKS - 1);
    let records = (PAIRED_BLOCKS as u64 * PAIRED_ROUNDS * (TOPICS * BATCH_RECORDS) as u64) as f64;
    eprintln!(
        "paired {name_b} / {name_a}, {PAIRED_BLOCKS} alternating blocks of {PAIRED_ROUNDS} rounds: \
         per-block ratio median {:.3} (95 % CI {:.3} - {:.3}), quartiles {:.3} - {:.3}, \
         range {:.3} - {:.3}; totals {name_a} {:.0} records/s, {name_b} {:.0} records/s, \
         ratio {:.3}",
        ratios[PAIRED_BLOCKS / 2],
        ratios[low],
        ratios[high],
        ratios[PAIRED_BLOCKS / 4],
        ratios[3 * PAIRED_BLOCKS / 4],
        ratios[0],
        ratios[PAIRED_BLOCKS - 1],
        records / total_a.as_secs_f64(),
        records / total_b.as_secs_f64(),
        total_a.as_secs_f64() / total_b.as_secs_f64(),
    );
}

/// The routing cost alone, on the three-cluster federation.
fn route(c: &mut Criterion, rt: &Runtime, federated: &Federated, topics: &[String]) {
    let federation = &federated.federation;
    let homes: Vec<Arc<EmbeddedCluster>> = topics
        .iter()
        .map(|t| {
            let home = rt
                .block_on(federation.describe_topic(t))
                .expect("describe topic")
                .cluster;
            federated
                .clusters
                .clusters
                .iter()
                .find(|c| c.name() == home)
                .cloned()
                .expect("home is a member")
        })
        .collect();

    let mut group = c.benchmark_group("route");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // Each sample runs its calls inside one `block_on`, so the figure is
    // the call, not entering the runtime.
    group.bench_function("describe_topic", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let topic = &topics[i % TOPICS];
                    black_box(
                        federation
                            .describe_topic(black_box(topic))
                            .await
                            .expect("describe topic"),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("produce-1/direct-to-home", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters as usize {
                    let batch = records(1);
                    let start = Instant::now();
                    let produced = homes[i % TOPICS]
                        .produce(&topics[i % TOPICS], batch, Acks::Leader)
                        .await;
                    total += start.elapsed();
                    black_box(produced.expect("direct produce"));
                }
                total
            })
        })
    });
    group.bench_function("produce-1/federated", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters as usize {
                    let batch = records(1);
                    let start = Instant::now();
                    let produced = federation
                        .produce(&topics[i % TOPICS], batch, Acks::Leader)
                        .await;
                    total += start.elapsed();
                    black_box(produced.expect("federated produce"));
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, produce);
criterion_main!(benches);
