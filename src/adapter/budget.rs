//! The gateway-wide budget for source answers in flight (`limits.max_inflight_response_bytes`).
//!
//! Each answer is capped on its own (`max_response_body`), but many calls at once could still
//! hold any number of such answers. Every call reserves what its answer takes while it is read
//! and mapped: twice its size (its bytes, and an allowance for the records mapped from them),
//! as the buffer grows with what has arrived. A call that would take the total past the budget
//! fails at once with [`SourceError::OverBudget`], before it reads more; nothing waits for
//! room. A [`Reservation`] gives its bytes back when it is dropped, on every path (answer,
//! error, cancelled call).
//!
//! One organisation's answers together may hold only its share of the budget
//! (`limits.max_inflight_percent_per_organisation`), counted in a [`Share`]: a source that
//! announces large answers and sends them slowly, or many calls to one registered adapter,
//! cannot leave the other organisations' sources without room ([`SourceError::OverShare`]).
//!
//! This module owns the count only; what happens to a refused call (not a source failure, no
//! retry) is the resilience stack's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::SourceError;

/// Bytes of answers in flight across every adapter, against a limit that a reload may change.
#[derive(Debug)]
pub struct InflightBudget {
    limit: AtomicU64,
    used: AtomicU64,
    /// The percentage of `limit` that one organisation's answers may hold together.
    share_percent: AtomicU64,
    /// Each organisation's count, made when its first adapter is built and kept (organisations
    /// are the config's, so this stays small); a reload keeps the counts of calls in flight.
    shares: Mutex<HashMap<Arc<str>, Arc<Share>>>,
}

/// What one organisation's answers in flight hold now.
#[derive(Debug)]
pub struct Share {
    organisation: Arc<str>,
    used: AtomicU64,
}

impl Share {
    /// Bytes this organisation's answers hold now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl InflightBudget {
    /// A budget of `limit` bytes, of which one organisation may hold `share_percent` (1 to 100).
    pub fn new(limit: u64, share_percent: u8) -> Arc<InflightBudget> {
        Arc::new(InflightBudget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            share_percent: AtomicU64::new(u64::from(share_percent.clamp(1, 100))),
            shares: Mutex::new(HashMap::new()),
        })
    }

    /// New limits (after a reload); reservations already held stay.
    pub fn set_limits(&self, limit: u64, share_percent: u8) {
        self.limit.store(limit, Ordering::Relaxed);
        self.share_percent
            .store(u64::from(share_percent.clamp(1, 100)), Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// What one organisation's answers may hold together now.
    pub fn share_limit(&self) -> u64 {
        share_of(self.limit(), self.share_percent.load(Ordering::Relaxed))
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The count of `organisation`'s answers, the same for every adapter of it.
    pub fn share(&self, organisation: &Arc<str>) -> Arc<Share> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(organisation.clone())
            .or_insert_with(|| {
                Arc::new(Share {
                    organisation: organisation.clone(),
                    used: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// An empty reservation, to grow as the answer arrives, counted against the whole budget
    /// and, when given, against one organisation's share.
    pub fn reservation(self: &Arc<Self>, share: Option<&Arc<Share>>) -> Reservation {
        Reservation {
            budget: Some(self.clone()),
            share: share.cloned(),
            held: 0,
        }
    }

    fn take(&self, bytes: u64, share: Option<&Share>) -> Result<(), SourceError> {
        if let Some(share) = share {
            let cap = self.share_limit();
            share
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(bytes).filter(|total| *total <= cap)
                })
                .map_err(|_| SourceError::OverShare {
                    organisation: share.organisation.to_string(),
                    bytes: cap,
                })?;
        }
        let limit = self.limit();
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            });
        if taken.is_err() {
            if let Some(share) = share {
                share.used.fetch_sub(bytes, Ordering::AcqRel);
            }
            return Err(SourceError::OverBudget(limit));
        }
        Ok(())
    }

    fn give_back(&self, bytes: u64, share: Option<&Share>) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(share) = share {
            share.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// `percent` of `limit` bytes: one organisation's share of the budget (also what the config
/// check holds the largest answer against).
pub fn share_of(limit: u64, percent: impl Into<u64>) -> u64 {
    u64::try_from(u128::from(limit) * u128::from(percent.into()) / 100).unwrap_or(u64::MAX)
}

/// Bytes held by one answer in flight; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    /// `None`: no budget applies (a client built outside the gateway, e.g. `adapter test`).
    budget: Option<Arc<InflightBudget>>,
    /// The organisation whose answer this is; `None`: counted against the whole budget only.
    share: Option<Arc<Share>>,
    held: u64,
}

impl Reservation {
    /// A reservation that counts nothing.
    pub fn unbounded() -> Reservation {
        Reservation {
            budget: None,
            share: None,
            held: 0,
        }
    }

    /// Holds `total` bytes in all: takes the difference from the budget, or gives it back.
    /// Fails, holding what it held, when the budget has no room for the growth.
    pub fn hold(&mut self, total: u64) -> Result<(), SourceError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let share = self.share.as_deref();
        if total > self.held {
            budget.take(total - self.held, share)?;
        } else {
            budget.give_back(self.held - total, share);
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
            budget.give_back(self.held, self.share.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_take_from_the_budget_and_give_back_on_drop() {
        let budget = InflightBudget::new(100, 100);
        let mut a = budget.reservation(None);
        a.hold(60).unwrap();
        let mut b = budget.reservation(None);
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
        let mut c = budget.reservation(None);
        c.hold(80).unwrap();
        budget.set_limits(50, 100);
        let mut d = budget.reservation(None);
        assert!(d.hold(1).is_err());
        drop(c);
        d.hold(50).unwrap();
        assert!(Reservation::unbounded().hold(u64::MAX).is_ok());
    }

    #[test]
    fn one_organisation_holds_at_most_its_share_and_leaves_the_rest_to_the_others() {
        let budget = InflightBudget::new(100, 40);
        let uwv = budget.share(&Arc::from("uwv"));
        let svb = budget.share(&Arc::from("svb"));
        assert!(
            Arc::ptr_eq(&uwv, &budget.share(&Arc::from("uwv"))),
            "one count per organisation"
        );
        let mut a = budget.reservation(Some(&uwv));
        a.hold(30).unwrap();
        let mut b = budget.reservation(Some(&uwv));
        assert_eq!(
            b.hold(20),
            Err(SourceError::OverShare {
                organisation: "uwv".into(),
                bytes: 40
            })
        );
        assert_eq!(
            (uwv.used(), budget.used()),
            (30, 30),
            "a refused growth takes nothing"
        );
        // The others still have the rest of the budget.
        let mut c = budget.reservation(Some(&svb));
        c.hold(40).unwrap();
        let mut d = budget.reservation(None);
        d.hold(30).unwrap();
        // The whole budget is full: a growth within the share is refused by the budget, and
        // gives back what it took from the share.
        assert_eq!(b.hold(10), Err(SourceError::OverBudget(100)));
        assert_eq!(uwv.used(), 30);
        drop(d);
        b.hold(10).unwrap();
        assert_eq!((uwv.used(), svb.used(), budget.used()), (40, 40, 80));
        b.hold(5).unwrap();
        assert_eq!(
            (uwv.used(), budget.used()),
            (35, 75),
            "shrinking gives back to both"
        );
        drop((a, b, c));
        assert_eq!((uwv.used(), svb.used(), budget.used()), (0, 0, 0));
        // A reload that raises the share lets more in.
        budget.set_limits(100, 100);
        budget.reservation(Some(&uwv)).hold(100).unwrap();
    }
}
