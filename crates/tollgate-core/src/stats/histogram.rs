//! Decision latency in fixed logarithmic buckets: four per power of two (25% resolution) from 1 µs
//! to about 12 days, so recording is one index computation and one add, whatever the values.

/// Number of buckets; values past the last one land in it.
pub const BUCKETS: usize = 160;

/// The bucket of a latency in microseconds.
pub fn bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let e = 63 - micros.leading_zeros() as usize;
    let mantissa = ((micros >> (e - 2)) & 3) as usize;
    (4 * (e - 1) + mantissa).min(BUCKETS - 1)
}

/// The smallest value of the bucket after `idx`: every value in bucket `idx` is below it.
pub fn upper_bound(idx: usize) -> u64 {
    let next = idx + 1;
    if next < 4 {
        return next as u64;
    }
    let e = next / 4 + 1;
    let mantissa = (next % 4) as u64;
    (4 + mantissa) << (e - 2)
}

/// Counts per bucket.
#[derive(Clone)]
pub struct Histogram {
    pub counts: Box<[u64; BUCKETS]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
        }
    }
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in microseconds, as the upper bound of its bucket, so a reported
    /// p99 is never below the true one by more than the bucket's 25%; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let mut prev = 0;
        for v in 0..100_000u64 {
            let b = bucket(v);
            assert!(
                b == prev || b == prev + 1,
                "value {v} jumped from {prev} to {b}"
            );
            assert!(
                v < upper_bound(b),
                "value {v} not below the bound of its bucket {b}"
            );
            if b > 0 {
                assert!(
                    v >= upper_bound(b - 1),
                    "value {v} below its bucket {b}'s start"
                );
            }
            prev = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_a_quarter() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((500..=640).contains(&p50), "p50 {p50}");
        assert!((990..=1280).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
