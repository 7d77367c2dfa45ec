//! `GET /topics/{topic}/events` over real TLS sockets: a client reading the
//! body chunk by chunk and parsing Server-Sent Events itself, as a browser's
//! `EventSource` would.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::TestGateway;
use reqwest::StatusCode;
use serde_json::{json, Value};

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const KAFKA_V2: &str = "application/vnd.kafka.v2+json";
const EVENT_STREAM: &str = "text/event-stream";

/// How long a test waits for any one event before failing.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long a test listens for events that must not come.
const QUIET_WAIT: Duration = Duration::from_millis(500);

/// One dispatched block of the stream: fields up to a blank line.
#[derive(Debug, Default, Clone)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comment: Option<String>,
    retry: Option<String>,
}

/// A record event, its data parsed.
#[derive(Debug, Clone)]
struct RecordEvent {
    id: String,
    partition: u64,
    offset: u64,
    value: String,
    data: Value,
}

/// An open event stream, read chunk by chunk.
struct EventStream {
    response: reqwest::Response,
    buf: String,
}

impl EventStream {
    async fn open(gw: &TestGateway, path: &str, last_event_id: Option<&str>) -> Self {
        let response = request(gw, path, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            EVENT_STREAM
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Self {
            response,
            buf: String::new(),
        }
    }

    /// The next frame, or `None` if none came within `wait` or the stream ended.
    async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse_frame(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("stream reads without error")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("the stream is UTF-8"));
        }
    }

    /// The `retry:` hint the stream opens with.
    async fn retry_hint(&mut self) -> Option<String> {
        self.next_frame(EVENT_WAIT).await.and_then(|f| f.retry)
    }

    /// The next record event within `wait`, skipping comments and hints;
    /// panics on an error event.
    async fn next_record(&mut self, wait: Duration) -> Option<RecordEvent> {
        loop {
            let frame = self.next_frame(wait).await?;
            match frame.event.as_deref() {
                Some("record") => return Some(record_event(&frame)),
                Some(other) => panic!("unexpected {other} event: {frame:?}"),
                None => continue,
            }
        }
    }

    /// Exactly `n` record events, each within [`EVENT_WAIT`].
    async fn records(&mut self, n: usize) -> Vec<RecordEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let record = self.next_record(EVENT_WAIT).await.unwrap_or_else(|| {
                panic!("only {} of {n} record events arrived: {out:?}", out.len())
            });
            out.push(record);
        }
        out
    }

    /// Asserts the server ended the stream (rather than going quiet).
    async fn assert_ended(&mut self) {
        loop {
            let chunk = tokio::time::timeout(EVENT_WAIT, self.response.chunk())
                .await
                .expect("the stream ends in time")
                .expect("the stream ends cleanly");
            match chunk {
                None => return,
                Some(chunk) => assert!(chunk.is_empty(), "more after the end: {chunk:?}"),
            }
        }
    }

    /// Asserts that no record event arrives for a while.
    async fn assert_quiet(&mut self) {
        if let Some(extra) = self.next_record(QUIET_WAIT).await {
            panic!("unexpected record event: {extra:?}");
        }
    }
}

fn parse_frame(block: &str) -> Frame {
    let mut frame = Frame::default();
    for line in block.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "" => frame.comment = Some(value),
            "id" => frame.id = Some(value),
            "event" => frame.event = Some(value),
            "data" => {
                assert!(frame.data.is_none(), "one data line per event: {block:?}");
                frame.data = Some(value);
            }
            "retry" => frame.retry = Some(value),
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    frame
}

fn record_event(frame: &Frame) -> RecordEvent {
    let data: Value = serde_json::from_str(frame.data.as_deref().expect("data")).expect("JSON");
    let value = data["value"]
        .as_str()
        .map(|v| String::from_utf8(BASE64.decode(v).expect("base64")).expect("UTF-8"))
        .unwrap_or_default();
    RecordEvent {
        id: frame.id.clone().expect("record events carry an id"),
        partition: data["partition"].as_u64().expect("partition"),
        offset: data["offset"].as_u64().expect("offset"),
        value,
        data,
    }
}

async fn request(gw: &TestGateway, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = gw
        .client
        .get(format!("{}{path}", gw.url))
        .header("accept", EVENT_STREAM);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("request reaches the gateway")
}

/// Asserts Confluent's error shape before any stream.
async fn assert_error(response: reqwest::Response, status: u16, code: u32) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], KAFKA_V2);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error_code"], json!(code), "{body}");
    body["message"].as_str().expect("message").to_owned()
}

/// Asserts each (partition, offset) came once and in offset order per
/// partition, and that the values are exactly `expected`.
fn assert_exactly_once(received: &[RecordEvent], expected: &[String]) {
    let mut seen = HashSet::new();
    let mut last_offset: HashMap<u64, u64> = HashMap::new();
    for r in received {
        assert!(
            seen.insert((r.partition, r.offset)),
            "duplicate {}/{}",
            r.partition,
            r.offset
        );
        if let Some(prev) = last_offset.insert(r.partition, r.offset) {
            assert!(
                r.offset > prev,
                "partition {} went from {prev} to {}",
                r.partition,
                r.offset
            );
        }
    }
    let mut got: Vec<&str> = received.iter().map(|r| r.value.as_str()).collect();
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[tokio::test]
async fn earliest_then_live_then_resume_delivers_each_record_once() {
    let gw = TestGateway::start().await;
    gw.create_topic("tail", 3).await;
    let mut produced = gw.produce_round("tail", 3, 3, "before").await;

    let mut stream = EventStream::open(&gw, "/topics/tail/events?from=earliest", None).await;
    let first = stream.retry_hint().await;
    assert_eq!(first.as_deref(), Some("1000"));
    let mut received = stream.records(9).await;
    let event = &received[0].data;
    assert_eq!(event["topic"], "tail");
    assert_eq!(event["key"], Value::Null);
    assert_eq!(event["headers"], json!([]));
    assert!(
        event["timestamp"].as_i64().is_some_and(|t| t > 0),
        "{event}"
    );
    assert_exactly_once(&received, &produced);

    // Live: records produced while connected arrive without reconnecting.
    produced.extend(gw.produce_round("tail", 3, 2, "live").await);
    received.extend(stream.records(6).await);
    assert_exactly_once(&received, &produced);

    // Leave mid-way through a round, with records still unread.
    produced.extend(gw.produce_round("tail", 3, 2, "cut").await);
    received.extend(stream.records(2).await);
    let last_id = received.last().expect("events").id.clone();
    drop(stream);

    // Resume as a browser does, with the URL it first opened.
    produced.extend(gw.produce_round("tail", 3, 1, "after").await);
    let mut resumed =
        EventStream::open(&gw, "/topics/tail/events?from=earliest", Some(&last_id)).await;
    let missing = produced.len() - received.len();
    received.extend(resumed.records(missing).await);
    resumed.assert_quiet().await;
    assert_exactly_once(&received, &produced);
    drop(resumed);
    gw.stop().await;
}

#[tokio::test]
async fn every_event_id_resumes_on_every_partition() {
    let gw = TestGateway::start().await;
    gw.create_topic("ids", 3).await;
    let produced = gw.produce_round("ids", 3, 2, "r").await;
    let mut stream = EventStream::open(&gw, "/topics/ids/events?from=earliest", None).await;
    let received = stream.records(produced.len()).await;
    drop(stream);

    // From the id of event k, exactly the events after k follow.
    for k in [0, 2, 4] {
        let mut resumed = EventStream::open(&gw, "/topics/ids/events", Some(&received[k].id)).await;
        let rest = resumed.records(received.len() - k - 1).await;
        let mut want: Vec<(u64, u64)> = received[k + 1..]
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        let mut got: Vec<(u64, u64)> = rest.iter().map(|r| (r.partition, r.offset)).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "resuming after event {k}");
        resumed.assert_quiet().await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn latest_receives_only_new_records() {
    let gw = TestGateway::start().await;
    gw.create_topic("news", 3).await;
    gw.produce_round("news", 3, 2, "old").await;

    // The stream's start is fixed once the response head arrives.
    let mut explicit = EventStream::open(&gw, "/topics/news/events?from=latest", None).await;
    let mut default = EventStream::open(&gw, "/topics/news/events", None).await;
    let fresh = gw.produce_round("news", 3, 1, "new").await;
    for stream in [&mut explicit, &mut default] {
        let received = stream.records(fresh.len()).await;
        assert_exactly_once(&received, &fresh);
        stream.assert_quiet().await;
    }
    drop((explicit, default));
    gw.stop().await;
}

#[tokio::test]
async fn a_produce_through_this_gateway_wakes_an_idle_stream() {
    // Polling alone would find the records after a minute: only the
    // append signal can deliver them within the wait.
    let gw = TestGateway::start_with(|c| c.gateway.tail_poll_ms = 60_000).await;
    gw.create_topic("wake", 2).await;
    let mut stream = EventStream::open(&gw, "/topics/wake/events", None).await;
    stream.assert_quiet().await;
    for round in 0..3 {
        let fresh = gw.produce_round("wake", 2, 1, &format!("r{round}")).await;
        let received = stream.records(fresh.len()).await;
        assert_exactly_once(&received, &fresh);
    }
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_topic_is_404_before_the_stream() {
    let gw = TestGateway::start().await;
    let response = request(&gw, "/topics/nowhere/events", None).await;
    let message = assert_error(response, 404, 40401).await;
    assert!(message.contains("nowhere"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn bad_starts_are_400_before_the_stream() {
    let gw = TestGateway::start().await;
    gw.create_topic("here", 3).await;
    gw.create_topic("there", 3).await;

    let response = request(&gw, "/topics/here/events", Some("not-a-cursor")).await;
    let message = assert_error(response, 400, 400).await;
    assert!(message.contains("cursor"), "{message}");

    // A valid id, but from another topic's stream.
    gw.produce_values("there", 0, &["x".to_owned()]).await;
    let mut stream = EventStream::open(&gw, "/topics/there/events?from=earliest", None).await;
    let foreign = stream.records(1).await.remove(0).id;
    drop(stream);
    let response = request(&gw, "/topics/here/events", Some(&foreign)).await;
    let message = assert_error(response, 400, 400).await;
    assert!(message.contains("another topic"), "{message}");

    for path in [
        "/topics/here/events?from=yesterday",
        "/topics/here/events?cursor=abc",
        "/topics/here/events?heartbeat_ms=soon",
    ] {
        assert_error(request(&gw, path, None).await, 400, 400).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn idle_stream_gets_heartbeats() {
    let gw = TestGateway::start().await;
    gw.create_topic("quiet", 3).await;
    let mut stream = EventStream::open(&gw, "/topics/quiet/events?heartbeat_ms=50", None).await;
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let frame = stream
            .next_frame(EVENT_WAIT)
            .await
            .expect("a frame arrives on an idle stream");
        assert!(
            frame.event.is_none(),
            "no event on an idle topic: {frame:?}"
        );
        if frame.comment.as_deref() == Some("keep-alive") {
            heartbeats += 1;
        }
    }
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn disconnect_stops_the_reading_task() {
    let gw = TestGateway::start().await;
    gw.create_topic("left", 3).await;
    let federation = gw.gateway().federation();
    let idle = std::sync::Arc::strong_count(federation);

    let mut stream = EventStream::open(&gw, "/topics/left/events", None).await;
    assert_eq!(stream.retry_hint().await.as_deref(), Some("1000"));
    // The stream's reading task holds the federation while it runs.
    assert_eq!(std::sync::Arc::strong_count(federation), idle + 1);
    drop(stream);

    let mut polls = 0;
    while std::sync::Arc::strong_count(federation) > idle {
        polls += 1;
        assert!(polls < 500, "the reading task outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn cluster_error_ends_the_stream_with_an_error_event() {
    let gw = TestGateway::start_with(|c| c.federation.health_check_interval_ms = 100).await;
    gw.create_topic("fragile", 3).await;
    gw.produce_values("fragile", 1, &["first".to_owned()]).await;
    let mut stream = EventStream::open(&gw, "/topics/fragile/events?from=earliest", None).await;
    let first = stream.records(1).await.remove(0);
    assert_eq!(first.value, "first");

    let home = gw
        .gateway()
        .federation()
        .describe_topic("fragile")
        .await
        .expect("placed")
        .cluster;
    let switch = gw.gateway().embedded_cluster(&home).expect("embedded home");
    switch.set_available(false);
    let frame = loop {
        let frame = stream.next_frame(EVENT_WAIT).await.expect("an error event");
        if frame.event.is_some() {
            break frame;
        }
    };
    assert_eq!(frame.event.as_deref(), Some("error"), "{frame:?}");
    assert_eq!(frame.id, None, "an error does not move the resume point");
    let error: Value = serde_json::from_str(frame.data.as_deref().expect("data")).expect("JSON");
    assert_eq!(error["error_code"], 50301, "{error}");
    assert!(error["message"].is_string(), "{error}");
    stream.assert_ended().await;
    drop(stream);

    // Back up: the client resumes from the last id it saw, as EventSource
    // would, retrying while the gateway still finds the cluster down.
    switch.set_available(true);
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 100, "the cluster never came back");
        let response = gw
            .client
            .post(format!("{}/topics/fragile", gw.url))
            .header("content-type", BINARY)
            .body(
                json!({"records": [{"partition": 2, "value": BASE64.encode("second")}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("produce reaches the gateway");
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut attempts = 0;
    let second = loop {
        attempts += 1;
        assert!(attempts <= 100, "the stream never recovered");
        let response = request(&gw, "/topics/fragile/events", Some(&first.id)).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut resumed = EventStream {
            response,
            buf: String::new(),
        };
        let frame = loop {
            let frame = resumed.next_frame(EVENT_WAIT).await.expect("a frame");
            if frame.event.is_some() {
                break frame;
            }
        };
        if frame.event.as_deref() == Some("error") {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        resumed.assert_quiet().await;
        break record_event(&frame);
    };
    assert_eq!((second.partition, second.value.as_str()), (2, "second"));
    gw.stop().await;
}

#[tokio::test]
async fn batches_larger_than_a_chunk_arrive_whole() {
    let gw = TestGateway::start().await;
    gw.create_topic("bulk", 3).await;
    // About 300 KiB on one partition: more than one read and many chunks.
    let filler = "x".repeat(1024);
    let values: Vec<String> = (0..300).map(|i| format!("{i:03}-{filler}")).collect();
    for part in values.chunks(100) {
        gw.produce_values("bulk", 1, part).await;
    }
    let mut stream = EventStream::open(&gw, "/topics/bulk/events?from=earliest", None).await;
    let received = stream.records(values.len()).await;
    assert_exactly_once(&received, &values);
    stream.assert_quiet().await;
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn a_drain_ends_open_streams_instead_of_waiting_out_the_grace() {
    // A long grace period: the stop below must not need it.
    let gw = TestGateway::start_with(|c| c.gateway.shutdown_grace_ms = 30_000).await;
    gw.create_topic("draining", 1).await;
    let mut stream = EventStream::open(&gw, "/topics/draining/events?heartbeat_ms=50", None).await;
    stream
        .next_frame(EVENT_WAIT)
        .await
        .expect("the stream is open");
    let stopped = tokio::time::timeout(Duration::from_secs(10), gw.stop()).await;
    assert!(stopped.is_ok(), "the drain ended the open stream");
    // The client sees the stream end (and would reconnect elsewhere).
    let mut ended = false;
    for _ in 0..100 {
        if stream
            .next_frame(Duration::from_millis(200))
            .await
            .is_none()
        {
            ended = true;
            break;
        }
    }
    assert!(ended, "the stream ended");
}
