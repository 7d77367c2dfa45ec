//! Stateless reads: `GET /topics/{topic}/partitions/{partition}/records`.
//! Without `offset`, a read starts at the earliest record still held.
//!
//! The answer is written by hand rather than through `serde_json::Value` so
//! that JSON-format keys and values go out exactly as stored (compact, keys
//! in the producer's order) without being parsed into a tree and back.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use sluice_broker::{BrokerError, Record};
use sluice_federation::FederationError;

use super::extract::{PathParams, QueryParams};
use super::json_bytes::CompactJson;
use super::media::{self, EmbeddedFormat};
use crate::app::AppState;
use crate::error::ApiError;

/// `max_bytes` when the query does not set it.
pub const DEFAULT_READ_MAX_BYTES: usize = 1024 * 1024;
/// The largest `max_bytes` honoured; larger asks are lowered to it so one
/// read cannot hold an unbounded answer in memory.
pub const MAX_READ_MAX_BYTES: usize = 16 * 1024 * 1024;

/// `GET /topics/{topic}/partitions/{partition}/records?offset=N&max_bytes=M`.
pub async fn read(
    State(state): State<AppState>,
    path: PathParams,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = path.topic()?;
    let partition = path.partition()?;
    let format = media::read_format(&headers)?;
    let offset = query.u64("offset")?;
    let max_bytes = query.u64("max_bytes")?.map_or(DEFAULT_READ_MAX_BYTES, |n| {
        usize::try_from(n).map_or(MAX_READ_MAX_BYTES, |n| n.min(MAX_READ_MAX_BYTES))
    });
    let fetch = |offset| state.federation.fetch(topic, partition, offset, max_bytes);
    let batch = match (offset, fetch(offset.unwrap_or(0)).await) {
        // Without an explicit offset the reader means "from the start", and
        // after retention the start is past 0: read from there instead of
        // answering 416 to a request that named no offset.
        (
            None,
            Err(FederationError::Broker(BrokerError::OffsetOutOfRange {
                log_start_offset, ..
            })),
        ) => fetch(log_start_offset).await?,
        (_, result) => result?,
    };
    let body = render(topic, &batch.records, format)?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], body).into_response())
}

/// Appends the JSON form of a scalar. Writing strings and integers into a
/// `Vec` cannot fail; the error path exists only to avoid a panic.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), ApiError> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::internal(&e))
}

/// Appends a key or value in the chosen format.
fn put_embedded(
    out: &mut Vec<u8>,
    bytes: Option<&[u8]>,
    format: EmbeddedFormat,
    offset: u64,
    field: &str,
) -> Result<(), ApiError> {
    let Some(bytes) = bytes else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    match format {
        EmbeddedFormat::Binary => put(out, &BASE64.encode(bytes)),
        EmbeddedFormat::Json => {
            let json =
                CompactJson::from_slice(bytes).ok_or_else(|| media::not_json(offset, field))?;
            out.extend_from_slice(&json.0);
            Ok(())
        }
    }
}

/// The JSON array of records, in Confluent's v2 consumer record shape plus
/// headers.
fn render(topic: &str, records: &[Record], format: EmbeddedFormat) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    out.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"topic\":");
        put(&mut out, topic)?;
        out.extend_from_slice(b",\"key\":");
        put_embedded(
            &mut out,
            record.key.as_deref(),
            format,
            record.offset,
            "key",
        )?;
        out.extend_from_slice(b",\"value\":");
        put_embedded(
            &mut out,
            record.value.as_deref(),
            format,
            record.offset,
            "value",
        )?;
        out.extend_from_slice(b",\"partition\":");
        put(&mut out, &record.partition)?;
        out.extend_from_slice(b",\"offset\":");
        put(&mut out, &record.offset)?;
        out.extend_from_slice(b",\"timestamp\":");
        put(&mut out, &record.timestamp_ms)?;
        out.extend_from_slice(b",\"headers\":[");
        for (j, h) in record.headers.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            put(&mut out, &h.name)?;
            out.extend_from_slice(b",\"value\":");
            put(&mut out, &BASE64.encode(&h.value))?;
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use sluice_broker::Header;

    fn record(offset: u64, key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Record {
        Record {
            partition: 1,
            offset,
            timestamp_ms: 42,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from_static(b"x"),
            }],
        }
    }

    #[test]
    fn binary_renders_base64_and_nulls() {
        let out = render("t", &[record(3, Some(b"hi"), None)], EmbeddedFormat::Binary).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            json!([{"topic":"t","key":"aGk=","value":null,"partition":1,"offset":3,
                    "timestamp":42,"headers":[{"name":"h","value":"eA=="}]}])
        );
    }

    #[test]
    fn json_renders_stored_text_in_order() {
        let out = render(
            "t",
            &[record(0, None, Some(br#"{"b":1,"a":2}"#))],
            EmbeddedFormat::Json,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""value":{"b":1,"a":2}"#), "{text}");
    }

    #[test]
    fn json_refuses_bytes_that_are_not_json() {
        let err = render(
            "t",
            &[record(0, None, Some(b"{}")), record(7, Some(b"\xff"), None)],
            EmbeddedFormat::Json,
        )
        .unwrap_err();
        assert_eq!((err.status.as_u16(), err.error_code), (406, 40601));
        assert!(err.message.contains("offset 7"), "{err}");
    }

    #[test]
    fn empty_is_an_empty_array() {
        assert_eq!(render("t", &[], EmbeddedFormat::Json).unwrap(), b"[]");
    }
}
