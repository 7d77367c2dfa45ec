//! Log lines through `tracing`: human-readable text by default, one JSON
//! object per line with `[log] format = "json"`.
//!
//! Inside a request, every line carries the request's `trace_id` and
//! `span_id` (those of its server span, or the client's trace id when the
//! request is not traced): in text as the `request{...}` span prefix, in
//! JSON as top-level `trace_id` and `span_id` fields, so a log pipeline
//! can join lines to traces without parsing nested objects.

use std::fmt;
use std::io::IsTerminal as _;

use opentelemetry::trace::{SpanId, TraceId};
use serde_json::{Map, Value};
use sluice_config::{LogConfig, LogFormat};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Span field naming the trace.
pub const TRACE_ID_FIELD: &str = "trace_id";
/// Span field naming the span.
pub const SPAN_ID_FIELD: &str = "span_id";

/// Installs the process's log subscriber, writing to stderr. `RUST_LOG`
/// overrides `level`.
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let registry = tracing_subscriber::registry().with(filter);
    match config.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(TextFields)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(TraceIdsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(NoFields)
                    .event_format(JsonLines)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// A trace or span id as lowercase hex, encoded once: the `request` log
/// span of every request carries two, and through `{:x}` they cost more
/// than the rest of the span's fields.
pub struct HexId {
    text: [u8; 32],
    len: usize,
}

impl HexId {
    fn new(bytes: &[u8]) -> Self {
        let mut text = [0u8; 32];
        super::propagation::put_hex(&mut text, bytes);
        Self {
            text,
            len: 2 * bytes.len().min(16),
        }
    }

    /// The 32 digits of a trace id.
    pub fn trace(id: TraceId) -> Self {
        Self::new(&id.to_bytes())
    }

    /// The 16 digits of a span id.
    pub fn span(id: SpanId) -> Self {
        Self::new(&id.to_bytes())
    }

    fn as_str(&self) -> &str {
        // Hex digits only.
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

impl fmt::Display for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields of text lines as tracing-subscriber's default writes them
/// without colour (`name=value`, strings quoted, the message bare), but
/// with strings written straight through: the fmt layer formats every
/// span's fields when the span starts, so the `request` span of every
/// request pays this, whether or not a line is ever logged inside it.
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one line's or one span's fields for [`TextFields`].
pub struct TextVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message).
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.result = if field.name() == "message" {
            self.writer.write_str(value)
        } else if plain {
            // What `{:?}` writes for such a string.
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        self.result = write!(self.writer, "{}", crate::error::WithSources(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Span fields left unformatted: [`JsonLines`] writes events itself and
/// takes the trace ids from [`TraceIdsLayer`], so the fmt layer's copy of
/// each span's fields would be made for nothing.
pub struct NoFields;

impl<'a> MakeVisitor<Writer<'a>> for NoFields {
    type Visitor = NoVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        NoVisitor(writer)
    }
}

/// The visitor of [`NoFields`]: writes nothing.
pub struct NoVisitor<'a>(Writer<'a>);

impl Visit for NoVisitor<'_> {
    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

impl VisitOutput<fmt::Result> for NoVisitor<'_> {
    fn finish(self) -> fmt::Result {
        Ok(())
    }
}

impl VisitFmt for NoVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.0
    }
}

/// The trace ids a span was given, kept in its extensions.
#[derive(Debug, Default, Clone)]
struct TraceIds {
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl Visit for TraceIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            TRACE_ID_FIELD => self.trace_id = Some(value.to_owned()),
            SPAN_ID_FIELD => self.span_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), TRACE_ID_FIELD | SPAN_ID_FIELD) {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

/// Keeps the `trace_id` and `span_id` fields of spans where the JSON
/// formatter finds them.
pub struct TraceIdsLayer;

impl<S> Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let has_ids = attrs
            .metadata()
            .fields()
            .iter()
            .any(|f| matches!(f.name(), TRACE_ID_FIELD | SPAN_ID_FIELD));
        if !has_ids {
            return;
        }
        let mut ids = TraceIds::default();
        attrs.record(&mut ids);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(ids) = extensions.get_mut::<TraceIds>() {
                values.record(ids);
            }
        }
    }
}

/// Event fields as JSON values.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`
/// and the event's fields, `span` (the innermost span's name), and the
/// `trace_id`/`span_id` of the innermost span that has them.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        event.record(&mut JsonFields(&mut line));
        if let Some(scope) = ctx.event_scope() {
            let mut named = false;
            for span in scope {
                if !named {
                    line.insert("span".into(), span.name().into());
                    named = true;
                }
                if let Some(ids) = span.extensions().get::<TraceIds>() {
                    if let Some(trace_id) = &ids.trace_id {
                        line.insert(TRACE_ID_FIELD.into(), trace_id.clone().into());
                    }
                    if let Some(span_id) = &ids.span_id {
                        line.insert(SPAN_ID_FIELD.into(), span_id.clone().into());
                    }
                    break;
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines of `events` through a text layer with `fields`, no time, no colour.
    fn text_lines<N>(fields: N, events: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(fields)
                .with_ansi(false)
                .without_time()
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, events);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text
    }

    fn request_events() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        tracing::info!("outside");
        let request = tracing::info_span!(
            "request",
            http.request.method = "POST",
            http.route = "/topics/{topic}",
            trace_id = %HexId::trace(trace),
            span_id = %HexId::span(span),
        );
        let _entered = request.enter();
        tracing::warn!(
            messaging.destination.name = "orders",
            odd = "say \"hi\"\n",
            n = 3u64,
            ok = true,
            shown = %"display",
            debugged = ?Some(1),
            "inside {}",
            "a request"
        );
    }

    #[test]
    fn text_lines_read_as_the_default_ones_with_the_trace_ids() {
        let ours = text_lines(TextFields, request_events);
        let default = text_lines(
            tracing_subscriber::fmt::format::DefaultFields::new(),
            request_events,
        );
        assert_eq!(ours, default);
        let inside = ours.lines().nth(1).unwrap();
        assert!(
            inside.contains(r#"request{http.request.method="POST" http.route="/topics/{topic}" trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7}"#),
            "{inside}"
        );
        assert!(inside.contains("inside a request"), "{inside}");
    }

    #[test]
    fn text_lines_give_an_error_with_its_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cannot reach the cluster")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("connection refused"));
        let text = text_lines(TextFields, || {
            tracing::warn!(error = &error as &dyn std::error::Error, "failed");
        });
        assert!(
            text.contains("failed error=cannot reach the cluster: connection refused"),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_request_trace_ids() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(TraceIdsLayer).with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(NoFields)
                .event_format(JsonLines)
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!(
                "request",
                http.route = "/topics/{topic}",
                trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = %"00f067aa0ba902b7",
            );
            let _entered = span.enter();
            tracing::warn!(messaging.destination.name = "orders", "inside");
            let inner = tracing::debug_span!("inner");
            let _inner = inner.enter();
            tracing::info!(n = 3, "nested");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none());
        for line in &lines[1..] {
            assert_eq!(
                line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
                "{line}"
            );
            assert_eq!(line["span_id"], "00f067aa0ba902b7", "{line}");
        }
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["messaging.destination.name"], "orders");
        assert_eq!(lines[1]["span"], "request");
        assert_eq!(lines[2]["n"], 3);
        assert_eq!(lines[2]["span"], "inner");
    }
}
