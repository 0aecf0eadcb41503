//! Token buckets keyed by device, by IP address or by (sender, recipient) pair.
//!
//! Buckets live in memory, per relay instance: with several PostgreSQL instances each enforces
//! its own share (`docs/relay-protocol.md` §6). A full bucket carries no state, so buckets that
//! have refilled are forgotten once a limiter tracks many keys: memory follows active keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Above this many keys, refilled buckets are dropped before a new one is added.
const PRUNE_ABOVE: usize = 100_000;

/// One bucket's refill: `rate` tokens per second, holding at most `capacity`.
#[derive(Clone, Copy, Debug)]
struct Refill {
    rate: f64,
    capacity: f64,
}

/// One bucket's state.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Refill {
    fn full(self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.capacity,
            updated: now,
        }
    }

    /// Tokens in `b` at `now`.
    fn level(self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.capacity)
    }

    /// Milliseconds until `b` holds `cost` tokens, given `level` now; 0 if it does.
    fn wait_ms(self, level: f64, cost: f64) -> u32 {
        if level >= cost {
            0
        } else {
            // A cost above capacity can never be met: ask for the longest sensible wait.
            let missing = (cost.min(self.capacity) - level).max(0.0);
            ((missing / self.rate * 1000.0).ceil() as u32).max(1)
        }
    }
}

/// Buckets for many keys, each `rate` events per second with bursts up to a capacity.
pub struct RateLimiter<K> {
    refill: Refill,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate` events per second per key, bursts of `2 × rate`.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self::with_refill(rate, rate * 2.0)
    }

    /// A limiter allowing `per_minute` events per minute per key, bursts of `per_minute`.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = f64::from(per_minute.max(1));
        Self::with_refill(n / 60.0, n)
    }

    fn with_refill(rate: f64, capacity: f64) -> Self {
        Self {
            refill: Refill { rate, capacity },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`: `Ok` if allowed, else how many milliseconds until it would be.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), u32> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let refill = self.refill;
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| refill.level(b, now) < refill.capacity);
        }
        let bucket = buckets.entry(key.clone()).or_insert(refill.full(now));
        let level = refill.level(bucket, now);
        *bucket = Bucket {
            tokens: level,
            updated: now,
        };
        match refill.wait_ms(level, 1.0) {
            0 => {
                bucket.tokens -= 1.0;
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

/// Two buckets per key, both of which an event must fit: envelopes and bytes sent from one
/// sender to one recipient (`docs/relay-protocol.md` §5). Either all of an event's cost is
/// taken or none.
pub struct PairLimiter<K> {
    envelopes: Refill,
    bytes: Refill,
    buckets: Mutex<HashMap<K, [Bucket; 2]>>,
}

impl<K: Eq + Hash + Clone> PairLimiter<K> {
    /// `envelopes_per_sec` envelopes and `bytes_per_sec` bytes per second per key, each with
    /// bursts of twice that.
    pub fn new(envelopes_per_sec: u32, bytes_per_sec: u64) -> Self {
        let e = f64::from(envelopes_per_sec.max(1));
        let b = bytes_per_sec.max(1) as f64;
        Self {
            envelopes: Refill {
                rate: e,
                capacity: e * 2.0,
            },
            bytes: Refill {
                rate: b,
                capacity: b * 2.0,
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `envelopes` and `bytes` for `key`: `Ok` if both fit (both taken), else the
    /// milliseconds until both would (nothing taken).
    pub fn take(&self, key: &K, envelopes: u32, bytes: u64, now: Instant) -> Result<(), u32> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (er, br) = (self.envelopes, self.bytes);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, [e, b]| {
                er.level(e, now) < er.capacity || br.level(b, now) < br.capacity
            });
        }
        let [e, b] = buckets
            .entry(key.clone())
            .or_insert([er.full(now), br.full(now)]);
        let (el, bl) = (er.level(e, now), br.level(b, now));
        let (ec, bc) = (f64::from(envelopes), bytes as f64);
        let wait = er.wait_ms(el, ec).max(br.wait_ms(bl, bc));
        if wait > 0 {
            return Err(wait);
        }
        *e = Bucket {
            tokens: el - ec,
            updated: now,
        };
        *b = Bucket {
            tokens: bl - bc,
            updated: now,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    #[test]
    fn per_minute_bursts_its_count_then_refills_one_per_interval() {
        let limiter = RateLimiter::per_minute(6);
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limiter.check(&1, t0).is_ok());
        }
        let wait = limiter.check(&1, t0).unwrap_err();
        assert!((9_000..=10_000).contains(&wait), "{wait}");
        assert!(limiter.check(&1, t0 + Duration::from_secs(10)).is_ok());
        assert!(limiter.check(&1, t0 + Duration::from_secs(10)).is_err());
    }

    /// The byte bucket refuses on its own, and a refusal takes nothing from either bucket.
    #[test]
    fn pair_limiter_counts_envelopes_and_bytes_all_or_nothing() {
        let limiter = PairLimiter::new(10, 1000);
        let t0 = Instant::now();
        assert!(limiter.take(&"p", 1, 1500, t0).is_ok());
        // 500 bytes left: a 600-byte envelope waits 100 ms, and takes no envelope token.
        assert_eq!(limiter.take(&"p", 1, 600, t0), Err(100));
        for _ in 0..19 {
            assert!(limiter.take(&"p", 1, 0, t0).is_ok());
        }
        assert!(
            limiter.take(&"p", 1, 0, t0).is_err(),
            "20 envelopes is the burst"
        );
        assert!(
            limiter.take(&"q", 1, 2000, t0).is_ok(),
            "keys are independent"
        );
        assert!(
            limiter
                .take(&"p", 1, 600, t0 + Duration::from_millis(200))
                .is_ok()
        );
    }
}
