//! Per-source rate limiting: a token bucket, and an adaptive rate that follows backpressure.
//!
//! Both take the time as a parameter — a [`Duration`] since a start instant of the caller's
//! choosing — and never read a clock, so tests drive them with a simulated one. The runtime
//! passes the time since its source thread started and sleeps for the waits they return.
//!
//! # Token bucket
//!
//! [`TokenBucket`] holds up to `burst` tokens and refills continuously at `rate` tokens per
//! second. Sending `n` events takes `n` tokens. A request the bucket cannot cover goes into
//! debt: the tokens go negative and [`TokenBucket::acquire`] returns how long the refill takes
//! to pay the debt back, which is how long the caller waits before sending. A request larger
//! than `burst` is therefore allowed and waits in proportion to its size: it never deadlocks.
//! Over a long run the events sent are `burst + rate × elapsed`, whatever the batch sizes.
//!
//! # Adaptive rate
//!
//! [`AdaptiveRate`] implements the "Backpressure controller" of the design as additive
//! increase, multiplicative decrease (AIMD, as TCP's congestion control):
//!
//! - an observed latency above `target_latency` lowers the rate to 90% of its value;
//! - a latency under a tenth of `target_latency` raises it by 10% of `max` (an additive step,
//!   so that from `min` the rate climbs back to `max` in at most ten steps);
//! - a latency in between leaves it as it is;
//! - the rate always stays within `[min, max]`;
//! - at most one adjustment per [`AdaptiveRate::ADJUSTMENT_INTERVAL`] (one second): the
//!   observations in between are ignored, so a burst of slow batches lowers the rate once, not
//!   once per batch, and the effect of a change is seen before the next.
//!
//! [`RateLimiter`] puts the two together for a source: the adaptive rate sets the bucket's
//! refill rate (its burst stays as configured), starting from `events_per_second`.
//!
//! ## Which latency
//!
//! The latency the design means — how long an event takes from its source to the end of the
//! operator chain — is not known at the source. The simplest honest proxy available there is
//! how long the source's previous hand-off of a batch to the chain (`blocking_send` on the
//! bounded channel) was blocked: it is zero while the chain keeps up, and grows with the
//! backpressure of a chain or sink that does not. The runtime observes that duration after
//! every batch it sends.

use std::time::Duration;

/// The smallest rate a bucket accepts, in events per second; smaller or invalid rates are
/// raised to it rather than dividing by zero.
const MIN_RATE: f64 = 1e-3;

/// The longest wait a bucket returns (a day), so that no arithmetic overflows.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// A token bucket: `burst` tokens at most, refilled at `rate` tokens per second.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens available; negative while a granted request is being paid back.
    tokens: f64,
    /// When the tokens were last brought up to date.
    updated: Duration,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second. A rate that is not a
    /// positive number becomes a thousandth of an event per second; a burst below one, one.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = if burst.is_finite() && burst >= 1.0 {
            burst
        } else if burst.is_infinite() && burst > 0.0 {
            f64::MAX
        } else {
            1.0
        };
        TokenBucket {
            rate: valid_rate(rate),
            burst,
            tokens: burst,
            updated: Duration::ZERO,
        }
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The most tokens the bucket holds.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Tokens available at the last update (negative while in debt).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Changes the rate from `now` on; tokens earned until `now` are earned at the old rate.
    pub fn set_rate(&mut self, rate: f64, now: Duration) {
        self.refill(now);
        self.rate = valid_rate(rate);
    }

    /// Takes `events` tokens at `now` and returns how long the caller must wait before sending
    /// them: zero when the bucket held enough, otherwise the time the refill takes to make up
    /// the difference. A time earlier than the last one counts as the last one.
    pub fn acquire(&mut self, events: u64, now: Duration) -> Duration {
        self.refill(now);
        self.tokens -= events as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let seconds = -self.tokens / self.rate;
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }

    /// Takes `events` tokens at `now` only if the bucket can cover them without waiting, for
    /// callers that cannot wait (HTTP ingest refuses instead). A request larger than the burst
    /// is admitted when the bucket is full, and goes into debt as with [`TokenBucket::acquire`],
    /// so that it is never refused forever. Refused, it returns how long until it would fit.
    pub fn try_acquire(&mut self, events: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        let needed = (events as f64).min(self.burst);
        if self.tokens >= needed {
            self.tokens -= events as f64;
            return Ok(());
        }
        let seconds = (needed - self.tokens) / self.rate;
        Err(Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT))
    }

    fn refill(&mut self, now: Duration) {
        if now > self.updated {
            let earned = (now - self.updated).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.updated = now;
        }
    }
}

fn valid_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        MIN_RATE
    } else {
        rate.clamp(MIN_RATE, f64::MAX)
    }
}

/// A rate that follows observed latency: multiplicative decrease above the target, additive
/// increase well below it, within `[min, max]`, at most once per adjustment interval.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveRate {
    min: f64,
    max: f64,
    target_latency: Duration,
    current: f64,
    /// When the rate last changed.
    adjusted: Option<Duration>,
}

impl AdaptiveRate {
    /// The least time between two adjustments.
    pub const ADJUSTMENT_INTERVAL: Duration = Duration::from_secs(1);
    /// What a decrease multiplies the rate by.
    pub const DECREASE_FACTOR: f64 = 0.9;
    /// What an increase adds, as a fraction of `max`.
    pub const INCREASE_STEP: f64 = 0.1;

    /// A rate starting at `initial`, kept within `[min, max]` (bounds given in the wrong order
    /// are swapped; rates are at least a thousandth of an event per second).
    pub fn new(min: f64, max: f64, target_latency: Duration, initial: f64) -> AdaptiveRate {
        let (min, max) = (valid_rate(min), valid_rate(max));
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        AdaptiveRate {
            min,
            max,
            target_latency,
            current: valid_rate(initial).clamp(min, max),
            adjusted: None,
        }
    }

    /// The current rate, in events per second.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// The lowest rate.
    pub fn min(&self) -> f64 {
        self.min
    }

    /// The highest rate.
    pub fn max(&self) -> f64 {
        self.max
    }

    /// The latency aimed at.
    pub fn target_latency(&self) -> Duration {
        self.target_latency
    }

    /// Takes a latency observed at `now` into account. Returns the new rate if it changed.
    pub fn observe(&mut self, latency: Duration, now: Duration) -> Option<f64> {
        if let Some(adjusted) = self.adjusted {
            if now.saturating_sub(adjusted) < Self::ADJUSTMENT_INTERVAL {
                return None;
            }
        }
        let next = if latency > self.target_latency {
            self.current * Self::DECREASE_FACTOR
        } else if latency < self.target_latency / 10 {
            self.current + self.max * Self::INCREASE_STEP
        } else {
            return None;
        };
        let next = next.clamp(self.min, self.max);
        if next == self.current {
            return None;
        }
        self.current = next;
        self.adjusted = Some(now);
        Some(next)
    }
}

/// What a source runs its batches through: a token bucket, adapted to the observed latency
/// when the spec asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimiter {
    bucket: TokenBucket,
    adaptive: Option<AdaptiveRate>,
}

impl RateLimiter {
    /// A limiter as `spec` describes.
    pub fn new(spec: &RateLimitSpec) -> RateLimiter {
        let rate = spec.events_per_second as f64;
        RateLimiter {
            bucket: TokenBucket::new(rate, spec.burst as f64),
            adaptive: spec.adaptive.as_ref().map(|adaptive| {
                AdaptiveRate::new(
                    adaptive.min as f64,
                    adaptive.max as f64,
                    Duration::from_millis(u64::try_from(adaptive.target_latency).unwrap_or(0)),
                    rate,
                )
            }),
        }
    }

    /// The largest batch worth reading at once: the burst, and no more than a tenth of a
    /// second's events at the current rate (at least one), so that a batch the bucket cannot
    /// cover waits about a tenth of a second — and a checkpoint barrier behind it no longer.
    pub fn max_batch(&self) -> usize {
        let events = self.bucket.burst().min(self.bucket.rate() / 10.0).floor();
        if events >= usize::MAX as f64 {
            usize::MAX
        } else {
            (events as usize).max(1)
        }
    }

    /// The current rate, in events per second.
    pub fn rate(&self) -> f64 {
        self.bucket.rate()
    }

    /// How long to wait at `now` before sending `events`.
    pub fn acquire(&mut self, events: u64, now: Duration) -> Duration {
        self.bucket.acquire(events, now)
    }

    /// Takes `events` tokens at `now` if they are there now: see [`TokenBucket::try_acquire`].
    pub fn try_acquire(&mut self, events: u64, now: Duration) -> Result<(), Duration> {
        self.bucket.try_acquire(events, now)
    }

    /// How long the previous send was blocked, observed at `now` (adaptive mode only).
    pub fn observe(&mut self, blocked: Duration, now: Duration) {
        if let Some(adaptive) = &mut self.adaptive {
            if let Some(rate) = adaptive.observe(blocked, now) {
                self.bucket.set_rate(rate, now);
            }
        }
    }
}

/// Per-source rate limiting: a token bucket in front of the source's sends, optionally adapted
/// to backpressure .
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSpec {
    /// The sustained rate, in events per second (the starting rate in adaptive mode).
    pub events_per_second: u64,
    /// How many events may go at once after a pause (the bucket's size).
    pub burst: u64,
    /// Adapt the rate to observed latency, if set.
    pub adaptive: Option<AdaptiveSpec>,
}

impl RateLimitSpec {
    /// A limit of `events_per_second`, with the default burst: a tenth of a second's events,
    /// at least one.
    pub fn new(events_per_second: u64) -> RateLimitSpec {
        RateLimitSpec {
            events_per_second,
            burst: Self::default_burst(events_per_second),
            adaptive: None,
        }
    }

    /// The burst used when none is given: `events_per_second / 10`, at least 1.
    pub fn default_burst(events_per_second: u64) -> u64 {
        (events_per_second / 10).max(1)
    }

    /// The same limit with another burst.
    pub fn with_burst(mut self, burst: u64) -> RateLimitSpec {
        self.burst = burst;
        self
    }

    /// The same limit, adapted to latency as `adaptive` says.
    pub fn with_adaptive(mut self, adaptive: AdaptiveSpec) -> RateLimitSpec {
        self.adaptive = Some(adaptive);
        self
    }

    /// What is wrong with the settings, as sentence fragments naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.events_per_second == 0 {
            problems.push("`events_per_second` must be at least 1".to_string());
        }
        if self.burst == 0 {
            problems.push("`burst` must be at least 1".to_string());
        }
        if let Some(adaptive) = &self.adaptive {
            if adaptive.target_latency <= 0 {
                problems.push("`adaptive.target_latency` must be greater than zero".to_string());
            }
            if adaptive.min == 0 {
                problems.push("`adaptive.min` must be at least 1".to_string());
            }
            if adaptive.min > adaptive.max {
                problems.push(format!(
                    "`adaptive.min` ({}) is larger than `adaptive.max` ({})",
                    adaptive.min, adaptive.max
                ));
            } else if !(adaptive.min..=adaptive.max).contains(&self.events_per_second) {
                problems.push(format!(
                    "`events_per_second` ({}) must lie between `adaptive.min` ({}) and `adaptive.max` ({})",
                    self.events_per_second, adaptive.min, adaptive.max
                ));
            }
        }
        problems
    }
}

/// Adaptive rate limiting: lower the rate when latency is above a target, raise it when well
/// below, within bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveSpec {
    /// The latency aimed at, in milliseconds.
    pub target_latency: i64,
    /// The lowest rate, in events per second.
    pub min: u64,
    /// The highest rate, in events per second.
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `total` events in batches of `batch` through `bucket` on a simulated clock that
    /// starts at `start` and advances only by the waits; returns the clock at the end.
    fn send_all(bucket: &mut TokenBucket, total: u64, batch: u64, start: Duration) -> Duration {
        let mut now = start;
        let mut sent = 0;
        while sent < total {
            let n = batch.min(total - sent);
            now += bucket.acquire(n, now);
            sent += n;
        }
        now
    }

    #[test]
    fn a_bucket_holds_its_rate_over_a_long_run() {
        for batch in [1, 7, 64, 100, 1024] {
            let mut bucket = TokenBucket::new(1_000.0, 100.0);
            let elapsed = send_all(&mut bucket, 10_000, batch, Duration::ZERO);
            // The first 100 events are the burst; the other 9,900 take 9.9 s.
            let seconds = elapsed.as_secs_f64();
            assert!(
                (9.9..=10.1).contains(&seconds),
                "batch {batch}: 10,000 events took {seconds} s"
            );
        }
    }

    #[test]
    fn a_bucket_lets_a_burst_through_at_once_then_paces() {
        let mut bucket = TokenBucket::new(1_000.0, 100.0);
        let now = Duration::ZERO;
        for _ in 0..10 {
            assert_eq!(bucket.acquire(10, now), Duration::ZERO);
        }
        // Empty now: the next event waits for one token, a millisecond.
        assert_eq!(bucket.acquire(1, now), Duration::from_millis(1));
        // After a long pause the bucket is full again, but not fuller than its burst.
        let later = Duration::from_secs(60);
        assert_eq!(bucket.acquire(100, later), Duration::ZERO);
        assert_eq!(bucket.acquire(1, later), Duration::from_millis(1));
    }

    #[test]
    fn try_acquire_admits_only_what_the_bucket_covers_and_holds_the_rate() {
        let mut bucket = TokenBucket::new(1_000.0, 100.0);
        assert_eq!(bucket.try_acquire(60, Duration::ZERO), Ok(()));
        // 40 left: 50 are refused, and told to come back when 10 more have been earned.
        assert_eq!(
            bucket.try_acquire(50, Duration::ZERO),
            Err(Duration::from_millis(10))
        );
        assert_eq!(bucket.try_acquire(40, Duration::ZERO), Ok(()));
        // Larger than the burst: admitted once the bucket is full, then the debt is paid back.
        assert!(bucket.try_acquire(250, Duration::from_millis(50)).is_err());
        assert_eq!(bucket.try_acquire(250, Duration::from_millis(100)), Ok(()));
        assert!(bucket.try_acquire(1, Duration::from_millis(150)).is_err());
        // Offered 10 events every millisecond for 10 s of simulated time, it admits the burst
        // plus the rate: 100 + 10,000 (within one request).
        let mut bucket = TokenBucket::new(1_000.0, 100.0);
        let mut admitted = 0;
        for ms in 0..10_000u64 {
            if bucket.try_acquire(10, Duration::from_millis(ms)).is_ok() {
                admitted += 10;
            }
        }
        assert!((10_000..=10_100).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn a_bucket_refills_continuously() {
        let mut bucket = TokenBucket::new(1_000.0, 100.0);
        assert_eq!(bucket.acquire(100, Duration::ZERO), Duration::ZERO);
        // 50 ms refill 50 tokens: 50 events go at once, 60 wait for 10 more.
        let now = Duration::from_millis(50);
        assert_eq!(bucket.acquire(50, now), Duration::ZERO);
        let now = Duration::from_millis(100);
        assert_eq!(bucket.acquire(60, now), Duration::from_millis(10));
    }

    #[test]
    fn a_request_larger_than_the_burst_waits_in_proportion() {
        let mut bucket = TokenBucket::new(1_000.0, 100.0);
        // 5,000 events: the 100 of the burst go at once, the other 4,900 take 4.9 s.
        let wait = bucket.acquire(5_000, Duration::ZERO);
        assert_eq!(wait, Duration::from_millis(4_900));
        // Having waited, the caller is paid up: the bucket is empty, not in debt.
        let now = wait;
        assert_eq!(bucket.acquire(1, now), Duration::from_millis(1));
    }

    #[test]
    fn a_bucket_ignores_time_going_backwards_and_bad_settings() {
        let mut bucket = TokenBucket::new(10.0, 1.0);
        assert_eq!(bucket.acquire(1, Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(
            bucket.acquire(1, Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        for (rate, burst) in [
            (0.0, 0.0),
            (-1.0, -5.0),
            (f64::NAN, f64::NAN),
            (f64::INFINITY, f64::INFINITY),
        ] {
            let mut bucket = TokenBucket::new(rate, burst);
            assert!(bucket.rate() > 0.0 && bucket.burst() >= 1.0);
            // Even absurd requests return a bounded wait rather than panic.
            assert!(bucket.acquire(u64::MAX, Duration::ZERO) <= MAX_WAIT);
        }
    }

    #[test]
    fn a_rate_change_applies_from_its_time_on() {
        let mut bucket = TokenBucket::new(1_000.0, 1_000.0);
        assert_eq!(bucket.acquire(1_000, Duration::ZERO), Duration::ZERO);
        // 100 tokens earned at 1,000/s by 100 ms, then 100 ms at 100/s earn 10 more.
        bucket.set_rate(100.0, Duration::from_millis(100));
        assert_eq!(
            bucket.acquire(110, Duration::from_millis(200)),
            Duration::ZERO
        );
        assert_eq!(
            bucket.acquire(1, Duration::from_millis(200)),
            Duration::from_millis(10)
        );
    }

    const TARGET: Duration = Duration::from_millis(100);
    const HIGH: Duration = Duration::from_millis(250);
    const LOW: Duration = Duration::from_millis(5);

    #[test]
    fn high_latency_lowers_the_rate_step_by_step_down_to_min() {
        let mut rate = AdaptiveRate::new(100.0, 1_000.0, TARGET, 1_000.0);
        let mut now = Duration::ZERO;
        let mut seen = vec![rate.current()];
        for _ in 0..100 {
            rate.observe(HIGH, now);
            if rate.current() != *seen.last().unwrap_or(&0.0) {
                seen.push(rate.current());
            }
            now += AdaptiveRate::ADJUSTMENT_INTERVAL;
        }
        // 1000, 900, 810, ... each 90% of the one before, until the floor.
        for pair in seen.windows(2) {
            let expected = (pair[0] * 0.9).max(100.0);
            assert!((pair[1] - expected).abs() < 1e-9, "{seen:?}");
        }
        assert_eq!(rate.current(), 100.0);
        assert!(seen.len() > 10, "{seen:?}");
        assert_eq!(rate.observe(HIGH, now), None, "not below min");
    }

    #[test]
    fn low_latency_raises_the_rate_back_up_to_max() {
        let mut rate = AdaptiveRate::new(100.0, 1_000.0, TARGET, 100.0);
        let mut now = Duration::ZERO;
        let mut steps = 0;
        while rate.observe(LOW, now).is_some() {
            steps += 1;
            now += AdaptiveRate::ADJUSTMENT_INTERVAL;
            assert!(rate.current() <= 1_000.0);
        }
        // Additive: +100 (10% of max) a step, 100 → 1000 in nine steps.
        assert_eq!(steps, 9);
        assert_eq!(rate.current(), 1_000.0);
        now += AdaptiveRate::ADJUSTMENT_INTERVAL;
        assert_eq!(rate.observe(LOW, now), None, "not above max");
        assert_eq!(rate.current(), 1_000.0);
    }

    #[test]
    fn a_latency_within_the_band_leaves_the_rate_alone() {
        let mut rate = AdaptiveRate::new(100.0, 1_000.0, TARGET, 500.0);
        let mut now = Duration::ZERO;
        for latency in [10, 50, 99, 100] {
            assert_eq!(rate.observe(Duration::from_millis(latency), now), None);
            now += AdaptiveRate::ADJUSTMENT_INTERVAL;
        }
        assert_eq!(rate.current(), 500.0);
    }

    #[test]
    fn at_most_one_adjustment_per_interval() {
        let mut rate = AdaptiveRate::new(100.0, 1_000.0, TARGET, 1_000.0);
        assert_eq!(rate.observe(HIGH, Duration::ZERO), Some(900.0));
        // A burst of slow batches within the same second changes nothing more.
        for millis in (10..1_000).step_by(10) {
            assert_eq!(rate.observe(HIGH, Duration::from_millis(millis)), None);
        }
        assert_eq!(rate.current(), 900.0);
        let next = rate.observe(HIGH, Duration::from_secs(1));
        assert!(next.is_some_and(|r| (r - 810.0).abs() < 1e-9), "{next:?}");
    }

    #[test]
    fn an_adaptive_rate_starts_within_its_bounds() {
        assert_eq!(
            AdaptiveRate::new(10.0, 20.0, TARGET, 1_000.0).current(),
            20.0
        );
        assert_eq!(AdaptiveRate::new(10.0, 20.0, TARGET, 1.0).current(), 10.0);
        let swapped = AdaptiveRate::new(20.0, 10.0, TARGET, 15.0);
        assert_eq!((swapped.min(), swapped.max()), (10.0, 20.0));
    }

    #[test]
    fn a_limiter_slows_its_bucket_under_backpressure() {
        let spec = RateLimitSpec::new(1_000).with_adaptive(AdaptiveSpec {
            target_latency: 100,
            min: 100,
            max: 2_000,
        });
        let mut limiter = RateLimiter::new(&spec);
        assert_eq!(limiter.max_batch(), 100);
        assert_eq!(limiter.rate(), 1_000.0);
        limiter.observe(HIGH, Duration::ZERO);
        assert_eq!(limiter.rate(), 900.0);
        limiter.observe(LOW, Duration::from_secs(1));
        assert_eq!(limiter.rate(), 1_100.0);
        // Without `adaptive` observations change nothing.
        let mut fixed = RateLimiter::new(&RateLimitSpec::new(1_000).with_burst(5));
        fixed.observe(HIGH, Duration::ZERO);
        assert_eq!((fixed.rate(), fixed.max_batch()), (1_000.0, 5));
        // Batches hold a tenth of a second's events at most, and at least one.
        let big_burst = RateLimiter::new(&RateLimitSpec::new(1_000).with_burst(100_000));
        assert_eq!(big_burst.max_batch(), 100);
        assert_eq!(RateLimiter::new(&RateLimitSpec::new(3)).max_batch(), 1);
    }

    #[test]
    fn rate_limit_settings_are_checked() {
        assert!(RateLimitSpec::new(10).problems().is_empty());
        assert_eq!(RateLimitSpec::new(5).burst, 1);
        let zero = RateLimitSpec::new(0).with_burst(0);
        assert_eq!(zero.problems().len(), 2, "{:?}", zero.problems());
        let adaptive = |min, max, target_latency| {
            RateLimitSpec::new(100).with_adaptive(AdaptiveSpec {
                target_latency,
                min,
                max,
            })
        };
        assert!(adaptive(10, 1_000, 100).problems().is_empty());
        assert_eq!(adaptive(1_000, 10, 100).problems().len(), 1);
        assert_eq!(adaptive(200, 1_000, 100).problems().len(), 1);
        assert_eq!(adaptive(0, 1_000, 0).problems().len(), 2);
    }
}
