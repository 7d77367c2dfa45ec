//! The span export queue: a span is encoded as OTLP protobuf when it ends,
//! on the thread that ended it, and its bytes go into a bounded queue
//! without waiting; one task posts them in batches to the collector.
//!
//! Encoding at the end, where the span's data is still in that core's
//! cache, and freeing it there, spares handing the span record (a few
//! hundred bytes and a dozen heap blocks) to another thread to be read and
//! freed: the queue holds only compact bytes, and its buffers are reused.
//!
//! The posting task runs on a thread of its own (`sluice-span-export`, with
//! a single-threaded runtime), not on the gateway's workers: posting a
//! batch never holds up the requests queued behind it on a worker.
//!
//! A full queue (a slow or absent collector) drops the new span and counts
//! it in `sluice_trace_spans_dropped_total{reason="queue_full"}`: a request
//! never waits for telemetry. Failed and timed-out exports are dropped and
//! counted the same way, and logged once per outage, not once per batch.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::sync::{mpsc, oneshot, Notify};

use super::metrics::{LABEL_REASON, TRACE_SPANS_DROPPED_TOTAL, TRACE_SPANS_EXPORTED_TOTAL};
use super::otlp::{self, OtlpHttpExporter};

/// How long a flush on shutdown may take.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// Spans queued at most.
    pub max_queue: usize,
    /// Spans per export at most.
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent.
    pub interval: Duration,
    /// Longest one export may take.
    pub timeout: Duration,
}

/// The encoded spans of one instrumentation scope.
#[derive(Debug)]
struct ScopeSpans {
    scope: InstrumentationScope,
    /// `ScopeSpans.spans` fields, one after another.
    bytes: Vec<u8>,
    /// Where each span's field ends in `bytes`.
    ends: Vec<usize>,
}

/// The spans waiting for export.
#[derive(Debug, Default)]
struct Pending {
    scopes: Vec<ScopeSpans>,
    spans: usize,
}

impl Pending {
    /// Empties the queue, keeping its buffers for reuse.
    fn clear(&mut self) {
        for scope in &mut self.scopes {
            scope.bytes.clear();
            scope.ends.clear();
        }
        self.spans = 0;
    }
}

/// Ending a span only appends here: the export task is woken when a full
/// batch is waiting (or by its timer), not once per span, so a traced
/// request costs no extra thread wake-up.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    full_batch: Notify,
    /// Ends the export task.
    stop: Notify,
    settings: QueueSettings,
}

impl Shared {
    /// Queues one encoded `Span` message of `scope`, or drops and counts
    /// it if the queue is full; wakes the export task when a batch is full.
    fn enqueue(&self, scope: &InstrumentationScope, body: &[u8]) {
        let queued = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.spans >= self.settings.max_queue {
                None
            } else {
                let at = match pending
                    .scopes
                    .iter()
                    .position(|s| same_scope(&s.scope, scope))
                {
                    Some(at) => at,
                    None => {
                        pending.scopes.push(ScopeSpans {
                            scope: scope.clone(),
                            bytes: Vec::new(),
                            ends: Vec::new(),
                        });
                        pending.scopes.len() - 1
                    }
                };
                let scope = &mut pending.scopes[at];
                otlp::put_framed_span(&mut scope.bytes, body);
                let end = scope.bytes.len();
                scope.ends.push(end);
                pending.spans += 1;
                Some(pending.spans)
            }
        };
        match queued {
            None => {
                metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, LABEL_REASON => "queue_full")
                    .increment(1);
            }
            Some(n) if n == self.settings.max_batch => self.full_batch.notify_one(),
            Some(_) => {}
        }
    }

    /// Swaps the queue with `spare` (emptied, its buffers kept).
    fn take(&self, spare: &mut Pending) {
        spare.clear();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *pending, spare);
    }
}

/// The processor the tracer provider calls when a span ends.
#[derive(Debug)]
pub struct QueueProcessor {
    shared: Arc<Shared>,
}

/// Whether spans of `a` and `b` share a `ScopeSpans`. Attributes are
/// compared in order: `InstrumentationScope`'s own `==` sorts them into a
/// new `Vec` on every call, once per span queued. Scopes equal but for
/// their attributes' order get one `ScopeSpans` each, which OTLP allows.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    a.name() == b.name()
        && a.version() == b.version()
        && a.schema_url() == b.schema_url()
        && a.attributes().eq(b.attributes())
}

/// Where the spans Sluice writes itself go: the same queue, under the
/// tracer's scope.
#[derive(Debug)]
pub struct SpanSink {
    shared: Arc<Shared>,
    scope: InstrumentationScope,
}

impl SpanSink {
    /// Queues one encoded `Span` message (or drops and counts it).
    pub fn push(&self, body: &[u8]) {
        self.shared.enqueue(&self.scope, body);
    }
}

/// The handle that flushes the queue and stops its task.
#[derive(Debug)]
pub struct ExportQueue {
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    shared: Arc<Shared>,
}

/// Starts the export task, posting with `exporter`, on a thread of its own.
pub fn start(
    exporter: OtlpHttpExporter,
    settings: QueueSettings,
) -> std::io::Result<(QueueProcessor, ExportQueue)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        full_batch: Notify::new(),
        stop: Notify::new(),
        settings,
    });
    let (flushes, requests) = mpsc::channel(16);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let task_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("sluice-span-export".into())
        .spawn(move || runtime.block_on(run(exporter, task_shared, requests)))?;
    Ok((
        QueueProcessor {
            shared: Arc::clone(&shared),
        },
        ExportQueue { flushes, shared },
    ))
}

thread_local! {
    /// Where a span is encoded before it is queued, reused per thread.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            otlp::put_span(scratch, &span);
            self.shared.enqueue(&span.instrumentation_scope, scratch);
        });
        // The span's data is freed here, on the thread that built it.
        drop(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing is asynchronous: `ExportQueue::flush`.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl ExportQueue {
    /// A sink for spans of `scope` written as OTLP by Sluice itself.
    pub fn sink(&self, scope: InstrumentationScope) -> SpanSink {
        SpanSink {
            shared: Arc::clone(&self.shared),
            scope,
        }
    }

    /// Exports every span queued so far; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (done, flushed) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.flushes.send(done).await.is_ok() {
                let _ = flushed.await;
            }
        })
        .await;
    }

    /// Flushes, then stops the task.
    pub async fn shutdown(&self) {
        self.flush(DEFAULT_FLUSH_TIMEOUT).await;
        self.shared.stop.notify_one();
    }
}

impl Drop for ExportQueue {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

async fn run(
    exporter: OtlpHttpExporter,
    shared: Arc<Shared>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let settings = shared.settings;
    let mut failing = false;
    let mut taken = Pending::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flushed = tokio::select! {
            request = flushes.recv() => match request {
                Some(done) => Some(done),
                None => return,
            },
            () = shared.full_batch.notified() => None,
            () = shared.stop.notified() => return,
            _ = ticker.tick() => None,
        };
        shared.take(&mut taken);
        // Requests of at most `max_batch` spans, cut at span boundaries.
        let max_batch = settings.max_batch.max(1);
        let mut parts: Vec<(&InstrumentationScope, &[u8])> = Vec::new();
        let mut count = 0;
        for scope in &taken.scopes {
            let (mut first, mut from) = (0, 0);
            while first < scope.ends.len() {
                let n = (max_batch - count).min(scope.ends.len() - first);
                let to = scope.ends[first + n - 1];
                parts.push((&scope.scope, &scope.bytes[from..to]));
                (first, from, count) = (first + n, to, count + n);
                if count == max_batch {
                    export(&exporter, &parts, count, settings, &mut failing).await;
                    (parts, count) = (Vec::new(), 0);
                }
            }
        }
        if count > 0 {
            export(&exporter, &parts, count, settings, &mut failing).await;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

async fn export(
    exporter: &OtlpHttpExporter,
    parts: &[(&InstrumentationScope, &[u8])],
    count: usize,
    settings: QueueSettings,
    failing: &mut bool,
) {
    let count = count as u64;
    let mut body = Vec::with_capacity(parts.iter().map(|(_, b)| b.len()).sum::<usize>() + 256);
    exporter.encode_request(parts, &mut body);
    let outcome = tokio::time::timeout(settings.timeout, exporter.post(Bytes::from(body))).await;
    let failure = match outcome {
        Ok(Ok(())) => {
            metrics::counter!(TRACE_SPANS_EXPORTED_TOTAL).increment(count);
            if std::mem::take(failing) {
                tracing::info!("span export works again");
            }
            return;
        }
        Ok(Err(e)) => {
            metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, LABEL_REASON => "export_failed")
                .increment(count);
            e
        }
        Err(_) => {
            metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, LABEL_REASON => "export_timeout")
                .increment(count);
            format!("no answer within {} ms", settings.timeout.as_millis())
        }
    };
    if !std::mem::replace(failing, true) {
        tracing::warn!(error = %failure, spans = count, "span export failed; dropping spans until it works again");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::super::otlp::tests::Collector;
    use super::*;

    fn settings(max_queue: usize) -> QueueSettings {
        QueueSettings {
            max_queue,
            max_batch: 4,
            interval: Duration::from_secs(3600),
            timeout: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn spans_are_exported_in_batches_and_on_flush() {
        let collector = Collector::start(200, false, false).await;
        let exporter = OtlpHttpExporter::new(&collector.url).unwrap();
        let (processor, queue) = start(exporter, settings(100)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let other = provider.tracer("other");
        for i in 0..6 {
            tracer.start(format!("s{i}")).end();
        }
        other.start("o0").end();
        queue.flush(Duration::from_secs(5)).await;
        // Four spans, then the other three (two scopes in one request).
        assert_eq!(collector.requests.load(Ordering::SeqCst), 2);
        assert_eq!(
            collector.span_names(),
            ["s0", "s1", "s2", "s3", "s4", "s5", "o0"]
        );
        // The queue's buffers are reused: nothing is sent twice.
        tracer.start("s6").end();
        queue.flush(Duration::from_secs(5)).await;
        assert_eq!(collector.span_names().len(), 8);
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let collector = Collector::start(200, false, true).await;
        let exporter = OtlpHttpExporter::new(&collector.url).unwrap();
        let (processor, queue) = start(exporter, settings(2)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let started = std::time::Instant::now();
        for i in 0..1000 {
            tracer.start(format!("s{i}")).end();
        }
        // Ending spans never waited on the hung collector.
        assert!(started.elapsed() < Duration::from_secs(2));
        queue.shutdown().await;
        assert_eq!(collector.requests.load(Ordering::SeqCst), 0);
    }
}
