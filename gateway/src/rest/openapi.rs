//! `GET /openapi.json`: the OpenAPI description of the REST routes, kept
//! in `gateway/api/openapi.json` and compiled into the binary. A test
//! checks that every path and method it lists is served.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI 3.1 document.
pub const OPENAPI_JSON: &str = include_str!("../../api/openapi.json");

/// `GET /openapi.json`.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
