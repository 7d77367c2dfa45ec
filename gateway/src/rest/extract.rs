//! Request parts read the way the REST routes need them: every failure is an
//! [`ApiError`] in Confluent's shape, never axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::error::Category;
use sluice_broker::{Acks, BrokerError};

use crate::app::AppState;
use crate::error::ApiError;

/// Base64 as Confluent writes it (standard alphabet); padding is optional
/// on input because some clients strip it.
pub const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 found at `path` in the body, naming the path on failure.
pub fn decode_base64(text: &str, path: &str) -> Result<Bytes, ApiError> {
    decode_base64_at(text, || path.to_owned())
}

/// [`decode_base64`] that builds the path only when it is needed.
pub fn decode_base64_at(text: &str, path: impl FnOnce() -> String) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    decode_base64_into(text, &mut out, path)?;
    Ok(Bytes::from(out))
}

/// Decodes base64 `text` onto the end of `out`.
///
/// The SIMD decoder takes the common shapes (canonical padding, or none);
/// whatever it refuses goes through [`BASE64_IN`], which decides what is
/// accepted and words the error.
pub fn decode_base64_into(
    text: &str,
    out: &mut Vec<u8>,
    path: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let simd = if text.len() % 4 == 0 {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    };
    let start = out.len();
    if simd.decode_append(text, out).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    BASE64_IN
        .decode_vec(text, out)
        .map_err(|e| ApiError::unprocessable(format!("{}: invalid base64: {e}", path())))
}

/// Path parameters, percent-decoded. Non-UTF-8 parameters are a 400.
#[derive(Debug)]
pub struct PathParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::RawPathParamsRejection as R;
        match RawPathParams::from_request_parts(parts, state).await {
            Ok(raw) => Ok(Self(
                raw.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )),
            Err(R::InvalidUtf8InPathParam(e)) => Err(ApiError::bad_request(format!(
                "path is not UTF-8 once percent-decoded: {}",
                e.body_text()
            ))),
            Err(e) => Err(ApiError::internal(&e.body_text())),
        }
    }
}

impl PathParams {
    /// A parameter the route declares; its absence is a routing bug.
    pub fn get(&self, name: &str) -> Result<&str, ApiError> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::internal(&format!("route has no {{{name}}} parameter")))
    }

    /// `{topic}`, checked against Kafka's naming rule.
    pub fn topic(&self) -> Result<&str, ApiError> {
        let topic = self.get("topic")?;
        if sluice_config::is_valid_topic_name(topic) {
            Ok(topic)
        } else {
            Err(BrokerError::InvalidTopicName(topic.to_owned()).into())
        }
    }

    /// `{partition}`, a partition number.
    pub fn partition(&self) -> Result<u32, ApiError> {
        let text = self.get("partition")?;
        text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "path parameter partition must be a partition number, got {text:?}"
            ))
        })
    }

    /// `{cluster_id}`, which must be the gateway's own id.
    pub fn cluster_id(&self, state: &AppState) -> Result<(), ApiError> {
        let id = self.get("cluster_id")?;
        if id == state.config.gateway.cluster_id {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("Cluster {id} not found")))
        }
    }
}

/// Query parameters, percent-decoded; a repeated name keeps its last value.
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_none() {
            return Ok(Self::default());
        }
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Self(pairs))
            .map_err(|e| {
                ApiError::bad_request(format!("malformed query string: {}", e.body_text()))
            })
    }
}

impl QueryParams {
    /// The value of a parameter, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {name} must be a non-negative integer, got {text:?}"
                    ))
                })
            })
            .transpose()
    }

    /// `acks`, falling back to the configured default.
    pub fn acks(&self, default: Acks) -> Result<Acks, ApiError> {
        match self.get("acks") {
            None => Ok(default),
            Some(text) => Acks::parse(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter acks must be 0, 1, all or -1, got {text:?}"
                ))
            }),
        }
    }
}

/// Reads the whole body, within the router's `DefaultBodyLimit`.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!(
                "request body is larger than the limit of {limit} bytes"
            ))
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                e.body_text()
            ))
        }
    })
}

/// Parses a JSON object body: bad syntax is a 400 with serde_json's line
/// and column, the wrong shape a 422 naming the path to the offending field.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    // Most bodies are valid: read them without tracking paths, and read
    // again with tracking only to explain a failure. (serde would accept
    // a struct written as an array; bodies here are objects.)
    // The body's UTF-8 is checked once, in one pass, rather than string
    // by string as `from_slice` does.
    if bytes.trim_ascii_start().first() == Some(&b'{') {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Ok(value) = serde_json::from_str(text) {
                return Ok(value);
            }
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| {
            let path = e.path().to_string();
            json_error(&path, e.into_inner())
        })
        .and_then(|value| {
            deserializer.end().map_err(|e| json_error(".", e))?;
            Ok(value)
        });
    // serde lets a struct be written as an array of its fields; every body
    // here is an object, and saying so beats "invalid length 0".
    let is_object = bytes.trim_ascii_start().first() == Some(&b'{');
    match result {
        Err(e) if e.error_code == 422 && !is_object => {
            Err(ApiError::unprocessable("the body must be a JSON object"))
        }
        Ok(_) if !is_object => Err(ApiError::unprocessable("the body must be a JSON object")),
        other => other,
    }
}

fn json_error(path: &str, error: serde_json::Error) -> ApiError {
    match error.classify() {
        Category::Data => {
            if path == "." {
                ApiError::unprocessable(error.to_string())
            } else {
                ApiError::unprocessable(format!("{path}: {error}"))
            }
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request(format!("malformed JSON: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // fields exist to give the parser a shape
    struct Body {
        records: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        partition: Option<u32>,
    }

    #[test]
    fn syntax_errors_are_400_with_position() {
        let err = parse_json::<Body>(b"{\"records\": [").unwrap_err();
        assert_eq!(err.error_code, 400);
        assert!(err.message.contains("line 1 column"), "{err}");
        let err = parse_json::<Body>(b"{\"records\": []} x").unwrap_err();
        assert_eq!(err.error_code, 400, "{err}");
    }

    #[test]
    fn shape_errors_are_422_with_path() {
        let err = parse_json::<Body>(br#"{"records":[{},{},{"partition":"x"}]}"#).unwrap_err();
        assert_eq!(err.error_code, 422);
        assert!(
            err.message
                .starts_with("records[2].partition: invalid type"),
            "{err}"
        );
        for body in [&b"[]"[..], b"[[]]", b" null", b"1"] {
            let err = parse_json::<Body>(body).unwrap_err();
            assert_eq!(err.message, "the body must be a JSON object");
        }
    }

    #[test]
    fn the_simd_decoder_accepts_nothing_the_reference_decoder_refuses() {
        let fixed = [
            "",
            "=",
            "==",
            "a",
            "aQ",
            "aQ=",
            "aQ==",
            "aQ===",
            "aGk",
            "aGk=",
            "aGl=",
            "aGk==",
            "aR==",
            "aGk=aGk=",
            "a===",
            "aGVsbG8gd29ybGQ",
            "aGVsbG8gd29ybGQ=",
            "aGVs bG8=",
            "aGVs\nbG8=",
            "-_-_",
            "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=",
        ];
        // Seeded strings over an alphabet with padding and trailing-bit
        // traps, at every length up to 40 (past one SIMD block of 32).
        let alphabet = b"AQgw/+=aZ9 ";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = Vec::new();
        for len in 0..=40 {
            for _ in 0..300 {
                let text: String = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        alphabet[(state % alphabet.len() as u64) as usize] as char
                    })
                    .collect();
                random.push(text);
            }
        }
        let mut accepted = 0;
        for text in fixed.iter().map(|s| s.to_string()).chain(random) {
            let reference = BASE64_IN.decode(&text).ok();
            let mut out = vec![7u8];
            let ours = decode_base64_into(&text, &mut out, || "v".to_owned()).map(|()| out);
            match (&reference, ours) {
                (Some(bytes), Ok(out)) => {
                    assert_eq!(&out[1..], &bytes[..], "{text:?}");
                    assert_eq!(out[0], 7, "{text:?}: what was in the buffer stays");
                    accepted += 1;
                }
                (None, Err(e)) => assert!(e.message.starts_with("v: invalid base64"), "{text:?}"),
                (reference, ours) => panic!("{text:?}: reference {reference:?}, ours {ours:?}"),
            }
        }
        assert!(accepted > 300, "{accepted}");
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_with_where() {
        #[derive(Debug, Deserialize)]
        struct Body<'a> {
            #[allow(dead_code)]
            name: &'a str,
        }
        let err = parse_json::<Body<'_>>(b"{\"name\":\"a\xffb\"}").unwrap_err();
        assert_eq!(err.error_code, 400, "{err:?}");
        assert!(err.message.contains("column 11"), "{}", err.message);
        let body: Body<'_> = parse_json("{\"name\":\"été\"}".as_bytes()).unwrap();
        assert_eq!(body.name, "été");
    }

    #[test]
    fn base64_errors_name_the_field() {
        assert_eq!(
            decode_base64("aGk=", "v").unwrap(),
            Bytes::from_static(b"hi")
        );
        assert_eq!(
            decode_base64("aGk", "v").unwrap(),
            Bytes::from_static(b"hi")
        );
        let err = decode_base64("!!", "records[0].value").unwrap_err();
        assert_eq!(err.error_code, 422);
        assert!(
            err.message.starts_with("records[0].value: invalid base64"),
            "{err}"
        );
    }
}
