//! The access log (inzage): a citizen reads who looked at their dossier, when and why; an
//! auditor reads every record about one citizen. The workflow (who may, what is recorded) is
//! `app::access_log`; this module is its HTTP face.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::errors::{dossier_problem, no_store, store_problem};
use super::extract::{authenticate, parse_body, parse_bsn, trace_of};
use super::{Problem, Shared, api_doc, json};
use crate::app::access_log::{self, LogError};
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
    let (bsn, entries) = access_log::citizen(&s, &actor, &trace_of(&headers))
        .await
        .map_err(log_problem)?;
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
    // Refused before the body is read: what the query would be is not a stranger's business.
    access_log::require_auditor(&s, &actor).map_err(log_problem)?;
    let q: AuditQuery = parse_body(&body)?;
    let bsn = parse_bsn("bsn", &q.bsn)?;
    let limit = audit_limit(q.limit.as_ref())?;
    let rows = access_log::auditor(&s, &actor, bsn, limit, &trace_of(&headers))
        .await
        .map_err(log_problem)?;
    let records: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(seq, r)| serde_json::json!({"seq": seq, "record": r}))
        .collect();
    let body = serde_json::json!({"subject": {"bsn": bsn}, "records": records});
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// The problem for an access log that is not shown.
fn log_problem(e: LogError) -> Problem {
    match e {
        LogError::NotACitizen | LogError::NotAnAuditor => Problem::forbidden(e.to_string()),
        LogError::NoStore => no_store(),
        LogError::Store(e) => store_problem(e),
        LogError::Audit(e) => dossier_problem(DossierError::Audit(e)),
    }
}
