//! The HTTP API (axum): routes, authentication, problem+json errors, API-Version header.
//!
//! Handlers are thin: authenticate, parse (into types that can only hold valid values, such as
//! [`Bsn`]), authorise, call the [`Gateway`], serialise. The BSN never travels in a URL: the
//! citizen's comes from the token, an employee sends it in a POST body.

pub mod api_doc;
mod applications;
mod catalogue;
pub mod listen;
mod portal;
pub mod problem;
mod themes;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::App;
use crate::app::dossier::{Dossier, EmployeeAsk, ReadError};
use crate::app::registrations::{self, RegistrationError};
use crate::audit::AuditSink;
use crate::auth::{Actor, AuthError};
use crate::bsn::Bsn;
use crate::gateway::{AccessError, DossierError, Gateway};
use crate::trace::TraceContext;
pub use problem::Problem;

/// The major API version is in the path; the full version is in every response.
pub const API_VERSION: &str = "1.0.0";

pub type Shared = Arc<App>;

/// Builds the router with its layers.
pub fn router(state: Shared, max_body: usize) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(api_doc::ApiDoc::openapi())
        .routes(routes!(me_dossier))
        .routes(routes!(employee_dossier))
        .routes(routes!(me_access_log))
        .routes(routes!(auditor_access_log))
        .routes(routes!(list_adapters))
        .routes(routes!(get_adapter, put_adapter, delete_adapter))
        .routes(routes!(test_adapter))
        .routes(routes!(admin_status))
        .routes(routes!(admin_reload))
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(applications::me_apply))
        .routes(routes!(applications::employee_apply))
        .routes(routes!(applications::get_application))
        .routes(routes!(themes::list_themes))
        .routes(routes!(themes::get_theme))
        .routes(routes!(themes::me_theme))
        .routes(routes!(themes::me_life_events))
        .routes(routes!(themes::employee_theme))
        .routes(routes!(themes::employee_life_events))
        .routes(routes!(catalogue::list_organisations))
        .routes(routes!(catalogue::list_views))
        .routes(routes!(catalogue::get_service))
        .split_for_parts();
    let _ = OPENAPI.set(api_doc::finish(&api));
    router
        // The reference portals and the operator page (not part of the API document).
        .route("/portaal", get(portal::portal_root))
        .route("/portaal/", get(portal::portal_index))
        .route("/portaal/demo/accounts", get(portal::demo_accounts))
        .route("/portaal/demo/sign-in", post(portal::demo_sign_in))
        .route("/portaal/{file}", get(portal::portal_file))
        .route("/admin/", get(portal::admin_page))
        .route("/admin/admin.js", get(portal::admin_script))
        .route("/admin/shared/{file}", get(portal::admin_shared))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        // The framework's own refusals (body limit, path decoding, method) as problem+json.
        .layer(axum::middleware::map_response(problem::framework_errors))
        // Outermost: every response, errors included, carries the API version.
        .layer(axum::middleware::map_response(api_version))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The OpenAPI document, generated once from the same route lists as the router.
static OPENAPI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The OpenAPI document as built by [`router`].
pub fn openapi() -> &'static str {
    OPENAPI.get().map(String::as_str).unwrap_or("{}")
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (public, CORS open)", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        openapi(),
    )
}

async fn api_version(mut r: Response) -> Response {
    r.headers_mut()
        .insert("api-version", HeaderValue::from_static(API_VERSION));
    r
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition (OpenMetrics)", content_type = "application/openmetrics-text")))]
async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let g = &s.gateway;
    let rt = g.runtime();
    for a in rt.adapters.values() {
        let v = match a.circuit() {
            crate::resilience::CircuitState::Closed => 0,
            crate::resilience::CircuitState::HalfOpen => 1,
            crate::resilience::CircuitState::Open => 2,
        };
        g.metrics
            .circuit_state
            .get_or_create(&crate::metrics::AdapterLabel {
                adapter: a.client.id().clone(),
            })
            .set(v);
    }
    let (entries, bytes) = g.cache.stats();
    g.metrics.cache_entries.set(entries as i64);
    g.metrics.cache_bytes.set(bytes as i64);
    g.metrics.inflight_bytes.set(g.inflight.used() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        g.metrics.encode(),
    )
}

/// Records request latency and the gateway's own share of it.
fn observed(
    s: &App,
    route: &'static str,
    started: std::time::Instant,
    r: Result<(Response, std::time::Duration), Problem>,
) -> Response {
    let (resp, upstream) = match r {
        Ok((resp, upstream)) => (resp, upstream),
        Err(p) => (p.into_response(), std::time::Duration::ZERO),
    };
    s.gateway
        .metrics
        .request(route, resp.status().as_u16(), started.elapsed(), upstream);
    resp
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = api_doc::HealthDoc)))]
async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "A config is loaded and the store is writable", body = api_doc::ReadyDoc),
               (status = 503, description = "The store is not writable", body = api_doc::ReadyDoc)))]
async fn readyz(State(s): State<Shared>) -> Response {
    let rt = s.gateway.runtime();
    let store_ok = match &s.store {
        Some(st) => st.writable().await,
        None => true,
    };
    let body = serde_json::json!({
        "status": if store_ok { "ready" } else { "store-unavailable" },
        "config_version": rt.config.version,
        "adapters": rt.adapters.len(),
        "store": store_ok,
    });
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body.to_string().into_bytes())
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

pub(crate) fn no_store() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-store",
        "This gateway runs without a store",
    )
}

pub(crate) fn store_problem(e: crate::store::StoreError) -> Problem {
    tracing::error!(error = %e, "Access log unreadable.");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store",
        "The access log cannot be read now",
    )
}

/// `GET /v1/me/access-log`: who looked at my dossier, when, and why (inzage).
#[utoipa::path(get, path = "/v1/me/access-log", tag = "inzage", security(("bearer" = [])),
    responses((status = 200, description = "Who looked at my dossier, when, and why", body = api_doc::AccessLogDoc),
               (status = 403, description = "Not a citizen token (auditors use `POST /v1/audit/access-log`)"),
               (status = 503, description = "The store cannot be read, or this read cannot be recorded")))]
async fn me_access_log(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, Problem> {
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
async fn auditor_access_log(
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

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

pub(crate) fn authenticate(s: &App, headers: &HeaderMap) -> Result<Actor, Problem> {
    let rt = s.gateway.runtime();
    let token = bearer(headers).map_err(|e| Problem::unauthorized(e.to_string()))?;
    rt.verifier.verify(token).map_err(|e| {
        tracing::info!(error = %e, "Token refused.");
        Problem::unauthorized(e.to_string())
    })
}

pub(crate) fn trace_of(headers: &HeaderMap) -> TraceContext {
    TraceContext::from_header(headers.get("traceparent").and_then(|v| v.to_str().ok()))
}

/// A view or section the configuration does not have is a 422 (the request matches the API
/// document, which cannot list them); every other refusal is a 403.
fn access_problem(e: AccessError) -> Problem {
    let field = match e {
        AccessError::UnknownView(_) => "view",
        AccessError::UnknownSection(_) => "sections",
        _ => return Problem::forbidden(e.to_string()),
    };
    unprocessable(e.to_string()).param(field, "unknown", e.to_string())
}

/// 422: the request matches the API document but breaks a rule the document cannot state.
pub(crate) fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        "The request cannot be processed",
    )
    .detail(detail)
}

pub(crate) fn dossier_problem(e: DossierError) -> Problem {
    match e {
        DossierError::NoSource(d) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "no-source",
            "No source could answer",
        )
        .detail(d),
        DossierError::AllTimedOut => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline",
            "No source answered in time",
        ),
        DossierError::Audit(err) => {
            static GATE: std::sync::LazyLock<crate::lograte::LogGate> =
                std::sync::LazyLock::new(crate::lograte::LogGate::default);
            if let Some(suppressed) = GATE.admit() {
                tracing::error!(error = %err, suppressed, "Audit record not written; dossier withheld (`suppressed` more since the last line).");
            }
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "The access could not be recorded, so the dossier is not shown",
            )
        }
    }
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeQuery {
    #[serde(default)]
    sections: Option<String>,
}

/// `GET /v1/me/dossier`: a citizen's own dossier, through the citizen view.
#[utoipa::path(get, path = "/v1/me/dossier", tag = "dossier", security(("bearer" = [])),
    params(("sections" = Option<String>, Query, description = "Comma-separated sections of the view to return (default: all of them); one the view does not have is a 422", example = "persoon,uitkeringen")),
    responses((status = 200, description = "The citizen's own dossier through view `klant`", body = api_doc::DossierDoc),
               (status = 400, description = "A query parameter other than `sections`"),
               (status = 403, description = "Not a citizen token (employees use `POST /v1/dossiers`)"),
               (status = 404, description = "No citizen view is configured"),
               (status = 422, description = "`sections` names a section the view does not have"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so the dossier is not shown"),
               (status = 504, description = "No source answered in time")))]
async fn me_dossier(
    State(s): State<Shared>,
    headers: HeaderMap,
    q: Result<Query<MeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let r = match q {
        Ok(Query(q)) => me_dossier_inner(&s, &headers, q).await,
        Err(e) => Err(Problem::bad_request(e.body_text())),
    };
    observed(&s, "/v1/me/dossier", started, r)
}

async fn me_dossier_inner(
    s: &App,
    headers: &HeaderMap,
    q: MeQuery,
) -> Result<(Response, std::time::Duration), Problem> {
    let sections = q
        .sections
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let (resp, _) = citizen_dossier(s, headers, sections).await?;
    Ok((json(StatusCode::OK, resp.to_json()), resp.upstream_wait))
}

/// A citizen's own dossier through the citizen view (shared by the dossier, theme and
/// life-event endpoints; every use is audited as a dossier read).
pub(crate) async fn citizen_dossier(
    s: &App,
    headers: &HeaderMap,
    sections: Option<Vec<String>>,
) -> Result<Dossier, Problem> {
    let actor = authenticate(s, headers)?;
    crate::app::dossier::citizen(s, actor, sections, trace_of(headers))
        .await
        .map_err(read_problem)
}

/// The problem for a dossier that is not given.
fn read_problem(e: ReadError) -> Problem {
    match e {
        ReadError::NoCitizenView => Problem::not_found(e.to_string()),
        ReadError::NotACitizen | ReadError::NotAnEmployee => Problem::forbidden(e.to_string()),
        ReadError::Access(a) => access_problem(a),
        ReadError::Dossier(d) => dossier_problem(d),
    }
}

/// An employee's dossier request; the purpose goes in the `X-Purpose` header.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DossierRequestDoc, examples(json!({"bsn": "999993653", "view": "werkcoach"})))]
pub(crate) struct DossierBody {
    #[schema(value_type = api_doc::Bsn)]
    pub(crate) bsn: String,
    /// One of the caller's views (`GET /v1/views`); one the configuration does not have is a
    /// 422, one the caller's roles do not open a 403.
    #[schema(examples("werkcoach"))]
    pub(crate) view: String,
    /// Only these sections of the view (default: all of them); one the view does not have is
    /// a 422.
    #[serde(default)]
    #[schema(examples("persoon", "uitkeringen"))]
    pub(crate) sections: Option<Vec<String>>,
}

/// Parses a JSON body into `T`, with a problem that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!("the body is not valid: {e}")).param(
            "body",
            "invalid",
            e.to_string(),
        )
    })
}

/// Parses a BSN from a request, naming the field: 8 or 9 digits and nothing else (the API
/// document's pattern), or a 400; one that fails the 11-proef is a 422 (no pattern can say it).
pub fn parse_bsn(field: &str, s: &str) -> Result<Bsn, Problem> {
    let e = match Bsn::parse(s) {
        Ok(_) if s.trim() != s => crate::bsn::BsnError::NotDigits,
        Ok(bsn) => return Ok(bsn),
        Err(e) => e,
    };
    let detail = format!("`{field}` is not a valid BSN: {e}");
    let p = match e {
        crate::bsn::BsnError::Checksum => unprocessable(detail),
        _ => Problem::bad_request(detail),
    };
    Err(p.param(field, "bsn", e.to_string()))
}

/// `POST /v1/dossiers`: an employee reads a client's dossier through an employee view, for a
/// stated purpose.
#[utoipa::path(post, path = "/v1/dossiers", tag = "dossier", security(("bearer" = [])),
    request_body = DossierBody,
    params(("X-Purpose" = String, Header, description = "The purpose of this access (doelbinding): one the view allows (`GET /v1/views`); without one, or with another, the answer is 403", example = "re-integratie"),
           ("Cache-Control" = Option<String>, Header, description = "`no-cache` fetches fresh answers")),
    responses((status = 200, description = "A client's dossier through an employee view", body = api_doc::DossierDoc),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "A citizen token; a view the roles do not open; no purpose, or one the view does not allow"),
               (status = 422, description = "The BSN fails the 11-proef, or the view or a section is not configured"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so the dossier is not shown"),
               (status = 504, description = "No source answered in time")))]
async fn employee_dossier(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let r = employee_dossier_inner(&s, &headers, &body).await;
    observed(&s, "/v1/dossiers", started, r)
}

async fn employee_dossier_inner(
    s: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Response, std::time::Duration), Problem> {
    let b: DossierBody = parse_body(body)?;
    let (resp, _) = employee_dossier_for(s, headers, b).await?;
    Ok((json(StatusCode::OK, resp.to_json()), resp.upstream_wait))
}

/// A client's dossier through an employee view, for a stated purpose (shared by the dossier,
/// theme and life-event endpoints).
pub(crate) async fn employee_dossier_for(
    s: &App,
    headers: &HeaderMap,
    b: DossierBody,
) -> Result<Dossier, Problem> {
    let actor = authenticate(s, headers)?;
    if matches!(actor, Actor::Citizen { .. }) {
        return Err(read_problem(ReadError::NotAnEmployee));
    }
    let bsn = parse_bsn("bsn", &b.bsn)?;
    let purpose = headers
        .get("x-purpose")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let no_cache = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache"));
    let ask = EmployeeAsk {
        bsn,
        view: b.view,
        sections: b.sections,
        purpose,
        no_cache,
    };
    crate::app::dossier::employee(s, actor, ask, trace_of(headers))
        .await
        .map_err(read_problem)
}

/// The organisation a partner request acts for (API key or client-certificate OIN), with the
/// runtime snapshot the request then uses.
fn partner_of(
    s: &App,
    headers: &HeaderMap,
    cert: Option<&axum::Extension<crate::credentials::ClientCert>>,
) -> Result<(Arc<crate::gateway::Runtime>, String), Problem> {
    let rt = s.gateway.runtime();
    let org = crate::credentials::partner(&rt.config.gateway, headers, cert.map(|c| &c.0))
        .map_err(credential_problem)?;
    Ok((rt, org))
}

fn credential_problem(e: crate::credentials::CredentialError) -> Problem {
    use crate::credentials::CredentialError;
    match e {
        CredentialError::AdminClosed => Problem::forbidden(e.to_string()),
        _ => Problem::unauthorized(e.to_string()),
    }
}

/// One adapter as its partner (and the operator) may see it. Nothing in it comes from the
/// gateway's environment: `endpoint` and `description` are as written in the descriptor, with
/// an operator file's `${ENV}` values shown as their references.
fn adapter_summary(a: &crate::gateway::AdapterRuntime) -> serde_json::Value {
    use crate::config::compile::PublicDescriptor;
    let spec = &a.client.spec;
    let (origin, endpoint, description) = match &spec.public {
        PublicDescriptor::File(v) => ("file", v["endpoint"].clone(), v["description"].clone()),
        PublicDescriptor::Registration(_) => (
            "registration",
            serde_json::json!(spec.def.endpoint),
            serde_json::json!(spec.def.description),
        ),
    };
    serde_json::json!({
        "id": spec.def.id,
        "organisation": spec.def.organisation,
        "origin": origin,
        "description": if description.is_null() { serde_json::json!("") } else { description },
        "protocol": spec.def.protocol,
        "endpoint": endpoint,
        "sections": spec.def.map.keys().collect::<Vec<_>>(),
        "fingerprint": spec.fingerprint,
        "circuit": a.circuit().as_str(),
        "last": a.last_status(),
    })
}

/// `GET /v1/adapters`: the calling partner's own adapters.
#[utoipa::path(get, path = "/v1/adapters", tag = "partners", security(("partner_key" = [])),
    responses((status = 200, description = "The calling partner's own adapters", body = api_doc::AdapterListDoc)))]
async fn list_adapters(
    State(s): State<Shared>,
    headers: HeaderMap,
    cert: Option<axum::Extension<crate::credentials::ClientCert>>,
) -> Result<Response, Problem> {
    let (rt, org) = partner_of(&s, &headers, cert.as_ref())?;
    let list: Vec<serde_json::Value> = rt
        .adapters
        .values()
        .filter(|a| a.client.spec.def.organisation == org)
        .map(|a| adapter_summary(a))
        .collect();
    let body = serde_json::json!({"organisation": org, "adapters": list});
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// `GET /v1/adapters/{id}`: one adapter, only for its own organisation.
#[utoipa::path(get, path = "/v1/adapters/{id}", tag = "partners", security(("partner_key" = [])),
    params(("id" = String, Path, description = "Adapter id", example = "uwv-uitkeringen")),
    responses((status = 200, description = "One of the partner's adapters, with its descriptor", body = api_doc::AdapterDetailDoc),
               (status = 403, description = "Another organisation's adapter"),
               (status = 404, description = "No such adapter")))]
async fn get_adapter(
    State(s): State<Shared>,
    headers: HeaderMap,
    cert: Option<axum::Extension<crate::credentials::ClientCert>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    let (rt, org) = partner_of(&s, &headers, cert.as_ref())?;
    let a = rt
        .adapters
        .get(&id)
        .ok_or_else(|| Problem::not_found(format!("no adapter `{id}`")))?;
    if a.client.spec.def.organisation != org {
        return Err(Problem::forbidden(format!(
            "adapter `{id}` belongs to another organisation"
        )));
    }
    let mut body = adapter_summary(a);
    // A registration comes back exactly as the partner sent it; a file adapter as its tree,
    // with the operator's `${ENV}` values shown as references.
    body["descriptor"] = match &a.client.spec.public {
        crate::config::compile::PublicDescriptor::Registration(text) => {
            serde_json::json!(text.as_ref())
        }
        crate::config::compile::PublicDescriptor::File(tree) => tree.clone(),
    };
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// `GET /admin/status`: what is loaded and how each adapter is doing (admin token).
#[utoipa::path(get, path = "/admin/status", tag = "operations", security(("admin_token" = [])),
    responses((status = 200, description = "Loaded config, adapters, cache, store, reloads", body = api_doc::StatusDoc),
               (status = 403, description = "The operator pages are closed (no `admin.token_sha256`)")))]
async fn admin_status(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    crate::credentials::admin(&rt.config.gateway, &headers).map_err(credential_problem)?;
    // Settle the cache's pending bookkeeping so the figures are current (cheap: it is done
    // in the background anyway).
    s.gateway.cache.sync().await;
    let (entries, bytes) = s.gateway.cache.stats();
    let store = match &s.store {
        Some(st) => Some(serde_json::json!({
            "path": st.location(),
            "writable": st.writable().await,
            "writer": st.stats(),
        })),
        None => None,
    };
    let body = serde_json::json!({
        "config": {"file": rt.config.file, "version": rt.config.version},
        "adapters": rt.adapters.values().map(|a| {
            let mut v = adapter_summary(a);
            let (hits, misses, joined, stale) = s.gateway.metrics.cache_counts(a.client.id());
            let lookups = hits + misses + joined + stale;
            v["organisation_name"] = serde_json::json!(a.client.spec.organisation_name);
            v["cache"] = serde_json::json!({
                "ttl_ms": a.client.spec.def.cache.ttl.0.as_millis() as u64,
                "hits": hits, "misses": misses, "joined": joined, "stale": stale,
                "hit_ratio": (lookups > 0).then(|| hits as f64 / lookups as f64),
            });
            v
        }).collect::<Vec<_>>(),
        "cache": {"entries": entries, "bytes": bytes, "max_bytes": rt.config.gateway.cache.max_bytes.0},
        "store": store,
        "reload": s.reloader.as_ref().map(|r| r.status()),
        "registrations": rt.adapters.keys().filter(|id| !rt.config.file_adapters.contains_key(*id)).collect::<Vec<_>>(),
    });
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// 422 with every configuration problem, in the same words as `ketenportaal check`.
/// The problem for a registration change that is refused.
fn registration_problem(e: RegistrationError) -> Problem {
    let text = e.to_string();
    match e {
        RegistrationError::NotYours(_) => Problem::forbidden(text),
        RegistrationError::NotFound(_) => Problem::not_found(text),
        RegistrationError::FileAdapter(_) => Problem::new(
            StatusCode::CONFLICT,
            "file-adapter",
            "This adapter is defined in the operator's files",
        )
        .detail(text),
        RegistrationError::Quota { .. } => Problem::new(
            StatusCode::CONFLICT,
            "registration-quota",
            "Your organisation has registered as many adapters as it may",
        )
        .detail(text),
        RegistrationError::IdMismatch { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-descriptor",
            "The adapter descriptor is not valid",
        )
        .detail(text)
        .param(
            "id",
            "mismatch",
            "the id in the body must equal the id in the path",
        ),
        RegistrationError::Invalid { title, errors } => config_problem(title, &errors),
        RegistrationError::Store(e) => store_problem(e),
        RegistrationError::Audit(e) => dossier_problem(DossierError::Audit(e)),
        RegistrationError::NoStore => no_store(),
        RegistrationError::NoReload => no_reload(),
    }
}

fn config_problem(title: &str, e: &crate::config::ConfigErrors) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-descriptor",
        title,
    )
    .detail(e.to_string());
    for c in &e.0 {
        p = p.param(
            &format!("{}:{}:{}", c.file.display(), c.line, c.column),
            "config",
            match &c.hint {
                Some(h) => format!("{} (hint: {h})", c.message),
                None => c.message.clone(),
            },
        );
    }
    p
}

fn no_reload() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-reload",
        "This gateway cannot change its configuration at run time",
    )
}

fn reloader(s: &App) -> Result<&Arc<crate::app::reload::Reloader>, Problem> {
    s.reloader.as_ref().ok_or_else(no_reload)
}

/// `PUT /v1/adapters/{id}`: register or replace one of the partner's own adapters (YAML or
/// JSON). Validated exactly like files; takes effect atomically; persisted; audited.
#[utoipa::path(put, path = "/v1/adapters/{id}", tag = "partners", security(("partner_key" = [])),
    params(("id" = String, Path, description = "Adapter id; equals `id` in the descriptor", example = json!(api_doc::DESCRIPTOR_EXAMPLE_ID))),
    request_body(description = "The adapter descriptor, YAML or JSON (UTF-8), at most `registrations.max_descriptor_bytes`",
        content((api_doc::AdapterDescriptor = "application/yaml"), (api_doc::AdapterDescriptor = "application/json"))),
    responses((status = 200, description = "Replaced", body = api_doc::AdapterChangeDoc,
                headers(("Location" = String, description = "The adapter's URL"))),
               (status = 201, description = "Registered", body = api_doc::AdapterChangeDoc,
                headers(("Location" = String, description = "The adapter's URL"))),
               (status = 400, description = "The body is not UTF-8"),
               (status = 403, description = "Another organisation's adapter, or a descriptor for another organisation"),
               (status = 409, description = "The organisation has as many registrations as it may (`registration-quota`)"),
               (status = 422, description = "The descriptor is not valid, its id differs from the path's, or it does not fit the configuration; with the messages of `ketenportaal check`"),
               (status = 503, description = "The store cannot be read or written, the change cannot be recorded, or this gateway cannot change its configuration at run time")))]
async fn put_adapter(
    State(s): State<Shared>,
    headers: HeaderMap,
    cert: Option<axum::Extension<crate::credentials::ClientCert>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let (_, org) = partner_of(&s, &headers, cert.as_ref())?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("the descriptor is not UTF-8"))?
        .to_string();
    let change = registrations::put(&s, &org, &id, text, &trace_of(&headers))
        .await
        .map_err(registration_problem)?;
    let rt = s.gateway.runtime();
    let mut body = rt
        .adapters
        .get(&id)
        .map(|a| adapter_summary(a))
        .unwrap_or_default();
    body["config_version"] = serde_json::json!(change.version);
    body["descriptor_sha256"] = serde_json::json!(change.sha256);
    let mut r = json(
        if change.replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        body.to_string().into_bytes(),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/adapters/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// `DELETE /v1/adapters/{id}`: remove one of the partner's own registrations.
#[utoipa::path(delete, path = "/v1/adapters/{id}", tag = "partners", security(("partner_key" = [])),
    params(("id" = String, Path, description = "Adapter id", example = json!(api_doc::DESCRIPTOR_EXAMPLE_ID))),
    responses((status = 204, description = "Removed"),
               (status = 403, description = "Another organisation's adapter"),
               (status = 404, description = "No such adapter"),
               (status = 409, description = "Defined in the operator's files"),
               (status = 422, description = "Removing it would break the configuration"),
               (status = 503, description = "The store cannot be read or written, the change cannot be recorded, or this gateway cannot change its configuration at run time")))]
async fn delete_adapter(
    State(s): State<Shared>,
    headers: HeaderMap,
    cert: Option<axum::Extension<crate::credentials::ClientCert>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    let (_, org) = partner_of(&s, &headers, cert.as_ref())?;
    registrations::delete(&s, &org, &id, &trace_of(&headers))
        .await
        .map_err(registration_problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Adapter test calls (`POST /v1/adapters/{id}/test`) in flight at once, per process.
const MAX_TEST_CALLS: usize = 16;
static TEST_CALLS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_TEST_CALLS);

/// A test call of one adapter, for one of the configured test persons.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AdapterTestDoc, examples(json!({"bsn": "999993653"})))]
struct TestBody {
    /// One of the configured test persons (`partner_test_bsns`; by default the public test
    /// BSNs); another BSN is a 403.
    #[schema(value_type = api_doc::Bsn)]
    bsn: String,
    /// A descriptor to try instead of the registered adapter (dry run; nothing is stored).
    #[serde(default)]
    descriptor: Option<String>,
}

/// `POST /v1/adapters/{id}/test` `{"bsn", "descriptor"?}`: run one adapter alone for a test
/// person and show the mapped sections and the raw source status.
#[utoipa::path(post, path = "/v1/adapters/{id}/test", tag = "partners", security(("partner_key" = [])),
    params(("id" = String, Path, description = "Adapter id", example = "uwv-uitkeringen")),
    request_body = TestBody,
    responses((status = 200, description = "The adapter's mapped sections and source status for a test person", body = api_doc::AdapterTestResultDoc),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "Not a configured test person, or not one of the partner's adapters"),
               (status = 404, description = "No such adapter (and no descriptor sent)"),
               (status = 422, description = "The BSN fails the 11-proef, or the descriptor sent is not valid"),
               (status = 429, description = "Too many adapter tests at once; try again in a moment"),
               (status = 500, description = "No HTTP client could be built")))]
async fn test_adapter(
    State(s): State<Shared>,
    headers: HeaderMap,
    cert: Option<axum::Extension<crate::credentials::ClientCert>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let (rt, org) = partner_of(&s, &headers, cert.as_ref())?;
    let b: TestBody = parse_body(&body)?;
    let bsn = parse_bsn("bsn", &b.bsn)?;
    if !rt
        .config
        .gateway
        .partner_test_bsns
        .iter()
        .any(|t| t == bsn.as_str())
    {
        return Err(Problem::forbidden(
            "only the configured test persons (`partner_test_bsns`) may be used for adapter tests",
        ));
    }
    let spec = match &b.descriptor {
        Some(text) => {
            registrations::refuse_foreign(text, &org).map_err(registration_problem)?;
            let spec = rt
                .config
                .parse_adapter_text(&format!("registration:{id}"), text)
                .map_err(|e| config_problem("The adapter descriptor is not valid", &e))?;
            Arc::new(spec)
        }
        None => rt
            .adapters
            .get(&id)
            .map(|a| a.client.spec.clone())
            .ok_or_else(|| Problem::not_found(format!("no adapter `{id}`")))?,
    };
    if spec.def.organisation != org || spec.def.id != id {
        return Err(Problem::forbidden(format!(
            "adapter `{id}` is not one of `{org}`'s"
        )));
    }
    // Test calls bypass the breaker and the adapter's concurrency limit (they must work while
    // a circuit is open), so they are capped here: a partner cannot make the gateway hold
    // dozens of large answers at once.
    let Ok(_slot) = TEST_CALLS.try_acquire() else {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "Too many adapter tests at once",
        )
        .detail(format!(
            "at most {MAX_TEST_CALLS} adapter tests run at a time; try again in a moment"
        )));
    };
    let http = crate::protocol::client::http_client().map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "client",
            "Cannot build a client",
        )
        .detail(e.to_string())
    })?;
    // Test answers count against the same in-flight budget as dossier reads.
    let client =
        crate::adapter::AdapterClient::new(spec, http).with_budget(s.gateway.inflight.clone());
    let (result, took) = Gateway::run_adapter(&client, bsn).await;
    let body = match result {
        Ok(a) => serde_json::json!({
            "adapter": id, "status": "ok", "latency_ms": took.as_millis() as u64,
            "bytes": a.bytes, "sections": a.sections,
        }),
        Err(e) => serde_json::json!({
            "adapter": id, "status": e.status(), "latency_ms": took.as_millis() as u64,
            "error": e.to_string(),
        }),
    };
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// `POST /admin/reload`: re-read the configuration files; refused with every problem when the
/// new configuration is not valid (the running one keeps serving).
#[utoipa::path(post, path = "/admin/reload", tag = "operations", security(("admin_token" = [])),
    responses((status = 200, description = "Reloaded", body = api_doc::ReloadDoc),
               (status = 403, description = "The operator pages are closed (no `admin.token_sha256`)"),
               (status = 422, description = "The new configuration is invalid; the running one stays"),
               (status = 503, description = "This gateway cannot change its configuration at run time")))]
async fn admin_reload(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    crate::credentials::admin(&rt.config.gateway, &headers).map_err(credential_problem)?;
    let reloader = reloader(&s)?;
    match reloader
        .reload(&s.gateway, s.store.as_ref(), "POST /admin/reload")
        .await
    {
        Ok(version) => Ok(json(
            StatusCode::OK,
            serde_json::json!({"status": "reloaded", "config_version": version})
                .to_string()
                .into_bytes(),
        )),
        Err(e) => Err(config_problem(
            "The new configuration is not valid; the running one stays",
            &e,
        )),
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
/// Terminates TLS when the config has `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rt = state.gateway.runtime();
    let g = &rt.config.gateway;
    let tls = rt.config.compiled.server_tls.clone();
    let opts = listen::ListenOptions {
        tls,
        header_timeout: g.limits.header_timeout.0,
        handshake_timeout: g.limits.handshake_timeout.0,
        max_header_bytes: g.limits.max_header_bytes.0 as usize,
        max_headers: g.limits.max_headers as usize,
        drain_timeout: std::time::Duration::from_secs(30),
    };
    let app = router(state.clone(), g.limits.max_request_body.0 as usize);
    drop(rt);
    listen::serve(listener, app, opts, shutdown).await
}
