//! Dossier reads: a citizen's own dossier (`GET /v1/me/dossier`) and an employee's read of a
//! client's (`POST /v1/dossiers`), and the two helpers the theme and life-event routes share
//! with them. Authorisation, the fan-out and the audit record are [`crate::app::dossier`]'s;
//! this module takes the request apart and shapes the answer.

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::read_problem;
use super::extract::{authenticate, parse_body, parse_bsn, trace_of};
use super::{Problem, Shared, api_doc, json};
use crate::app::App;
use crate::app::dossier::{Dossier, EmployeeAsk, ReadError};
use crate::auth::Actor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MeQuery {
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
pub(super) async fn me_dossier(State(s): State<Shared>, req: Request) -> Response {
    let started = std::time::Instant::now();
    // The request itself, not a `HeaderMap` extractor: that one clones every header, on the
    // route the portals call most.
    let r = match Query::<MeQuery>::try_from_uri(req.uri()) {
        Ok(Query(q)) => me_dossier_inner(&s, req.headers(), q).await,
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
pub(super) async fn citizen_dossier(
    s: &App,
    headers: &HeaderMap,
    sections: Option<Vec<String>>,
) -> Result<Dossier, Problem> {
    let actor = authenticate(s, headers)?;
    crate::app::dossier::citizen(s, actor, sections, trace_of(headers))
        .await
        .map_err(read_problem)
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
pub(super) async fn employee_dossier(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
pub(super) async fn employee_dossier_for(
    s: &App,
    headers: &HeaderMap,
    b: DossierBody,
) -> Result<Dossier, Problem> {
    let actor = authenticate(s, headers)?;
    // `app::dossier::employee` refuses a citizen too; asked here first so that a citizen
    // hears 403, not a 400 about the BSN it sent.
    if matches!(actor, Actor::Citizen { .. }) {
        return Err(read_problem(ReadError::NotAnEmployee));
    }
    let bsn = parse_bsn("bsn", &b.bsn)?;
    let purpose = super::extract::purpose(headers).map(str::to_string);
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
