//! Content negotiation: which embedded format a produce body uses
//! (`Content-Type`) and which one a read answers in (`Accept`).

use axum::http::{header, HeaderMap};

use crate::error::{ApiError, UNRENDERABLE_RECORD};

/// Confluent's v2 JSON embedded format: keys and values are JSON.
pub const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
/// Confluent's v2 binary embedded format: keys and values are base64.
pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
/// Confluent's v2 metadata and produce-response type.
pub const KAFKA_V2: &str = "application/vnd.kafka.v2+json";
/// Plain JSON: v3 bodies, and v2 produce as if `json.v2`.
pub const JSON: &str = "application/json";

/// Schema-registry formats: recognised so the answer can say why they fail.
const SCHEMA_V2: [&str; 3] = [
    "application/vnd.kafka.avro.v2+json",
    "application/vnd.kafka.protobuf.v2+json",
    "application/vnd.kafka.jsonschema.v2+json",
];

/// How keys and values are embedded in a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddedFormat {
    /// Arbitrary JSON, stored as its compact bytes.
    Json,
    /// Base64 strings of arbitrary bytes.
    Binary,
}

impl EmbeddedFormat {
    /// The media type a response in this format carries.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => JSON_V2,
            Self::Binary => BINARY_V2,
        }
    }
}

/// The media type without parameters, lower-cased: `Application/JSON;
/// charset=utf-8` is `application/json`.
fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `Content-Type` essence, or `None` when absent or not visible ASCII.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(essence)
}

/// The embedded format of a v2 produce body.
pub fn produce_format(headers: &HeaderMap) -> Result<EmbeddedFormat, ApiError> {
    let Some(essence) = content_type(headers) else {
        return Err(ApiError::unsupported_media_type(format!(
            "missing Content-Type: produce accepts {JSON_V2}, {BINARY_V2} or {JSON}"
        )));
    };
    match essence.as_str() {
        JSON_V2 | JSON => Ok(EmbeddedFormat::Json),
        BINARY_V2 => Ok(EmbeddedFormat::Binary),
        s if SCHEMA_V2.contains(&s) => Err(ApiError::unsupported_media_type(format!(
            "{s}: schema formats (avro, protobuf, jsonschema) are not supported; \
             use {JSON_V2} or {BINARY_V2}"
        ))),
        other => Err(ApiError::unsupported_media_type(format!(
            "unsupported Content-Type {other:?}: produce accepts {JSON_V2}, {BINARY_V2} or {JSON}"
        ))),
    }
}

/// Checks that a v3 body is declared as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match content_type(headers) {
        Some(essence) if essence == JSON => Ok(()),
        Some(other) => Err(ApiError::unsupported_media_type(format!(
            "unsupported Content-Type {other:?}: this route accepts {JSON}"
        ))),
        None => Err(ApiError::unsupported_media_type(format!(
            "missing Content-Type: this route accepts {JSON}"
        ))),
    }
}

/// The format a record read answers in, from `Accept`. Binary is the
/// default because it can render any bytes; JSON must be asked for.
pub fn read_format(headers: &HeaderMap) -> Result<EmbeddedFormat, ApiError> {
    let mut ranges: Vec<(String, f32)> = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return Err(ApiError::bad_request("Accept header is not visible ASCII"));
        };
        for range in value.split(',').filter(|r| !r.trim().is_empty()) {
            ranges.push((essence(range), quality(range)));
        }
    }
    if ranges.is_empty() {
        return Ok(EmbeddedFormat::Binary);
    }
    // Highest quality first; equal qualities keep the client's order.
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut schema_asked = false;
    for (range, q) in &ranges {
        if *q <= 0.0 {
            continue;
        }
        match range.as_str() {
            JSON_V2 => return Ok(EmbeddedFormat::Json),
            BINARY_V2 | KAFKA_V2 | JSON | "application/*" | "*/*" => {
                return Ok(EmbeddedFormat::Binary)
            }
            s if SCHEMA_V2.contains(&s) => schema_asked = true,
            _ => {}
        }
    }
    let message = if schema_asked {
        format!("schema formats (avro, protobuf, jsonschema) are not supported; accept {BINARY_V2} or {JSON_V2}")
    } else {
        format!("records can be answered as {BINARY_V2} or {JSON_V2}")
    };
    Err(ApiError::not_acceptable(406, message))
}

/// The `q` parameter of a media range; 1 when absent, 0 when unreadable so
/// a garbled range is never preferred.
fn quality(range: &str) -> f32 {
    for param in range.split(';').skip(1) {
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("q") {
                return value
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| q.is_finite())
                    .unwrap_or(0.0);
            }
        }
    }
    1.0
}

/// The error for stored bytes that are not JSON, read in the JSON format.
pub fn not_json(offset: u64, field: &str) -> ApiError {
    ApiError::not_acceptable(
        UNRENDERABLE_RECORD,
        format!("the {field} of the record at offset {offset} is not JSON; read it as {BINARY_V2}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn produce_formats() {
        let ct = |v| produce_format(&with(header::CONTENT_TYPE, v));
        assert_eq!(ct(JSON_V2), Ok(EmbeddedFormat::Json));
        assert_eq!(
            ct("Application/JSON; charset=utf-8"),
            Ok(EmbeddedFormat::Json)
        );
        assert_eq!(ct(BINARY_V2), Ok(EmbeddedFormat::Binary));
        let err = ct("application/vnd.kafka.avro.v2+json").unwrap_err();
        assert_eq!(err.error_code, 415);
        assert!(err.message.contains("schema"), "{err}");
        let err = ct("text/plain").unwrap_err();
        assert!(err.message.contains(BINARY_V2), "{err}");
        assert_eq!(
            produce_format(&HeaderMap::new()).unwrap_err().error_code,
            415
        );
    }

    #[test]
    fn read_formats() {
        let accept = |v| read_format(&with(header::ACCEPT, v));
        assert_eq!(read_format(&HeaderMap::new()), Ok(EmbeddedFormat::Binary));
        assert_eq!(accept("*/*"), Ok(EmbeddedFormat::Binary));
        assert_eq!(accept(JSON), Ok(EmbeddedFormat::Binary));
        assert_eq!(accept(JSON_V2), Ok(EmbeddedFormat::Json));
        assert_eq!(
            accept("application/json;q=0.5, application/vnd.kafka.json.v2+json"),
            Ok(EmbeddedFormat::Json)
        );
        assert_eq!(
            accept("text/html, application/vnd.kafka.json.v2+json;q=0"),
            Err(ApiError::not_acceptable(
                406,
                format!("records can be answered as {BINARY_V2} or {JSON_V2}")
            ))
        );
        assert!(accept("application/vnd.kafka.avro.v2+json")
            .unwrap_err()
            .message
            .contains("schema"));
    }
}
