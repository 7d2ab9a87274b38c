//! Taking up services: applications accepted durably (`202` + `Location`), validated against
//! the service's JSON Schema, idempotent per caller and `Idempotency-Key`; and the dossier's
//! `zaken` section, the citizen's applications from the store.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::errors::{no_store, store_problem, unprocessable};
use super::extract::{authenticate, parse_body, parse_bsn, purpose, trace_of};
use super::{Problem, Shared, json as json_response};
use crate::auth::Actor;
use crate::bsn::Bsn;
use crate::store::{Application, StoreError};

/// A citizen takes up a service.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CitizenApplicationDoc, examples(json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand"}})))]
struct CitizenApplication {
    /// A service that can be applied for (`GET /v1/services/{id}`); another is a 422.
    service: String,
    /// The form: it must satisfy the service's `application.schema`; every violation is listed
    /// in a 422.
    #[schema(value_type = Object)]
    data: Map<String, Value>,
}

/// An employee takes up a service on a client's behalf (only for the employee's own
/// organisation's services).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmployeeApplicationDoc, examples(json!({"bsn": "999993653", "service": "ww-aanvragen", "data": {"laatste_werkdag": "2026-11-27", "reden": "einde-contract", "iban": "NL91ABNA0417164300"}})))]
struct EmployeeApplication {
    #[schema(value_type = super::api_doc::Bsn)]
    bsn: String,
    /// A service of the employee's organisation that can be applied for; an unknown one is a
    /// 422, another organisation's a 403.
    service: String,
    /// The form: it must satisfy the service's `application.schema`; every violation is listed
    /// in a 422.
    #[schema(value_type = Object)]
    data: Map<String, Value>,
}

/// The `Idempotency-Key` header, exactly as the API document states it
/// ([`IDEMPOTENCY_KEY_PATTERN`](super::api_doc::IDEMPOTENCY_KEY_PATTERN)): 1 to 200 visible
/// ASCII characters, spaces only inside.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let valid = |k: &[u8]| {
        (1..=200).contains(&k.len())
            && k.iter().all(|b| (b' '..=b'~').contains(b))
            && k.first() != Some(&b' ')
            && k.last() != Some(&b' ')
    };
    let k = headers
        .get("idempotency-key")
        .map(|v| v.as_bytes())
        .filter(|k| valid(k))
        .ok_or_else(|| {
            Problem::bad_request("send an `Idempotency-Key` header (1 to 200 visible ASCII characters, spaces only inside), so a retried submission is not a second application")
                .param("Idempotency-Key", "required", "missing, too long, or with characters outside visible ASCII")
        })?;
    Ok(String::from_utf8_lossy(k).into_owned())
}

/// The answer when an application could not be stored with its record: nothing of it was
/// stored (the two are one transaction), so sending it again is safe.
fn not_stored(e: StoreError) -> Problem {
    tracing::error!(error = %e, "Application not stored (nor its audit record); answered 503.");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "application-not-stored",
        "The application could not be stored",
    )
    .detail("Nothing was stored. Send it again later with the same Idempotency-Key.")
}

/// The answer when a caller's `Idempotency-Key` already names an application with another
/// service, person or data.
fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "The Idempotency-Key was used for a different request",
    )
    .detail("This Idempotency-Key already names an application with another service, person or data; nothing was stored. Send a new key for a new application.")
    .param(
        "Idempotency-Key",
        "reused",
        "already used for a different request",
    )
}

/// Validates and stores an application with its audit record, and answers 202: stored *and*
/// audited (one transaction), or 503 with neither.
async fn submit(
    s: &Shared,
    headers: &HeaderMap,
    actor: &Actor,
    bsn: Bsn,
    service: String,
    data: Map<String, Value>,
) -> Result<Response, Problem> {
    let data = Value::Object(data);
    let key = idempotency_key(headers)?;
    let rt = s.gateway.runtime();
    let svc = rt.config.gateway.services.get(&service).ok_or_else(|| {
        unprocessable(format!("unknown service `{service}`")).param(
            "service",
            "unknown",
            "no such service",
        )
    })?;
    svc.application.as_ref().ok_or_else(|| {
        unprocessable(format!("service `{service}` cannot be applied for here")).param(
            "service",
            "no-application",
            "not applicable online",
        )
    })?;
    if let Actor::Employee { organisation, .. } = actor
        && organisation != &svc.organisation
    {
        return Err(Problem::forbidden(format!(
            "only `{}` may submit applications for `{service}` on a client's behalf",
            svc.organisation
        )));
    }
    // Compiled when the config loaded; a config without it was refused.
    let validator = rt.config.compiled.schemas.get(&service).ok_or_else(|| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "schema",
            "The service's schema is missing",
        )
    })?;
    // Each violation is named after the field it concerns (a missing required field too, so a
    // form can put the message next to its input) and coded with the JSON Schema keyword.
    let violations: Vec<(String, String, String)> = validator
        .iter_errors(&data)
        .map(|e| {
            let mut path = format!("data{}", e.instance_path());
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                && let Some(p) = property.as_str()
            {
                path = format!("{path}/{p}");
            }
            (path, e.kind().keyword().to_string(), e.to_string())
        })
        .collect();
    if !violations.is_empty() {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-application",
            "The application data is not valid",
        )
        .detail(format!(
            "{} problem(s) in the application data",
            violations.len()
        ));
        for (name, code, reason) in violations {
            p = p.param(&name, &code, reason);
        }
        return Err(p);
    }
    let store = s.store.as_ref().ok_or_else(no_store)?;
    let now = chrono::Utc::now().to_rfc3339();
    let app = Application {
        id: uuid::Uuid::new_v4().to_string(),
        service: service.clone(),
        organisation: svc.organisation.clone(),
        bsn: bsn.as_str().to_string(),
        actor: actor.subject().to_string(),
        idempotency_key: key,
        data: data.clone(),
        status: "received".into(),
        reference: None,
        reason: None,
        attempts: 0,
        next_attempt_at: now.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    // Its details (the application's id and service) are filled in by the store, from the
    // application it stored or found under this key.
    let mut submit = crate::audit::AccessRecord::new(
        "application.submit",
        Some(actor),
        &trace_of(headers),
        Some(bsn),
    );
    submit.purpose = headers
        .get("x-purpose")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    submit.outcome = "accepted".into();
    let (stored, inserted) = store
        .insert_application(app, submit)
        .await
        .map_err(not_stored)?;
    // The key names one request: the same body again gets the first answer, another body a
    // 422 (draft-ietf-httpapi-idempotency-key-header), never the first application as if it
    // were this one.
    if !inserted && (stored.service != service || stored.bsn != bsn.as_str() || stored.data != data)
    {
        return Err(key_reused());
    }
    let location = format!("/v1/applications/{}", stored.id);
    let mut r = json_response(
        StatusCode::ACCEPTED,
        json!({"id": stored.id, "service": stored.service, "status": stored.status, "location": location}).to_string().into_bytes(),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[utoipa::path(post, path = "/v1/me/applications", tag = "applications", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "The same key with the same body again (from the same caller) returns the same application; with another body it is a 422", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$", example = "3f1c2a9e-6b8d-4e21-9c4f-0d5a7e8b1c23")),
    request_body = CitizenApplication,
    responses((status = 202, description = "Stored with its audit record; delivered to the organisation in the background", body = super::api_doc::ApplicationAcceptedDoc,
                headers(("Location" = String, description = "Where to follow the application"))),
               (status = 400, description = "The body or `Idempotency-Key` does not match this document"),
               (status = 403, description = "Not a citizen token (employees use `POST /v1/dossiers/applications`)"),
               (status = 422, description = "The service is unknown or cannot be applied for, the data does not satisfy its schema (every violation listed), or the `Idempotency-Key` was used for a different request (`idempotency-key-reused`)"),
               (status = 500, description = "The service has no compiled schema (not expected: the configuration compiles every one when it loads)"),
               (status = 503, description = "Not stored (nor audited): send it again with the same key")))]
pub(super) async fn me_apply(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    let Actor::Citizen { bsn, .. } = &actor else {
        return Err(Problem::forbidden(
            "employees submit on a client's behalf at POST /v1/dossiers/applications",
        ));
    };
    let bsn = *bsn;
    let b: CitizenApplication = parse_body(&body)?;
    submit(&s, &headers, &actor, bsn, b.service, b.data).await
}

#[utoipa::path(post, path = "/v1/dossiers/applications", tag = "applications", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "The same key with the same body again (from the same caller) returns the same application; with another body it is a 422", min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]{0,198}[!-~])?$", example = "8d0e4b7a-2c51-4f9e-a3b6-71c9d2e5f048"),
           ("X-Purpose" = String, Header, description = "The purpose of this action (doelbinding); without one the answer is 403", example = "re-integratie")),
    request_body = EmployeeApplication,
    responses((status = 202, description = "Stored with its audit record; delivered in the background", body = super::api_doc::ApplicationAcceptedDoc,
                headers(("Location" = String, description = "Where to follow the application"))),
               (status = 400, description = "The body or `Idempotency-Key` does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "A citizen token, no `X-Purpose` or one that no employee view open to the caller's organisation and roles allows, or a service of another organisation"),
               (status = 422, description = "The BSN fails the 11-proef, the service is unknown or cannot be applied for, the data does not satisfy its schema (every violation listed), or the `Idempotency-Key` was used for a different request (`idempotency-key-reused`)"),
               (status = 500, description = "The service has no compiled schema (not expected: the configuration compiles every one when it loads)"),
               (status = 503, description = "Not stored (nor audited): send it again with the same key")))]
pub(super) async fn employee_apply(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    if matches!(actor, Actor::Citizen { .. }) {
        return Err(Problem::forbidden(
            "citizens apply at POST /v1/me/applications",
        ));
    }
    let Some(purpose) = purpose(&headers) else {
        return Err(Problem::forbidden(
            "state the purpose of this action in the `X-Purpose` header (doelbinding)",
        ));
    };
    employee_may(&s, &actor, purpose)?;
    let b: EmployeeApplication = parse_body(&body)?;
    let bsn = parse_bsn("bsn", &b.bsn)?;
    submit(&s, &headers, &actor, bsn, b.service, b.data).await
}

/// An employee acts on a citizen's application only as one of the employee views allows:
/// a view open to their organisation, with one of their roles, for the purpose they state.
fn employee_may(s: &Shared, actor: &Actor, purpose: &str) -> Result<(), Problem> {
    let Actor::Employee {
        roles,
        organisation,
        ..
    } = actor
    else {
        return Ok(());
    };
    let rt = s.gateway.runtime();
    let allowed = rt.config.gateway.views.values().any(|v| {
        v.audience == crate::model::Audience::Employee
            && v.open_to_organisation(organisation)
            && v.open_to_roles(roles)
            && v.purposes.contains_key(purpose)
    });
    if allowed {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "no employee view open to your organisation and roles allows the purpose `{purpose}`"
        )))
    }
}

#[utoipa::path(get, path = "/v1/applications/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = String, Path, description = "Application id (from the `Location` of its 202)"),
           ("X-Purpose" = Option<String>, Header, description = "For an employee: the purpose of this read (doelbinding); without one the answer is 403", example = "re-integratie")),
    responses((status = 200, description = "The application and its delivery status; the read is recorded in the audit log (`application.read`) before it is answered", body = super::api_doc::ApplicationDoc),
               (status = 403, description = "An employee without `X-Purpose`, or with a purpose that no employee view open to their organisation and roles allows"),
               (status = 404, description = "Unknown, or not yours (a citizen's own, or one made to the employee's organisation)"),
               (status = 503, description = "The store cannot be read, or the read could not be recorded (then nothing is shown)")))]
pub(super) async fn get_application(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let actor = authenticate(&s, &headers)?;
    // An application holds personal data: an employee reads it for a stated purpose, as a
    // dossier (the citizen reading their own needs none).
    let purpose = purpose(&headers).map(str::to_string);
    if let Actor::Employee { .. } = &actor {
        let Some(p) = &purpose else {
            return Err(Problem::forbidden(
                "state the purpose of this read in the `X-Purpose` header (doelbinding)",
            ));
        };
        employee_may(&s, &actor, p)?;
    }
    let store = s.store.as_ref().ok_or_else(no_store)?;
    let app = store.application(id.clone()).await.map_err(store_problem)?;
    let visible = app.as_ref().is_some_and(|a| match &actor {
        Actor::Citizen { bsn, .. } => bsn.as_str() == a.bsn,
        Actor::Employee { organisation, .. } => organisation == &a.organisation,
    });
    let Some(app) = app.filter(|_| visible) else {
        return Err(Problem::not_found(format!(
            "no application `{id}` of yours"
        )));
    };
    // On record before it is shown; fail closed, as a dossier read.
    let mut read = crate::audit::AccessRecord::new(
        "application.read",
        Some(&actor),
        &trace_of(&headers),
        Bsn::parse(&app.bsn).ok(),
    );
    read.purpose = purpose;
    read.details = Some(json!({"application": app.id, "service": app.service}));
    store.append(read).await.map_err(|e| {
        tracing::error!(error = %e, "Audit record not written; application withheld.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit-unavailable",
            "The read could not be recorded, so the application is not shown",
        )
    })?;
    let rt = s.gateway.runtime();
    let mut v = serde_json::to_value(&app).unwrap_or_default();
    v["title"] = json!(
        rt.config
            .gateway
            .services
            .get(&app.service)
            .map(|s| s.title.clone())
    );
    Ok(json_response(StatusCode::OK, v.to_string().into_bytes()))
}
