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
use sluice_broker::Record;
use sluice_federation::cursor::Cursor;
use sluice_federation::{FederationError, ReadBatch, ReadStart};

use super::extract::{PathParams, QueryParams};
use super::json_bytes::CompactJson;
use super::media::{self, EmbeddedFormat};
use crate::app::AppState;
use crate::error::ApiError;
use crate::telemetry::messaging::{self, Delivery};

/// `max_bytes` when the query does not set it.
pub const DEFAULT_READ_MAX_BYTES: usize = 1024 * 1024;
/// The largest `max_bytes` honoured; larger asks are lowered to it so one
/// read cannot hold an unbounded answer in memory.
pub const MAX_READ_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Response header carrying the cursor to resume after the whole answer
/// (also when it holds no record).
pub const NEXT_CURSOR_HEADER: &str = "sluice-next-cursor";

/// `GET /topics/{topic}/partitions/{partition}/records?offset=N|cursor=C&max_bytes=M`.
///
/// `cursor` (from an earlier answer) follows the topic across migrations:
/// it finishes the epoch it points into, then continues in the next one.
/// `offset` is a plain offset in the topic's current epoch, as Confluent's
/// routes have it. Without either, the read starts at the oldest record
/// still held, in the topic's first epoch.
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
    let start = match (query.get("cursor"), offset) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either `cursor` or `offset`, not both",
            ))
        }
        (Some(cursor), None) => {
            ReadStart::Cursor(Cursor::decode(cursor, topic).map_err(FederationError::from)?)
        }
        (None, Some(offset)) => ReadStart::Offset(offset),
        (None, None) => ReadStart::Earliest,
    };
    let batch = state
        .federation
        .read(topic, partition, start, max_bytes)
        .await?;
    let body = render(topic, &batch, format)?;
    if let Some(cluster) = state.federation.epoch_cluster(topic, batch.epoch) {
        let delivery = Delivery {
            topic,
            protocol: messaging::REST,
            group: None,
        };
        delivery.count(&state.telemetry, &cluster, &batch.records);
    }
    Ok((
        [
            (header::CONTENT_TYPE, format.media_type().to_owned()),
            (
                header::HeaderName::from_static(NEXT_CURSOR_HEADER),
                batch.next_cursor(topic, partition),
            ),
        ],
        body,
    )
        .into_response())
}

/// Appends the JSON form of a scalar. Writing strings and integers into a
/// `Vec` cannot fail; the error path exists only to avoid a panic.
pub(crate) fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), ApiError> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::internal(&e))
}

/// Appends a key or value in the chosen format.
pub(crate) fn put_embedded(
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
fn render(topic: &str, batch: &ReadBatch, format: EmbeddedFormat) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    out.push(b'[');
    for (i, record) in batch.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_record(&mut out, topic, record, format)?;
        out.extend_from_slice(b",\"cursor\":");
        put(&mut out, &batch.cursor_after(topic, record))?;
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}

/// One record in Confluent's v2 consumer shape plus headers, left open
/// (no closing brace) so a caller can add fields such as a cursor.
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    topic: &str,
    record: &Record,
    format: EmbeddedFormat,
) -> Result<(), ApiError> {
    out.extend_from_slice(b"{\"topic\":");
    put(out, topic)?;
    out.extend_from_slice(b",\"key\":");
    put_embedded(out, record.key.as_deref(), format, record.offset, "key")?;
    out.extend_from_slice(b",\"value\":");
    put_embedded(out, record.value.as_deref(), format, record.offset, "value")?;
    out.extend_from_slice(b",\"partition\":");
    put(out, &record.partition)?;
    out.extend_from_slice(b",\"offset\":");
    put(out, &record.offset)?;
    out.extend_from_slice(b",\"timestamp\":");
    put(out, &record.timestamp_ms)?;
    out.extend_from_slice(b",\"headers\":[");
    for (j, h) in record.headers.iter().enumerate() {
        if j > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        put(out, &h.name)?;
        out.extend_from_slice(b",\"value\":");
        put(out, &BASE64.encode(&h.value))?;
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use sluice_broker::{Header, Record};

    fn batch(records: Vec<Record>) -> ReadBatch {
        ReadBatch {
            next_offset: records.last().map_or(0, |r| r.offset + 1),
            records,
            epoch: 1,
        }
    }

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
        let out = render(
            "t",
            &batch(vec![record(3, Some(b"hi"), None)]),
            EmbeddedFormat::Binary,
        )
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            json!([{"topic":"t","key":"aGk=","value":null,"partition":1,"offset":3,
                    "timestamp":42,"headers":[{"name":"h","value":"eA=="}],
                    "cursor": Cursor::at_epoch(1, [(1, 4)]).encode("t")}])
        );
    }

    #[test]
    fn json_renders_stored_text_in_order() {
        let out = render(
            "t",
            &batch(vec![record(0, None, Some(br#"{"b":1,"a":2}"#))]),
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
            &batch(vec![
                record(0, None, Some(b"{}")),
                record(7, Some(b"\xff"), None),
            ]),
            EmbeddedFormat::Json,
        )
        .unwrap_err();
        assert_eq!((err.status.as_u16(), err.error_code), (406, 40601));
        assert!(err.message.contains("offset 7"), "{err}");
    }

    #[test]
    fn empty_is_an_empty_array() {
        assert_eq!(
            render("t", &batch(vec![]), EmbeddedFormat::Json).unwrap(),
            b"[]"
        );
    }
}
