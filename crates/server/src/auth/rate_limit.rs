//! Token-bucket rate limiting, one bucket per key (`ip:…`, `token:…`).
//!
//! Each bucket holds up to `burst` requests and refills at `per_minute / 60`
//! per second. Buckets live in one mutex-guarded map; every
//! [`PRUNE_EVERY`] checks, buckets that have refilled completely are
//! dropped (they are indistinguishable from a fresh one), so the map stays
//! as small as the set of recently active keys.
//!
//! With several replicas behind one balancer, each replica's buckets hold
//! and refill at its share of the limit ([`RateLimiter::set_replicas`]: the
//! limit divided by the live replicas, burst at least 1), so a client
//! spread over the replicas gets the configured limit in all and never
//! more; one that sticks to a replica gets that replica's share.
//!
//! [`AuditThrottle`] bounds the audit rows of refusals made before any rate
//! limit applies (the IP allowlist): once per key and at most
//! [`THROTTLED_AUDITS`] in all per [`AUDIT_INTERVAL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many checks between two prunings of full buckets.
const PRUNE_EVERY: u64 = 1024;
/// A key's limit hits are audited at most once per this interval, so a
/// flood of refused requests cannot flood the audit log.
const AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// Audit rows an [`AuditThrottle`] lets through per [`AUDIT_INTERVAL`],
/// whatever the number of keys (a client may own many addresses).
pub const THROTTLED_AUDITS: usize = 64;

/// Lets an audit row through once per key and at most
/// [`THROTTLED_AUDITS`] in all per [`AUDIT_INTERVAL`]; what it holds is
/// bounded by that number.
#[derive(Debug, Default)]
pub struct AuditThrottle {
    window: Mutex<Option<(Instant, std::collections::HashSet<String>)>>,
}

impl AuditThrottle {
    /// Whether a refusal for `key` at `now` is audited.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, seen) = w.get_or_insert_with(|| (now, Default::default()));
        if now.saturating_duration_since(*start) >= AUDIT_INTERVAL {
            *start = now;
            seen.clear();
        }
        if seen.len() >= THROTTLED_AUDITS || seen.contains(key) {
            return false;
        }
        seen.insert(key.to_owned());
        true
    }
}

/// The configured limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    /// `N` (per minute, burst `N`) or `N/B` (per minute, burst `B`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rate, burst) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?}: expected N or N/BURST (requests per minute), N > 0"))
        };
        let per_minute = num(rate)?;
        let burst = burst.map(num).transpose()?.unwrap_or(per_minute);
        Ok(Self { per_minute, burst })
    }
}

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; retry after this many seconds. `audit` is true for the
    /// first refusal of the key in a while.
    Deny {
        retry_after_secs: u64,
        audit: bool,
    },
}

struct Bucket {
    tokens: f64,
    last: Instant,
    last_audit: Option<Instant>,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
    checks: AtomicU64,
    /// Live replicas sharing the limit (1 alone).
    replicas: std::sync::atomic::AtomicU32,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            replicas: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// How many replicas share the limit from now on (at least 1).
    pub fn set_replicas(&self, n: u32) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    fn share(&self) -> f64 {
        f64::from(self.replicas.load(Ordering::Relaxed).max(1))
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.limit.per_minute) / 60.0 / self.share()
    }

    /// Takes one request from `key`'s bucket.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let burst = (f64::from(self.limit.burst) / self.share()).max(1.0);
        let per_sec = self.per_sec();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec < burst
            });
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
            last_audit: None,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Decision::Allow;
        }
        let retry_after_secs = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
        let audit = b
            .last_audit
            .is_none_or(|t| now.saturating_duration_since(t) >= AUDIT_INTERVAL);
        if audit {
            b.last_audit = Some(now);
        }
        Decision::Deny {
            retry_after_secs,
            audit,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_share_the_limit() {
        let l = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 10,
        });
        l.set_replicas(2);
        let t0 = Instant::now();
        let allowed = (0..10)
            .filter(|_| l.check("ip:a", t0) == Decision::Allow)
            .count();
        assert_eq!(allowed, 5, "half the burst on each of two replicas");
        // Refills at half the rate: one request per two seconds.
        assert_ne!(
            l.check("ip:a", t0 + Duration::from_secs(1)),
            Decision::Allow
        );
        assert_eq!(
            l.check("ip:a", t0 + Duration::from_secs(3)),
            Decision::Allow
        );
        // Alone again: the whole limit.
        l.set_replicas(1);
        let allowed = (0..20)
            .filter(|_| l.check("ip:b", t0) == Decision::Allow)
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn the_audit_throttle_lets_one_per_key_and_a_bounded_number_through() {
        let t = AuditThrottle::default();
        let t0 = Instant::now();
        assert!(t.allow("a", t0));
        assert!(!t.allow("a", t0 + Duration::from_secs(1)));
        let others = (0..THROTTLED_AUDITS * 2)
            .filter(|i| t.allow(&format!("k{i}"), t0))
            .count();
        assert_eq!(others, THROTTLED_AUDITS - 1);
        // A new interval starts afresh.
        assert!(t.allow("a", t0 + AUDIT_INTERVAL));
    }

    #[test]
    fn parses() {
        assert_eq!(
            RateLimit::parse("120").unwrap(),
            RateLimit {
                per_minute: 120,
                burst: 120
            }
        );
        assert_eq!(RateLimit::parse("60/5").unwrap().burst, 5);
        assert!(RateLimit::parse("0").is_err());
        assert!(RateLimit::parse("x/1").is_err());
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let l = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("k", t0), Decision::Allow);
        }
        assert_eq!(
            l.check("k", t0),
            Decision::Deny {
                retry_after_secs: 1,
                audit: true
            }
        );
        // Second refusal inside the audit interval is not audited again.
        assert_eq!(
            l.check("k", t0),
            Decision::Deny {
                retry_after_secs: 1,
                audit: false
            }
        );
        // Other keys are independent.
        assert_eq!(l.check("other", t0), Decision::Allow);
        assert_eq!(l.check("k", t0 + Duration::from_secs(1)), Decision::Allow);
    }

    #[test]
    fn retry_after_reflects_the_refill_rate() {
        let l = RateLimiter::new(RateLimit {
            per_minute: 2,
            burst: 1,
        });
        let t0 = Instant::now();
        assert_eq!(l.check("k", t0), Decision::Allow);
        assert!(matches!(
            l.check("k", t0),
            Decision::Deny {
                retry_after_secs: 30,
                ..
            }
        ));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let l = RateLimiter::new(RateLimit {
            per_minute: 60,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..PRUNE_EVERY - 1 {
            l.check(&format!("k{i}"), t0);
        }
        assert_eq!(l.len() as u64, PRUNE_EVERY - 1);
        l.check("last", t0 + Duration::from_secs(5));
        assert_eq!(l.len(), 1);
    }
}
