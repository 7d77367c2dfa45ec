//! When requests leave.
//!
//! Open loop: request `k` of a connection is due at a fixed time computed
//! from the rate (with a linear ramp-up), whether or not earlier answers
//! came back. Latency is measured from that *intended* time, so a stalled
//! server is charged for the requests that could not even be sent
//! (coordinated omission, as wrk2 corrects it). Closed loop: the next
//! request leaves when an answer arrives; latency is measured from the
//! actual send.

use std::time::Duration;

use tokio::time::Instant;

/// The schedule of one connection (or one sender).
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Requests per second of this connection; 0 for a closed loop.
    rate: f64,
    ramp: Duration,
    deadline: Instant,
    /// Requests this connection may send in all (`u64::MAX`: no limit).
    count: u64,
    sent: u64,
}

impl Schedule {
    /// An open loop at `rate` per second after a linear ramp over `ramp`.
    pub fn open(start: Instant, rate: f64, ramp: Duration, deadline: Instant, count: u64) -> Self {
        Self {
            start,
            rate,
            ramp,
            deadline,
            count,
            sent: 0,
        }
    }

    /// A closed loop: no schedule, only the limits.
    pub fn closed(start: Instant, deadline: Instant, count: u64) -> Self {
        Self::open(start, 0.0, Duration::ZERO, deadline, count)
    }

    /// Whether this is an open loop.
    pub fn is_open(&self) -> bool {
        self.rate > 0.0
    }

    /// The intended time of request `k` (from 0).
    pub fn intended(&self, k: u64) -> Instant {
        if !self.is_open() {
            return self.start;
        }
        let ramp = self.ramp.as_secs_f64();
        let k = k as f64;
        // Sent by time t during the ramp: rate * t² / (2 * ramp).
        let ramp_count = self.rate * ramp / 2.0;
        let t = if k < ramp_count && ramp > 0.0 {
            (2.0 * ramp * k / self.rate).sqrt()
        } else {
            (k - ramp_count) / self.rate + ramp
        };
        self.start + Duration::from_secs_f64(t)
    }

    /// The next request's intended time (open loop) or now (closed loop),
    /// or `None` once the count is used up, or the request or the present
    /// is past the deadline (a sender that fell behind does not run over).
    /// Does not wait.
    pub fn next_send(&mut self) -> Option<Instant> {
        if self.sent >= self.count || Instant::now() >= self.deadline {
            return None;
        }
        let at = if self.is_open() {
            self.intended(self.sent)
        } else {
            Instant::now()
        };
        if at >= self.deadline {
            return None;
        }
        self.sent += 1;
        Some(at)
    }

    /// The next request's time without taking it (see [`Schedule::next_send`]).
    pub fn peek_send(&self) -> Option<Instant> {
        if self.sent >= self.count || Instant::now() >= self.deadline {
            return None;
        }
        let at = if self.is_open() {
            self.intended(self.sent)
        } else {
            Instant::now()
        };
        (at < self.deadline).then_some(at)
    }

    /// Requests handed out so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Open loop: requests that were due before the deadline but not handed
    /// out (the sender fell behind and the run ended).
    pub fn missed(&self, now: Instant) -> u64 {
        if !self.is_open() {
            return 0;
        }
        let end = now.min(self.deadline);
        // Binary search the count due by `end`.
        let (mut lo, mut hi) = (0u64, self.count.min(1 << 40));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.intended(mid) < end {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.saturating_sub(self.sent)
    }
}

/// Splits `total` into `parts` near-equal shares (0 stays "no limit").
pub fn share(total: u64, parts: u32, index: u32) -> u64 {
    if total == 0 {
        return u64::MAX;
    }
    let parts = u64::from(parts.max(1));
    let index = u64::from(index);
    total / parts + u64::from(index < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_without_ramp_is_evenly_spaced() {
        let start = Instant::now();
        let s = Schedule::open(
            start,
            100.0,
            Duration::ZERO,
            start + Duration::from_secs(10),
            u64::MAX,
        );
        assert_eq!(s.intended(0), start);
        assert_eq!(s.intended(50) - start, Duration::from_millis(500));
    }

    #[test]
    fn ramp_sends_half_as_many_in_the_ramp_then_the_full_rate() {
        let start = Instant::now();
        let s = Schedule::open(
            start,
            100.0,
            Duration::from_secs(2),
            start + Duration::from_secs(10),
            u64::MAX,
        );
        // 100/s ramped over 2 s: 100 requests in the ramp, then 100/s.
        let at = |k| (s.intended(k) - start).as_secs_f64();
        assert!((at(100) - 2.0).abs() < 1e-6);
        assert!((at(200) - 3.0).abs() < 1e-6);
        assert!(at(25) > 0.9 && at(25) < 1.1);
    }

    #[test]
    fn limits_end_the_schedule() {
        let start = Instant::now();
        let mut s = Schedule::open(
            start,
            1000.0,
            Duration::ZERO,
            start + Duration::from_millis(100),
            u64::MAX,
        );
        let mut n = 0;
        while s.next_send().is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
        let mut c = Schedule::closed(start, start + Duration::from_secs(60), 7);
        assert_eq!(std::iter::from_fn(|| c.next_send()).count(), 7);
    }

    #[test]
    fn shares_add_up() {
        assert_eq!((0..3).map(|i| share(10, 3, i)).sum::<u64>(), 10);
        assert_eq!(share(0, 3, 1), u64::MAX);
    }
}
