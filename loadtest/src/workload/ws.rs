//! WebSocket produce and subscribe on `/v1/ws` (JSON text frames, see
//! docs/websocket.md).
//!
//! A producing connection keeps up to `in_flight` produce frames
//! outstanding, each with its own id; acks may come in any order. Frames
//! that are due together are fed and then flushed once. A subscriber
//! grants credit again whenever half of it is used.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{b64_len, decode_stamp_prefix, Ctx, Receiver};
use crate::net::{Stream, Target};
use crate::pacing::Schedule;
use crate::payload::{Batch, BodyBuilder, KeyDistribution, Rng};
use crate::scenario::{ProducerGroup, SubscriberGroup};
use crate::stats::{lock, StatsHandle};

/// A WebSocket connection to the gateway.
pub type Ws = WebSocketStream<Stream>;

/// Read buffer of a producing connection (acks are small, but many).
pub const PRODUCER_READ_BUFFER: usize = 64 * 1024;
/// Read buffer of a subscriber.
pub const SUBSCRIBER_READ_BUFFER: usize = 16 * 1024;
/// Read buffer of an idle connection: idle should cost kilobytes.
pub const IDLE_READ_BUFFER: usize = 4 * 1024;
/// Most frames fed before one flush.
const MAX_FEED: usize = 64;

/// Opens `/v1/ws` with `auth` on the upgrade request and `read_buffer` bytes of read buffer.
pub async fn connect(
    target: &Target,
    auth: Option<&(HeaderName, HeaderValue)>,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let stream = target.connect().await?;
    let scheme = if target.is_tls() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{}", target.authority(), target.path("/v1/ws"));
    let mut request = url.into_client_request()?;
    if let Some((name, value)) = auth {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(read_buffer.min(128 * 1024));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// A server frame, only the fields the load generator reads.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    offsets: Option<Vec<AckOffset>>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AckOffset {
    partition: u32,
    offset: Option<u64>,
}

struct Pending {
    since: Instant,
    first_seq: u64,
    records: u32,
}

/// One producing WebSocket connection.
pub struct WsProducer {
    /// Shared run context.
    pub ctx: Arc<Ctx>,
    /// Its group's settings.
    pub group: ProducerGroup,
    /// Its producer id.
    pub producer: u32,
    /// Its client's credential header.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where it records.
    pub stats: StatsHandle,
    /// When it sends.
    pub schedule: Schedule,
    /// Wall-clock µs at `start`.
    pub wall_start_us: u64,
    /// The run's start.
    pub start: Instant,
    /// How long outstanding acks are waited for after the last send.
    pub drain: Duration,
}

impl WsProducer {
    /// Sends until the schedule ends, then waits (bounded) for the outstanding acks.
    pub async fn run(mut self) {
        let ws = loop {
            match connect(&self.ctx.target, self.auth.as_ref(), PRODUCER_READ_BUFFER).await {
                Ok(ws) => break ws,
                Err(_) => {
                    lock(&self.stats).error("connect");
                    if self.schedule.peek_send().is_none() {
                        return;
                    }
                    tokio::time::sleep(super::RECONNECT_PAUSE).await;
                }
            }
        };
        let (mut sink, mut stream) = ws.split();
        let g = self.group.clone();
        let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(g.in_flight as usize));
        let reader = {
            let (ctx, stats, pending, permits) = (
                self.ctx.clone(),
                self.stats.clone(),
                pending.clone(),
                permits.clone(),
            );
            let (producer, record_bytes) = (self.producer, g.record_bytes as u64);
            tokio::spawn(async move {
                let mut placed = Vec::new();
                while let Some(message) = stream.next().await {
                    let text = match message {
                        Ok(Message::Text(text)) => text,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    let now = Instant::now();
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                        lock(&stats).error("bad frame");
                        continue;
                    };
                    let entry = frame
                        .id
                        .as_deref()
                        .and_then(|id| id.parse::<u64>().ok())
                        .and_then(|id| {
                            pending
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&id)
                        });
                    let Some(p) = entry else {
                        if frame.kind == "error" {
                            let kind = format!("ws {}", frame.error_code.unwrap_or(0));
                            lock(&stats).error(&kind);
                        }
                        continue;
                    };
                    permits.add_permits(1);
                    match frame.kind.as_ref() {
                        "ack" => {
                            let n = u64::from(p.records);
                            if let Some(log) = &ctx.acks {
                                placed.clear();
                                if let Some(offsets) = &frame.offsets {
                                    placed.extend(offsets.iter().map(|o| (o.partition, o.offset)));
                                }
                                if placed.len() as u64 == n {
                                    log.acked(producer, p.first_seq, &placed);
                                } else {
                                    log.uncertain(n);
                                }
                            }
                            ctx.add_acked(n);
                            lock(&stats).ack(p.since, now, n, n * record_bytes);
                        }
                        _ => {
                            let kind = format!("ws {}", frame.error_code.unwrap_or(0));
                            lock(&stats).error(&kind);
                        }
                    }
                }
            })
        };
        let keys = KeyDistribution::parse(&g.keys).unwrap_or(KeyDistribution::None);
        let mut builder = BodyBuilder::new(
            g.protocol,
            g.record_bytes,
            &keys,
            &self.ctx.topic,
            g.acks.as_deref(),
        );
        let mut rng = Rng::new(self.ctx.seed, u64::from(self.producer));
        let mut body = String::with_capacity(256 * g.batch as usize);
        let pacer = crate::pacing::Pacer::new(g.precise_pacing, self.stats.clone());
        let (mut seq, mut id) = (0u64, 0u64);
        'send: loop {
            // Wait for room in the window, then for the next send's time.
            let Ok(permit) = permits.acquire().await else {
                break;
            };
            permit.forget();
            let Some(at) = self.schedule.next_send() else {
                permits.add_permits(1);
                break;
            };
            // A sender that is behind goes at once: a timer for a past
            // instant may still wait for the runtime's next timer turn.
            if self.schedule.is_open() && at > Instant::now() {
                pacer.sleep_until(at).await;
            }
            let mut due = Some(at);
            let mut fed = 0;
            while let Some(at) = due {
                let sent_us = self.wall_start_us + at.duration_since(self.start).as_micros() as u64;
                builder.build(
                    &mut body,
                    &mut rng,
                    Batch {
                        id,
                        producer: self.producer,
                        first_seq: seq,
                        records: g.batch,
                        sent_us,
                    },
                );
                let since = if self.schedule.is_open() {
                    at
                } else {
                    Instant::now()
                };
                pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        id,
                        Pending {
                            since,
                            first_seq: seq,
                            records: g.batch,
                        },
                    );
                lock(&self.stats).requests += 1;
                if sink.feed(Message::text(body.clone())).await.is_err() {
                    lock(&self.stats).error("connection lost");
                    break 'send;
                }
                id += 1;
                seq += u64::from(g.batch);
                fed += 1;
                // More frames now if the window has room and they are due.
                due = None;
                if fed < MAX_FEED {
                    if let Some(next) = self.schedule.peek_send() {
                        if next <= Instant::now() {
                            if let Ok(permit) = permits.try_acquire() {
                                permit.forget();
                                due = self.schedule.next_send();
                                if due.is_none() {
                                    permits.add_permits(1);
                                }
                            }
                        }
                    }
                }
            }
            if sink.flush().await.is_err() {
                lock(&self.stats).error("connection lost");
                break;
            }
        }
        lock(&self.stats).missed += self.schedule.missed(Instant::now());
        // Outstanding acks, bounded by the drain time.
        let deadline = Instant::now() + self.drain;
        while Instant::now() < deadline
            && !pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            && !reader.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left: Vec<Pending> = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, p)| p)
            .collect();
        if !left.is_empty() {
            let records: u64 = left.iter().map(|p| u64::from(p.records)).sum();
            if let Some(log) = &self.ctx.acks {
                log.uncertain(records);
            }
            let mut stats = lock(&self.stats);
            for _ in &left {
                stats.error("no ack before the end");
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        reader.abort();
    }
}

/// One subscribing WebSocket connection.
pub struct WsSubscriber {
    /// Shared run context.
    pub ctx: Arc<Ctx>,
    /// Its group's settings.
    pub group: SubscriberGroup,
    /// Its client's credential header.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where it records.
    pub stats: StatsHandle,
}

impl WsSubscriber {
    /// Connects and subscribes from `latest`; `ready` hears the outcome.
    /// Then receives until the drain is over; returns the deliveries.
    pub async fn run(
        self,
        ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    ) -> crate::verify::Delivery {
        let mut receiver = Receiver::new(self.stats.clone());
        let ws = match connect(&self.ctx.target, self.auth.as_ref(), SUBSCRIBER_READ_BUFFER).await {
            Ok(ws) => ws,
            Err(e) => {
                receiver.error("connect");
                let _ = ready.send(Err(format!("WebSocket connect: {e}"))).await;
                return receiver.delivery;
            }
        };
        let (mut sink, mut stream) = ws.split();
        let credit = self.group.credit.max(2);
        let subscribe = serde_json::json!({
            "type": "subscribe", "id": "s", "topic": self.ctx.topic,
            "from": "latest", "credit": credit,
        });
        if sink
            .send(Message::text(subscribe.to_string()))
            .await
            .is_err()
        {
            let _ = ready.send(Err("subscribe not sent".into())).await;
            return receiver.delivery;
        }
        let mut subscribed = false;
        let mut used = 0u32;
        let mut buf = [0u8; 48];
        let deadline = Instant::now() + super::SUBSCRIBE_TIMEOUT;
        loop {
            if subscribed
                && self
                    .ctx
                    .subscriber_done(receiver.delivery.count, receiver.last_record)
            {
                break;
            }
            if !subscribed && Instant::now() >= deadline {
                let _ = ready.send(Err("not subscribed in time".into())).await;
                break;
            }
            let message =
                match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Err(_) => continue,
                    Ok(None) | Ok(Some(Err(_))) => {
                        receiver.error("connection lost");
                        if !subscribed {
                            let _ = ready.send(Err("connection lost".into())).await;
                        }
                        break;
                    }
                    Ok(Some(Ok(message))) => message,
                };
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                receiver.error("bad frame");
                continue;
            };
            match frame.kind.as_ref() {
                "record" => {
                    let value = frame.value.as_deref().unwrap_or("");
                    let n = decode_stamp_prefix(value, &mut buf);
                    receiver.record(
                        frame.partition.unwrap_or(0),
                        frame.offset.unwrap_or(0),
                        &buf[..n],
                        b64_len(value),
                    );
                    used += 1;
                    if used >= credit / 2 {
                        let grant =
                            format!("{{\"type\":\"credit\",\"sub\":\"s\",\"records\":{used}}}");
                        used = 0;
                        if sink.send(Message::text(grant)).await.is_err() {
                            receiver.error("connection lost");
                            break;
                        }
                    }
                }
                "subscribed" => {
                    subscribed = true;
                    let _ = ready.send(Ok(())).await;
                }
                "error" => {
                    let kind = format!("ws {}", frame.error_code.unwrap_or(0));
                    receiver.error(&kind);
                    if !subscribed {
                        let _ = ready.send(Err(format!("subscribe refused: {text}"))).await;
                        break;
                    }
                }
                _ => {}
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        receiver.delivery
    }
}
