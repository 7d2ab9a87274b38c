//! What the audit log keeps: the [`AccessRecord`] of each audited action, and the
//! [`Completion`] that gives an access written while still under way its outcome. Plain data:
//! the gateway makes them, [`crate::audit`] is the sink they must reach before an answer leaves,
//! and every backend persists them as they are (the record's canonical JSON is what the chain
//! hashes). Nothing here does I/O.

use std::sync::Arc;

use chrono::{DateTime, Utc};
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
/// [`crate::audit::AuditSink::begin`]): when it ended, `served`/`partial`/`failed: ...`, and
/// each source's status.
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
