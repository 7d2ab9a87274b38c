//! The audit hook: every access to personal data produces an [`AccessRecord`] that must be
//! durable *before* the answer leaves (fail closed).
//!
//! The gateway talks to an [`AuditSink`]. [`crate::store::AuditStore`] is the durable,
//! hash-chained implementation (SQLite, group commit); [`LogAudit`] only logs and is meant for
//! tools and tests that must not write a store.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::bsn::Bsn;

/// One audited action. Field order is the canonical order hashed into the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessRecord {
    /// `dossier.read`, `access-log.read`, `application.submit`, `adapter.change`, ...
    pub kind: String,
    #[serde(with = "crate::timefmt")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::timefmt")]
    pub time: DateTime<Utc>,
    pub trace_id: String,
    pub span_id: String,
    /// The caller's span when it sent a `traceparent` (Logboek: foreign operation).
    pub foreign_span_id: Option<String>,
    /// `citizen`, `employee`, `partner` or `operator`.
    pub actor_type: String,
    pub actor: String,
    pub actor_organisation: Option<String>,
    pub actor_roles: Vec<String>,
    /// The data subject, when the action concerns one person.
    pub bsn: Option<Bsn>,
    pub view: Option<String>,
    pub purpose: Option<String>,
    pub processing_activity: Option<String>,
    pub sections: Vec<String>,
    /// `(adapter, status)` per source consulted.
    pub sources: Vec<(Arc<str>, String)>,
    /// `served`, `partial`, `refused: ...`, `failed: ...`.
    pub outcome: String,
    /// Kind-specific details (an application id, a descriptor hash).
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl AccessRecord {
    /// A record of `kind` by `actor` (a citizen or employee; `None` for partners and
    /// operators, whose fields the caller sets) at this moment, in trace `trace`, about `bsn`.
    /// Everything else starts empty and outcome `served`.
    pub fn new(
        kind: &str,
        actor: Option<&crate::auth::Actor>,
        trace: &crate::trace::TraceContext,
        bsn: Option<Bsn>,
    ) -> AccessRecord {
        use crate::auth::Actor;
        let now = chrono::Utc::now();
        let (actor_type, organisation, roles) = match actor {
            Some(Actor::Citizen { .. }) => ("citizen", None, Vec::new()),
            Some(Actor::Employee {
                organisation,
                roles,
                ..
            }) => ("employee", Some(organisation.clone()), roles.clone()),
            None => ("partner", None, Vec::new()),
        };
        AccessRecord {
            kind: kind.to_string(),
            started_at: now,
            time: now,
            trace_id: trace.trace_id.clone(),
            span_id: trace.span_id.clone(),
            foreign_span_id: trace.parent_span_id.clone(),
            actor_type: actor_type.to_string(),
            actor: actor.map(|a| a.subject().to_string()).unwrap_or_default(),
            actor_organisation: organisation,
            actor_roles: roles,
            bsn,
            view: None,
            purpose: None,
            processing_activity: None,
            sections: Vec::new(),
            sources: Vec::new(),
            outcome: "served".into(),
            details: None,
        }
    }
}

/// What became of an access whose record was written before its outcome was known (see
/// [`AuditSink::begin`]): when it ended, `served`/`partial`/`failed: ...`, and each source's
/// status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    #[serde(with = "crate::timefmt")]
    pub time: DateTime<Utc>,
    pub outcome: String,
    pub sources: Vec<(Arc<str>, String)>,
}

impl Completion {
    /// The record as it reads with its outcome.
    pub fn apply(self, rec: &mut AccessRecord) {
        rec.time = self.time;
        rec.outcome = self.outcome;
        rec.sources = self.sources;
    }
}

/// A durably written record that an outcome can complete.
#[derive(Debug, Clone, Copy)]
pub struct Begun(pub Option<i64>);

#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written: {0}")]
pub struct AuditError(pub String);

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
