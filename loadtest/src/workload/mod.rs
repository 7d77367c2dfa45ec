//! The workloads, one file each, sharing [`Ctx`]:
//!
//! - [`rest`]: v2 (binary or JSON) and v3 produce over HTTP/1.1 keep-alive.
//! - [`ws`]: WebSocket produce (many frames in flight, correlation ids,
//!   feed-then-flush) and WebSocket subscribe (credit granted in halves).
//! - [`sse`]: the SSE tail.
//! - [`consumer`]: Confluent v2 consumer instances, the extension point
//!   for the `/consumers/...` routes.
//! - [`idle`]: connections opened and then left alone.
//!
//! Producers run until their [`crate::pacing::Schedule`] ends; subscribers
//! until the runner's [`Phase`] says the drain is over.

pub mod consumer;
pub mod idle;
pub mod rest;
pub mod sse;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::net::Target;
use crate::payload::{now_us, Stamp};
use crate::stats::StatsHandle;
use crate::verify::{AckLog, Delivery};

/// After the producers stop, a subscriber that got nothing for this long is
/// done (without verification).
pub const DRAIN_IDLE: Duration = Duration::from_millis(2_000);
/// How long a connection attempt that fails waits before the next.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How long a subscriber may take to be subscribed.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Producers are sending.
    Running,
    /// Producers stopped; subscribers finish until `until`.
    Draining {
        /// Last moment of the drain.
        until: Instant,
    },
}

/// What every worker of a run shares.
pub struct Ctx {
    /// The gateway.
    pub target: Target,
    /// The run's topic.
    pub topic: String,
    /// The v3 cluster id.
    pub cluster_id: String,
    /// Verification: producers register acks here.
    pub acks: Option<AckLog>,
    /// Records acknowledged by all producers (for the subscribers' drain).
    pub acked_records: AtomicU64,
    /// The run's phase.
    pub phase: watch::Receiver<Phase>,
    /// Header carrying credentials.
    pub auth_header: HeaderName,
    /// Seed of random choices.
    pub seed: u64,
}

impl Ctx {
    /// The credential header for a client, from a template with `{group}` and `{client}`.
    pub fn credential(
        &self,
        template: Option<&str>,
        group: &str,
        client: u32,
    ) -> Option<(HeaderName, HeaderValue)> {
        let value = principal(template?, group, client);
        HeaderValue::from_str(&value)
            .ok()
            .map(|v| (self.auth_header.clone(), v))
    }

    /// Counts acknowledged records for the drain.
    pub fn add_acked(&self, n: u64) {
        self.acked_records.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether a subscriber that delivered `delivered` records, the last
    /// at `last_record`, is done.
    pub fn subscriber_done(&self, delivered: u64, last_record: Instant) -> bool {
        match *self.phase.borrow() {
            Phase::Running => false,
            Phase::Draining { until } => {
                let now = Instant::now();
                // When verifying, a quiet spell is not the end: a starved
                // subscriber may still be behind; only the count or the
                // drain limit ends it.
                now >= until
                    || delivered >= self.acked_records.load(Ordering::Relaxed)
                    || (self.acks.is_none() && now.duration_since(last_record) >= DRAIN_IDLE)
            }
        }
    }
}

/// The credential template filled in.
pub fn principal(template: &str, group: &str, client: u32) -> String {
    template
        .replace("{group}", group)
        .replace("{client}", &client.to_string())
}

/// What a subscriber does with each record: order and loss bookkeeping,
/// end-to-end latency from the stamp.
pub struct Receiver {
    /// Verification bookkeeping (kept even without verification: cheap).
    pub delivery: Delivery,
    stats: StatsHandle,
    /// When the last record arrived.
    pub last_record: Instant,
}

impl Receiver {
    /// A receiver recording into `stats`.
    pub fn new(stats: StatsHandle) -> Self {
        Self {
            delivery: Delivery::default(),
            stats,
            last_record: Instant::now(),
        }
    }

    /// One record whose value (decoded, or at least its first bytes) is `value`.
    pub fn record(&mut self, partition: u32, offset: u64, value: &[u8], value_bytes: u64) {
        let stamp = Stamp::parse(value);
        self.delivery.record(partition, offset, stamp);
        let latency = stamp.map(|s| now_us().saturating_sub(s.sent_us));
        crate::stats::lock(&self.stats).delivered(value_bytes, latency);
        self.last_record = Instant::now();
    }

    /// An error of `kind`.
    pub fn error(&self, kind: &str) {
        crate::stats::lock(&self.stats).error(kind);
    }
}

/// Decodes the start of a base64 value: enough for the stamp (and a JSON quote).
pub fn decode_stamp_prefix(b64: &str, out: &mut [u8; 48]) -> usize {
    use base64::Engine as _;
    // 56 base64 characters are 42 bytes: the stamp and a leading quote.
    let take = b64.len().min(56) / 4 * 4;
    base64::engine::general_purpose::STANDARD
        .decode_slice(&b64.as_bytes()[..take], out)
        .unwrap_or(0)
}

/// Approximate decoded size of a base64 string.
pub fn b64_len(b64: &str) -> u64 {
    (b64.len() as u64 / 4) * 3
}
