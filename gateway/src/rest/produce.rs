//! v2 produce: `POST /topics/{topic}` and
//! `POST /topics/{topic}/partitions/{partition}`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_broker::{Header, ProduceRecord, ProducedOffset};

use super::extract::{decode_base64_at, parse_json, read_body, PathParams, QueryParams};
use super::json_bytes::Embedded;
use super::media::{self, EmbeddedFormat};
use crate::app::AppState;
use crate::error::ApiError;
use crate::telemetry::messaging;

/// The request body. Keys and values stay compact JSON until the embedded
/// format says how to read them.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a produce request object")]
struct ProduceBody {
    records: Vec<RecordIn>,
    key_schema: Option<Value>,
    value_schema: Option<Value>,
    key_schema_id: Option<Value>,
    value_schema_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a record object")]
struct RecordIn {
    key: Option<Embedded>,
    value: Option<Embedded>,
    partition: Option<u32>,
    /// Sluice extension, in the v3 shape.
    headers: Option<Vec<HeaderIn>>,
    /// Sluice extension: create time in milliseconds since the epoch.
    timestamp: Option<i64>,
}

/// A header as the REST routes write it: a name and a base64 value.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a header object with name and value")]
pub struct HeaderIn {
    name: String,
    value: Option<String>,
}

/// Decodes headers found at `path`; a null value is an empty one, as a
/// Kafka header value cannot be absent here.
pub fn decode_headers(headers: Vec<HeaderIn>, path: &str) -> Result<Vec<Header>, ApiError> {
    headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let value = match h.value {
                Some(text) => decode_base64_at(&text, || format!("{path}[{i}].value"))?,
                None => bytes::Bytes::new(),
            };
            Ok(Header {
                name: h.name,
                value,
            })
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct ProduceResponse {
    key_schema_id: Option<u32>,
    value_schema_id: Option<u32>,
    offsets: Vec<OffsetOut>,
}

#[derive(Debug, Serialize)]
struct OffsetOut {
    partition: u32,
    offset: Option<u64>,
    error_code: Option<u32>,
    error: Option<String>,
}

impl From<ProducedOffset> for OffsetOut {
    fn from(produced: ProducedOffset) -> Self {
        Self {
            partition: produced.partition,
            offset: produced.offset,
            error_code: None,
            error: None,
        }
    }
}

/// `POST /topics/{topic}`.
pub async fn to_topic(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    produce(state, path, None, query, headers, request).await
}

/// `POST /topics/{topic}/partitions/{partition}`.
pub async fn to_partition(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // The topic is checked first so both URL forms report a bad name alike.
    path.topic()?;
    let partition = path.partition()?;
    produce(state, path, Some(partition), query, headers, request).await
}

async fn produce(
    state: AppState,
    path: PathParams,
    url_partition: Option<u32>,
    query: QueryParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let topic = path.topic()?;
    let format = media::produce_format(&headers)?;
    let acks = query.acks(state.config.gateway.default_acks)?;
    let body = read_body(request, state.config.listener.max_body_bytes).await?;
    let body: ProduceBody = parse_json(&body)?;
    let records = to_records(body, format, url_partition)?;
    let produced = messaging::produce(
        &state,
        topic,
        records,
        acks,
        &opentelemetry::Context::current(),
        messaging::REST,
    )
    .await?;
    let response = ProduceResponse {
        key_schema_id: None,
        value_schema_id: None,
        offsets: produced.offsets.into_iter().map(OffsetOut::from).collect(),
    };
    Ok((
        [(header::CONTENT_TYPE, media::KAFKA_V2)],
        axum::Json(response),
    )
        .into_response())
}

/// Checks the body and turns it into records for the cluster.
fn to_records(
    body: ProduceBody,
    format: EmbeddedFormat,
    url_partition: Option<u32>,
) -> Result<Vec<ProduceRecord>, ApiError> {
    for (name, value) in [
        ("key_schema", &body.key_schema),
        ("value_schema", &body.value_schema),
        ("key_schema_id", &body.key_schema_id),
        ("value_schema_id", &body.value_schema_id),
    ] {
        if value.is_some() {
            return Err(ApiError::unprocessable(format!(
                "{name}: schemas are not supported; use the json or binary embedded format"
            )));
        }
    }
    if body.records.is_empty() {
        return Err(ApiError::unprocessable("records: must not be empty"));
    }
    body.records
        .into_iter()
        .enumerate()
        .map(|(i, record)| to_record(i, record, format, url_partition))
        .collect()
}

fn to_record(
    i: usize,
    record: RecordIn,
    format: EmbeddedFormat,
    url_partition: Option<u32>,
) -> Result<ProduceRecord, ApiError> {
    let partition = match (url_partition, record.partition) {
        (Some(url), Some(body)) if url != body => {
            return Err(ApiError::unprocessable(format!(
                "records[{i}].partition: {body} differs from partition {url} in the URL"
            )))
        }
        (url, body) => url.or(body),
    };
    if let Some(ts) = record.timestamp {
        if ts < 0 {
            return Err(ApiError::unprocessable(format!(
                "records[{i}].timestamp: must be milliseconds since the epoch, got {ts}"
            )));
        }
    }
    Ok(ProduceRecord {
        partition,
        key: embedded(record.key, format, || format!("records[{i}].key"))?,
        value: embedded(record.value, format, || format!("records[{i}].value"))?,
        headers: match record.headers {
            None => Vec::new(),
            Some(headers) => decode_headers(headers, &format!("records[{i}].headers"))?,
        },
        timestamp_ms: record.timestamp,
    })
}

/// The bytes of an embedded key or value: the JSON text itself, or the
/// decoded base64 string.
fn embedded(
    value: Option<Embedded>,
    format: EmbeddedFormat,
    path: impl FnOnce() -> String,
) -> Result<Option<bytes::Bytes>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    match (format, value) {
        (EmbeddedFormat::Json, value) => Ok(Some(value.into_json().into())),
        (EmbeddedFormat::Binary, Embedded::Str(text)) => decode_base64_at(&text, path).map(Some),
        (EmbeddedFormat::Binary, Embedded::Other(_)) => Err(ApiError::unprocessable(format!(
            "{}: expected a base64 string in the binary format",
            path()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(
        json: &str,
        format: EmbeddedFormat,
        partition: Option<u32>,
    ) -> Result<Vec<ProduceRecord>, ApiError> {
        to_records(parse_json(json.as_bytes())?, format, partition)
    }

    #[test]
    fn json_format_stores_compact_text() {
        let out = records(
            r#"{"records":[{"key": "k", "value": {"b": 1, "a": [1, 2]}}, {"value": null}]}"#,
            EmbeddedFormat::Json,
            None,
        )
        .unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"\"k\""[..]));
        assert_eq!(out[0].value.as_deref(), Some(&br#"{"b":1,"a":[1,2]}"#[..]));
        assert_eq!(out[1].value, None);
        assert_eq!(out[1].key, None);
    }

    #[test]
    fn binary_format_decodes_base64_and_headers() {
        let out = records(
            r#"{"records":[{"key":"aGk=","value":"AAE=","partition":2,"timestamp":5,
                "headers":[{"name":"h","value":"eA=="},{"name":"n","value":null}]}]}"#,
            EmbeddedFormat::Binary,
            None,
        )
        .unwrap();
        let r = &out[0];
        assert_eq!(r.key.as_deref(), Some(&b"hi"[..]));
        assert_eq!(r.value.as_deref(), Some(&[0u8, 1][..]));
        assert_eq!((r.partition, r.timestamp_ms), (Some(2), Some(5)));
        assert_eq!(r.headers[0].value.as_ref(), b"x");
        assert!(r.headers[1].value.is_empty());
    }

    #[test]
    fn bad_bodies_are_422_naming_the_field() {
        let cases = [
            (r#"{"records":[]}"#, "records: must not be empty"),
            (
                r#"{"records":[{"value":"!!"}]}"#,
                "records[0].value: invalid base64",
            ),
            (
                r#"{"records":[{"value":7}]}"#,
                "records[0].value: expected a base64 string",
            ),
            (
                r#"{"records":[{"value":"","headers":[{"name":"a","value":""},{"name":"b","value":"*"}]}]}"#,
                "records[0].headers[1].value: invalid base64",
            ),
            (r#"{"records":[{"timestamp":-1}]}"#, "records[0].timestamp"),
            (
                r#"{"value_schema_id":3,"records":[{}]}"#,
                "value_schema_id: schemas are not supported",
            ),
        ];
        for (json, expected) in cases {
            let err = records(json, EmbeddedFormat::Binary, None).unwrap_err();
            assert_eq!(err.error_code, 422, "{json}");
            assert!(err.message.starts_with(expected), "{json}: {err}");
        }
    }

    #[test]
    fn schema_fields_may_be_null() {
        let out = records(
            r#"{"key_schema":null,"value_schema_id":null,"records":[{"value":"eA=="}]}"#,
            EmbeddedFormat::Binary,
            None,
        );
        assert_eq!(out.unwrap().len(), 1);
    }

    #[test]
    fn url_partition_applies_and_must_agree() {
        let out = records(
            r#"{"records":[{"value":1},{"value":2,"partition":1}]}"#,
            EmbeddedFormat::Json,
            Some(1),
        )
        .unwrap();
        assert!(out.iter().all(|r| r.partition == Some(1)));
        let err = records(
            r#"{"records":[{"value":1,"partition":0}]}"#,
            EmbeddedFormat::Json,
            Some(1),
        )
        .unwrap_err();
        assert_eq!(err.error_code, 422);
        assert!(err.message.starts_with("records[0].partition"), "{err}");
    }
}
