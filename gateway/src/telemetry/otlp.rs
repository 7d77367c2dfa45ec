//! OTLP/HTTP: spans written as protobuf straight from the SDK's span
//! records, and requests posted over one kept-alive HTTP/1.1 connection to
//! the collector.
//!
//! Each span is encoded once, when it ends, by [`put_span_field`] (see
//! `export.rs`); a request is then the resource, the scopes, and those
//! bytes as they are ([`OtlpHttpExporter::encode_request`]). Encoding
//! without the intermediate `opentelemetry-proto` tree (a `String` per
//! attribute key and value, a `Vec` per id) is what makes tracing every
//! request affordable: with the tree, half of the export's time was spent
//! allocating and freeing it. The wire format is OTLP's
//! `ExportTraceServiceRequest` (`opentelemetry/proto/trace/v1/trace.proto`);
//! the tests decode what is written here with `opentelemetry-proto` and
//! compare it with that crate's own conversion of the same spans.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;

/// Most bytes of a collector's answer that are read (OTLP answers are a
/// few bytes; an error page is cut here).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Posts spans to an OTLP/HTTP collector as `application/x-protobuf`.
#[derive(Debug)]
pub struct OtlpHttpExporter {
    /// `host:port` to connect to, and the `Host` header.
    authority: String,
    /// Path and query of the traces URL.
    target: String,
    /// The encoded `Resource` message and the resource's schema URL.
    resource: Vec<u8>,
    resource_schema_url: String,
    /// The kept-alive connection, taken while an export uses it.
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl OtlpHttpExporter {
    /// An exporter posting to `url` (`http://host[:port]/path`).
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("must be an http:// URL".into());
        }
        let host = uri.host().ok_or("has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let target = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            authority,
            target,
            resource: Vec::new(),
            resource_schema_url: String::new(),
            connection: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.authority))?;
        tokio::spawn(async move {
            // Ends when the collector or the exporter closes it.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        // The target was parsed from a valid URI, so it parses again.
        *request.uri_mut() = self
            .target
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let headers = request.headers_mut();
        if let Ok(host) = self.authority.parse() {
            headers.insert(HOST, host);
        }
        headers.insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        request
    }

    /// Sets the resource every request names: its attributes are encoded
    /// once, here.
    pub fn set_resource(&mut self, resource: &Resource) {
        let mut encoded = Vec::new();
        for (key, value) in resource.iter() {
            put_message(&mut encoded, 1, |out| {
                put_key_value(out, key.as_str(), value)
            });
        }
        self.resource = encoded;
        self.resource_schema_url = resource.schema_url().unwrap_or_default().to_owned();
    }

    /// Writes an `ExportTraceServiceRequest`: the resource, and for each
    /// scope its spans, each framed by [`put_framed_span`].
    pub fn encode_request(&self, scopes: &[(&InstrumentationScope, &[u8])], out: &mut Vec<u8>) {
        out.reserve(
            self.resource.len() + scopes.iter().map(|(_, s)| s.len() + 64).sum::<usize>() + 32,
        );
        put_message(out, 1, |out| {
            put_len_field(out, 1, &self.resource);
            for (scope, spans) in scopes {
                put_message(out, 2, |out| {
                    put_message(out, 1, |out| put_scope(out, scope));
                    out.extend_from_slice(spans);
                    put_string(out, 3, scope.schema_url().unwrap_or_default());
                });
            }
            put_string(out, 3, &self.resource_schema_url);
        });
    }

    /// Posts one encoded request; keeps the connection for the next one
    /// when the collector answered.
    pub async fn post(&self, body: Bytes) -> Result<(), String> {
        let kept = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // A kept connection may have been closed by the collector (an
        // idle timeout) just before this request: a request that never
        // went out is sent once more on a new connection.
        let (mut sender, mut may_retry) = match kept {
            Some(sender) if !sender.is_closed() => (sender, true),
            _ => (self.connect().await?, false),
        };
        let mut request = self.request(body);
        let response = loop {
            let failed = match sender.ready().await {
                Ok(()) => match sender.try_send_request(request).await {
                    Ok(response) => break response,
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) => {
                            request = unsent;
                            failed.into_error()
                        }
                        None => return Err(format!("posting spans: {}", failed.error())),
                    },
                },
                Err(e) => e,
            };
            if !std::mem::take(&mut may_retry) {
                return Err(format!("posting spans: {failed}"));
            }
            sender = self.connect().await?;
        };
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "collector answered {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            ));
        }
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sender);
        Ok(())
    }
}

// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Span flags: the parent's remoteness is known (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`).
const HAS_IS_REMOTE: u32 = 0x100;
/// Span flags: the parent is remote (`SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`).
const IS_REMOTE: u32 = 0x200;

/// The body of a `ScopeSpans.spans` field (a `Span` message) framed as
/// that field: tag and length, then `body`.
pub fn put_framed_span(out: &mut Vec<u8>, body: &[u8]) {
    put_tag(out, 2, LEN);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A `Span` message written while the span happens, for the spans Sluice
/// records itself (the HTTP server span and the produce span): the ids,
/// name, kind and start when it starts, each attribute as it becomes known
/// (straight from `&str`, no `KeyValue`), the end, status and flags when
/// it ends. Protobuf reads a message's fields in any order, and repeated
/// fields in the order written, so the result decodes as the same span the
/// SDK path would encode (`put_span`).
#[derive(Debug)]
pub struct SpanBody(Vec<u8>);

impl SpanBody {
    /// A started span named `{prefix} {target}`.
    pub fn start(
        context: &SpanContext,
        parent_span_id: SpanId,
        kind: &SpanKind,
        (prefix, target): (&str, &str),
        start: SystemTime,
    ) -> Self {
        let mut out = Vec::with_capacity(384);
        put_span_head(
            &mut out,
            context,
            parent_span_id,
            &[prefix, " ", target],
            kind,
            start,
        );
        Self(out)
    }

    /// Adds a string attribute.
    pub fn str_attribute(&mut self, key: &str, value: &str) {
        put_message(&mut self.0, 9, |out| {
            put_string(out, 1, key);
            put_message(out, 2, |out| put_len_field(out, 1, value.as_bytes()));
        });
    }

    /// Adds an integer attribute.
    pub fn i64_attribute(&mut self, key: &str, value: i64) {
        put_message(&mut self.0, 9, |out| {
            put_string(out, 1, key);
            put_message(out, 2, |out| put_i64(out, value));
        });
    }

    /// Ends the span: its end time, an error status if `error` is some
    /// (with that description), and its flags.
    pub fn finish(
        &mut self,
        context: &SpanContext,
        parent_is_remote: bool,
        end: SystemTime,
        error: Option<&str>,
    ) {
        let out = &mut self.0;
        put_fixed64(out, 8, nanos(end));
        match error {
            Some(description) => put_status(out, STATUS_ERROR, description),
            None => put_status(out, STATUS_UNSET, ""),
        }
        put_fixed32(out, 16, flags(context, parent_is_remote));
    }

    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

fn put_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_string(out, 1, scope.name());
    put_string(out, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        put_key_value_field(out, 3, kv);
    }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn flags(context: &SpanContext, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE;
    if parent_is_remote {
        flags |= IS_REMOTE;
    }
    flags
}

/// A span record as the body of a `Span` message (unframed).
pub fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    put_span_head(
        out,
        context,
        span.parent_span_id,
        &[&span.name],
        &span.span_kind,
        span.start_time,
    );
    put_fixed64(out, 8, nanos(span.end_time));
    for kv in &span.attributes {
        put_key_value_field(out, 9, kv);
    }
    put_varint_field(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        put_message(out, 11, |out| {
            put_fixed64(out, 1, nanos(event.timestamp));
            put_string(out, 2, &event.name);
            for kv in &event.attributes {
                put_key_value_field(out, 3, kv);
            }
            put_varint_field(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    put_varint_field(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        put_message(out, 13, |out| {
            let context = &link.span_context;
            put_len_field(out, 1, &context.trace_id().to_bytes());
            put_len_field(out, 2, &context.span_id().to_bytes());
            put_string(out, 3, &context.trace_state().header());
            for kv in &link.attributes {
                put_key_value_field(out, 4, kv);
            }
            put_varint_field(out, 5, u64::from(link.dropped_attributes_count));
            put_fixed32(out, 6, flags(context, context.is_remote()));
        });
    }
    put_varint_field(out, 14, u64::from(span.links.dropped_count));
    match &span.status {
        Status::Unset => put_status(out, STATUS_UNSET, ""),
        Status::Ok => put_status(out, STATUS_OK, ""),
        Status::Error { description } => put_status(out, STATUS_ERROR, description),
    }
    put_fixed32(out, 16, flags(context, span.parent_span_is_remote));
}

/// A span's fields known when it starts: trace and span ids, trace state,
/// parent, name (the concatenation of `name`), kind, start time.
fn put_span_head(
    out: &mut Vec<u8>,
    context: &SpanContext,
    parent_span_id: SpanId,
    name: &[&str],
    kind: &SpanKind,
    start: SystemTime,
) {
    put_len_field(out, 1, &context.trace_id().to_bytes());
    put_len_field(out, 2, &context.span_id().to_bytes());
    put_string(out, 3, &context.trace_state().header());
    if parent_span_id != SpanId::INVALID {
        put_len_field(out, 4, &parent_span_id.to_bytes());
    }
    let len: usize = name.iter().map(|part| part.len()).sum();
    if len > 0 {
        put_tag(out, 5, LEN);
        put_varint(out, len as u64);
        for part in name {
            out.extend_from_slice(part.as_bytes());
        }
    }
    put_varint_field(out, 6, span_kind(kind));
    put_fixed64(out, 7, nanos(start));
}

/// `Status.code` values.
const STATUS_UNSET: u64 = 0;
const STATUS_OK: u64 = 1;
const STATUS_ERROR: u64 = 2;

/// `Status { message = 2; code = 3 }` as field 15; an unset status is an
/// empty message.
fn put_status(out: &mut Vec<u8>, code: u64, description: &str) {
    put_message(out, 15, |out| {
        put_string(out, 2, description);
        put_varint_field(out, 3, code);
    });
}

/// `KeyValue { key = 1; AnyValue value = 2 }` as field `field`.
fn put_key_value_field(out: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    put_message(out, field, |out| {
        put_key_value(out, kv.key.as_str(), &kv.value)
    });
}

fn put_key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    put_string(out, 1, key);
    put_message(out, 2, |out| put_any_value(out, value));
}

/// `AnyValue`, a oneof: its one field is written even when it is the
/// default, so an empty string stays a string.
fn put_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => put_bool(out, *b),
        Value::I64(i) => put_i64(out, *i),
        Value::F64(f) => put_f64(out, *f),
        Value::String(s) => put_len_field(out, 1, s.as_str().as_bytes()),
        // `ArrayValue { repeated AnyValue values = 1 }`.
        Value::Array(array) => put_message(out, 5, |out| match array {
            Array::Bool(v) => v
                .iter()
                .for_each(|b| put_message(out, 1, |o| put_bool(o, *b))),
            Array::I64(v) => v
                .iter()
                .for_each(|i| put_message(out, 1, |o| put_i64(o, *i))),
            Array::F64(v) => v
                .iter()
                .for_each(|f| put_message(out, 1, |o| put_f64(o, *f))),
            Array::String(v) => v.iter().for_each(|s| {
                put_message(out, 1, |o| put_len_field(o, 1, s.as_str().as_bytes()));
            }),
            other => {
                let text = other.to_string();
                put_message(out, 1, |o| put_len_field(o, 1, text.as_bytes()));
            }
        }),
        other => put_len_field(out, 1, other.as_str().as_bytes()),
    }
}

fn put_bool(out: &mut Vec<u8>, b: bool) {
    put_tag(out, 2, VARINT);
    out.push(u8::from(b));
}

fn put_i64(out: &mut Vec<u8>, i: i64) {
    put_tag(out, 3, VARINT);
    put_varint(out, i as u64);
}

fn put_f64(out: &mut Vec<u8>, f: f64) {
    put_tag(out, 4, FIXED64);
    out.extend_from_slice(&f.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut bytes = [0u8; 10];
    let n = varint_into(&mut bytes, v);
    out.extend_from_slice(&bytes[..n]);
}

/// Writes `v` as a varint at the start of `out`; returns its length.
fn varint_into(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, u64::from((field << 3) | wire_type));
}

fn put_len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A nested message written by `body`, in one pass: one byte is kept for
/// its length and filled in afterwards; a body of 128 bytes or more moves
/// over by the length's extra bytes. (Computing every length first would
/// walk each span's attributes two or three times.)
fn put_message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = [0u8; 10];
        let n = varint_into(&mut prefix, len as u64);
        out.splice(at..=at, prefix[..n].iter().copied());
    }
}

/// A string field; proto3 leaves an empty one out.
fn put_string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_len_field(out, field, s.as_bytes());
    }
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        put_tag(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, state: &str, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Spans using every part of the format the SDK can produce.
    fn spans() -> Vec<SpanData> {
        let sluice = InstrumentationScope::builder("sluice").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 7_i64)])
            .build();
        let base = SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c,
                0xb7ad6b7169203331,
                "",
                false,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("POST /topics/{topic}"),
            start_time: at(1_700_000_000_000_000_001),
            end_time: at(1_700_000_000_000_900_000),
            attributes: vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", String::from("/topics/orders")),
                KeyValue::new("empty", ""),
                KeyValue::new("count", 10_i64),
                KeyValue::new("negative", -3_i64),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("yes", true),
                KeyValue::new("no", false),
                KeyValue::new(
                    "names",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
                KeyValue::new("numbers", Value::Array(Array::I64(vec![0, 1, -1]))),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![0.0, 1.5]))),
                // Lengths of one, two and three bytes, nested.
                KeyValue::new("long", "x".repeat(20_000)),
                KeyValue::new("edge", "y".repeat(125)),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: sluice.clone(),
        };
        let mut producer = base.clone();
        producer.span_context = context(
            0x0af7651916cd43dd8448eb211c80319c,
            42,
            "vendor=x,other=y",
            false,
        );
        producer.parent_span_id = SpanId::from(0xb7ad6b7169203331);
        producer.span_kind = SpanKind::Producer;
        producer.name = Cow::Owned("send orders".into());
        producer.status = Status::error("home cluster down");
        producer.dropped_attributes_count = 2;
        producer.events.events = vec![
            Event::new(
                "retry",
                at(1_700_000_000_000_000_500),
                vec![KeyValue::new("attempt", 2_i64)],
                1,
            ),
            Event::new("", UNIX_EPOCH, Vec::new(), 0),
        ];
        producer.events.dropped_count = 3;
        let mut consumer = base.clone();
        consumer.span_context = context(1, 2, "", false);
        consumer.parent_span_id = SpanId::from(42);
        consumer.parent_span_is_remote = true;
        consumer.span_kind = SpanKind::Consumer;
        consumer.status = Status::Ok;
        consumer.attributes = Vec::new();
        consumer.links.links = vec![
            Link::new(
                context(9, 8, "k=v", true),
                vec![KeyValue::new("why", "producer")],
                0,
            ),
            Link::new(context(9, 7, "", false), Vec::new(), 4),
        ];
        consumer.links.dropped_count = 1;
        consumer.instrumentation_scope = other;
        let mut client = base.clone();
        client.span_kind = SpanKind::Client;
        let mut internal = base;
        internal.span_kind = SpanKind::Internal;
        internal.name = Cow::Borrowed("");
        vec![consumer.clone(), client, producer, consumer, internal]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("edge")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .build()
    }

    /// Encodes `spans` as the export queue does: each span once, into
    /// its scope's bytes, then one request.
    pub(crate) fn encode_with(exporter: &OtlpHttpExporter, spans: &[SpanData]) -> Vec<u8> {
        let mut scopes: Vec<(&InstrumentationScope, Vec<u8>)> = Vec::new();
        for span in spans {
            let i = match scopes
                .iter()
                .position(|(s, _)| **s == span.instrumentation_scope)
            {
                Some(i) => i,
                None => {
                    scopes.push((&span.instrumentation_scope, Vec::new()));
                    scopes.len() - 1
                }
            };
            let mut body = Vec::new();
            put_span(&mut body, span);
            put_framed_span(&mut scopes[i].1, &body);
        }
        let parts: Vec<_> = scopes.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        let mut out = Vec::new();
        exporter.encode_request(&parts, &mut out);
        out
    }

    fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let mut exporter = OtlpHttpExporter::new("http://127.0.0.1:1/v1/traces").unwrap();
        exporter.set_resource(resource);
        encode_with(&exporter, spans)
    }

    #[test]
    fn encodes_what_opentelemetry_proto_would_send() {
        let (spans, resource) = (spans(), resource());
        let written = encode(&resource, &spans);
        let decoded =
            ExportTraceServiceRequest::decode(written.as_slice()).expect("valid protobuf");
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(decoded, expected);
        // Nothing is written twice or left out: the reference encoding of
        // the same request has the same length.
        assert_eq!(written.len(), expected.encoded_len());
    }

    /// What `SpanBody` writes decodes as the span the SDK path writes for
    /// the same record: with and without a parent (remote or not), trace
    /// state, string and integer attributes (long ones too), an error status.
    #[test]
    fn a_span_written_as_it_happens_is_the_span_the_sdk_path_writes() {
        use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
        let long = "z".repeat(300);
        for (parent, remote, state, error) in [
            (SpanId::INVALID, false, "", None),
            (
                SpanId::from(0xb7ad6b7169203331),
                true,
                "vendor=x",
                Some("home down"),
            ),
            (SpanId::from(7), false, "", Some("")),
        ] {
            let context = context(0x0af7651916cd43dd8448eb211c80319c, 42, state, false);
            let (start, end) = (at(1_700_000_000_000_000_001), at(1_700_000_000_900_000_000));
            let mut body = SpanBody::start(
                &context,
                parent,
                &SpanKind::Producer,
                ("send", "orders"),
                start,
            );
            body.str_attribute("messaging.destination.name", "orders");
            body.str_attribute("empty", "");
            body.i64_attribute("messaging.batch.message_count", 10);
            body.i64_attribute("negative", -3);
            body.str_attribute("long", &long);
            body.finish(&context, remote, end, error);
            let sdk = SpanData {
                span_context: context.clone(),
                parent_span_id: parent,
                parent_span_is_remote: remote,
                span_kind: SpanKind::Producer,
                name: Cow::Borrowed("send orders"),
                start_time: start,
                end_time: end,
                attributes: vec![
                    KeyValue::new("messaging.destination.name", "orders"),
                    KeyValue::new("empty", ""),
                    KeyValue::new("messaging.batch.message_count", 10_i64),
                    KeyValue::new("negative", -3_i64),
                    KeyValue::new("long", long.clone()),
                ],
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: error.map_or(Status::Unset, |e| Status::error(e.to_owned())),
                instrumentation_scope: InstrumentationScope::builder("sluice").build(),
            };
            let mut reference = Vec::new();
            put_span(&mut reference, &sdk);
            assert_eq!(
                ProtoSpan::decode(body.bytes()).expect("valid protobuf"),
                ProtoSpan::decode(reference.as_slice()).unwrap(),
            );
            assert_eq!(body.bytes().len(), reference.len());
        }
    }

    #[test]
    fn an_empty_batch_and_an_empty_resource_encode() {
        let written = encode(&Resource::builder_empty().build(), &[]);
        let decoded = ExportTraceServiceRequest::decode(written.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(OtlpHttpExporter::new("https://c:4318/v1/traces").is_err());
        assert!(OtlpHttpExporter::new("not a url").is_err());
        let exporter = OtlpHttpExporter::new("http://[::1]:4318/custom/traces?x=1").unwrap();
        assert_eq!(exporter.authority, "[::1]:4318");
        assert_eq!(exporter.target, "/custom/traces?x=1");
        let exporter = OtlpHttpExporter::new("http://collector/v1/traces").unwrap();
        assert_eq!(exporter.authority, "collector:80");
    }

    /// A collector on loopback: counts requests and connections and keeps
    /// the bodies.
    pub(crate) struct Collector {
        pub url: String,
        pub requests: Arc<AtomicUsize>,
        pub connections: Arc<AtomicUsize>,
        pub bodies: Arc<Mutex<Vec<Bytes>>>,
    }

    impl Collector {
        /// Answers `status`; closes each connection after one answer when
        /// `close` is set (as a collector with a short idle timeout does);
        /// never answers when `hang` is set.
        pub(crate) async fn start(status: u16, close: bool, hang: bool) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let collector = Self {
                url: format!("http://{}/v1/traces", listener.local_addr().unwrap()),
                requests: Arc::new(AtomicUsize::new(0)),
                connections: Arc::new(AtomicUsize::new(0)),
                bodies: Arc::new(Mutex::new(Vec::new())),
            };
            let (r, c, b) = (
                collector.requests.clone(),
                collector.connections.clone(),
                collector.bodies.clone(),
            );
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    let (r, b) = (r.clone(), b.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |request: Request<hyper::body::Incoming>| {
                                let (r, b) = (r.clone(), b.clone());
                                async move {
                                    assert_eq!(request.uri().path(), "/v1/traces");
                                    assert_eq!(
                                        request.headers()[CONTENT_TYPE],
                                        "application/x-protobuf"
                                    );
                                    if hang {
                                        std::future::pending::<()>().await;
                                    }
                                    let body = request.into_body().collect().await?.to_bytes();
                                    b.lock().unwrap().push(body);
                                    r.fetch_add(1, Ordering::SeqCst);
                                    let mut response = hyper::Response::new(Full::new(
                                        Bytes::from_static(b"nope"),
                                    ));
                                    *response.status_mut() =
                                        hyper::StatusCode::from_u16(status).unwrap();
                                    Ok::<_, hyper::Error>(response)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(!close)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            collector
        }

        /// The names of the spans received, in order.
        pub(crate) fn span_names(&self) -> Vec<String> {
            self.bodies
                .lock()
                .unwrap()
                .iter()
                .flat_map(|body| {
                    let request = ExportTraceServiceRequest::decode(body.clone()).unwrap();
                    request
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans)
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn posts_batches_over_one_kept_connection() {
        let collector = Collector::start(200, false, false).await;
        let mut exporter = OtlpHttpExporter::new(&collector.url).unwrap();
        exporter.set_resource(&resource());
        for _ in 0..3 {
            let body = encode_with(&exporter, &spans());
            exporter.post(Bytes::from(body)).await.expect("exported");
        }
        assert_eq!(collector.requests.load(Ordering::SeqCst), 3);
        assert_eq!(collector.connections.load(Ordering::SeqCst), 1);
        assert_eq!(collector.span_names().len(), 3 * spans().len());
    }

    #[tokio::test]
    async fn a_connection_the_collector_closed_is_replaced() {
        let collector = Collector::start(200, true, false).await;
        let exporter = OtlpHttpExporter::new(&collector.url).unwrap();
        for _ in 0..3 {
            let body = encode_with(&exporter, &spans());
            exporter.post(Bytes::from(body)).await.expect("exported");
            // Let the close reach the exporter's side, as an idle timeout would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(collector.requests.load(Ordering::SeqCst), 3);
        assert_eq!(collector.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refusing_collector_is_an_error_naming_its_answer() {
        let collector = Collector::start(503, false, false).await;
        let exporter = OtlpHttpExporter::new(&collector.url).unwrap();
        let body = Bytes::from(encode_with(&exporter, &spans()));
        let error = exporter.post(body.clone()).await.unwrap_err();
        assert!(error.contains("503") && error.contains("nope"), "{error}");
        let unreachable = OtlpHttpExporter::new("http://127.0.0.1:1/v1/traces").unwrap();
        let error = unreachable.post(body).await.unwrap_err();
        assert!(error.contains("cannot connect to 127.0.0.1:1"), "{error}");
    }
}
