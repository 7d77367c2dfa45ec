//! Which gateway owns a consumer group, and forwarding a request to it.
//!
//! Every gateway lists the same peers (`gateway.peers`, itself included).
//! A group's owner is the peer with the highest rendezvous score, the
//! first 8 bytes of SHA-256 over the peer's name, a `0xff` byte and the
//! group name: every gateway picks the same owner with no coordination, and
//! a peer added or removed moves only the groups it wins or held. Requests
//! for a group owned elsewhere are sent to the owner's admin listener under
//! `/internal/v2` and its answer is relayed as is, over connections kept
//! open between requests (a pool per peer).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_config::{Config, PeerConfig};

use crate::error::{ApiError, WithSources};

/// Prefix of the forwarded routes on the admin listener.
pub const INTERNAL_PREFIX: &str = "/internal/v2";

/// Header carrying the public base URL (scheme and host the client used),
/// so the owner answers `base_uri` as the client can reach it.
pub const BASE_URL_HEADER: &str = "sluice-base-url";

/// Time on top of the longest long-poll that a forwarded request may take.
pub const DEFAULT_FORWARD_SLACK_MS: u64 = 10_000;

/// Idle connections kept open to each peer.
pub const DEFAULT_FORWARD_IDLE_PER_PEER: usize = 32;

/// How long an idle connection to a peer is kept.
pub const DEFAULT_FORWARD_IDLE_MS: u64 = 30_000;

/// The public base URL of the request, as a request extension.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

/// This gateway's view of its peers.
#[derive(Debug, Clone)]
pub struct Peers {
    node_id: Option<String>,
    peers: Vec<PeerConfig>,
    request_timeout: Duration,
    /// Connections to the peers, reused from one forwarded request to the
    /// next; a connection found closed is replaced before the request is
    /// sent on it.
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Where a group's requests are served.
#[derive(Debug)]
pub enum Owner<'a> {
    /// Here.
    Local,
    /// By this peer.
    Remote(&'a PeerConfig),
}

fn score(peer: &str, group: &str) -> u64 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(peer.as_bytes());
    context.update(&[0xff]);
    context.update(group.as_bytes());
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Peers {
    /// The peers of `config`.
    pub fn new(config: &Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(
            config.consumers.peer_connect_timeout_ms,
        )));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(DEFAULT_FORWARD_IDLE_PER_PEER)
            .pool_idle_timeout(Duration::from_millis(DEFAULT_FORWARD_IDLE_MS))
            .build(connector);
        Self {
            node_id: config.gateway.node_id.clone(),
            peers: config.gateway.peers.clone(),
            request_timeout: Duration::from_millis(
                config.consumers.max_poll_timeout_ms + DEFAULT_FORWARD_SLACK_MS,
            ),
            client,
        }
    }

    /// The owner of `group`.
    pub fn owner(&self, group: &str) -> Owner<'_> {
        let best = self
            .peers
            .iter()
            .max_by_key(|p| (score(&p.name, group), p.name.as_str()));
        match best {
            Some(peer) if Some(&peer.name) != self.node_id.as_ref() => Owner::Remote(peer),
            _ => Owner::Local,
        }
    }

    /// Sends `request` to `peer` and relays its answer. An unreachable peer
    /// is a 503 with `Retry-After`: the group exists there, not here.
    pub async fn forward(
        &self,
        peer: &PeerConfig,
        request: Request,
        base: &str,
        max_body_bytes: usize,
    ) -> Response {
        match self.try_forward(peer, request, base, max_body_bytes).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn try_forward(
        &self,
        peer: &PeerConfig,
        request: Request,
        base: &str,
        max_body_bytes: usize,
    ) -> Result<Response, ApiError> {
        let unreachable = |what: &dyn std::fmt::Display| {
            ApiError::unavailable(
                &format_args!("{what} (peer {}, {})", peer.name, peer.url),
                "consumer group owner unreachable",
                "the gateway that owns this consumer group is unreachable; retry later",
            )
        };
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, max_body_bytes)
            .await
            .map_err(|_| {
                ApiError::payload_too_large(format!(
                    "request body is larger than the limit of {max_body_bytes} bytes"
                ))
            })?;
        let authority = peer.url.trim_start_matches("http://").trim_end_matches('/');
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let mut builder = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://{authority}{INTERNAL_PREFIX}{path}"));
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            for value in parts.headers.get_all(&name) {
                builder = builder.header(&name, value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(base) {
            builder = builder.header(HeaderName::from_static(BASE_URL_HEADER), value);
        }
        let outbound = builder
            .body(Full::new(body))
            .map_err(|e| ApiError::internal(&e))?;
        let response = tokio::time::timeout(self.request_timeout, self.client.request(outbound))
            .await
            .map_err(|_| unreachable(&"request timed out"))?
            .map_err(|e| unreachable(&WithSources(&e)))?;
        let (mut parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(self.request_timeout, body.collect())
            .await
            .map_err(|_| unreachable(&"answer timed out"))?
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        for hop in [header::CONNECTION, header::TRANSFER_ENCODING] {
            parts.headers.remove(hop);
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn peers(node: &str, names: &[&str]) -> Peers {
        let mut config = Config::default();
        config.gateway.node_id = Some(node.into());
        config.gateway.peers = names
            .iter()
            .map(|n| PeerConfig {
                name: (*n).into(),
                url: format!("http://{n}:1"),
            })
            .collect();
        Peers::new(&config)
    }

    fn owner_name(p: &Peers, group: &str) -> String {
        match p.owner(group) {
            Owner::Local => p.node_id.clone().unwrap_or_default(),
            Owner::Remote(peer) => peer.name.clone(),
        }
    }

    #[test]
    fn every_gateway_picks_the_same_owner() {
        let a = peers("a", &["a", "b", "c"]);
        let b = peers("b", &["c", "b", "a"]);
        let mut owners = std::collections::BTreeMap::new();
        for i in 0..300 {
            let group = format!("group-{i}");
            let owner = owner_name(&a, &group);
            assert_eq!(owner, owner_name(&b, &group), "{group}");
            *owners.entry(owner).or_insert(0) += 1;
        }
        assert_eq!(owners.len(), 3, "{owners:?}");
        assert!(owners.values().all(|n| *n > 60), "{owners:?}");
    }

    #[test]
    fn removing_a_peer_moves_only_its_groups() {
        let three = peers("a", &["a", "b", "c"]);
        let two = peers("a", &["a", "b"]);
        for i in 0..300 {
            let group = format!("g{i}");
            let before = owner_name(&three, &group);
            if before != "c" {
                assert_eq!(before, owner_name(&two, &group), "{group}");
            }
        }
    }

    #[tokio::test]
    async fn forwarded_requests_share_a_connection_and_reach_the_internal_route() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        // An owner that answers with the path it was asked for and counts
        // the connections it accepts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request: hyper::Request<_>| {
                        let seen = format!(
                            "{} {} {:?}",
                            request.method(),
                            request.uri(),
                            request.headers().get(BASE_URL_HEADER)
                        );
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(seen),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let mut config = Config::default();
        config.gateway.node_id = Some("here".into());
        let owner = PeerConfig {
            name: "owner".into(),
            url: format!("http://{addr}"),
        };
        config.gateway.peers = vec![owner.clone()];
        let peers = Peers::new(&config);
        for i in 0..3 {
            let request = Request::builder()
                .method("POST")
                .uri(format!("/consumers/g/instances/m{i}/offsets?x=1"))
                .body(Body::from("{}"))
                .unwrap();
            let answer = peers
                .forward(&owner, request, "https://public:8443", 1024)
                .await;
            assert_eq!(answer.status(), StatusCode::OK);
            let body = axum::body::to_bytes(answer.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(
                body,
                format!("POST /internal/v2/consumers/g/instances/m{i}/offsets?x=1 Some(\"https://public:8443\")")
                    .as_bytes()
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
    }

    #[tokio::test]
    async fn an_owner_that_cannot_be_reached_is_a_503_naming_no_internals() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let owner = PeerConfig {
            name: "owner".into(),
            url: format!("http://127.0.0.1:{port}"),
        };
        let mut config = Config::default();
        config.gateway.peers = vec![owner.clone()];
        let request = Request::builder()
            .uri("/consumers/g/instances/m/records")
            .body(Body::empty())
            .unwrap();
        let answer = Peers::new(&config)
            .forward(&owner, request, "https://public:8443", 1024)
            .await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error_code"], 50301);
        assert!(!body["message"].as_str().unwrap().contains("127.0.0.1"));
    }

    #[test]
    fn no_peers_means_local() {
        let p = Peers::new(&Config::default());
        assert!(matches!(p.owner("any"), Owner::Local));
    }
}
