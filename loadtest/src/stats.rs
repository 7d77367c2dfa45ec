//! Counters and HDR histograms per group and client, the per-second
//! timeline and the live progress line.
//!
//! Workers record into a [`StatsHandle`] shared by the connections of one
//! client in one group (a `Mutex` taken per answer; with the runtime's two
//! threads it is rarely contended). Once a second the progress task takes
//! the interval histograms and counters of every handle into the timeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Highest latency a histogram holds, in µs (an hour); above is clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the histograms (1 % resolution, small enough for
/// thousands of subscribers).
const SIGNIFICANT_DIGITS: u8 = 2;

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS).expect("valid bounds")
}

/// What a group does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends records.
    Producer,
    /// Receives records.
    Subscriber,
}

/// Counters and histograms of one client in one group.
#[derive(Debug)]
pub struct Stats {
    /// Requests (frames) sent.
    pub requests: u64,
    /// Requests answered with success.
    pub acked_requests: u64,
    /// Records acknowledged (producers) or delivered (subscribers).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Errors by kind (`http 429`, `connect`, `ws 40401`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Open loop: sends that were due but not made before the end.
    pub missed: u64,
    /// Request latency after the ramp-up (producers).
    pub latency: Histogram<u64>,
    /// End-to-end latency after the ramp-up, from the stamp in the value (subscribers).
    pub e2e: Histogram<u64>,
    interval_latency: Histogram<u64>,
    interval_e2e: Histogram<u64>,
    interval_errors: u64,
    /// Set once the ramp-up is over: samples before it stay out of the summary.
    steady_from: Option<Instant>,
}

impl Stats {
    fn new(steady_from: Option<Instant>) -> Self {
        Self {
            requests: 0,
            acked_requests: 0,
            records: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            missed: 0,
            latency: histogram(),
            e2e: histogram(),
            interval_latency: histogram(),
            interval_e2e: histogram(),
            interval_errors: 0,
            steady_from,
        }
    }

    fn steady(&self, at: Instant) -> bool {
        self.steady_from.is_none_or(|from| at >= from)
    }

    /// A successful answer: `records` records of `bytes`, latency from `since`.
    pub fn ack(&mut self, since: Instant, now: Instant, records: u64, bytes: u64) {
        self.acked_requests += 1;
        self.records += records;
        self.bytes += bytes;
        let us = now.saturating_duration_since(since).as_micros() as u64;
        self.interval_latency.saturating_record(us.max(1));
        if self.steady(since) {
            self.latency.saturating_record(us.max(1));
        }
    }

    /// A delivered record whose value was stamped at `sent_us` (wall clock).
    pub fn delivered(&mut self, bytes: u64, latency_us: Option<u64>) {
        self.records += 1;
        self.bytes += bytes;
        if let Some(us) = latency_us {
            self.interval_e2e.saturating_record(us.max(1));
            if self.steady(Instant::now()) {
                self.e2e.saturating_record(us.max(1));
            }
        }
    }

    /// An error of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
        self.interval_errors += 1;
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Shared stats of one client in one group.
pub type StatsHandle = Arc<Mutex<Stats>>;

/// Locks a handle, ignoring poisoning (a panicked worker's counts still count).
pub fn lock(handle: &StatsHandle) -> MutexGuard<'_, Stats> {
    handle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One registered handle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Group name.
    pub group: String,
    /// Producer or subscriber.
    pub role: Role,
    /// Client index in the group.
    pub client: u32,
    /// The credential's principal, for reports (the template with `{client}` filled in).
    pub principal: String,
    /// The stats.
    pub handle: StatsHandle,
}

/// Every handle of a run.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Registry {
    /// A new handle for `client` of `group`.
    pub fn register(
        &self,
        group: &str,
        role: Role,
        client: u32,
        principal: String,
        steady_from: Option<Instant>,
    ) -> StatsHandle {
        let handle = Arc::new(Mutex::new(Stats::new(steady_from)));
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Entry {
                group: group.to_owned(),
                role,
                client,
                principal,
                handle: handle.clone(),
            });
        handle
    }

    /// All entries.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One second of one group.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the producers started (end of the interval).
    pub t: f64,
    /// Group.
    pub group: String,
    /// Producer or subscriber.
    pub role: Role,
    /// Requests sent per second.
    pub requests_per_sec: f64,
    /// Records acknowledged (producers) or delivered (subscribers) per second.
    pub records_per_sec: f64,
    /// Errors per second.
    pub errors_per_sec: f64,
    /// Median latency in ms (request latency, or end to end for subscribers).
    pub p50_ms: Option<f64>,
    /// 99th percentile in ms.
    pub p99_ms: Option<f64>,
}

/// Requests, records, errors and the interval histogram of one group.
type GroupSample = (u64, u64, u64, Histogram<u64>);

#[derive(Default)]
struct Last {
    requests: u64,
    records: u64,
}

/// Samples the registry every second into the timeline and the progress line.
pub struct Timeline {
    registry: Registry,
    start: Instant,
    last: BTreeMap<(String, Role), Last>,
    last_at: Instant,
    /// Collected ticks.
    pub ticks: Vec<Tick>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new(registry: Registry, start: Instant) -> Self {
        Self {
            registry,
            start,
            last: BTreeMap::new(),
            last_at: start,
            ticks: Vec::new(),
        }
    }

    /// Takes one interval; returns the progress line.
    pub fn sample(&mut self) -> String {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        self.last_at = now;
        let mut groups: BTreeMap<(String, Role), GroupSample> = BTreeMap::new();
        for entry in self.registry.entries() {
            let mut stats = lock(&entry.handle);
            let slot = groups
                .entry((entry.group.clone(), entry.role))
                .or_insert_with(|| (0, 0, 0, histogram()));
            slot.0 += stats.requests;
            slot.1 += stats.records;
            slot.2 += stats.interval_errors;
            stats.interval_errors = 0;
            let interval = match entry.role {
                Role::Producer => &mut stats.interval_latency,
                Role::Subscriber => &mut stats.interval_e2e,
            };
            let _ = slot.3.add(&*interval);
            interval.reset();
        }
        let t = now.duration_since(self.start).as_secs_f64();
        let mut line = format!("[{t:6.1}s]");
        for ((group, role), (requests, records, errors, hist)) in groups {
            let last = self.last.entry((group.clone(), role)).or_default();
            let tick = Tick {
                t,
                group: group.clone(),
                role,
                requests_per_sec: (requests - last.requests.min(requests)) as f64 / dt,
                records_per_sec: (records - last.records.min(records)) as f64 / dt,
                errors_per_sec: errors as f64 / dt,
                p50_ms: (!hist.is_empty()).then(|| hist.value_at_quantile(0.5) as f64 / 1000.0),
                p99_ms: (!hist.is_empty()).then(|| hist.value_at_quantile(0.99) as f64 / 1000.0),
            };
            last.requests = requests;
            last.records = records;
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}ms"));
            match role {
                Role::Producer => line.push_str(&format!(
                    " | {group}: {:.0} req/s {:.0} rec/s err {:.0}/s p50 {} p99 {}",
                    tick.requests_per_sec,
                    tick.records_per_sec,
                    tick.errors_per_sec,
                    ms(tick.p50_ms),
                    ms(tick.p99_ms)
                )),
                Role::Subscriber => line.push_str(&format!(
                    " | {group}: {:.0} deliveries/s err {:.0}/s e2e p50 {} p99 {}",
                    tick.records_per_sec,
                    tick.errors_per_sec,
                    ms(tick.p50_ms),
                    ms(tick.p99_ms)
                )),
            }
            self.ticks.push(tick);
        }
        line
    }
}

/// Sums of one group (or client) for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered with success.
    pub acked_requests: u64,
    /// Records acknowledged or delivered.
    pub records: u64,
    /// Value bytes.
    pub bytes: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Open loop sends due but not made.
    pub missed: u64,
    /// Request latency percentiles (ms), after the ramp-up.
    pub latency_ms: Option<Percentiles>,
    /// End-to-end latency percentiles (ms), after the ramp-up.
    pub e2e_ms: Option<Percentiles>,
}

/// Latency percentiles in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// 50th.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a µs histogram; `None` when empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// Merges `entries` into one summary and the merged histograms.
pub fn summarize(entries: &[&Entry]) -> (Summary, Histogram<u64>, Histogram<u64>) {
    let mut latency = histogram();
    let mut e2e = histogram();
    let mut s = Summary {
        requests: 0,
        acked_requests: 0,
        records: 0,
        bytes: 0,
        errors: BTreeMap::new(),
        missed: 0,
        latency_ms: None,
        e2e_ms: None,
    };
    for entry in entries {
        let stats = lock(&entry.handle);
        s.requests += stats.requests;
        s.acked_requests += stats.acked_requests;
        s.records += stats.records;
        s.bytes += stats.bytes;
        s.missed += stats.missed;
        for (k, v) in &stats.errors {
            *s.errors.entry(k.clone()).or_default() += v;
        }
        let _ = latency.add(&stats.latency);
        let _ = e2e.add(&stats.e2e);
    }
    s.latency_ms = Percentiles::of(&latency);
    s.e2e_ms = Percentiles::of(&e2e);
    (s, latency, e2e)
}

/// Total errors of a summary.
pub fn error_total(errors: &BTreeMap<String, u64>) -> u64 {
    errors.values().sum()
}

/// Points of the latency percentile curve (percentile, ms), log-spaced
/// towards the tail as HdrHistogram plots them.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut q: f64 = 0.0;
    while q < 0.99999 {
        points.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
        // Halve the remaining distance to 100 % in 8 steps per halving.
        q = 1.0 - (1.0 - q) * 0.5f64.powf(1.0 / 8.0);
    }
    points.push((100.0, h.max() as f64 / 1000.0));
    points
}

/// How long the progress task waits between two lines.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

impl Stats {
    /// Errors recorded so far.
    pub fn errors_so_far(&self) -> u64 {
        self.error_total()
    }
}

impl Stats {
    /// Samples before `at` (the end of the ramp-up) stay out of the summary histograms.
    pub fn set_steady_from(&mut self, at: Instant) {
        self.steady_from = Some(at);
    }
}
