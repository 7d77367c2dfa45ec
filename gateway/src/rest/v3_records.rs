//! v3 produce of one record:
//! `POST /v3/clusters/{cluster_id}/topics/{topic}/records`.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_broker::ProduceRecord;

use super::extract::{decode_base64, parse_json, read_body, PathParams, QueryParams};
use super::json_bytes::CompactJson;
use super::media;
use super::produce::{decode_headers, HeaderIn};
use super::time;
use crate::app::AppState;
use crate::error::ApiError;
use crate::telemetry::messaging;

/// The request body; unknown fields are ignored, as Confluent does.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a record object")]
struct RecordIn {
    partition_id: Option<u32>,
    headers: Option<Vec<HeaderIn>>,
    key: Option<DataIn>,
    value: Option<DataIn>,
    /// RFC 3339 text or milliseconds since the epoch.
    timestamp: Option<Value>,
}

/// A key or value: its type and data, and the schema fields Confluent
/// defines, which Sluice refuses unless null.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with type and data")]
struct DataIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<CompactJson>,
    subject: Option<Value>,
    subject_name_strategy: Option<Value>,
    schema_id: Option<Value>,
    schema_version: Option<Value>,
    schema: Option<Value>,
}

#[derive(Debug, Serialize)]
struct RecordOut {
    error_code: u16,
    cluster_id: String,
    topic_name: String,
    partition_id: u32,
    offset: Option<u64>,
    timestamp: String,
    key: Option<SizeOut>,
    value: Option<SizeOut>,
}

#[derive(Debug, Serialize)]
struct SizeOut {
    #[serde(rename = "type")]
    kind: &'static str,
    size: usize,
}

/// A decoded key or value with the type it was sent as.
struct Data {
    kind: &'static str,
    bytes: Bytes,
}

/// `POST /v3/clusters/{cluster_id}/topics/{topic}/records`.
pub async fn produce(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<impl Serialize>, ApiError> {
    path.cluster_id(&state)?;
    let topic = path.topic()?;
    media::require_json(&headers)?;
    let acks = query.acks(state.config.gateway.default_acks)?;
    let parent = crate::telemetry::http::request_parent(request.extensions());
    let body = read_body(request, state.config.listener.max_body_bytes).await?;
    let body: RecordIn = parse_json(&body)?;

    let key = decode_data(body.key, "key")?;
    let value = decode_data(body.value, "value")?;
    let record = ProduceRecord {
        partition: body.partition_id,
        key: key.as_ref().map(|d| d.bytes.clone()),
        value: value.as_ref().map(|d| d.bytes.clone()),
        headers: decode_headers(body.headers.unwrap_or_default(), "headers")?,
        timestamp_ms: body.timestamp.map(parse_timestamp).transpose()?,
    };
    let produced = messaging::produce(&state, topic, vec![record], acks, &parent, messaging::REST)
        .await?
        .offsets
        .pop()
        .ok_or_else(|| ApiError::internal(&"cluster returned no offset for one record"))?;
    let size = |d: Data| SizeOut {
        kind: d.kind,
        size: d.bytes.len(),
    };
    Ok(Json(RecordOut {
        error_code: 200,
        cluster_id: state.config.gateway.cluster_id.clone(),
        topic_name: topic.to_owned(),
        partition_id: produced.partition,
        offset: produced.offset,
        timestamp: time::format_ms(produced.timestamp_ms),
        key: key.map(size),
        value: value.map(size),
    }))
}

/// The bytes of a key or value by its type. No type means JSON; null data
/// means no key or a null value.
fn decode_data(data: Option<DataIn>, field: &str) -> Result<Option<Data>, ApiError> {
    let Some(data) = data else { return Ok(None) };
    for (name, value) in [
        ("subject", &data.subject),
        ("subject_name_strategy", &data.subject_name_strategy),
        ("schema_id", &data.schema_id),
        ("schema_version", &data.schema_version),
        ("schema", &data.schema),
    ] {
        if value.is_some() {
            return Err(ApiError::unprocessable(format!(
                "{field}.{name}: schemas are not supported; use type BINARY, JSON or STRING"
            )));
        }
    }
    let kind = match data.kind.as_deref().unwrap_or("JSON") {
        "BINARY" => "BINARY",
        "JSON" => "JSON",
        "STRING" => "STRING",
        "AVRO" | "PROTOBUF" | "JSONSCHEMA" => {
            return Err(ApiError::unprocessable(format!(
                "{field}.type: schema formats are not supported; use BINARY, JSON or STRING"
            )))
        }
        other => {
            return Err(ApiError::unprocessable(format!(
                "{field}.type: unknown type {other:?}; use BINARY, JSON or STRING"
            )))
        }
    };
    let Some(json) = data.data else {
        return Ok(None);
    };
    let path = format!("{field}.data");
    let bytes = match kind {
        "JSON" => Bytes::from(json.0),
        _ => {
            let text = json.as_string().ok_or_else(|| {
                ApiError::unprocessable(format!("{path}: expected a string for type {kind}"))
            })?;
            if kind == "BINARY" {
                decode_base64(&text, &path)?
            } else {
                Bytes::from(text)
            }
        }
    };
    Ok(Some(Data { kind, bytes }))
}

fn parse_timestamp(value: Value) -> Result<i64, ApiError> {
    let parsed = match &value {
        Value::Number(n) => n.as_i64().filter(|ms| *ms >= 0),
        Value::String(s) => time::parse_ms(s),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ApiError::unprocessable(format!(
            "timestamp: expected an RFC 3339 date-time or milliseconds since the epoch, got {value}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Result<Option<Data>, ApiError> {
        // Not `parse_json`: that insists on an object, and `null` is tested here.
        let data =
            serde_json::from_str(json).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        decode_data(data, "value")
    }

    #[test]
    fn types_decode() {
        let d = data(r#"{"type":"BINARY","data":"aGk="}"#).unwrap().unwrap();
        assert_eq!((d.kind, d.bytes.as_ref()), ("BINARY", &b"hi"[..]));
        let d = data(r#"{"type":"STRING","data":"hi"}"#).unwrap().unwrap();
        assert_eq!((d.kind, d.bytes.as_ref()), ("STRING", &b"hi"[..]));
        let d = data(r#"{"data":{"b":[1, 2],"a":null}}"#).unwrap().unwrap();
        assert_eq!(
            (d.kind, d.bytes.as_ref()),
            ("JSON", &br#"{"b":[1,2],"a":null}"#[..])
        );
        assert!(data(r#"{"type":"JSON","data":null}"#).unwrap().is_none());
        assert!(data("null").unwrap().is_none());
    }

    #[test]
    fn bad_data_names_the_field() {
        for (json, expected) in [
            (
                r#"{"type":"BINARY","data":"@@"}"#,
                "value.data: invalid base64",
            ),
            (
                r#"{"type":"STRING","data":5}"#,
                "value.data: expected a string",
            ),
            (r#"{"type":"AVRO","data":{}}"#, "value.type: schema formats"),
            (r#"{"type":"binary","data":""}"#, "value.type: unknown type"),
            (r#"{"schema_id":1,"data":""}"#, "value.schema_id: schemas"),
        ] {
            let err = data(json).err().expect(json);
            assert_eq!(err.error_code, 422, "{json}");
            assert!(err.message.starts_with(expected), "{json}: {err}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(Value::from(5)), Ok(5));
        assert_eq!(
            parse_timestamp(Value::from("1970-01-01T00:00:01Z")),
            Ok(1000)
        );
        for bad in [
            Value::from(-1),
            Value::from(1.5),
            Value::from("yesterday"),
            Value::Bool(true),
        ] {
            assert_eq!(parse_timestamp(bad).unwrap_err().error_code, 422);
        }
    }
}
