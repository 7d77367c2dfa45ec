//! Confluent-compatible REST routes, so existing REST Proxy clients work.
//!
//! - [`produce`]: v2 produce to a topic or a partition.
//! - [`metadata`]: v2 topic, partition and offset listings.
//! - [`records`]: stateless reads of a partition from an offset.
//! - [`consumers`]: v2 consumer instances and consumer groups.
//! - [`v3`], [`v3_records`]: v3 clusters, topics and single-record produce.
//! - [`media`]: content negotiation (embedded formats).
//! - [`extract`]: path, query and body readers whose failures are
//!   [`ApiError`]s, never axum's plain-text rejections.
//! - [`json_bytes`], [`time`]: order-preserving JSON bytes, RFC 3339.
//!
//! `docs/rest.md` describes the routes for clients.

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub mod consumers;
pub mod extract;
pub mod json_bytes;
pub mod media;
pub mod metadata;
pub mod openapi;
pub mod produce;
pub mod records;
pub mod sse;
pub mod time;
pub mod v3;
pub mod v3_records;

#[cfg(test)]
mod tests;

/// All REST routes, with JSON answers for unknown routes and methods and
/// the body limit of `listener.max_body_bytes`.
pub fn routes(state: AppState) -> Router {
    let max_body_bytes = state.config.listener.max_body_bytes;
    Router::new()
        .route("/topics", get(metadata::list_topics))
        .route(
            "/topics/{topic}",
            get(metadata::topic).post(produce::to_topic),
        )
        .route("/topics/{topic}/partitions", get(metadata::partitions))
        .route(
            "/topics/{topic}/partitions/{partition}",
            get(metadata::one_partition).post(produce::to_partition),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/offsets",
            get(metadata::offsets),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(records::read),
        )
        .route("/topics/{topic}/events", get(sse::events))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/openapi.json", get(openapi::document))
        .route("/v3/clusters", get(v3::list_clusters))
        .route("/v3/clusters/{cluster_id}", get(v3::cluster))
        .route(
            "/v3/clusters/{cluster_id}/topics",
            get(v3::list_topics).post(v3::create_topic),
        )
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic}",
            get(v3::topic).delete(v3::delete_topic),
        )
        .route(
            "/v3/clusters/{cluster_id}/topics/{topic}/records",
            post(v3_records::produce),
        )
        .merge(consumers::public_routes(state.clone()))
        // After the routes: it applies to the routes present when called.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}
