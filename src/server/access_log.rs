//! The access log (inzage): a citizen reads who looked at their dossier, when and why; an
//! auditor reads every record about one citizen. Each read of the log is itself recorded
//! before the answer leaves. The records are the store's; this module only selects and shows
//! them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::errors::{dossier_problem, no_store, store_problem};
use super::extract::{authenticate, parse_body, parse_bsn, trace_of};
use super::{Problem, Shared, api_doc, json};
use crate::app::App;
use crate::audit::AuditSink;
use crate::auth::Actor;
use crate::bsn::Bsn;
use crate::gateway::DossierError;

/// `GET /v1/me/access-log`: who looked at my dossier, when, and why (inzage).
#[utoipa::path(get, path = "/v1/me/access-log", tag = "inzage", security(("bearer" = [])),
    responses((status = 200, description = "Who looked at my dossier, when, and why", body = api_doc::AccessLogDoc),
               (status = 403, description = "Not a citizen token (auditors use `POST /v1/audit/access-log`)"),
               (status = 503, description = "The store cannot be read, or this read cannot be recorded")))]
pub(super) async fn me_access_log(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    let Actor::Citizen { bsn, .. } = &actor else {
        return Err(Problem::forbidden(
            "this endpoint is for citizens; auditors use POST /v1/audit/access-log",
        ));
    };
    let bsn = *bsn;
    let store = s.store.as_ref().ok_or_else(no_store)?;
    let rows = store.by_subject(bsn, 500).await.map_err(store_problem)?;
    let rt = s.gateway.runtime();
    let orgs = &rt.config.gateway.organisations;
    let views = &rt.config.gateway.views;
    let entries: Vec<serde_json::Value> = rows
        .iter()
        .filter(|(_, r)| r.kind == "dossier.read")
        .map(|(_, r)| {
            let purpose_description = r
                .view
                .as_ref()
                .and_then(|v| views.get(v))
                .and_then(|v| r.purpose.as_ref().and_then(|p| v.purposes.get(p)))
                .map(|p| p.description.clone());
            serde_json::json!({
                "time": r.time,
                "by": if r.actor_type == "citizen" { "u zelf" } else { "medewerker" },
                "organisation": r.actor_organisation,
                "organisation_name": r.actor_organisation.as_ref().and_then(|o| orgs.get(o)).map(|o| o.name.clone()),
                "roles": r.actor_roles,
                "view": r.view,
                "purpose": r.purpose,
                "purpose_description": purpose_description,
                "sections": r.sections,
                "outcome": r.outcome,
            })
        })
        .collect();
    audit_log_read(&s, &actor, bsn, None, &headers).await?;
    let body = serde_json::json!({"subject": {"bsn": bsn}, "entries": entries});
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// An auditor's query: every record about one citizen.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditQueryDoc, examples(json!({"bsn": "999993653", "limit": 100})))]
struct AuditQuery {
    #[schema(value_type = api_doc::Bsn)]
    bsn: String,
    /// The most records to return (default 1 000). An integral number such as `100.0` counts.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<serde_json::Number>,
}

/// Most records one audit query returns.
const AUDIT_LIMIT_MAX: u64 = 10_000;

/// The audit query's `limit`: an integer (JSON Schema counts `100.0` as one) from 1 to
/// [`AUDIT_LIMIT_MAX`].
fn audit_limit(n: Option<&serde_json::Number>) -> Result<u32, Problem> {
    let Some(n) = n else { return Ok(1000) };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (1.0..=AUDIT_LIMIT_MAX as f64).contains(f))
            .map(|f| f as u64)
    });
    match whole {
        Some(v @ 1..=AUDIT_LIMIT_MAX) => Ok(v as u32),
        _ => Err(
            Problem::bad_request("`limit` is an integer from 1 to 10000").param(
                "limit",
                "range",
                "an integer from 1 to 10000",
            ),
        ),
    }
}

/// `POST /v1/audit/access-log` `{"bsn"}`: an auditor reads every record about one citizen.
#[utoipa::path(post, path = "/v1/audit/access-log", tag = "inzage", security(("bearer" = [])),
    request_body = AuditQuery,
    responses((status = 200, description = "Every record about one citizen (auditors only)", body = api_doc::AuditRecordsDoc),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, `limit` outside 1 to 10 000, an unknown field)"),
               (status = 403, description = "Not an auditor"),
               (status = 422, description = "The BSN fails the 11-proef"),
               (status = 503, description = "The store cannot be read, or this read cannot be recorded")))]
pub(super) async fn auditor_access_log(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    let rt = s.gateway.runtime();
    let allowed = match &actor {
        Actor::Employee { roles, .. } => roles
            .iter()
            .any(|r| rt.config.gateway.audit.auditor_roles.contains(r)),
        Actor::Citizen { .. } => false,
    };
    if !allowed {
        return Err(Problem::forbidden(
            "only auditors may query the access log of a citizen",
        ));
    }
    let q: AuditQuery = parse_body(&body)?;
    let bsn = parse_bsn("bsn", &q.bsn)?;
    let limit = audit_limit(q.limit.as_ref())?;
    let store = s.store.as_ref().ok_or_else(no_store)?;
    let rows = store.by_subject(bsn, limit).await.map_err(store_problem)?;
    audit_log_read(&s, &actor, bsn, Some("toezicht".into()), &headers).await?;
    let records: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(seq, r)| serde_json::json!({"seq": seq, "record": r}))
        .collect();
    let body = serde_json::json!({"subject": {"bsn": bsn}, "records": records});
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// Writes an audit record for a read of the access log itself; fail closed.
async fn audit_log_read(
    s: &App,
    actor: &Actor,
    bsn: Bsn,
    purpose: Option<String>,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    let Some(store) = &s.store else {
        return Ok(());
    };
    let mut rec = crate::audit::AccessRecord::new(
        "access-log.read",
        Some(actor),
        &trace_of(headers),
        Some(bsn),
    );
    rec.purpose = purpose;
    store
        .record(rec)
        .await
        .map_err(|e| dossier_problem(DossierError::Audit(e)))
}
