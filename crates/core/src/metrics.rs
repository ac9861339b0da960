//! Counters and latency histograms the core keeps about itself; the server
//! renders them (Prometheus text) without the core knowing any format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
];

/// A cumulative histogram over [`LATENCY_BUCKETS`], lock-free.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// One histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, b) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: LATENCY_BUCKETS
                .iter()
                .zip(&self.buckets)
                .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What the core measures.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// Create request to the first `ready` (container, sessiond, clone,
    /// Claude Code).
    pub spawn_seconds: Histogram,
    /// A command accepted to the end of its turn.
    pub command_seconds: Histogram,
    /// Sessions ended by the idle timeout or the maximum lifetime.
    pub reaped_total: AtomicU64,
    /// Sessions put to sleep (idle, or asked to) and woken again.
    pub slept_total: AtomicU64,
    pub woken_total: AtomicU64,
    /// A wake request to the session's `ready` again.
    pub wake_seconds: Histogram,
    /// Sessions failed because their container exited or vanished.
    pub container_failures_total: AtomicU64,
    /// Processes in live sessions the kernel killed for exceeding the
    /// session's memory limit (the session lived on).
    pub oom_kills_total: AtomicU64,
    /// Sessions ended because their workspace outgrew its size limit.
    pub workspace_limit_exceeded_total: AtomicU64,
    /// Sessions adopted from a previous orchestrator.
    pub adopted_total: AtomicU64,
    /// Resources of unknown or ended sessions removed by the reconciler.
    pub orphans_removed_total: AtomicU64,
}

impl CoreMetrics {
    pub fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(80));
        h.observe(Duration::from_secs(4));
        let s = h.snapshot();
        assert_eq!(s.count, 2);
        assert_eq!(s.buckets[0], (0.05, 0));
        assert_eq!(s.buckets[1], (0.1, 1));
        assert_eq!(s.buckets.iter().find(|b| b.0 == 5.0).unwrap().1, 2);
        assert!((s.sum_secs - 4.08).abs() < 1e-6);
    }
}
