//! OpenAPI 3.1 description of the API, generated from the handlers' annotations: the router and
//! this document are built from the same `routes!` lists, so they cannot drift apart.
//!
//! Request schemas are derived from the very structs the handlers parse into (unknown fields
//! refused, so `additionalProperties: false`); the response schemas here describe the shapes
//! the handlers build. [`finish`] adds what every route has in common, by the same rules the
//! server follows: a secured route answers 401, a route with a body 400, 408 and 413, a route with
//! a path parameter 400, every error is `application/problem+json`, every answer carries
//! `API-Version`.
//!
//! 400 means the request does not match this document; 422 means it does, but breaks a rule
//! JSON Schema cannot state (the BSN's 11-proef, a view, section or service the configuration
//! does not have, a service's own form schema, an adapter descriptor).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ketenportaal",
        version = "1.0.0",
        description = "Integration gateway for Dutch government chain portals: one Digitaal Klant Dossier from the services of the chain partners, filtered through views with purpose binding, every access recorded. The BSN never appears in a URL.\n\nErrors are `application/problem+json` (RFC 9457). 400: the request does not match this document. 422: it does, but breaks a rule JSON Schema cannot state (the BSN's 11-proef, a view, section or service the configuration does not have, a service's form schema, an adapter descriptor)."
    ),
    modifiers(&Security),
    // Referenced by `finish` (every error answer) and by the request schemas.
    components(schemas(super::problem::ProblemBody, Bsn, AdapterDescriptor)),
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

/// What a BSN in a request must look like: 8 or 9 digits (8 get a leading zero, as in the BRP),
/// nothing around them.
pub const BSN_PATTERN: &str = "^[0-9]{8,9}$";

/// The public test BSNs (they pass the 11-proef; the demo's fixture people).
pub const BSN_EXAMPLES: [&str; 6] = crate::bsn::TEST_BSNS;

/// A burgerservicenummer (component `Bsn`).
pub struct Bsn;

impl PartialSchema for Bsn {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(BSN_PATTERN))
            .description(Some(
                "A burgerservicenummer: 9 digits (8 get a leading zero) that pass the 11-proef \
                 (9A+8B+7C+6D+5E+4F+3G+2H-1I a multiple of 11, not 000000000). JSON Schema \
                 cannot state the 11-proef: a BSN that matches the pattern but fails it is a 422 \
                 naming `bsn`; one that does not match the pattern is a 400.",
            ))
            .examples(BSN_EXAMPLES)
            .into()
    }
}

impl ToSchema for Bsn {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Bsn")
    }
}

/// `Idempotency-Key`: 1 to 200 visible ASCII characters, spaces only inside.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]([ -~]{0,198}[!-~])?$";

/// The id of the descriptor in [`descriptor_example`].
pub const DESCRIPTOR_EXAMPLE_ID: &str = "uwv-werkhervatting";

/// A descriptor a UWV partner may register in the demo (the `PUT` example; a test registers
/// it, so it stays valid).
pub fn descriptor_example() -> Value {
    json!({
        "id": DESCRIPTOR_EXAMPLE_ID,
        "organisation": "uwv",
        "description": "Uitkeringen van UWV, voor werkhervatting",
        "protocol": "soap",
        "endpoint": "/uwv/UitkeringenService",
        "timeout": "800ms",
        "soap": {
            "version": "1.1",
            "action": "urn:nl:uwv:uitkeringen:v1/GeefUitkeringen",
            "addressing": true,
            "namespaces": {"u": "urn:nl:uwv:uitkeringen:v1"},
            "body": "<u:GeefUitkeringen><u:bsn>{{bsn}}</u:bsn></u:GeefUitkeringen>",
        },
        "map": {
            "uitkeringen": {
                "each": "u:GeefUitkeringenResponse/u:uitkeringen/u:Uitkering",
                "fields": {
                    "soort": {"path": "u:soort", "required": true},
                    "ingangsdatum": {"path": "u:ingangsdatum", "type": "date"},
                    "status": "u:status",
                },
            },
        },
    })
}

/// An adapter descriptor sent over the API (component `AdapterDescriptor`). Only its top level
/// is stated: YAML scalars have no fixed type, and the rest is checked as `ketenportaal check`
/// checks files (a 422 with line and column).
pub struct AdapterDescriptor;

impl PartialSchema for AdapterDescriptor {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
        let any = |description: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .description((!description.is_empty()).then_some(description))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An adapter descriptor (see the partner guide, docs/partners.md): how to reach \
                 one service of the partner's organisation and map its answer into dossier \
                 sections. Only the top level is stated here (YAML scalars have no fixed type); \
                 the gateway checks the rest as `ketenportaal check` checks files, with \
                 registrations held to stricter rules (no `${ENV}`, no files such as `tls`, an \
                 endpoint under the organisation's declared URLs, bounds on timeouts, retries, \
                 concurrency, cache and size). What breaks them is a 422 naming line and column.",
            ))
            .property("id", any("Equals the `{id}` of the path"))
            .property(
                "organisation",
                any("The organisation the credential acts for (another is a 403)"),
            )
            .property("description", any(""))
            .property(
                "protocol",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["soap", "rest"])),
            )
            .property(
                "endpoint",
                any("A path under the organisation's `base_url`, or a URL under its declared endpoints"),
            )
            .property("timeout", any("A duration such as `800ms`"))
            .property("cache", any("`{ttl, stale_if_error}`"))
            .property("resilience", any(""))
            .property("max_response_body", any(""))
            .property("soap", any("For `protocol: soap`"))
            .property("rest", any("For `protocol: rest`"))
            .property("map", any("Section name → how the answer fills it"))
            .required("id")
            .required("organisation")
            .required("protocol")
            .required("endpoint")
            .required("map")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .examples([descriptor_example()])
            .into()
    }
}

impl ToSchema for AdapterDescriptor {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AdapterDescriptor")
    }
}

/// One source's status in a dossier answer.
#[derive(Serialize, ToSchema)]
pub struct SourceDoc {
    pub adapter: String,
    pub organisation: String,
    #[schema(value_type = String, examples("ok"))]
    /// `ok`, `cached`, `stale`, `timeout`, `error`, `unavailable` or `skipped`.
    pub status: String,
    /// Time this read spent on the source, in ms (0 when this instance's cache had the answer).
    pub latency_ms: u64,
    /// For `cached` and `stale`.
    pub age_ms: Option<u64>,
    pub fetched_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubjectDoc {
    #[schema(value_type = Bsn)]
    pub bsn: String,
}

/// Different values for one field; the chosen one first.
#[derive(Serialize, ToSchema)]
pub struct ConflictDoc {
    pub section: String,
    pub field: String,
    /// For `list` sections: the key values of the record the sources disagree on.
    pub key: Option<Vec<Value>>,
    /// `[adapter, value]` pairs, the chosen (most authoritative) one first.
    pub values: Vec<Vec<Value>>,
}

/// The Digitaal Klant Dossier through one view.
#[derive(Serialize, ToSchema)]
pub struct DossierDoc {
    pub subject: SubjectDoc,
    pub view: String,
    /// The purpose stated in `X-Purpose` (employee views).
    pub purpose: Option<String>,
    /// False when any needed source gave no answer.
    pub complete: bool,
    pub generated_at: String,
    /// Section name → a record (`single`, with `_provenance`) or a list of records (each with
    /// `_source`). A `decimal` field is a string with the source's exact digits (`"1520.00"`).
    #[schema(value_type = Object)]
    pub sections: Value,
    pub sources: Vec<SourceDoc>,
    pub conflicts: Vec<ConflictDoc>,
    pub trace_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccessEntryDoc {
    pub time: String,
    #[schema(value_type = String, examples("medewerker"))]
    /// `u zelf` or `medewerker`.
    pub by: String,
    #[schema(required = true)]
    pub organisation: Option<String>,
    #[schema(required = true)]
    pub organisation_name: Option<String>,
    pub roles: Vec<String>,
    #[schema(required = true)]
    pub view: Option<String>,
    #[schema(required = true)]
    pub purpose: Option<String>,
    #[schema(required = true)]
    pub purpose_description: Option<String>,
    pub sections: Vec<String>,
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccessLogDoc {
    pub subject: SubjectDoc,
    pub entries: Vec<AccessEntryDoc>,
}

/// One access record with its place in the hash chain.
#[derive(Serialize, ToSchema)]
pub struct AuditRecordDoc {
    pub seq: i64,
    #[schema(value_type = Object)]
    pub record: Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditRecordsDoc {
    pub subject: SubjectDoc,
    pub records: Vec<AuditRecordDoc>,
}

/// An adapter's latest outcome.
#[derive(Serialize, ToSchema)]
pub struct LastStatusDoc {
    pub status: String,
    pub latency_ms: u64,
    pub at: String,
    pub error: Option<String>,
}

/// Where an adapter comes from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OriginDoc {
    /// The operator's `adapters/` files.
    File,
    /// Registered by its partner over this API.
    Registration,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolDoc {
    Soap,
    Rest,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitDoc {
    Closed,
    HalfOpen,
    Open,
}

/// One adapter, as its partner (and the operator) may see it.
#[derive(Serialize, ToSchema)]
pub struct AdapterDoc {
    pub id: String,
    pub organisation: String,
    pub origin: OriginDoc,
    pub description: String,
    pub protocol: ProtocolDoc,
    /// As written in the descriptor (a file's `${ENV}` values as their references).
    pub endpoint: String,
    pub sections: Vec<String>,
    pub fingerprint: String,
    pub circuit: CircuitDoc,
    /// The latest outcome; null before the first call.
    #[schema(required = true)]
    pub last: Option<LastStatusDoc>,
}

fn descriptor_schema() -> Schema {
    Schema::OneOf(
        utoipa::openapi::OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "A registration: the text exactly as the partner sent it",
                    )),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some(
                        "An operator's file, as a tree (its `${ENV}` values as their references)",
                    )),
            )
            .build(),
    )
}

/// One adapter with its descriptor (`GET /v1/adapters/{id}`).
#[derive(Serialize, ToSchema)]
pub struct AdapterDetailDoc {
    #[serde(flatten)]
    pub adapter: AdapterDoc,
    #[schema(schema_with = descriptor_schema)]
    pub descriptor: Value,
}

/// A registration stored and in effect (`PUT /v1/adapters/{id}`).
#[derive(Serialize, ToSchema)]
pub struct AdapterChangeDoc {
    #[serde(flatten)]
    pub adapter: AdapterDoc,
    /// The configuration version now running.
    pub config_version: String,
    /// SHA-256 of the descriptor as sent.
    pub descriptor_sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct AdapterListDoc {
    pub organisation: String,
    pub adapters: Vec<AdapterDoc>,
}

/// One adapter run alone for a test person.
#[derive(Serialize, ToSchema)]
pub struct AdapterTestResultDoc {
    pub adapter: String,
    /// `ok`, or the failure (`timeout`, `error`, ...).
    pub status: String,
    pub latency_ms: u64,
    /// When `ok`: the answer's size.
    pub bytes: Option<u64>,
    /// When `ok`: the mapped sections.
    #[schema(value_type = Option<Object>)]
    pub sections: Option<Value>,
    /// When not `ok`: what went wrong.
    pub error: Option<String>,
}

/// Cache figures of one adapter.
#[derive(Serialize, ToSchema)]
pub struct AdapterCacheDoc {
    pub ttl_ms: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    /// Null before the first lookup.
    #[schema(required = true)]
    pub hit_ratio: Option<f64>,
}

/// One adapter on the operator's status page.
#[derive(Serialize, ToSchema)]
pub struct StatusAdapterDoc {
    #[serde(flatten)]
    pub adapter: AdapterDoc,
    #[schema(required = true)]
    pub organisation_name: Option<String>,
    pub cache: AdapterCacheDoc,
}

#[derive(Serialize, ToSchema)]
pub struct StatusDoc {
    /// This instance's name (`KETENPORTAAL_INSTANCE`, or host and process id).
    pub instance: String,
    /// Every instance on this store heard from in the last 30 seconds, each with the config
    /// version it serves (empty on a store of one instance).
    pub cluster: Vec<InstanceDoc>,
    #[schema(value_type = Object)]
    pub config: Value,
    pub adapters: Vec<StatusAdapterDoc>,
    #[schema(value_type = Object)]
    pub cache: Value,
    /// Null when the gateway runs without a store.
    #[schema(value_type = Option<Object>, required = true)]
    pub store: Option<Value>,
    /// Null when the configuration did not come from a file.
    #[schema(value_type = Option<Object>, required = true)]
    pub reload: Option<Value>,
    /// Ids of the adapters registered over the API.
    pub registrations: Vec<String>,
}

/// One instance of a cluster, as it last said.
#[derive(Serialize, ToSchema)]
pub struct InstanceDoc {
    pub id: String,
    pub started_at: String,
    /// Its last heartbeat (once a second).
    pub seen_at: String,
    pub config_version: String,
}

/// `POST /admin/cache/purge`: whose cached answers to drop.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"bsn": "999993653"})))]
pub struct PurgeRequest {
    /// The data subject.
    #[schema(value_type = Bsn)]
    pub bsn: String,
}

#[derive(Serialize, ToSchema)]
pub struct PurgeDoc {
    #[schema(examples("purged"))]
    pub status: String,
    /// Whether the other instances of the cluster were told (always true on a store of one
    /// instance).
    pub cluster_told: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ReloadDoc {
    #[schema(examples("reloaded"))]
    pub status: String,
    pub config_version: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDoc {
    #[schema(examples("ok"))]
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyDoc {
    /// `ready` or `store-unavailable`.
    pub status: String,
    pub config_version: String,
    /// How many adapters are loaded.
    pub adapters: u64,
    /// Whether the store takes writes.
    pub store: bool,
}

/// An application stored (202).
#[derive(Serialize, ToSchema)]
pub struct ApplicationAcceptedDoc {
    pub id: String,
    pub service: String,
    /// `received` when new; an earlier submission under the same key shows where it is now.
    pub status: String,
    /// Where to follow it (also the `Location` header).
    pub location: String,
}

/// An application and its delivery status.
#[derive(Serialize, ToSchema)]
pub struct ApplicationDoc {
    pub id: String,
    pub service: String,
    /// The service's title; null when the service is no longer configured.
    #[schema(required = true)]
    pub title: Option<String>,
    pub organisation: String,
    /// The form as submitted.
    #[schema(value_type = Object)]
    pub data: Value,
    /// `received`, then `delivered`, `rejected` or `failed`.
    pub status: String,
    /// The organisation's reference (zaaknummer) once delivered.
    #[schema(required = true)]
    pub reference: Option<String>,
    /// Why it was rejected or failed.
    #[schema(required = true)]
    pub reason: Option<String>,
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// Finishes the generated document: what every route has in common, by the rules the server
/// follows (see the module doc), then serialises it.
pub fn finish(api: &utoipa::openapi::OpenApi) -> String {
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    doc["components"]["headers"] = json!({
        "API-Version": {
            "description": "The full API version (NL API Design Rules)",
            "required": true,
            "schema": {"type": "string", "examples": [super::API_VERSION]},
        },
        "Cache-Control": {
            "description": "`no-store`: answers carry personal data or are made for their caller; no browser or proxy may keep them",
            "required": true,
            "schema": {"type": "string", "examples": ["no-store"]},
        },
        "WWW-Authenticate": {
            "description": "How to authenticate",
            "required": true,
            "schema": {"type": "string", "examples": ["Bearer realm=\"ketenportaal\""]},
        },
    });
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                finish_operation(op);
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn finish_operation(op: &mut Value) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_body = op.get("requestBody").is_some();
    let has_path_param = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"));
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| json!({"description": description}));
    };
    if has_body {
        add(
            "400",
            "The body does not match this document (not JSON, a wrong type, an unknown field)",
        );
        add(
            "408",
            "The body did not arrive in time (`limits.body_timeout`); the connection is closed",
        );
        add(
            "413",
            "The body is larger than the gateway takes (`limits.max_request_body`)",
        );
    }
    if has_path_param {
        add("400", "A path parameter is not valid UTF-8");
    }
    if secured {
        add(
            "400",
            "A credential (or `X-Purpose`) header is sent more than once",
        );
        add("401", "No credentials, or not valid ones");
    }
    for (status, response) in responses.iter_mut() {
        let Some(r) = response.as_object_mut() else {
            continue;
        };
        let error = status.starts_with('4') || status.starts_with('5');
        if error && r.get("content").is_none_or(|c| c == &json!({})) {
            r.insert(
                "content".into(),
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}),
            );
        }
        let headers = r
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(headers) = headers {
            headers.insert(
                "API-Version".into(),
                json!({"$ref": "#/components/headers/API-Version"}),
            );
            headers.insert(
                "Cache-Control".into(),
                json!({"$ref": "#/components/headers/Cache-Control"}),
            );
            if status == "401" {
                headers.insert(
                    "WWW-Authenticate".into(),
                    json!({"$ref": "#/components/headers/WWW-Authenticate"}),
                );
            }
        }
    }
}
