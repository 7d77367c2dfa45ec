//! The native streaming endpoint, `GET /v1/ws`: produce with acks and
//! subscriptions with credit-based flow control over one WebSocket, in JSON
//! text frames.
//!
//! - [`protocol`]: the frames, parsed and rendered.
//! - [`session`]: one connection: the reading loop, concurrent produces
//!   (bounded, which is the backpressure), and the writer that feeds
//!   frames in batches and flushes once per batch.
//! - [`subscription`]: one subscription's reading task, its start
//!   (cursor, earliest, latest) and its credit.
//! - [`group`]: a subscription as a member of a consumer group.
//!
//! `docs/websocket.md` describes the protocol for clients.

use std::time::Duration;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;

use crate::app::AppState;
use crate::auth::ws::SessionGuard;
use crate::auth::AuthContext;
use crate::error::ApiError;
use crate::rest::extract::QueryParams;

pub mod group;
pub mod protocol;
pub use protocol::Framing;
pub mod session;
pub mod subscription;

/// Produces one connection may have in flight; when they are all taken the
/// gateway stops reading the socket until one completes.
pub const DEFAULT_WS_MAX_IN_FLIGHT: usize = 64;

/// Credit a subscription starts with when the subscribe frame names none.
pub const DEFAULT_WS_INITIAL_CREDIT: u64 = 100;

/// How long a subscription may hold zero credit while a record waits for it
/// before the connection is closed with [`CLOSE_SLOW_CONSUMER`].
pub const DEFAULT_WS_PAUSE_LIMIT_MS: u64 = 30_000;
/// Lowest `pause_limit_ms` honoured.
pub const MIN_WS_PAUSE_LIMIT_MS: u64 = 10;
/// Highest `pause_limit_ms` honoured.
pub const MAX_WS_PAUSE_LIMIT_MS: u64 = 600_000;

/// Bytes tungstenite reads from the socket at a time. Its default (128 KiB)
/// would make every idle connection cost that much.
pub const DEFAULT_WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Bytes of frames gathered before they are written to the socket (a flush
/// writes whatever is gathered sooner).
pub const DEFAULT_WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Frames queued between the connection's tasks and its writer.
pub const DEFAULT_WS_OUTBOUND_FRAMES: usize = 256;

/// Frames the writer feeds before it flushes, at most.
pub const DEFAULT_WS_BATCH_FRAMES: usize = 64;

/// Close code for a subscriber that held no credit past the pause limit.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Settings of one connection.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// JSON text or CBOR binary frames.
    pub framing: Framing,
    /// See [`DEFAULT_WS_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`DEFAULT_WS_PAUSE_LIMIT_MS`].
    pub pause_limit: Duration,
    /// How often an idle subscription polls (`gateway.tail_poll_ms`).
    pub poll_idle: Duration,
}

/// `GET /v1/ws[?pause_limit_ms=N]`: upgrades to a WebSocket session.
pub async fn upgrade(
    State(state): State<AppState>,
    auth: Option<Extension<AuthContext>>,
    query: QueryParams,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        let status = rejection.status();
        let code = u32::from(status.as_u16());
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(
            status,
            code,
            format!("{}; this route is a WebSocket", rejection.body_text()),
        )
    })?;
    let pause_limit_ms = query
        .u64("pause_limit_ms")?
        .map_or(DEFAULT_WS_PAUSE_LIMIT_MS, |ms| {
            ms.clamp(MIN_WS_PAUSE_LIMIT_MS, MAX_WS_PAUSE_LIMIT_MS)
        });
    // A `framing=` query wins; else the first subprotocol that names one,
    // which the handshake then echoes.
    let mut upgrade = upgrade;
    let framing = match query.get("framing") {
        Some(value) => Some(Framing::from_query(value)?),
        None => upgrade
            .requested_protocols()
            .find_map(|p| p.to_str().ok().and_then(Framing::from_subprotocol)),
    };
    if let Some(framing) = framing {
        if upgrade
            .requested_protocols()
            .any(|p| p.as_bytes() == framing.subprotocol().as_bytes())
        {
            upgrade.set_selected_protocol(HeaderValue::from_static(framing.subprotocol()));
        }
    }
    let settings = SessionSettings {
        framing: framing.unwrap_or_default(),
        max_in_flight: DEFAULT_WS_MAX_IN_FLIGHT,
        pause_limit: Duration::from_millis(pause_limit_ms),
        poll_idle: Duration::from_millis(state.config.gateway.tail_poll_ms),
    };
    let max_bytes = state.config.listener.max_body_bytes;
    Ok(upgrade
        .max_message_size(max_bytes)
        .max_frame_size(max_bytes)
        .read_buffer_size(DEFAULT_WS_READ_BUFFER_BYTES)
        .write_buffer_size(DEFAULT_WS_WRITE_BUFFER_BYTES)
        // A `sluice.bearer.<token>` subprotocol may have carried the
        // credential (crate::auth::layer); only the framing one is echoed.
        .on_upgrade(move |socket| {
            let guard = SessionGuard::new(auth.map(|Extension(context)| context));
            session::run(socket, state, settings, guard)
        }))
}
