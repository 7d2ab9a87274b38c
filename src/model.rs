//! The configuration schema: gateway settings (`config/*.yaml`) and adapter descriptors
//! (`adapters/*.yaml`), as serde structs.
//!
//! Every struct rejects unknown keys and has documented defaults. Durations are strings such as
//! `"800ms"`; sizes are strings such as `"4MiB"`. Secrets are [`Secret`], which never prints.
//! This module holds no I/O and no cross-reference checks (those live in
//! [`crate::config::compile`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A duration written as `"800ms"`, `"5s"`, `"2m"`, `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Dur(#[serde(serialize_with = "ser_dur")] pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}): write it like \"800ms\", \"5s\", \"2m\" or \"1h\""
            ))
        })
    }
}

/// An HTTP method, parsed when the config loads (`get` and `GET` alike). Only the methods a
/// request to an organisation can sensibly use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMethod(pub http::Method);

impl HttpMethod {
    pub const ALLOWED: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
}

impl Serialize for HttpMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for HttpMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let upper = s.trim().to_ascii_uppercase();
        match HttpMethod::ALLOWED.iter().find(|m| **m == upper) {
            Some(m) => http::Method::from_bytes(m.as_bytes())
                .map(HttpMethod)
                .map_err(de::Error::custom),
            None => Err(de::Error::custom(format!(
                "unknown HTTP method {s:?}: use one of {}",
                HttpMethod::ALLOWED.join(", ")
            ))),
        }
    }
}

/// A byte size written as an integer or as `"512KiB"`, `"4MiB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 65536, \"64KiB\", \"4MiB\" or \"1GiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                let s = v.trim();
                let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                let (num, unit) = s.split_at(split);
                let n: u64 = num.parse().map_err(|_| {
                    E::custom(format!(
                        "invalid size {v:?}: write it like \"64KiB\" or \"4MiB\""
                    ))
                })?;
                let mult: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" | "KB" | "k" => 1 << 10,
                    "MiB" | "MB" | "M" => 1 << 20,
                    "GiB" | "GB" | "G" => 1 << 30,
                    other => {
                        return Err(E::custom(format!(
                            "unknown size unit {other:?}: use B, KiB, MiB or GiB"
                        )));
                    }
                };
                n.checked_mul(mult)
                    .map(ByteSize)
                    .ok_or_else(|| E::custom("size too large"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret value (key, password). Never printed, never serialised back out.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway configuration
// ---------------------------------------------------------------------------------------------

/// `config/gateway.yaml`: everything but the adapters themselves.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Adapter descriptor files, or folders whose `*.yaml` files are all adapters; relative to
    /// this config file.
    pub adapters: Vec<String>,
    /// Overall deadline of one dossier request; no source delays the answer past it.
    pub deadline: Dur,
    /// Size and depth caps for requests and for source answers.
    pub limits: Limits,
    /// The chain partners, by id.
    pub organisations: BTreeMap<String, Organisation>,
    /// The dossier sections and how sources are merged into them.
    pub sections: BTreeMap<String, SectionDef>,
    /// Views: who may see which sections and fields, for which purposes.
    pub views: BTreeMap<String, ViewDef>,
    /// Bearer token verification.
    pub auth: AuthConfig,
    /// The source-answer cache on the adapter path.
    pub cache: CacheConfig,
    /// The durable store (audit log, later applications and registrations).
    pub store: StoreConfig,
    /// Audit (protocollering) settings.
    pub audit: AuditConfig,
    /// Terminate TLS on `listen` (rustls, TLS 1.2 and 1.3 only).
    pub tls: Option<ServerTls>,
    /// Chain partners' credentials; each is scoped to one organisation.
    pub partners: Vec<PartnerCredential>,
    /// Operator access to `/admin/*`.
    pub admin: AdminConfig,
    /// BSNs a partner may use with `POST /v1/adapters/{id}/test` (fictitious test persons
    /// only, never real citizens).
    pub partner_test_bsns: Vec<String>,
    /// What partners may register over the API, and how much.
    pub registrations: RegistrationPolicy,
    /// Services that can be taken up, by id.
    pub services: BTreeMap<String, ServiceDef>,
    /// Life events detected in a dossier (proactive service), by id.
    pub life_events: BTreeMap<String, LifeEventDef>,
    /// Themes (themaportalen): services grouped around a theme or life event, by id.
    pub themes: BTreeMap<String, ThemeDef>,
    /// The reference portal pages under `/portaal/` and the demo sign-in.
    pub portal: PortalConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8080".into(),
            adapters: vec!["../adapters".into()],
            deadline: Dur(Duration::from_millis(2000)),
            limits: Limits::default(),
            organisations: BTreeMap::new(),
            sections: BTreeMap::new(),
            views: BTreeMap::new(),
            auth: AuthConfig::default(),
            cache: CacheConfig::default(),
            store: StoreConfig::default(),
            audit: AuditConfig::default(),
            tls: None,
            partners: Vec::new(),
            admin: AdminConfig::default(),
            partner_test_bsns: crate::bsn::TEST_BSNS.map(String::from).to_vec(),
            registrations: RegistrationPolicy::default(),
            services: BTreeMap::new(),
            life_events: BTreeMap::new(),
            themes: BTreeMap::new(),
            portal: PortalConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body the API accepts.
    pub max_request_body: ByteSize,
    /// Default cap on a source answer; an adapter may set its own. Answers are cut off at the
    /// cap while streaming, never buffered whole.
    pub max_response_body: ByteSize,
    /// The bound on all source answers in flight at once, gateway-wide: what calls hold while
    /// they read and map their answers (twice an answer's size: its bytes and its records). A
    /// call that would pass it fails at once (our limit, not the source's failure), so many
    /// large answers at the same moment cannot take the process's memory with them.
    pub max_inflight_response_bytes: ByteSize,
    /// The percentage of that bound one organisation's answers may hold together (1 to 100),
    /// so that one organisation's sources (a registered adapter that announces large answers
    /// and sends them slowly, say) cannot leave the others without room.
    pub max_inflight_percent_per_organisation: u8,
    /// Deepest element or JSON nesting accepted in a source answer.
    pub max_depth: u32,
    /// Most records one source answer may put in one section; an answer with more is refused
    /// (the source's status `error`), so that one source's huge list does not slow every read.
    pub max_records: u32,
    /// A client must send its request headers within this time (slow clients are cut off).
    pub header_timeout: Dur,
    /// A request's body must have arrived this long after its headers (a client that
    /// announces a body and sends it slowly, or not at all, gets 408 and is disconnected).
    pub body_timeout: Dur,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: ByteSize,
    /// Most request headers accepted.
    pub max_headers: u32,
    /// A TLS handshake must finish within this time.
    pub handshake_timeout: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: ByteSize(64 * 1024),
            max_response_body: ByteSize(4 * 1024 * 1024),
            max_inflight_response_bytes: ByteSize(64 * 1024 * 1024),
            max_inflight_percent_per_organisation: 25,
            max_depth: 64,
            max_records: 1000,
            header_timeout: Dur(Duration::from_secs(10)),
            body_timeout: Dur(Duration::from_secs(10)),
            max_header_bytes: ByteSize(16 * 1024),
            max_headers: 64,
            handshake_timeout: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Display name, e.g. "UWV".
    pub name: String,
    /// 20-digit Dutch organisation identification number.
    pub oin: String,
    /// Base URL that relative adapter endpoints are appended to.
    #[serde(default)]
    pub base_url: Option<String>,
    /// URL prefixes under which this organisation's *registered* adapters (sent over the API
    /// by the partner) may have their endpoint; empty: only under `base_url`. Scheme, host and
    /// port must match exactly, and the path must lie under the prefix's path. Without either,
    /// the partner cannot register adapters.
    #[serde(default)]
    pub allowed_endpoints: Vec<String>,
    /// TLS towards this organisation (CA bundle, the gateway's client certificate) for its
    /// registered adapters, and for its file adapters that have no `tls:` of their own. A
    /// registered descriptor cannot name files on the gateway's disk, so this is the only way
    /// a registered adapter gets mTLS.
    #[serde(default)]
    pub tls: Option<AdapterTls>,
    /// Registered adapters whose endpoint host is a DNS name may only connect to public
    /// addresses (the partner controls its own DNS, and could point a name at the gateway's
    /// loopback, a cloud metadata address or the internal network). Set this when the
    /// organisation is reached over a private network (e.g. Diginetwerk). Loopback,
    /// link-local and unspecified addresses stay refused either way.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

/// What a partner may register over the API (`PUT /v1/adapters/{id}`): counted and sized, and
/// bounded where a descriptor could make the gateway work for it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationPolicy {
    /// Most registered adapters per organisation.
    pub max_per_organisation: u32,
    /// Largest descriptor accepted (the request body cap applies too).
    pub max_descriptor_bytes: ByteSize,
    /// Longest `timeout` a registered adapter may ask for (the request deadline cuts every
    /// call shorter anyway).
    pub max_timeout: Dur,
    /// Most `resilience.retries`.
    pub max_retries: u32,
    /// Highest `resilience.max_concurrency`.
    pub max_concurrency: u32,
    /// Longest `cache.ttl` (how long personal data from the partner stays cached).
    pub max_cache_ttl: Dur,
    /// Longest `cache.stale_if_error`.
    pub max_stale_if_error: Dur,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        RegistrationPolicy {
            max_per_organisation: 20,
            max_descriptor_bytes: ByteSize(32 * 1024),
            max_timeout: Dur(Duration::from_secs(5)),
            max_retries: 2,
            max_concurrency: 64,
            max_cache_ttl: Dur(Duration::from_secs(3600)),
            max_stale_if_error: Dur(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    /// One record; fields merged by source authority, provenance per field.
    Single,
    /// Records from every source, de-duplicated by key fields and sorted.
    List,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDef {
    pub kind: SectionKind,
    #[serde(default)]
    pub description: String,
    /// Adapter ids, most authoritative first. Unlisted sources rank after, by id.
    #[serde(default)]
    pub authority: Vec<String>,
    /// `list` only: fields that identify one record across sources.
    #[serde(default)]
    pub key: Vec<String>,
    /// `list` only: sort order of the records.
    #[serde(default)]
    pub sort: Option<SortSpec>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SortSpec {
    pub field: String,
    #[serde(default)]
    pub order: SortOrder,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    Citizen,
    Employee,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewDef {
    pub audience: Audience,
    #[serde(default)]
    pub description: String,
    /// Employee views: token roles that may use this view (any one suffices).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Employee views: the organisations (`org` claim) whose employees may use it; empty: any
    /// organisation whose employee has one of the `roles`.
    #[serde(default)]
    pub organisations: Vec<String>,
    /// Employee views: the purposes (doelbinding) a caller may state, by id.
    #[serde(default)]
    pub purposes: BTreeMap<String, PurposeDef>,
    /// Sections shown, each with its field allow-list; `["*"]` shows every field.
    pub sections: BTreeMap<String, Vec<String>>,
}

impl ViewDef {
    /// Whether an employee of `organisation` may use this view (`organisations`, empty: any).
    pub fn open_to_organisation(&self, organisation: &str) -> bool {
        self.organisations.is_empty() || self.organisations.iter().any(|o| o == organisation)
    }

    /// Whether one of `roles` may use this view.
    pub fn open_to_roles(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeDef {
    #[serde(default)]
    pub description: String,
    /// URI into the register of processing activities (Logboek Dataverwerkingen).
    #[serde(default)]
    pub processing_activity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Dur,
    /// Verification keys, selected by the token's `kid`.
    pub keys: Vec<KeyDef>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "ketenportaal".into(),
            audience: "ketenportaal".into(),
            leeway: Dur(Duration::from_secs(30)),
            keys: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum KeyAlg {
    HS256,
    RS256,
    ES256,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDef {
    pub kid: String,
    pub alg: KeyAlg,
    /// HS256: the shared secret (use `${ENV}`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// RS256/ES256: path to the PEM public key, relative to the config file.
    #[serde(default)]
    pub public_key: Option<String>,
    /// An organisation's own identity provider: the organisations (`org` claim) whose
    /// employees this key may vouch for. Set, the key signs no citizen tokens and no employee
    /// of another organisation; empty, it signs any token (a DigiD broker, the demo).
    #[serde(default)]
    pub organisations: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Upper bound of the cache, weighed by the bytes of the cached answers.
    pub max_bytes: ByteSize,
    /// A second level in Redis, shared by every instance behind the load balancer, so a
    /// citizen's next read on another instance does not call the sources again. Absent: each
    /// instance caches on its own.
    /// The shared second level in Redis; absent, or with an empty `url` (so a config can
    /// leave it to the environment: `url: ${KETENPORTAAL_REDIS_URL:-}`), there is none.
    #[serde(deserialize_with = "shared_or_off")]
    pub shared: Option<SharedCacheConfig>,
}

/// `cache.shared`, or none when its `url` is empty.
fn shared_or_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SharedCacheConfig>, D::Error> {
    let shared = Option::<SharedCacheConfig>::deserialize(d)?;
    Ok(shared.filter(|s| !s.url.expose().is_empty()))
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: ByteSize(256 * 1024 * 1024),
            shared: None,
        }
    }
}

/// `cache.shared`: the Redis L2. Values are sealed (AES-256-GCM) and subjects are named by an
/// HMAC of their BSN, so Redis never holds personal data in clear.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedCacheConfig {
    /// `redis://[user:password@]host:port[/db]`. A secret: it may carry the password, and is
    /// never shown (the status page shows host, port and db only).
    pub url: Secret,
    /// 64 hex characters (32 bytes): seals the values and names the subjects. Every instance
    /// needs the same key; a value sealed under another key reads as a miss.
    pub key: Secret,
    /// The longest any Redis operation may delay a request: past it the request goes on
    /// without Redis (and skips it for a second).
    #[serde(default = "default_shared_budget")]
    pub budget: Dur,
    /// The first part of every key, so several gateways (or other tenants) can share a server.
    #[serde(default = "default_shared_prefix")]
    pub prefix: String,
}

fn default_shared_budget() -> Dur {
    Dur(Duration::from_millis(25))
}

fn default_shared_prefix() -> String {
    "ketenportaal".into()
}

/// Why `cache.shared.key` is not a key (never says what it holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedKeyError {
    #[error("`cache.shared.key` must be 64 hex characters (32 bytes); it has {0} characters")]
    Length(usize),
    #[error("`cache.shared.key` must be 64 hex characters (32 bytes); it holds other characters")]
    NotHex,
}

impl SharedCacheConfig {
    /// The 32 bytes of `key`.
    pub fn key_bytes(&self) -> Result<[u8; 32], SharedKeyError> {
        let hex = self.key.expose().trim();
        if hex.len() != 64 {
            return Err(SharedKeyError::Length(hex.chars().count()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| SharedKeyError::NotHex)?;
        Ok(out)
    }
}

/// A product of an organisation that a citizen can take up.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub title: String,
    /// The owning organisation.
    pub organisation: String,
    #[serde(default)]
    pub description: String,
    /// CEL rule over the dossier: when is this service relevant for this person?
    pub relevant_when: String,
    /// Why it applies; `{section.field}` is filled from the dossier.
    #[serde(default)]
    pub reason: String,
    /// Why it does not apply.
    #[serde(default)]
    pub reason_not: String,
    /// How the service is taken up: the data asked for, and where it is delivered.
    #[serde(default)]
    pub application: Option<ApplicationDef>,
}

/// Taking up a service: the application's data and its delivery to the owning organisation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationDef {
    /// JSON Schema (2020-12) of the application data; no remote `$ref`s.
    pub schema: serde_json::Value,
    pub delivery: DeliveryDef,
}

/// Where and how an application is delivered. Templates may use `{{bsn}}`,
/// `{{application_id}}`, `{{service}}` and `{{data.<property>}}`; in a JSON body a string that
/// is exactly one `{{data.x}}` takes the value with its type.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDef {
    pub protocol: Protocol,
    /// Absolute URL, or a path under the organisation's `base_url`.
    pub endpoint: String,
    #[serde(default)]
    pub soap: Option<SoapDef>,
    #[serde(default)]
    pub rest: Option<RestDef>,
    /// Where the organisation's reference (e.g. a zaaknummer) is in its answer: a JSON pointer
    /// (REST) or an element path below the SOAP Body.
    #[serde(default)]
    pub reference: Option<String>,
    /// Attempts before the application is `failed`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Per attempt.
    #[serde(default = "default_delivery_timeout")]
    pub timeout: Dur,
}

fn default_attempts() -> u32 {
    8
}

fn default_delivery_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// A life event (levensgebeurtenis) detected by a rule.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LifeEventDef {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// CEL rule over the dossier.
    pub rule: String,
    /// Services this event makes worth a look.
    #[serde(default)]
    pub services: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThemeDef {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub life_events: Vec<String>,
    pub services: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain (leaf first), relative to the config file.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), relative to the config file.
    pub key: String,
    /// CAs whose client certificates are accepted (optional mTLS: partners may authenticate
    /// with a PKIoverheid certificate; portals and browsers need none).
    #[serde(default)]
    pub client_ca: Option<String>,
}

/// One partner credential. Give `api_key_sha256` (the SHA-256, in hex, of a random API key the
/// partner sends as `X-Api-Key`), or `client_cert_oin` (the OIN in the subject serialNumber of
/// the partner's client certificate), or both.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerCredential {
    /// The organisation this credential acts for (and whose adapters it may touch).
    pub organisation: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    #[serde(default)]
    pub client_cert_oin: Option<String>,
}

/// The reference portals: static pages embedded in the binary that call only the public API.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Serve klantportaal, medewerkersportaal and themaportaal under `/portaal/`.
    pub enabled: bool,
    /// The demo sign-in page: anyone who reaches the gateway can get a token for one of
    /// `demo_accounts` (minted with the first HS256 key). For demos and tests only; never in
    /// production. `serve` logs a warning at every start while it is on.
    pub demo_sign_in: bool,
    /// The accounts the demo sign-in offers: a citizen (`bsn`) or an employee
    /// (`organisation` + `roles`).
    pub demo_accounts: Vec<DemoAccount>,
}

/// One account on the demo sign-in page.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoAccount {
    /// Short id, used in the sign-in request.
    pub id: String,
    /// What the sign-in page shows.
    pub label: String,
    /// A citizen's BSN (fictitious test persons only).
    pub bsn: Option<String>,
    /// An employee's organisation.
    pub organisation: Option<String>,
    /// An employee's roles.
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// SHA-256 (hex) of the operator token sent as `Authorization: Bearer ...` to `/admin/*`.
    /// Without it, `/admin/*` is closed.
    pub token_sha256: Option<String>,
}

/// TLS towards one source: whom to trust, and the gateway's own client certificate (mTLS, as
/// Digikoppeling requires; a PKIoverheid certificate carries the OIN in its subject
/// serialNumber).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterTls {
    /// PEM bundle of the CAs trusted for this source (instead of the system roots).
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate chain.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which store keeps the audit log, the applications outbox and the registrations:
    /// `sqlite` (one file beside one process, the default) or `postgres` (shared by every
    /// instance of a cluster).
    pub backend: StoreBackend,
    /// SQLite file, relative to the config file; created when absent (`backend: sqlite`).
    pub path: String,
    /// PostgreSQL connection URL, `postgres://user:password@host:port/db`
    /// (`backend: postgres`); use `${ENV}`, it holds a password.
    pub url: Option<Secret>,
    /// Connections each instance keeps to PostgreSQL.
    pub pool_size: u32,
    /// How long an instance may hold an application it is delivering before another instance
    /// takes it over (PostgreSQL; a dead instance's applications wait this long).
    pub lease: Dur,
    /// How long a request waits for PostgreSQL (a connection, a write) before it is refused
    /// with 503.
    pub timeout: Dur,
    /// Most applications the dossier's `zaken` section lists (open ones first, then the
    /// latest), so that a citizen with hundreds of applications costs a read no more than one
    /// with a few.
    pub zaken_limit: u32,
    /// The longest a small batch of audit records waits for more before its `fdatasync`
    /// (`backend: sqlite`), taken only when records come fast enough that the wait gathers at
    /// least two more; `0s`: never wait. Up to 10ms.
    pub commit_delay: Dur,
}

/// Which store backend keeps the durable state.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

/// The default of `store.zaken_limit`.
pub const ZAKEN_LIMIT: u32 = 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: "ketenportaal.sqlite".into(),
            url: None,
            pool_size: 16,
            lease: Dur(Duration::from_secs(30)),
            timeout: Dur(Duration::from_secs(2)),
            zaken_limit: ZAKEN_LIMIT,
            commit_delay: Dur(crate::store::COMMIT_DELAY),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Key for pseudonymising the data subject in processing records (HMAC-SHA-256). Use
    /// `${ENV}`; changing it breaks the link between old and new processing records.
    pub pseudonym_key: Option<Secret>,
    /// Employee roles that may query the access log of any citizen.
    pub auditor_roles: Vec<String>,
    /// The organisations whose employees may hold those roles (the security officers' own);
    /// empty: any organisation's.
    pub auditor_organisations: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            pseudonym_key: None,
            auditor_roles: vec!["auditor".into()],
            auditor_organisations: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter descriptors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Soap,
    Rest,
}

/// What a request to an organisation speaks: the `protocol` with its block. The config refuses
/// a protocol without its block (or with the other one), so every loaded definition has one.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    Soap(&'a SoapDef),
    Rest(&'a RestDef),
}

/// `protocol` with its block, when the block is there.
fn call<'a>(p: Protocol, soap: &'a Option<SoapDef>, rest: &'a Option<RestDef>) -> Option<Call<'a>> {
    match (p, soap, rest) {
        (Protocol::Soap, Some(s), None) => Some(Call::Soap(s)),
        (Protocol::Rest, None, Some(r)) => Some(Call::Rest(r)),
        _ => None,
    }
}

impl AdapterDef {
    /// The request this adapter sends; `None` only for a definition the config refused.
    pub fn call(&self) -> Option<Call<'_>> {
        call(self.protocol, &self.soap, &self.rest)
    }
}

impl DeliveryDef {
    /// The request a delivery sends; `None` only for a definition the config refused.
    pub fn call(&self) -> Option<Call<'_>> {
        call(self.protocol, &self.soap, &self.rest)
    }

    /// The URL a delivery goes to: the endpoint, or for a path the organisation's `base` URL
    /// with the path under it.
    pub fn url(&self, base: Option<&str>) -> String {
        match base {
            Some(b) if self.endpoint.starts_with('/') => {
                format!("{}{}", b.trim_end_matches('/'), self.endpoint)
            }
            _ => self.endpoint.clone(),
        }
    }
}

/// One `adapters/*.yaml` file: how to reach one service of one organisation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterDef {
    /// Unique id; equals the file stem.
    pub id: String,
    /// Organisation id, declared in the gateway config.
    pub organisation: String,
    #[serde(default)]
    pub description: String,
    pub protocol: Protocol,
    /// Absolute URL, or a path appended to the organisation's `base_url`.
    pub endpoint: String,
    /// Per-call timeout (the request deadline may cut it shorter).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub cache: AdapterCache,
    /// Concurrency limit, retries and circuit breaker for this source.
    #[serde(default)]
    pub resilience: Resilience,
    /// TLS settings for this source (CA bundle, client certificate for mTLS); paths are
    /// relative to the gateway config file.
    #[serde(default)]
    pub tls: Option<AdapterTls>,
    /// Cap on this source's answer; defaults to `limits.max_response_body`.
    #[serde(default)]
    pub max_response_body: Option<ByteSize>,
    #[serde(default)]
    pub soap: Option<SoapDef>,
    #[serde(default)]
    pub rest: Option<RestDef>,
    /// Section name -> how this source's answer fills it.
    pub map: BTreeMap<String, SectionMap>,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_millis(1000))
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterCache {
    /// How long an answer is served from cache. `0s` disables caching for this adapter.
    pub ttl: Dur,
    /// How long after expiry the last good answer may still be served, marked `stale`, while
    /// the source fails.
    pub stale_if_error: Dur,
}

impl Default for AdapterCache {
    fn default() -> Self {
        AdapterCache {
            ttl: Dur(Duration::from_secs(60)),
            stale_if_error: Dur(Duration::ZERO),
        }
    }
}

/// How the gateway protects itself and the source from each other.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Resilience {
    /// Most calls in flight to this source at once; more wait (within the deadline).
    pub max_concurrency: u32,
    /// Extra attempts for reads that failed transiently (connection refused or reset,
    /// HTTP 502/503/504), within the request deadline and the retry budget.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one, with jitter.
    pub retry_backoff: Dur,
    /// Retries may add at most this percentage to the calls made (the retry budget).
    pub retry_budget_percent: u32,
    pub circuit: CircuitDef,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            max_concurrency: 64,
            retries: 1,
            retry_backoff: Dur(Duration::from_millis(25)),
            retry_budget_percent: 20,
            circuit: CircuitDef::default(),
        }
    }
}

/// The circuit breaker: it opens after `consecutive_failures` failures in a row, or when at
/// least `min_calls` calls in `window` failed for `error_rate_percent` or more. While open, the
/// source is not called (status `unavailable`); after `open_for` one probe is let through.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitDef {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub error_rate_percent: u32,
    pub min_calls: u32,
    pub window: Dur,
    pub open_for: Dur,
}

impl Default for CircuitDef {
    fn default() -> Self {
        CircuitDef {
            enabled: true,
            consecutive_failures: 5,
            error_rate_percent: 50,
            min_calls: 20,
            window: Dur(Duration::from_secs(30)),
            open_for: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoapDef {
    /// "1.1" or "1.2".
    pub version: SoapVersion,
    /// SOAPAction (1.1 header; 1.2 `action` media-type parameter) and `wsa:Action`.
    #[serde(default)]
    pub action: Option<String>,
    /// Add Digikoppeling WUS WS-Addressing headers (To, Action, MessageID, ReplyTo).
    #[serde(default)]
    pub addressing: bool,
    /// Prefix -> namespace URI, for `body` and for `map` paths.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// The Body content; `{{bsn}}` is XML-escaped on substitution.
    pub body: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum SoapVersion {
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestDef {
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body: a YAML mapping whose string leaves get `{{bsn}}` substituted, or a string
    /// template whose substitutions are JSON-escaped.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

fn default_method() -> HttpMethod {
    HttpMethod(http::Method::GET)
}

/// How one source answer fills one section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SectionMap {
    /// Path to the repeating record; absent: the whole answer is one record.
    #[serde(default)]
    pub each: Option<String>,
    /// Field name -> where its value is.
    pub fields: BTreeMap<String, FieldSpec>,
}

/// Field types of the dossier.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Decimal,
    Date,
    Boolean,
}

/// A field: `"path"` or `{path, type, required}`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FieldSpec {
    pub path: String,
    pub r#type: FieldType,
    pub required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSpecFull {
    path: String,
    #[serde(default)]
    r#type: FieldType,
    #[serde(default)]
    required: bool,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path string, or a mapping with `path`, `type` and `required`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec {
                    path: v.to_owned(),
                    r#type: FieldType::String,
                    required: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let full = FieldSpecFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec {
                    path: full.path,
                    r#type: full.r#type,
                    required: full.required,
                })
            }
        }
        d.deserialize_any(V)
    }
}
