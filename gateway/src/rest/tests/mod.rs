//! Router tests without sockets: requests go through `router(state)` with
//! `oneshot`, against the in-memory cluster in [`memory`].

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use sluice_broker::Cluster;
use sluice_config::Config;
use sluice_federation::Federation;
use tower::ServiceExt as _;

use crate::app::{router, AppState};

mod bad_input;
mod errors;
mod memory;
mod routes;

use memory::MemoryCluster;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const JSON_V2: &str = "application/vnd.kafka.json.v2+json";

/// A router over one in-memory cluster.
struct TestApp {
    router: Router,
    cluster: Arc<MemoryCluster>,
}

/// An answer, buffered.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a success status and returns the JSON body.
    fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts Confluent's error shape with this status and code; returns
    /// the message.
    fn error(&self, status: u16, code: u32) -> String {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["error_code"], json!(code), "{body}");
        assert_eq!(self.content_type(), "application/vnd.kafka.v2+json");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
        body["message"].as_str().expect("message").to_owned()
    }
}

fn app() -> TestApp {
    app_with(|_| {})
}

fn app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::default();
    configure(&mut config);
    let cluster = Arc::new(MemoryCluster::default());
    let clusters: Vec<Arc<dyn Cluster>> = vec![cluster.clone()];
    let federation = Federation::new(clusters, config.topics.clone()).expect("federation");
    let federation = Arc::new(federation);
    let state = AppState {
        shutdown: crate::server::ShutdownHandle::new(),
        telemetry: crate::telemetry::Telemetry::disabled(&config),
        consumers: crate::rest::consumers::Consumers::new(federation.clone(), &config),
        federation,
        config: Arc::new(config),
    };
    TestApp {
        router: router(state),
        cluster,
    }
}

impl TestApp {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }

    async fn get_as(&self, uri: &str, accept: &str) -> Reply {
        self.call(Method::GET, uri, &[("accept", accept)], Body::empty())
            .await
    }

    async fn post(&self, uri: &str, content_type: &str, body: Value) -> Reply {
        self.post_raw(uri, content_type, body.to_string()).await
    }

    async fn post_raw(&self, uri: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        self.call(Method::POST, uri, &[("content-type", content_type)], body)
            .await
    }
}
