//! Server-Sent Events: `GET /topics/{topic}/events`, a read-only live tail
//! of every partition of a topic, for browsers' `EventSource`.
//!
//! The handler settles where each partition starts (`Last-Event-ID`, else
//! `cursor=`, else `from=earliest|latest`) before answering, so a bad start
//! is a JSON error, not a broken stream. A spawned task then polls the
//! partitions in turn, one bounded read each, and hands rendered events to
//! the response body through a channel of one chunk: per connection it
//! holds at most one read batch and one rendered chunk. The task ends when
//! the body is dropped (the client went away) or after an `error` event.
//!
//! Every event's `id` is a cursor over *all* partitions, at the position
//! after that event's record, so resuming from any id neither loses nor
//! repeats a record on any partition. `docs/sse.md` describes the protocol
//! for clients.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Frame;
use serde::Serialize;
use sluice_broker::Record;
use sluice_federation::cursor::{Cursor, Position};
use sluice_federation::{Federation, ReadBatch, ReadStart};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::extract::{PathParams, QueryParams};
use crate::app::AppState;
use crate::error::ApiError;
use crate::server::ShutdownHandle;
use crate::start::StartAt;
use crate::telemetry::messaging::{self, Delivery};
use crate::telemetry::metrics::SSE_CONNECTIONS;
use crate::telemetry::{GaugeGuard, Telemetry};

/// Media type of the stream.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Header a browser sends on reconnect, with the last `id` it saw.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Interval of `: keep-alive` comments on an idle stream, so proxies do not
/// close it.
pub const DEFAULT_SSE_HEARTBEAT_MS: u64 = 15_000;
/// Lowest `heartbeat_ms` honoured: lower asks are raised to it.
pub const MIN_SSE_HEARTBEAT_MS: u64 = 10;
/// Highest `heartbeat_ms` honoured: higher asks are lowered to it.
pub const MAX_SSE_HEARTBEAT_MS: u64 = 300_000;

/// `max_bytes` of each partition read: the bound on what one connection
/// holds of a batch.
pub const DEFAULT_SSE_READ_MAX_BYTES: usize = 256 * 1024;

/// Rendered events are handed to the body in chunks of about this size, so
/// a batch of many small records on a wide topic (whose every event id
/// names every partition) is never rendered whole.
pub const DEFAULT_SSE_CHUNK_BYTES: usize = 64 * 1024;

/// Reconnect delay suggested to `EventSource` by the stream's first line.
pub const DEFAULT_SSE_RETRY_MS: u64 = 1_000;

/// Rendered chunks queued between the reading task and the body: one, so
/// the task reads ahead by at most one batch.
const CHANNEL_CHUNKS: usize = 1;

/// `GET /topics/{topic}/events[?from=earliest|latest][&cursor=C][&heartbeat_ms=N]`.
///
/// `Last-Event-ID` (a cursor) wins over the query, since a reconnecting
/// `EventSource` sends it along with the URL it first opened.
pub async fn events(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = path.topic()?.to_owned();
    check_accept(&headers)?;
    let heartbeat = heartbeat_interval(&query)?;
    let info = state.federation.describe_topic(&topic).await?;
    let cursor = start_at(&headers, &query, &topic)?
        .resolve(&state.federation, &topic, info.partitions)
        .await?;

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let tail = Tail {
        appended: state.federation.watch_appends(&topic),
        federation: Arc::clone(&state.federation),
        telemetry: Arc::clone(&state.telemetry),
        shutdown: state.shutdown.clone(),
        topic,
        cursor,
        heartbeat,
        poll_idle: Duration::from_millis(state.config.gateway.tail_poll_ms),
        max_bytes: DEFAULT_SSE_READ_MAX_BYTES,
    };
    tokio::spawn(tail.run(tx));

    let mut response = Body::new(EventBody { rx }).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses by default, which would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Refuses an `Accept` that rules out an event stream; no `Accept` is fine.
fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return Err(ApiError::bad_request("Accept header is not visible ASCII"));
        };
        for range in value.split(',').filter(|r| !r.trim().is_empty()) {
            any = true;
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim() == "q" && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            if !refused && matches!(essence.as_str(), EVENT_STREAM | "text/*" | "*/*") {
                return Ok(());
            }
        }
    }
    if any {
        Err(ApiError::not_acceptable(
            406,
            format!("this route answers only {EVENT_STREAM}"),
        ))
    } else {
        Ok(())
    }
}

/// `heartbeat_ms`, clamped to what the gateway honours.
fn heartbeat_interval(query: &QueryParams) -> Result<Duration, ApiError> {
    let ms = query
        .u64("heartbeat_ms")?
        .map_or(DEFAULT_SSE_HEARTBEAT_MS, |ms| {
            ms.clamp(MIN_SSE_HEARTBEAT_MS, MAX_SSE_HEARTBEAT_MS)
        });
    Ok(Duration::from_millis(ms))
}

/// Where the stream starts: `Last-Event-ID` (what a browser sends when
/// it reconnects), else `cursor` or `from` in the query.
fn start_at(headers: &HeaderMap, query: &QueryParams, topic: &str) -> Result<StartAt, ApiError> {
    if let Some(value) = headers.get(LAST_EVENT_ID) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID is not visible ASCII"))?
            .trim();
        // An empty id is what a browser sends before it saw any id.
        if !text.is_empty() {
            return StartAt::decode(text, topic);
        }
    }
    StartAt::parse(query.get("cursor"), query.get("from"), topic)
}

/// The reading side of one stream.
struct Tail {
    federation: Arc<Federation>,
    telemetry: Arc<Telemetry>,
    /// A drain ends the stream (the client reconnects elsewhere with its
    /// `Last-Event-ID`), rather than holding the drain for its grace period.
    shutdown: ShutdownHandle,
    topic: String,
    /// The position after the last record sent, on every partition.
    cursor: Cursor,
    heartbeat: Duration,
    poll_idle: Duration,
    max_bytes: usize,
    /// Wakes the idle wait when this gateway appends to the topic.
    appended: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Tail {
    /// Polls every partition in turn until the client goes away or a read
    /// fails.
    async fn run(mut self, tx: mpsc::Sender<Bytes>) {
        let _open = GaugeGuard::hold(SSE_CONNECTIONS);
        let retry = Bytes::from(format!("retry: {DEFAULT_SSE_RETRY_MS}\n\n"));
        if tx.send(retry).await.is_err() {
            return;
        }
        let partitions: Vec<u32> = self
            .cursor
            .positions()
            .iter()
            .map(|p| p.partition)
            .collect();
        let mut last_sent = Instant::now();
        loop {
            if self.shutdown.is_draining() {
                return;
            }
            let mut delivered = false;
            for &partition in &partitions {
                let Some(position) = self.cursor.position(partition) else {
                    continue;
                };
                let read = self
                    .federation
                    .read(
                        &self.topic,
                        partition,
                        ReadStart::Cursor(Cursor::new([position])),
                        self.max_bytes,
                    )
                    .await;
                let step = match read {
                    Ok(batch) => self.deliver(&tx, partition, &batch).await,
                    Err(e) => Err(Stop::Failed(e.into())),
                };
                match step {
                    Ok(false) => {}
                    Ok(true) => {
                        last_sent = Instant::now();
                        delivered = true;
                    }
                    Err(Stop::Closed) => return,
                    Err(Stop::Failed(error)) => {
                        tracing::debug!(
                            messaging.destination.name = %self.topic,
                            error = %error,
                            "event stream ends on an error"
                        );
                        let _ = tx.send(error_event(&error)).await;
                        return;
                    }
                }
            }
            if delivered {
                continue;
            }
            if last_sent.elapsed() >= self.heartbeat {
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                last_sent = Instant::now();
            }
            let until_heartbeat = self.heartbeat.saturating_sub(last_sent.elapsed());
            tokio::select! {
                () = tokio::time::sleep(self.poll_idle.min(until_heartbeat)) => {}
                () = crate::start::appended(&mut self.appended) => {}
                () = tx.closed() => return,
                () = self.shutdown.draining() => return,
            }
        }
    }

    /// Sends the events of a batch in chunks of about
    /// [`DEFAULT_SSE_CHUNK_BYTES`], advancing the cursor past each record;
    /// says whether there was any.
    async fn deliver(
        &mut self,
        tx: &mpsc::Sender<Bytes>,
        partition: u32,
        batch: &ReadBatch,
    ) -> Result<bool, Stop> {
        let mut out = Vec::new();
        let delivery = Delivery {
            topic: &self.topic,
            protocol: messaging::SSE,
            group: None,
        };
        let cluster = match batch.records.is_empty() {
            true => None,
            false => self.federation.epoch_cluster(&self.topic, batch.epoch),
        };
        let cluster = cluster.as_deref().unwrap_or_default();
        // Counted before any of it is handed over: a client that has seen a
        // record finds it in the metrics.
        delivery.count(&self.telemetry, cluster, &batch.records);
        // Spans of the records rendered into `out`, ended once it is handed over.
        let mut spans = Vec::new();
        for record in &batch.records {
            self.cursor.set(Position {
                partition,
                epoch: batch.epoch,
                next_offset: record.offset + 1,
            });
            spans.extend(delivery.start_span(&self.telemetry, cluster, record));
            render(&mut out, &self.topic, &self.cursor, record).map_err(Stop::Failed)?;
            if out.len() >= DEFAULT_SSE_CHUNK_BYTES {
                send(tx, std::mem::take(&mut out)).await?;
                end_spans(&mut spans);
            }
        }
        // Also after an empty batch: the read may have moved on to a later
        // epoch.
        self.cursor.set(Position {
            partition,
            epoch: batch.epoch,
            next_offset: batch.next_offset,
        });
        if !out.is_empty() {
            send(tx, out).await?;
            end_spans(&mut spans);
        }
        Ok(!batch.records.is_empty())
    }
}

fn end_spans(spans: &mut Vec<opentelemetry_sdk::trace::Span>) {
    for mut span in spans.drain(..) {
        opentelemetry::trace::Span::end(&mut span);
    }
}

/// Why a stream stops.
enum Stop {
    /// The client went away.
    Closed,
    /// A read failed: the client gets an `error` event.
    Failed(ApiError),
}

async fn send(tx: &mpsc::Sender<Bytes>, chunk: Vec<u8>) -> Result<(), Stop> {
    tx.send(Bytes::from(chunk)).await.map_err(|_| Stop::Closed)
}

/// Appends one `record` event whose id is `cursor` (already past `record`).
fn render(
    out: &mut Vec<u8>,
    topic: &str,
    cursor: &Cursor,
    record: &Record,
) -> Result<(), ApiError> {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(cursor.encode(topic).as_bytes());
    out.extend_from_slice(b"\nevent: record\ndata: ");
    let data = RecordData {
        topic,
        key: record.key.as_ref().map(|k| BASE64.encode(k)),
        value: record.value.as_ref().map(|v| BASE64.encode(v)),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp_ms,
        headers: record
            .headers
            .iter()
            .map(|h| HeaderData {
                name: &h.name,
                value: BASE64.encode(&h.value),
            })
            .collect(),
    };
    // Compact JSON has no raw newline, so it fits one `data:` line.
    serde_json::to_writer(&mut *out, &data).map_err(|e| ApiError::internal(&e))?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// `event: error` with Confluent's error shape; the stream ends after it.
fn error_event(error: &ApiError) -> Bytes {
    let body = serde_json::json!({"error_code": error.error_code, "message": error.message});
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

/// One record, in the REST records shape with base64 keys and values.
#[derive(Serialize)]
struct RecordData<'a> {
    topic: &'a str,
    key: Option<String>,
    value: Option<String>,
    partition: u32,
    offset: u64,
    timestamp: i64,
    headers: Vec<HeaderData<'a>>,
}

#[derive(Serialize)]
struct HeaderData<'a> {
    name: &'a str,
    value: String,
}

/// The response body: chunks from the reading task. Dropping it (the
/// client went away) closes the channel, which stops the task.
struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accept_takes_event_streams_and_wildcards() {
        assert!(check_accept(&HeaderMap::new()).is_ok());
        for ok in [
            "text/event-stream",
            "text/*",
            "*/*",
            "application/json, */*;q=0.1",
        ] {
            assert!(check_accept(&accept(ok)).is_ok(), "{ok}");
        }
        for refused in ["application/json", "text/event-stream;q=0"] {
            let err = check_accept(&accept(refused)).unwrap_err();
            assert_eq!(err.status.as_u16(), 406, "{refused}");
        }
    }

    #[test]
    fn docs_example_id_is_a_real_cursor() {
        let docs = include_str!("../../../docs/sse.md");
        let id = "AYrApwkBAwAADAEAKgIAB-tGc00";
        assert!(docs.contains(&format!("id: {id}")));
        assert_eq!(
            Cursor::decode(id, "orders").unwrap(),
            Cursor::at_epoch(1, [(0, 12), (1, 42), (2, 7)])
        );
    }

    #[test]
    fn record_event_matches_the_docs() {
        let record = Record {
            partition: 1,
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"order-7")),
            value: Some(Bytes::from_static(br#"{"total":12.5}"#)),
            headers: vec![sluice_broker::Header {
                name: "trace".into(),
                value: Bytes::from_static(b"t-1"),
            }],
        };
        let cursor = Cursor::at_epoch(1, [(0, 12), (1, 42), (2, 7)]);
        let mut out = Vec::new();
        render(&mut out, "orders", &cursor, &record).unwrap();
        let event = String::from_utf8(out).unwrap();
        let docs = include_str!("../../../docs/sse.md");
        assert!(docs.contains(event.trim_end()), "{event}");
        assert!(event.ends_with("\n\n"));
    }

    #[test]
    fn error_event_is_one_json_line() {
        let event = error_event(&ApiError::bad_request("two\nlines"));
        let text = std::str::from_utf8(&event).unwrap();
        assert_eq!(
            text,
            "event: error\ndata: {\"error_code\":400,\"message\":\"two\\nlines\"}\n\n"
        );
    }
}
