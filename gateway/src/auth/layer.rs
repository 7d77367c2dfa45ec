//! The auth middleware of both listeners: who are you (401 with
//! `WWW-Authenticate`), may you (403), how much (a held answer with
//! `Sluice-Throttle-Time-Ms`, or 429 with `Retry-After`). Which operation
//! and topic a request needs comes from [`super::access`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_config::Operation;

use super::access::{self, Access};
use super::acl::Resource;
use super::quota::{Admit, Count, Rate};
use super::{
    cooling_down, forbidden, over_quota, respond, unauthenticated, Auth, AuthContext, Connection,
    Credential, THROTTLE_HEADER,
};
use crate::error::ApiError;

/// Subprotocol prefix that carries a bearer credential on a WebSocket
/// upgrade, where browsers cannot set headers.
pub const WS_BEARER_PREFIX: &str = "sluice.bearer.";

/// Query parameter value (`?auth=frame`) by which a WebSocket client says
/// it will authenticate with its first frame.
pub const WS_AUTH_FRAME: &str = "frame";

/// Largest response body buffered to count consumed bytes; larger ones
/// pass uncounted rather than being held in memory twice.
const MAX_COUNTED_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Guard {
    auth: Arc<Auth>,
    table: fn(&Method, Option<&str>) -> Access,
    max_body_bytes: usize,
}

/// The public router with auth in front of every route.
pub fn public(router: Router, auth: Arc<Auth>, max_body_bytes: usize) -> Router {
    let guard = Guard {
        auth,
        table: access::public,
        max_body_bytes,
    };
    router.layer(axum::middleware::from_fn_with_state(guard, check))
}

/// The admin router with `POST /admin/reload` added and auth in front
/// (the admin operation; health probes stay open).
pub fn admin(router: Router, auth: Arc<Auth>) -> Router {
    let reloader = Arc::clone(&auth);
    let router = router.route(
        "/admin/reload",
        post(move || async move {
            match reloader.reload() {
                Ok(()) => Json(json!({"reloaded": true})).into_response(),
                Err(e) => {
                    ApiError::new(StatusCode::BAD_REQUEST, 400, format!("reload failed: {e}"))
                        .into_response()
                }
            }
        }),
    );
    let guard = Guard {
        auth,
        table: access::admin,
        max_body_bytes: crate::ws::DEFAULT_WS_READ_BUFFER_BYTES * 16,
    };
    router.layer(axum::middleware::from_fn_with_state(guard, check))
}

/// The credential a request brings: `Authorization: Bearer`, `X-API-Key`,
/// or on a WebSocket upgrade a `sluice.bearer.<token>` subprotocol.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, &'static str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| "malformed Authorization header")?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err("unsupported Authorization scheme; use Bearer");
        }
        return Ok(Credential::Secret(rest.trim()));
    }
    if let Some(value) = headers.get("x-api-key") {
        let value = value.to_str().map_err(|_| "malformed X-API-Key header")?;
        return Ok(Credential::Secret(value.trim()));
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        if let Some(token) = value
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
        {
            return Ok(Credential::Secret(token));
        }
    }
    Ok(Credential::None)
}

fn wants_auth_frame(parts: &Parts) -> bool {
    parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == format!("auth={WS_AUTH_FRAME}"))
    })
}

fn topic_param(params: &RawPathParams) -> Option<String> {
    params
        .iter()
        .find(|(name, _)| *name == "topic")
        .map(|(_, value)| value.to_owned())
}

async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let snapshot = guard.auth.snapshot();
    let (mut parts, body) = request.into_parts();
    let connection = parts.extensions.get::<Arc<Connection>>().cloned();
    let mut context = AuthContext {
        auth: Arc::clone(&guard.auth),
        principal: None,
        connection: connection.clone(),
    };
    if !snapshot.enabled() {
        parts.extensions.insert(context);
        return next.run(Request::from_parts(parts, body)).await;
    }
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let access = (guard.table)(&parts.method, route.as_deref());
    if access == Access::Public {
        parts.extensions.insert(context);
        return next.run(Request::from_parts(parts, body)).await;
    }

    let peer: Option<SocketAddr> = connection.as_ref().map(|c| c.peer).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    });
    if let Some(wait) = peer.and_then(|p| guard.auth.cooling_down(p)) {
        return cooling_down(wait);
    }
    let credential = match credential(&parts.headers) {
        Ok(credential) => credential,
        Err(reason) => return respond(unauthenticated(reason), None),
    };
    let cert = connection.as_ref().and_then(|c| c.cert_principal.as_ref());
    if access == Access::Session
        && matches!(credential, Credential::None)
        && cert.is_none()
        && wants_auth_frame(&parts)
    {
        // The session authenticates with its first frame.
        parts.extensions.insert(context);
        return next.run(Request::from_parts(parts, body)).await;
    }
    let principal = match guard.auth.authenticate(&snapshot, credential, cert, peer) {
        Ok(principal) => principal,
        Err(error) => return respond(error, None),
    };

    let (operation, resource_topic) = match access {
        Access::Topic(op) => {
            use axum::extract::FromRequestParts;
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok();
            (Some(op), params.as_ref().and_then(topic_param))
        }
        Access::Cluster(op) => (Some(op), None),
        Access::Unlisted => {
            return respond(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    super::FORBIDDEN,
                    "this route is not covered by any ACL operation",
                ),
                None,
            )
        }
        Access::Session | Access::Authenticated | Access::Public => (None, None),
    };
    if let Some(op) = operation {
        let resource = match &resource_topic {
            Some(topic) => Resource::Topic(topic),
            None => Resource::Cluster,
        };
        if !snapshot.allows(&principal, op, resource) {
            return respond(forbidden(&principal, op, resource), None);
        }
    }
    if let Some(connection) = &connection {
        if let Err(error) = connection.count(&guard.auth, &snapshot, &principal.name) {
            return respond(error, None);
        }
    }

    // Quotas.
    let buckets = guard.auth.buckets(&snapshot, &principal.name);
    let mut admit = Admit::Go;
    let mut body = body;
    let mut subscription = None;
    if let Some(buckets) = &buckets {
        admit = buckets.admit(Rate::Requests, 1);
        if operation == Some(Operation::Produce) {
            // In reject mode a principal in debt is refused before its body
            // is read, so refusing a flood costs little.
            admit = admit.and(buckets.precheck(Rate::Produce));
        }
        if operation == Some(Operation::Produce) && !matches!(admit, Admit::Reject(_)) {
            let bytes = match axum::body::to_bytes(body, guard.max_body_bytes).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return ApiError::payload_too_large(format!(
                        "request body larger than {} bytes",
                        guard.max_body_bytes
                    ))
                    .into_response()
                }
            };
            admit = admit.and(buckets.admit(Rate::Produce, bytes.len() as u64));
            body = Body::from(bytes);
        }
        if operation == Some(Operation::Consume) {
            admit = admit.and(buckets.precheck(Rate::Consume));
        }
    }
    if let Admit::Reject(wait) = admit {
        return respond(over_quota(), Some(wait));
    }
    if route.as_deref() == Some("/topics/{topic}/events") || access == Access::Session {
        // SSE streams count as subscriptions (WebSocket sessions count each
        // subscribe frame themselves).
        if access != Access::Session {
            match guard
                .auth
                .acquire(&snapshot, &principal.name, Count::Subscriptions)
            {
                Ok(permit) => subscription = permit,
                Err(error) => return respond(error, None),
            }
        }
    }

    let v2_produce = access::is_v2_produce(&parts.method, route.as_deref());
    context.principal = Some(Arc::clone(&principal));
    parts.extensions.insert(context);
    let response = next.run(Request::from_parts(parts, body)).await;

    let mut delay = match admit {
        Admit::Delay(d) => d,
        _ => Duration::ZERO,
    };
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (mut response_parts, response_body) = response.into_parts();
    let mut response_body = response_body;
    if operation == Some(Operation::Consume) {
        if let Some(buckets) = buckets.clone() {
            if is_stream {
                let stream = response_body.into_data_stream().then(move |chunk| {
                    let buckets = Arc::clone(&buckets);
                    async move {
                        if let Ok(bytes) = &chunk {
                            let wait = buckets.charge_stream(Rate::Consume, bytes.len() as u64);
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                            }
                        }
                        chunk
                    }
                });
                response_body = Body::from_stream(stream);
            } else if let Ok(bytes) =
                axum::body::to_bytes(response_body, MAX_COUNTED_RESPONSE_BYTES).await
            {
                delay = delay.max(buckets.charge_after(Rate::Consume, bytes.len() as u64));
                response_body = Body::from(bytes);
            } else {
                return ApiError::internal(&"response body could not be counted").into_response();
            }
        }
    }
    if let Some(permit) = subscription {
        // The SSE stream holds its subscription unit until it ends.
        let stream = response_body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        });
        response_body = Body::from_stream(stream);
    }
    if v2_produce && response_parts.status == StatusCode::OK {
        if let Ok(bytes) = axum::body::to_bytes(response_body, MAX_COUNTED_RESPONSE_BYTES).await {
            response_body = Body::from(with_throttle_time(bytes, delay));
            response_parts.headers.remove(header::CONTENT_LENGTH);
        } else {
            return ApiError::internal(&"produce response could not be read").into_response();
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
        if let Ok(value) = HeaderValue::from_str(&delay.as_millis().to_string()) {
            response_parts.headers.insert(THROTTLE_HEADER, value);
        }
    }
    Response::from_parts(response_parts, response_body)
}

/// Adds Kafka's `throttle_time_ms` to a v2 produce response.
fn with_throttle_time(bytes: Bytes, delay: Duration) -> Bytes {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut object)) => {
            object.insert("throttle_time_ms".into(), json!(delay.as_millis() as u64));
            serde_json::to_vec(&object)
                .map(Bytes::from)
                .unwrap_or(bytes)
        }
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request as HttpRequest;
    use axum::routing::get;
    use sluice_config::{AclRule, ApiKeyConfig, AuthConfig, Config};
    use tower::ServiceExt;

    use super::*;

    const KEY: &str = "sk_unit-test-key";

    fn router() -> Router {
        let config = Config {
            auth: Some(AuthConfig {
                api_keys: vec![ApiKeyConfig {
                    principal: "dev".into(),
                    key_sha256: super::super::apikey::hash_key(KEY),
                    groups: vec![],
                }],
                acls: vec![AclRule {
                    principal: Some("dev".into()),
                    group: None,
                    topic: Some("mine".into()),
                    prefix: None,
                    operations: vec![Operation::Produce],
                }],
                ..AuthConfig::default()
            }),
            ..Config::default()
        };
        let auth = Auth::new(&config).unwrap();
        let inner = Router::new()
            .route("/topics/{topic}", post(|| async { "written" }))
            .route("/openapi.json", get(|| async { "{}" }))
            .route("/unlisted/{thing}", get(|| async { "new route" }));
        public(inner, auth, 1024)
    }

    async fn call(uri: &str, method: Method, key: Option<&str>) -> (StatusCode, HeaderMap, Value) {
        let mut request = HttpRequest::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn who_are_you_may_you_and_unlisted_routes() {
        let (status, headers, body) = call("/topics/mine", Method::POST, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(body["error_code"], 40101);
        assert_eq!(
            call("/topics/mine", Method::POST, Some(KEY)).await.0,
            StatusCode::OK
        );
        let (status, _, body) = call("/topics/theirs", Method::POST, Some(KEY)).await;
        assert_eq!(
            (status, body["error_code"].as_u64()),
            (StatusCode::FORBIDDEN, Some(40301))
        );
        // A route nobody put in the access table is closed.
        assert_eq!(
            call("/unlisted/g", Method::GET, Some(KEY)).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call("/openapi.json", Method::GET, None).await.0,
            StatusCode::OK
        );
    }

    #[test]
    fn credentials_from_headers_and_subprotocols() {
        let mut headers = HeaderMap::new();
        assert!(matches!(credential(&headers), Ok(Credential::None)));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("sluice.v1, sluice.bearer.abc"),
        );
        assert!(matches!(
            credential(&headers),
            Ok(Credential::Secret("abc"))
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert!(credential(&headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert!(matches!(
            credential(&headers),
            Ok(Credential::Secret("tok"))
        ));
    }
}
