//! OpenAPI 3.1 description of the API, generated from the handlers' annotations: the router and
//! this document are built from the same `routes!` lists, so they cannot drift apart.
//!
//! The schemas here describe response shapes for readers of the document; the handlers build
//! the same shapes.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ketenportaal",
        version = "1.0.0",
        description = "Integration gateway for Dutch government chain portals: one Digitaal Klant Dossier from the services of the chain partners, filtered through views with purpose binding, every access recorded. The BSN never appears in a URL."
    ),
    modifiers(&Security),
    tags(
        (name = "dossier", description = "Citizen and employee access to the Digitaal Klant Dossier"),
        (name = "inzage", description = "Who looked at a dossier"),
        (name = "partners", description = "Chain partners maintain their own adapters"),
        (name = "themes", description = "Themes and life events evaluated on a dossier"),
        (name = "applications", description = "Taking up services: applications delivered durably to the owning organisation"),
        (name = "operations", description = "Health, readiness, metrics, administration")
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("Citizen (DigiD-style, carries the BSN) or employee (organisation and roles) token"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "partner_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "A partner's API key (or a client certificate with its OIN)",
            ))),
        );
        c.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's admin token"))
                    .build(),
            ),
        );
    }
}

/// RFC 9457 problem details.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    #[serde(rename = "invalidParams")]
    pub invalid_params: Vec<InvalidParamDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct InvalidParamDoc {
    pub name: String,
    pub code: String,
    pub reason: String,
}

/// One source's status in a dossier answer.
#[derive(Serialize, ToSchema)]
pub struct SourceDoc {
    pub adapter: String,
    pub organisation: String,
    /// `ok`, `cached`, `stale`, `timeout`, `error`, `unavailable` or `skipped`.
    pub status: String,
    pub latency_ms: u64,
    /// For `cached` and `stale`.
    pub age_ms: Option<u64>,
    pub fetched_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectDoc {
    pub bsn: String,
}

/// Different values for one field; the chosen one first.
#[derive(Serialize, ToSchema)]
pub struct ConflictDoc {
    pub section: String,
    pub field: String,
    /// `[adapter, value]` pairs.
    pub values: Vec<Vec<serde_json::Value>>,
}

/// The Digitaal Klant Dossier through one view.
#[derive(Serialize, ToSchema)]
pub struct DossierDoc {
    pub subject: SubjectDoc,
    pub view: String,
    pub purpose: Option<String>,
    /// False when any needed source gave no answer.
    pub complete: bool,
    pub generated_at: String,
    /// Section name → a record (`single`, with `_provenance`) or a list of records (each with
    /// `_source`).
    #[schema(value_type = Object)]
    pub sections: serde_json::Value,
    pub sources: Vec<SourceDoc>,
    pub conflicts: Vec<ConflictDoc>,
    pub trace_id: String,
}

/// An employee's dossier request; the purpose goes in the `X-Purpose` header.
#[derive(Serialize, ToSchema)]
pub struct DossierRequestDoc {
    pub bsn: String,
    pub view: String,
    pub sections: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessEntryDoc {
    pub time: String,
    /// `u zelf` or `medewerker`.
    pub by: String,
    pub organisation: Option<String>,
    pub organisation_name: Option<String>,
    pub roles: Vec<String>,
    pub view: Option<String>,
    pub purpose: Option<String>,
    pub purpose_description: Option<String>,
    pub sections: Vec<String>,
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccessLogDoc {
    pub subject: SubjectDoc,
    pub entries: Vec<AccessEntryDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditQueryDoc {
    pub bsn: String,
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditRecordsDoc {
    pub subject: SubjectDoc,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct AdapterDoc {
    pub id: String,
    pub organisation: String,
    pub description: String,
    /// `soap` or `rest`.
    pub protocol: String,
    pub endpoint: String,
    pub sections: Vec<String>,
    pub fingerprint: String,
    /// `closed`, `half-open` or `open`.
    pub circuit: String,
    /// The latest outcome: status, latency_ms, at, error.
    #[schema(value_type = Object)]
    pub last: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub descriptor: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct AdapterListDoc {
    pub organisation: String,
    pub adapters: Vec<AdapterDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct AdapterTestDoc {
    pub bsn: String,
    /// A descriptor (YAML or JSON text) to try instead of the registered one; nothing is stored.
    pub descriptor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AdapterTestResultDoc {
    pub adapter: String,
    pub status: String,
    pub latency_ms: u64,
    #[schema(value_type = Object)]
    pub sections: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StatusDoc {
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub adapters: Vec<AdapterDoc>,
    #[schema(value_type = Object)]
    pub cache: serde_json::Value,
    #[schema(value_type = Object)]
    pub store: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub reload: Option<serde_json::Value>,
    pub registrations: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ReloadDoc {
    pub status: String,
    pub config_version: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDoc {
    pub status: String,
}
