//! [`HttpTraceLayer`]: for every request on the public listener, a server
//! span (the parent from `traceparent`/`tracestate` headers, else a new
//! trace), a `request` log span carrying `trace_id` and `span_id`, and the
//! request metrics labelled by route template.
//!
//! The route label is axum's [`MatchedPath`] (e.g. `/topics/{topic}`),
//! never the raw path, or `unmatched` when no route matched; methods
//! outside the standard set count as `other`. So label values stay a small
//! fixed set whatever clients send.
//!
//! Apply it with `Router::layer`, which runs it after routing, so the
//! matched path is known.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::Context;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::logs::HexId;
use super::metrics::{
    HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS, LABEL_METHOD, LABEL_ROUTE, LABEL_STATUS,
    LABEL_STATUS_CLASS,
};
use super::propagation;
use super::Telemetry;

/// Route label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The trace context a request's handler produces under, put into the
/// request's extensions by [`HttpTrace`]: the server span's context, or a
/// client's unsampled trace.
#[derive(Clone, Debug)]
pub struct RequestContext(pub Context);

/// The parent of the spans a handler starts: the request's context, or
/// none (a new trace, sampled at the configured ratio).
pub fn request_parent(extensions: &axum::http::Extensions) -> Context {
    extensions
        .get::<RequestContext>()
        .map_or_else(Context::new, |c| c.0.clone())
}

/// Traces and measures every request of the service it wraps.
#[derive(Clone)]
pub struct HttpTraceLayer {
    telemetry: Arc<Telemetry>,
}

impl HttpTraceLayer {
    /// A layer reporting to `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for HttpTraceLayer {
    type Service = HttpTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpTrace {
            inner,
            telemetry: self.telemetry.clone(),
            handles: Arc::default(),
        }
    }
}

/// The service [`HttpTraceLayer`] makes.
#[derive(Clone)]
pub struct HttpTrace<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
    /// The metric handles of the label sets seen, shared by its clones.
    handles: Arc<RequestMetrics>,
}

/// Most label sets one wrapped service keeps handles for; past it, a
/// request's metrics are looked up in the registry each time.
const MAX_CACHED_LABEL_SETS: usize = 64;

/// The request counter and duration histogram of one label set.
struct Handles {
    route: Box<str>,
    method: &'static str,
    status: u16,
    requests: ::metrics::Counter,
    duration: ::metrics::Histogram,
}

impl Handles {
    fn labels_are(&self, route: &str, method: &str, status: u16) -> bool {
        self.status == status && self.method == method && *self.route == *route
    }

    fn count(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}

/// Handles by label set. [`Router::layer`](axum::Router::layer) wraps each
/// route on its own, so a wrapped service sees one route, a few methods
/// and a few statuses: a short list, scanned under a read lock, saves the
/// registry's lookup (label strings built, hashed and compared) on every
/// request.
#[derive(Default)]
struct RequestMetrics(RwLock<Vec<Handles>>);

impl RequestMetrics {
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let read = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(handles) = read.iter().find(|h| h.labels_are(route, method, status)) {
            handles.count(seconds);
            return;
        }
        let room = read.len() < MAX_CACHED_LABEL_SETS;
        drop(read);
        let handles = Handles {
            route: route.into(),
            method,
            status,
            requests: ::metrics::counter!(
                HTTP_REQUESTS_TOTAL,
                LABEL_ROUTE => route.to_owned(),
                LABEL_METHOD => method,
                LABEL_STATUS => status.to_string(),
                LABEL_STATUS_CLASS => status_class(status),
            ),
            duration: ::metrics::histogram!(
                HTTP_REQUEST_DURATION_SECONDS,
                LABEL_ROUTE => route.to_owned(),
                LABEL_METHOD => method,
            ),
        };
        handles.count(seconds);
        if room {
            let mut list = self.0.write().unwrap_or_else(|e| e.into_inner());
            // Another request may have added it meanwhile.
            let known = list.iter().any(|h| h.labels_are(route, method, status));
            if !known && list.len() < MAX_CACHED_LABEL_SETS {
                list.push(handles);
            }
        }
    }
}

/// A method as a label value from a fixed set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl<S, B, R> Service<Request<B>> for HttpTrace<S>
where
    S: Service<Request<B>, Response = Response<R>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let telemetry = self.telemetry.clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let route_label = route.as_ref().map_or(UNMATCHED_ROUTE, |r| r.as_str());
        let method = method_label(request.method());

        let parent = propagation::context_from_headers(request.headers());
        let span = telemetry
            .record_span(SpanKind::Server, &parent, (method, route_label))
            .map(|mut span| {
                span.str_attribute("http.request.method", method);
                span.str_attribute("http.route", route_label);
                span.str_attribute("url.path", request.uri().path());
                span
            });
        let log_span = match &span {
            Some(span) => {
                let ids = span.span_context().clone();
                let log_span = tracing::info_span!(
                    "request",
                    http.request.method = method,
                    http.route = route_label,
                    trace_id = %HexId::trace(ids.trace_id()),
                    span_id = %HexId::span(ids.span_id()),
                );
                request
                    .extensions_mut()
                    .insert(RequestContext(parent.with_remote_span_context(ids)));
                log_span
            }
            None => {
                // Not recorded here, but the client's trace id still
                // correlates the log lines.
                let remote = parent.span();
                let ids = remote.span_context();
                if ids.is_valid() {
                    // The client's unsampled trace: the handler's spans
                    // follow its decision.
                    request
                        .extensions_mut()
                        .insert(RequestContext(parent.clone()));
                    tracing::info_span!(
                        "request",
                        http.request.method = method,
                        http.route = route_label,
                        trace_id = %HexId::trace(ids.trace_id()),
                    )
                } else {
                    tracing::info_span!(
                        "request",
                        http.request.method = method,
                        http.route = route_label,
                    )
                }
            }
        };
        let handles = self.handles.clone();
        Box::pin(async move {
            // The handler finds the context in the request's extensions
            // (`request_parent`): attaching it as the current context would
            // cost a thread-local push and pop on every poll of the request.
            let response = inner.call(request).instrument(log_span).await;
            let Ok(response) = response;
            let status = response.status().as_u16();
            if let Some(mut span) = span {
                span.i64_attribute("http.response.status_code", i64::from(status));
                if status >= 500 {
                    span.set_error("");
                }
                // Ends it.
                drop(span);
            }
            let route_label = route.as_ref().map_or(UNMATCHED_ROUTE, |r| r.as_str());
            handles.record(route_label, method, status, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_sets() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    /// The value of the `sluice_http_requests_total` sample of `route`,
    /// `method` and `status` in the process's exposition.
    fn requests(route: &str, method: &str, status: u16) -> Option<f64> {
        let text = super::super::prometheus()?.render();
        let labels = format!(
            r#"method="{method}",route="{route}",status="{status}",status_class="{}""#,
            status_class(status)
        );
        text.lines()
            .filter(|l| l.starts_with(&format!("{HTTP_REQUESTS_TOTAL}{{")))
            .find(|l| {
                let inner = &l[l.find('{').unwrap() + 1..l.rfind('}').unwrap()];
                let mut got: Vec<&str> = inner.split(',').collect();
                got.sort_unstable();
                got.join(",") == labels
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn cached_handles_count_every_request_of_every_label_set() {
        // The process's recorder, installed before any handle is made.
        assert!(super::super::prometheus().is_some());
        let route = "/test/cached-handles";
        let metrics = RequestMetrics::default();
        for _ in 0..3 {
            metrics.record(route, "GET", 200, 0.001);
        }
        metrics.record(route, "POST", 200, 0.001);
        // More label sets than are cached: the rest still count.
        for status in 400..400 + MAX_CACHED_LABEL_SETS as u16 + 4 {
            metrics.record(route, "GET", status, 0.001);
            metrics.record(route, "GET", status, 0.001);
        }
        assert_eq!(requests(route, "GET", 200), Some(3.0));
        assert_eq!(requests(route, "POST", 200), Some(1.0));
        for status in 400..400 + MAX_CACHED_LABEL_SETS as u16 + 4 {
            assert_eq!(requests(route, "GET", status), Some(2.0), "{status}");
        }
        assert_eq!(metrics.0.read().unwrap().len(), MAX_CACHED_LABEL_SETS);
    }
}
