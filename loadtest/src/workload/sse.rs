//! SSE subscribe: `GET /topics/{topic}/events?from=latest`, one
//! connection per subscriber, events parsed as they stream in.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, ACCEPT};
use serde::Deserialize;

use super::{b64_len, decode_stamp_prefix, Ctx, Receiver};
use crate::http::HttpConn;
use crate::scenario::SubscriberGroup;
use crate::stats::StatsHandle;
use crate::verify::Delivery;

#[derive(Deserialize)]
struct Event<'a> {
    partition: u32,
    offset: u64,
    #[serde(default, borrow)]
    value: Option<std::borrow::Cow<'a, str>>,
}

/// One SSE subscriber.
pub struct SseSubscriber {
    /// Shared run context.
    pub ctx: Arc<Ctx>,
    /// Its group's settings.
    pub group: SubscriberGroup,
    /// Its client's credential header.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where it records.
    pub stats: StatsHandle,
}

impl SseSubscriber {
    /// Opens the stream (`ready` hears when the `200` head arrived), then
    /// receives until the drain is over.
    pub async fn run(self, ready: tokio::sync::mpsc::Sender<Result<(), String>>) -> Delivery {
        let mut receiver = Receiver::new(self.stats.clone());
        let mut conn = match HttpConn::connect(&self.ctx.target, self.auth.clone()).await {
            Ok(c) => c,
            Err(e) => {
                receiver.error("connect");
                let _ = ready.send(Err(format!("SSE connect: {e}"))).await;
                return receiver.delivery;
            }
        };
        let path = self
            .ctx
            .target
            .path(&format!("/topics/{}/events?from=latest", self.ctx.topic));
        let headers = [(ACCEPT, HeaderValue::from_static("text/event-stream"))];
        let response =
            match tokio::time::timeout(super::SUBSCRIBE_TIMEOUT, conn.open_stream(&path, &headers))
                .await
            {
                Ok(Ok(r)) if r.status().is_success() => r,
                Ok(Ok(r)) => {
                    receiver.error(&format!("http {}", r.status().as_u16()));
                    let _ = ready
                        .send(Err(format!("SSE answered {}", r.status())))
                        .await;
                    return receiver.delivery;
                }
                Ok(Err(e)) => {
                    receiver.error("connection lost");
                    let _ = ready.send(Err(format!("SSE request: {e}"))).await;
                    return receiver.delivery;
                }
                Err(_) => {
                    let _ = ready.send(Err("SSE not open in time".into())).await;
                    return receiver.delivery;
                }
            };
        let _ = ready.send(Ok(())).await;
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut buf = [0u8; 48];
        loop {
            if self
                .ctx
                .subscriber_done(receiver.delivery.count, receiver.last_record)
            {
                break;
            }
            let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                Err(_) => continue,
                Ok(None) | Ok(Some(Err(_))) => {
                    receiver.error("stream ended");
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            // Complete events end with a blank line.
            let mut consumed = 0;
            while let Some(end) = find_blank_line(&pending[consumed..]) {
                let block = &pending[consumed..consumed + end];
                consumed += end + 2;
                handle_block(block, &mut receiver, &mut buf);
            }
            pending.drain(..consumed);
        }
        receiver.delivery
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n")
}

fn handle_block(block: &[u8], receiver: &mut Receiver, buf: &mut [u8; 48]) {
    let mut is_record = false;
    let mut data: Option<&[u8]> = None;
    for line in block.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"event: ") {
            is_record = rest == b"record";
            if rest == b"error" {
                receiver.error("sse error event");
            }
        } else if let Some(rest) = line.strip_prefix(b"data: ") {
            data = Some(rest);
        }
    }
    if !is_record {
        return;
    }
    let Some(data) = data else { return };
    match serde_json::from_slice::<Event>(data) {
        Ok(event) => {
            let value = event.value.as_deref().unwrap_or("");
            let n = decode_stamp_prefix(value, buf);
            receiver.record(event.partition, event.offset, &buf[..n], b64_len(value));
        }
        Err(_) => receiver.error("bad event"),
    }
}
