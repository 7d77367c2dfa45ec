//! The admin listener's router: liveness, readiness, and the federation's
//! admin API (clusters, placement, rebalance, drain).
//!
//! `/healthz` answers 200 while the process serves. `/readyz` answers 200
//! when the gateway takes traffic: not draining, and at least one cluster up
//! (federation routes around the others); otherwise 503, so a balancer
//! stops sending new requests during a drain.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_broker::Health;
use sluice_config::ClusterState;
use sluice_federation::placement::TopicPlacement;
use sluice_federation::Federation;

use crate::error::ApiError;
use crate::server::ShutdownHandle;

#[derive(Clone)]
struct AdminState {
    federation: Arc<Federation>,
    shutdown: ShutdownHandle,
}

/// The admin router.
pub fn router(federation: Arc<Federation>, shutdown: ShutdownHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/clusters", get(clusters))
        .route("/admin/clusters/{name}/drain", post(drain))
        .route("/admin/topics/{topic}/placement", get(placement))
        .route("/admin/topics/{topic}/migrate", post(migrate))
        .route("/admin/rebalance", get(rebalance_status))
        .route("/admin/rebalance/plan", post(rebalance_plan))
        .route("/admin/rebalance/apply", post(rebalance_apply))
        .fallback(not_found)
        .with_state(AdminState {
            federation,
            shutdown,
        })
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

fn health_json(name: &str, health: &Health) -> Value {
    match health {
        Health::Up => json!({"name": name, "status": "up"}),
        Health::Down(reason) => json!({"name": name, "status": "down", "reason": reason}),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let health = state.federation.health().await;
    let clusters: Vec<_> = health.iter().map(|(n, h)| health_json(n, h)).collect();
    let any_up = health.iter().any(|(_, h)| *h == Health::Up);
    let draining = state.shutdown.is_draining();
    let status = if any_up && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "draining": draining,
        "clusters": clusters,
    });
    (status, Json(body))
}

fn state_name(state: ClusterState) -> &'static str {
    match state {
        ClusterState::Active => "active",
        ClusterState::Draining => "draining",
        ClusterState::ReadOnly => "read-only",
    }
}

/// Every cluster: health, weight, state, how many topics call it home, and
/// the bytes those topics hold there.
async fn clusters(State(state): State<AdminState>) -> Response {
    let homes = state.federation.homes();
    let mut out = Vec::new();
    for member in state.federation.members() {
        let topics: Vec<&str> = homes
            .iter()
            .filter(|(_, home)| *home == member.name)
            .map(|(t, _)| t.as_str())
            .collect();
        let mut bytes = 0u64;
        if member.is_up() {
            for topic in &topics {
                bytes += member.cluster.topic_size_bytes(topic).await.unwrap_or(0);
            }
        }
        let mut entry = health_json(&member.name, &member.health());
        entry["weight"] = json!(member.weight);
        entry["state"] = json!(state_name(member.state()));
        entry["topics"] = json!(topics.len());
        entry["bytes"] = json!(bytes);
        out.push(entry);
    }
    Json(json!({ "clusters": out })).into_response()
}

fn placement_json(topic: &str, placement: &TopicPlacement) -> Value {
    json!({
        "topic": topic,
        "partitions": placement.partitions,
        "home": placement.current().map(|e| e.cluster.clone()),
        "epochs": placement.epochs,
    })
}

async fn placement(
    State(state): State<AdminState>,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let placement = state
        .federation
        .placement(&topic)
        .ok_or_else(|| ApiError::from(sluice_broker::BrokerError::UnknownTopic(topic.clone())))?;
    Ok(Json(placement_json(&topic, &placement)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    /// The cluster to move the topic to.
    to: String,
}

async fn migrate(
    State(state): State<AdminState>,
    Path(topic): Path<String>,
    body: Result<Json<MigrateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, 400, e.body_text()))?;
    state.federation.migrate(&topic, &body.to).await?;
    let placement = state
        .federation
        .placement(&topic)
        .ok_or_else(|| ApiError::from(sluice_broker::BrokerError::UnknownTopic(topic.clone())))?;
    Ok(Json(placement_json(&topic, &placement)).into_response())
}

async fn drain(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let moves = state.federation.drain(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "cluster": name, "moves": moves })),
    )
        .into_response())
}

async fn rebalance_plan(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let moves = state.federation.plan().await?;
    Ok(Json(json!({ "moves": moves })).into_response())
}

async fn rebalance_apply(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let moves = state.federation.plan().await?;
    state.federation.apply(moves.clone())?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "moves": moves }))).into_response())
}

async fn rebalance_status(State(state): State<AdminState>) -> Response {
    Json(state.federation.rebalance_status()).into_response()
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error_code": 404, "message": "HTTP 404 Not Found"})),
    )
}
