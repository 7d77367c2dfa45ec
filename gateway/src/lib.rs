//! The Sluice gateway: listeners, REST routes, admin API and the `sluice` CLI.
//!
//! - [`app`]: the public router and the state every handler shares.
//! - [`rest`]: Confluent-compatible REST routes (v2 produce, metadata,
//!   records; v3 records and topics).
//! - [`error`]: [`error::ApiError`], the one place errors become HTTP answers
//!   in Confluent's `{"error_code", "message"}` shape.
//! - [`start`]: where a live tail (SSE, WebSocket) starts: a cursor,
//!   the oldest records, or the end.
//! - [`ws`]: the WebSocket endpoint `/v1/ws` (produce with acks,
//!   subscriptions with credit and cursor resume).
//! - [`admin`]: the admin listener's router (health, readiness, federation
//!   admin API); [`admin_client`]: the client `sluice federation` uses.
//! - [`auth`]: identity (API keys, JWTs, client certificates), ACLs and
//!   quotas, in front of both listeners and inside WebSocket sessions.
//! - [`tls`]: server certificates, loaded from config or generated.
//! - [`telemetry`]: OpenTelemetry spans and W3C trace context, Prometheus
//!   metrics (`/metrics` on the admin listener), and log output.
//! - [`server`]: binding, the accept loop with its connection cap, TLS and
//!   HTTP/1.1 + HTTP/2 serving, and graceful drain.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod auth;
pub mod error;
pub mod rest;
pub mod server;
pub mod start;
pub mod telemetry;
pub mod tls;
pub mod ws;

pub use server::{Gateway, ShutdownHandle};
