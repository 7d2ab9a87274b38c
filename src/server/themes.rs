//! Themaportaal: the theme catalogue (public), and themes and life events evaluated on the
//! caller's view of a dossier (citizen: their own; employee: a client's, with a purpose).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::dossier::{DossierBody, citizen_dossier, employee_dossier_for};
use super::extract::parse_body;
use super::{Problem, Shared, json as json_response};
use crate::gateway::{DossierResponse, Runtime};
use crate::rules::Facts;

fn service_summary(rt: &Runtime, id: &str) -> Value {
    let g = &rt.config.gateway;
    match g.services.get(id) {
        Some(s) => json!({
            "id": id,
            "title": s.title,
            "organisation": s.organisation,
            "organisation_name": g.organisations.get(&s.organisation).map(|o| o.name.clone()),
            "description": s.description,
            "can_apply": s.application.is_some(),
        }),
        None => json!({"id": id}),
    }
}

fn theme_summary(rt: &Runtime, id: &str) -> Option<Value> {
    let t = rt.config.gateway.themes.get(id)?;
    Some(json!({
        "id": id,
        "title": t.title,
        "description": t.description,
        "life_events": t.life_events.iter().map(|l| json!({
            "id": l,
            "title": rt.config.gateway.life_events.get(l).map(|e| e.title.clone()),
        })).collect::<Vec<_>>(),
        "services": t.services.iter().map(|s| service_summary(rt, s)).collect::<Vec<_>>(),
    }))
}

#[utoipa::path(get, path = "/v1/themes", tag = "themes",
    responses((status = 200, description = "The theme catalogue (public)")))]
pub(super) async fn list_themes(State(s): State<Shared>) -> Response {
    let rt = s.gateway.runtime();
    let themes: Vec<Value> = rt
        .config
        .gateway
        .themes
        .keys()
        .filter_map(|id| theme_summary(&rt, id))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"themes": themes}).to_string().into_bytes(),
    )
}

#[utoipa::path(get, path = "/v1/themes/{id}", tag = "themes",
    params(("id" = String, Path, description = "Theme id", example = "werkloos-worden")),
    responses((status = 200, description = "One theme with its services and life events"),
               (status = 404, description = "No such theme")))]
pub(super) async fn get_theme(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    let t =
        theme_summary(&rt, &id).ok_or_else(|| Problem::not_found(format!("no theme `{id}`")))?;
    Ok(json_response(StatusCode::OK, t.to_string().into_bytes()))
}

/// What a service whose rule cannot be decided says (gegevens ontbreken).
const UNDECIDED: &str = "Dit kunnen we nu niet beoordelen: niet alle gegevens die hiervoor nodig zijn, zijn beschikbaar.";

/// Each service of `ids` with `relevant`, `decided` and a reason, evaluated on `sections`.
fn evaluate_services(
    rt: &Runtime,
    ids: &[String],
    sections: &Map<String, Value>,
    facts: &Facts,
) -> Vec<Value> {
    ids.iter()
        .map(|id| {
            let mut v = service_summary(rt, id);
            let def = rt.config.gateway.services.get(id);
            let (relevant, decided, reason) =
                match rt.catalogue.services.get(id).map(|r| r.evaluate(facts)) {
                    Some(Ok(true)) => (
                        true,
                        true,
                        def.map(|d| crate::rules::fill(&d.reason, sections))
                            .unwrap_or_default(),
                    ),
                    Some(Ok(false)) => (
                        false,
                        true,
                        def.map(|d| crate::rules::fill(&d.reason_not, sections))
                            .unwrap_or_default(),
                    ),
                    // The rule's own error (a CEL overload on a missing value) is for the
                    // operator's log; the person reading the portal gets a sentence.
                    Some(Err(e)) => {
                        tracing::debug!(service = %id, error = %e, "A service rule could not be decided on this dossier.");
                        (false, false, UNDECIDED.to_string())
                    }
                    None => (false, false, String::new()),
                };
            v["relevant"] = json!(relevant);
            v["decided"] = json!(decided);
            v["reason"] = json!(reason);
            v["rule"] = json!(def.map(|d| d.relevant_when.clone()));
            v
        })
        .collect()
}

fn theme_answer(rt: &Runtime, id: &str, d: &DossierResponse) -> Result<Value, Problem> {
    let t = rt
        .config
        .gateway
        .themes
        .get(id)
        .ok_or_else(|| Problem::not_found(format!("no theme `{id}`")))?;
    let sections = d.sections();
    let facts = facts_of(rt, d, &sections);
    let events = life_events(rt, &sections, &facts, Some(&t.life_events));
    Ok(json!({
        "theme": {"id": id, "title": t.title, "description": t.description},
        "subject": d.subject,
        "complete": d.complete,
        "life_events": events,
        "services": evaluate_services(rt, &t.services, &sections, &facts),
        "sources": d.sources,
        "trace_id": d.trace_id,
    }))
}

/// The life events that apply (all of them, or only `only`), each with its services.
fn life_events(
    rt: &Runtime,
    sections: &Map<String, Value>,
    facts: &Facts,
    only: Option<&Vec<String>>,
) -> Vec<Value> {
    rt.config
        .gateway
        .life_events
        .iter()
        .filter(|(id, _)| only.is_none_or(|o| o.contains(id)))
        .filter(|(id, _)| {
            matches!(
                rt.catalogue.life_events.get(*id).map(|r| r.evaluate(facts)),
                Some(Ok(true))
            )
        })
        .map(|(id, l)| {
            json!({
                "id": id,
                "title": l.title,
                "description": l.description,
                "services": evaluate_services(rt, &l.services, sections, facts),
            })
        })
        .collect()
}

/// The rules' facts: the sections the reader's view shows (another section is unknown to the
/// rules, not empty).
fn facts_of(rt: &Runtime, d: &DossierResponse, sections: &Map<String, Value>) -> Facts {
    let view = rt.config.gateway.views.get(&d.view);
    Facts::from_shown(sections, &rt.catalogue.vocab, |sec| {
        view.is_none_or(|v| v.sections.contains_key(sec))
    })
}

fn events_answer(rt: &Runtime, d: &DossierResponse) -> Value {
    let sections = d.sections();
    let facts = facts_of(rt, d, &sections);
    json!({
        "subject": d.subject,
        "complete": d.complete,
        "life_events": life_events(rt, &sections, &facts, None),
        "sources": d.sources,
        "trace_id": d.trace_id,
    })
}

#[utoipa::path(get, path = "/v1/me/themes/{id}", tag = "themes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Theme id", example = "werkloos-worden")),
    responses((status = 200, description = "The theme's services, each relevant or not with the reason, for the citizen"),
               (status = 403, description = "Not a citizen token"),
               (status = 404, description = "No such theme (checked before the credentials: themes are public), or no citizen view is configured"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so nothing is shown"),
               (status = 504, description = "No source answered in time")))]
pub(super) async fn me_theme(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if !s.gateway.runtime().config.gateway.themes.contains_key(&id) {
        return Err(Problem::not_found(format!("no theme `{id}`")));
    }
    let (d, rt) = citizen_dossier(&s, &headers, None).await?;
    let v = theme_answer(&rt, &id, &d)?;
    Ok(json_response(StatusCode::OK, v.to_string().into_bytes()))
}

#[utoipa::path(get, path = "/v1/me/life-events", tag = "themes", security(("bearer" = [])),
    responses((status = 200, description = "Life events detected in the citizen's dossier, with the services each makes relevant"),
               (status = 403, description = "Not a citizen token"),
               (status = 404, description = "No citizen view is configured"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so nothing is shown"),
               (status = 504, description = "No source answered in time")))]
pub(super) async fn me_life_events(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (d, rt) = citizen_dossier(&s, &headers, None).await?;
    Ok(json_response(
        StatusCode::OK,
        events_answer(&rt, &d).to_string().into_bytes(),
    ))
}

#[utoipa::path(post, path = "/v1/dossiers/themes/{id}", tag = "themes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Theme id", example = "werkloos-worden"),
           ("X-Purpose" = String, Header, description = "The purpose of this access (doelbinding): one the view allows; without one, or with another, the answer is 403", example = "re-integratie")),
    request_body = DossierBody,
    responses((status = 200, description = "A client's theme evaluation through an employee view"),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "A citizen token; a view the roles do not open; no purpose, or one the view does not allow"),
               (status = 404, description = "No such theme (checked first: themes are public)"),
               (status = 422, description = "The BSN fails the 11-proef, or the view or a section is not configured"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so nothing is shown"),
               (status = 504, description = "No source answered in time")))]
pub(super) async fn employee_theme(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    if !s.gateway.runtime().config.gateway.themes.contains_key(&id) {
        return Err(Problem::not_found(format!("no theme `{id}`")));
    }
    let b: DossierBody = parse_body(&body)?;
    let (d, rt) = employee_dossier_for(&s, &headers, b).await?;
    let v = theme_answer(&rt, &id, &d)?;
    Ok(json_response(StatusCode::OK, v.to_string().into_bytes()))
}

#[utoipa::path(post, path = "/v1/dossiers/life-events", tag = "themes", security(("bearer" = [])),
    params(("X-Purpose" = String, Header, description = "The purpose of this access (doelbinding): one the view allows; without one, or with another, the answer is 403", example = "re-integratie")),
    request_body = DossierBody,
    responses((status = 200, description = "Life events detected in a client's dossier, through an employee view"),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "A citizen token; a view the roles do not open; no purpose, or one the view does not allow"),
               (status = 422, description = "The BSN fails the 11-proef, or the view or a section is not configured"),
               (status = 502, description = "No source answered"),
               (status = 503, description = "The access could not be recorded, so nothing is shown"),
               (status = 504, description = "No source answered in time")))]
pub(super) async fn employee_life_events(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let b: DossierBody = parse_body(&body)?;
    let (d, rt) = employee_dossier_for(&s, &headers, b).await?;
    Ok(json_response(
        StatusCode::OK,
        events_answer(&rt, &d).to_string().into_bytes(),
    ))
}
