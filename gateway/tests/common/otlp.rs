//! A small OTLP/HTTP collector for tests: it accepts `POST /v1/traces`
//! with a protobuf `ExportTraceServiceRequest` (decoded with the
//! `opentelemetry-proto` types, independently of the exporter), keeps
//! every span, and answers as a collector does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::net::TcpListener;

/// One span as the collector received it; ids in lower-case hex.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id; empty for a root.
    pub parent_span_id: String,
    /// Attributes as text.
    pub attributes: BTreeMap<String, String>,
    /// Links as (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl CollectedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// OTLP span kind of a server span.
pub const KIND_SERVER: i32 = 2;
/// OTLP span kind of a producer span.
pub const KIND_PRODUCER: i32 = 4;
/// OTLP span kind of a consumer span.
pub const KIND_CONSUMER: i32 = 5;

/// A running collector on 127.0.0.1.
pub struct Collector {
    /// Base URL, `http://127.0.0.1:PORT` (the exporter adds `/v1/traces`).
    pub url: String,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    requests: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn collect(request: ExportTraceServiceRequest) -> Vec<CollectedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(CollectedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    out
}

impl Collector {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<CollectedSpan>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let (sink, count) = (spans.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (sink, count) = (sink.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (sink, count) = (sink.clone(), count.clone());
                        async move {
                            let path_ok = request.uri().path() == "/v1/traces";
                            let content_ok = request
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/x-protobuf");
                            let body = request.into_body().collect().await;
                            let decoded = body
                                .ok()
                                .and_then(|b| ExportTraceServiceRequest::decode(b.to_bytes()).ok());
                            let status = match decoded {
                                Some(decoded) if path_ok && content_ok => {
                                    *count.lock().unwrap() += 1;
                                    sink.lock().unwrap().extend(collect(decoded));
                                    200
                                }
                                _ => 400,
                            };
                            let response = Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            spans,
            requests,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// Waits until `done` holds for the spans received; panics with them
    /// after `patience`.
    pub async fn wait_for(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Vec<CollectedSpan> {
        let deadline = Instant::now() + patience;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "collector never got {what}; spans: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
