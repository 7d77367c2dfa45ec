//! `GET /v1/ws` over real TLS sockets: a tokio-tungstenite client trusting
//! the harness's generated CA, speaking the JSON text protocol of
//! `docs/websocket.md`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ciborium::Value as Cbor;
use common::TestGateway;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";

/// How long a test waits for any one frame before failing.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// How long a test listens for frames that must not come.
const QUIET_WAIT: Duration = Duration::from_millis(500);

/// A WebSocket client connection to the gateway.
struct Ws {
    stream: WebSocketStream<TlsStream<TcpStream>>,
}

impl Ws {
    /// Opens `wss://localhost:PORT/v1/ws{query}`.
    async fn connect(gw: &TestGateway, query: &str) -> Self {
        Self::connect_offering(gw, query, None).await.0
    }

    /// [`Ws::connect`] offering subprotocols (comma-separated); also returns
    /// the one the gateway selected.
    async fn connect_offering(
        gw: &TestGateway,
        query: &str,
        protocols: Option<&str>,
    ) -> (Self, Option<String>) {
        let tls = Self::tls(gw).await;
        let url = format!("wss://localhost:{}/v1/ws{query}", gw.addr.port());
        Self::upgrade_on(tls, url, protocols).await
    }

    /// A TLS connection to the gateway, trusting its CA.
    async fn tls(gw: &TestGateway) -> TlsStream<TcpStream> {
        let ca = gw.data_dir.path().join("tls/ca.pem");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca).expect("CA file") {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(gw.addr).await.expect("TCP connect");
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake")
    }

    /// [`Ws::connect`] offering subprotocols, on an open TLS stream.
    async fn upgrade_on(
        tls: TlsStream<TcpStream>,
        url: String,
        protocols: Option<&str>,
    ) -> (Self, Option<String>) {
        let mut request = url.into_client_request().expect("request");
        if let Some(protocols) = protocols {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        let (stream, response) =
            tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::client_async(request, tls))
                .await
                .expect("upgrade in time")
                .expect("WebSocket upgrade");
        assert_eq!(response.status().as_u16(), 101);
        let selected = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        (Self { stream }, selected)
    }

    /// An upgrade the gateway must refuse: its status and body.
    async fn refused(gw: &TestGateway, query: &str) -> (u16, Vec<u8>) {
        let tls = Self::tls(gw).await;
        let url = format!("wss://localhost:{}/v1/ws{query}", gw.addr.port());
        match tokio_tungstenite::client_async(url.as_str(), tls).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
                response.status().as_u16(),
                response.body().clone().unwrap_or_default(),
            ),
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("the upgrade to {query} was accepted"),
        }
    }

    async fn send_cbor(&mut self, frame: &Cbor) {
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(frame, &mut bytes).expect("CBOR");
        self.send_bytes(bytes).await;
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::binary(bytes))
            .await
            .expect("frame sent");
    }

    /// The next CBOR binary frame, within [`FRAME_WAIT`].
    async fn next_cbor(&mut self) -> Cbor {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("a frame arrives in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    return ciborium::de::from_reader(bytes.as_ref()).expect("CBOR frame")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("frame sent");
    }

    /// The next JSON frame within `wait`; `None` if none came. Panics if
    /// the connection closes.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("JSON frame"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next JSON frame, within [`FRAME_WAIT`].
    async fn next(&mut self) -> Value {
        self.next_within(FRAME_WAIT)
            .await
            .expect("a frame arrives in time")
    }

    /// The next frame, which must be of `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frame
    }

    /// Exactly `n` record frames, each within [`FRAME_WAIT`].
    async fn records(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self
                .next_within(FRAME_WAIT)
                .await
                .unwrap_or_else(|| panic!("only {} of {n} records arrived", out.len()));
            assert_eq!(frame["type"], "record", "{frame}");
            out.push(frame);
        }
        out
    }

    /// Asserts that nothing arrives for a while.
    async fn assert_quiet(&mut self) {
        if let Some(extra) = self.next_within(QUIET_WAIT).await {
            panic!("unexpected frame: {extra}");
        }
    }

    /// Waits for the server's Close frame; its code and reason.
    async fn expect_close(&mut self, wait: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the connection closes in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    }

    /// Subscribes and waits for `subscribed`; returns its partition count.
    async fn subscribe(&mut self, frame: Value) -> u64 {
        self.send(frame).await;
        let answer = self.expect("subscribed").await;
        answer["partitions"].as_u64().expect("partitions")
    }

    /// Closes and waits for the gateway's Close reply.
    async fn close_cleanly(mut self) {
        self.stream.close(None).await.expect("Close sent");
        let reply = tokio::time::timeout(FRAME_WAIT, self.stream.next())
            .await
            .expect("the reply comes in time");
        assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");
    }

    async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// A produce frame of one record per value, to `partition`.
fn produce_frame(id: &str, topic: &str, partition: u32, values: &[String]) -> Value {
    let records: Vec<Value> = values
        .iter()
        .map(|v| json!({"partition": partition, "value": BASE64.encode(v)}))
        .collect();
    json!({"type": "produce", "id": id, "topic": topic, "records": records})
}

/// Reads a partition over REST from a query (`offset=N` or `cursor=C`).
async fn rest_read(gw: &TestGateway, topic: &str, partition: u32, query: &str) -> Vec<Value> {
    let response = gw
        .client
        .get(format!(
            "{}/topics/{topic}/partitions/{partition}/records?{query}",
            gw.url
        ))
        .header("accept", BINARY)
        .send()
        .await
        .expect("read reaches the gateway");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON records")
}

fn value_of(record: &Value) -> String {
    let value = record["value"].as_str().expect("base64 value");
    String::from_utf8(BASE64.decode(value).expect("base64")).expect("UTF-8")
}

/// Asserts each (partition, offset) came once and in offset order per
/// partition, and that the values are exactly `expected`.
fn assert_exactly_once(received: &[Value], expected: &[String]) {
    let mut seen = HashSet::new();
    let mut last_offset: HashMap<u64, u64> = HashMap::new();
    for r in received {
        let (partition, offset) = (
            r["partition"].as_u64().unwrap(),
            r["offset"].as_u64().unwrap(),
        );
        assert!(
            seen.insert((partition, offset)),
            "duplicate {partition}/{offset}"
        );
        if let Some(prev) = last_offset.insert(partition, offset) {
            assert!(
                offset > prev,
                "partition {partition} went from {prev} to {offset}"
            );
        }
    }
    let mut got: Vec<String> = received.iter().map(value_of).collect();
    let mut want = expected.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn produce_is_acked_and_readable_over_rest() {
    let gw = TestGateway::start().await;
    gw.create_topic("orders", 2).await;
    let mut ws = Ws::connect(&gw, "").await;
    ws.send(json!({
        "type": "produce", "id": "c1", "topic": "orders", "acks": "all",
        "records": [
            {"partition": 1, "key": BASE64.encode("k"), "value": BASE64.encode("v0"),
             "headers": [{"name": "trace", "value": BASE64.encode("t-1")}], "timestamp": 1_700_000_000_000_i64},
            {"partition": 1, "value": BASE64.encode("v1")},
        ],
    }))
    .await;
    let ack = ws.expect("ack").await;
    assert_eq!(ack["id"], "c1");
    let offsets = ack["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 2);
    for (i, offset) in offsets.iter().enumerate() {
        assert_eq!(offset["partition"], 1);
        assert_eq!(offset["offset"], i as u64);
    }

    let read = rest_read(&gw, "orders", 1, "offset=0").await;
    assert_eq!(read.len(), 2);
    assert_eq!(value_of(&read[0]), "v0");
    assert_eq!(read[0]["key"], BASE64.encode("k"));
    assert_eq!(read[0]["headers"][0]["name"], "trace");
    assert_eq!(read[0]["timestamp"], 1_700_000_000_000_i64);
    assert_eq!(value_of(&read[1]), "v1");

    // The first record's cursor reads on from the second.
    let cursor = offsets[0]["cursor"].as_str().expect("cursor");
    let after = rest_read(&gw, "orders", 1, &format!("cursor={cursor}")).await;
    assert_eq!(after.len(), 1);
    assert_eq!(value_of(&after[0]), "v1");

    // Errors carry REST's codes and the produce's id.
    ws.send(produce_frame("c2", "not a name", 0, &["x".into()]))
        .await;
    let error = ws.expect("error").await;
    assert_eq!(error["id"], "c2");
    assert_eq!(error["error_code"], 400, "{error}");
    ws.send(json!({"type": "subscribe", "id": "s1", "topic": "missing"}))
        .await;
    let error = ws.expect("error").await;
    assert_eq!(error["id"], "s1");
    assert_eq!(error["error_code"], 40401, "{error}");
    ws.send(json!({"type": "produce", "id": "c3", "topic": "orders", "records": []}))
        .await;
    let error = ws.expect("error").await;
    assert_eq!(
        (error["id"].clone(), error["error_code"].clone()),
        (json!("c3"), json!(422))
    );
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn many_produces_in_flight_are_correlated_by_id() {
    let gw = TestGateway::start().await;
    gw.create_topic("burst", 3).await;
    let mut ws = Ws::connect(&gw, "").await;
    // More than the in-flight limit, sent without waiting for any ack.
    let produces = 200_u32;
    for i in 0..produces {
        let frame = produce_frame(&format!("c{i}"), "burst", i % 3, &[format!("v{i}")]);
        ws.stream
            .feed(Message::text(frame.to_string()))
            .await
            .expect("fed");
    }
    ws.stream.flush().await.expect("flushed");
    let mut acked: HashMap<String, (u64, u64)> = HashMap::new();
    while acked.len() < produces as usize {
        let ack = ws.expect("ack").await;
        let id = ack["id"].as_str().expect("id").to_owned();
        let offset = &ack["offsets"][0];
        let at = (
            offset["partition"].as_u64().unwrap(),
            offset["offset"].as_u64().unwrap(),
        );
        assert!(acked.insert(id.clone(), at).is_none(), "two acks for {id}");
    }
    // Each id's record is where its ack says.
    let mut per_partition: HashMap<u64, Vec<Value>> = HashMap::new();
    for partition in 0..3 {
        per_partition.insert(
            partition,
            rest_read(&gw, "burst", partition as u32, "offset=0").await,
        );
    }
    for i in 0..produces {
        let (partition, offset) = acked[&format!("c{i}")];
        assert_eq!(partition, u64::from(i % 3));
        let record = &per_partition[&partition][offset as usize];
        assert_eq!(value_of(record), format!("v{i}"));
    }
    ws.assert_quiet().await;
    ws.close().await;
    gw.stop().await;
}

/// Frames without partitions sent back to back are written together; each
/// still gets its own ack, with the offsets of its own records, and a bad
/// frame among them gets its error without failing the others.
#[tokio::test]
async fn back_to_back_produces_are_answered_frame_by_frame() {
    let gw = TestGateway::start().await;
    gw.create_topic("pile", 3).await;
    let mut ws = Ws::connect(&gw, "").await;
    let frames = 150_usize;
    let mut expected: HashMap<String, Vec<(Option<String>, String)>> = HashMap::new();
    for i in 0..frames {
        let id = format!("p{i}");
        if i == 70 {
            // Refused at the frame: nothing of it is written.
            let bad = json!({"type": "produce", "id": id, "topic": "pile", "acks": "2",
                "records": [{"value": BASE64.encode("never")}]});
            ws.stream
                .feed(Message::text(bad.to_string()))
                .await
                .expect("fed");
            continue;
        }
        // One to three records; keyed, keyless, or both.
        let records: Vec<(Option<String>, String)> = (0..=i % 3)
            .map(|j| {
                let key = (i % 2 == 0).then(|| format!("k{}", (i + j) % 7));
                (key, format!("v{i}.{j}"))
            })
            .collect();
        let json_records: Vec<Value> = records
            .iter()
            .map(|(key, value)| match key {
                Some(key) => json!({"key": BASE64.encode(key), "value": BASE64.encode(value)}),
                None => json!({"value": BASE64.encode(value)}),
            })
            .collect();
        let frame = json!({"type": "produce", "id": id, "topic": "pile", "records": json_records});
        ws.stream
            .feed(Message::text(frame.to_string()))
            .await
            .expect("fed");
        expected.insert(id, records);
    }
    ws.stream.flush().await.expect("flushed");

    let mut acked: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut refused = None;
    while acked.len() < expected.len() || refused.is_none() {
        let answer = ws.next().await;
        let id = answer["id"].as_str().expect("id").to_owned();
        match answer["type"].as_str() {
            Some("ack") => {
                let offsets = answer["offsets"]
                    .as_array()
                    .expect("offsets")
                    .iter()
                    .map(|o| {
                        (
                            o["partition"].as_u64().unwrap(),
                            o["offset"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                assert!(
                    acked.insert(id.clone(), offsets).is_none(),
                    "two acks for {id}"
                );
            }
            Some("error") => {
                assert_eq!(id, "p70", "{answer}");
                assert_eq!(answer["error_code"], 400, "{answer}");
                refused = Some(answer);
            }
            other => panic!("unexpected {other:?}: {answer}"),
        }
    }
    let mut partitions: HashMap<u64, Vec<Value>> = HashMap::new();
    for partition in 0..3 {
        partitions.insert(
            partition,
            rest_read(&gw, "pile", partition as u32, "offset=0").await,
        );
    }
    let written: usize = partitions.values().map(Vec::len).sum();
    let sent: usize = expected.values().map(Vec::len).sum();
    assert_eq!(written, sent, "every record once, the refused frame's none");
    for (id, records) in &expected {
        let offsets = &acked[id];
        assert_eq!(offsets.len(), records.len(), "{id}: one offset per record");
        for ((key, value), (partition, offset)) in records.iter().zip(offsets) {
            let record = &partitions[partition][*offset as usize];
            assert_eq!(&value_of(record), value, "{id} at {partition}/{offset}");
            match key {
                Some(key) => assert_eq!(
                    record["key"].as_str().map(|k| BASE64.decode(k).unwrap()),
                    Some(key.as_bytes().to_vec())
                ),
                None => assert!(record["key"].is_null(), "{record}"),
            }
        }
    }
    ws.assert_quiet().await;
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn subscribe_from_earliest_receives_everything() {
    let gw = TestGateway::start().await;
    gw.create_topic("events", 3).await;
    let mut expected = gw.produce_round("events", 3, 4, "old").await;
    let mut ws = Ws::connect(&gw, "").await;
    let partitions = ws
        .subscribe(json!({"type": "subscribe", "id": "s1", "topic": "events", "from": "earliest"}))
        .await;
    assert_eq!(partitions, 3);
    let mut received = ws.records(12).await;
    // Live records follow.
    expected.extend(gw.produce_round("events", 3, 2, "new").await);
    received.extend(ws.records(6).await);
    for record in &received {
        assert_eq!(record["sub"], "s1");
        assert_eq!(record["topic"], "events");
        assert!(record["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    }
    assert_exactly_once(&received, &expected);
    ws.assert_quiet().await;

    // Unsubscribed: nothing more comes.
    ws.send(json!({"type": "unsubscribe", "sub": "s1"})).await;
    assert_eq!(ws.expect("unsubscribed").await["sub"], "s1");
    gw.produce_round("events", 3, 1, "after").await;
    ws.assert_quiet().await;
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn subscribe_from_latest_gets_only_new_records() {
    let gw = TestGateway::start().await;
    gw.create_topic("tail", 2).await;
    gw.produce_round("tail", 2, 3, "before").await;
    let mut ws = Ws::connect(&gw, "").await;
    // `from` defaults to latest.
    ws.subscribe(json!({"type": "subscribe", "id": "t", "topic": "tail"}))
        .await;
    ws.assert_quiet().await;
    let expected = gw.produce_round("tail", 2, 2, "after").await;
    let received = ws.records(4).await;
    assert_exactly_once(&received, &expected);
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn subscribe_with_a_cursor_resumes_after_that_record() {
    let gw = TestGateway::start().await;
    gw.create_topic("resume", 2).await;
    let all = gw.produce_round("resume", 2, 5, "r").await;
    let mut ws = Ws::connect(&gw, "").await;
    ws.subscribe(json!({"type": "subscribe", "id": "a", "topic": "resume", "from": "earliest"}))
        .await;
    let first = ws.records(4).await;
    let cursor = first[3]["cursor"].as_str().unwrap().to_owned();
    ws.send(json!({"type": "unsubscribe", "sub": "a"})).await;
    // Records already queued may precede the answer.
    loop {
        let frame = ws.next().await;
        if frame["type"] == "unsubscribed" {
            break;
        }
        assert_eq!(frame["type"], "record", "{frame}");
    }

    ws.subscribe(json!({"type": "subscribe", "id": "b", "topic": "resume", "cursor": cursor}))
        .await;
    let rest = ws.records(6).await;
    let mut received = first;
    received.extend(rest);
    assert_exactly_once(&received, &all);
    ws.assert_quiet().await;

    // A garbled cursor, and an ack's cursor (one partition of two), are
    // refused; the connection goes on.
    ws.send(produce_frame("p", "resume", 0, &["late".into()]))
        .await;
    // The ack, and the live subscription's record of it, in either order.
    let (mut ack_cursor, mut late) = (None, None);
    for _ in 0..2 {
        let frame = ws.next().await;
        match frame["type"].as_str() {
            Some("ack") => ack_cursor = Some(frame["offsets"][0]["cursor"].clone()),
            Some("record") => late = Some(value_of(&frame)),
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(late.as_deref(), Some("late"));
    let ack_cursor = ack_cursor.expect("an ack");
    for (id, cursor) in [("c", json!("nope")), ("d", ack_cursor)] {
        ws.send(json!({"type": "subscribe", "id": id, "topic": "resume", "cursor": cursor}))
            .await;
        let error = ws.expect("error").await;
        assert_eq!(
            (error["id"].clone(), error["error_code"].clone()),
            (json!(id), json!(400)),
            "{error}"
        );
    }
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn reconnect_resumes_from_the_last_cursor_while_producing() {
    let gw = TestGateway::start().await;
    gw.create_topic("live", 3).await;
    let url = gw.url.clone();
    let client = gw.client.clone();
    let producer = tokio::spawn(async move {
        let mut values = Vec::new();
        for round in 0..20 {
            for partition in 0..3 {
                let value = format!("v{round}-p{partition}");
                let body =
                    json!({"records": [{"partition": partition, "value": BASE64.encode(&value)}]});
                let response = client
                    .post(format!("{url}/topics/live"))
                    .header("content-type", BINARY)
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("produce");
                assert_eq!(response.status(), StatusCode::OK);
                values.push(value);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        values
    });

    let mut received = Vec::new();
    let mut cursor: Option<String> = None;
    // Three connections, each taking a few records before dropping.
    for _ in 0..3 {
        let mut ws = Ws::connect(&gw, "").await;
        let mut subscribe = json!({"type": "subscribe", "id": "s", "topic": "live"});
        match &cursor {
            Some(c) => subscribe["cursor"] = json!(c),
            None => subscribe["from"] = json!("earliest"),
        }
        ws.subscribe(subscribe).await;
        let batch = ws.records(10).await;
        cursor = Some(batch.last().unwrap()["cursor"].as_str().unwrap().to_owned());
        received.extend(batch);
        // An abrupt disconnect: no close handshake.
        drop(ws);
    }
    let expected = producer.await.expect("producer");
    let mut ws = Ws::connect(&gw, "").await;
    ws.subscribe(json!({"type": "subscribe", "id": "s", "topic": "live", "cursor": cursor}))
        .await;
    let remaining = expected.len() - received.len();
    received.extend(ws.records(remaining).await);
    ws.assert_quiet().await;
    assert_exactly_once(&received, &expected);
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn credit_limits_records_until_granted() {
    let gw = TestGateway::start().await;
    gw.create_topic("credit", 1).await;
    let values: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    gw.produce_values("credit", 0, &values).await;
    let mut ws = Ws::connect(&gw, "").await;
    ws.subscribe(
        json!({"type": "subscribe", "id": "s", "topic": "credit", "from": "earliest", "credit": 5}),
    )
    .await;
    let mut received = ws.records(5).await;
    ws.assert_quiet().await;
    // The connection still answers while the subscription waits.
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    ws.send(json!({"type": "credit", "sub": "s", "records": 4}))
        .await;
    received.extend(ws.records(4).await);
    ws.assert_quiet().await;
    ws.send(json!({"type": "credit", "sub": "s", "records": 100}))
        .await;
    received.extend(ws.records(3).await);
    ws.assert_quiet().await;
    let got: Vec<String> = received.iter().map(value_of).collect();
    assert_eq!(got, values, "in offset order, each once");
    ws.close_cleanly().await;
    gw.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008() {
    let gw = TestGateway::start().await;
    gw.create_topic("slow", 1).await;
    let values: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    gw.produce_values("slow", 0, &values).await;
    let mut ws = Ws::connect(&gw, "?pause_limit_ms=300").await;
    ws.subscribe(
        json!({"type": "subscribe", "id": "s", "topic": "slow", "from": "earliest", "credit": 2}),
    )
    .await;
    ws.records(2).await;
    let (code, reason) = ws.expect_close(FRAME_WAIT).await;
    assert_eq!(code, 4008);
    assert_eq!(reason, "slow consumer: no credit for 300 ms");

    // A subscriber that keeps granting credit is never closed.
    let mut ws = Ws::connect(&gw, "?pause_limit_ms=300").await;
    ws.subscribe(
        json!({"type": "subscribe", "id": "s", "topic": "slow", "from": "earliest", "credit": 1}),
    )
    .await;
    for _ in 0..5 {
        ws.records(1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(json!({"type": "credit", "sub": "s", "records": 1}))
            .await;
    }
    // Caught up, holding credit: idle is not slow.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let gw = TestGateway::start().await;
    gw.create_topic("ok", 1).await;
    let mut ws = Ws::connect(&gw, "").await;
    let cases = [
        ("{not json", "malformed JSON"),
        ("[]", "a frame must be a JSON object"),
        (r#"{"id":"x"}"#, "the frame has no \"type\""),
        (r#"{"type":"fetch"}"#, "unknown frame type \"fetch\""),
        (r#"{"type":"produce","id":"p1"}"#, "invalid produce frame"),
        (
            r#"{"type":"subscribe","id":"s1"}"#,
            "invalid subscribe frame",
        ),
        (
            r#"{"type":"credit","sub":"nope","records":1}"#,
            "no subscription \"nope\"",
        ),
        (
            r#"{"type":"unsubscribe","sub":"nope"}"#,
            "no subscription \"nope\"",
        ),
        (
            r#"{"type":"produce","id":"p2","topic":"ok","records":[{}],"acks":"2"}"#,
            "acks must be",
        ),
        (
            r#"{"type":"subscribe","id":"s2","topic":"ok","from":"middle"}"#,
            "from must be earliest, latest, milliseconds",
        ),
    ];
    for (text, expected) in cases {
        ws.send_text(text).await;
        let error = ws.expect("error").await;
        assert_eq!(error["error_code"], 400, "{text}: {error}");
        let message = error["message"].as_str().expect("message");
        assert!(message.starts_with(expected), "{text}: {message}");
    }
    // Binary frames are refused for now.
    ws.stream
        .send(Message::binary(vec![1_u8, 2, 3]))
        .await
        .expect("sent");
    let error = ws.expect("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("binary"),
        "{error}"
    );
    // WebSocket pings are answered by the layer below.
    ws.stream
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping sent");
    let pong = tokio::time::timeout(FRAME_WAIT, ws.stream.next())
        .await
        .expect("pong in time");
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");

    // Still usable.
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    ws.send(produce_frame("p3", "ok", 0, &["fine".into()]))
        .await;
    let ack = ws.expect("ack").await;
    assert_eq!(ack["id"], "p3");
    ws.close().await;

    // A plain GET is not an upgrade: a JSON error, not a panic.
    let response = gw
        .client
        .get(format!("{}/v1/ws", gw.url))
        .send()
        .await
        .expect("reaches the gateway");
    assert!(response.status().is_client_error(), "{}", response.status());
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error_code"].is_u64(), "{body}");
    gw.stop().await;
}

/// A CBOR map with text keys.
fn cbor_map(entries: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Cbor::Text(k.to_owned()), v))
            .collect(),
    )
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_owned())
}

/// A field of a CBOR map; panics naming it when absent.
fn field<'a>(frame: &'a Cbor, name: &str) -> &'a Cbor {
    frame
        .as_map()
        .unwrap_or_else(|| panic!("not a map: {frame:?}"))
        .iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {frame:?}"))
}

fn uint(value: &Cbor) -> u64 {
    u64::try_from(value.as_integer().expect("integer")).expect("u64")
}

#[tokio::test]
async fn cbor_framing_carries_raw_bytes_both_ways() {
    let gw = TestGateway::start().await;
    gw.create_topic("cbor", 2).await;
    // Chosen by subprotocol, echoed by the handshake.
    let (mut ws, selected) =
        Ws::connect_offering(&gw, "", Some("sluice.v1.cbor, other.protocol")).await;
    assert_eq!(selected.as_deref(), Some("sluice.v1.cbor"));

    // Bytes that are neither UTF-8 nor base64, sent as they are.
    let value = vec![0xff, 0x00, 0xfe, 0x80];
    let record = cbor_map(vec![
        ("partition", Cbor::Integer(1.into())),
        ("key", Cbor::Bytes(b"k-1".to_vec())),
        ("value", Cbor::Bytes(value.clone())),
        (
            "headers",
            Cbor::Array(vec![cbor_map(vec![
                ("name", text("h")),
                ("value", Cbor::Bytes(vec![0x01, 0x02])),
            ])]),
        ),
    ]);
    ws.send_cbor(&cbor_map(vec![
        ("type", text("produce")),
        ("id", text("c1")),
        ("topic", text("cbor")),
        ("records", Cbor::Array(vec![record])),
    ]))
    .await;
    let ack = ws.next_cbor().await;
    assert_eq!(field(&ack, "type"), &text("ack"), "{ack:?}");
    assert_eq!(field(&ack, "id"), &text("c1"));
    let offsets = field(&ack, "offsets").as_array().unwrap();
    assert_eq!(uint(field(&offsets[0], "partition")), 1);
    assert_eq!(uint(field(&offsets[0], "offset")), 0);

    // The same record over REST, base64 as REST always gives.
    let rest = rest_read(&gw, "cbor", 1, "offset=0").await;
    assert_eq!(rest[0]["value"], BASE64.encode(&value));

    // Pushed back in CBOR with the bytes intact.
    ws.send_cbor(&cbor_map(vec![
        ("type", text("subscribe")),
        ("id", text("s1")),
        ("topic", text("cbor")),
        ("from", text("earliest")),
    ]))
    .await;
    let subscribed = ws.next_cbor().await;
    assert_eq!(field(&subscribed, "type"), &text("subscribed"));
    let pushed = ws.next_cbor().await;
    assert_eq!(field(&pushed, "type"), &text("record"), "{pushed:?}");
    assert_eq!(field(&pushed, "value"), &Cbor::Bytes(value));
    assert_eq!(field(&pushed, "key"), &Cbor::Bytes(b"k-1".to_vec()));
    let header = &field(&pushed, "headers").as_array().unwrap()[0];
    assert_eq!(field(header, "value"), &Cbor::Bytes(vec![0x01, 0x02]));
    assert!(field(&pushed, "cursor").as_text().is_some());
    ws.close_cleanly().await;
    gw.stop().await;
}

#[tokio::test]
async fn cbor_errors_name_what_was_wrong_and_keep_the_connection() {
    let gw = TestGateway::start().await;
    gw.create_topic("cbor-err", 1).await;
    let (mut ws, _) = Ws::connect_offering(&gw, "?framing=cbor", None).await;

    // Not CBOR at all.
    ws.send_bytes(vec![0xff, 0xff]).await;
    let error = ws.next_cbor().await;
    assert_eq!(uint(field(&error, "error_code")), 400);
    let message = field(&error, "message").as_text().unwrap().to_owned();
    assert!(message.starts_with("malformed CBOR"), "{message}");

    // A value that is neither bytes nor text: the path is named and the id
    // correlates the answer.
    ws.send_cbor(&cbor_map(vec![
        ("type", text("produce")),
        ("id", text("c9")),
        ("topic", text("cbor-err")),
        (
            "records",
            Cbor::Array(vec![cbor_map(vec![("value", Cbor::Integer(5.into()))])]),
        ),
    ]))
    .await;
    let error = ws.next_cbor().await;
    assert_eq!(field(&error, "id"), &text("c9"));
    let message = field(&error, "message").as_text().unwrap().to_owned();
    assert!(message.contains("records[0].value"), "{message}");

    // A text frame on a CBOR connection.
    ws.send_text(r#"{"type":"ping"}"#).await;
    let error = ws.next_cbor().await;
    let message = field(&error, "message").as_text().unwrap().to_owned();
    assert!(message.contains("CBOR binary"), "{message}");

    // Still usable.
    ws.send_cbor(&cbor_map(vec![("type", text("ping"))])).await;
    assert_eq!(field(&ws.next_cbor().await, "type"), &text("pong"));
    ws.close().await;

    // A binary frame on a JSON connection is answered in JSON.
    let mut json_ws = Ws::connect(&gw, "").await;
    json_ws.send_bytes(vec![0xa0]).await;
    let error = json_ws.expect("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("JSON text"),
        "{error}"
    );
    json_ws.close().await;

    // An unknown framing is refused before the upgrade.
    let (status, body) = Ws::refused(&gw, "?framing=xml").await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("framing"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_produce_through_this_gateway_wakes_an_idle_subscription() {
    // Polling alone would find the records after a minute: only the
    // append signal can deliver them within the frame wait.
    let gw = TestGateway::start_with(|c| c.gateway.tail_poll_ms = 60_000).await;
    gw.create_topic("wake", 2).await;
    let mut ws = Ws::connect(&gw, "").await;
    ws.subscribe(json!({"type": "subscribe", "id": "w", "topic": "wake"}))
        .await;
    ws.assert_quiet().await;
    for round in 0..3 {
        let expected = gw.produce_round("wake", 2, 1, &format!("r{round}")).await;
        let received = ws.records(expected.len()).await;
        assert_exactly_once(&received, &expected);
    }
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn subscribe_from_a_timestamp_starts_at_the_first_record_at_or_after_it() {
    let gw = TestGateway::start().await;
    gw.create_topic("timed", 2).await;
    let mut ws = Ws::connect(&gw, "").await;
    // Two records per partition before t = 3 s, two at or after it.
    let records: Vec<Value> = [1_000, 2_000, 3_000, 4_000]
        .iter()
        .flat_map(|&ts| {
            (0..2).map(move |p| {
                json!({"partition": p, "timestamp": ts, "value": BASE64.encode(format!("{p}@{ts}"))})
            })
        })
        .collect();
    ws.send(json!({"type": "produce", "id": "c", "topic": "timed", "records": records}))
        .await;
    ws.expect("ack").await;
    for (id, from) in [("ms", "3000"), ("rfc", "1970-01-01T00:00:03Z")] {
        ws.subscribe(json!({"type": "subscribe", "id": id, "topic": "timed", "from": from}))
            .await;
        let received = ws.records(4).await;
        let mut values: Vec<String> = received.iter().map(value_of).collect();
        values.sort();
        assert_eq!(
            values,
            ["0@3000", "0@4000", "1@3000", "1@4000"],
            "from {from}"
        );
        ws.assert_quiet().await;
    }
    // Past every record: only new ones.
    ws.subscribe(json!({"type": "subscribe", "id": "late", "topic": "timed", "from": "9000"}))
        .await;
    ws.assert_quiet().await;
    ws.send(json!({"type": "subscribe", "id": "bad", "topic": "timed", "from": "yesterday"}))
        .await;
    let error = ws.expect("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("RFC 3339"),
        "{error}"
    );
    ws.close().await;
    gw.stop().await;
}
