//! The access log (inzage): a citizen reads who looked at their dossier, when and why; an
//! auditor reads every record about one citizen. Each read of the log is itself recorded,
//! fail closed, before anything is shown.

use serde_json::{Value, json};

use super::App;
use crate::audit::{AccessRecord, AuditError, AuditSink};
use crate::auth::Actor;
use crate::bsn::Bsn;
use crate::store::StoreError;
use crate::trace::TraceContext;

/// The most entries a citizen's own access log shows.
const CITIZEN_ENTRIES: u32 = 500;

/// Why the access log is not shown.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("this endpoint is for citizens; auditors use POST /v1/audit/access-log")]
    NotACitizen,
    #[error("only auditors may query the access log of a citizen")]
    NotAnAuditor,
    #[error("this gateway runs without a store")]
    NoStore,
    #[error("the store: {0}")]
    Store(StoreError),
    /// This read could not be recorded, so nothing is shown.
    #[error(transparent)]
    Audit(AuditError),
}

/// A citizen's own access log: the dossier reads about them and employees' reads of their
/// applications, each with who (in the citizen's words), the organisation, view, purpose and
/// its description, sections and outcome.
pub async fn citizen(
    app: &App,
    actor: &Actor,
    trace: &TraceContext,
) -> Result<(Bsn, Vec<Value>), LogError> {
    let Actor::Citizen { bsn, .. } = actor else {
        return Err(LogError::NotACitizen);
    };
    let bsn = *bsn;
    let store = app.store.as_ref().ok_or(LogError::NoStore)?;
    let rows = store
        .by_subject(bsn, CITIZEN_ENTRIES)
        .await
        .map_err(LogError::Store)?;
    let rt = app.gateway.runtime();
    let orgs = &rt.config.gateway.organisations;
    let views = &rt.config.gateway.views;
    let entries = rows
        .iter()
        .filter(|(_, r)| {
            r.kind == "dossier.read" || (r.kind == "application.read" && r.actor_type != "citizen")
        })
        .map(|(_, r)| {
            // An employee's read of one of the citizen's applications shows as a read of
            // their applications (`zaken`).
            let sections = if r.kind == "application.read" {
                vec!["zaken".to_string()]
            } else {
                r.sections.clone()
            };
            let purpose_description = r
                .view
                .as_ref()
                .and_then(|v| views.get(v))
                .and_then(|v| r.purpose.as_ref().and_then(|p| v.purposes.get(p)))
                .map(|p| p.description.clone());
            json!({
                "time": r.time,
                "by": if r.actor_type == "citizen" { "u zelf" } else { "medewerker" },
                "organisation": r.actor_organisation,
                "organisation_name": r.actor_organisation.as_ref().and_then(|o| orgs.get(o)).map(|o| o.name.clone()),
                "roles": r.actor_roles,
                "view": r.view,
                "purpose": r.purpose,
                "purpose_description": purpose_description,
                "sections": sections,
                "outcome": r.outcome,
            })
        })
        .collect();
    record_read(app, actor, bsn, None, trace).await?;
    Ok((bsn, entries))
}

/// Refuses a caller without an auditor role (`audit.auditor_roles`), or of an organisation
/// not in `audit.auditor_organisations` when that is set.
pub fn require_auditor(app: &App, actor: &Actor) -> Result<(), LogError> {
    let rt = app.gateway.runtime();
    let allowed = match actor {
        Actor::Employee {
            roles,
            organisation,
            ..
        } => {
            let audit = &rt.config.gateway.audit;
            roles.iter().any(|r| audit.auditor_roles.contains(r))
                && (audit.auditor_organisations.is_empty()
                    || audit.auditor_organisations.contains(organisation))
        }
        Actor::Citizen { .. } => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(LogError::NotAnAuditor)
    }
}

/// Every record about `bsn`, at most `limit`, for an auditor (purpose `toezicht`).
pub async fn auditor(
    app: &App,
    actor: &Actor,
    bsn: Bsn,
    limit: u32,
    trace: &TraceContext,
) -> Result<Vec<(i64, AccessRecord)>, LogError> {
    require_auditor(app, actor)?;
    let store = app.store.as_ref().ok_or(LogError::NoStore)?;
    let rows = store
        .by_subject(bsn, limit)
        .await
        .map_err(LogError::Store)?;
    record_read(app, actor, bsn, Some("toezicht".into()), trace).await?;
    Ok(rows)
}

/// Records a read of the access log itself; fail closed.
async fn record_read(
    app: &App,
    actor: &Actor,
    bsn: Bsn,
    purpose: Option<String>,
    trace: &TraceContext,
) -> Result<(), LogError> {
    let Some(store) = &app.store else {
        return Ok(());
    };
    let mut rec = AccessRecord::new("access-log.read", Some(actor), trace, Some(bsn));
    rec.purpose = purpose;
    store.record(rec).await.map_err(LogError::Audit)
}
