//! Confluent v2 consumer instances and the consumer groups behind them.
//!
//! - [`group`]: [`group::Coordinator`], the groups this gateway owns:
//!   membership, assignment, rebalancing, long-polls, commits, seeks, expiry.
//! - [`assign`]: the range assignor.
//! - [`offsets`]: how committed positions map to placement epochs.
//! - [`forward`]: which gateway owns a group, and forwarding requests there.
//! - this file: the routes, their bodies and answers.
//!
//! `docs/consumers.md` describes the design; `docs/rest.md` the routes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_config::Config;
use sluice_federation::Federation;

use super::extract::{parse_json, read_body, PathParams, QueryParams};
use super::media::EmbeddedFormat;
use super::records::{put_record, DEFAULT_READ_MAX_BYTES, MAX_READ_MAX_BYTES};
use crate::app::AppState;
use crate::error::ApiError;

pub mod assign;
pub mod forward;
pub mod group;
pub mod offsets;

use forward::{BaseUrl, Owner, Peers, BASE_URL_HEADER, INTERNAL_PREFIX};
use group::{
    Coordinator, InstanceSettings, Reset, Seek, Subscription, FORMAT_MISMATCH,
    INVALID_CONSUMER_CONFIG,
};

/// Confluent's media type of v2 consumer bodies and answers.
pub const KAFKA_V2: &str = "application/vnd.kafka.v2+json";

/// The consumer groups of this gateway and the peers that own the others.
pub struct Consumers {
    /// Groups owned here.
    pub coordinator: Arc<Coordinator>,
    /// Who owns which group.
    pub peers: Peers,
}

impl Consumers {
    /// Consumers for a gateway running `config`.
    pub fn new(federation: Arc<Federation>, config: &Config) -> Arc<Self> {
        Arc::new(Self {
            coordinator: Coordinator::new(federation, config.consumers.clone()),
            peers: Peers::new(config),
        })
    }
}

const INSTANCE: &str = "/consumers/{group}/instances/{instance}";

/// The v2 consumer routes, served here whatever the owner (for the
/// internal router and for requests already at their owner).
fn local_routes() -> Router<AppState> {
    Router::new()
        .route("/consumers/{group}", post(create))
        .route(INSTANCE, axum::routing::delete(delete_instance))
        .route(
            &format!("{INSTANCE}/subscription"),
            post(subscribe).get(subscription).delete(unsubscribe),
        )
        .route(
            &format!("{INSTANCE}/assignments"),
            get(assignments).post(assign_partitions),
        )
        .route(&format!("{INSTANCE}/records"), get(records))
        .route(&format!("{INSTANCE}/offsets"), post(commit).get(committed))
        .route(&format!("{INSTANCE}/positions"), post(seek))
        .route(
            &format!("{INSTANCE}/positions/beginning"),
            post(seek_beginning),
        )
        .route(&format!("{INSTANCE}/positions/end"), post(seek_end))
}

/// The public v2 consumer routes: each request is served by its group's
/// owner, here or forwarded.
pub fn public_routes(state: AppState) -> Router<AppState> {
    local_routes().route_layer(middleware::from_fn_with_state(state, to_owner))
}

/// The forwarded routes, for the admin listener: `/internal/v2/consumers/...`.
pub fn internal_router(state: AppState) -> Router {
    let max_body_bytes = state.config.listener.max_body_bytes;
    Router::new()
        .nest(
            INTERNAL_PREFIX,
            local_routes().route_layer(middleware::from_fn(from_peer)),
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Serves a v2 consumer request as the public listener would (owner here
/// or forwarded): how WebSocket group members reach their group.
pub async fn dispatch(state: AppState, request: Request) -> Response {
    use tower::ServiceExt as _;
    let router = public_routes(state.clone()).with_state(state);
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn public_base(state: &AppState, request: &Request) -> String {
    let scheme = if state.config.listener.insecure {
        "http"
    } else {
        "https"
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| state.config.listener.address.to_string());
    format!("{scheme}://{host}")
}

fn group_of(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("consumers"), Some(group)) => Some(group),
        _ => None,
    }
}

async fn to_owner(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let base = match request.extensions().get::<BaseUrl>() {
        Some(base) => base.0.clone(),
        None => public_base(&state, &request),
    };
    request.extensions_mut().insert(BaseUrl(base.clone()));
    // Percent-decoded the way the route's parameter is, so both agree.
    let group = group_of(request.uri().path())
        .map(percent_decode)
        .unwrap_or_default();
    match state.consumers.peers.owner(&group) {
        Owner::Local => next.run(request).await,
        Owner::Remote(peer) => {
            let peer = peer.clone();
            let max_body_bytes = state.config.listener.max_body_bytes;
            state
                .consumers
                .peers
                .forward(&peer, request, &base, max_body_bytes)
                .await
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn from_peer(mut request: Request, next: Next) -> Response {
    let base = request
        .headers()
        .get(BASE_URL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    request.extensions_mut().insert(BaseUrl(base));
    next.run(request).await
}

// ------------------------------------------------------------- names, bodies

/// A group or instance name from the path: `[a-zA-Z0-9._-]{1,249}`.
fn name<'a>(path: &'a PathParams, which: &str) -> Result<&'a str, ApiError> {
    let value = path.get(which)?;
    if sluice_config::is_valid_topic_name(value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {which} name {value:?}: {which} names must match [a-zA-Z0-9._-]{{1,249}}"
        )))
    }
}

fn ids(path: &PathParams) -> Result<(&str, &str), ApiError> {
    Ok((name(path, "group")?, name(path, "instance")?))
}

/// Checks the body's declared type: Confluent's `vnd.kafka.v2+json` or
/// plain JSON (absent is allowed for an empty body).
fn check_content_type(headers: &HeaderMap, empty: bool) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        None if empty => Ok(()),
        Some(KAFKA_V2 | "application/json") => Ok(()),
        Some(t) if t.starts_with("application/vnd.kafka.") && t.ends_with(".v2+json") => Ok(()),
        Some(other) => Err(ApiError::unsupported_media_type(format!(
            "unsupported Content-Type {other:?}: consumer routes accept {KAFKA_V2} or application/json"
        ))),
        None => Err(ApiError::unsupported_media_type(format!(
            "missing Content-Type: consumer routes accept {KAFKA_V2} or application/json"
        ))),
    }
}

/// The JSON body, or `None` when the body is empty.
async fn body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    request: Request,
) -> Result<Option<T>, ApiError> {
    let bytes = read_body(request, state.config.listener.max_body_bytes).await?;
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    check_content_type(headers, empty)?;
    if empty {
        return Ok(None);
    }
    parse_json(&bytes).map(Some)
}

async fn required<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    request: Request,
    what: &str,
) -> Result<T, ApiError> {
    body(state, headers, request).await?.ok_or_else(|| {
        ApiError::unprocessable(format!("the body must be a JSON object with {what}"))
    })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json_answer<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, KAFKA_V2)], bytes).into_response())
}

#[derive(Deserialize, Serialize)]
struct PartitionRef {
    topic: String,
    partition: u32,
}

#[derive(Deserialize, Serialize)]
struct OffsetRef {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Deserialize)]
struct PartitionsBody {
    partitions: Vec<PartitionRef>,
}

#[derive(Deserialize)]
struct OffsetsBody {
    offsets: Vec<OffsetRef>,
}

// ------------------------------------------------------------------- create

fn config_error(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        INVALID_CONSUMER_CONFIG,
        message,
    )
}

/// A config value as text: Confluent clients send strings, others numbers
/// or booleans.
fn text_of(key: &str, value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(config_error(format!(
            "{key} must be a string, number or boolean, got {other}"
        ))),
    }
}

fn settings_of(
    body: &serde_json::Map<String, Value>,
) -> Result<(Option<String>, InstanceSettings), ApiError> {
    let get = |key: &str| -> Result<Option<String>, ApiError> {
        body.get(key).map_or(Ok(None), |v| text_of(key, v))
    };
    let name = match get("name")? {
        Some(n) if sluice_config::is_valid_topic_name(&n) => Some(n),
        Some(n) => {
            return Err(config_error(format!(
                "name {n:?}: instance names must match [a-zA-Z0-9._-]{{1,249}}"
            )))
        }
        None => None,
    };
    let format = match get("format")?
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("binary") => EmbeddedFormat::Binary,
        Some("json") => EmbeddedFormat::Json,
        Some(f @ ("avro" | "protobuf" | "jsonschema")) => {
            return Err(config_error(format!(
                "format {f:?}: schema formats are not supported; use binary or json"
            )))
        }
        Some(other) => {
            return Err(config_error(format!(
                "format {other:?}: must be binary or json"
            )))
        }
    };
    let reset = match get("auto.offset.reset")?.as_deref() {
        None | Some("latest" | "largest") => Reset::Latest,
        Some("earliest" | "smallest") => Reset::Earliest,
        Some(other) => {
            return Err(config_error(format!(
                "auto.offset.reset {other:?}: must be earliest or latest"
            )))
        }
    };
    let auto_commit = match get("auto.commit.enable")?.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(config_error(format!(
                "auto.commit.enable {other:?}: must be true or false"
            )))
        }
    };
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        get(key)?
            .map(|t| {
                t.parse::<u64>().map_err(|_| {
                    config_error(format!("{key} {t:?}: must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let fetch_min_bytes = number("fetch.min.bytes")?.map_or(1, |n| {
        usize::try_from(n).map_or(MAX_READ_MAX_BYTES, |n| n.min(MAX_READ_MAX_BYTES))
    });
    let request_timeout_ms = number("consumer.request.timeout.ms")?;
    Ok((
        name,
        InstanceSettings {
            format,
            reset,
            auto_commit,
            fetch_min_bytes,
            request_timeout_ms,
        },
    ))
}

/// `POST /consumers/{group}`: creates an instance.
async fn create(
    State(state): State<AppState>,
    Extension(base): Extension<BaseUrl>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let group = name(&path, "group")?;
    let body: serde_json::Map<String, Value> =
        body(&state, &headers, request).await?.unwrap_or_default();
    let (instance, settings) = settings_of(&body)?;
    let instance = state
        .consumers
        .coordinator
        .create(group, instance, settings)
        .await?;
    json_answer(&serde_json::json!({
        "instance_id": instance,
        "base_uri": format!("{}/consumers/{group}/instances/{instance}", base.0),
    }))
}

/// `DELETE /consumers/{group}/instances/{instance}`.
async fn delete_instance(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    state.consumers.coordinator.delete(group, instance).await?;
    Ok(no_content())
}

// -------------------------------------------------------------- subscription

#[derive(Deserialize)]
struct SubscribeBody {
    topics: Option<Vec<String>>,
    topic_pattern: Option<String>,
}

async fn subscribe(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: SubscribeBody =
        required(&state, &headers, request, "topics or topic_pattern").await?;
    let subscription = match (body.topics, body.topic_pattern) {
        (Some(topics), None) => {
            if topics.is_empty() {
                return Err(ApiError::unprocessable("topics must not be empty"));
            }
            for (i, topic) in topics.iter().enumerate() {
                if !sluice_config::is_valid_topic_name(topic) {
                    return Err(ApiError::unprocessable(format!(
                        "topics[{i}]: invalid topic name {topic:?}: {}",
                        sluice_config::TOPIC_NAME_RULE
                    )));
                }
            }
            Subscription::Topics(topics.into_iter().collect::<BTreeSet<_>>())
        }
        (None, Some(pattern)) => {
            let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    ApiError::unprocessable(format!("topic_pattern is not a valid regex: {e}"))
                })?;
            Subscription::Pattern(regex)
        }
        _ => {
            return Err(ApiError::unprocessable(
                "give exactly one of topics and topic_pattern",
            ))
        }
    };
    state
        .consumers
        .coordinator
        .subscribe(group, instance, subscription)
        .await?;
    Ok(no_content())
}

async fn subscription(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let topics = state
        .consumers
        .coordinator
        .subscription(group, instance)
        .await?;
    json_answer(&serde_json::json!({ "topics": topics }))
}

async fn unsubscribe(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    state
        .consumers
        .coordinator
        .unsubscribe(group, instance)
        .await?;
    Ok(no_content())
}

// --------------------------------------------------------------- assignments

async fn assignments(
    State(state): State<AppState>,
    path: PathParams,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let list = state
        .consumers
        .coordinator
        .assignments(group, instance)
        .await?;
    let partitions: Vec<PartitionRef> = list
        .into_iter()
        .map(|(topic, partition)| PartitionRef { topic, partition })
        .collect();
    json_answer(&serde_json::json!({ "partitions": partitions }))
}

async fn assign_partitions(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: PartitionsBody = required(&state, &headers, request, "partitions").await?;
    let list = body
        .partitions
        .into_iter()
        .map(|p| (p.topic, p.partition))
        .collect();
    state
        .consumers
        .coordinator
        .assign(group, instance, list)
        .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ records

/// The format asked for by `Accept`: `None` when it leaves the choice to
/// the instance.
fn accepted_format(headers: &HeaderMap) -> Result<Option<EmbeddedFormat>, ApiError> {
    let mut asked = None;
    for value in headers.get_all(header::ACCEPT) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Accept header is not visible ASCII"))?;
        for range in text.split(',') {
            let essence = range
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match essence.as_str() {
                "application/vnd.kafka.json.v2+json" => return Ok(Some(EmbeddedFormat::Json)),
                "application/vnd.kafka.binary.v2+json" => return Ok(Some(EmbeddedFormat::Binary)),
                s if s.starts_with("application/vnd.kafka.") && s != KAFKA_V2 => {
                    asked = Some(s.to_owned());
                }
                _ => {}
            }
        }
    }
    match asked {
        Some(other) => Err(ApiError::not_acceptable(
            FORMAT_MISMATCH,
            format!("{other}: records are answered as application/vnd.kafka.binary.v2+json or application/vnd.kafka.json.v2+json"),
        )),
        None => Ok(None),
    }
}

async fn records(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let accepted = accepted_format(&headers)?;
    let timeout = query.u64("timeout")?.map(Duration::from_millis);
    let max_bytes = query.u64("max_bytes")?.map_or(DEFAULT_READ_MAX_BYTES, |n| {
        usize::try_from(n).map_or(MAX_READ_MAX_BYTES, |n| n.clamp(1, MAX_READ_MAX_BYTES))
    });
    let polled = state
        .consumers
        .coordinator
        .poll(group, instance, timeout, max_bytes, accepted)
        .await?;
    let mut out = Vec::new();
    out.push(b'[');
    for (i, (topic, record)) in polled.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_record(&mut out, topic, record, polled.format)?;
        out.push(b'}');
    }
    out.push(b']');
    Ok(([(header::CONTENT_TYPE, polled.format.media_type())], out).into_response())
}

/// The name of a format, as `format` in the create request has it.
pub fn format_name(format: EmbeddedFormat) -> &'static str {
    match format {
        EmbeddedFormat::Binary => "binary",
        EmbeddedFormat::Json => "json",
    }
}

// ------------------------------------------------------------------ offsets

async fn commit(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: Option<OffsetsBody> = body(&state, &headers, request).await?;
    let explicit = body.map(|b| {
        b.offsets
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset))
            .collect()
    });
    state
        .consumers
        .coordinator
        .commit(group, instance, explicit)
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn committed(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: Option<PartitionsBody> = body(&state, &headers, request).await?;
    let wanted = body.map(|b| {
        b.partitions
            .into_iter()
            .map(|p| (p.topic, p.partition))
            .collect()
    });
    let list = state
        .consumers
        .coordinator
        .committed(group, instance, wanted)
        .await?;
    let offsets: Vec<Value> = list
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "topic": c.topic, "partition": c.partition, "offset": c.offset, "metadata": ""
            })
        })
        .collect();
    json_answer(&serde_json::json!({ "offsets": offsets }))
}

// ---------------------------------------------------------------- positions

async fn seek(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: OffsetsBody = required(&state, &headers, request, "offsets").await?;
    let list = body
        .offsets
        .into_iter()
        .map(|o| (o.topic, o.partition, o.offset))
        .collect();
    state
        .consumers
        .coordinator
        .seek(group, instance, Seek::Offsets(list))
        .await?;
    Ok(no_content())
}

async fn seek_beginning(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    seek_to(state, path, headers, request, true).await
}

async fn seek_end(
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    seek_to(state, path, headers, request, false).await
}

async fn seek_to(
    state: AppState,
    path: PathParams,
    headers: HeaderMap,
    request: Request,
    beginning: bool,
) -> Result<Response, ApiError> {
    let (group, instance) = ids(&path)?;
    let body: PartitionsBody = required(&state, &headers, request, "partitions").await?;
    let list = body
        .partitions
        .into_iter()
        .map(|p| (p.topic, p.partition))
        .collect();
    let to = if beginning {
        Seek::Beginning(list)
    } else {
        Seek::End(list)
    };
    state
        .consumers
        .coordinator
        .seek(group, instance, to)
        .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_the_second_segment() {
        assert_eq!(group_of("/consumers/g1/instances/i"), Some("g1"));
        assert_eq!(group_of("/consumers/g1"), Some("g1"));
        assert_eq!(group_of("/topics/x"), None);
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%é%zz%4"), "%é%zz%4");
    }

    #[test]
    fn settings_accept_strings_and_reject_nonsense() {
        let body = serde_json::json!({"name": "c1", "format": "json", "auto.offset.reset": "earliest",
            "auto.commit.enable": "false", "fetch.min.bytes": 10, "consumer.request.timeout.ms": "500"});
        let (name, s) = settings_of(body.as_object().unwrap()).unwrap();
        assert_eq!(name.as_deref(), Some("c1"));
        assert_eq!(s.format, EmbeddedFormat::Json);
        assert_eq!(s.reset, Reset::Earliest);
        assert!(!s.auto_commit);
        assert_eq!((s.fetch_min_bytes, s.request_timeout_ms), (10, Some(500)));
        for bad in [
            serde_json::json!({"format": "avro"}),
            serde_json::json!({"auto.offset.reset": "middle"}),
            serde_json::json!({"auto.commit.enable": "maybe"}),
            serde_json::json!({"fetch.min.bytes": "-1"}),
            serde_json::json!({"name": "a b"}),
            serde_json::json!({"name": ["x"]}),
        ] {
            let err = settings_of(bad.as_object().unwrap()).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.error_code),
                (422, INVALID_CONSUMER_CONFIG),
                "{bad}"
            );
        }
    }
}
