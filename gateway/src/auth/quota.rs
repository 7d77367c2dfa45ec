//! Quotas: a token bucket per principal and rate (produce bytes, consume
//! bytes, requests), plus counters for connections and subscriptions.
//!
//! Each principal has its own buckets behind its own lock, so a noisy
//! client's contention and delays never touch anyone else's. Throttling
//! charges the bucket first and then delays the answer by the time the
//! bucket needs to come back to zero (Kafka's way: the bytes are taken,
//! the client waits); rejecting refuses requests while the bucket is in
//! debt (a request admitted on a nearly empty bucket may take it there).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sluice_config::{QuotaConfig, QuotaMode};

use crate::telemetry::metrics::{LABEL_KIND, LABEL_MODE, QUOTA_THROTTLES_TOTAL};

/// Counts one throttle or refusal of quota `kind` in
/// `sluice_quota_throttles_total`.
fn count_throttle(kind: &'static str, mode: &'static str) {
    metrics::counter!(QUOTA_THROTTLES_TOTAL, LABEL_KIND => kind, LABEL_MODE => mode).increment(1);
}

/// `mode` label of a delay.
const THROTTLE: &str = "throttle";
/// `mode` label of a refusal.
const REJECT: &str = "reject";

/// Longest single throttle delay; a client deeper in debt is delayed again
/// on its next request.
pub const DEFAULT_MAX_THROTTLE: Duration = Duration::from_secs(30);

/// A token bucket refilled at `rate` per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate_per_sec` holding `burst_ms` worth of it.
    pub fn new(rate_per_sec: u64, burst_ms: u64, now: Instant) -> Self {
        // Validation keeps rates at 1 or more; a 0 here must not divide by zero.
        let rate = rate_per_sec.max(1) as f64;
        let burst = (rate * burst_ms as f64 / 1000.0).max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `cost` (going into debt if need be) and returns how long the
    /// caller must wait until the debt is paid.
    pub fn charge(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= cost;
        self.debt(now)
    }

    /// How long until the bucket is out of debt; zero when it is not in debt.
    pub fn debt(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            secs(-self.tokens / self.rate)
        }
    }

    /// Takes `cost` unless the bucket is in debt; otherwise how long until
    /// it is not. A request admitted on a nearly empty bucket may take it
    /// into debt, which the next ones wait out: so the tokens that build
    /// up between a client's requests are never wasted, and a client
    /// offering more than the rate gets the rate, not a fraction of it.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 0.0 {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(secs(-self.tokens / self.rate))
        }
    }
}

/// Seconds as a duration, never panicking on an absurd debt.
fn secs(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(DEFAULT_MAX_THROTTLE)
}

/// What a quota says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it now.
    Go,
    /// Serve it, then hold the answer this long.
    Delay(Duration),
    /// Refuse it; the client may retry after this long.
    Reject(Duration),
}

impl Admit {
    /// The stricter of two verdicts.
    pub fn and(self, other: Admit) -> Admit {
        match (self, other) {
            (Admit::Reject(a), Admit::Reject(b)) => Admit::Reject(a.max(b)),
            (r @ Admit::Reject(_), _) | (_, r @ Admit::Reject(_)) => r,
            (Admit::Delay(a), Admit::Delay(b)) => Admit::Delay(a.max(b)),
            (d @ Admit::Delay(_), Admit::Go) | (Admit::Go, d @ Admit::Delay(_)) => d,
            (Admit::Go, Admit::Go) => Admit::Go,
        }
    }
}

/// The three rate buckets of one principal.
#[derive(Debug)]
pub struct Buckets {
    mode: QuotaMode,
    produce: Option<Mutex<TokenBucket>>,
    consume: Option<Mutex<TokenBucket>>,
    requests: Option<Mutex<TokenBucket>>,
}

/// Which rate a charge is against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Produce bytes per second.
    Produce,
    /// Consume bytes per second.
    Consume,
    /// Requests per second.
    Requests,
}

impl Rate {
    /// Its `kind` label.
    fn label(self) -> &'static str {
        match self {
            Rate::Produce => "produce_bytes",
            Rate::Consume => "consume_bytes",
            Rate::Requests => "requests",
        }
    }
}

/// Counts what `admit` decided.
fn counted(rate: Rate, admit: Admit) -> Admit {
    match admit {
        Admit::Go => {}
        Admit::Delay(_) => count_throttle(rate.label(), THROTTLE),
        Admit::Reject(_) => count_throttle(rate.label(), REJECT),
    }
    admit
}

impl Buckets {
    fn new(config: &QuotaConfig, now: Instant) -> Self {
        let bucket =
            |rate: Option<u64>| rate.map(|r| Mutex::new(TokenBucket::new(r, config.burst_ms, now)));
        Self {
            mode: config.mode,
            produce: bucket(config.produce_bytes_per_sec),
            consume: bucket(config.consume_bytes_per_sec),
            requests: bucket(config.requests_per_sec),
        }
    }

    fn bucket(&self, rate: Rate) -> Option<&Mutex<TokenBucket>> {
        match rate {
            Rate::Produce => self.produce.as_ref(),
            Rate::Consume => self.consume.as_ref(),
            Rate::Requests => self.requests.as_ref(),
        }
    }

    /// The quota's mode.
    pub fn mode(&self) -> QuotaMode {
        self.mode
    }

    /// Admits `cost` against `rate` before the work: throttle charges and
    /// delays; reject takes or refuses.
    pub fn admit(&self, rate: Rate, cost: u64) -> Admit {
        let Some(bucket) = self.bucket(rate) else {
            return Admit::Go;
        };
        let now = Instant::now();
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let admit = match self.mode {
            QuotaMode::Throttle => delay(bucket.charge(cost as f64, now)),
            QuotaMode::Reject => match bucket.try_take(cost as f64, now) {
                Ok(()) => Admit::Go,
                Err(wait) => Admit::Reject(wait),
            },
        };
        drop(bucket);
        counted(rate, admit)
    }

    /// Refuses (in reject mode) while the bucket is still in debt, before
    /// the cost is known: records not yet read, a body not yet received.
    pub fn precheck(&self, rate: Rate) -> Admit {
        let Some(bucket) = self.bucket(rate) else {
            return Admit::Go;
        };
        if self.mode == QuotaMode::Throttle {
            return Admit::Go;
        }
        let debt = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .debt(Instant::now());
        match debt {
            Duration::ZERO => Admit::Go,
            wait => counted(rate, Admit::Reject(wait)),
        }
    }

    /// Charges a cost known after the work; the delay to hold the answer
    /// (throttle) or zero (reject: the debt refuses the next request).
    pub fn charge_after(&self, rate: Rate, cost: u64) -> Duration {
        let Some(bucket) = self.bucket(rate) else {
            return Duration::ZERO;
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .charge(cost as f64, Instant::now());
        match self.mode {
            QuotaMode::Throttle if !wait.is_zero() => {
                count_throttle(rate.label(), THROTTLE);
                wait.min(DEFAULT_MAX_THROTTLE)
            }
            // Reject: the debt refuses the next request, counted then.
            _ => Duration::ZERO,
        }
    }
}

impl Buckets {
    /// Charges bytes already sent on a stream (SSE) and returns how long
    /// to pause it. A stream cannot be refused halfway, so both modes
    /// pause it.
    pub fn charge_stream(&self, rate: Rate, cost: u64) -> Duration {
        let Some(bucket) = self.bucket(rate) else {
            return Duration::ZERO;
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .charge(cost as f64, Instant::now());
        if !wait.is_zero() {
            count_throttle(rate.label(), THROTTLE);
        }
        wait.min(DEFAULT_MAX_THROTTLE)
    }
}

fn delay(wait: Duration) -> Admit {
    if wait.is_zero() {
        Admit::Go
    } else {
        Admit::Delay(wait.min(DEFAULT_MAX_THROTTLE))
    }
}

/// Open connections and subscriptions of one principal.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU32,
    subscriptions: AtomicU32,
}

/// Which count a permit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Open connections.
    Connections,
    /// Open subscriptions.
    Subscriptions,
}

/// One unit of a count, given back when dropped.
#[derive(Debug)]
pub struct CountPermit {
    counters: Arc<Counters>,
    count: Count,
}

impl Counters {
    fn counter(&self, count: Count) -> &AtomicU32 {
        match count {
            Count::Connections => &self.connections,
            Count::Subscriptions => &self.subscriptions,
        }
    }

    /// Takes one unit of `count` if fewer than `limit` are taken.
    pub fn try_acquire(self: &Arc<Self>, count: Count, limit: Option<u32>) -> Option<CountPermit> {
        let counter = self.counter(count);
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if limit.is_some_and(|limit| before >= limit) {
            counter.fetch_sub(1, Ordering::AcqRel);
            let kind = match count {
                Count::Connections => "connections",
                Count::Subscriptions => "subscriptions",
            };
            count_throttle(kind, REJECT);
            return None;
        }
        Some(CountPermit {
            counters: Arc::clone(self),
            count,
        })
    }
}

impl Drop for CountPermit {
    fn drop(&mut self) {
        self.counters
            .counter(self.count)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every principal's buckets and counters.
#[derive(Debug, Default)]
pub struct QuotaState {
    buckets: Mutex<HashMap<String, Arc<Buckets>>>,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
}

impl QuotaState {
    /// The buckets of `principal` under `config`, made on first use.
    pub fn buckets(&self, principal: &str, config: &QuotaConfig) -> Arc<Buckets> {
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(principal.to_owned())
                .or_insert_with(|| Arc::new(Buckets::new(config, Instant::now()))),
        )
    }

    /// The counters of `principal`.
    pub fn counters(&self, principal: &str) -> Arc<Counters> {
        let mut map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(principal.to_owned()).or_default())
    }

    /// Forgets every bucket, so the next request builds them from the
    /// reloaded config. Counters stay: they count what is open.
    pub fn reset_buckets(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_delay_pays_the_debt_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 100, t0);
        // 100 tokens of burst; 600 more is 0.5 s of debt.
        assert_eq!(bucket.charge(100.0, t0), Duration::ZERO);
        let wait = bucket.charge(500.0, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // After 0.5 s the debt is paid.
        assert_eq!(bucket.debt(t0 + Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn reject_refuses_while_in_debt() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 1000, t0);
        assert!(bucket.try_take(60.0, t0).is_ok());
        // 40 left: admitted, and 20 into debt.
        assert!(bucket.try_take(60.0, t0).is_ok());
        let wait = bucket.try_take(1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        assert!(bucket
            .try_take(1.0, t0 + Duration::from_millis(200))
            .is_ok());
    }

    #[test]
    fn counts_are_bounded_and_given_back() {
        let counters = Arc::new(Counters::default());
        let a = counters.try_acquire(Count::Subscriptions, Some(2)).unwrap();
        let _b = counters.try_acquire(Count::Subscriptions, Some(2)).unwrap();
        assert!(counters
            .try_acquire(Count::Subscriptions, Some(2))
            .is_none());
        drop(a);
        assert!(counters
            .try_acquire(Count::Subscriptions, Some(2))
            .is_some());
        assert!(counters.try_acquire(Count::Connections, None).is_some());
    }

    #[test]
    fn stricter_verdict_wins() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(Admit::Go.and(Admit::Delay(d(5))), Admit::Delay(d(5)));
        assert_eq!(
            Admit::Delay(d(9)).and(Admit::Reject(d(1))),
            Admit::Reject(d(1))
        );
        assert_eq!(
            Admit::Delay(d(9)).and(Admit::Delay(d(3))),
            Admit::Delay(d(9))
        );
    }
}
