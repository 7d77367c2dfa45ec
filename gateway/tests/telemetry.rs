//! Traces and metrics end to end: spans received by a real OTLP/HTTP
//! collector (decoded with `opentelemetry-proto`), one trace joining a
//! REST produce on one gateway process and its WebSocket delivery on
//! another over shared Kafka-protocol brokers, `traceparent` headers read
//! back by an independent Kafka client, and `/metrics` scraped while
//! traffic flows.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::otlp::{CollectedSpan, Collector, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER};
use common::process::{toml_path, SluiceProcess};
use common::{sample, TestGateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_config::ClusterConfig;
use sluice_testbed::{read_topic, KafkaTestbed};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const PATIENCE: Duration = Duration::from_secs(30);

/// The client's own span, which the gateway's spans continue.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

/// Listeners on ephemeral loopback ports (plaintext, so the test's
/// WebSocket client needs no TLS), and tracing to `collector`.
fn process_config(data_dir: &Path, tracing: Option<(&Collector, &str)>) -> String {
    let mut text = format!(
        "[listener]\naddress = \"127.0.0.1:0\"\ninsecure = true\n\
         [admin]\naddress = \"127.0.0.1:0\"\ninsecure = true\n\
         [storage]\ndata_dir = {}\n",
        toml_path(data_dir)
    );
    if let Some((collector, service)) = tracing {
        text.push_str(&format!(
            "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"{service}\"\nexport_interval_ms = 100\n",
            collector.url
        ));
    }
    text
}

/// Three Kafka clusters with placement shared through a compacted topic.
fn kafka_clusters(bed: &KafkaTestbed) -> String {
    let mut text = "[federation]\nhealth_check_interval_ms = 100\n\
                    [federation.placement]\nstore = \"kafka\"\ncluster = \"kafka-0\"\n"
        .to_owned();
    for i in 0..bed.len() {
        text.push_str(&format!(
            "[[clusters]]\nname = \"kafka-{i}\"\nkind = \"kafka\"\n[clusters.kafka]\n\
             bootstrap_servers = \"{}\"\nrequest_timeout_ms = 3000\n",
            bed.bootstrap(i)
        ));
    }
    text
}

/// A plaintext WebSocket to a gateway at `url` (`http://localhost:PORT`).
async fn websocket(url: &str) -> WebSocketStream<TcpStream> {
    let host = url.trim_start_matches("http://");
    let tcp = TcpStream::connect(host).await.expect("TCP connect");
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{host}/v1/ws"), tcp)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

async fn next_frame(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn expect_frame(ws: &mut WebSocketStream<TcpStream>, kind: &str) -> Value {
    let frame = next_frame(ws).await;
    assert_eq!(frame["type"], kind, "{frame}");
    frame
}

/// A header's value in a record frame or REST record (base64), as text.
fn header(record: &Value, name: &str) -> Option<String> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == name)
        .map(|h| String::from_utf8(BASE64.decode(h["value"].as_str().unwrap()).unwrap()).unwrap())
}

/// `(trace id, span id)` of a `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[3], "01", "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn find<'a>(
    spans: &'a [CollectedSpan],
    service: &str,
    kind: i32,
    trace: &str,
) -> Option<&'a CollectedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind && s.trace_id == trace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_joins_a_rest_produce_its_append_and_a_websocket_delivery_on_another_gateway() {
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let collector = Collector::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &tempfile::TempDir, service: &str| {
        let config = process_config(&dir.path().join("data"), Some((&collector, service)))
            + &kafka_clusters(&bed);
        SluiceProcess::start(dir.path(), &config)
    };
    let a = start(&dir_a, "sluice-a");
    let b = start(&dir_b, "sluice-b");
    let http = reqwest::Client::new();
    let topic = "traced-orders";

    // Placed through A, known to B.
    let created = http
        .post(format!("{}/v3/clusters/sluice/topics", a.url))
        .json(&json!({"topic_name": topic, "partitions_count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let deadline = Instant::now() + PATIENCE;
    let home = loop {
        let reply = http
            .get(format!("{}/topics/{topic}", b.url))
            .send()
            .await
            .unwrap();
        if reply.status() == 200 {
            let body: Value = reply.json().await.unwrap();
            break body["cluster"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "B never learned the placement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // A subscriber on B, then a traced produce on A.
    let mut ws = websocket(&b.url).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "s1", "topic": topic, "from": "latest"}).to_string(),
    ))
    .await
    .unwrap();
    expect_frame(&mut ws, "subscribed").await;
    let reply = http
        .post(format!("{}/topics/{topic}", a.url))
        .header("Content-Type", BINARY)
        .header("traceparent", client_traceparent())
        .header("tracestate", "client=1")
        .json(&json!({"records": [{"value": b64("tea for two")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());

    // B pushes the record with the producer's trace context in its headers.
    let record = expect_frame(&mut ws, "record").await;
    let traceparent = header(&record, "traceparent").expect("record carries traceparent");
    let (trace, producer_span) = ids(&traceparent);
    assert_eq!(
        trace, CLIENT_TRACE,
        "the record continues the client's trace"
    );
    assert_eq!(
        header(&record, "tracestate").as_deref(),
        Some("client=1"),
        "trace state travels with it"
    );

    // The collector gets A's server and send spans and B's deliver span,
    // all in the client's trace.
    let spans = collector
        .wait_for(
            PATIENCE,
            "A's server and send spans and B's deliver span",
            |s| {
                find(s, "sluice-a", KIND_SERVER, CLIENT_TRACE).is_some()
                    && find(s, "sluice-a", KIND_PRODUCER, CLIENT_TRACE).is_some()
                    && find(s, "sluice-b", KIND_CONSUMER, CLIENT_TRACE).is_some()
            },
        )
        .await;
    let server = find(&spans, "sluice-a", KIND_SERVER, CLIENT_TRACE).unwrap();
    assert_eq!(server.parent_span_id, CLIENT_SPAN, "{server:?}");
    assert_eq!(server.name, "POST /topics/{topic}");
    assert_eq!(server.attr("http.route"), Some("/topics/{topic}"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));

    let send = find(&spans, "sluice-a", KIND_PRODUCER, CLIENT_TRACE).unwrap();
    assert_eq!(send.parent_span_id, server.span_id, "{send:?}");
    assert_eq!(
        send.span_id, producer_span,
        "the header names the send span"
    );
    assert_eq!(send.name, format!("send {topic}"));
    assert_eq!(send.attr("messaging.system"), Some("kafka"));
    assert_eq!(send.attr("messaging.destination.name"), Some(topic));
    assert_eq!(send.attr("messaging.operation.type"), Some("send"));
    assert_eq!(send.attr("messaging.destination.partition.id"), Some("0"));
    assert_eq!(send.attr("messaging.kafka.offset"), Some("0"));
    assert_eq!(send.attr("sluice.cluster.name"), Some(home.as_str()));

    let deliver = find(&spans, "sluice-b", KIND_CONSUMER, CLIENT_TRACE).unwrap();
    assert_eq!(deliver.parent_span_id, send.span_id, "{deliver:?}");
    assert_eq!(
        deliver.links,
        vec![(CLIENT_TRACE.to_owned(), send.span_id.clone())],
        "linked to the producing span"
    );
    assert_eq!(deliver.name, format!("deliver {topic}"));
    assert_eq!(deliver.attr("messaging.system"), Some("kafka"));
    assert_eq!(deliver.attr("messaging.operation.type"), Some("receive"));
    assert_eq!(deliver.attr("messaging.destination.name"), Some(topic));
    assert_eq!(
        deliver.attr("messaging.destination.partition.id"),
        Some("0")
    );
    assert_eq!(deliver.attr("messaging.kafka.offset"), Some("0"));
    assert_eq!(deliver.attr("sluice.cluster.name"), Some(home.as_str()));
    assert_eq!(deliver.attr("sluice.protocol"), Some("websocket"));

    // The home broker holds the same header, read by an independent client.
    let index: usize = home.trim_start_matches("kafka-").parse().unwrap();
    let on_broker = read_topic(&bed.bootstrap(index), topic).await.unwrap();
    assert_eq!(on_broker.len(), 1);
    assert!(
        on_broker[0]
            .headers
            .contains(&("traceparent".to_owned(), Some(traceparent.into_bytes()))),
        "{:?}",
        on_broker[0].headers
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_on_kafka_carry_a_traceparent_that_an_independent_client_reads() {
    let bed = KafkaTestbed::start(1).await.expect("test bed");
    let collector = Collector::start().await;
    let gw = TestGateway::start_with(|c| {
        c.clusters = vec![ClusterConfig::kafka("kafka-0", &bed.bootstrap(0))];
        c.tracing.otlp_endpoint = Some(collector.url.clone());
        c.tracing.service_name = "sluice-kafka".into();
    })
    .await;
    let topic = "headers-for-kafka";
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let reply = gw
        .client
        .post(format!("{}/topics/{topic}", gw.url))
        .header("Content-Type", BINARY)
        .header("traceparent", client_traceparent())
        .json(&json!({"records": [
            {"partition": 0, "value": b64("traced")},
            {"partition": 0, "value": b64("own"), "headers": [{"name": "traceparent", "value": b64(own)}]},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    // Without a client trace, the gateway starts one.
    let reply = gw
        .client
        .post(format!("{}/topics/{topic}", gw.url))
        .header("Content-Type", BINARY)
        .json(&json!({"records": [{"partition": 0, "value": b64("fresh")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    gw.gateway().telemetry().flush().await;

    let records = read_topic(&bed.bootstrap(0), topic).await.unwrap();
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(
        values,
        [b"traced".to_vec(), b"own".to_vec(), b"fresh".to_vec()]
    );
    let traceparents: Vec<String> = records
        .iter()
        .map(|r| {
            let found: Vec<_> = r
                .headers
                .iter()
                .filter(|(name, _)| name == "traceparent")
                .collect();
            assert_eq!(
                found.len(),
                1,
                "one traceparent per record: {:?}",
                r.headers
            );
            String::from_utf8(found[0].1.clone().unwrap()).expect("UTF-8 header")
        })
        .collect();
    // The first continues the client's trace from the send span.
    let (trace, span) = ids(&traceparents[0]);
    assert_eq!(trace, CLIENT_TRACE);
    let spans = collector
        .wait_for(PATIENCE, "the send span", |s| {
            s.iter()
                .any(|s| s.span_id == span && s.kind == KIND_PRODUCER)
        })
        .await;
    let send = spans.iter().find(|s| s.span_id == span).unwrap();
    assert_eq!(send.attr("messaging.batch.message_count"), Some("2"));
    assert_eq!(send.attr("messaging.destination.partition.id"), Some("0"));
    assert_eq!(
        send.attr("messaging.kafka.offset"),
        None,
        "a batch has no one offset"
    );
    // A record's own traceparent is kept as it was.
    assert_eq!(traceparents[1], own);
    // A new trace, not the client's.
    let (fresh_trace, _) = ids(&traceparents[2]);
    assert_ne!(fresh_trace, CLIENT_TRACE);
    assert_eq!(fresh_trace.len(), 32);
    gw.stop().await;
}

/// Reads SSE `record` events' data until `n` arrived.
async fn sse_records(response: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.contains("event: record") {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                out.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    out
}

/// A gateway exporting to `collector` that starts new traces with
/// probability `ratio`.
async fn sampled_gateway(collector: &Collector, ratio: f64) -> TestGateway {
    TestGateway::start_with(|c| {
        c.tracing.otlp_endpoint = Some(collector.url.clone());
        c.tracing.sampling_ratio = ratio;
    })
    .await
}

/// Produces one record over REST, with the client's `traceparent` if given.
async fn produce_one(gw: &TestGateway, topic: &str, value: &str, traceparent: Option<String>) {
    let mut request = gw
        .client
        .post(format!("{}/topics/{topic}", gw.url))
        .header("Content-Type", BINARY)
        .json(&json!({"records": [{"value": b64(value)}]}));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

/// The records of partition 0 of `topic`, read back over REST.
async fn stored(gw: &TestGateway, topic: &str) -> Vec<Value> {
    common::get_json(
        &gw.client,
        format!("{}/topics/{topic}/partitions/0/records", gw.url),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_produces_write_no_header_and_sse_deliveries_follow_the_producer() {
    let collector = Collector::start().await;
    // New traces are never sampled; a client's sampled trace is followed.
    let gw = sampled_gateway(&collector, 0.0).await;
    let topic = "sampled";
    gw.create_topic(topic, 1).await;
    produce_one(&gw, topic, "untraced", None).await;
    produce_one(&gw, topic, "traced", Some(client_traceparent())).await;
    let records = stored(&gw, topic).await;
    assert_eq!(records.len(), 2);
    assert_eq!(
        header(&records[0], "traceparent"),
        None,
        "unsampled: no header"
    );
    let (trace, send_span) = ids(&header(&records[1], "traceparent").unwrap());
    assert_eq!(trace, CLIENT_TRACE);

    let mut events = gw
        .client
        .get(format!("{}/topics/{topic}/events?from=earliest", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let delivered = sse_records(&mut events, 2).await;
    assert_eq!(
        header(&delivered[1], "traceparent"),
        header(&records[1], "traceparent")
    );
    gw.gateway().telemetry().flush().await;
    let spans = collector
        .wait_for(PATIENCE, "the SSE deliver span", |s| {
            s.iter().any(|s| s.kind == KIND_CONSUMER)
        })
        .await;
    let deliver: Vec<_> = spans.iter().filter(|s| s.kind == KIND_CONSUMER).collect();
    assert_eq!(deliver.len(), 1, "only the traced record: {deliver:#?}");
    assert_eq!(deliver[0].trace_id, CLIENT_TRACE);
    assert_eq!(deliver[0].parent_span_id, send_span);
    assert_eq!(deliver[0].attr("sluice.protocol"), Some("sse"));
    assert_eq!(deliver[0].attr("messaging.system"), Some("sluice"));
    assert_eq!(deliver[0].attr("messaging.kafka.offset"), Some("1"));
    // Nothing of the untraced produce was exported.
    assert!(
        spans.iter().all(|s| s.trace_id == CLIENT_TRACE),
        "{spans:#?}"
    );
    drop(events);
    gw.stop().await;
}

#[tokio::test]
async fn a_clients_unsampled_trace_is_followed_even_when_every_new_trace_is_recorded() {
    let collector = Collector::start().await;
    let gw = sampled_gateway(&collector, 1.0).await;
    let topic = "declined";
    gw.create_topic(topic, 1).await;
    let declined = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    produce_one(&gw, topic, "declined", Some(declined)).await;
    produce_one(&gw, topic, "new", None).await;
    let records = stored(&gw, topic).await;
    assert_eq!(records.len(), 2);
    assert_eq!(
        header(&records[0], "traceparent"),
        None,
        "the client declined the trace: no header"
    );
    // The new trace of the second produce is recorded (ratio 1).
    let (trace, _) = ids(&header(&records[1], "traceparent").expect("a new, sampled trace"));
    assert_ne!(trace, CLIENT_TRACE);
    gw.gateway().telemetry().flush().await;
    let spans = collector
        .wait_for(PATIENCE, "the second produce's spans", |s| {
            s.iter().any(|s| s.kind == KIND_PRODUCER)
        })
        .await;
    // Nothing of the declined trace was recorded; the new one was.
    assert!(
        spans.iter().all(|s| s.trace_id != CLIENT_TRACE),
        "{spans:#?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.kind == KIND_PRODUCER && s.trace_id == trace),
        "{spans:#?}"
    );
    gw.stop().await;
}

/// The value of the sample of `name` whose labels include every one of
/// `labels`; `None` when there is none.
async fn scrape(admin_url: &str) -> String {
    let reply = reqwest::get(format!("{admin_url}/metrics")).await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    reply.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_never_name_paths_topics_or_records() {
    let dir = tempfile::tempdir().unwrap();
    let gw = SluiceProcess::start(dir.path(), &process_config(&dir.path().join("data"), None));
    let http = reqwest::Client::new();
    let topic = "metered-topic";
    let secret = "secret-payload-value";

    let reply = http
        .post(format!("{}/topics/{topic}", gw.url))
        .header("Content-Type", BINARY)
        .json(&json!({"records": [
            {"partition": 0, "value": b64(secret), "headers": [{"name": "h", "value": b64(secret)}]},
            {"partition": 0, "value": b64(secret)},
            {"partition": 0, "value": b64(secret)},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let info: Value = common::get_json(&http, format!("{}/topics/{topic}", gw.url)).await;
    let home = info["cluster"].as_str().unwrap().to_owned();
    let reply = http
        .get(format!("{}/topics/some-random-name", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let reply = http
        .get(format!("{}/no/such/route-qwerty", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);

    // A WebSocket subscriber and an SSE stream, both open while scraping.
    let mut ws = websocket(&gw.url).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "s", "topic": topic, "from": "earliest"}).to_string(),
    ))
    .await
    .unwrap();
    expect_frame(&mut ws, "subscribed").await;
    for _ in 0..3 {
        expect_frame(&mut ws, "record").await;
    }
    let mut events = http
        .get(format!("{}/topics/{topic}/events?from=earliest", gw.url))
        .send()
        .await
        .unwrap();
    sse_records(&mut events, 3).await;

    let text = scrape(&gw.admin_url).await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[
                ("route", "/topics/{topic}"),
                ("method", "POST"),
                ("status", "200"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[
                ("route", "/topics/{topic}"),
                ("method", "GET"),
                ("status", "404"),
                ("status_class", "4xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[("route", "/v1/ws"), ("status", "101")]
        ),
        1.0
    );
    assert!(
        value(
            "sluice_http_request_duration_seconds_count",
            &[("route", "/topics/{topic}"), ("method", "POST")]
        ) >= 1.0
    );
    assert!(text.contains("sluice_http_request_duration_seconds_bucket{"));
    assert_eq!(
        value(
            "sluice_produced_records_total",
            &[("cluster", &home), ("protocol", "rest")]
        ),
        3.0
    );
    let record_bytes = (secret.len() * 4 + 1) as f64;
    assert_eq!(
        value(
            "sluice_produced_bytes_total",
            &[("cluster", &home), ("protocol", "rest")]
        ),
        record_bytes
    );
    assert!(
        value(
            "sluice_produce_duration_seconds_count",
            &[("cluster", &home)]
        ) >= 1.0
    );
    for protocol in ["websocket", "sse"] {
        assert_eq!(
            value(
                "sluice_delivered_records_total",
                &[("cluster", &home), ("protocol", protocol)]
            ),
            3.0,
            "{protocol}"
        );
        assert_eq!(
            value(
                "sluice_delivered_bytes_total",
                &[("cluster", &home), ("protocol", protocol)]
            ),
            record_bytes,
            "{protocol}"
        );
    }
    assert_eq!(value("sluice_websocket_connections", &[]), 1.0);
    assert_eq!(value("sluice_websocket_subscriptions", &[]), 1.0);
    assert_eq!(value("sluice_sse_connections", &[]), 1.0);
    for cluster in ["local-0", "local-1", "local-2"] {
        assert_eq!(value("sluice_cluster_up", &[("cluster", cluster)]), 1.0);
    }
    assert_eq!(value("sluice_placement_topics", &[("cluster", &home)]), 1.0);
    assert_eq!(value("sluice_placement_epochs", &[("cluster", &home)]), 1.0);
    assert_eq!(value("sluice_placement_epoch_switches", &[]), 0.0);
    assert_eq!(value("sluice_rebalance_running", &[]), 0.0);
    assert!(text.contains("# HELP sluice_produced_records_total"));

    // No label value from a raw path, a topic or a record.
    for leaked in [
        "some-random-name",
        "route-qwerty",
        topic,
        secret,
        &b64(secret),
    ] {
        assert!(
            !text.contains(leaked),
            "{leaked:?} appears in /metrics:\n{text}"
        );
    }

    // Closing both gives the gauges back.
    ws.close(None).await.unwrap();
    drop(ws);
    drop(events);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(&gw.admin_url).await;
        let open: HashMap<&str, f64> = [
            "sluice_websocket_connections",
            "sluice_websocket_subscriptions",
            "sluice_sse_connections",
        ]
        .into_iter()
        .map(|name| (name, sample(&text, name, &[]).unwrap_or(-1.0)))
        .collect();
        if open.values().all(|v| *v == 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "gauges stayed up: {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_produce_frame_carries_the_clients_trace() {
    let collector = Collector::start().await;
    let gw = TestGateway::start_with(|c| {
        c.listener.insecure = true;
        c.tracing.otlp_endpoint = Some(collector.url.clone());
        c.tracing.service_name = "sluice-ws".into();
    })
    .await;
    let topic = "ws-traced";
    gw.create_topic(topic, 1).await;
    let mut ws = websocket(&gw.url).await;
    for (id, traceparent) in [("p1", Some(client_traceparent())), ("p2", None)] {
        let mut frame = json!({"type": "produce", "id": id, "topic": topic,
                               "records": [{"value": b64(id)}]});
        if let Some(tp) = traceparent {
            frame["traceparent"] = tp.into();
        }
        ws.send(Message::text(frame.to_string())).await.unwrap();
        let ack = expect_frame(&mut ws, "ack").await;
        assert_eq!(ack["id"], id);
    }
    let records: Vec<Value> = common::get_json(
        &gw.client,
        format!("{}/topics/{topic}/partitions/0/records", gw.url),
    )
    .await;
    let (trace, span) = ids(&header(&records[0], "traceparent").unwrap());
    assert_eq!(trace, CLIENT_TRACE);
    let (other_trace, _) = ids(&header(&records[1], "traceparent").unwrap());
    assert_ne!(other_trace, CLIENT_TRACE, "no traceparent: a new trace");
    gw.gateway().telemetry().flush().await;
    let spans = collector
        .wait_for(PATIENCE, "the WebSocket send span", |s| {
            s.iter().any(|s| s.span_id == span)
        })
        .await;
    let send = spans.iter().find(|s| s.span_id == span).unwrap();
    assert_eq!(send.kind, KIND_PRODUCER);
    assert_eq!(
        send.parent_span_id, CLIENT_SPAN,
        "child of the frame's span"
    );
    assert_eq!(send.attr("sluice.protocol"), Some("websocket"));
    assert_eq!(send.attr("messaging.system"), Some("sluice"));
    gw.stop().await;
}
