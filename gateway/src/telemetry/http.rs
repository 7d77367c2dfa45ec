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
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::Context;
use tower::{Layer, Service};
use tracing::Instrument as _;

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
        }
    }
}

/// The service [`HttpTraceLayer`] makes.
#[derive(Clone)]
pub struct HttpTrace<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
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
                    trace_id = %ids.trace_id(),
                    span_id = %ids.span_id(),
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
                        trace_id = %ids.trace_id(),
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
        let route_label = route_label.to_owned();
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
            let labels = [
                (LABEL_ROUTE, route_label.clone()),
                (LABEL_METHOD, method.to_owned()),
            ];
            metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(
                HTTP_REQUESTS_TOTAL,
                LABEL_ROUTE => route_label,
                LABEL_METHOD => method,
                LABEL_STATUS => status.to_string(),
                LABEL_STATUS_CLASS => status_class(status),
            )
            .increment(1);
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
}
