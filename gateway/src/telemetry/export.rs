//! The span export queue: finished spans go into a bounded queue without
//! waiting, and one task sends them in batches to the OTLP exporter.
//!
//! That task runs on a thread of its own (`sluice-span-export`, with a
//! single-threaded runtime), not on the gateway's workers: encoding and
//! posting a batch of spans never holds up the requests queued behind it
//! on a worker.
//!
//! A full queue (a slow or absent collector) drops the new span and counts
//! it in `sluice_trace_spans_dropped_total{reason="queue_full"}`: a request
//! never waits for telemetry. Failed and timed-out exports are dropped and
//! counted the same way, and logged once per outage, not once per batch.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot, Notify};

use super::metrics::{LABEL_REASON, TRACE_SPANS_DROPPED_TOTAL, TRACE_SPANS_EXPORTED_TOTAL};

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

/// The spans waiting for export. Ending a span only pushes here: the
/// export task is woken when a full batch is waiting (or by its timer),
/// not once per span, so a traced request costs no extra thread wake-up.
#[derive(Debug)]
struct Shared {
    spans: Mutex<Vec<SpanData>>,
    full_batch: Notify,
    /// Ends the export task.
    stop: Notify,
    settings: QueueSettings,
}

impl Shared {
    fn take(&self) -> Vec<SpanData> {
        // The queue keeps room for a batch, so ending spans does not grow
        // (and copy) a vector of large span records from empty each time.
        let fresh = Vec::with_capacity(self.settings.max_batch.min(self.settings.max_queue));
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *spans, fresh)
    }
}

/// The processor the tracer provider calls when a span ends.
#[derive(Debug)]
pub struct QueueProcessor {
    shared: Arc<Shared>,
}

/// The handle that flushes the queue and stops its task.
#[derive(Debug)]
pub struct ExportQueue {
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    shared: Arc<Shared>,
}

/// Starts the export task on a thread of its own.
pub fn start<E: SpanExporter + 'static>(
    exporter: E,
    settings: QueueSettings,
) -> std::io::Result<(QueueProcessor, ExportQueue)> {
    let shared = Arc::new(Shared {
        spans: Mutex::new(Vec::new()),
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

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let settings = &self.shared.settings;
        let queued = {
            let mut spans = self
                .shared
                .spans
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if spans.len() >= settings.max_queue {
                None
            } else {
                spans.push(span);
                Some(spans.len())
            }
        };
        match queued {
            None => {
                metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, LABEL_REASON => "queue_full")
                    .increment(1);
            }
            Some(n) if n == settings.max_batch => self.shared.full_batch.notify_one(),
            Some(_) => {}
        }
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

async fn run<E: SpanExporter>(
    exporter: E,
    shared: Arc<Shared>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let settings = shared.settings;
    let mut failing = false;
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
        let mut spans = shared.take();
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(settings.max_batch));
            export(&exporter, spans, settings, &mut failing).await;
            spans = rest;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

async fn export<E: SpanExporter>(
    exporter: &E,
    spans: Vec<SpanData>,
    settings: QueueSettings,
    failing: &mut bool,
) {
    let count = spans.len() as u64;
    let outcome = tokio::time::timeout(settings.timeout, exporter.export(spans)).await;
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
            e.to_string()
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
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Records what it is given; can be told to hang.
    #[derive(Debug, Clone, Default)]
    struct Recording {
        spans: Arc<Mutex<Vec<String>>>,
        hang: bool,
    }

    impl SpanExporter for Recording {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.spans
                .lock()
                .unwrap()
                .extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

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
        let exporter = Recording::default();
        let (processor, queue) = start(exporter.clone(), settings(100)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        for i in 0..6 {
            tracer.start(format!("s{i}")).end();
        }
        queue.flush(Duration::from_secs(5)).await;
        assert_eq!(
            *exporter.spans.lock().unwrap(),
            ["s0", "s1", "s2", "s3", "s4", "s5"]
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let exporter = Recording {
            hang: true,
            ..Default::default()
        };
        let (processor, queue) = start(exporter.clone(), settings(2)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let started = std::time::Instant::now();
        for i in 0..1000 {
            tracer.start(format!("s{i}")).end();
        }
        // Ending spans never waited on the hung exporter.
        assert!(started.elapsed() < Duration::from_secs(2));
        queue.shutdown().await;
        assert!(exporter.spans.lock().unwrap().is_empty());
    }
}
