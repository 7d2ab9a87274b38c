//! The audit hook: every access to personal data produces an [`AccessRecord`] that must be
//! durable *before* the answer leaves (fail closed).
//!
//! The gateway talks to an [`AuditSink`]. [`AuditStore`] is the durable, hash-chained
//! implementation; [`LogAudit`] only logs and is meant for tools and tests that must not write a
//! store. This module depends on [`crate::store`] (which keeps the records, and owns their
//! types), never the other way round.

use futures::FutureExt;
use futures::future::BoxFuture;

pub use crate::store::{AccessRecord, Completion};
use crate::store::{AuditStore, StoreError};

/// A durably written record that an outcome can complete.
#[derive(Debug, Clone, Copy)]
pub struct Begun(pub Option<i64>);

#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written: {0}")]
pub struct AuditError(pub String);

impl From<StoreError> for AuditError {
    /// Why the store did not write it: the writer's own words for a change it gave up on.
    fn from(e: StoreError) -> AuditError {
        match e {
            StoreError::NotWritten { reason, .. } => AuditError(reason),
            e => AuditError(e.to_string()),
        }
    }
}

/// Where access records go. `record` returns only once the record is durable.
pub trait AuditSink: Send + Sync {
    /// Takes the record by value: a durable sink serialises it on the caller's thread and
    /// moves it to its writer without a copy.
    fn record(&self, rec: AccessRecord) -> BoxFuture<'_, Result<(), AuditError>>;

    /// Writes the record of an access that is still under way (outcome `requested`), durably,
    /// so that the write can overlap the fan-out. The answer still waits for it (fail closed).
    fn begin(&self, rec: AccessRecord) -> BoxFuture<'_, Result<Begun, AuditError>> {
        Box::pin(async move { self.record(rec).await.map(|()| Begun(None)) })
    }

    /// Attaches the outcome to a record written by `begin`. The answer does not wait for it:
    /// the access itself is already on record.
    fn complete(&self, begun: Begun, outcome: &Completion) {
        let _ = (begun, outcome);
    }
}

/// Writes access records to the log (target `audit`), with the BSN masked. Not durable.
pub struct LogAudit;

impl AuditSink for LogAudit {
    fn record(&self, rec: AccessRecord) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            tracing::info!(
                target: "audit",
                kind = %rec.kind,
                trace_id = %rec.trace_id,
                actor_type = %rec.actor_type,
                actor = %rec.actor,
                organisation = rec.actor_organisation.as_deref().unwrap_or("-"),
                bsn = %rec.bsn.map(|b| b.masked()).unwrap_or_default(),
                view = rec.view.as_deref().unwrap_or("-"),
                purpose = rec.purpose.as_deref().unwrap_or("-"),
                outcome = %rec.outcome,
                "Audited."
            );
            Ok(())
        })
    }

    fn complete(&self, _: Begun, outcome: &Completion) {
        tracing::info!(target: "audit", outcome = %outcome.outcome, "Access completed.");
    }
}

/// The durable sink: a record is appended to the store's chain; one begun while its access is
/// under way is completed by an outcome bound to it.
impl AuditSink for AuditStore {
    fn record(&self, rec: AccessRecord) -> BoxFuture<'_, Result<(), AuditError>> {
        // The store's future as it is: wrapping it in an `async` block moved the record into
        // a second, larger allocation (two of ~1 KiB per cached dossier read).
        Box::pin(
            self.append(rec)
                .map(|r| r.map(|_| ()).map_err(AuditError::from)),
        )
    }

    fn begin(&self, rec: AccessRecord) -> BoxFuture<'_, Result<Begun, AuditError>> {
        Box::pin(
            self.append(rec)
                .map(|r| r.map(|seq| Begun(Some(seq))).map_err(AuditError::from)),
        )
    }

    fn complete(&self, begun: Begun, outcome: &Completion) {
        let Begun(Some(seq)) = begun else { return };
        self.append_outcome(seq, outcome);
    }
}
