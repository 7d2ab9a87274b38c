//! From typed config to a validated, compiled [`Config`] snapshot.
//!
//! Cross-references (adapters -> organisations, maps -> sections, views -> fields, authority
//! lists -> adapters) are checked here, and every adapter mapping is compiled. All problems
//! are collected; a snapshot only exists when there are none. A snapshot is immutable: reload
//! builds a new one and swaps it in whole.
//!
//! - this module: the snapshot's types, loading the gateway file with its adapter files, and
//!   validating an operator's adapter file on its own.
//! - `adapter`: one adapter descriptor, validated and compiled, under the rules of who wrote
//!   it ([`Trust`]); with `request` (what it may put in its request) and `partner` (the bounds
//!   of `registrations:` on a partner's descriptor).
//! - `gateway`: the gateway file's own checks and what it compiles (the token verifier, the
//!   server TLS), run in one order with those in `sections` (sections and views), `services`
//!   (rules, application schemas, deliveries) and `portal`.
//! - `registrations`: partners' registrations layered over the files.
//! - `warnings`: what is valid but needs the operator's attention.
//! - `vocabulary`: what rules may refer to, and the gateway's own `zaken` section.
//!
//! Nothing here does I/O beyond reading the operator's files (and the certificates they name);
//! nothing here serves or calls anyone.

mod adapter;
mod gateway;
mod partner;
mod portal;
mod registrations;
mod request;
mod sections;
mod services;
mod vocabulary;
mod warnings;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::load::{ConfigError, ConfigErrors, read_tree, typed};
use super::yaml::{Node, Pos};
use crate::mapping::MapLimits;
use crate::mapping::json::JsonMapping;
use crate::mapping::xml::XmlMapping;
use crate::model::{AdapterDef, GatewayConfig};
pub use adapter::Trust;
use adapter::compile_adapter;

/// The ids in `listed` that are not declared under `organisations:` (a view's, a token key's
/// or the auditors' list), for the error each gets with [`UNDECLARED_HINT`].
fn undeclared<'a>(gw: &'a GatewayConfig, listed: &'a [String]) -> impl Iterator<Item = &'a str> {
    listed
        .iter()
        .map(String::as_str)
        .filter(|o| !gw.organisations.contains_key(*o))
}

/// The hint for an organisation id that is not declared.
const UNDECLARED_HINT: &str = "list ids from `organisations:`";
pub use services::NoRemote;
pub use vocabulary::{GATEWAY_SOURCE, RESERVED_ADAPTER_IDS, ZAKEN, ZAKEN_FIELDS, vocabulary};

/// The loaded adapters by id.
type Adapters = BTreeMap<String, Arc<AdapterSpec>>;
/// The file and tree each file adapter came from, for positions in warnings.
type AdapterTrees = BTreeMap<String, (PathBuf, Node)>;

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
    /// `url`, parsed (and normalised as a URL) when the config loaded: a source call clones
    /// it instead of parsing the text, host and all, again; `None` for an adapter without an
    /// endpoint.
    pub endpoint: Option<http::Uri>,
    pub organisation_name: String,
    pub oin: String,
    pub mapping: Mapping,
    pub limits: MapLimits,
    pub max_response_body: u64,
    /// A client with this source's own TLS settings (CA, client certificate) or a registered
    /// adapter's resolver, when it has either; else the gateway's shared client is used.
    pub http: Option<crate::protocol::client::Outbound>,
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
    /// Organisation id → the client with its `tls:` (CAs, client certificate), for deliveries
    /// to it; organisations without `tls:` use the gateway's shared client.
    pub organisation_clients: Arc<BTreeMap<String, crate::protocol::client::Outbound>>,
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
        let adapter_files = adapter_files(file, &tree, &base_dir, &mut errors);
        let (adapters, adapter_trees) = load_adapter_files(
            &adapter_files,
            gateway.as_ref(),
            &base_dir,
            env,
            &mut hasher,
            &mut errors,
        );

        let Some(gateway) = gateway else {
            return Err(ConfigErrors(errors));
        };
        let all_loaded = adapter_files.len() == adapters.len();
        let compiled =
            gateway::validate_gateway(file, &tree, &gateway, &adapters, all_loaded, &mut errors);

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let (listen, compiled) = compiled.ok_or_else(|| ConfigErrors(Vec::new()))?;
        let file_adapters = adapters
            .iter()
            .map(|(id, a)| (id.clone(), a.origin.clone()))
            .collect();
        let warnings = warnings::warnings(file, &tree, &gateway, listen, &adapters, &adapter_trees);
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

/// The adapter files `adapters:` names (a folder stands for its YAML files, in name order),
/// with a problem for each entry that is neither a file nor a folder.
fn adapter_files(
    file: &Path,
    tree: &Node,
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
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

    let mut adapter_files: Vec<PathBuf> = Vec::new();
    for (entry, pos) in entries {
        let p = base_dir.join(&entry);
        if p.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                        .collect();
                    files.sort();
                    adapter_files.extend(files);
                }
                Err(e) => errors.push(ConfigError::new(
                    file,
                    pos,
                    format!("cannot read adapter folder {}: {e}", p.display()),
                )),
            }
        } else if p.is_file() {
            adapter_files.push(p);
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
                .hint("paths are relative to this config file; fix the path or remove the entry"),
            );
        }
    }
    adapter_files
}

/// Reads and compiles each adapter file (each one's bytes go into the version `hasher`).
/// Without a valid gateway config, each file's own structure is still checked.
fn load_adapter_files(
    adapter_files: &[PathBuf],
    gateway: Option<&GatewayConfig>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    hasher: &mut Sha256,
    errors: &mut Vec<ConfigError>,
) -> (Adapters, AdapterTrees) {
    let mut adapters = Adapters::new();
    let mut adapter_trees = AdapterTrees::new();
    for path in adapter_files {
        if let Ok(bytes) = std::fs::read(path) {
            hasher.update(&bytes);
        }
        let mut errs = Vec::new();
        let Some(atree) = read_tree(path, env, &mut errs) else {
            errors.extend(errs);
            continue;
        };
        let Some(gateway) = gateway else {
            // Without a valid gateway config, check the adapter's own structure only.
            let _: Option<AdapterDef> = typed(path, &atree, &mut errs);
            errors.extend(errs);
            continue;
        };
        if let Some(spec) =
            compile_adapter(path, &atree, gateway, base_dir, Trust::Operator, &mut errs)
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
    (adapters, adapter_trees)
}
