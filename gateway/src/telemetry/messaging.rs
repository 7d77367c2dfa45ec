//! Produce and delivery spans, with OpenTelemetry's messaging semantic
//! conventions, and the record counters by cluster.
//!
//! A produce gets a `send {topic}` span (kind producer) under the request's
//! span (or a WebSocket frame's `traceparent`); its context goes into each
//! record's `traceparent` header. Each record pushed to a WebSocket or SSE
//! reader gets a `deliver {topic}` span (kind consumer), a child of the
//! context in the record's header, with a link to it as well.
//!
//! Cost: with tracing off, or for a span the sampler drops, nothing here
//! allocates per record: no header is written, and names and attributes
//! are built only for spans being recorded.

use std::time::Instant;

use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use sluice_broker::{Acks, ProduceRecord, Record};
use sluice_federation::{FederationError, Produced};

use super::metrics::{LABEL_PROTOCOL, PRODUCE_ERRORS_TOTAL};
use super::propagation;
use crate::app::AppState;

/// The front ends, as `protocol` label values.
pub const PROTOCOLS: [&str; 3] = [REST, WEBSOCKET, SSE];
/// REST routes.
pub const REST: &str = "rest";
/// `/v1/ws`.
pub const WEBSOCKET: &str = "websocket";
/// `/topics/{topic}/events`.
pub const SSE: &str = "sse";

fn protocol_index(protocol: &str) -> usize {
    PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0)
}

/// Attribute: the cluster a record went to or came from.
pub const CLUSTER_NAME: &str = "sluice.cluster.name";
/// Attribute: the topic's placement epoch on that cluster.
pub const PLACEMENT_EPOCH: &str = "sluice.placement.epoch";
/// Attribute: the front end (`rest`, `websocket`, `sse`).
pub const PROTOCOL: &str = "sluice.protocol";

/// Bytes a read record counts for: key, value, header names and values.
pub fn record_bytes(record: &Record) -> usize {
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

/// Produces through the federation with a `send` span and the produce
/// metrics. `parent` is the request's context (`Context::current()` inside
/// a traced request) or the one a WebSocket frame named.
pub async fn produce(
    state: &AppState,
    topic: &str,
    mut records: Vec<ProduceRecord>,
    acks: Acks,
    parent: &Context,
    protocol: &'static str,
) -> Result<Produced, FederationError> {
    let count = records.len();
    let bytes: usize = records.iter().map(ProduceRecord::size_bytes).sum();
    let mut span = state
        .telemetry
        .record_span(SpanKind::Producer, parent, ("send", topic))
        .map(|mut span| {
            span.str_attribute("messaging.destination.name", topic);
            span.str_attribute("messaging.operation.type", "send");
            span.str_attribute("messaging.operation.name", "send");
            span.str_attribute(PROTOCOL, protocol);
            if count > 1 {
                span.i64_attribute("messaging.batch.message_count", count as i64);
            }
            span
        });
    if let Some(span) = &span {
        // Sampled: the consumers continue this span's trace.
        propagation::inject(&mut records, span.span_context());
    }
    let started = Instant::now();
    let produced = state
        .federation
        .produce_to_epoch(topic, records, acks)
        .await;
    let elapsed = started.elapsed();
    match &produced {
        Ok(produced) => {
            let cluster = state.federation.epoch_cluster(topic, produced.epoch);
            let metrics = cluster.as_deref().and_then(|c| state.telemetry.cluster(c));
            if let Some(m) = metrics {
                let by = &m.by_protocol[protocol_index(protocol)];
                by.produced_records.increment(count as u64);
                by.produced_bytes.increment(bytes as u64);
                m.produce_duration.record(elapsed.as_secs_f64());
            }
            if let Some(span) = &mut span {
                let system = metrics.map_or(super::EMBEDDED_MESSAGING_SYSTEM, |m| m.system);
                span.str_attribute("messaging.system", system);
                span.i64_attribute(PLACEMENT_EPOCH, i64::from(produced.epoch));
                if let Some(cluster) = &cluster {
                    span.str_attribute(CLUSTER_NAME, cluster);
                }
                let first = produced.offsets.first();
                if let Some(first) = first {
                    if produced
                        .offsets
                        .iter()
                        .all(|o| o.partition == first.partition)
                    {
                        span.str_attribute(
                            "messaging.destination.partition.id",
                            itoa::Buffer::new().format(first.partition),
                        );
                    }
                }
                // An offset names one record: only for a batch of one.
                if let [only] = produced.offsets.as_slice() {
                    if let Some(offset) = only.offset {
                        span.i64_attribute("messaging.kafka.offset", offset as i64);
                    }
                }
            }
        }
        Err(error) => {
            metrics::counter!(PRODUCE_ERRORS_TOTAL, LABEL_PROTOCOL => protocol).increment(1);
            if let Some(span) = &mut span {
                span.str_attribute("error.type", error_type(error));
                span.set_error(error.to_string());
            }
        }
    }
    // Ends the span.
    drop(span);
    produced
}

fn error_type(error: &FederationError) -> &'static str {
    match error {
        FederationError::HomeDown { .. } => "home_down",
        FederationError::NoHealthyCluster { .. } => "no_healthy_cluster",
        FederationError::Broker(_) => "broker",
        _ => "federation",
    }
}

/// Where records are delivered: one per reading loop.
pub struct Delivery<'a> {
    /// The topic read.
    pub topic: &'a str,
    /// The front end.
    pub protocol: &'static str,
    /// The consumer group, for reads on behalf of one.
    pub group: Option<&'a str>,
}

impl Delivery<'_> {
    /// Counts a batch read from `cluster` and handed to the reader.
    pub fn count(&self, state: &super::Telemetry, cluster: &str, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        if let Some(m) = state.cluster(cluster) {
            let by = &m.by_protocol[protocol_index(self.protocol)];
            by.delivered_records.increment(records.len() as u64);
            by.delivered_bytes
                .increment(records.iter().map(record_bytes).sum::<usize>() as u64);
        }
    }

    /// Starts the `deliver` span of one record read from `cluster`, as the
    /// child of the producer's context in its `traceparent` header (a new
    /// trace when it has none) and linked to it. `None` when tracing is off
    /// or the span is not sampled; end it once the record is handed over.
    pub fn start_span(
        &self,
        telemetry: &super::Telemetry,
        cluster: &str,
        record: &Record,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        if !telemetry.tracing_enabled() {
            return None;
        }
        let producer = propagation::record_parent(&record.headers);
        let parent = match &producer {
            Some(producer) => Context::new().with_remote_span_context(producer.clone()),
            None => Context::new(),
        };
        let mut span = telemetry.start_span(SpanKind::Consumer, &parent, || {
            let system = telemetry
                .cluster(cluster)
                .map_or(super::EMBEDDED_MESSAGING_SYSTEM, |m| m.system);
            let mut attributes = Vec::with_capacity(9);
            attributes.extend([
                KeyValue::new("messaging.system", system),
                KeyValue::new("messaging.destination.name", self.topic.to_owned()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    record.partition.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", record.offset as i64),
                KeyValue::new("messaging.operation.type", "receive"),
                KeyValue::new("messaging.operation.name", "deliver"),
                KeyValue::new(CLUSTER_NAME, cluster.to_owned()),
                KeyValue::new(PROTOCOL, self.protocol),
            ]);
            if let Some(group) = self.group {
                attributes.push(KeyValue::new(
                    "messaging.consumer.group.name",
                    group.to_owned(),
                ));
            }
            (format!("deliver {}", self.topic), attributes)
        })?;
        if let Some(producer) = producer {
            span.add_link(producer, Vec::new());
        }
        Some(span)
    }
}
