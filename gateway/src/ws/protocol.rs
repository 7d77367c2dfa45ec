//! The frames of `/v1/ws`: what clients send ([`ClientFrame`]) and what
//! the gateway sends back ([`ServerFrame`]), in one of two [`Framing`]s:
//! JSON text frames (the default) or CBOR binary frames. Both carry the
//! same fields; in JSON, keys, values and header values are base64 text,
//! in CBOR they are byte strings (a text string is read as base64, as in
//! JSON).
//!
//! Parsing never panics. A frame that cannot be read becomes a
//! [`FrameError`] that names what was wrong and carries the frame's `id`
//! (or `sub`) when one could be found, so the client can correlate it.

use std::borrow::Cow;
use std::fmt;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sluice_broker::{Acks, Header, ProduceRecord};

use crate::error::ApiError;
use crate::rest::extract::decode_base64;

/// WebSocket subprotocol that selects CBOR binary frames.
pub const SUBPROTOCOL_CBOR: &str = "sluice.v1.cbor";
/// WebSocket subprotocol that selects JSON text frames (also the default).
pub const SUBPROTOCOL_JSON: &str = "sluice.v1.json";

/// Nesting a CBOR frame may have; real frames need four levels.
const CBOR_RECURSION_LIMIT: usize = 32;

/// How a connection's frames are encoded, chosen at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// JSON text frames, bytes as base64.
    #[default]
    Json,
    /// CBOR (RFC 8949) binary frames, bytes as byte strings.
    Cbor,
}

impl Framing {
    /// The framing a subprotocol names, if it names one.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name.trim() {
            SUBPROTOCOL_CBOR => Some(Self::Cbor),
            SUBPROTOCOL_JSON => Some(Self::Json),
            _ => None,
        }
    }

    /// The framing a `framing=` query value names.
    pub fn from_query(value: &str) -> Result<Self, ApiError> {
        match value {
            "json" => Ok(Self::Json),
            "cbor" => Ok(Self::Cbor),
            other => Err(ApiError::bad_request(format!(
                "framing must be json or cbor, got {other:?}"
            ))),
        }
    }

    /// The subprotocol that names this framing.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => SUBPROTOCOL_JSON,
            Self::Cbor => SUBPROTOCOL_CBOR,
        }
    }
}

/// Bytes as a client sends them: base64 text, or (in CBOR) a byte string.
/// Base64 is decoded when the records are taken, so a bad one is a 422
/// naming its field, as in REST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Base64 text, not yet decoded.
    Base64(String),
    /// Raw bytes.
    Raw(Vec<u8>),
}

impl Payload {
    fn decode(self, path: &str) -> Result<bytes::Bytes, ApiError> {
        match self {
            Self::Base64(text) => decode_base64(&text, path),
            Self::Raw(raw) => Ok(bytes::Bytes::from(raw)),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;

        impl Visitor<'_> for PayloadVisitor {
            type Value = Payload;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string or a byte string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Payload, E> {
                Ok(Payload::Base64(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Payload, E> {
                Ok(Payload::Base64(v))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::Raw(v.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::Raw(v))
            }
        }

        deserializer.deserialize_any(PayloadVisitor)
    }
}

/// Bytes as the gateway sends them: base64 text in JSON, a byte string in
/// CBOR. Base64 is written straight into the frame, with no string between.
#[derive(Debug, Clone, Copy)]
pub enum BytesOut<'a> {
    /// Rendered as base64 text.
    Base64(&'a [u8]),
    /// Rendered as a byte string.
    Raw(&'a [u8]),
}

impl<'a> BytesOut<'a> {
    /// `bytes` as `framing` renders them.
    pub fn new(framing: Framing, bytes: &'a [u8]) -> Self {
        match framing {
            Framing::Json => Self::Base64(bytes),
            Framing::Cbor => Self::Raw(bytes),
        }
    }
}

impl Serialize for BytesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Base64(bytes) => serializer.collect_str(&Base64Display::new(bytes, &BASE64)),
            Self::Raw(bytes) => serializer.serialize_bytes(bytes),
        }
    }
}

/// A header as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a header object with name and value")]
pub struct HeaderIn {
    name: String,
    value: Option<Payload>,
}

/// Only the `type` of a JSON frame.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// The frame types a client may send, for error messages.
const CLIENT_TYPES: &str = "auth, produce, subscribe, credit, commit, unsubscribe or ping";

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Records to write; answered by an `ack` or an `error` with the same id.
    Produce(ProduceFrame),
    /// Start pushing a topic's records.
    Subscribe(SubscribeFrame),
    /// More records a subscription may push.
    Credit(CreditFrame),
    /// Stop a subscription.
    Unsubscribe(UnsubscribeFrame),
    /// Commit a group subscription's progress.
    Commit(CommitFrame),
    /// Answered by `pong`.
    Ping,
    /// Credentials, for a session opened with `?auth=frame` (see `crate::auth::ws`).
    Auth(AuthFrame),
}

/// `{"type":"auth","token":..}`: an API key or a JWT. Never printed.
#[derive(Deserialize)]
pub struct AuthFrame {
    /// The credential.
    pub token: String,
}

impl std::fmt::Debug for AuthFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthFrame { .. }")
    }
}

/// `{"type":"produce","id":..,"topic":..,"records":[..],"acks"?:..,"traceparent"?:..,"tracestate"?:..}`.
#[derive(Debug, Deserialize)]
pub struct ProduceFrame {
    /// Correlation id, echoed in the answer.
    pub id: String,
    /// Topic to write to.
    pub topic: String,
    /// Records, written in this order.
    pub records: Vec<RecordIn>,
    /// `0`, `1`, `all` or `-1`; the gateway's default when absent.
    pub acks: Option<String>,
    /// W3C trace context of the client's span: the produce joins its trace.
    pub traceparent: Option<String>,
    /// W3C trace state that goes with `traceparent`.
    pub tracestate: Option<String>,
}

/// One record of a produce frame; keys, values and header values base64.
#[derive(Debug, Deserialize)]
pub struct RecordIn {
    key: Option<Payload>,
    value: Option<Payload>,
    headers: Option<Vec<HeaderIn>>,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

/// `{"type":"subscribe","id":..,"topic":..,"from"?:..,"cursor"?:..,"credit"?:n}`.
#[derive(Debug, Deserialize)]
pub struct SubscribeFrame {
    /// The subscription's name on this connection; records carry it as `sub`.
    pub id: String,
    /// Topic to read.
    pub topic: String,
    /// `earliest` or `latest` (the default).
    pub from: Option<String>,
    /// A cursor from an earlier `record` frame: resume after that record.
    pub cursor: Option<String>,
    /// Records the gateway may push before the next grant.
    pub credit: Option<u64>,
    /// Join this consumer group: the connection reads only the partitions
    /// the group assigns it, from the group's committed offsets.
    pub group: Option<String>,
}

/// `{"type":"commit","sub":..,"id"?:..,"offsets"?:[{"topic","partition","offset"}]}`:
/// commits a group subscription's progress; without `offsets`, up to the
/// last record pushed on each partition.
#[derive(Debug, Deserialize)]
pub struct CommitFrame {
    /// The subscription's id.
    pub sub: String,
    /// Correlation id, echoed in `committed`.
    pub id: Option<String>,
    /// Offsets of the last records processed (Confluent's v2 meaning).
    pub offsets: Option<Vec<CommitOffset>>,
}

/// One explicit offset of a commit frame.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CommitOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset of the last record processed there.
    pub offset: u64,
}

/// `{"type":"credit","sub":..,"records":n}`.
#[derive(Debug, Deserialize)]
pub struct CreditFrame {
    /// The subscription's id.
    pub sub: String,
    /// Records added to its credit.
    pub records: u64,
}

/// `{"type":"unsubscribe","sub":..}`.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeFrame {
    /// The subscription's id.
    pub sub: String,
}

/// A frame that could not be read, with what correlates it.
#[derive(Debug)]
pub struct FrameError {
    /// The frame's `id`, when it had a string one.
    pub id: Option<String>,
    /// The frame's `sub`, when it had a string one.
    pub sub: Option<String>,
    /// Code and message for the client.
    pub error: ApiError,
}

/// What is left of a frame that failed to parse: enough to say why and to
/// correlate the answer.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
    id: Option<Value>,
    sub: Option<Value>,
}

impl ClientFrame {
    /// Reads one frame of the connection's framing: JSON text or CBOR.
    pub fn decode(framing: Framing, frame: &[u8]) -> Result<Self, FrameError> {
        match framing {
            Framing::Json => match std::str::from_utf8(frame) {
                Ok(text) => Self::parse(text),
                Err(e) => Err(FrameError {
                    id: None,
                    sub: None,
                    error: ApiError::bad_request(format!("a JSON frame must be UTF-8: {e}")),
                }),
            },
            Framing::Cbor => Self::parse_cbor(frame),
        }
    }

    /// Reads one CBOR binary frame.
    pub fn parse_cbor(frame: &[u8]) -> Result<Self, FrameError> {
        let cause =
            match ciborium::de::from_reader_with_recursion_limit(frame, CBOR_RECURSION_LIMIT) {
                Ok(parsed) => return Ok(parsed),
                Err(e) => e.to_string(),
            };
        let bad = |message: String| FrameError {
            id: None,
            sub: None,
            error: ApiError::bad_request(message),
        };
        let value: ciborium::Value =
            match ciborium::de::from_reader_with_recursion_limit(frame, CBOR_RECURSION_LIMIT) {
                Ok(value) => value,
                Err(e) => return Err(bad(format!("malformed CBOR: {e}"))),
            };
        // The same checks as for JSON, on the frame seen as JSON (byte
        // strings as base64), so the messages name the same paths.
        match cbor_to_json(value) {
            Ok(json) => Err(explain_value(json, &cause)),
            Err(message) => Err(bad(message)),
        }
    }

    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        // Produce frames, the bulk of the traffic, are read straight into
        // their struct: the tagged enum would first buffer the whole frame
        // into serde's generic content tree. The tag is found by a pass
        // that skips every other value without allocating.
        if let Ok(Tag {
            kind: Some(Cow::Borrowed("produce")),
        }) = serde_json::from_str::<Tag<'_>>(text)
        {
            if let Ok(frame) = serde_json::from_str(text) {
                return Ok(Self::Produce(frame));
            }
        }
        // Most frames are valid: read them without tracking paths, and
        // read again with tracking only to explain a failure.
        if let Ok(frame) = serde_json::from_str(text) {
            return Ok(frame);
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let cause = match serde_path_to_error::deserialize::<_, Self>(&mut deserializer) {
            Ok(frame) => match deserializer.end() {
                Ok(()) => return Ok(frame),
                Err(e) => e.to_string(),
            },
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path.is_empty() || path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                }
            }
        };
        Err(explain(text, &cause))
    }
}

/// Turns a parse failure into the most precise message available.
fn explain(text: &str, cause: &str) -> FrameError {
    let bad = |message: String| FrameError {
        id: None,
        sub: None,
        error: ApiError::bad_request(message),
    };
    match serde_json::from_str::<Value>(text) {
        Err(e) => bad(format!("malformed JSON: {e}")),
        Ok(value) => explain_value(value, cause),
    }
}

/// [`explain`] for a frame already read as a value.
fn explain_value(value: Value, cause: &str) -> FrameError {
    let bad = |message: String| FrameError {
        id: None,
        sub: None,
        error: ApiError::bad_request(message),
    };
    if !value.is_object() {
        return bad("a frame must be a JSON object or a CBOR map".to_owned());
    }
    let Ok(envelope) = Envelope::deserialize(&value) else {
        return bad(format!("invalid frame: {cause}"));
    };
    // Serde loses the path inside a tagged enum; reading the variant's
    // struct again finds it (`records[0].partition`).
    let cause = match envelope.kind.as_ref().and_then(Value::as_str) {
        Some("produce") => path_of::<ProduceFrame>(&value),
        Some("subscribe") => path_of::<SubscribeFrame>(&value),
        Some("credit") => path_of::<CreditFrame>(&value),
        Some("unsubscribe") => path_of::<UnsubscribeFrame>(&value),
        Some("commit") => path_of::<CommitFrame>(&value),
        _ => None,
    }
    .unwrap_or_else(|| cause.to_owned());
    let as_string = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let message = match envelope.kind {
        None => format!("the frame has no \"type\"; expected {CLIENT_TYPES}"),
        Some(Value::String(kind)) => match kind.as_str() {
            "auth" | "produce" | "subscribe" | "credit" | "commit" | "unsubscribe" | "ping" => {
                format!("invalid {kind} frame: {cause}")
            }
            _ => format!("unknown frame type {kind:?}; expected {CLIENT_TYPES}"),
        },
        Some(other) => format!("\"type\" must be a string, got {other}"),
    };
    FrameError {
        id: as_string(envelope.id),
        sub: as_string(envelope.sub),
        error: ApiError::bad_request(message),
    }
}

/// A CBOR value as JSON, byte strings as base64 text; an error names what
/// has no JSON counterpart.
fn cbor_to_json(value: ciborium::Value) -> Result<Value, String> {
    use base64::Engine as _;
    use ciborium::Value as C;
    Ok(match value {
        C::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                Value::from(s)
            } else {
                return Err(format!("integer {i} is out of range"));
            }
        }
        C::Bytes(bytes) => Value::String(BASE64.encode(bytes)),
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        C::Text(text) => Value::String(text),
        C::Bool(b) => Value::Bool(b),
        C::Null => Value::Null,
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(items) => Value::Array(
            items
                .into_iter()
                .map(cbor_to_json)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries {
                let C::Text(key) = key else {
                    return Err("map keys must be text strings".to_owned());
                };
                map.insert(key, cbor_to_json(value)?);
            }
            Value::Object(map)
        }
        _ => return Err("unsupported CBOR value".to_owned()),
    })
}

/// The error of reading `value` as a `T`, led by the path to the field.
fn path_of<T: serde::de::DeserializeOwned>(value: &Value) -> Option<String> {
    let error = serde_path_to_error::deserialize::<_, T>(value).err()?;
    let path = error.path().to_string();
    let inner = error.into_inner();
    Some(if path.is_empty() || path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    })
}

impl ProduceFrame {
    /// The acks level asked for, or `default`.
    pub fn acks(&self, default: Acks) -> Result<Acks, ApiError> {
        match &self.acks {
            None => Ok(default),
            Some(text) => Acks::parse(text).ok_or_else(|| {
                ApiError::bad_request(format!("acks must be 0, 1, all or -1, got {text:?}"))
            }),
        }
    }

    /// Checks the records and turns them into records for the cluster,
    /// with REST's rules and codes (422 naming the field).
    pub fn take_records(&mut self) -> Result<Vec<ProduceRecord>, ApiError> {
        if self.records.is_empty() {
            return Err(ApiError::unprocessable("records: must not be empty"));
        }
        std::mem::take(&mut self.records)
            .into_iter()
            .enumerate()
            .map(|(i, record)| record.into_record(i))
            .collect()
    }
}

impl RecordIn {
    fn into_record(self, i: usize) -> Result<ProduceRecord, ApiError> {
        if let Some(ts) = self.timestamp {
            if ts < 0 {
                return Err(ApiError::unprocessable(format!(
                    "records[{i}].timestamp: must be milliseconds since the epoch, got {ts}"
                )));
            }
        }
        let bytes = |payload: Option<Payload>, field: &str| {
            payload
                .map(|p| p.decode(&format!("records[{i}].{field}")))
                .transpose()
        };
        Ok(ProduceRecord {
            partition: self.partition,
            key: bytes(self.key, "key")?,
            value: bytes(self.value, "value")?,
            headers: self
                .headers
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(j, h)| {
                    let value = match h.value {
                        Some(value) => value.decode(&format!("records[{i}].headers[{j}].value"))?,
                        None => bytes::Bytes::new(),
                    };
                    Ok(Header {
                        name: h.name.into(),
                        value,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            timestamp_ms: self.timestamp,
        })
    }
}

/// A frame from the gateway.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    /// A produce was written.
    Ack {
        /// The produce's id.
        id: &'a str,
        /// One per record, in the produce's order.
        offsets: Vec<AckOffset>,
    },
    /// Something failed; `id` or `sub` says what it answers.
    Error {
        /// The id of the frame that failed, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The subscription concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        /// Confluent-style code, as the REST routes give.
        error_code: u32,
        /// What went wrong.
        message: &'a str,
    },
    /// A subscription started.
    Subscribed {
        /// The subscribe frame's id.
        id: &'a str,
        /// The topic's partition count.
        partitions: u32,
    },
    /// A subscription stopped at the client's request.
    Unsubscribed {
        /// The subscription's id.
        sub: &'a str,
    },
    /// A pushed record.
    Record(RecordFrame<'a>),
    /// Answer to `ping`.
    Pong,
    /// Answer to a good `auth` frame.
    Authenticated {
        /// Who the session now is.
        principal: &'a str,
    },
    /// The session is over a quota: the gateway stops reading for this long.
    Throttle {
        /// How long, in milliseconds.
        throttle_time_ms: u64,
    },
    /// A group subscription's partitions, sent when they change.
    Assigned {
        /// The subscription's id.
        sub: &'a str,
        /// The partitions this connection now reads.
        partitions: Vec<AssignedPartition>,
    },
    /// A commit was stored.
    Committed {
        /// The subscription's id.
        sub: &'a str,
        /// The commit frame's id, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

/// A topic partition in an `assigned` frame.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub struct AssignedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

/// A frame ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A JSON text frame.
    Text(String),
    /// A CBOR binary frame.
    Binary(Vec<u8>),
}

/// Where one produced record went.
#[derive(Debug, Serialize)]
pub struct AckOffset {
    /// Partition chosen.
    pub partition: u32,
    /// Offset assigned; `null` with `acks` `0`.
    pub offset: Option<u64>,
    /// Cursor to read from just after this record (this partition only);
    /// `null` when the offset is unknown (acks `0`).
    pub cursor: Option<String>,
}

/// One pushed record, keys and values base64 as in the REST reads.
#[derive(Debug, Serialize)]
pub struct RecordFrame<'a> {
    /// The subscription's id.
    pub sub: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset on the cluster holding the record's epoch.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Key, or `null`.
    pub key: Option<BytesOut<'a>>,
    /// Value, or `null`.
    pub value: Option<BytesOut<'a>>,
    /// Headers with base64 values.
    pub headers: Vec<HeaderOut<'a>>,
    /// Resume point after this record, on every partition.
    pub cursor: String,
}

/// A record header.
#[derive(Debug, Serialize)]
pub struct HeaderOut<'a> {
    /// Header name.
    pub name: &'a str,
    /// Value.
    pub value: BytesOut<'a>,
}

impl<'a> ServerFrame<'a> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Only maps with non-string keys fail to serialize, and these frames
        // have none; the fallback keeps the protocol's shape anyway.
        serde_json::to_string(self).unwrap_or_else(|e| {
            let error = ApiError::internal(&e);
            format!(
                r#"{{"type":"error","error_code":{},"message":"{}"}}"#,
                error.error_code, error.message
            )
        })
    }

    /// The frame as CBOR bytes.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        // Writing into a Vec fails only for maps with non-text keys, which
        // these frames lack; the fallback keeps the protocol's shape anyway.
        if let Err(e) = ciborium::ser::into_writer(self, &mut bytes) {
            bytes.clear();
            let error = ApiError::internal(&e);
            let frame = ServerFrame::error(None, None, &error);
            let _ = ciborium::ser::into_writer(&frame, &mut bytes);
        }
        bytes
    }

    /// The frame in `framing`.
    pub fn encode(&self, framing: Framing) -> Encoded {
        match framing {
            Framing::Json => Encoded::Text(self.to_text()),
            Framing::Cbor => Encoded::Binary(self.to_cbor()),
        }
    }

    /// An error frame for `error`, correlated by `id` and/or `sub`.
    pub fn error(id: Option<&'a str>, sub: Option<&'a str>, error: &'a ApiError) -> Self {
        Self::Error {
            id,
            sub,
            error_code: error.error_code,
            message: &error.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> FrameError {
        match ClientFrame::parse(text) {
            Err(e) => e,
            Ok(frame) => panic!("{text} parsed as {frame:?}"),
        }
    }

    #[test]
    fn reads_every_frame_type() {
        let frame = ClientFrame::parse(
            r#"{"type":"produce","id":"c1","topic":"t","acks":"1",
                "records":[{"key":"aw==","value":"dg==","partition":2,"timestamp":5,
                            "headers":[{"name":"h","value":"eA=="}]},{}]}"#,
        )
        .unwrap();
        let ClientFrame::Produce(mut produce) = frame else {
            panic!("not a produce")
        };
        assert_eq!(produce.acks(Acks::All).unwrap(), Acks::Leader);
        let records = produce.take_records().unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            (records[0].partition, records[0].timestamp_ms),
            (Some(2), Some(5))
        );
        assert_eq!(records[0].headers[0].value.as_ref(), b"x");
        assert_eq!(
            (records[1].key.clone(), records[1].value.clone()),
            (None, None)
        );

        assert!(matches!(
            ClientFrame::parse(
                r#"{"type":"subscribe","id":"s","topic":"t","from":"earliest","credit":5}"#
            ),
            Ok(ClientFrame::Subscribe(SubscribeFrame {
                credit: Some(5),
                ..
            }))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"credit","sub":"s","records":3}"#),
            Ok(ClientFrame::Credit(CreditFrame { records: 3, .. }))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"unsubscribe","sub":"s"}"#),
            Ok(ClientFrame::Unsubscribe(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        ));
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let cases = [
            ("{", "malformed JSON"),
            ("[1]", "a frame must be a JSON object or a CBOR map"),
            (r#"{"id":"x"}"#, "the frame has no \"type\""),
            (r#"{"type":7}"#, "\"type\" must be a string"),
            (r#"{"type":"fetch"}"#, "unknown frame type \"fetch\""),
            (
                r#"{"type":"produce","id":"c9","topic":"t"}"#,
                "invalid produce frame",
            ),
            (
                r#"{"type":"credit","sub":"s","records":-1}"#,
                "invalid credit frame",
            ),
            (r#"{"type":"ping"} x"#, "malformed JSON"),
        ];
        for (text, expected) in cases {
            let e = error_of(text);
            assert_eq!(e.error.error_code, 400, "{text}");
            assert!(
                e.error.message.starts_with(expected),
                "{text}: {}",
                e.error.message
            );
        }
        assert_eq!(
            error_of(r#"{"type":"produce","id":"c9"}"#).id.as_deref(),
            Some("c9")
        );
        assert_eq!(
            error_of(r#"{"type":"credit","sub":"s1"}"#).sub.as_deref(),
            Some("s1")
        );
        let e =
            error_of(r#"{"type":"produce","id":"c","topic":"t","records":[{"partition":"x"}]}"#);
        assert!(
            e.error.message.contains("records[0].partition"),
            "{}",
            e.error.message
        );
    }

    #[test]
    fn bad_record_values_are_422_like_rest() {
        let frame = |json: &str| match ClientFrame::parse(json).unwrap() {
            ClientFrame::Produce(mut p) => p.take_records().unwrap_err(),
            other => panic!("{other:?}"),
        };
        let e = frame(r#"{"type":"produce","id":"c","topic":"t","records":[]}"#);
        assert_eq!(
            (e.error_code, e.message.as_str()),
            (422, "records: must not be empty")
        );
        let e = frame(r#"{"type":"produce","id":"c","topic":"t","records":[{"value":"!"}]}"#);
        assert!(
            e.message.starts_with("records[0].value: invalid base64"),
            "{e}"
        );
        let e = frame(r#"{"type":"produce","id":"c","topic":"t","records":[{"timestamp":-3}]}"#);
        assert!(e.message.starts_with("records[0].timestamp"), "{e}");
    }

    #[test]
    fn server_frames_render_as_documented() {
        let error = ApiError::bad_request("nope");
        assert_eq!(
            ServerFrame::error(Some("c1"), None, &error).to_text(),
            r#"{"type":"error","id":"c1","error_code":400,"message":"nope"}"#
        );
        assert_eq!(ServerFrame::Pong.to_text(), r#"{"type":"pong"}"#);
        let ack = ServerFrame::Ack {
            id: "c1",
            offsets: vec![AckOffset {
                partition: 0,
                offset: Some(3),
                cursor: Some("x".into()),
            }],
        };
        assert_eq!(
            ack.to_text(),
            r#"{"type":"ack","id":"c1","offsets":[{"partition":0,"offset":3,"cursor":"x"}]}"#
        );
    }
}
