//! W3C Trace Context: `traceparent` read from HTTP headers, WebSocket
//! frames and record headers, and written into produced records.
//!
//! Parsing and formatting work on bytes without allocating, because both
//! run per record on the delivery path and the produce path.

use std::borrow::Cow;
use std::str::FromStr;

use axum::http::HeaderMap;
use bytes::Bytes;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use sluice_broker::{Header, ProduceRecord};

/// Header (HTTP and Kafka record) carrying the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
pub const TRACEPARENT_LEN: usize = 55;

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn parse_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

/// Reads a `traceparent` value as a remote span context; `None` for
/// anything the W3C rules say to ignore (bad length, upper-case or
/// non-hex digits, version `ff`, all-zero ids). A version above `00` is
/// read by its first four fields, as the spec asks.
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let value = value.trim_ascii();
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = parse_hex::<1>(&value[0..2])?[0];
    if version == 0xff || (version == 0 && value.len() != TRACEPARENT_LEN) {
        return None;
    }
    if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(parse_hex::<16>(&value[3..35])?);
    let span_id = SpanId::from_bytes(parse_hex::<8>(&value[36..52])?);
    let flags = parse_hex::<1>(&value[53..55])?[0];
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::NONE,
    ))
}

/// `traceparent` for a span context, version 00, on the stack.
pub fn format_traceparent(context: &SpanContext) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    put_hex(&mut out[3..35], &context.trace_id().to_bytes());
    put_hex(&mut out[36..52], &context.span_id().to_bytes());
    put_hex(&mut out[53..55], &[context.trace_flags().to_u8()]);
    out
}

/// Writes `bytes` as lowercase hex into the start of `out` (two digits a
/// byte; `out` must have room).
pub(crate) fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// The parent a client gave: a `traceparent` (and `tracestate`) in text,
/// as in HTTP headers and WebSocket frames. An empty context (a new trace
/// starts) when absent or invalid.
pub fn context_from(traceparent: Option<&[u8]>, tracestate: Option<&str>) -> Context {
    let Some(parent) = traceparent.and_then(parse_traceparent) else {
        return Context::new();
    };
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let parent = SpanContext::new(
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags(),
        true,
        state,
    );
    Context::new().with_remote_span_context(parent)
}

/// The parent named by an HTTP request's headers. Several `traceparent`
/// headers are ambiguous, so they are ignored, as the spec says.
pub fn context_from_headers(headers: &HeaderMap) -> Context {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let (Some(traceparent), None) = (values.next(), values.next()) else {
        return Context::new();
    };
    let tracestate = headers.get(TRACESTATE).and_then(|v| v.to_str().ok());
    context_from(Some(traceparent.as_bytes()), tracestate)
}

/// The producer's span context a record carries in its `traceparent`
/// header, if any (the first one, as Kafka clients read it).
pub fn record_parent(headers: &[Header]) -> Option<SpanContext> {
    headers
        .iter()
        .find(|h| h.name == TRACEPARENT)
        .and_then(|h| parse_traceparent(&h.value))
}

/// Writes `context` as `traceparent` (and `tracestate` when it has one)
/// into every record that carries no `traceparent` yet, so consumers
/// outside Sluice continue the trace. The header value is built once and
/// shared by every record.
pub fn inject(records: &mut [ProduceRecord], context: &SpanContext) {
    let traceparent = Bytes::copy_from_slice(&format_traceparent(context));
    let state = context.trace_state().header();
    let tracestate = (!state.is_empty()).then(|| Bytes::from(state));
    for record in records {
        if record.headers.iter().any(|h| h.name == TRACEPARENT) {
            continue;
        }
        // Names are borrowed and the value shared: a header list of the
        // right size is the only allocation per record.
        record
            .headers
            .reserve_exact(1 + usize::from(tracestate.is_some()));
        record.headers.push(Header {
            name: Cow::Borrowed(TRACEPARENT),
            value: traceparent.clone(),
        });
        if let Some(tracestate) = &tracestate {
            if !record.headers.iter().any(|h| h.name == TRACESTATE) {
                record.headers.push(Header {
                    name: Cow::Borrowed(TRACESTATE),
                    value: tracestate.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_spec_example() {
        let context = parse_traceparent(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(&format_traceparent(&context)[..], EXAMPLE.as_bytes());
        let unsampled = EXAMPLE.replace("-01", "-00");
        let context = parse_traceparent(unsampled.as_bytes()).unwrap();
        assert!(!context.is_sampled());
        assert_eq!(&format_traceparent(&context)[..], unsampled.as_bytes());
    }

    #[test]
    fn ignores_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad:?}");
        }
        // A later version is read by its first fields.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(parse_traceparent(later.as_bytes()).is_some());
        // Surrounding blanks are tolerated.
        assert!(parse_traceparent(format!(" {EXAMPLE} ").as_bytes()).is_some());
    }

    #[test]
    fn parses_any_bytes_without_panicking() {
        // Every prefix and a sweep of single-byte corruptions.
        for len in 0..=EXAMPLE.len() {
            let _ = parse_traceparent(&EXAMPLE.as_bytes()[..len]);
        }
        for i in 0..EXAMPLE.len() {
            for b in [0u8, b'-', b'z', 0xff, b'F'] {
                let mut bytes = EXAMPLE.as_bytes().to_vec();
                bytes[i] = b;
                let _ = parse_traceparent(&bytes);
            }
        }
    }

    #[test]
    fn headers_give_the_parent_and_duplicates_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, EXAMPLE.parse().unwrap());
        headers.insert(TRACESTATE, "vendor=x".parse().unwrap());
        let context = context_from_headers(&headers);
        let span = context.span();
        assert_eq!(
            span.span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
        assert_eq!(span.span_context().trace_state().get("vendor"), Some("x"));
        headers.append(TRACEPARENT, EXAMPLE.parse().unwrap());
        assert!(!context_from_headers(&headers).has_active_span());
    }

    #[test]
    fn inject_skips_records_that_carry_a_traceparent() {
        let context = parse_traceparent(EXAMPLE.as_bytes()).unwrap();
        let own = Header {
            name: TRACEPARENT.into(),
            value: Bytes::from_static(b"00-11111111111111111111111111111111-2222222222222222-01"),
        };
        let mut records = vec![
            ProduceRecord::default(),
            ProduceRecord {
                headers: vec![own.clone()],
                ..Default::default()
            },
        ];
        inject(&mut records, &context);
        assert_eq!(records[0].headers.len(), 1);
        assert_eq!(records[0].headers[0].value.as_ref(), EXAMPLE.as_bytes());
        assert_eq!(records[1].headers, vec![own]);
        assert_eq!(
            record_parent(&records[0].headers).map(|c| c.span_id()),
            Some(context.span_id())
        );
    }
}
