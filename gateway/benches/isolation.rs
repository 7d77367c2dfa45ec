//! Quota isolation: a well-behaved client's produce latency alone, and
//! with a noisy neighbour offering ten times its own produce quota (in
//! `throttle` mode, then in `reject` mode). The target is the calm
//! client's p99 with the neighbour within 1.2x of its p99 alone.
//!
//! `cargo bench -p sluice --bench isolation` (a plain binary, about 40 s;
//! figures in bench/RESULTS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sluice::auth::apikey::{generate_key, hash_key};
use sluice::Gateway;
use sluice_config::{
    AclRule, ApiKeyConfig, AuthConfig, Config, FsyncPolicy, Operation, QuotaConfig, QuotaMode,
};

/// The allocator of the `sluice` binary, so the gateway here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The calm client: one 1 KB produce every 20 ms, for this long per phase.
const PHASE: Duration = Duration::from_secs(10);
const CALM_INTERVAL: Duration = Duration::from_millis(20);
const CALM_VALUE_BYTES: usize = 750;
/// The noisy client's quota, and what it offers: ten times that.
const NOISY_QUOTA_BYTES_PER_SEC: u64 = 100_000;
const NOISY_FACTOR: u64 = 10;
const NOISY_VALUE_BYTES: usize = 3_700;
const NOISY_MAX_IN_FLIGHT: usize = 32;

struct Setup {
    url: String,
    client: reqwest::Client,
    calm_key: String,
    noisy_key: String,
    gateway: Gateway,
    _dir: tempfile::TempDir,
}

async fn start(mode: QuotaMode) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let calm_key = generate_key().expect("key");
    let noisy_key = generate_key().expect("key");
    let key = |principal: &str, key: &str| ApiKeyConfig {
        principal: principal.into(),
        key_sha256: hash_key(key),
        groups: vec![],
    };
    let mut auth = AuthConfig {
        api_keys: vec![key("calm", &calm_key), key("noisy", &noisy_key)],
        acls: vec![AclRule {
            principal: Some("*".into()),
            group: None,
            topic: None,
            prefix: None,
            operations: vec![Operation::Produce, Operation::Admin],
        }],
        ..AuthConfig::default()
    };
    auth.quotas.principals.insert(
        "noisy".into(),
        QuotaConfig {
            produce_bytes_per_sec: Some(NOISY_QUOTA_BYTES_PER_SEC),
            consume_bytes_per_sec: None,
            requests_per_sec: None,
            max_connections: None,
            max_subscriptions: None,
            burst_ms: 1_000,
            mode,
        },
    );
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_owned();
    config.listener.address = "127.0.0.1:0".parse().expect("address");
    config.admin.address = "127.0.0.1:0".parse().expect("address");
    for cluster in &mut config.clusters {
        cluster.embedded.fsync = FsyncPolicy::Interval;
    }
    config.auth = Some(auth);
    let gateway = Gateway::start(config).await.expect("gateway starts");
    let ca = std::fs::read(gateway.generated_ca_file.as_ref().expect("generated CA")).expect("CA");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .build()
        .expect("client");
    Setup {
        url: format!("https://localhost:{}", gateway.addr.port()),
        client,
        calm_key,
        noisy_key,
        gateway,
        _dir: dir,
    }
}

fn body(value_bytes: usize) -> String {
    let value = base64::engine::general_purpose::STANDARD.encode(vec![1u8; value_bytes]);
    json!({"records": [{"value": value}]}).to_string()
}

async fn produce(setup: &Setup, topic: &str, key: &str, body: String) -> u16 {
    match setup
        .client
        .post(format!("{}/topics/{topic}", setup.url))
        .header("content-type", "application/vnd.kafka.binary.v2+json")
        .bearer_auth(key)
        .body(body)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// The calm client's latencies over one phase, in microseconds, sorted.
async fn calm(setup: &Setup) -> Vec<u64> {
    let body = body(CALM_VALUE_BYTES);
    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(CALM_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + PHASE;
    while Instant::now() < end {
        ticker.tick().await;
        let started = Instant::now();
        let status = produce(setup, "calm.t", &setup.calm_key, body.clone()).await;
        assert_eq!(status, 200, "the calm client is never refused");
        latencies.push(started.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    latencies
}

/// The noisy client: ten times its quota, open loop, bounded in flight.
async fn noisy(setup: Arc<Setup>, stop: Instant) -> (u64, u64) {
    let body = Arc::new(body(NOISY_VALUE_BYTES));
    let interval = Duration::from_secs_f64(
        body.len() as f64 / (NOISY_QUOTA_BYTES_PER_SEC * NOISY_FACTOR) as f64,
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(NOISY_MAX_IN_FLIGHT));
    let mut ticker = tokio::time::interval(interval);
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < stop {
        ticker.tick().await;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let (setup, body) = (Arc::clone(&setup), Arc::clone(&body));
        tasks.spawn(async move {
            let _permit = permit;
            produce(
                &setup,
                "noisy.t",
                &setup.noisy_key,
                body.as_str().to_owned(),
            )
            .await
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(status) = tasks.join_next().await {
        match status {
            Ok(200) => ok += 1,
            _ => refused += 1,
        }
    }
    (ok, refused)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

async fn run(gateway_runtime: &tokio::runtime::Handle) {
    println!(
        "phase | calm requests | calm p50 ms | calm p99 ms | noisy answered 200 | noisy refused"
    );
    for mode in [QuotaMode::Throttle, QuotaMode::Reject] {
        // The gateway runs on its own runtime, as in its own process; the
        // clients share this one.
        let setup = Arc::new(
            gateway_runtime
                .spawn(start(mode))
                .await
                .expect("gateway starts"),
        );
        // Warm up connections and topic creation.
        for topic in ["calm.t", "noisy.t"] {
            produce(&setup, topic, &setup.calm_key, body(10)).await;
        }
        let alone = calm(&setup).await;
        let stop = Instant::now() + PHASE;
        let neighbour = tokio::spawn(noisy(Arc::clone(&setup), stop));
        let with = calm(&setup).await;
        let (ok, refused) = neighbour.await.expect("noisy client");
        let p99_alone = percentile(&alone, 0.99);
        let p99_with = percentile(&with, 0.99);
        println!(
            "alone ({mode:?} quota) | {} | {:.2} | {:.2} | - | -",
            alone.len(),
            percentile(&alone, 0.5),
            p99_alone
        );
        println!(
            "with noisy neighbour at {NOISY_FACTOR}x ({mode:?}) | {} | {:.2} | {:.2} | {ok} | {refused}",
            with.len(),
            percentile(&with, 0.5),
            p99_with
        );
        println!("p99 ratio ({mode:?}): {:.2}", p99_with / p99_alone);
        if let Ok(setup) = Arc::try_unwrap(setup) {
            let gateway = setup.gateway;
            gateway_runtime
                .spawn(gateway.stop())
                .await
                .expect("gateway stops");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let gateway_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateway")
        .enable_all()
        .build()
        .expect("gateway runtime");
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("clients")
        .enable_all()
        .build()
        .expect("client runtime");
    clients.block_on(run(gateway_runtime.handle()));
}
