//! Failed-authentication limiting per source address: after
//! `max_failures` within `window_ms`, every request from the address gets
//! 429 for `cooldown_ms`, so keys and tokens cannot be guessed at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sluice_config::FailedAuthConfig;

/// Addresses tracked at once; past this, entries that are neither cooling
/// down nor recent are dropped first.
pub const DEFAULT_MAX_TRACKED_ADDRESSES: usize = 65_536;

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Failure counts by address.
#[derive(Debug, Default)]
pub struct FailedAuth {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl FailedAuth {
    /// How much longer `addr` is cooling down, if it is.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let until = entries.get(&addr)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure from `addr`; true when it starts a cool-down.
    pub fn record(&self, addr: IpAddr, config: &FailedAuthConfig, now: Instant) -> bool {
        let window = Duration::from_millis(config.window_ms);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= DEFAULT_MAX_TRACKED_ADDRESSES && !entries.contains_key(&addr) {
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|u| u > now)
                    || now.duration_since(e.window_start) < window
            });
            if entries.len() >= DEFAULT_MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let entry = entries.entry(addr).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(entry.window_start) >= window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= config.max_failures {
            entry.blocked_until = Some(now + Duration::from_millis(config.cooldown_ms));
            entry.failures = 0;
            entry.window_start = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cools_down_after_n_failures_in_the_window() {
        let config = FailedAuthConfig {
            max_failures: 3,
            window_ms: 1_000,
            cooldown_ms: 5_000,
        };
        let limiter = FailedAuth::default();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        assert!(!limiter.record(ip, &config, t0));
        // A failure outside the window starts counting again.
        assert!(!limiter.record(ip, &config, t0 + Duration::from_millis(1_500)));
        assert!(!limiter.record(ip, &config, t0 + Duration::from_millis(1_600)));
        assert!(limiter
            .blocked(ip, t0 + Duration::from_millis(1_600))
            .is_none());
        assert!(limiter.record(ip, &config, t0 + Duration::from_millis(1_700)));
        assert!(limiter
            .blocked(ip, t0 + Duration::from_millis(1_800))
            .is_some());
        assert!(limiter
            .blocked(other, t0 + Duration::from_millis(1_800))
            .is_none());
        assert!(limiter
            .blocked(ip, t0 + Duration::from_millis(6_800))
            .is_none());
    }
}
