//! The public router and the state its handlers share.

use std::sync::Arc;

use axum::Router;
use sluice_config::Config;
use sluice_federation::Federation;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Routing to the clusters.
    pub federation: Arc<Federation>,
    /// The configuration the gateway was started with.
    pub config: Arc<Config>,
    /// Tells long-lived responses when the gateway starts draining.
    pub shutdown: crate::server::ShutdownHandle,
    /// Tracing and metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// v2 consumer instances and the groups this gateway owns.
    pub consumers: Arc<crate::rest::consumers::Consumers>,
}

/// The public listener's router.
pub fn router(state: AppState) -> Router {
    let telemetry = state.telemetry.clone();
    // Outermost, so spans and metrics cover every route (and unmatched ones).
    crate::rest::routes(state).layer(crate::telemetry::http::HttpTraceLayer::new(telemetry))
}
