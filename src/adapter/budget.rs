//! The gateway-wide budget for source answers in flight (`limits.max_inflight_response_bytes`).
//!
//! Each answer is capped on its own (`max_response_body`), but many calls at once could still
//! hold any number of such answers. Every call reserves what its answer takes while it is read
//! and mapped: twice its size (its bytes, and an allowance for the records mapped from them),
//! for the Content-Length up front, or as the buffer grows. A call that would take the total
//! past the budget fails at once with [`SourceError::OverBudget`], before it reads more;
//! nothing waits for room. A [`Reservation`] gives its bytes back when it is dropped, on every
//! path (answer, error, cancelled call).
//!
//! This module owns the count only; what happens to a refused call (not a source failure, no
//! retry) is the resilience stack's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::SourceError;

/// Bytes of answers in flight across every adapter, against a limit that a reload may change.
#[derive(Debug)]
pub struct InflightBudget {
    limit: AtomicU64,
    used: AtomicU64,
}

impl InflightBudget {
    pub fn new(limit: u64) -> Arc<InflightBudget> {
        Arc::new(InflightBudget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
        })
    }

    /// A new limit (after a reload); reservations already held stay.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, to grow as the answer arrives.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Some(self.clone()),
            held: 0,
        }
    }

    fn take(&self, bytes: u64) -> Result<(), SourceError> {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .map(|_| ())
            .map_err(|_| SourceError::OverBudget(limit))
    }
}

/// Bytes held by one answer in flight; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    /// `None`: no budget applies (a client built outside the gateway, e.g. `adapter test`).
    budget: Option<Arc<InflightBudget>>,
    held: u64,
}

impl Reservation {
    /// A reservation that counts nothing.
    pub fn unbounded() -> Reservation {
        Reservation {
            budget: None,
            held: 0,
        }
    }

    /// Holds `total` bytes in all: takes the difference from the budget, or gives it back.
    /// Fails, holding what it held, when the budget has no room for the growth.
    pub fn hold(&mut self, total: u64) -> Result<(), SourceError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if total > self.held {
            budget.take(total - self.held)?;
        } else {
            budget.used.fetch_sub(self.held - total, Ordering::AcqRel);
        }
        self.held = total;
        Ok(())
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.used.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_take_from_the_budget_and_give_back_on_drop() {
        let budget = InflightBudget::new(100);
        let mut a = budget.reservation();
        a.hold(60).unwrap();
        let mut b = budget.reservation();
        assert_eq!(b.hold(50), Err(SourceError::OverBudget(100)));
        assert_eq!(b.held(), 0, "a refused growth takes nothing");
        b.hold(40).unwrap();
        assert_eq!(budget.used(), 100);
        a.hold(10).unwrap();
        assert_eq!(budget.used(), 50, "shrinking gives back");
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
        // A lower limit after a reload refuses new growth, and holds nothing back.
        let mut c = budget.reservation();
        c.hold(80).unwrap();
        budget.set_limit(50);
        let mut d = budget.reservation();
        assert!(d.hold(1).is_err());
        drop(c);
        d.hold(50).unwrap();
        assert!(Reservation::unbounded().hold(u64::MAX).is_ok());
    }
}
