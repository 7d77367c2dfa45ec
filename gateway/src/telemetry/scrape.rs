//! `GET /metrics` on the admin listener: the Prometheus text exposition.
//!
//! Gauges that mirror federation state (cluster health, placement, the
//! rebalance) are read from it at scrape time rather than updated on every
//! change, so the federation needs no hooks and the values are never stale.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sluice_federation::rebalance::RebalancePhase;
use sluice_federation::Federation;

use super::metrics::{
    CLUSTER_UP, LABEL_CLUSTER, LABEL_STATE, PLACEMENT_EPOCHS, PLACEMENT_EPOCH_SWITCHES,
    PLACEMENT_TOPICS, REBALANCE_MOVES, REBALANCE_RUNNING,
};
use super::Telemetry;

/// Media type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct ScrapeState {
    telemetry: Arc<Telemetry>,
    federation: Arc<Federation>,
}

/// The `/metrics` route, to merge into the admin router.
pub fn router(telemetry: Arc<Telemetry>, federation: Arc<Federation>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(ScrapeState {
            telemetry,
            federation,
        })
}

async fn metrics(State(state): State<ScrapeState>) -> impl IntoResponse {
    refresh_federation_gauges(&state.federation);
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.telemetry.render_metrics(),
    )
}

/// Sets the gauges that mirror the federation's state.
pub fn refresh_federation_gauges(federation: &Federation) {
    let mut topics: BTreeMap<String, u64> = BTreeMap::new();
    let mut epochs: BTreeMap<String, u64> = BTreeMap::new();
    for member in federation.members() {
        let up = if member.is_up() { 1.0 } else { 0.0 };
        metrics::gauge!(CLUSTER_UP, LABEL_CLUSTER => member.name.clone()).set(up);
        topics.insert(member.name.clone(), 0);
        epochs.insert(member.name.clone(), 0);
    }
    let mut switches = 0u64;
    for (topic, home) in federation.homes() {
        *topics.entry(home).or_default() += 1;
        if let Some(placement) = federation.placement(&topic) {
            switches += placement.epochs.len().saturating_sub(1) as u64;
            for epoch in placement.epochs {
                *epochs.entry(epoch.cluster).or_default() += 1;
            }
        }
    }
    for (cluster, n) in topics {
        metrics::gauge!(PLACEMENT_TOPICS, LABEL_CLUSTER => cluster).set(n as f64);
    }
    for (cluster, n) in epochs {
        metrics::gauge!(PLACEMENT_EPOCHS, LABEL_CLUSTER => cluster).set(n as f64);
    }
    metrics::gauge!(PLACEMENT_EPOCH_SWITCHES).set(switches as f64);

    let rebalance = federation.rebalance_status();
    let failed = rebalance.failed.len();
    for (state, n) in [
        ("planned", rebalance.moves.len()),
        ("completed", rebalance.completed),
        ("failed", failed),
    ] {
        metrics::gauge!(REBALANCE_MOVES, LABEL_STATE => state).set(n as f64);
    }
    let running = rebalance.state == RebalancePhase::Running;
    metrics::gauge!(REBALANCE_RUNNING).set(if running { 1.0 } else { 0.0 });
}
