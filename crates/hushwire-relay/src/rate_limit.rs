//! Token buckets keyed by device or by IP address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// One bucket: `rate` tokens per second, holding at most `2 × rate`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets for many keys; forgets full buckets so memory follows active keys only.
pub struct RateLimiter<K> {
    rate: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate` events per second per key, bursts of `2 × rate`.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`: `Ok` if allowed, else how many milliseconds until it would be.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), u32> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let capacity = self.rate * 2.0;
        if buckets.len() > 100_000 {
            // Drop buckets that have refilled: they carry no state worth keeping.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * self.rate < capacity
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate * 1000.0;
            Err(wait.ceil() as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_asks_to_wait_then_refills() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(limiter.check(&"a", t0).is_ok());
        }
        let wait = limiter.check(&"a", t0).unwrap_err();
        assert!((1..=100).contains(&wait), "{wait}");
        assert!(limiter.check(&"b", t0).is_ok(), "keys are independent");
        assert!(limiter.check(&"a", t0 + Duration::from_millis(150)).is_ok());
    }
}
