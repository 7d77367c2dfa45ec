//! Quota accuracy: a client offering ten times its produce quota gets,
//! over a bounded window, the quota (within ±5%), in both modes.
//!
//! The quota is 50 KB/s with a 100 ms burst and the window 20 s, as the
//! issue asks, so the bucket's burst is 0.5% of what the window allows and
//! one request (5 KB) another 0.5%: a correct bucket lands well inside ±5%, a
//! missing or leaky one (10x offered) far outside. The offered load is
//! 100 requests/s, light enough for any machine that runs the suite, and
//! the assertion is on bytes accepted, not on time taken.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TestGateway;
use serde_json::json;
use sluice::auth::apikey::{generate_key, hash_key};
use sluice_config::{
    AclRule, ApiKeyConfig, AuthConfig, FsyncPolicy, Operation, QuotaConfig, QuotaMode,
};

const QUOTA_BYTES_PER_SEC: u64 = 50_000;
const BURST_MS: u64 = 100;
const WINDOW: Duration = Duration::from_secs(20);
const OFFERED_FACTOR: u64 = 10;
const VALUE_BYTES: usize = 3_700;
const MAX_IN_FLIGHT: usize = 32;

async fn gateway(key: &str, mode: QuotaMode) -> TestGateway {
    let mut auth = AuthConfig {
        api_keys: vec![ApiKeyConfig {
            principal: "noisy".into(),
            key_sha256: hash_key(key),
            groups: vec![],
        }],
        acls: vec![AclRule {
            principal: Some("noisy".into()),
            group: None,
            topic: None,
            prefix: Some("load.".into()),
            operations: vec![Operation::Produce],
        }],
        ..AuthConfig::default()
    };
    auth.quotas.principals.insert(
        "noisy".into(),
        QuotaConfig {
            produce_bytes_per_sec: Some(QUOTA_BYTES_PER_SEC),
            consume_bytes_per_sec: None,
            requests_per_sec: None,
            max_connections: None,
            max_subscriptions: None,
            burst_ms: BURST_MS,
            mode,
        },
    );
    TestGateway::start_with(|c| {
        c.auth = Some(auth);
        // The test measures the quota, not the disk.
        for cluster in &mut c.clusters {
            cluster.embedded.fsync = FsyncPolicy::Never;
        }
    })
    .await
}

/// Offers 10x the quota for the window; returns the body bytes accepted
/// (answered 200 within the window) and how many answers were throttled
/// or rejected.
async fn offer(gw: &TestGateway, key: &str) -> (u64, u64) {
    let value = base64::engine::general_purpose::STANDARD.encode(vec![7u8; VALUE_BYTES]);
    let body = Arc::new(json!({"records": [{"value": value}]}).to_string());
    let request_bytes = body.len() as u64;
    let interval = Duration::from_secs_f64(
        request_bytes as f64 / (QUOTA_BYTES_PER_SEC * OFFERED_FACTOR) as f64,
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let held_back = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let deadline = start + WINDOW;
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    while Instant::now() < deadline {
        ticker.tick().await;
        // An open loop, bounded: when every slot waits on a throttled
        // answer, this tick's request is not sent (the client tried).
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let (client, url, key, body) = (
            gw.client.clone(),
            format!("{}/topics/load.a", gw.url),
            key.to_owned(),
            Arc::clone(&body),
        );
        let (accepted, held_back) = (Arc::clone(&accepted), Arc::clone(&held_back));
        tasks.spawn(async move {
            let _permit = permit;
            let Ok(response) = client
                .post(url)
                .header("content-type", "application/vnd.kafka.binary.v2+json")
                .bearer_auth(key)
                .body(body.as_str().to_owned())
                .send()
                .await
            else {
                return;
            };
            let status = response.status().as_u16();
            let throttled = response.headers().contains_key("sluice-throttle-time-ms");
            let _ = response.bytes().await;
            if Instant::now() > deadline {
                return;
            }
            match status {
                200 => {
                    accepted.fetch_add(request_bytes, Ordering::Relaxed);
                    if throttled {
                        held_back.fetch_add(1, Ordering::Relaxed);
                    }
                }
                429 => {
                    held_back.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("unexpected status {other}"),
            }
        });
    }
    // Answers after the window do not count; stop waiting for them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tasks.abort_all();
    (
        accepted.load(Ordering::Relaxed),
        held_back.load(Ordering::Relaxed),
    )
}

async fn check(mode: QuotaMode) {
    let key = generate_key().unwrap();
    let gw = gateway(&key, mode).await;
    let (accepted, held_back) = offer(&gw, &key).await;
    let rate = accepted as f64 / WINDOW.as_secs_f64();
    let error = (rate - QUOTA_BYTES_PER_SEC as f64) / QUOTA_BYTES_PER_SEC as f64;
    println!(
        "{mode:?}: accepted {accepted} bytes in {:?} = {rate:.0} B/s against a quota of {QUOTA_BYTES_PER_SEC} B/s ({:+.2}%), {held_back} answers throttled or rejected",
        WINDOW,
        error * 100.0
    );
    assert!(held_back > 0, "the quota never acted");
    // Every throttle or refusal the client saw is counted, under its mode.
    let metrics = gw.gateway().telemetry().render_metrics();
    let (counted, other) = match mode {
        QuotaMode::Throttle => ("throttle", "reject"),
        QuotaMode::Reject => ("reject", "throttle"),
    };
    let throttles = |mode: &str| {
        common::sample(
            &metrics,
            "sluice_quota_throttles_total",
            &[("kind", "produce_bytes"), ("mode", mode)],
        )
    };
    let seen = throttles(counted).unwrap_or(0.0);
    assert!(
        seen >= held_back as f64,
        "{mode:?}: {seen} counted, {held_back} seen by the client"
    );
    assert_eq!(throttles(other), None, "{mode:?}");
    assert!(
        error.abs() <= 0.05,
        "{mode:?}: {rate:.0} B/s is not within 5% of {QUOTA_BYTES_PER_SEC} B/s"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_a_10x_client_to_its_quota() {
    check(QuotaMode::Throttle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_holds_a_10x_client_to_its_quota() {
    check(QuotaMode::Reject).await;
}
