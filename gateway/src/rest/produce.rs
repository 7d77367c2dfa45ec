//! v2 produce: `POST /topics/{topic}` and
//! `POST /topics/{topic}/partitions/{partition}`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use sluice_broker::{Header, ProduceRecord, ProducedOffset};

use super::extract::{
    decode_base64_at, decode_base64_into, parse_json, read_body, PathParams, QueryParams,
};
use super::json_bytes::Embedded;
use super::media::{self, EmbeddedFormat};
use crate::app::AppState;
use crate::error::ApiError;
use crate::telemetry::messaging;

/// The request body. Keys and values stay compact JSON until the embedded
/// format says how to read them.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a produce request object")]
struct ProduceBody<'a> {
    #[serde(borrow)]
    records: Vec<RecordIn<'a>>,
    key_schema: Option<Value>,
    value_schema: Option<Value>,
    key_schema_id: Option<Value>,
    value_schema_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a record object")]
struct RecordIn<'a> {
    #[serde(borrow)]
    key: Option<Embedded<'a>>,
    #[serde(borrow)]
    value: Option<Embedded<'a>>,
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
                name: h.name.into(),
                value,
            })
        })
        .collect()
}

/// The answer: `{"key_schema_id":null,"value_schema_id":null,"offsets":
/// [{"partition":0,"offset":42,"error_code":null,"error":null},...]}`,
/// written by hand: through serde, its field names alone (escaped anew for
/// every record) were a sizeable part of a batch produce.
fn produce_response(offsets: &[ProducedOffset]) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"key_schema_id":null,"value_schema_id":null,"offsets":["#;
    let mut out = Vec::with_capacity(HEAD.len() + offsets.len() * 64 + 2);
    out.extend_from_slice(HEAD);
    let mut numbers = itoa::Buffer::new();
    for (i, offset) in offsets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"partition":"#);
        out.extend_from_slice(numbers.format(offset.partition).as_bytes());
        out.extend_from_slice(br#","offset":"#);
        match offset.offset {
            Some(n) => out.extend_from_slice(numbers.format(n).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","error_code":null,"error":null}"#);
    }
    out.extend_from_slice(b"]}");
    out
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
    let parent = crate::telemetry::http::request_parent(request.extensions());
    let body = read_body(request, state.config.listener.max_body_bytes).await?;
    let records = {
        let body: ProduceBody = parse_json(&body)?;
        to_records(body, format, url_partition)?
    };
    let produced =
        messaging::produce(&state, topic, records, acks, &parent, messaging::REST).await?;
    Ok((
        [(header::CONTENT_TYPE, media::KAFKA_V2)],
        produce_response(&produced.offsets),
    )
        .into_response())
}

/// Checks the body and turns it into records for the cluster. Every key
/// and value is decoded into one buffer, and each record's are slices of
/// it: a batch costs one allocation for its bytes, not two per record.
fn to_records(
    body: ProduceBody<'_>,
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
    let room: usize = body
        .records
        .iter()
        .flat_map(|r| [&r.key, &r.value])
        .flatten()
        .map(|e| match (format, e) {
            (EmbeddedFormat::Binary, Embedded::Str(text)) => {
                base64::decoded_len_estimate(text.len()) + 2
            }
            // Quotes, and escapes may add more: a hint, not a bound.
            (EmbeddedFormat::Json, Embedded::Str(text)) => text.len() + 2,
            (_, Embedded::Other(json)) => json.0.len(),
        })
        .sum();
    let mut buffer = Vec::with_capacity(room);
    let placed = body
        .records
        .into_iter()
        .enumerate()
        .map(|(i, record)| to_record(i, record, format, url_partition, &mut buffer))
        .collect::<Result<Vec<_>, _>>()?;
    let buffer = bytes::Bytes::from(buffer);
    let slice = |range: Option<std::ops::Range<usize>>| range.map(|r| buffer.slice(r));
    Ok(placed
        .into_iter()
        .map(|p| ProduceRecord {
            partition: p.partition,
            key: slice(p.key),
            value: slice(p.value),
            headers: p.headers,
            timestamp_ms: p.timestamp_ms,
        })
        .collect())
}

/// A checked record whose key and value sit in the request's buffer.
struct Placed {
    partition: Option<u32>,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Vec<Header>,
    timestamp_ms: Option<i64>,
}

fn to_record(
    i: usize,
    record: RecordIn<'_>,
    format: EmbeddedFormat,
    url_partition: Option<u32>,
    buffer: &mut Vec<u8>,
) -> Result<Placed, ApiError> {
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
    Ok(Placed {
        partition,
        key: embedded(record.key, format, buffer, || format!("records[{i}].key"))?,
        value: embedded(record.value, format, buffer, || {
            format!("records[{i}].value")
        })?,
        headers: match record.headers {
            None => Vec::new(),
            Some(headers) => decode_headers(headers, &format!("records[{i}].headers"))?,
        },
        timestamp_ms: record.timestamp,
    })
}

/// Appends the bytes of an embedded key or value to `buffer`: the JSON
/// text itself, or the decoded base64 string; returns where they are.
fn embedded(
    value: Option<Embedded<'_>>,
    format: EmbeddedFormat,
    buffer: &mut Vec<u8>,
    path: impl FnOnce() -> String,
) -> Result<Option<std::ops::Range<usize>>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let start = buffer.len();
    match (format, value) {
        (EmbeddedFormat::Json, value) => value.write_json(buffer),
        (EmbeddedFormat::Binary, Embedded::Str(text)) => {
            decode_base64_into(&text, buffer, path)?;
        }
        (EmbeddedFormat::Binary, Embedded::Other(_)) => {
            return Err(ApiError::unprocessable(format!(
                "{}: expected a base64 string in the binary format",
                path()
            )))
        }
    }
    Ok(Some(start..buffer.len()))
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
    fn binary_keys_and_values_are_cut_from_one_buffer() {
        // `\/` is an escaped slash: that string is not borrowed from the body.
        let out = records(
            r#"{"records":[{"key":"aw==","value":"a\/8="},{"value":"aGk="},{"key":null,"value":""}]}"#,
            EmbeddedFormat::Binary,
            None,
        )
        .unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&[0x6b, 0xff][..]));
        assert_eq!(out[1].key, None);
        assert_eq!(out[1].value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(out[2].key, None);
        assert_eq!(out[2].value.as_deref(), Some(&b""[..]));
        let bad = records(
            r#"{"records":[{"value":"aGk="},{"value":"!!"}]}"#,
            EmbeddedFormat::Binary,
            None,
        )
        .unwrap_err();
        assert!(
            bad.message.contains("records[1].value: invalid base64"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn the_answer_is_the_confluent_shape() {
        let offsets = [
            ProducedOffset {
                partition: 2,
                offset: Some(u64::MAX),
                timestamp_ms: 1,
            },
            ProducedOffset {
                partition: 0,
                offset: None,
                timestamp_ms: 1,
            },
        ];
        let answer: Value = serde_json::from_slice(&produce_response(&offsets)).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({
                "key_schema_id": null,
                "value_schema_id": null,
                "offsets": [
                    {"partition": 2, "offset": u64::MAX, "error_code": null, "error": null},
                    {"partition": 0, "offset": null, "error_code": null, "error": null},
                ],
            })
        );
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
