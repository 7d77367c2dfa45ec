//! Traces, metrics and logs.
//!
//! - [`Telemetry`] (this file): the tracer (when `[tracing]` names an OTLP
//!   endpoint) and the per-cluster metric handles, shared by every handler.
//! - [`metrics`]: every metric's name, kind and labels, in one list.
//! - [`propagation`]: W3C `traceparent` in HTTP headers, WebSocket frames
//!   and record headers.
//! - [`http`]: the tower layer giving each request a server span, a log
//!   span with its trace id, and request metrics by route template.
//! - [`messaging`]: produce and delivery spans with OpenTelemetry's
//!   messaging conventions, and the record counters.
//! - [`export`]: the bounded span queue in front of the OTLP exporter.
//! - [`otlp`]: the OTLP/HTTP exporter, writing protobuf from span records.
//! - [`scrape`]: `GET /metrics` on the admin listener.
//! - [`logs`]: text or JSON log lines carrying trace ids.
//!
//! `docs/observability.md` describes what is exported.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use sluice_config::{ClusterKind, Config};

pub mod export;
pub mod http;
pub mod logs;
pub mod messaging;
pub mod metrics;
pub mod otlp;
pub mod propagation;
pub mod scrape;

/// Interval of the Prometheus recorder's upkeep (draining histogram
/// samples), so memory stays bounded between scrapes.
pub const DEFAULT_METRICS_UPKEEP_MS: u64 = 5_000;

/// `messaging.system` of records on an embedded cluster (Sluice's own log).
pub const EMBEDDED_MESSAGING_SYSTEM: &str = "sluice";

/// Instrumentation scope of Sluice's spans.
const SCOPE: &str = "sluice";

/// The process-wide Prometheus recorder; `None` if another recorder was
/// installed first (metrics then go there and `/metrics` is empty).
fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    metrics::LATENCY_BUCKETS_SECONDS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            metrics::describe();
            Some(handle)
        })
        .as_ref()
}

/// Per-cluster counters, registered once so the hot paths look them up by
/// name instead of building labels per request.
pub struct ClusterMetrics {
    /// `messaging.system` of the cluster: `kafka` or `sluice`.
    pub system: &'static str,
    by_protocol: [ProtocolMetrics; messaging::PROTOCOLS.len()],
    produce_duration: ::metrics::Histogram,
}

struct ProtocolMetrics {
    produced_records: ::metrics::Counter,
    produced_bytes: ::metrics::Counter,
    delivered_records: ::metrics::Counter,
    delivered_bytes: ::metrics::Counter,
}

impl ClusterMetrics {
    fn new(cluster: &str, system: &'static str) -> Self {
        use self::metrics::*;
        let by_protocol = messaging::PROTOCOLS.map(|protocol| {
            let labels = [
                (LABEL_CLUSTER, cluster.to_owned()),
                (LABEL_PROTOCOL, protocol.to_owned()),
            ];
            ProtocolMetrics {
                produced_records: ::metrics::counter!(PRODUCED_RECORDS_TOTAL, &labels),
                produced_bytes: ::metrics::counter!(PRODUCED_BYTES_TOTAL, &labels),
                delivered_records: ::metrics::counter!(DELIVERED_RECORDS_TOTAL, &labels),
                delivered_bytes: ::metrics::counter!(DELIVERED_BYTES_TOTAL, &labels),
            }
        });
        Self {
            system,
            by_protocol,
            produce_duration: ::metrics::histogram!(
                PRODUCE_DURATION_SECONDS,
                LABEL_CLUSTER => cluster.to_owned()
            ),
        }
    }
}

/// The tracer, when tracing is on, and its export queue.
struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    queue: export::ExportQueue,
    /// Where [`RecordedSpan`]s go: the queue, under the tracer's scope.
    sink: Arc<export::SpanSink>,
    /// Share of new traces recorded.
    sampling_ratio: f64,
}

impl Tracing {
    /// Whether a span under `parent` is recorded: a valid parent's
    /// decision is followed, and a new trace is recorded with probability
    /// `sampling_ratio`.
    fn sampled(&self, parent: &SpanContext) -> bool {
        if parent.is_valid() {
            parent.is_sampled()
        } else {
            self.sample_root()
        }
    }

    /// Whether a span without a parent starts a recorded trace.
    fn sample_root(&self) -> bool {
        if self.sampling_ratio >= 1.0 {
            return true;
        }
        if self.sampling_ratio <= 0.0 {
            return false;
        }
        let draw = u64::from_be_bytes(RandomIdGenerator::default().new_span_id().to_bytes());
        (draw as f64) < self.sampling_ratio * u64::MAX as f64
    }
}

/// What handlers need to trace and count; one per gateway.
pub struct Telemetry {
    tracing: Option<Tracing>,
    clusters: HashMap<String, ClusterMetrics>,
    prometheus: Option<&'static PrometheusHandle>,
    upkeep: Option<tokio::task::JoinHandle<()>>,
}

impl Telemetry {
    /// Sets up metrics and, when `[tracing]` names an endpoint, the tracer
    /// and its export task. Needs a Tokio runtime.
    pub fn start(config: &Config) -> anyhow::Result<Arc<Self>> {
        let prometheus = prometheus();
        let upkeep = prometheus.map(|handle| {
            tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval(Duration::from_millis(DEFAULT_METRICS_UPKEEP_MS));
                loop {
                    ticker.tick().await;
                    handle.run_upkeep();
                }
            })
        });
        let tracing = match config.tracing.traces_url() {
            Some(url) => Some(start_tracing(config, &url)?),
            None => None,
        };
        Ok(Arc::new(Self {
            tracing,
            clusters: cluster_metrics(config),
            prometheus,
            upkeep,
        }))
    }

    /// Metrics only, no tracing: for tests that build an [`crate::app::AppState`].
    pub fn disabled(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            tracing: None,
            clusters: cluster_metrics(config),
            prometheus: prometheus(),
            upkeep: None,
        })
    }

    /// Whether spans are recorded at all.
    pub fn tracing_enabled(&self) -> bool {
        self.tracing.is_some()
    }

    /// The counters of a cluster (configured at start).
    pub fn cluster(&self, name: &str) -> Option<&ClusterMetrics> {
        self.clusters.get(name)
    }

    /// The Prometheus exposition of every metric.
    pub fn render_metrics(&self) -> String {
        self.prometheus.map(|h| h.render()).unwrap_or_default()
    }

    /// Starts a span under `parent` if tracing is on and the span is
    /// sampled: parent-based (a sampled parent is followed, an unsampled one
    /// is not), and a new trace with probability `sampling_ratio`.
    ///
    /// The decision comes first: an unsampled span is never built (no ids
    /// drawn, no span record) and costs no allocation; `describe` gives the
    /// name and first attributes of a sampled one (its `Vec` should have
    /// room for the attributes added later).
    pub fn start_span(
        &self,
        kind: SpanKind,
        parent: &Context,
        describe: impl FnOnce() -> (String, Vec<KeyValue>),
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let tracing = self.tracing.as_ref()?;
        if !tracing.sampled(parent.span().span_context()) {
            return None;
        }
        let (name, attributes) = describe();
        let span = tracing.tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(kind)
                .with_attributes(attributes),
            parent,
        );
        opentelemetry::trace::Span::is_recording(&span).then_some(span)
    }

    /// Starts a span named `{prefix} {target}` that Sluice writes itself
    /// ([`RecordedSpan`]), under the same sampling as [`Self::start_span`]:
    /// for the spans every traced request has, where the SDK's span record
    /// (attributes as `KeyValue`s, a `SpanData` moved through the
    /// processor) cost more than the span is worth.
    pub fn record_span(
        &self,
        kind: SpanKind,
        parent: &Context,
        name: (&str, &str),
    ) -> Option<RecordedSpan> {
        let tracing = self.tracing.as_ref()?;
        let remote = parent.span();
        let parent_ids = remote.span_context();
        if !tracing.sampled(parent_ids) {
            return None;
        }
        let ids = RandomIdGenerator::default();
        let (trace_id, trace_state, parent_span_id, parent_is_remote) = if parent_ids.is_valid() {
            (
                parent_ids.trace_id(),
                parent_ids.trace_state().clone(),
                parent_ids.span_id(),
                parent_ids.is_remote(),
            )
        } else {
            (
                ids.new_trace_id(),
                TraceState::default(),
                SpanId::INVALID,
                false,
            )
        };
        let context = SpanContext::new(
            trace_id,
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        );
        let body = otlp::SpanBody::start(&context, parent_span_id, &kind, name, SystemTime::now());
        Some(RecordedSpan {
            body,
            context,
            parent_is_remote,
            error: None,
            sink: Arc::clone(&tracing.sink),
        })
    }

    /// Exports what is queued, then stops exporting.
    pub async fn shutdown(&self) {
        if let Some(upkeep) = &self.upkeep {
            upkeep.abort();
        }
        if let Some(tracing) = &self.tracing {
            // Ends the provider first so no span is queued after the flush.
            let _ = tracing.provider.shutdown();
            tracing.queue.shutdown().await;
        }
    }

    /// Exports what is queued now (tests wait for spans with it).
    pub async fn flush(&self) {
        if let Some(tracing) = &self.tracing {
            tracing.queue.flush(export::DEFAULT_FLUSH_TIMEOUT).await;
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(upkeep) = &self.upkeep {
            upkeep.abort();
        }
    }
}

fn cluster_metrics(config: &Config) -> HashMap<String, ClusterMetrics> {
    config
        .clusters
        .iter()
        .map(|c| {
            let system = match c.kind {
                ClusterKind::Kafka => "kafka",
                ClusterKind::Embedded => EMBEDDED_MESSAGING_SYSTEM,
            };
            (c.name.clone(), ClusterMetrics::new(&c.name, system))
        })
        .collect()
}

fn start_tracing(config: &Config, url: &str) -> anyhow::Result<Tracing> {
    let t = &config.tracing;
    let timeout = Duration::from_millis(t.export_timeout_ms);
    let mut exporter = otlp::OtlpHttpExporter::new(url)
        .map_err(|e| anyhow::anyhow!("tracing.otlp_endpoint: cannot export to {url}: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    exporter.set_resource(&resource);
    let (processor, queue) = export::start(
        exporter,
        export::QueueSettings {
            max_queue: t.max_queue_spans,
            max_batch: t.max_export_batch_spans,
            interval: Duration::from_millis(t.export_interval_ms),
            timeout,
        },
    )
    .context("tracing: cannot start the span export thread")?;
    // Which spans are sampled is decided before they are built
    // (`Telemetry::start_span`); the spans built are all recorded.
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(SCOPE);
    tracing::info!(
        endpoint = url,
        sampling_ratio = t.sampling_ratio,
        "exporting traces over OTLP/HTTP"
    );
    let sink = Arc::new(queue.sink(InstrumentationScope::builder(SCOPE).build()));
    Ok(Tracing {
        tracer,
        provider,
        queue,
        sink,
        sampling_ratio: t.sampling_ratio,
    })
}

/// A span Sluice writes itself, as OTLP bytes while it happens
/// ([`otlp::SpanBody`]); it ends, and is queued for export, when dropped.
#[derive(Debug)]
pub struct RecordedSpan {
    body: otlp::SpanBody,
    context: SpanContext,
    parent_is_remote: bool,
    error: Option<String>,
    sink: Arc<export::SpanSink>,
}

impl RecordedSpan {
    /// The span's ids, for its children and the records' `traceparent`.
    pub fn span_context(&self) -> &SpanContext {
        &self.context
    }

    /// Adds a string attribute.
    pub fn str_attribute(&mut self, key: &str, value: &str) {
        self.body.str_attribute(key, value);
    }

    /// Adds an integer attribute.
    pub fn i64_attribute(&mut self, key: &str, value: i64) {
        self.body.i64_attribute(key, value);
    }

    /// Marks the span failed, with `description`.
    pub fn set_error(&mut self, description: impl Into<String>) {
        self.error = Some(description.into());
    }
}

impl Drop for RecordedSpan {
    fn drop(&mut self) {
        self.body.finish(
            &self.context,
            self.parent_is_remote,
            SystemTime::now(),
            self.error.as_deref(),
        );
        self.sink.push(self.body.bytes());
    }
}

/// Holds one unit of a gauge (an open connection, a running
/// subscription) for as long as it lives.
pub struct GaugeGuard(::metrics::Gauge);

impl GaugeGuard {
    /// Adds one to the gauge `name` until dropped.
    pub fn hold(name: &'static str) -> Self {
        let gauge = ::metrics::gauge!(name);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn traced(ratio: f64) -> Arc<Telemetry> {
        let mut config = Config::default();
        // Nothing listens there: spans are dropped as failed exports.
        config.tracing.otlp_endpoint = Some("http://127.0.0.1:1".into());
        config.tracing.sampling_ratio = ratio;
        Telemetry::start(&config).unwrap()
    }

    fn describe() -> (String, Vec<KeyValue>) {
        ("s".into(), Vec::new())
    }

    fn parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            flags,
            true,
            TraceState::default(),
        ))
    }

    #[tokio::test]
    async fn the_parents_decision_is_followed() {
        let never = traced(0.0);
        let span = never
            .start_span(SpanKind::Server, &parent(true), describe)
            .expect("a sampled parent is followed at ratio 0");
        assert_eq!(
            opentelemetry::trace::Span::span_context(&span).trace_id(),
            TraceId::from(7)
        );
        assert!(never
            .start_span(SpanKind::Server, &Context::new(), describe)
            .is_none());
        let always = traced(1.0);
        assert!(always
            .start_span(SpanKind::Server, &parent(false), describe)
            .is_none());
        assert!(always
            .start_span(SpanKind::Server, &Context::new(), describe)
            .is_some());
    }

    #[tokio::test]
    async fn new_traces_are_sampled_at_the_ratio() {
        let quarter = traced(0.25);
        let n = 20_000;
        let sampled = (0..n)
            .filter(|_| {
                quarter
                    .start_span(SpanKind::Server, &Context::new(), describe)
                    .is_some()
            })
            .count();
        // 0.25 ± 0.02 is more than six standard deviations wide.
        let share = sampled as f64 / n as f64;
        assert!((0.23..=0.27).contains(&share), "{share}");
    }
}
