//! Idle connections: opened (TLS, then a WebSocket upgrade), then left
//! alone while the gateway's memory is measured. The runner spreads them
//! over child processes (`sluice-loadtest idle-worker`) because one
//! process may hold only as many sockets as its open-file limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::ws::{connect, IDLE_READ_BUFFER};
use crate::net::Target;

enum Held {
    Ws(Box<super::ws::Ws>),
    Raw(crate::net::Stream),
}

/// Connections held open.
pub struct IdleSet {
    tasks: tokio::task::JoinSet<()>,
    /// Connections open.
    pub opened: u64,
    /// Connections that failed to open.
    pub failed: u64,
    /// First failure, in words.
    pub first_error: Option<String>,
}

impl IdleSet {
    /// Opens `n` connections, `concurrency` at a time; each keeps reading
    /// (answering pings) until the set is dropped.
    pub async fn open(target: &Target, n: u32, websocket: bool, concurrency: u32) -> Self {
        let permits = Arc::new(Semaphore::new(concurrency.max(1) as usize));
        let opened = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let mut tasks = tokio::task::JoinSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(n.max(1) as usize);
        for _ in 0..n {
            let (target, permits, opened, failed, first_error, done) = (
                target.clone(),
                permits.clone(),
                opened.clone(),
                failed.clone(),
                first_error.clone(),
                done_tx.clone(),
            );
            tasks.spawn(async move {
                let permit = permits.acquire_owned().await;
                let result = if websocket {
                    connect(&target, None, IDLE_READ_BUFFER)
                        .await
                        .map(|ws| Held::Ws(Box::new(ws)))
                } else {
                    target.connect().await.map(Held::Raw).map_err(Into::into)
                };
                drop(permit);
                match result {
                    Ok(ws) => {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let _ = done.send(()).await;
                        drop(done);
                        match ws {
                            Held::Ws(mut ws) => while let Some(Ok(_)) = ws.next().await {},
                            Held::Raw(stream) => {
                                std::future::pending::<()>().await;
                                drop(stream);
                            }
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert_with(|| e.to_string());
                        let _ = done.send(()).await;
                    }
                }
            });
        }
        drop(done_tx);
        for _ in 0..n {
            if done_rx.recv().await.is_none() {
                break;
            }
        }
        let first_error = first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Self {
            tasks,
            opened: opened.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            first_error,
        }
    }

    /// Closes every connection.
    pub fn close(mut self) {
        self.tasks.abort_all();
    }
}
