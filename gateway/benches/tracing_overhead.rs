//! Produce throughput with tracing off, at 1 % and at 100 % sampling, in
//! one paired run: in-process gateways (TLS listeners with their generated
//! certificates, as Sluice runs by default; three embedded clusters each,
//! `fsync = "never"` so the disk does not drown the difference) are driven
//! in turn, block by block, with the order
//! rotating, and each block's throughput is compared with the off
//! gateway's in the same round. Spans go over OTLP/HTTP to a local sink
//! that reads and discards them, so export cost is counted: each block
//! ends by flushing its gateway's export queue, inside the timed window.
//!
//! A fourth gateway, tracing off, receives records that already carry a
//! `traceparent` header: the cost of the bigger records alone, to tell it
//! from the cost of the spans.
//!
//! `cargo bench -p sluice --bench tracing_overhead` prints the per-block
//! ratios (median with a distribution-free 95 % interval, quartiles) and
//! the ratio of total throughputs. Set `SLUICE_BENCH_BLOCKS` to change the
//! number of rounds (default 40) and `SLUICE_BENCH_REQUESTS` the requests
//! per block (default 1,000). Each arm's line also gives the process's CPU
//! time per request (client, gateway and sink together), which tells CPU
//! cost apart from waiting. `SLUICE_BENCH_ONLY=<arm>` drives that arm
//! alone, for a profiler to see one arm's costs (no ratios then).
//! The binary's log subscriber is installed at its default level, so each
//! request's log span is formatted as in `sluice serve`.
//! `SLUICE_BENCH_PLAINTEXT=1` serves plain HTTP instead of TLS: a smaller
//! cost per request for tracing to be compared with, so a stricter ratio.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sluice::Gateway;
use sluice_config::{Config, FsyncPolicy};

/// The allocator of the `sluice` binary, so the gateways here run as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records per produce request.
const BATCH: usize = 10;
/// Bytes of each record's value.
const VALUE_BYTES: usize = 100;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Requests per block.
const REQUESTS_PER_BLOCK: usize = 1000;
/// Rounds (each arm runs one block per round).
const DEFAULT_BLOCKS: usize = 40;
/// Requests per arm before measuring (connections, topic placement, JIT-free warm caches).
const WARMUP_REQUESTS: usize = 400;
const TOPIC: &str = "bench";

struct Arm {
    name: &'static str,
    gateway: Gateway,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An OTLP/HTTP endpoint that reads every request and answers 200.
async fn start_sink(requests: Arc<AtomicU64>, bytes: Arc<AtomicU64>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (requests, bytes) = (requests.clone(), bytes.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (requests, bytes) = (requests.clone(), bytes.clone());
                        async move {
                            // Counted and dropped frame by frame, as a
                            // collector forwarding elsewhere would: no copy
                            // into one buffer charged to the traced arms.
                            let mut body = request.into_body();
                            let mut read = 0;
                            while let Some(Ok(frame)) = body.frame().await {
                                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                            }
                            requests.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(read, Ordering::Relaxed);
                            let response = hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// A gateway; with `sampling`, traced at that ratio with an export queue
/// of `max_queue_spans`.
async fn start_arm(
    name: &'static str,
    sampling: Option<f64>,
    max_queue_spans: usize,
    sink: &str,
) -> Arm {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_owned();
    config.listener.address = "127.0.0.1:0".parse().unwrap();
    let tls = std::env::var_os("SLUICE_BENCH_PLAINTEXT").is_none();
    config.listener.insecure = !tls;
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    for cluster in &mut config.clusters {
        cluster.embedded.fsync = FsyncPolicy::Never;
    }
    if let Some(ratio) = sampling {
        config.tracing.otlp_endpoint = Some(sink.to_owned());
        config.tracing.sampling_ratio = ratio;
        config.tracing.max_queue_spans = max_queue_spans;
        config.tracing.max_export_batch_spans = max_queue_spans.min(512);
        config.tracing.service_name = format!("bench-{name}");
    }
    let gateway = Gateway::start(config).await.expect("gateway starts");
    // The generated certificate names `localhost`.
    let url = match tls {
        true => format!("https://localhost:{}", gateway.addr.port()),
        false => format!("http://127.0.0.1:{}", gateway.addr.port()),
    };
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY);
    if tls {
        let pem = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let http = builder.build().unwrap();
    Arm {
        name,
        gateway,
        url,
        http,
        _dir: dir,
    }
}

/// Sends `requests` produce requests, `CONCURRENCY` at a time; returns the time taken.
async fn drive(arm: &Arm, body: &Arc<String>, requests: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (http, url, body) = (arm.http.clone(), arm.url.clone(), body.clone());
        tasks.spawn(async move {
            for _ in (worker..requests).step_by(CONCURRENCY) {
                let reply = http
                    .post(format!("{url}/topics/{TOPIC}?acks=1"))
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
    // The block's spans are exported inside its time, so their export cost
    // is not left for the next arm's block to pay.
    arm.gateway.telemetry().flush().await;
    started.elapsed()
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// in clock ticks (1/100 s here): summed over many blocks, it tells CPU
/// cost apart from waiting.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn report(name: &str, ratios: &mut [f64], total_on: Duration, total_off: Duration) {
    ratios.sort_by(|a, b| a.total_cmp(b));
    let n = ratios.len();
    // Distribution-free 95 % interval of the median: order statistics
    // n/2 ± 0.98·√n.
    let half = 0.98 * (n as f64).sqrt();
    let lo = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    println!(
        "{name}: per-block throughput ratio median {:.3} (95% CI {:.3} – {:.3}), quartiles {:.3} – {:.3}, range {:.3} – {:.3}; ratio of totals {:.3}",
        quantile(ratios, 0.5),
        ratios[lo],
        ratios[hi],
        quantile(ratios, 0.25),
        quantile(ratios, 0.75),
        ratios[0],
        ratios[n - 1],
        total_off.as_secs_f64() / total_on.as_secs_f64(),
    );
}

fn main() {
    // The log subscriber of the `sluice` binary, at its default level: it
    // formats every request's log span (with the trace ids in the traced
    // arms), a cost the binary pays.
    sluice::telemetry::logs::init(&sluice_config::LogConfig::default());
    // `cargo bench` passes `--bench`; nothing else is understood.
    let blocks: usize = std::env::var("SLUICE_BENCH_BLOCKS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(DEFAULT_BLOCKS);
    let requests_per_block: usize = std::env::var("SLUICE_BENCH_REQUESTS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(REQUESTS_PER_BLOCK);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (sink_requests, sink_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let sink = start_sink(sink_requests.clone(), sink_bytes.clone()).await;
        let queue = sluice_config::DEFAULT_MAX_QUEUE_SPANS;
        let arms = [
            start_arm("off", None, queue, &sink).await,
            start_arm("sampled-1pct", Some(0.01), queue, &sink).await,
            start_arm("sampled-100pct", Some(1.0), queue, &sink).await,
            // Control: tracing off, but every record already carries a
            // 55-byte `traceparent` header, as the 100 % arm's records do
            // once the gateway wrote it: the cost of the bigger records alone.
            start_arm("off-records-with-traceparent", None, queue, &sink).await,
        ];
        println!(
            "listeners: {}",
            match std::env::var_os("SLUICE_BENCH_PLAINTEXT") {
                None => "TLS",
                Some(_) => "plaintext (SLUICE_BENCH_PLAINTEXT)",
            }
        );
        let value = BASE64.encode(vec![b'x'; VALUE_BYTES]);
        let records: Vec<_> = (0..BATCH).map(|_| json!({ "value": value })).collect();
        let plain = Arc::new(json!({ "records": records }).to_string());
        let traceparent =
            BASE64.encode("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let records: Vec<_> = (0..BATCH)
            .map(|_| {
                json!({ "value": value, "headers": [{"name": "traceparent", "value": traceparent}] })
            })
            .collect();
        let with_header = Arc::new(json!({ "records": records }).to_string());
        let bodies = [&plain, &plain, &plain, &with_header];
        for (arm, body) in arms.iter().zip(bodies) {
            drive(arm, body, WARMUP_REQUESTS).await;
        }
        let n = arms.len();
        let mut totals = vec![Duration::ZERO; n];
        let mut cpu = vec![Duration::ZERO; n];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
        if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
            let arm = arms.iter().find(|a| a.name == only).expect("SLUICE_BENCH_ONLY names an arm");
            let body = bodies[arms.iter().position(|a| a.name == only).unwrap_or(0)];
            let (used, started) = (cpu_time(), Instant::now());
            for _ in 0..blocks {
                drive(arm, body, requests_per_block).await;
            }
            let (cpu, elapsed) = (cpu_time().saturating_sub(used), started.elapsed());
            let requests = (blocks * requests_per_block) as f64;
            println!(
                "{only} alone: {:.0} records/s; CPU {:.1} µs per request",
                requests * BATCH as f64 / elapsed.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / requests,
            );
            for arm in arms {
                arm.gateway.stop().await;
            }
            return;
        }
        for round in 0..blocks {
            let mut times = vec![Duration::ZERO; n];
            for k in 0..n {
                let i = (round + k) % n;
                let used = cpu_time();
                times[i] = drive(&arms[i], bodies[i], requests_per_block).await;
                cpu[i] += cpu_time().saturating_sub(used);
            }
            for i in 0..n {
                totals[i] += times[i];
                // Throughput ratio traced / off = time off / time traced.
                ratios[i].push(times[0].as_secs_f64() / times[i].as_secs_f64());
            }
        }
        let records_per_arm = (blocks * requests_per_block * BATCH) as f64;
        let requests_per_arm = (blocks * requests_per_block) as f64;
        for ((arm, total), cpu) in arms.iter().zip(&totals).zip(&cpu) {
            println!(
                "{}: {:.0} records/s ({} requests of {BATCH} records, {CONCURRENCY} in flight, {blocks} blocks); CPU {:.1} µs per request, {:.2} cores busy",
                arm.name,
                records_per_arm / total.as_secs_f64(),
                blocks * requests_per_block,
                cpu.as_secs_f64() * 1e6 / requests_per_arm,
                cpu.as_secs_f64() / total.as_secs_f64(),
            );
        }
        for i in 1..n {
            let name = format!("{} / off", arms[i].name);
            report(&name, &mut ratios[i], totals[i], totals[0]);
        }
        for arm in &arms[1..] {
            arm.gateway.telemetry().flush().await;
        }
        let metrics = arms[0].gateway.telemetry().render_metrics();
        let line = |name: &str| {
            metrics
                .lines()
                .filter(|l| l.starts_with(name))
                .map(str::to_owned)
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "export: sink got {} requests, {} bytes; {}; dropped: [{}]",
            sink_requests.load(Ordering::Relaxed),
            sink_bytes.load(Ordering::Relaxed),
            line("sluice_trace_spans_exported_total"),
            line("sluice_trace_spans_dropped_total"),
        );
        for arm in arms {
            arm.gateway.stop().await;
        }
    });
}
