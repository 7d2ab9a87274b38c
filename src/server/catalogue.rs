//! What a portal needs to present the API to people: organisation names, the views a caller
//! may use (with their purposes), and a service with its application form's JSON Schema.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::extract::authenticate;
use super::{Problem, Shared, json as json_response};
use crate::auth::Actor;
use crate::model::Audience;

#[utoipa::path(get, path = "/v1/organisations", tag = "themes",
    responses((status = 200, description = "The chain partners by id, with their display names (public)")))]
pub(super) async fn list_organisations(State(s): State<Shared>) -> Response {
    let rt = s.gateway.runtime();
    let orgs: Vec<Value> = rt
        .config
        .gateway
        .organisations
        .iter()
        .map(|(id, o)| json!({"id": id, "name": o.name}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"organisations": orgs}).to_string().into_bytes(),
    )
}

#[utoipa::path(get, path = "/v1/views", tag = "dossier", security(("bearer" = [])),
    responses((status = 200, description = "The views the caller may use: a citizen's own view, or the employee views their roles open, each with its purposes and sections")))]
pub(super) async fn list_views(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    let rt = s.gateway.runtime();
    let usable = |audience: &Audience, roles: &[String]| match &actor {
        Actor::Citizen { .. } => *audience == Audience::Citizen,
        Actor::Employee { roles: mine, .. } => {
            *audience == Audience::Employee && roles.iter().any(|r| mine.contains(r))
        }
    };
    let views: Vec<Value> = rt
        .config
        .gateway
        .views
        .iter()
        .filter(|(_, v)| usable(&v.audience, &v.roles))
        .map(|(id, v)| {
            json!({
                "id": id,
                "audience": v.audience,
                "description": v.description,
                "purposes": v.purposes.iter().map(|(p, d)| json!({
                    "id": p,
                    "description": d.description,
                })).collect::<Vec<_>>(),
                "sections": v.sections.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    let who = match &actor {
        Actor::Citizen { .. } => json!({"actor": "citizen"}),
        Actor::Employee {
            sub,
            organisation,
            roles,
        } => json!({
            "actor": "employee",
            "sub": sub,
            "organisation": organisation,
            "organisation_name": rt.config.gateway.organisations.get(organisation).map(|o| o.name.clone()),
            "roles": roles,
        }),
    };
    Ok(json_response(
        StatusCode::OK,
        json!({"caller": who, "views": views})
            .to_string()
            .into_bytes(),
    ))
}

#[utoipa::path(get, path = "/v1/services/{id}", tag = "themes",
    params(("id" = String, Path, description = "Service id", example = "bijstand-aanvragen")),
    responses((status = 200, description = "One service; `application.schema` is the JSON Schema its application form must satisfy (public)"),
               (status = 404, description = "No such service")))]
pub(super) async fn get_service(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    let g = &rt.config.gateway;
    let svc = g
        .services
        .get(&id)
        .ok_or_else(|| Problem::not_found(format!("no service `{id}`")))?;
    let body = json!({
        "id": id,
        "title": svc.title,
        "description": svc.description,
        "organisation": svc.organisation,
        "organisation_name": g.organisations.get(&svc.organisation).map(|o| o.name.clone()),
        // The schema only: how an application is delivered is the operator's business.
        "application": svc.application.as_ref().map(|a| json!({"schema": a.schema})),
    });
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}
