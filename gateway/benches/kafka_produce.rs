//! Produce to one Kafka-protocol broker through Sluice (REST over TLS,
//! batches of 100 records) against the same load produced straight to that
//! broker with librdkafka, in the same run: the gateway's overhead is the
//! ratio of the two.
//!
//! `cargo bench -p sluice --bench kafka_produce` (needs the test bed's
//! tansu: `scripts/install-test-deps`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sluice::Gateway;
use sluice_config::{ClusterConfig, Config};
use sluice_testbed::KafkaTestbed;

/// Records per measured iteration, on both paths.
const RECORDS: usize = 20_000;
/// Records per REST request, and the producer's batch size in records.
const BATCH: usize = 100;
/// REST requests in flight at once.
const CONCURRENCY: usize = 64;
const VALUE_BYTES: usize = 100;
const TOPIC: &str = "bench";
const PARTITIONS: u32 = 3;

struct Setup {
    _bed: KafkaTestbed,
    _dir: tempfile::TempDir,
    gateway: Option<Gateway>,
    url: String,
    http: reqwest::Client,
    direct: FutureProducer,
    body: Arc<String>,
}

fn setup(runtime: &tokio::runtime::Runtime) -> Setup {
    runtime.block_on(async {
        let bed = KafkaTestbed::start(1)
            .await
            .expect("test bed (run scripts/install-test-deps)");
        bed.create_topic(0, TOPIC, PARTITIONS)
            .await
            .expect("topic created");
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_owned();
        config.listener.address = "127.0.0.1:0".parse().unwrap();
        config.admin.address = "127.0.0.1:0".parse().unwrap();
        config.clusters = vec![ClusterConfig::kafka("kafka-0", &bed.bootstrap(0))];
        let gateway = Gateway::start(config).await.expect("gateway");
        let ca = std::fs::read(gateway.generated_ca_file.clone().unwrap()).unwrap();
        // HTTP/1.1 with a connection per request in flight, as many REST
        // clients behave; one HTTP/2 connection would put all the TLS of
        // both sides on one task each.
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .pool_max_idle_per_host(CONCURRENCY)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{}", gateway.addr.port());
        // The same producer settings Sluice's Kafka backend uses by default.
        let direct: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bed.bootstrap(0))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("batch.num.messages", "10000")
            .create()
            .unwrap();
        let value = BASE64.encode(vec![b'x'; VALUE_BYTES]);
        let records: Vec<_> = (0..BATCH)
            .map(|i| json!({"key": BASE64.encode(format!("k{i}")), "value": value}))
            .collect();
        let body = Arc::new(json!({ "records": records }).to_string());
        Setup {
            _bed: bed,
            _dir: dir,
            gateway: Some(gateway),
            url,
            http,
            direct,
            body,
        }
    })
}

async fn through_sluice(s: &Setup) -> Duration {
    let start = Instant::now();
    let requests = RECORDS / BATCH;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (http, url, body) = (s.http.clone(), s.url.clone(), s.body.clone());
        tasks.spawn(async move {
            for _ in (worker..requests).step_by(CONCURRENCY) {
                let reply = http
                    .post(format!("{url}/topics/{TOPIC}?acks=all"))
                    .header("Content-Type", "application/vnd.kafka.binary.v2+json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(reply.status(), 200);
                reply.bytes().await.expect("body");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
    start.elapsed()
}

async fn direct(s: &Setup) -> Duration {
    let value = vec![b'x'; VALUE_BYTES];
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let key = format!("k{}", i % BATCH);
        let record = FutureRecord::to(TOPIC).key(&key).payload(&value);
        deliveries.push(s.direct.send_result(record).expect("queued"));
    }
    for d in deliveries {
        d.await.expect("delivered").expect("acked");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut s = setup(&runtime);
    let mut group = c.benchmark_group("kafka_produce");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("direct_librdkafka", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| runtime.block_on(direct(&s))).sum())
    });
    group.bench_function("through_sluice_rest", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(through_sluice(&s)))
                .sum()
        })
    });
    group.finish();
    if let Some(gateway) = s.gateway.take() {
        runtime.block_on(gateway.stop());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
