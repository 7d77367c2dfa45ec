//! Listener behaviour over real sockets: TLS with ALPN, the connection cap,
//! the header read timeout, health and readiness, and the drain on shutdown.

mod common;

use std::time::Duration;

use common::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything a test waits on, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn tls_negotiates_http2_and_http1() {
    let gw = TestGateway::start().await;

    let h2 = gw
        .client
        .get(format!("{}/topics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);

    let ca = std::fs::read(gw.data_dir.path().join("tls/ca.pem")).unwrap();
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let h1 = http1
        .get(format!("{}/topics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn untrusted_clients_cannot_complete_the_handshake() {
    let gw = TestGateway::start().await;
    // A client with only the public roots must refuse the generated certificate.
    let strict = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    let err = strict
        .get(format!("{}/topics", gw.url))
        .send()
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(err.is_connect() || err.is_request(), "{err}");
    gw.stop().await;
}

#[tokio::test]
async fn health_and_readiness_on_the_admin_listener() {
    let gw = TestGateway::start().await;
    let health = reqwest::get(format!("{}/healthz", gw.admin_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", gw.admin_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["clusters"][0]["name"], "local-0");
    assert_eq!(body["clusters"].as_array().unwrap().len(), 3);
    assert_eq!(body["clusters"][0]["status"], "up");
    // The admin listener is separate: public routes are not there.
    let missing = reqwest::get(format!("{}/topics", gw.admin_url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    gw.stop().await;
}

async fn plaintext_request(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("a response within the patience")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let gw = TestGateway::start_with(|c| {
        c.listener.insecure = true;
        c.listener.max_connections = 2;
    })
    .await;

    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    assert!(plaintext_request(&mut first, "/topics")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(plaintext_request(&mut second, "/topics")
        .await
        .starts_with("HTTP/1.1 200"));

    // The third connects at the TCP level (kernel backlog) but is not served...
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third
        .write_all(b"GET /topics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection over the cap must not be served"
    );

    // ...until a slot frees up.
    drop(first);
    let n = tokio::time::timeout(PATIENCE, third.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(second);
    drop(third);
    gw.stop().await;
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let gw = TestGateway::start_with(|c| {
        c.listener.insecure = true;
        c.listener.header_read_timeout_ms = 200;
    })
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /topics HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server closes a connection whose head never completes"
    );
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_drains_idle_connections_and_stops_listening() {
    let gw = TestGateway::start().await;
    // Open a keep-alive connection and leave it idle.
    let r = gw
        .client
        .get(format!("{}/topics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let addr = gw.addr;
    tokio::time::timeout(PATIENCE, gw.stop())
        .await
        .expect("shutdown completes within the grace period");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
