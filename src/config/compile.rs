//! From typed config to a validated, compiled [`Config`] snapshot.
//!
//! Cross-references (adapters -> organisations, maps -> sections, views -> fields, authority
//! lists -> adapters) are checked here, and every adapter mapping is compiled. All problems
//! are collected; a snapshot only exists when there are none. A snapshot is immutable: reload
//! builds a new one and swaps it in whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::load::{ConfigError, ConfigErrors, closest, parse_untrusted_tree, read_tree, typed};
use super::yaml::{Node, Pos, Step};
use crate::mapping::json::JsonMapping;
use crate::mapping::xml::XmlMapping;
use crate::mapping::{CompileError, MapLimits};
use crate::model::{AdapterDef, Audience, GatewayConfig, KeyAlg, Protocol, SectionKind};

/// A compiled adapter mapping.
#[derive(Debug, Clone)]
pub enum Mapping {
    Json(JsonMapping),
    Xml(XmlMapping),
}

/// One adapter, validated and compiled.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub def: AdapterDef,
    /// Where it came from (a file, or `api:<id>` for a registration).
    pub origin: PathBuf,
    /// The endpoint with the organisation's base URL applied.
    pub url: String,
    pub organisation_name: String,
    pub oin: String,
    pub mapping: Mapping,
    pub limits: MapLimits,
    pub max_response_body: u64,
    /// A client with this source's own TLS settings (CA, client certificate), when it has any.
    pub http: Option<reqwest::Client>,
    /// SHA-256 of the canonical descriptor: unchanged adapters keep their state on reload.
    pub fingerprint: String,
    /// The descriptor as it may be shown to its partner: the text as sent for a registration;
    /// for a file, its values with every `${ENV}` value replaced by its reference.
    pub public: PublicDescriptor,
}

/// What may be shown of a descriptor outside the operator's own files.
#[derive(Debug, Clone)]
pub enum PublicDescriptor {
    /// An operator's file, as a tree with no value from the environment in it.
    File(serde_json::Value),
    /// A registration: the text exactly as the partner sent it.
    Registration(Arc<str>),
}

impl AdapterSpec {
    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// The sections this adapter fills.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.def.map.keys().map(String::as_str)
    }
}

/// A validated configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub base_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub listen: SocketAddr,
    pub adapters: BTreeMap<String, Arc<AdapterSpec>>,
    /// Short hash of every input: shows which config is loaded.
    pub version: String,
    /// The gateway file's tree, for positions in later validation (registrations).
    tree: Arc<Node>,
    /// Ids of the adapters that came from files (the rest are registrations).
    pub file_adapters: BTreeMap<String, PathBuf>,
    /// What is valid but needs the operator's attention soon (client certificates that expire
    /// within 30 days or have expired); `check` prints them, `serve` logs them.
    pub warnings: Vec<ConfigError>,
    pub compiled: Compiled,
}

/// What the config compiles besides the adapters, once, when it loads: the token verifier,
/// the rules, the application schemas and the server TLS. So the runtime built from an
/// accepted config cannot fail, and nothing is compiled again per request.
#[derive(Clone)]
pub struct Compiled {
    pub verifier: Arc<crate::auth::Verifier>,
    pub catalogue: Arc<crate::rules::Catalogue>,
    /// Service id → the validator of its application schema.
    pub schemas: Arc<BTreeMap<String, Arc<jsonschema::Validator>>>,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("catalogue", &self.catalogue)
            .field("schemas", &self.schemas.keys().collect::<Vec<_>>())
            .field("server_tls", &self.server_tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A partner's adapter registration, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Registration {
    pub id: String,
    pub organisation: String,
    /// The descriptor as sent (YAML or JSON).
    pub descriptor: String,
    /// SHA-256 (hex) of the descriptor text.
    pub sha256: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl Config {
    /// The store file, resolved against the config file's folder.
    pub fn store_path(&self) -> PathBuf {
        self.base_dir.join(&self.gateway.store.path)
    }

    /// The pseudonymisation key (validated to be present when the config loaded).
    pub fn pseudonym_key(&self) -> Vec<u8> {
        self.gateway
            .audit
            .pseudonym_key
            .as_ref()
            .map(|k| k.expose().as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// Loads `file` and everything it refers to, with `${ENV}` from the process environment.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(file, &|k| std::env::var(k).ok())
    }

    pub fn load_with_env(
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Self::load_inner(file, env).map_err(|mut e| {
            // The gateway file first, then adapter files; each in position order.
            e.0.sort_by(|a, b| {
                (a.file != file, &a.file, a.line, a.column).cmp(&(
                    b.file != file,
                    &b.file,
                    b.line,
                    b.column,
                ))
            });
            e
        })
    }

    fn load_inner(
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut hasher = Sha256::new();
        let base_dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let tree = read_tree(file, env, &mut errors);
        if let Ok(bytes) = std::fs::read(file) {
            hasher.update(&bytes);
        }
        let Some(tree) = tree else {
            return Err(ConfigErrors(errors));
        };
        // A gateway config with problems still has its adapter files checked, so one run
        // reports everything.
        let gateway: Option<GatewayConfig> = typed(file, &tree, &mut errors);
        let entries: Vec<(String, Pos)> = match tree.get("adapters") {
            Some(list) => list
                .items()
                .iter()
                .filter_map(|n| n.as_str().map(|s| (s.to_string(), n.pos)))
                .collect(),
            None => GatewayConfig::default()
                .adapters
                .into_iter()
                .map(|a| (a, tree.pos))
                .collect(),
        };

        // Adapter files.
        let mut adapter_files: Vec<(PathBuf, Pos)> = Vec::new();
        for (entry, pos) in &entries {
            let (entry, pos) = (entry, *pos);
            let p = base_dir.join(entry);
            if p.is_dir() {
                match std::fs::read_dir(&p) {
                    Ok(rd) => {
                        let mut files: Vec<PathBuf> = rd
                            .filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                            .collect();
                        files.sort();
                        adapter_files.extend(files.into_iter().map(|f| (f, pos)));
                    }
                    Err(e) => errors.push(ConfigError::new(
                        file,
                        pos,
                        format!("cannot read adapter folder {}: {e}", p.display()),
                    )),
                }
            } else if p.is_file() {
                adapter_files.push((p, pos));
            } else {
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!(
                            "adapter file or folder `{entry}` does not exist ({})",
                            p.display()
                        ),
                    )
                    .hint(
                        "paths are relative to this config file; fix the path or remove the entry",
                    ),
                );
            }
        }

        let mut adapters: BTreeMap<String, Arc<AdapterSpec>> = BTreeMap::new();
        let mut adapter_trees: BTreeMap<String, (PathBuf, Node)> = BTreeMap::new();
        for (path, _) in &adapter_files {
            if let Ok(bytes) = std::fs::read(path) {
                hasher.update(&bytes);
            }
            let mut errs = Vec::new();
            let Some(atree) = read_tree(path, env, &mut errs) else {
                errors.extend(errs);
                continue;
            };
            let Some(gateway) = &gateway else {
                // Without a valid gateway config, check the adapter's own structure only.
                let _: Option<AdapterDef> = typed(path, &atree, &mut errs);
                errors.extend(errs);
                continue;
            };
            if let Some(spec) =
                compile_adapter(path, &atree, gateway, &base_dir, Trust::Operator, &mut errs)
            {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                if spec.def.id != stem {
                    errs.push(
                        ConfigError::new(
                            path,
                            atree.get("id").map_or(atree.pos, |n| n.pos),
                            format!(
                                "adapter id `{}` differs from the file name `{stem}`",
                                spec.def.id
                            ),
                        )
                        .hint(format!(
                            "rename the file to `{}.yaml` or set `id: {stem}`",
                            spec.def.id
                        )),
                    );
                } else if let Some((other, _)) = adapter_trees.get(&spec.def.id) {
                    errs.push(ConfigError::new(
                        path,
                        atree.pos,
                        format!(
                            "adapter `{}` is also defined in {}",
                            spec.def.id,
                            other.display()
                        ),
                    ));
                } else if errs.is_empty() {
                    adapter_trees.insert(spec.def.id.clone(), (path.clone(), atree));
                    adapters.insert(spec.def.id.clone(), Arc::new(spec));
                }
            }
            errors.extend(errs);
        }

        let Some(gateway) = gateway else {
            return Err(ConfigErrors(errors));
        };
        let all_loaded = adapter_files.len() == adapters.len();
        let compiled = validate_gateway(file, &tree, &gateway, &adapters, all_loaded, &mut errors);

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let (listen, compiled) = compiled.ok_or_else(|| ConfigErrors(Vec::new()))?;
        let file_adapters = adapters
            .iter()
            .map(|(id, a)| (id.clone(), a.origin.clone()))
            .collect();
        let mut warnings = certificate_warnings(file, &tree, &gateway, &adapters, &adapter_trees);
        if gateway.tls.is_none() && !listen.ip().is_loopback() {
            warnings.push(
                ConfigError::new(
                    file,
                    tree.pos_at(&[Step::Key("listen".into())]),
                    format!("plain HTTP on {listen}, reachable from the network: tokens and personal data travel unencrypted"),
                )
                .hint("add `tls: {cert, key}`, or listen on 127.0.0.1 behind a TLS-terminating proxy"),
            );
        }
        Ok(Config {
            file: file.to_path_buf(),
            base_dir,
            gateway,
            listen,
            adapters,
            version: hex::encode(&hasher.finalize()[..6]),
            tree: Arc::new(tree),
            file_adapters,
            warnings,
            compiled,
        })
    }

    /// This config with partner registrations layered over the file adapters (a registration
    /// replaces a file adapter with the same id). The result is validated as a whole, with the
    /// same rules and messages as files.
    pub fn with_registrations(&self, regs: &[Registration]) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut out = self.clone();
        let mut hasher = Sha256::new();
        hasher.update(self.version.as_bytes());
        for r in regs {
            match self.parse_adapter_text(&format!("registration:{}", r.id), &r.descriptor) {
                Ok(spec) if spec.def.id == r.id => {
                    hasher.update(r.sha256.as_bytes());
                    out.adapters.insert(r.id.clone(), Arc::new(spec));
                }
                Ok(spec) => errors.push(ConfigError::new(
                    Path::new(&format!("registration:{}", r.id)),
                    Pos::default(),
                    format!(
                        "registration `{}` describes adapter `{}`",
                        r.id, spec.def.id
                    ),
                )),
                Err(e) => errors.extend(e.0),
            }
        }
        let compiled = validate_gateway(
            &self.file,
            &self.tree,
            &out.gateway,
            &out.adapters,
            true,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if let Some((listen, compiled)) = compiled {
            out.listen = listen;
            out.compiled = compiled;
        }
        if !regs.is_empty() {
            out.version = hex::encode(&hasher.finalize()[..6]);
        }
        Ok(out)
    }

    /// Like [`Config::with_registrations`], but a registration that does not fit (the operator
    /// tightened `allowed_endpoints` or `registrations:`, a section it maps into was removed)
    /// is left out instead of refusing everything: the operator's files win, and the other
    /// partners' adapters keep serving. Returns the config and each left-out registration's
    /// id with its problems. For start-up and reloads; a partner's own `PUT` is checked with
    /// `with_registrations` and refused whole.
    pub fn with_fitting_registrations(
        &self,
        regs: &[Registration],
    ) -> (Config, Vec<(String, ConfigErrors)>) {
        if let Ok(c) = self.with_registrations(regs) {
            return (c, Vec::new());
        }
        let mut kept: Vec<Registration> = Vec::new();
        let mut left_out = Vec::new();
        for r in regs {
            kept.push(r.clone());
            if let Err(e) = self.with_registrations(&kept) {
                kept.pop();
                left_out.push((r.id.clone(), e));
            }
        }
        let config = self
            .with_registrations(&kept)
            .unwrap_or_else(|_| self.clone());
        (config, left_out)
    }

    /// Checks a partner's change of the registrations (`before` → `after`, touching
    /// `changed`): the changed registration must fit (when it is still in `after`), and the
    /// change may not push any other registration out. Registrations that already did not
    /// fit before the change do not block it.
    pub fn check_registration_change(
        &self,
        before: &[Registration],
        after: &[Registration],
        changed: &str,
    ) -> Result<(), ConfigErrors> {
        let (_, now_out) = self.with_fitting_registrations(after);
        if now_out.is_empty() {
            return Ok(());
        }
        if let Some((_, e)) = now_out.iter().find(|(id, _)| id == changed) {
            return Err(e.clone());
        }
        let (_, was_out) = self.with_fitting_registrations(before);
        let pushed: Vec<ConfigError> = now_out
            .into_iter()
            .filter(|(id, _)| !was_out.iter().any(|(w, _)| w == id))
            .flat_map(|(_, e)| e.0)
            .collect();
        if pushed.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(pushed))
        }
    }

    /// Validates a descriptor sent over the API (YAML or JSON text) against this config, with
    /// the same messages as files get, under the rules for untrusted text: no `${ENV}`
    /// expansion, no files, an endpoint only under the organisation's declared URLs, and the
    /// bounds of `registrations:` (see [`Trust::Partner`]).
    pub fn parse_adapter_text(&self, label: &str, text: &str) -> Result<AdapterSpec, ConfigErrors> {
        let mut errors = Vec::new();
        let origin = PathBuf::from(label);
        let max = self.gateway.registrations.max_descriptor_bytes.0;
        if text.len() as u64 > max {
            errors.push(
                ConfigError::new(
                    &origin,
                    Pos::default(),
                    format!(
                        "the descriptor is {} bytes; at most {max} are accepted",
                        text.len()
                    ),
                )
                .hint("remove comments and unused fields, or ask the operator to raise `registrations.max_descriptor_bytes`"),
            );
            return Err(ConfigErrors(errors));
        }
        let tree = parse_untrusted_tree(&origin, text, &mut errors);
        let spec = tree.and_then(|t| {
            compile_adapter(
                &origin,
                &t,
                &self.gateway,
                &self.base_dir,
                Trust::Partner,
                &mut errors,
            )
        });
        match spec {
            Some(mut s) if errors.is_empty() => {
                s.public = PublicDescriptor::Registration(Arc::from(text));
                Ok(s)
            }
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Validates an adapter file written by the operator (`ketenportaal adapter test`), with
    /// `${ENV}` expansion from `env`, exactly as [`Config::load`] treats the files it reads.
    pub fn parse_adapter_file(
        &self,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdapterSpec, ConfigErrors> {
        let mut errors = Vec::new();
        let tree = read_tree(file, env, &mut errors);
        let spec = tree.and_then(|t| {
            compile_adapter(
                file,
                &t,
                &self.gateway,
                &self.base_dir,
                Trust::Operator,
                &mut errors,
            )
        });
        match spec {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The adapters that fill any of `sections`, in id order.
    pub fn adapters_for<'a>(
        &'a self,
        sections: &'a BTreeSet<&str>,
    ) -> impl Iterator<Item = &'a Arc<AdapterSpec>> + 'a {
        self.adapters
            .values()
            .filter(move |a| a.sections().any(|s| sections.contains(s)))
    }
}

/// Who wrote a descriptor, which decides what it may do (see `DESIGN.md`, trust boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The operator's own files: `${ENV}` expanded, files and any endpoint allowed.
    Operator,
    /// A partner's descriptor sent over the API: no expansion, no files, an endpoint under the
    /// organisation's declared URLs, headers and bounds limited by `registrations:`.
    Partner,
}

/// Request headers a registered adapter may not set: they frame the message, route it, or
/// carry what the gateway itself sets (trace context, content type).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "traceparent",
    "tracestate",
    "content-type",
    "soapaction",
    "cookie",
];

/// Validates and compiles one adapter tree.
fn compile_adapter(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    base_dir: &Path,
    trust: Trust,
    errors: &mut Vec<ConfigError>,
) -> Option<AdapterSpec> {
    let def: AdapterDef = typed(file, tree, errors)?;
    let before = errors.len();
    let at = |path: &[&str]| tree.pos_at_keys(path);
    let key_at = |parent: &[&str], key: &str| -> Pos {
        let steps: Vec<Step> = parent.iter().map(|s| Step::Key((*s).to_string())).collect();
        let (n, _) = tree.walk(&steps);
        n.key_pos(key).unwrap_or(n.pos)
    };

    if def.id.is_empty()
        || !def
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errors.push(
            ConfigError::new(
                file,
                at(&["id"]),
                format!("adapter id `{}` is not valid", def.id),
            )
            .hint("use lowercase letters, digits and `-`, e.g. `uwv-uitkeringen`"),
        );
    }
    let org = gw.organisations.get(&def.organisation);
    if org.is_none() {
        let known: Vec<String> = gw.organisations.keys().cloned().collect();
        errors.push(
            ConfigError::new(
                file,
                at(&["organisation"]),
                format!(
                    "organisation `{}` is not declared in the gateway config",
                    def.organisation
                ),
            )
            .hint(match closest(&def.organisation, &known) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!(
                    "declare it under `organisations:`; known: {}",
                    known.join(", ")
                ),
            }),
        );
    }
    let url = if trust == Trust::Partner {
        org.map_or_else(String::new, |o| {
            let mut prefixes: Vec<&str> = o.allowed_endpoints.iter().map(String::as_str).collect();
            if prefixes.is_empty() {
                prefixes.extend(o.base_url.as_deref());
            }
            match super::endpoint::check_registered(&def.endpoint, o.base_url.as_deref(), &prefixes)
            {
                Ok(u) => u.to_string(),
                Err(e) => {
                    errors.push(
                        ConfigError::new(file, at(&["endpoint"]), e.to_string()).hint(format!(
                            "a registered adapter's endpoint must lie under the URLs the operator declared for `{}` (`organisations.{}.allowed_endpoints`, else its `base_url`); give a path under them, or ask the operator",
                            def.organisation, def.organisation
                        )),
                    );
                    String::new()
                }
            }
        })
    } else if def.endpoint.starts_with("http://") || def.endpoint.starts_with("https://") {
        def.endpoint.clone()
    } else if def.endpoint.starts_with('/') {
        match org.and_then(|o| o.base_url.as_deref()) {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), def.endpoint),
            None => {
                if org.is_some() {
                    errors.push(
                        ConfigError::new(
                            file,
                            at(&["endpoint"]),
                            format!(
                                "endpoint `{}` is a path, but organisation `{}` has no `base_url`",
                                def.endpoint, def.organisation
                            ),
                        )
                        .hint("give the full URL, or set `base_url` on the organisation"),
                    );
                }
                String::new()
            }
        }
    } else {
        errors.push(
            ConfigError::new(file, at(&["endpoint"]), format!("endpoint `{}` is not a URL", def.endpoint))
                .hint("write `https://host/path`, or a path starting with `/` under the organisation's base_url"),
        );
        String::new()
    };
    if !url.is_empty() && reqwest::Url::parse(&url).is_err() {
        errors.push(ConfigError::new(
            file,
            at(&["endpoint"]),
            format!("endpoint `{url}` is not a valid URL"),
        ));
    }
    if def.timeout.0.is_zero() {
        errors.push(
            ConfigError::new(file, at(&["timeout"]), "timeout must be above 0")
                .hint("e.g. `timeout: 800ms`"),
        );
    }

    // Protocol block.
    match (def.protocol, &def.soap, &def.rest) {
        (Protocol::Soap, None, _) => errors.push(
            ConfigError::new(
                file,
                at(&["protocol"]),
                "protocol `soap` needs a `soap:` block",
            )
            .hint("add `soap: {version: \"1.1\", action: ..., namespaces: {...}, body: ...}`"),
        ),
        (Protocol::Rest, _, None) => errors.push(
            ConfigError::new(
                file,
                at(&["protocol"]),
                "protocol `rest` needs a `rest:` block",
            )
            .hint("add `rest: {method: POST, body: {...}}`"),
        ),
        (Protocol::Soap, Some(_), Some(_)) => errors.push(
            ConfigError::new(
                file,
                key_at(&[], "rest"),
                "a `rest:` block in a soap adapter",
            )
            .hint("remove it, or set `protocol: rest`"),
        ),
        (Protocol::Rest, Some(_), Some(_)) => errors.push(
            ConfigError::new(
                file,
                key_at(&[], "soap"),
                "a `soap:` block in a rest adapter",
            )
            .hint("remove it, or set `protocol: soap`"),
        ),
        _ => {}
    }
    // Templates may only use known placeholders.
    let mut templates: Vec<(Pos, String)> = Vec::new();
    if let Some(s) = &def.soap {
        templates.push((at(&["soap", "body"]), s.body.clone()));
    }
    if let Some(r) = &def.rest {
        if let Some(b) = &r.body {
            templates.push((at(&["rest", "body"]), b.to_string()));
        }
        for (k, v) in &r.headers {
            templates.push((at(&["rest", "headers", k]), v.clone()));
        }
    }
    for (pos, t) in templates {
        for name in crate::protocol::template::placeholders(&t) {
            if !crate::protocol::template::KNOWN.contains(&name.as_str()) {
                errors.push(
                    ConfigError::new(file, pos, format!("unknown placeholder `{{{{{name}}}}}`"))
                        .hint(format!(
                            "known placeholders: {}",
                            crate::protocol::template::KNOWN.join(", ")
                        )),
                );
            }
        }
    }

    // Map: sections must be declared; mappings must compile.
    let known_sections: Vec<String> = gw.sections.keys().cloned().collect();
    for name in def.map.keys() {
        if name == ZAKEN {
            errors.push(
                ConfigError::new(
                    file,
                    key_at(&["map"], name),
                    format!("section `{ZAKEN}` is filled by the gateway itself (applications from its store); an adapter cannot map into it"),
                )
                .hint("map the organisation's cases into a section of their own, e.g. `lopende_zaken`"),
            );
            continue;
        }
        if !gw.sections.contains_key(name) {
            errors.push(
                ConfigError::new(
                    file,
                    key_at(&["map"], name),
                    format!("section `{name}` is not declared in the gateway config"),
                )
                .hint(match closest(name, &known_sections) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!(
                        "declare it under `sections:`; known: {}",
                        known_sections.join(", ")
                    ),
                }),
            );
        }
    }
    let compiled = match def.protocol {
        Protocol::Rest => JsonMapping::compile(&def.map).map(Mapping::Json),
        Protocol::Soap => {
            let ns = def
                .soap
                .as_ref()
                .map(|s| s.namespaces.clone())
                .unwrap_or_default();
            XmlMapping::compile(&def.map, &ns).map(Mapping::Xml)
        }
    };
    let mapping = match compiled {
        Ok(m) => Some(m),
        Err(errs) => {
            for CompileError {
                section,
                field,
                message,
                hint,
            } in errs
            {
                let pos = match &field {
                    Some(f) => at(&["map", &section, "fields", f]),
                    None => at(&["map", &section, "each"]),
                };
                errors.push(ConfigError::new(file, pos, message).hint_opt(hint));
            }
            None
        }
    };
    check_request_parts(file, tree, &def, trust, errors);
    if trust == Trust::Partner {
        check_registration_bounds(file, tree, &def, gw, errors);
    }
    // TLS towards the source: build the client now, so bad certificates are config errors. A
    // file adapter's own `tls:` wins over its organisation's; a registration only gets its
    // organisation's, and a resolver that keeps DNS names on public addresses.
    let own_tls = match trust {
        Trust::Operator => def.tls.as_ref(),
        Trust::Partner => None,
    };
    let tls = own_tls.or(org.and_then(|o| o.tls.as_ref()));
    let guard = match (trust, org) {
        (Trust::Partner, Some(o)) if !is_localhost(&url) => {
            Some(crate::protocol::client::PublicAddresses {
                allow_private: o.allow_private_addresses,
            })
        }
        _ => None,
    };
    let (http, tls_material) = if tls.is_none() && guard.is_none() {
        (None, Vec::new())
    } else {
        match crate::protocol::client::source_client(tls, base_dir, guard) {
            Ok((client, material)) => (Some(client), material),
            Err(msg) => {
                let pos = if own_tls.is_some() {
                    at(&["tls"])
                } else {
                    at(&["organisation"])
                };
                errors.push(ConfigError::new(file, pos, msg).hint(
                    "paths are relative to the gateway config file; PEM files expected (the organisation's `tls:` in the gateway config applies here)",
                ));
                (None, Vec::new())
            }
        }
    };
    if errors.len() > before {
        return None;
    }
    let org = org?;
    // The fingerprint covers the certificates' contents too: a renewed certificate under the
    // same path is a changed adapter.
    let mut canonical = serde_json::to_vec(&def).unwrap_or_default();
    canonical.extend_from_slice(&tls_material);
    Some(AdapterSpec {
        origin: file.to_path_buf(),
        url,
        organisation_name: org.name.clone(),
        oin: org.oin.clone(),
        mapping: mapping?,
        limits: MapLimits {
            max_depth: gw.limits.max_depth,
        },
        max_response_body: def
            .max_response_body
            .map_or(gw.limits.max_response_body.0, |b| b.0),
        fingerprint: hex::encode(Sha256::digest(&canonical)),
        http,
        public: PublicDescriptor::File(tree.to_json_redacted()),
        def,
    })
}

/// Client certificates (each organisation's, each file adapter's own) that expired or expire
/// within [`crate::protocol::certs::EXPIRY_WARNING_DAYS`], pointing at their `tls` key.
fn certificate_warnings(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    adapters: &BTreeMap<String, Arc<AdapterSpec>>,
    adapter_trees: &BTreeMap<String, (PathBuf, Node)>,
) -> Vec<ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let now = chrono::Utc::now();
    let check = |tls: &crate::model::AdapterTls| {
        let cert = tls.client_cert.as_ref()?;
        let key = tls.client_key.as_ref().map(|k| base.join(k));
        let id = crate::protocol::certs::client_identity(&base.join(cert), key.as_deref()).ok()?;
        crate::protocol::certs::expiry_warning(id.not_after?, now).map(|w| format!("{w} ({cert})"))
    };
    let mut out = Vec::new();
    for (id, o) in &gw.organisations {
        if let Some(w) = o.tls.as_ref().and_then(check) {
            let pos = tree.pos_at_keys(&["organisations", id, "tls"]);
            out.push(ConfigError::new(file, pos, w).hint("renew it and reload"));
        }
    }
    for (id, a) in adapters {
        if let (Some(w), Some((path, t))) =
            (a.def.tls.as_ref().and_then(check), adapter_trees.get(id))
        {
            let pos = t.pos_at_keys(&["tls"]);
            out.push(ConfigError::new(path, pos, w).hint("renew it and reload"));
        }
    }
    out
}

/// Whether `url`'s host is `localhost` (or below it): a name the partner does not control, so
/// the operator who declared it meant the local machine.
fn is_localhost(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "localhost" || h.ends_with(".localhost"))
}

/// HTTP method and headers: valid for every adapter (a bad one would only fail at the first
/// call); for a registration, only GET or POST, and none of [`RESERVED_HEADERS`].
fn check_request_parts(
    file: &Path,
    tree: &Node,
    def: &AdapterDef,
    trust: Trust,
    errors: &mut Vec<ConfigError>,
) {
    let at = |path: &[&str]| tree.pos_at_keys(path);
    if def
        .soap
        .as_ref()
        .is_some_and(|s| s.addressing && s.action.is_none())
    {
        errors.push(
            ConfigError::new(
                file,
                at(&["soap", "addressing"]),
                "`addressing: true` needs a `soap.action`",
            )
            .hint("WS-Addressing makes `wsa:Action` mandatory; give the operation's action URI"),
        );
    }
    if let Some(action) = def.soap.as_ref().and_then(|s| s.action.as_deref())
        && http::HeaderValue::from_str(action).is_err()
    {
        errors.push(
            ConfigError::new(
                file,
                at(&["soap", "action"]),
                "the SOAP action is not a valid header value",
            )
            .hint("visible ASCII only; no line breaks or quotes"),
        );
    }
    if trust == Trust::Partner && def.id.len() > 64 {
        errors.push(
            ConfigError::new(
                file,
                at(&["id"]),
                format!("adapter id of {} characters; at most 64", def.id.len()),
            )
            .hint("use a short id such as `uwv-wia`"),
        );
    }
    let Some(rest) = &def.rest else { return };
    // Any method the model parses is fine for the operator's own files.
    if trust == Trust::Partner && !matches!(rest.method.0, http::Method::GET | http::Method::POST) {
        errors.push(
            ConfigError::new(
                file,
                at(&["rest", "method"]),
                format!("method `{}` is not allowed here", rest.method.0),
            )
            .hint("use one of GET, POST"),
        );
    }
    for (name, value) in &rest.headers {
        let pos = at(&["rest", "headers", name]);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(
                ConfigError::new(file, pos, format!("`{name}` is not a valid header name"))
                    .hint("letters, digits and `-`, e.g. `X-Api-Version`"),
            );
            continue;
        }
        if http::HeaderValue::from_str(value).is_err() {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("the value of header `{name}` is not valid"),
                )
                .hint("visible ASCII only; no line breaks"),
            );
        }
        if trust == Trust::Partner
            && (RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                || name.to_ascii_lowercase().starts_with("proxy-"))
        {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("a registered adapter may not set header `{name}`"),
                )
                .hint("the gateway sets framing, routing, content type and trace context itself"),
            );
        }
    }
    if trust == Trust::Partner && rest.headers.len() > 16 {
        errors.push(
            ConfigError::new(
                file,
                at(&["rest", "headers"]),
                format!("{} headers; at most 16", rest.headers.len()),
            )
            .hint("send only what your service needs"),
        );
    }
}

/// The bounds of `registrations:`: no files, and nothing that makes the gateway hold more or
/// wait longer for a partner than the operator allows.
fn check_registration_bounds(
    file: &Path,
    tree: &Node,
    def: &AdapterDef,
    gw: &GatewayConfig,
    errors: &mut Vec<ConfigError>,
) {
    let at = |path: &[&str]| tree.pos_at_keys(path);
    let policy = &gw.registrations;
    if def.tls.is_some() {
        errors.push(
            ConfigError::new(
                file,
                at(&["tls"]),
                "a registered adapter cannot name files on the gateway (`tls:`)",
            )
            .hint(format!(
                "remove `tls:`; TLS towards your organisation (CA, client certificate) is the operator's `organisations.{}.tls`",
                def.organisation
            )),
        );
    }
    let mut over = |path: &[&str], what: String, key: &str| {
        errors.push(ConfigError::new(file, at(path), what).hint(format!(
            "lower it, or ask the operator to raise `registrations.{key}`"
        )));
    };
    if def.timeout.0 > policy.max_timeout.0 {
        over(
            &["timeout"],
            format!(
                "timeout {} is above the {} allowed",
                def.timeout, policy.max_timeout
            ),
            "max_timeout",
        );
    }
    if let Some(cap) = def.max_response_body
        && cap.0 > gw.limits.max_response_body.0
    {
        over(
            &["max_response_body"],
            format!(
                "max_response_body {} is above the gateway's {}",
                cap.0, gw.limits.max_response_body.0
            ),
            "(limits.max_response_body)",
        );
    }
    let r = &def.resilience;
    if r.retries > policy.max_retries {
        over(
            &["resilience", "retries"],
            format!("{} retries; at most {}", r.retries, policy.max_retries),
            "max_retries",
        );
    }
    if r.max_concurrency > policy.max_concurrency {
        over(
            &["resilience", "max_concurrency"],
            format!(
                "max_concurrency {} is above the {} allowed",
                r.max_concurrency, policy.max_concurrency
            ),
            "max_concurrency",
        );
    }
    if def.cache.ttl.0 > policy.max_cache_ttl.0 {
        over(
            &["cache", "ttl"],
            format!(
                "cache ttl {} is above the {} allowed",
                def.cache.ttl, policy.max_cache_ttl
            ),
            "max_cache_ttl",
        );
    }
    if def.cache.stale_if_error.0 > policy.max_stale_if_error.0 {
        over(
            &["cache", "stale_if_error"],
            format!(
                "stale_if_error {} is above the {} allowed",
                def.cache.stale_if_error, policy.max_stale_if_error
            ),
            "max_stale_if_error",
        );
    }
    if !r.circuit.enabled {
        errors.push(
            ConfigError::new(
                file,
                at(&["resilience", "circuit", "enabled"]),
                "a registered adapter cannot turn its circuit breaker off",
            )
            .hint("the breaker protects the gateway and the other sources; tune its thresholds instead"),
        );
    }
}

/// The section the gateway fills itself, from its store: the citizen's applications.
pub const ZAKEN: &str = "zaken";
/// Its fields.
pub const ZAKEN_FIELDS: &[&str] = &[
    "id",
    "service",
    "title",
    "organisation",
    "status",
    "open",
    "reference",
    "submitted",
    "updated",
];

/// Schemas may not fetch anything: a `$ref` to a remote document is refused.
pub struct NoRemote;

impl jsonschema::Retrieve for NoRemote {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("remote references are not allowed ({uri})").into())
    }
}

/// What rules may refer to: sections and the fields adapters map into them.
pub fn vocabulary(
    gw: &GatewayConfig,
    adapters: &BTreeMap<String, Arc<AdapterSpec>>,
) -> crate::rules::Vocabulary {
    let mut v = crate::rules::Vocabulary::default();
    for (name, def) in &gw.sections {
        v.fields.entry(name.clone()).or_default();
        if def.kind == SectionKind::List {
            v.lists.insert(name.clone());
        }
    }
    if gw.sections.contains_key(ZAKEN) {
        v.fields
            .entry(ZAKEN.to_string())
            .or_default()
            .extend(ZAKEN_FIELDS.iter().map(|f| f.to_string()));
    }
    for a in adapters.values() {
        for (sec, m) in &a.def.map {
            for (f, spec) in &m.fields {
                v.fields.entry(sec.clone()).or_default().insert(f.clone());
                match spec.r#type {
                    crate::model::FieldType::Date => {
                        v.dates.insert((sec.clone(), f.clone()));
                    }
                    crate::model::FieldType::Decimal => {
                        v.decimals.entry(sec.clone()).or_default().insert(f.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    v
}

/// The portal block: demo sign-in only with an HS256 key to mint with and well-formed accounts.
fn validate_portal(file: &Path, tree: &Node, gw: &GatewayConfig, errors: &mut Vec<ConfigError>) {
    let p = &gw.portal;
    let at = |path: &[Step]| tree.pos_at(path);
    let key = |k: &str| Step::Key(k.to_string());
    if p.demo_sign_in && !p.enabled {
        errors.push(
            ConfigError::new(
                file,
                at(&[key("portal"), key("demo_sign_in")]),
                "`portal.demo_sign_in` needs `portal.enabled: true`",
            )
            .hint("the sign-in page is one of the portal pages"),
        );
    }
    if p.demo_sign_in
        && !gw
            .auth
            .keys
            .iter()
            .any(|k| k.alg == KeyAlg::HS256 && k.secret.is_some())
    {
        errors.push(
            ConfigError::new(
                file,
                at(&[key("portal"), key("demo_sign_in")]),
                "`portal.demo_sign_in` mints tokens and needs an HS256 key under `auth.keys`",
            )
            .hint("add `{kid: demo, alg: HS256, secret: ${DEMO_SECRET}}`, or turn the demo sign-in off"),
        );
    }
    if p.demo_sign_in && p.demo_accounts.is_empty() {
        errors.push(ConfigError::new(
            file,
            at(&[key("portal"), key("demo_sign_in")]),
            "`portal.demo_sign_in` is on but `portal.demo_accounts` is empty",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, a) in p.demo_accounts.iter().enumerate() {
        let pos = at(&[key("portal"), key("demo_accounts"), Step::Index(i)]);
        let mut problem = |msg: String| errors.push(ConfigError::new(file, pos, msg));
        if a.id.is_empty() || !seen.insert(a.id.as_str()) {
            problem(format!(
                "demo account `{}`: needs an `id`, unique in the list",
                a.id
            ));
        }
        match (&a.bsn, &a.organisation) {
            (Some(bsn), None) => {
                if let Err(e) = crate::bsn::Bsn::parse(bsn) {
                    problem(format!("demo account `{}`: {e}", a.id));
                }
                if !a.roles.is_empty() {
                    problem(format!("demo account `{}`: a citizen has no `roles`", a.id));
                }
            }
            (None, Some(org)) => {
                if !gw.organisations.contains_key(org) {
                    problem(format!(
                        "demo account `{}`: no organisation `{org}` under `organisations`",
                        a.id
                    ));
                }
                if a.roles.is_empty() {
                    problem(format!(
                        "demo account `{}`: an employee needs `roles`",
                        a.id
                    ));
                }
            }
            _ => problem(format!(
                "demo account `{}`: give either `bsn` (a citizen) or `organisation` and `roles` (an employee)",
                a.id
            )),
        }
    }
}

/// `4 MiB`, `64 KiB`, or plain bytes, for messages.
fn byte_size(b: u64) -> String {
    match b {
        0 => "0 bytes".into(),
        _ if b.is_multiple_of(1 << 30) => format!("{} GiB", b >> 30),
        _ if b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        _ if b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        _ => format!("{b} bytes"),
    }
}

fn validate_gateway(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    adapters: &BTreeMap<String, Arc<AdapterSpec>>,
    all_loaded: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(SocketAddr, Compiled)> {
    let at = |path: &[&str]| tree.pos_at_keys(path);
    let mut server_tls = None;
    if let Some(t) = &gw.tls {
        let base = file.parent().unwrap_or(Path::new("."));
        match crate::protocol::tls::server_tls(
            &base.join(&t.cert),
            &base.join(&t.key),
            t.client_ca.as_ref().map(|c| base.join(c)).as_deref(),
        ) {
            Ok(c) => server_tls = Some(c),
            Err(e) => errors.push(
                ConfigError::new(file, at(&["tls"]), e)
                    .hint("`tls: {cert: PEM chain, key: PEM private key}`, relative to this file"),
            ),
        }
    }
    // A list section's key must be a field its sources fill: a key nobody fills makes every
    // record look alike (all `null`), and de-duplication would merge records that differ.
    if all_loaded {
        for (name, def) in &gw.sections {
            if def.kind != SectionKind::List || name == ZAKEN {
                continue;
            }
            let sources: Vec<&Arc<AdapterSpec>> = adapters
                .values()
                .filter(|a| a.def.map.contains_key(name))
                .collect();
            if sources.is_empty() {
                continue;
            }
            for (i, k) in def.key.iter().enumerate() {
                if !sources
                    .iter()
                    .any(|a| a.def.map[name].fields.contains_key(k))
                {
                    let filled: BTreeSet<&str> = sources
                        .iter()
                        .flat_map(|a| a.def.map[name].fields.keys().map(String::as_str))
                        .collect();
                    let filled: Vec<&str> = filled.into_iter().collect();
                    errors.push(
                        ConfigError::new(
                            file,
                            tree.pos_at(&[
                                Step::Key("sections".into()),
                                Step::Key(name.clone()),
                                Step::Key("key".into()),
                                Step::Index(i),
                            ]),
                            format!("key field `{k}` of section `{name}` is filled by no adapter"),
                        )
                        .hint(
                            match closest(
                                k,
                                &filled.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                            ) {
                                Some(c) => format!("did you mean `{c}`?"),
                                None => format!("its adapters fill: {}", filled.join(", ")),
                            },
                        ),
                    );
                }
            }
        }
    }
    // Each answer counts twice against the in-flight budget while it is mapped: the largest
    // one must fit, or that source could never answer.
    let budget = gw.limits.max_inflight_response_bytes.0;
    let largest = adapters
        .values()
        .map(|a| (a.max_response_body, format!("adapter `{}`", a.def.id)))
        .chain([(
            gw.limits.max_response_body.0,
            "`limits.max_response_body`".to_string(),
        )])
        .max_by_key(|(cap, _)| *cap);
    if let Some((cap, whose)) = largest
        && cap.saturating_mul(2) > budget
    {
        errors.push(
            ConfigError::new(
                file,
                at(&["limits", "max_inflight_response_bytes"]),
                format!(
                    "`limits.max_inflight_response_bytes` ({}) cannot hold one answer of {} ({whose}) while it is mapped ({} with its records)",
                    byte_size(budget),
                    byte_size(cap),
                    byte_size(cap.saturating_mul(2))
                ),
            )
            .hint("make the budget at least twice the largest `max_response_body`, or lower that cap"),
        );
    }
    // Rules: compiled against what the adapters actually map, and kept.
    let mut catalogue = crate::rules::Catalogue {
        vocab: vocabulary(gw, adapters),
        ..Default::default()
    };
    if all_loaded {
        let vocab = catalogue.vocab.clone();
        let mut rule = |path: [&str; 3], source: &str| match crate::rules::Rule::compile(
            source, &vocab,
        ) {
            Ok(r) => Some(r),
            Err(problems) => {
                for p in problems {
                    errors.push(
                        ConfigError::new(file, tree.pos_at_keys(&path), format!("{}.{}: {p}", path[0], path[1]))
                            .hint("rules are CEL, e.g. `persoon.leeftijd >= 66` or `uitkeringen.exists(u, u.soort == 'WW')`"),
                    );
                }
                None
            }
        };
        for (id, s) in &gw.services {
            if let Some(r) = rule(["services", id, "relevant_when"], &s.relevant_when) {
                catalogue.services.insert(id.clone(), r);
            }
        }
        for (id, l) in &gw.life_events {
            if let Some(r) = rule(["life_events", id, "rule"], &l.rule) {
                catalogue.life_events.insert(id.clone(), r);
            }
        }
    }
    let mut schemas = BTreeMap::new();
    for (id, svc) in &gw.services {
        let Some(app) = &svc.application else {
            continue;
        };
        let pos = at(&["services", id, "application"]);
        match jsonschema::options()
            .with_retriever(NoRemote)
            .build(&app.schema)
        {
            Ok(v) => {
                schemas.insert(id.clone(), Arc::new(v));
            }
            Err(e) => errors.push(
                ConfigError::new(file, at(&["services", id, "application", "schema"]), format!("service `{id}`: the schema is not valid JSON Schema: {e}"))
                    .hint("write a JSON Schema (2020-12) in YAML: `{type: object, required: [...], properties: {...}}`"),
            ),
        }
        let d = &app.delivery;
        let org = gw.organisations.get(&svc.organisation);
        if !(d.endpoint.starts_with("http://") || d.endpoint.starts_with("https://"))
            && (!d.endpoint.starts_with('/') || org.is_none_or(|o| o.base_url.is_none()))
        {
            errors.push(ConfigError::new(file, pos, format!("service `{id}`: delivery endpoint `{}` is neither a URL nor a path under the organisation's base_url", d.endpoint)));
        }
        if d.call().is_none() {
            let (need, other) = match d.protocol {
                crate::model::Protocol::Soap => ("soap", "rest"),
                crate::model::Protocol::Rest => ("rest", "soap"),
            };
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("service `{id}`: a {need} delivery needs `{need}:` and no `{other}:`"),
                )
                .hint(format!("give the delivery one `{need}:` block")),
            );
        }
        if d.soap
            .as_ref()
            .is_some_and(|s| s.addressing && s.action.is_none())
        {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("service `{id}`: `addressing: true` needs a `soap.action`"),
                )
                .hint(
                    "WS-Addressing makes `wsa:Action` mandatory; give the operation's action URI",
                ),
            );
        }
        let props: Vec<String> = app
            .schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let mut texts: Vec<String> = Vec::new();
        if let Some(s) = &d.soap {
            texts.push(s.body.clone());
        }
        if let Some(r) = &d.rest {
            if let Some(b) = &r.body {
                texts.push(b.to_string());
            }
            texts.extend(r.headers.values().cloned());
        }
        for t in texts {
            for name in crate::protocol::template::placeholders(&t) {
                let ok = ["bsn", "application_id", "service"].contains(&name.as_str())
                    || name
                        .strip_prefix("data.")
                        .is_some_and(|p| props.iter().any(|x| x == p));
                if !ok {
                    errors.push(
                        ConfigError::new(file, pos, format!("service `{id}`: unknown placeholder `{{{{{name}}}}}` in the delivery template"))
                            .hint(format!("use bsn, application_id, service, or data.<one of: {}>", props.join(", "))),
                    );
                }
            }
        }
    }
    let service_ids: Vec<String> = gw.services.keys().cloned().collect();
    for (id, s) in &gw.services {
        if !gw.organisations.contains_key(&s.organisation) {
            errors.push(ConfigError::new(
                file,
                at(&["services", id, "organisation"]),
                format!(
                    "service `{id}`: organisation `{}` is not declared",
                    s.organisation
                ),
            ));
        }
    }
    let mut unknown_service = |path: &[&str], sid: &str| {
        if !gw.services.contains_key(sid) {
            errors.push(
                ConfigError::new(file, at(path), format!("unknown service `{sid}`"))
                    .hint_opt(closest(sid, &service_ids).map(|c| format!("did you mean `{c}`?"))),
            );
        }
    };
    for (id, l) in &gw.life_events {
        for sid in &l.services {
            unknown_service(&["life_events", id, "services"], sid);
        }
    }
    for (id, t) in &gw.themes {
        for sid in &t.services {
            unknown_service(&["themes", id, "services"], sid);
        }
    }
    for (id, t) in &gw.themes {
        for le in &t.life_events {
            if !gw.life_events.contains_key(le) {
                errors.push(ConfigError::new(
                    file,
                    at(&["themes", id, "life_events"]),
                    format!("theme `{id}`: unknown life event `{le}`"),
                ));
            }
        }
    }
    for (id, o) in &gw.organisations {
        let org_at = |key: &str| tree.pos_at_keys(&["organisations", id, key]);
        for (i, prefix) in o.allowed_endpoints.iter().enumerate() {
            let ok = reqwest::Url::parse(prefix).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !ok {
                let pos = tree.pos_at(&[
                    Step::Key("organisations".into()),
                    Step::Key(id.clone()),
                    Step::Key("allowed_endpoints".into()),
                    Step::Index(i),
                ]);
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        "an allowed endpoint must be an http(s) URL prefix without user info, query or fragment",
                    )
                    .hint("e.g. `https://services.uwv.example.nl/koppelvlak/`"),
                );
            }
        }
        if let Some(t) = &o.tls {
            let base = file.parent().unwrap_or(Path::new("."));
            if let Err(e) = crate::protocol::client::source_client(Some(t), base, None) {
                errors.push(
                    ConfigError::new(file, org_at("tls"), e)
                        .hint("paths are relative to this file; PEM files expected"),
                );
            }
        }
    }
    let is_sha256 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    for (i, p) in gw.partners.iter().enumerate() {
        let pos = tree
            .walk(&[Step::Key("partners".into()), Step::Index(i)])
            .0
            .pos;
        if !gw.organisations.contains_key(&p.organisation) {
            errors.push(ConfigError::new(
                file,
                pos,
                format!(
                    "partner credential for unknown organisation `{}`",
                    p.organisation
                ),
            ));
        }
        if p.api_key_sha256.is_none() && p.client_cert_oin.is_none() {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    "a partner credential needs `api_key_sha256` or `client_cert_oin`",
                )
                .hint("create a key with `ketenportaal credential new` and put its hash here"),
            );
        }
        if p.api_key_sha256.as_deref().is_some_and(|h| !is_sha256(h)) {
            errors.push(
                ConfigError::new(file, pos, "`api_key_sha256` must be 64 hex digits (a SHA-256)")
                    .hint("never put the key itself in the config; `ketenportaal credential new` prints both"),
            );
        }
        if p.client_cert_oin
            .as_deref()
            .is_some_and(|o| o.len() != 20 || !o.bytes().all(|b| b.is_ascii_digit()))
        {
            errors.push(ConfigError::new(
                file,
                pos,
                "`client_cert_oin` must be a 20-digit OIN",
            ));
        }
        if p.client_cert_oin.is_some() && gw.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    "`client_cert_oin` needs client certificates: set `tls.client_ca`",
                )
                .hint("add `client_ca: partners-ca.pem` under `tls:`"),
            );
        }
    }
    if gw
        .admin
        .token_sha256
        .as_deref()
        .is_some_and(|h| !is_sha256(h))
    {
        errors.push(
            ConfigError::new(
                file,
                at(&["admin", "token_sha256"]),
                "`admin.token_sha256` must be 64 hex digits (a SHA-256)",
            )
            .hint("`ketenportaal credential new` prints a token and its hash"),
        );
    }
    validate_portal(file, tree, gw, errors);
    let listen = match gw.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                ConfigError::new(
                    file,
                    at(&["listen"]),
                    format!("`listen: {}` is not an address", gw.listen),
                )
                .hint("write `host:port`, e.g. `127.0.0.1:8080` or `0.0.0.0:8443`"),
            );
            None
        }
    };
    if gw.deadline.0.is_zero() {
        errors.push(ConfigError::new(
            file,
            at(&["deadline"]),
            "deadline must be above 0",
        ));
    }
    for (id, org) in &gw.organisations {
        if org.oin.len() != 20 || !org.oin.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(
                ConfigError::new(
                    file,
                    at(&["organisations", id, "oin"]),
                    format!("OIN of `{id}` must be 20 digits"),
                )
                .hint("quote it to keep leading zeros: `oin: \"00000001003214345000\"`"),
            );
        }
    }
    let adapter_ids: Vec<String> = adapters.keys().cloned().collect();
    // Only complain about unknown adapters when every adapter file loaded; otherwise the
    // real problem is already reported.
    for (name, s) in &gw.sections {
        for (i, a) in s.authority.iter().enumerate() {
            if all_loaded && !adapters.contains_key(a) {
                let pos = tree
                    .walk(&[
                        Step::Key("sections".into()),
                        Step::Key(name.clone()),
                        Step::Key("authority".into()),
                        Step::Index(i),
                    ])
                    .0
                    .pos;
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!("section `{name}`: authority `{a}` is not a loaded adapter"),
                    )
                    .hint(match closest(a, &adapter_ids) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("loaded adapters: {}", adapter_ids.join(", ")),
                    }),
                );
            }
        }
        if s.kind == SectionKind::Single && (!s.key.is_empty() || s.sort.is_some()) {
            errors.push(
                ConfigError::new(file, at(&["sections", name]), format!("section `{name}` is `single`: `key` and `sort` apply to `list` sections only"))
                    .hint("remove `key`/`sort`, or set `kind: list`"),
            );
        }
        if s.kind == SectionKind::List && s.key.is_empty() {
            errors.push(
                ConfigError::new(
                    file,
                    at(&["sections", name]),
                    format!("list section `{name}` needs `key` fields to de-duplicate records"),
                )
                .hint("e.g. `key: [soort, ingangsdatum]`"),
            );
        }
    }
    // Fields that some adapter maps into each section (and the gateway's own `zaken`).
    let mut fields: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    fields.entry(ZAKEN).or_default().extend(ZAKEN_FIELDS);
    for a in adapters.values() {
        for (sec, m) in &a.def.map {
            fields
                .entry(sec)
                .or_default()
                .extend(m.fields.keys().map(String::as_str));
        }
    }
    let known_sections: Vec<String> = gw.sections.keys().cloned().collect();
    for (vname, v) in &gw.views {
        for (sec, allowed) in &v.sections {
            let pos = tree
                .walk(&[
                    Step::Key("views".into()),
                    Step::Key(vname.clone()),
                    Step::Key("sections".into()),
                ])
                .0
                .key_pos(sec)
                .unwrap_or_else(|| at(&["views", vname]));
            if !gw.sections.contains_key(sec) {
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!("view `{vname}`: section `{sec}` is not declared"),
                    )
                    .hint_opt(
                        closest(sec, &known_sections).map(|c| format!("did you mean `{c}`?")),
                    ),
                );
                continue;
            }
            if !all_loaded {
                continue;
            }
            let have = fields.get(sec.as_str());
            for f in allowed {
                if f == "*" {
                    continue;
                }
                if !have.is_some_and(|h| h.contains(f.as_str())) {
                    let known: Vec<String> = have
                        .map(|h| h.iter().map(|s| s.to_string()).collect())
                        .unwrap_or_default();
                    errors.push(
                        ConfigError::new(
                            file,
                            pos,
                            format!(
                                "view `{vname}`: no adapter maps field `{f}` into section `{sec}`"
                            ),
                        )
                        .hint(match closest(f, &known) {
                            Some(c) => format!("did you mean `{c}`?"),
                            None => format!("fields mapped into `{sec}`: {}", known.join(", ")),
                        }),
                    );
                }
            }
        }
        match v.audience {
            Audience::Employee => {
                if v.roles.is_empty() {
                    errors.push(
                        ConfigError::new(
                            file,
                            at(&["views", vname]),
                            format!("employee view `{vname}` names no `roles`"),
                        )
                        .hint(
                            "list the token roles that may use it, e.g. `roles: [uwv-werkcoach]`",
                        ),
                    );
                }
                if v.purposes.is_empty() {
                    errors.push(
                        ConfigError::new(file, at(&["views", vname]), format!("employee view `{vname}` allows no `purposes` (doelbinding)"))
                            .hint("e.g. `purposes: {re-integratie: {processing_activity: \"https://...\"}}`"),
                    );
                }
            }
            Audience::Citizen => {
                if !v.roles.is_empty() || !v.purposes.is_empty() {
                    errors.push(
                        ConfigError::new(
                            file,
                            at(&["views", vname]),
                            format!("citizen view `{vname}` cannot have roles or purposes"),
                        )
                        .hint("a citizen reads their own dossier; remove `roles`/`purposes`"),
                    );
                }
            }
        }
    }
    if !gw.views.values().any(|v| v.audience == Audience::Citizen) {
        // Not an error: an employee-only gateway is valid.
    }
    match &gw.audit.pseudonym_key {
        None => errors.push(
            ConfigError::new(file, at(&["audit"]), "`audit.pseudonym_key` is not set")
                .hint("processing records pseudonymise the BSN with it: `audit: {pseudonym_key: ${KETENPORTAAL_PSEUDONYM_KEY}}`, 32+ bytes"),
        ),
        // A `${VAR}` that did not expand is reported already, where it is.
        Some(k) if k.expose().len() < 32 && !k.expose().contains("${") => errors.push(
            ConfigError::new(file, at(&["audit", "pseudonym_key"]), "`audit.pseudonym_key` needs at least 32 bytes")
                .hint("generate one with `openssl rand -base64 48` and pass it via `${ENV}`"),
        ),
        _ => {}
    }
    if gw.store.zaken_limit == 0 {
        errors.push(
            ConfigError::new(file, at(&["store", "zaken_limit"]), "`store.zaken_limit` must be at least 1")
                .hint("it bounds the applications the `zaken` section lists; to show none, leave `zaken` out of the view"),
        );
    }
    for (i, k) in gw.auth.keys.iter().enumerate() {
        let pos = tree
            .walk(&[
                Step::Key("auth".into()),
                Step::Key("keys".into()),
                Step::Index(i),
            ])
            .0
            .pos;
        match (k.alg, &k.secret, &k.public_key) {
            (KeyAlg::HS256, Some(s), _) if s.expose().len() < 32 && !s.expose().contains("${") => {
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!("key `{}`: an HS256 secret needs at least 32 bytes", k.kid),
                    )
                    .hint("generate one with `openssl rand -base64 48` and pass it via `${ENV}`"),
                )
            }
            (KeyAlg::HS256, None, _) => errors.push(
                ConfigError::new(file, pos, format!("key `{}`: HS256 needs `secret`", k.kid))
                    .hint("e.g. `secret: ${KETENPORTAAL_JWT_SECRET}`"),
            ),
            (KeyAlg::RS256 | KeyAlg::ES256, _, None) => errors.push(ConfigError::new(
                file,
                pos,
                format!(
                    "key `{}`: {:?} needs `public_key` (a PEM file)",
                    k.kid, k.alg
                ),
            )),
            _ => {}
        }
        if let Err(e) = crate::auth::decoding_key(k, file.parent().unwrap_or(Path::new(".")))
            && (k.secret.is_some() || k.public_key.is_some())
        {
            errors.push(ConfigError::new(file, pos, format!("key `{}`: {e}", k.kid)));
        }
    }
    // Every key checked above: the verifier fails only where an error is already reported.
    let verifier =
        match crate::auth::Verifier::new(&gw.auth, file.parent().unwrap_or(Path::new("."))) {
            Ok(v) => v,
            Err(e) => {
                if errors.is_empty() {
                    errors.push(ConfigError::new(file, at(&["auth"]), e));
                }
                return None;
            }
        };
    let compiled = Compiled {
        verifier: Arc::new(verifier),
        catalogue: Arc::new(catalogue),
        schemas: Arc::new(schemas),
        server_tls,
    };
    listen.map(|l| (l, compiled))
}
