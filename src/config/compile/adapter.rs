//! One adapter descriptor, validated and compiled into an [`AdapterSpec`]: its id and
//! organisation, the endpoint it calls, its protocol block and templates, the sections it maps
//! into and the compiled mapping, its request parts ([`super::request`]), a registration's
//! bounds ([`super::partner`]), and the HTTP client for its own TLS settings. What a descriptor
//! may do depends on who wrote it ([`Trust`]).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::partner::check_registration_bounds;
use super::request::check_request_parts;
use super::{AdapterSpec, Mapping, PublicDescriptor, RESERVED_ADAPTER_IDS, ZAKEN};
use crate::config::load::{ConfigError, did_you_mean, typed};
use crate::config::yaml::{Node, Pos, Step};
use crate::mapping::json::JsonMapping;
use crate::mapping::xml::XmlMapping;
use crate::mapping::{CompileError, MapLimits};
use crate::model::{AdapterDef, GatewayConfig, Organisation, Protocol};

/// Who wrote a descriptor, which decides what it may do (see `docs/design.md`, "Trust boundaries").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The operator's own files: `${ENV}` expanded, files and any endpoint allowed.
    Operator,
    /// A partner's descriptor sent over the API: no expansion, no files, an endpoint under the
    /// organisation's declared URLs, headers and bounds limited by `registrations:`.
    Partner,
}

/// A descriptor being checked: where it came from, its tree (for positions) and its values.
pub(super) struct Descriptor<'a> {
    pub(super) file: &'a Path,
    pub(super) tree: &'a Node,
    pub(super) def: &'a AdapterDef,
}

impl Descriptor<'_> {
    /// The position of the value at `path` (or of the nearest part of it that is there).
    pub(super) fn at(&self, path: &[&str]) -> Pos {
        self.tree.pos_at_keys(path)
    }

    /// The position of `key` itself in the map at `parent`.
    fn key_at(&self, parent: &[&str], key: &str) -> Pos {
        let steps: Vec<Step> = parent.iter().map(|s| Step::Key((*s).to_string())).collect();
        let (n, _) = self.tree.walk(&steps);
        n.key_pos(key).unwrap_or(n.pos)
    }

    /// A problem at `path`.
    pub(super) fn problem(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, self.at(path), message)
    }
}

/// Validates and compiles one adapter tree.
pub(super) fn compile_adapter(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    base_dir: &Path,
    trust: Trust,
    errors: &mut Vec<ConfigError>,
) -> Option<AdapterSpec> {
    let def: AdapterDef = typed(file, tree, errors)?;
    let before = errors.len();
    let d = Descriptor {
        file,
        tree,
        def: &def,
    };
    check_id(&d, errors);
    let org = organisation(&d, gw, errors);
    let url = endpoint_url(&d, org, trust, errors);
    if !url.is_empty() && url::Url::parse(&url).is_err() {
        errors.push(d.problem(
            &["endpoint"],
            format!("endpoint `{url}` is not a valid URL"),
        ));
    }
    if def.timeout.0.is_zero() {
        errors.push(
            d.problem(&["timeout"], "timeout must be above 0")
                .hint("e.g. `timeout: 800ms`"),
        );
    }
    check_protocol_block(&d, errors);
    check_placeholders(&d, errors);
    check_sections(&d, gw, errors);
    let mapping = compile_mapping(&d, errors);
    check_request_parts(&d, trust, errors);
    if trust == Trust::Partner {
        check_registration_bounds(&d, gw, errors);
    }
    let (http, tls_material) = source_client(&d, org, &url, base_dir, trust, errors);
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
        endpoint: url::Url::parse(&url)
            .ok()
            .and_then(|u| u.as_str().parse().ok()),
        url,
        organisation_name: org.name.clone(),
        oin: org.oin.clone(),
        mapping: mapping?,
        limits: MapLimits {
            max_depth: gw.limits.max_depth,
            max_records: gw.limits.max_records,
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

/// Ids start with a lowercase letter, then lowercase letters, digits and `-`, and are none of
/// the names the gateway uses itself ([`RESERVED_ADAPTER_IDS`]): an id is shown as a source
/// in every dossier, so `-` or `0` alone, or `ketenportaal`, would read as something it is not.
fn check_id(d: &Descriptor, errors: &mut Vec<ConfigError>) {
    let id = &d.def.id;
    let well_formed = id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        errors.push(
            d.problem(&["id"], format!("adapter id `{id}` is not valid"))
                .hint("start with a lowercase letter, then use lowercase letters, digits and `-`, e.g. `uwv-uitkeringen`"),
        );
    } else if let Some((_, why)) = RESERVED_ADAPTER_IDS.iter().find(|(r, _)| r == id) {
        errors.push(
            d.problem(
                &["id"],
                format!("adapter id `{id}` is reserved: it is {why}"),
            )
            .hint(format!(
                "choose another id, e.g. `{}-{id}`",
                d.def.organisation
            )),
        );
    }
}

/// The organisation the adapter belongs to, which the gateway config must declare.
fn organisation<'g>(
    d: &Descriptor,
    gw: &'g GatewayConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<&'g Organisation> {
    let name = &d.def.organisation;
    let org = gw.organisations.get(name);
    if org.is_none() {
        let known: Vec<String> = gw.organisations.keys().cloned().collect();
        errors.push(
            d.problem(
                &["organisation"],
                format!("organisation `{name}` is not declared in the gateway config"),
            )
            .hint(did_you_mean(name, &known).unwrap_or_else(|| {
                format!(
                    "declare it under `organisations:`; known: {}",
                    known.join(", ")
                )
            })),
        );
    }
    org
}

/// The URL the adapter calls (empty when it has none): a registration's only under the URLs
/// the operator declared for its organisation; an operator's a full URL, or a path under the
/// organisation's `base_url`.
fn endpoint_url(
    d: &Descriptor,
    org: Option<&Organisation>,
    trust: Trust,
    errors: &mut Vec<ConfigError>,
) -> String {
    let def = d.def;
    if trust == Trust::Partner {
        return org.map_or_else(String::new, |o| {
            let mut prefixes: Vec<&str> = o.allowed_endpoints.iter().map(String::as_str).collect();
            if prefixes.is_empty() {
                prefixes.extend(o.base_url.as_deref());
            }
            match crate::config::endpoint::check_registered(
                &def.endpoint,
                o.base_url.as_deref(),
                &prefixes,
            ) {
                Ok(u) => u.to_string(),
                Err(e) => {
                    errors.push(d.problem(&["endpoint"], e.to_string()).hint(format!(
                        "a registered adapter's endpoint must lie under the URLs the operator declared for `{}` (`organisations.{}.allowed_endpoints`, else its `base_url`); give a path under them, or ask the operator",
                        def.organisation, def.organisation
                    )));
                    String::new()
                }
            }
        });
    }
    if def.endpoint.starts_with("http://") || def.endpoint.starts_with("https://") {
        return def.endpoint.clone();
    }
    if !def.endpoint.starts_with('/') {
        errors.push(
            d.problem(&["endpoint"], format!("endpoint `{}` is not a URL", def.endpoint))
                .hint("write `https://host/path`, or a path starting with `/` under the organisation's base_url"),
        );
        return String::new();
    }
    match org.and_then(|o| o.base_url.as_deref()) {
        Some(base) => format!("{}{}", base.trim_end_matches('/'), def.endpoint),
        None => {
            if org.is_some() {
                errors.push(
                    d.problem(
                        &["endpoint"],
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
}

/// `protocol:` names the one block the adapter has.
fn check_protocol_block(d: &Descriptor, errors: &mut Vec<ConfigError>) {
    let def = d.def;
    let extra = |key: &str, message: &str| ConfigError::new(d.file, d.key_at(&[], key), message);
    let problem = match (def.protocol, &def.soap, &def.rest) {
        (Protocol::Soap, None, _) => d
            .problem(&["protocol"], "protocol `soap` needs a `soap:` block")
            .hint("add `soap: {version: \"1.1\", action: ..., namespaces: {...}, body: ...}`"),
        (Protocol::Rest, _, None) => d
            .problem(&["protocol"], "protocol `rest` needs a `rest:` block")
            .hint("add `rest: {method: POST, body: {...}}`"),
        (Protocol::Soap, Some(_), Some(_)) => extra("rest", "a `rest:` block in a soap adapter")
            .hint("remove it, or set `protocol: rest`"),
        (Protocol::Rest, Some(_), Some(_)) => extra("soap", "a `soap:` block in a rest adapter")
            .hint("remove it, or set `protocol: soap`"),
        _ => return,
    };
    errors.push(problem);
}

/// Templates may only use known placeholders.
fn check_placeholders(d: &Descriptor, errors: &mut Vec<ConfigError>) {
    let def = d.def;
    let mut templates: Vec<(Pos, String)> = Vec::new();
    if let Some(s) = &def.soap {
        templates.push((d.at(&["soap", "body"]), s.body.clone()));
    }
    if let Some(r) = &def.rest {
        if let Some(b) = &r.body {
            templates.push((d.at(&["rest", "body"]), b.to_string()));
        }
        for (k, v) in &r.headers {
            templates.push((d.at(&["rest", "headers", k]), v.clone()));
        }
    }
    for (pos, t) in templates {
        for name in crate::protocol::template::placeholders(&t) {
            if !crate::protocol::template::KNOWN.contains(&name.as_str()) {
                errors.push(
                    ConfigError::new(d.file, pos, format!("unknown placeholder `{{{{{name}}}}}`"))
                        .hint(format!(
                            "known placeholders: {}",
                            crate::protocol::template::KNOWN.join(", ")
                        )),
                );
            }
        }
    }
}

/// Every section the adapter maps into is declared, and is not the gateway's own `zaken`.
fn check_sections(d: &Descriptor, gw: &GatewayConfig, errors: &mut Vec<ConfigError>) {
    let known_sections: Vec<String> = gw.sections.keys().cloned().collect();
    for name in d.def.map.keys() {
        let pos = d.key_at(&["map"], name);
        if name == ZAKEN {
            errors.push(
                ConfigError::new(
                    d.file,
                    pos,
                    format!("section `{ZAKEN}` is filled by the gateway itself (applications from its store); an adapter cannot map into it"),
                )
                .hint("map the organisation's cases into a section of their own, e.g. `lopende_zaken`"),
            );
            continue;
        }
        if !gw.sections.contains_key(name) {
            errors.push(
                ConfigError::new(
                    d.file,
                    pos,
                    format!("section `{name}` is not declared in the gateway config"),
                )
                .hint(did_you_mean(name, &known_sections).unwrap_or_else(|| {
                    format!(
                        "declare it under `sections:`; known: {}",
                        known_sections.join(", ")
                    )
                })),
            );
        }
    }
}

/// The compiled mapping, or a problem at each field (or `each`) that does not compile.
fn compile_mapping(d: &Descriptor, errors: &mut Vec<ConfigError>) -> Option<Mapping> {
    let def = d.def;
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
    match compiled {
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
                    Some(f) => d.at(&["map", &section, "fields", f]),
                    None => d.at(&["map", &section, "each"]),
                };
                errors.push(ConfigError::new(d.file, pos, message).hint_opt(hint));
            }
            None
        }
    }
}

/// TLS towards the source: the client is built now, so bad certificates are config errors. A
/// file adapter's own `tls:` wins over its organisation's; a registration only gets its
/// organisation's, and a resolver that keeps DNS names on public addresses. Returns the client
/// (none when the shared one will do) and the certificates' bytes, for the fingerprint.
fn source_client(
    d: &Descriptor,
    org: Option<&Organisation>,
    url: &str,
    base_dir: &Path,
    trust: Trust,
    errors: &mut Vec<ConfigError>,
) -> (Option<crate::protocol::client::Outbound>, Vec<u8>) {
    let own_tls = match trust {
        Trust::Operator => d.def.tls.as_ref(),
        Trust::Partner => None,
    };
    let tls = own_tls.or(org.and_then(|o| o.tls.as_ref()));
    let guard = match (trust, org) {
        (Trust::Partner, Some(o)) if !is_localhost(url) => {
            Some(crate::protocol::client::PublicAddresses {
                allow_private: o.allow_private_addresses,
            })
        }
        _ => None,
    };
    if tls.is_none() && guard.is_none() {
        return (None, Vec::new());
    }
    match crate::protocol::client::source_client(tls, base_dir, guard) {
        Ok((client, material)) => (Some(client), material),
        Err(msg) => {
            let path = if own_tls.is_some() {
                "tls"
            } else {
                "organisation"
            };
            errors.push(d.problem(&[path], msg).hint(
                "paths are relative to the gateway config file; PEM files expected (the organisation's `tls:` in the gateway config applies here)",
            ));
            (None, Vec::new())
        }
    }
}

/// Whether `url`'s host is `localhost` (or below it): a name the partner does not control, so
/// the operator who declared it meant the local machine.
fn is_localhost(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "localhost" || h.ends_with(".localhost"))
}
