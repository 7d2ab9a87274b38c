//! Log lines that repeat per request (a source down at 6k req/s, an open circuit, an unwritable
//! store) are let through once per interval, with the number left out since: the log says
//! what happens and how often, the metrics carry the rest. Lock-free: the gate is two atomics
//! checked on the failure path only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often one repeated event is logged.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One repeated event's gate (e.g. one adapter's "Source failed.").
#[derive(Debug)]
pub struct LogGate {
    origin: Instant,
    interval_ms: u64,
    /// Milliseconds after `origin` of the last line let through, plus one (0: never).
    last: AtomicU64,
    /// Events left out since that line.
    suppressed: AtomicU64,
}

impl Default for LogGate {
    fn default() -> Self {
        LogGate::new(INTERVAL)
    }
}

impl LogGate {
    pub fn new(interval: Duration) -> Self {
        LogGate {
            origin: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log this occurrence now; `Some(n)` with the number of occurrences left out
    /// since the last line. Exactly one caller per interval gets `Some`.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let now_ms = now.saturating_duration_since(self.origin).as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_ms < last.saturating_add(self.interval_ms) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self
            .last
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::AcqRel)),
            Err(_) => {
                // Another caller took this interval's line.
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let gate = LogGate::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(gate.admit_at(t0), Some(0));
        for i in 1..=999u64 {
            assert_eq!(gate.admit_at(t0 + Duration::from_millis(i * 9)), None);
        }
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(11)), Some(999));
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(12)), None);
        assert_eq!(gate.admit_at(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn concurrent_callers_get_one_line() {
        let gate = std::sync::Arc::new(LogGate::new(Duration::from_secs(3600)));
        let admitted: u64 = (0..8)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| g.admit().is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap() as u64)
            .sum();
        assert_eq!(admitted, 1);
        assert_eq!(gate.suppressed.load(Ordering::Relaxed), 79_999);
    }
}
