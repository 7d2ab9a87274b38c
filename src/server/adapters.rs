//! Partners' own adapters: list, read, register or replace (`PUT`), remove, and a test call
//! for a test person. Every route acts for the organisation of the partner credential.
//! Validating and storing a registration is [`crate::app::registrations`]'s; this module
//! authenticates the partner and shapes the answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::{credential_problem, registration_problem};
use super::extract::{parse_body, parse_bsn, trace_of};
use super::{Problem, Shared, api_doc, json};
use crate::app::App;
use crate::app::registrations;
use crate::credentials::ClientCert;
use crate::gateway::Runtime;

/// What a partner request carries to show who sends it: its headers (`X-Api-Key`) and, over
/// mutual TLS, the client certificate. Taking it cannot fail: the handler checks it
/// ([`PartnerRequest::organisation`]) once the path and the body are taken.
pub(super) struct PartnerRequest {
    headers: HeaderMap,
    cert: Option<ClientCert>,
}

impl<S: Send + Sync> FromRequestParts<S> for PartnerRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PartnerRequest {
            headers: parts.headers.clone(),
            cert: parts.extensions.get::<ClientCert>().cloned(),
        })
    }
}

impl PartnerRequest {
    /// The organisation the request acts for (API key or client-certificate OIN), with the
    /// runtime snapshot the request then uses.
    fn organisation(&self, s: &App) -> Result<(Arc<Runtime>, String), Problem> {
        super::extract::single(&self.headers, &["x-api-key"])?;
        let rt = s.gateway.runtime();
        let org =
            crate::credentials::partner(&rt.config.gateway, &self.headers, self.cert.as_ref())
                .map_err(credential_problem)?;
        Ok((rt, org))
    }
}

/// One adapter as its partner (and the operator) may see it. Nothing in it comes from the
/// gateway's environment: `endpoint` and `description` are as written in the descriptor, with
/// an operator file's `${ENV}` values shown as their references.
pub(super) fn adapter_summary(a: &crate::gateway::AdapterRuntime) -> serde_json::Value {
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
pub(super) async fn list_adapters(
    State(s): State<Shared>,
    partner: PartnerRequest,
) -> Result<Response, Problem> {
    let (rt, org) = partner.organisation(&s)?;
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
pub(super) async fn get_adapter(
    State(s): State<Shared>,
    partner: PartnerRequest,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    let (rt, org) = partner.organisation(&s)?;
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
pub(super) async fn put_adapter(
    State(s): State<Shared>,
    partner: PartnerRequest,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let (_, org) = partner.organisation(&s)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("the descriptor is not UTF-8"))?
        .to_string();
    let change = registrations::put(&s, &org, &id, text, &trace_of(&partner.headers))
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
pub(super) async fn delete_adapter(
    State(s): State<Shared>,
    partner: PartnerRequest,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Problem> {
    let (_, org) = partner.organisation(&s)?;
    registrations::delete(&s, &org, &id, &trace_of(&partner.headers))
        .await
        .map_err(registration_problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

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
/// person and show the mapped sections and the raw source status. A descriptor is held to the
/// id rules of `PUT` (the path's id, not another organisation's).
#[utoipa::path(post, path = "/v1/adapters/{id}/test", tag = "partners", security(("partner_key" = [])),
    params(("id" = String, Path, description = "Adapter id", example = "uwv-uitkeringen")),
    request_body = TestBody,
    responses((status = 200, description = "The adapter's mapped sections and source status for a test person", body = api_doc::AdapterTestResultDoc),
               (status = 400, description = "The body does not match this document (a BSN that is not 8 or 9 digits, an unknown field)"),
               (status = 403, description = "Not a configured test person, another organisation's adapter (with or without a descriptor), or a descriptor for another organisation"),
               (status = 404, description = "No such adapter (and no descriptor sent)"),
               (status = 422, description = "The BSN fails the 11-proef, or the descriptor sent is not valid or its id differs from the path's"),
               (status = 429, description = "Too many adapter tests at once; try again in a moment"),
               (status = 500, description = "No HTTP client could be built")))]
pub(super) async fn test_adapter(
    State(s): State<Shared>,
    partner: PartnerRequest,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let (_, org) = partner.organisation(&s)?;
    let b: TestBody = parse_body(&body)?;
    let bsn = parse_bsn("bsn", &b.bsn)?;
    let (result, took) = registrations::test(&s, &org, &id, bsn, b.descriptor.as_deref())
        .await
        .map_err(registration_problem)?;
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
