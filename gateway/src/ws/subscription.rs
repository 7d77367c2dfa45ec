//! One subscription: where it starts, and the task that pushes records as
//! its credit allows.
//!
//! The task polls the topic's partitions in turn, one bounded read each,
//! and sends a `record` frame per record while credit lasts. With no credit
//! it waits, holding the one batch it has read (the bound on its memory),
//! for at most the pause limit; past it the connection is closed with
//! [`CLOSE_SLOW_CONSUMER`]. Every record's cursor names every partition, as
//! SSE event ids do, so resuming from any record loses and repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use sluice_broker::Record;
use sluice_federation::cursor::{Cursor, Position};
use sluice_federation::{Federation, ReadBatch, ReadStart};
use tokio::sync::watch;
use tokio::time::Instant;

use super::protocol::{
    BytesOut, Encoded, Framing, HeaderOut, RecordFrame, ServerFrame, SubscribeFrame,
};
use super::session::{send, Outbox};
use super::{SessionSettings, CLOSE_SLOW_CONSUMER};
use crate::auth::quota::{Buckets, Rate};
use crate::error::ApiError;
use crate::start::StartAt;
use crate::telemetry::messaging::{self, Delivery};
use crate::telemetry::metrics::WEBSOCKET_SUBSCRIPTIONS;
use crate::telemetry::{GaugeGuard, Telemetry};

/// `max_bytes` of each partition read: what a subscription holds at most.
pub const DEFAULT_WS_READ_MAX_BYTES: usize = 256 * 1024;

/// A running subscription.
pub struct Subscription {
    federation: Arc<Federation>,
    telemetry: Arc<Telemetry>,
    id: String,
    topic: String,
    /// The position after the last record sent, on every partition.
    cursor: Cursor,
    /// Total credit granted, by the subscribe frame and `credit` frames.
    granted: watch::Receiver<u64>,
    /// Records sent so far.
    sent: u64,
    pause_limit: Duration,
    /// Sleep between polling rounds that found no record.
    poll_idle: Duration,
    out: Outbox,
    /// Wakes the idle wait when this gateway appends to the topic.
    appended: Option<watch::Receiver<u64>>,
    /// The principal's quota: pushed bytes count against its consume rate.
    quota: Option<Arc<Buckets>>,
}

/// Why a subscription stops.
enum Stop {
    /// The connection is gone.
    Closed,
    /// The client unsubscribed (the session dropped the credit sender).
    Unsubscribed,
    /// A read failed: the client gets an error frame.
    Failed(ApiError),
    /// No credit past the pause limit.
    SlowConsumer,
}

impl Subscription {
    /// Settles the start, answers `subscribed` (or an error), then pushes
    /// records until stopped.
    pub async fn start(
        federation: Arc<Federation>,
        telemetry: Arc<Telemetry>,
        frame: SubscribeFrame,
        granted: watch::Receiver<u64>,
        settings: SessionSettings,
        out: Outbox,
        quota: Option<Arc<Buckets>>,
    ) {
        let (partitions, cursor) = match settle(&federation, &frame).await {
            Ok(start) => start,
            Err(error) => {
                send(&out, &ServerFrame::error(Some(&frame.id), None, &error)).await;
                return;
            }
        };
        let subscribed = ServerFrame::Subscribed {
            id: &frame.id,
            partitions,
        };
        if !send(&out, &subscribed).await {
            return;
        }
        let appended = federation.watch_appends(&frame.topic);
        let _running = GaugeGuard::hold(WEBSOCKET_SUBSCRIPTIONS);
        let subscription = Self {
            quota,
            appended,
            federation,
            telemetry,
            id: frame.id,
            topic: frame.topic,
            cursor,
            granted,
            sent: 0,
            pause_limit: settings.pause_limit,
            poll_idle: settings.poll_idle,
            out,
        };
        subscription.run().await;
    }

    async fn run(mut self) {
        let stop = self.poll().await;
        match stop {
            Stop::Closed => {}
            // Sent here, after this task's last record, so none follows it.
            Stop::Unsubscribed => {
                send(&self.out, &ServerFrame::Unsubscribed { sub: &self.id }).await;
            }
            Stop::Failed(error) => {
                tracing::debug!(
                    messaging.destination.name = %self.topic,
                    error = %error,
                    "subscription ends on an error"
                );
                send(&self.out, &ServerFrame::error(None, Some(&self.id), &error)).await;
            }
            Stop::SlowConsumer => {
                tracing::info!(
                    messaging.destination.name = %self.topic,
                    pause_limit_ms = self.pause_limit.as_millis(),
                    "closing a WebSocket: slow consumer"
                );
                let reason = format!(
                    "slow consumer: no credit for {} ms",
                    self.pause_limit.as_millis()
                );
                let _ = self.out.close(CLOSE_SLOW_CONSUMER, reason).await;
            }
        }
    }

    /// Polls every partition in turn until stopped.
    async fn poll(&mut self) -> Stop {
        let partitions: Vec<u32> = self
            .cursor
            .positions()
            .iter()
            .map(|p| p.partition)
            .collect();
        loop {
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
                        DEFAULT_WS_READ_MAX_BYTES,
                    )
                    .await;
                match read {
                    Ok(batch) => match self.deliver(partition, &batch).await {
                        Ok(any) => delivered |= any,
                        Err(stop) => return stop,
                    },
                    Err(e) => return Stop::Failed(e.into()),
                }
            }
            if !delivered {
                tokio::select! {
                    () = tokio::time::sleep(self.poll_idle) => {}
                    () = crate::start::appended(&mut self.appended) => {}
                    () = self.out.closed() => return Stop::Closed,
                    changed = self.granted.changed() => {
                        if changed.is_err() {
                            return Stop::Unsubscribed;
                        }
                    }
                }
            }
        }
    }

    /// How this subscription's deliveries are traced and counted.
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            topic: &self.topic,
            protocol: messaging::WEBSOCKET,
            group: None,
        }
    }

    /// Sends a batch's records as credit allows; says whether there was any.
    async fn deliver(&mut self, partition: u32, batch: &ReadBatch) -> Result<bool, Stop> {
        let cluster = match batch.records.is_empty() {
            true => None,
            false => self.federation.epoch_cluster(&self.topic, batch.epoch),
        };
        let cluster = cluster.as_deref().unwrap_or_default();
        for record in &batch.records {
            if self.granted.has_changed().is_err() {
                return Err(Stop::Unsubscribed);
            }
            self.wait_for_credit().await?;
            self.cursor.set(Position {
                partition,
                epoch: batch.epoch,
                next_offset: record.offset + 1,
            });
            let span = self.delivery().start_span(&self.telemetry, cluster, record);
            let frame = render(
                self.out.framing(),
                &self.id,
                &self.topic,
                &self.cursor,
                record,
            );
            let bytes = match &frame {
                Encoded::Text(text) => text.len(),
                Encoded::Binary(bytes) => bytes.len(),
            } as u64;
            // Counted before it is handed over: a client that has seen the
            // record finds it in the metrics.
            self.delivery()
                .count(&self.telemetry, cluster, std::slice::from_ref(record));
            if !self.out.send_encoded(frame).await {
                return Err(Stop::Closed);
            }
            // Over the consume quota: pause this subscription (both modes:
            // a push cannot be refused) and say so.
            if let Some(quota) = &self.quota {
                let pause = quota.charge_stream(Rate::Consume, bytes);
                if !pause.is_zero() {
                    let notice = ServerFrame::Throttle {
                        throttle_time_ms: pause.as_millis() as u64,
                    };
                    if !self.out.send(&notice).await {
                        return Err(Stop::Closed);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.out.closed() => return Err(Stop::Closed),
                    }
                }
            }
            if let Some(mut span) = span {
                opentelemetry::trace::Span::end(&mut span);
            }
            self.sent += 1;
        }
        // Also after an empty batch: the read may have moved to a later epoch.
        self.cursor.set(Position {
            partition,
            epoch: batch.epoch,
            next_offset: batch.next_offset,
        });
        Ok(!batch.records.is_empty())
    }

    /// Returns once a record may be sent; a pause longer than the limit is
    /// a slow consumer.
    async fn wait_for_credit(&mut self) -> Result<(), Stop> {
        if *self.granted.borrow_and_update() > self.sent {
            return Ok(());
        }
        let deadline = Instant::now() + self.pause_limit;
        loop {
            match tokio::time::timeout_at(deadline, self.granted.changed()).await {
                Err(_) => return Err(Stop::SlowConsumer),
                Ok(Err(_)) => return Err(Stop::Unsubscribed),
                Ok(Ok(())) => {
                    if *self.granted.borrow_and_update() > self.sent {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// One `record` frame whose cursor is `cursor` (already past `record`).
fn render(framing: Framing, sub: &str, topic: &str, cursor: &Cursor, record: &Record) -> Encoded {
    ServerFrame::Record(RecordFrame {
        sub,
        topic,
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp_ms,
        key: record.key.as_deref().map(|k| BytesOut::new(framing, k)),
        value: record.value.as_deref().map(|v| BytesOut::new(framing, v)),
        headers: record
            .headers
            .iter()
            .map(|h| HeaderOut {
                name: &h.name,
                value: BytesOut::new(framing, &h.value),
            })
            .collect(),
        cursor: cursor.encode(topic),
    })
    .encode(framing)
}

/// The topic's partition count and a cursor with a position for each, as
/// the subscribe frame asks (the same rules as the SSE tail).
async fn settle(
    federation: &Federation,
    frame: &SubscribeFrame,
) -> Result<(u32, Cursor), ApiError> {
    let topic = frame.topic.as_str();
    let partitions = federation.describe_topic(topic).await?.partitions;
    let cursor = StartAt::parse(frame.cursor.as_deref(), frame.from.as_deref(), topic)?
        .resolve(federation, topic, partitions)
        .await?;
    Ok((partitions, cursor))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const DOCS: &str = include_str!("../../../docs/websocket.md");

    #[test]
    fn record_frame_matches_the_docs() {
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
        let Encoded::Text(frame) = render(Framing::Json, "s1", "orders", &cursor, &record) else {
            panic!("JSON framing renders text");
        };
        assert!(DOCS.contains(&frame), "{frame}");
        // The same frame in CBOR carries the bytes as they are.
        let Encoded::Binary(cbor) = render(Framing::Cbor, "s1", "orders", &cursor, &record) else {
            panic!("CBOR framing renders bytes");
        };
        let value: ciborium::Value = ciborium::de::from_reader(cbor.as_slice()).unwrap();
        let field = |name: &str| {
            value
                .as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("type"), ciborium::Value::Text("record".into()));
        assert_eq!(field("key"), ciborium::Value::Bytes(b"order-7".to_vec()));
        assert_eq!(field("offset"), ciborium::Value::Integer(41.into()));
        assert!(
            cbor.len() < frame.len(),
            "{} vs {}",
            cbor.len(),
            frame.len()
        );
    }

    #[test]
    fn ack_cursor_in_the_docs_is_real() {
        let cursor = Cursor::at_epoch(1, [(1, 42)]).encode("orders");
        let ack = format!(r#""partition":1,"offset":41,"cursor":"{cursor}""#);
        assert!(DOCS.contains(&ack), "{ack}");
    }
}
