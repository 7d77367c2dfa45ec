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

use crate::stats::{lock, StatsHandle};

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

/// Waits for send times more precisely than tokio's timer, whose wheel
/// turns once a millisecond: a sender woken by it goes up to a millisecond
/// after the intended time, and in open loop that lateness is charged to
/// the gateway's latency. This one is a `timerfd` armed for each wait, so
/// the sender wakes within the kernel's timer slack (about 50 µs). It costs
/// a thread wake-up and two system calls per wait, so scenarios opt in
/// (`precise_pacing`) where latency, not load, is the figure.
pub struct PreciseTimer {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl PreciseTimer {
    /// A disarmed timer on the monotonic clock.
    pub fn new() -> std::io::Result<Self> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // The safe constructor is deprecated because a caller could close a
        // borrowed descriptor under it; this one is an `OwnedFd` that the
        // `AsyncFd` owns until it is dropped, which is what the unsafe
        // replacement asks the caller to promise (and unsafe code is
        // forbidden in this workspace).
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Returns at `at` (at once when it has passed).
    pub async fn sleep_until(&self, at: Instant) -> std::io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let value = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos().into(),
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &value)?;
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(self.fd.get_ref(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How a sender waits for its next send time. A precise timer that cannot
/// be made or fails falls back to tokio's, and says so in the sender's
/// error counts (`pacing timer: ...`), so a run never stops for it.
pub struct Pacer {
    /// `None`: tokio's timer (millisecond turns; no extra cost).
    precise: Option<PreciseTimer>,
    stats: StatsHandle,
}

impl Pacer {
    /// The pacer a producer group asks for; errors go to `stats`.
    pub fn new(precise: bool, stats: StatsHandle) -> Self {
        let precise = if precise {
            PreciseTimer::new()
                .map_err(|e| lock(&stats).error(&format!("pacing timer: {e}")))
                .ok()
        } else {
            None
        };
        Self { precise, stats }
    }

    /// Returns at `at`.
    pub async fn sleep_until(&self, at: Instant) {
        if let Some(timer) = &self.precise {
            match timer.sleep_until(at).await {
                Ok(()) => return,
                Err(e) => lock(&self.stats).error(&format!("pacing timer: {e}")),
            }
        }
        tokio::time::sleep_until(at).await;
    }
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

    #[tokio::test]
    async fn the_precise_timer_waits_until_the_time_and_not_before() {
        let timer = PreciseTimer::new().unwrap();
        for micros in [0u64, 200, 1_500, 3_000] {
            let at = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(at).await.unwrap();
            assert!(Instant::now() >= at, "woke before the time");
        }
        // A time in the past returns at once, without arming the timer.
        timer
            .sleep_until(Instant::now() - Duration::from_millis(5))
            .await
            .unwrap();
    }
}
