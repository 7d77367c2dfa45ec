//! The span export queue: finished spans go into a bounded queue without
//! waiting, and one task sends them in batches to the OTLP exporter.
//!
//! A full queue (a slow or absent collector) drops the new span and counts
//! it in `sluice_trace_spans_dropped_total{reason="queue_full"}`: a request
//! never waits for telemetry. Failed and timed-out exports are dropped and
//! counted the same way, and logged once per outage, not once per batch.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::metrics::{LABEL_REASON, TRACE_SPANS_DROPPED_TOTAL, TRACE_SPANS_EXPORTED_TOTAL};

/// How long a flush on shutdown may take.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the export task is handed.
enum Item {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

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

/// The processor the tracer provider calls when a span ends.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: mpsc::Sender<Item>,
}

/// The handle that flushes the queue and stops its task.
#[derive(Debug)]
pub struct ExportQueue {
    tx: mpsc::Sender<Item>,
    task: JoinHandle<()>,
}

/// Starts the export task on the current runtime.
pub fn start<E: SpanExporter + 'static>(
    exporter: E,
    settings: QueueSettings,
) -> (QueueProcessor, ExportQueue) {
    let (tx, rx) = mpsc::channel(settings.max_queue);
    let task = tokio::spawn(run(exporter, rx, settings));
    (QueueProcessor { tx: tx.clone() }, ExportQueue { tx, task })
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Item::Span(Box::new(span))).is_err() {
            metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, LABEL_REASON => "queue_full").increment(1);
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
            if self.tx.send(Item::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
        .await;
    }

    /// Flushes, then stops the task.
    pub async fn shutdown(&self) {
        self.flush(DEFAULT_FLUSH_TIMEOUT).await;
        self.task.abort();
    }
}

impl Drop for ExportQueue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<E: SpanExporter>(exporter: E, mut rx: mpsc::Receiver<Item>, settings: QueueSettings) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_batch);
    let mut failing = false;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Item::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= settings.max_batch {
                        export(&exporter, &mut batch, settings, &mut failing).await;
                    }
                }
                Some(Item::Flush(done)) => {
                    export(&exporter, &mut batch, settings, &mut failing).await;
                    let _ = done.send(());
                }
                None => {
                    export(&exporter, &mut batch, settings, &mut failing).await;
                    return;
                }
            },
            _ = ticker.tick() => export(&exporter, &mut batch, settings, &mut failing).await,
        }
    }
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    settings: QueueSettings,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(settings.max_batch));
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
        let (processor, queue) = start(exporter.clone(), settings(100));
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
        let (processor, queue) = start(exporter.clone(), settings(2));
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
