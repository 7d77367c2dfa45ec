//! REST produce: v2 binary or JSON batches, or v3 single records, one
//! request in flight per keep-alive connection.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Ctx, RECONNECT_PAUSE};
use crate::http::{error_label, HttpConn};
use crate::pacing::Schedule;
use crate::payload::{Batch, BodyBuilder, KeyDistribution, Rng};
use crate::scenario::{ProduceProtocol, ProducerGroup};
use crate::stats::{lock, StatsHandle};

/// One producing connection.
pub struct RestProducer {
    /// Shared run context.
    pub ctx: Arc<Ctx>,
    /// Its group's settings.
    pub group: ProducerGroup,
    /// Its producer id (in stamps).
    pub producer: u32,
    /// Its client's credential header.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Where it records.
    pub stats: StatsHandle,
    /// When it sends.
    pub schedule: Schedule,
    /// Wall-clock µs at the run's start instant, to stamp intended times.
    pub wall_start_us: u64,
    /// The run's start instant.
    pub start: Instant,
}

#[derive(Deserialize)]
struct V2Answer {
    offsets: Vec<V2Offset>,
}

#[derive(Deserialize)]
struct V2Offset {
    partition: Option<u32>,
    offset: Option<u64>,
    #[serde(default)]
    error_code: Option<i64>,
}

#[derive(Deserialize)]
struct V3Answer {
    partition_id: u32,
    offset: Option<u64>,
}

impl RestProducer {
    /// Sends until the schedule ends.
    pub async fn run(mut self) {
        let g = &self.group;
        let keys = KeyDistribution::parse(&g.keys).unwrap_or(KeyDistribution::None);
        let mut builder =
            BodyBuilder::new(g.protocol, g.record_bytes, &keys, &self.ctx.topic, None);
        let mut rng = Rng::new(self.ctx.seed, u64::from(self.producer));
        let acks = g
            .acks
            .as_deref()
            .map(|a| format!("?acks={a}"))
            .unwrap_or_default();
        let topic = &self.ctx.topic;
        let path = match g.protocol {
            ProduceProtocol::RestV3 => self.ctx.target.path(&format!(
                "/v3/clusters/{}/topics/{topic}/records{acks}",
                self.ctx.cluster_id
            )),
            _ => self.ctx.target.path(&format!("/topics/{topic}{acks}")),
        };
        let content_type = match g.protocol {
            ProduceProtocol::RestV2Binary => "application/vnd.kafka.binary.v2+json",
            ProduceProtocol::RestV2Json => "application/vnd.kafka.json.v2+json",
            _ => "application/json",
        };
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                ACCEPT,
                HeaderValue::from_static("application/vnd.kafka.v2+json, application/json"),
            ),
        ];
        let verify = self.ctx.acks.clone();
        let mut body = String::with_capacity(256 * g.batch as usize);
        let pacer = crate::pacing::Pacer::new(g.precise_pacing, self.stats.clone());
        let mut conn: Option<HttpConn> = None;
        let mut seq = 0u64;
        let mut id = 0u64;
        while let Some(at) = self.schedule.next_send() {
            // A sender that is behind goes at once: a timer for a past
            // instant may still wait for the runtime's next timer turn.
            if self.schedule.is_open() && at > Instant::now() {
                pacer.sleep_until(at).await;
            }
            if conn.as_ref().is_none_or(|c| !c.is_open()) {
                match HttpConn::connect(&self.ctx.target, self.auth.clone()).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        lock(&self.stats).error("connect");
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
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
            id += 1;
            let since = if self.schedule.is_open() {
                at
            } else {
                Instant::now()
            };
            lock(&self.stats).requests += 1;
            let n = u64::from(g.batch);
            let answer = c
                .request(
                    Method::POST,
                    &path,
                    &headers,
                    Bytes::copy_from_slice(body.as_bytes()),
                )
                .await;
            let now = Instant::now();
            match answer {
                Ok(a) if a.status.is_success() => {
                    let mut placed = Vec::new();
                    let mut failed = 0u64;
                    if verify.is_some() {
                        match g.protocol {
                            ProduceProtocol::RestV3 => {
                                if let Ok(v) = serde_json::from_slice::<V3Answer>(&a.body) {
                                    placed.push((v.partition_id, v.offset));
                                }
                            }
                            _ => {
                                if let Ok(v) = serde_json::from_slice::<V2Answer>(&a.body) {
                                    for o in v.offsets {
                                        if o.error_code.is_some() {
                                            failed += 1;
                                        }
                                        placed.push((o.partition.unwrap_or(0), o.offset));
                                    }
                                }
                            }
                        }
                    }
                    if failed > 0 {
                        lock(&self.stats).error("record error in 200");
                    } else {
                        if let Some(log) = &verify {
                            if placed.len() as u64 == n {
                                log.acked(self.producer, seq, &placed);
                            } else {
                                log.uncertain(n);
                            }
                        }
                        self.ctx.add_acked(n);
                        lock(&self.stats).ack(since, now, n, n * g.record_bytes as u64);
                    }
                }
                Ok(a) => lock(&self.stats).error(&error_label(&a)),
                Err(_) => {
                    // No answer: the records may or may not be written.
                    if let Some(log) = &verify {
                        log.uncertain(n);
                    }
                    lock(&self.stats).error("connection lost");
                    conn = None;
                }
            }
            seq += n;
        }
        lock(&self.stats).missed += self.schedule.missed(Instant::now());
    }
}
