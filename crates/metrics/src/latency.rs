//! [`Latency`]: how long results took from their source to a sink, as exact quantiles over a
//! run, recorded from any thread without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds counted one by one, from 0 to this bound (exclusive).
const FINE_MS: u64 = 1_000;
/// Beyond [`FINE_MS`], 100 ms buckets up to this bound; later samples count in the last bucket.
const COARSE_MS: u64 = 60_000;
const COARSE_STEP: u64 = 100;
const BUCKETS: usize = (FINE_MS + (COARSE_MS - FINE_MS) / COARSE_STEP + 1) as usize;

/// A histogram of latencies in milliseconds: exact below 1 s, to 100 ms up to 60 s, and one
/// bucket for anything later. Quantiles are the bucket's lower bound.
#[derive(Debug)]
pub struct Latency {
    buckets: Box<[AtomicU64]>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket(millis: u64) -> usize {
    if millis < FINE_MS {
        millis as usize
    } else {
        let coarse = (millis.min(COARSE_MS) - FINE_MS) / COARSE_STEP;
        (FINE_MS + coarse) as usize
    }
}

fn lower_bound(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < FINE_MS {
        bucket
    } else {
        FINE_MS + (bucket - FINE_MS) * COARSE_STEP
    }
}

impl Latency {
    /// Counts `count` results that took `millis` (negative clock steps count as 0).
    pub fn record(&self, millis: i64, count: u64) {
        let index = bucket(millis.max(0) as u64);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// The number of results counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency at quantile `q` (0 to 1) in milliseconds, or `None` before any result.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest latency with at least q of the results at or below it.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(lower_bound(index));
            }
        }
        Some(lower_bound(counts.len() - 1))
    }

    /// The buckets that counted anything, in order: `(lower bound in ms, count)`. Two readings
    /// subtracted give the latencies of the results written between them (the dashboard's
    /// live p50 and p99).
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter_map(|(index, bucket)| {
                let count = bucket.load(Ordering::Relaxed);
                (count > 0).then(|| (lower_bound(index), count))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_a_sorted_list() {
        let latency = Latency::default();
        assert_eq!(latency.quantile(0.5), None);
        let mut samples: Vec<u64> = Vec::new();
        let mut state = 7u64;
        for _ in 0..5_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let millis = (state >> 33) % 900;
            samples.push(millis);
            latency.record(millis as i64, 1);
        }
        samples.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.9, 0.99, 1.0] {
            let rank = ((q * samples.len() as f64).ceil() as usize).max(1);
            assert_eq!(latency.quantile(q), Some(samples[rank - 1]), "q = {q}");
        }
        assert_eq!(latency.count(), 5_000);
    }

    #[test]
    fn long_and_odd_latencies_land_in_coarse_buckets() {
        let latency = Latency::default();
        latency.record(-5, 1);
        latency.record(1_250, 1);
        latency.record(10 * 60_000, 2);
        assert_eq!(latency.quantile(0.25), Some(0));
        assert_eq!(latency.quantile(0.5), Some(1_200));
        assert_eq!(latency.quantile(1.0), Some(60_000));
        assert_eq!(latency.buckets(), vec![(0, 1), (1_200, 1), (60_000, 2)]);
    }
}
