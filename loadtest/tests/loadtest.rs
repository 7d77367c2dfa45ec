//! Short scenarios against a real in-process gateway over TLS. They assert
//! counts and verification results, never speed.

mod common;

use common::{errors, group, TestGateway};
use sluice_loadtest::net::{Target, TlsOptions};

/// Sum of the end offsets of a topic's partitions, read over REST.
async fn end_offsets(gw: &TestGateway, topic: &str, partitions: u32) -> u64 {
    use hyper::header::{HeaderValue, ACCEPT};
    let target = Target::new(
        &gw.url,
        &TlsOptions {
            cacert: Some(gw.cacert.clone()),
            insecure: false,
        },
        1,
    )
    .await
    .unwrap();
    let mut conn = sluice_loadtest::http::HttpConn::connect(&target, None)
        .await
        .unwrap();
    let mut total = 0;
    for p in 0..partitions {
        let answer = conn
            .request(
                hyper::Method::GET,
                &format!("/topics/{topic}/partitions/{p}/offsets"),
                &[(ACCEPT, HeaderValue::from_static("application/json"))],
                bytes::Bytes::new(),
            )
            .await
            .unwrap();
        assert!(answer.status.is_success(), "{:?}", answer.body);
        let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        total += v["end_offset"].as_u64().unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_produce_counts_match_acks_and_the_log() {
    let gw = TestGateway::start().await;
    for (protocol, batch) in [("rest-v2-binary", 5), ("rest-v2-json", 3), ("rest-v3", 1)] {
        let report = gw
            .run(&format!(
                r#"
goal = "count"
[run]
duration_ms = 30000
[topic]
name = "count"
partitions = 3
[[producers]]
name = "p"
protocol = "{protocol}"
connections = 4
batch = {batch}
keys = "zipf:50"
count = 120
"#
            ))
            .await;
        let p = group(&report, "p");
        assert_eq!(p.summary.requests, 120, "{protocol}: {}", report.to_text());
        assert_eq!(p.summary.acked_requests, 120, "{protocol}");
        assert_eq!(p.summary.records, 120 * batch, "{protocol}");
        assert_eq!(errors(p), 0, "{protocol}: {:?}", p.summary.errors);
        assert_eq!(
            end_offsets(&gw, &report.topic, 3).await,
            120 * batch,
            "{protocol}: the log holds what was acknowledged"
        );
        assert!(p.summary.latency_ms.is_some());
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_produce_and_ws_subscribe_verify_without_loss_or_duplicates() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "ws verify"
[run]
duration_ms = 30000
drain_ms = 10000
verify = true
[topic]
name = "wsv"
partitions = 3
[[producers]]
name = "ws"
protocol = "ws"
connections = 2
in_flight = 16
batch = 2
keys = "uniform:20"
count = 300
acks = "1"
[[subscribers]]
name = "subs"
protocol = "ws"
connections = 3
credit = 50
"#,
        )
        .await;
    let v = report.verification.as_ref().expect("verification ran");
    assert!(v.ok, "{}", report.to_text());
    assert_eq!(v.acknowledged, 600);
    assert_eq!(v.subscribers, 3);
    assert_eq!(v.subscribers_complete, 3);
    assert_eq!((v.lost, v.duplicates, v.out_of_order), (0, 0, 0));
    let subs = group(&report, "subs");
    assert_eq!(
        subs.summary.records, 1800,
        "every subscriber got every record"
    );
    assert!(subs.summary.e2e_ms.is_some(), "end-to-end latency measured");
    assert_eq!(group(&report, "ws").summary.records, 600);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscribers_receive_everything() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "sse"
[run]
duration_ms = 30000
drain_ms = 10000
verify = true
[topic]
name = "sse"
partitions = 2
[[producers]]
name = "rest"
protocol = "rest-v2-binary"
connections = 2
batch = 10
count = 30
[[subscribers]]
name = "sse"
protocol = "sse"
connections = 4
"#,
        )
        .await;
    let v = report.verification.as_ref().unwrap();
    assert!(v.ok, "{}", report.to_text());
    assert_eq!(v.acknowledged, 300);
    assert_eq!(v.subscribers_complete, 4);
    assert_eq!(group(&report, "sse").summary.records, 1200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_rest_and_ws_producers_reach_ws_and_sse_subscribers() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "mixed verify"
[run]
duration_ms = 30000
drain_ms = 10000
verify = true
[topic]
name = "mix"
partitions = 4
[[producers]]
name = "rest"
protocol = "rest-v2-json"
connections = 2
batch = 4
count = 50
keys = "uniform:7"
[[producers]]
name = "ws"
protocol = "ws"
connections = 1
in_flight = 8
count = 100
[[subscribers]]
name = "ws-sub"
protocol = "ws"
connections = 2
[[subscribers]]
name = "sse-sub"
protocol = "sse"
connections = 2
"#,
        )
        .await;
    let v = report.verification.as_ref().unwrap();
    assert!(v.ok, "{}", report.to_text());
    assert_eq!(v.acknowledged, 300);
    assert_eq!(v.subscribers_complete, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_written_with_its_plots() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "report"
[run]
duration_ms = 1500
[[producers]]
name = "p"
protocol = "rest-v2-binary"
connections = 2
"#,
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for id in ["throughput", "p99-over-time", "latency-percentiles"] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "plot {id}");
    }
    assert!(html.contains("<polyline"), "the plots have data");
    assert!(
        !html.contains("<script src") && !html.contains("http://cdn") && !html.contains("<link"),
        "self-contained"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(json["groups"][0]["summary"]["requests"].as_u64().unwrap() > 0);
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    assert!(!json["latency_curves"][0]["points"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(std::fs::read_to_string(dir.path().join("report.txt"))
        .unwrap()
        .contains("producer p"));
    gw.stop().await;

    // Opened in a real browser: Chromium parses the page with its three
    // plots and their lines, and renders it.
    let page = dir.path().join("report.html");
    let dom = chromium(&page, &["--dump-dom"]);
    for id in ["throughput", "p99-over-time", "latency-percentiles"] {
        let at = dom
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("Chromium's DOM has no plot {id}"));
        let plot = &dom[at..at + dom[at..].find("</svg>").expect("plot closed")];
        assert!(
            plot.contains("<polyline"),
            "plot {id} has no line in Chromium"
        );
    }
    let png = dir.path().join("report.png");
    let screenshot = format!("--screenshot={}", png.display());
    chromium(&page, &[&screenshot, "--window-size=900,1400"]);
    let size = std::fs::metadata(&png).expect("screenshot written").len();
    // A blank page of this size compresses to a few KB; text and plots
    // take tens.
    assert!(size > 20_000, "screenshot of {size} bytes looks empty");
}

/// Runs headless Chromium (Debian's, installed by scripts/install-test-deps)
/// on a local file with `args`, bounded in time; what it printed.
fn chromium(page: &std::path::Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    // To a file, not a pipe: a full pipe would stall it.
    let printed = profile.path().join("stdout");
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium (run scripts/install-test-deps)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status:?}");
    std::fs::read_to_string(&printed).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_asked_rate() {
    let gw = TestGateway::start().await;
    // 200 requests/s for 1.5 s: 300 are due. The schedule never sends one
    // that is not due, so at most 300; the lower bound leaves room for a
    // slow machine (a sender that falls behind sends late, not never,
    // until the deadline).
    let report = gw
        .run(
            r#"
goal = "rate"
[run]
duration_ms = 1500
[[producers]]
name = "open"
protocol = "rest-v2-binary"
connections = 8
mode = "open"
rate_per_sec = 200
"#,
        )
        .await;
    let g = group(&report, "open");
    let sent = g.summary.requests;
    assert!(sent <= 300, "{sent} sent, 300 due");
    assert!(sent >= 240, "{sent} sent, 300 due: {}", report.to_text());
    assert_eq!(sent, g.summary.acked_requests + errors(g));
    // A count limit ends an open loop early: exactly the count.
    let report = gw
        .run(
            r#"
goal = "count"
[run]
duration_ms = 60000
[[producers]]
name = "open"
protocol = "ws"
connections = 2
in_flight = 4
mode = "open"
rate_per_sec = 400
count = 100
"#,
        )
        .await;
    let g = group(&report, "open");
    assert_eq!(g.summary.requests, 100);
    assert_eq!(g.summary.acked_requests, 100);
    // 100 at 400/s take a quarter of a second on schedule, not a minute.
    assert!(report.elapsed_secs < 30.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_have_their_own_credentials_and_figures() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "clients"
[run]
duration_ms = 30000
[[producers]]
name = "noisy"
protocol = "rest-v2-binary"
connections = 4
clients = 2
credential = "Bearer lt-{group}-{client}"
count = 40
[[producers]]
name = "polite"
protocol = "rest-v2-binary"
connections = 1
credential = "Bearer lt-{group}-{client}"
count = 10
"#,
        )
        .await;
    let principals: Vec<&str> = report
        .clients
        .iter()
        .map(|c| c.principal.as_str())
        .collect();
    for p in [
        "Bearer lt-noisy-0",
        "Bearer lt-noisy-1",
        "Bearer lt-polite-0",
    ] {
        assert!(principals.contains(&p), "{principals:?}");
    }
    let noisy: u64 = report
        .clients
        .iter()
        .filter(|c| c.group == "noisy")
        .map(|c| c.summary.requests)
        .sum();
    assert_eq!(noisy, 40);
    assert!(report
        .clients
        .iter()
        .all(|c| c.summary.latency_ms.is_some()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_from_child_processes_and_measured() {
    let gw = TestGateway::start().await;
    let report = gw
        .run(
            r#"
goal = "idle"
[run]
source_addresses = 3
[idle]
connections = 60
processes = 2
hold_ms = 100
"#,
        )
        .await;
    let idle = report.idle.as_ref().unwrap();
    assert_eq!(idle.opened, 60, "{}", report.to_text());
    assert_eq!(idle.failed, 0);
    assert!(idle.server_rss_open_kib.is_some(), "RSS read from /proc");
    assert!(
        idle.server_fds_open.unwrap() >= 60,
        "the gateway holds a socket each"
    );
    gw.stop().await;
}
