//! The audit hook: every dossier access produces an [`AccessRecord`] that must be written
//! *before* the answer leaves (fail closed).
//!
//! The gateway talks to an [`AuditSink`]; the durable, hash-chained store plugs in behind this
//! trait. [`LogAudit`] writes records as structured log events: enough for development, not
//! a substitute for the store in production.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::bsn::Bsn;

/// One access to one citizen's dossier.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    pub time: DateTime<Utc>,
    pub trace_id: String,
    /// `citizen` or `employee`.
    pub actor_type: &'static str,
    pub actor: String,
    pub actor_organisation: Option<String>,
    pub actor_roles: Vec<String>,
    pub bsn: Bsn,
    pub view: String,
    pub purpose: Option<String>,
    pub processing_activity: Option<String>,
    pub sections: Vec<String>,
    /// `(adapter, status)` per source consulted.
    pub sources: Vec<(Arc<str>, &'static str)>,
    /// `served`, `partial`, or the error that ended the request.
    pub outcome: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written: {0}")]
pub struct AuditError(pub String);

/// Where access records go. `record` returns only once the record is durable.
pub trait AuditSink: Send + Sync {
    fn record<'a>(&'a self, rec: &'a AccessRecord) -> BoxFuture<'a, Result<(), AuditError>>;
}

/// Writes access records to the log (target `audit`), with the BSN masked.
pub struct LogAudit;

impl AuditSink for LogAudit {
    fn record<'a>(&'a self, rec: &'a AccessRecord) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            tracing::info!(
                target: "audit",
                trace_id = %rec.trace_id,
                actor_type = rec.actor_type,
                actor = %rec.actor,
                organisation = rec.actor_organisation.as_deref().unwrap_or("-"),
                bsn = %rec.bsn.masked(),
                view = %rec.view,
                purpose = rec.purpose.as_deref().unwrap_or("-"),
                outcome = %rec.outcome,
                "Dossier accessed."
            );
            Ok(())
        })
    }
}
