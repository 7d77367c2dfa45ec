//! The cluster's background thread: interval fsync and periodic retention.
//!
//! A plain thread rather than a tokio task, so the cluster works the same
//! with or without a runtime (benchmarks, tools) and a busy runtime cannot
//! delay an fsync. It holds only a weak reference to the storage and stops
//! when told to or when the storage is gone.

use std::io;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::files::lock;
use super::storage::Storage;

/// What the thread does and how often.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Fsync every partition this often (`fsync = "interval"`).
    pub fsync_every: Option<Duration>,
    /// Apply retention this often.
    pub retention_every: Option<Duration>,
}

/// Handle of the background thread.
#[derive(Debug)]
pub struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    /// Starts the thread, unless the schedule has nothing to do.
    pub fn start(name: &str, storage: Weak<Storage>, schedule: Schedule) -> io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = if schedule.fsync_every.is_none() && schedule.retention_every.is_none() {
            None
        } else {
            let stop = Arc::clone(&stop);
            Some(
                thread::Builder::new()
                    .name(format!("sluice-embedded-{name}"))
                    .spawn(move || run(&storage, schedule, &stop))?,
            )
        };
        Ok(Self {
            stop,
            thread: Mutex::new(thread),
        })
    }

    /// Whether the thread has ended (or never started).
    pub fn is_finished(&self) -> bool {
        lock(&self.thread)
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }

    /// Tells the thread to stop and waits for its current round to end.
    pub fn stop(&self) {
        let (stopped, wake) = &*self.stop;
        *lock(stopped) = true;
        wake.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            // Joining itself would deadlock; the thread only holds the
            // storage, never its owner, but stay safe if that changes.
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

fn run(storage: &Weak<Storage>, schedule: Schedule, stop: &(Mutex<bool>, Condvar)) {
    let now = Instant::now();
    let mut next_fsync = schedule.fsync_every.map(|d| now + d);
    let mut next_retention = schedule.retention_every.map(|d| now + d);
    loop {
        let Some(deadline) = [next_fsync, next_retention].into_iter().flatten().min() else {
            return;
        };
        {
            let (stopped, wake) = stop;
            let mut stopped = lock(stopped);
            while !*stopped && Instant::now() < deadline {
                let timeout = deadline.saturating_duration_since(Instant::now());
                stopped = wake
                    .wait_timeout(stopped, timeout)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            if *stopped {
                return;
            }
        }
        let Some(storage) = storage.upgrade() else {
            return;
        };
        let now = Instant::now();
        if let (Some(due), Some(every)) = (next_fsync, schedule.fsync_every) {
            if due <= now {
                // Errors are logged per partition and poison it; the
                // next round retries the others.
                let _ = storage.sync_all();
                next_fsync = Some(Instant::now() + every);
            }
        }
        if let (Some(due), Some(every)) = (next_retention, schedule.retention_every) {
            if due <= now {
                let _ = storage.run_retention();
                next_retention = Some(Instant::now() + every);
            }
        }
    }
}
