//! The admin listener's router: liveness, readiness, cluster health.
//!
//! `/healthz` answers 200 while the process serves. `/readyz` answers 200
//! when the gateway takes traffic: not draining, and at least one cluster up
//! (federation routes around the others); otherwise 503, so a balancer
//! stops sending new requests during a drain.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sluice_broker::Health;
use sluice_federation::Federation;

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
        .fallback(not_found)
        .with_state(AdminState {
            federation,
            shutdown,
        })
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let health = state.federation.health().await;
    let clusters: Vec<_> = health
        .iter()
        .map(|(name, h)| match h {
            Health::Up => json!({"name": name, "status": "up"}),
            Health::Down(reason) => json!({"name": name, "status": "down", "reason": reason}),
        })
        .collect();
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

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error_code": 404, "message": "HTTP 404 Not Found"})),
    )
}
