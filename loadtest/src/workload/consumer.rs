//! Confluent REST Proxy v2 consumer instances: the extension point for the
//! `/consumers/...` routes. Each subscriber creates an instance in its own
//! group (binary format, `auto.offset.reset=latest`), subscribes to the
//! topic, polls `records` until the drain is over, and deletes the
//! instance. The route shapes are Confluent's, so this runs against any
//! REST Proxy; against Sluice it needs the consumer routes to be there.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::Method;
use serde::Deserialize;

use super::{b64_len, decode_stamp_prefix, Ctx, Receiver};
use crate::http::{error_label, HttpConn};
use crate::scenario::SubscriberGroup;
use crate::stats::StatsHandle;
use crate::verify::Delivery;

const V2: &str = "application/vnd.kafka.v2+json";
const BINARY: &str = "application/vnd.kafka.binary.v2+json";
/// How long one `records` poll may wait on the server.
const POLL_TIMEOUT_MS: u32 = 200;

#[derive(Deserialize)]
struct Created {
    instance_id: String,
}

#[derive(Deserialize)]
struct Record {
    partition: u32,
    offset: u64,
    #[serde(default)]
    value: Option<String>,
}

/// One v2 consumer instance.
pub struct ConsumerV2Subscriber {
    /// Shared run context.
    pub ctx: Arc<Ctx>,
    /// Its group's settings.
    pub group: SubscriberGroup,
    /// Its index (its consumer group is `<run topic>-<group>-<index>`, so
    /// each instance gets every record).
    pub index: u32,
    /// Its client's credential header.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where it records.
    pub stats: StatsHandle,
}

impl ConsumerV2Subscriber {
    /// Creates, subscribes, polls once (so `latest` is fixed before the
    /// producers start), reports ready, then polls until the drain is over.
    pub async fn run(self, ready: tokio::sync::mpsc::Sender<Result<(), String>>) -> Delivery {
        let mut receiver = Receiver::new(self.stats.clone());
        match self.consume(&mut receiver, &ready).await {
            Ok(()) => {}
            Err(e) => {
                receiver.error("consumer");
                let _ = ready.send(Err(format!("v2 consumer: {e}"))).await;
            }
        }
        receiver.delivery
    }

    async fn consume(
        &self,
        receiver: &mut Receiver,
        ready: &tokio::sync::mpsc::Sender<Result<(), String>>,
    ) -> anyhow::Result<()> {
        let target = &self.ctx.target;
        let mut conn = HttpConn::connect(target, self.auth.clone()).await?;
        let group = format!("{}-{}-{}", self.ctx.topic, self.group.name, self.index);
        let json = [(CONTENT_TYPE, HeaderValue::from_static(V2))];
        let create = serde_json::json!({
            "name": format!("lt-{}", self.index), "format": "binary",
            "auto.offset.reset": "latest",
        });
        let answer = conn
            .request(
                Method::POST,
                &target.path(&format!("/consumers/{group}")),
                &json,
                Bytes::from(create.to_string()),
            )
            .await?;
        if !answer.status.is_success() {
            anyhow::bail!("create instance: {}", error_label(&answer));
        }
        let created: Created = serde_json::from_slice(&answer.body)?;
        let instance = target.path(&format!(
            "/consumers/{group}/instances/{}",
            created.instance_id
        ));
        let subscribe = serde_json::json!({ "topics": [self.ctx.topic] });
        let answer = conn
            .request(
                Method::POST,
                &format!("{instance}/subscription"),
                &json,
                Bytes::from(subscribe.to_string()),
            )
            .await?;
        if !answer.status.is_success() {
            anyhow::bail!("subscribe: {}", error_label(&answer));
        }
        let poll = format!("{instance}/records?timeout={POLL_TIMEOUT_MS}");
        let accept = [(ACCEPT, HeaderValue::from_static(BINARY))];
        let mut buf = [0u8; 48];
        let mut first = true;
        loop {
            let answer = conn
                .request(Method::GET, &poll, &accept, Bytes::new())
                .await?;
            if answer.status.is_success() {
                let records: Vec<Record> = serde_json::from_slice(&answer.body)?;
                for r in records {
                    let value = r.value.as_deref().unwrap_or("");
                    let n = decode_stamp_prefix(value, &mut buf);
                    receiver.record(r.partition, r.offset, &buf[..n], b64_len(value));
                }
            } else {
                receiver.error(&error_label(&answer));
            }
            if first {
                first = false;
                let _ = ready.send(Ok(())).await;
            }
            if self
                .ctx
                .subscriber_done(receiver.delivery.count, receiver.last_record)
            {
                break;
            }
        }
        let _ = conn
            .request(Method::DELETE, &instance, &json, Bytes::new())
            .await;
        Ok(())
    }
}
