//! The gateway file's own checks, and what it compiles once: the token verifier and the server
//! TLS here, the rules and application schemas in `services`. Each check is a function of its
//! own; [`validate_gateway`] runs them, wherever they live (`sections`, `services`, `portal`),
//! in one fixed order, so problems at the same position are always reported in the same order.
//! Here: the server TLS, the in-flight budget, organisations, partner credentials and the admin
//! token, the listen address, the deadline, the audit key and the store's bounds, the shared
//! cache's key and server, token keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::portal::validate_portal;
use super::{AdapterSpec, Compiled};
use crate::config::load::ConfigError;
use crate::config::yaml::{Node, Pos, Step};
use crate::model::{GatewayConfig, KeyAlg};

/// The gateway file being checked, with the adapters loaded with it.
#[derive(Clone, Copy)]
pub(super) struct GatewayFile<'a> {
    pub(super) file: &'a Path,
    pub(super) tree: &'a Node,
    pub(super) gw: &'a GatewayConfig,
    pub(super) adapters: &'a BTreeMap<String, Arc<AdapterSpec>>,
    /// Whether every adapter file loaded. Checks against what adapters map wait for it:
    /// otherwise they would report what is only a consequence of a broken adapter file.
    pub(super) all_loaded: bool,
}

/// Checks the gateway file against itself and its adapters, and compiles what it keeps. The
/// listen address and the compiled parts come back only when nothing blocks them.
pub(super) fn validate_gateway(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    adapters: &BTreeMap<String, Arc<AdapterSpec>>,
    all_loaded: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(SocketAddr, Compiled)> {
    let g = GatewayFile {
        file,
        tree,
        gw,
        adapters,
        all_loaded,
    };
    let server_tls = g.server_tls(errors);
    g.list_keys(errors);
    g.inflight_budget(errors);
    let catalogue = g.rules(errors);
    let schemas = g.applications(errors);
    g.service_references(errors);
    let organisation_clients = g.organisations(errors);
    g.credentials(errors);
    validate_portal(file, tree, gw, errors);
    let listen = g.listen(errors);
    g.deadline_and_oins(errors);
    g.sections(errors);
    g.views(errors);
    // An employee-only gateway (no citizen view) is valid.
    g.audit_and_store(errors);
    g.shared_cache(errors);
    g.auth_keys(errors);
    g.auditor_organisations(errors);
    // Every key checked above: the verifier fails only where an error is already reported.
    let verifier = match crate::auth::Verifier::new(&gw.auth, g.base()) {
        Ok(v) => v,
        Err(e) => {
            if errors.is_empty() {
                errors.push(ConfigError::new(file, g.at(&["auth"]), e));
            }
            return None;
        }
    };
    let compiled = Compiled {
        verifier: Arc::new(verifier),
        catalogue: Arc::new(catalogue),
        schemas: Arc::new(schemas),
        server_tls,
        organisation_clients: Arc::new(organisation_clients),
    };
    listen.map(|l| (l, compiled))
}

impl GatewayFile<'_> {
    /// The position of the value at `path` (or of the nearest part of it that is there).
    pub(super) fn at(&self, path: &[&str]) -> Pos {
        self.tree.pos_at_keys(path)
    }

    /// The folder the file's relative paths start from.
    pub(super) fn base(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// The server TLS (`tls:`), built now so a bad certificate or key is a config error.
    fn server_tls(&self, errors: &mut Vec<ConfigError>) -> Option<Arc<rustls::ServerConfig>> {
        let t = self.gw.tls.as_ref()?;
        let base = self.base();
        match crate::protocol::tls::server_tls(
            &base.join(&t.cert),
            &base.join(&t.key),
            t.client_ca.as_ref().map(|c| base.join(c)).as_deref(),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(
                    ConfigError::new(self.file, self.at(&["tls"]), e).hint(
                        "`tls: {cert: PEM chain, key: PEM private key}`, relative to this file",
                    ),
                );
                None
            }
        }
    }

    /// Each answer counts twice against the in-flight budget while it is mapped: the largest
    /// one must fit in an organisation's share of it, or that source could never answer.
    fn inflight_budget(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile {
            file, gw, adapters, ..
        } = *self;
        let percent = gw.limits.max_inflight_percent_per_organisation;
        if !(1..=100).contains(&percent) {
            errors.push(
                ConfigError::new(
                    file,
                    self.at(&["limits", "max_inflight_percent_per_organisation"]),
                    format!("`limits.max_inflight_percent_per_organisation` is {percent}; it is a percentage from 1 to 100"),
                )
                .hint("25 lets one organisation's answers hold a quarter of the budget; 100 sets no share"),
            );
            return;
        }
        let budget = gw.limits.max_inflight_response_bytes.0;
        let share = crate::adapter::budget::share_of(budget, percent);
        let largest = adapters
            .values()
            .map(|a| (a.max_response_body, format!("adapter `{}`", a.def.id)))
            .chain([(
                gw.limits.max_response_body.0,
                "`limits.max_response_body`".to_string(),
            )])
            .max_by_key(|(cap, _)| *cap);
        if let Some((cap, whose)) = largest
            && cap.saturating_mul(2) > share
        {
            let of = if percent == 100 {
                String::new()
            } else {
                format!(
                    ", of which one organisation may hold {percent}% ({})",
                    byte_size(share)
                )
            };
            errors.push(
                ConfigError::new(
                    file,
                    self.at(&["limits", "max_inflight_response_bytes"]),
                    format!(
                        "`limits.max_inflight_response_bytes` ({}{of}) cannot hold one answer of {} ({whose}) while it is mapped ({} with its records)",
                        byte_size(budget),
                        byte_size(cap),
                        byte_size(cap.saturating_mul(2))
                    ),
                )
                .hint("make an organisation's share of the budget at least twice the largest `max_response_body`, or lower that cap"),
            );
        }
    }

    /// Each organisation's `allowed_endpoints` and TLS towards it; returns the client of each
    /// organisation with a `tls:` (for deliveries to it).
    fn organisations(
        &self,
        errors: &mut Vec<ConfigError>,
    ) -> BTreeMap<String, crate::protocol::client::Outbound> {
        let GatewayFile { file, tree, gw, .. } = *self;
        let mut clients = BTreeMap::new();
        for (id, o) in &gw.organisations {
            let org_at = |key: &str| tree.pos_at_keys(&["organisations", id, key]);
            for (i, prefix) in o.allowed_endpoints.iter().enumerate() {
                let ok = url::Url::parse(prefix).is_ok_and(|u| {
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
                match crate::protocol::client::source_client(Some(t), self.base(), None) {
                    Ok((client, _)) => {
                        clients.insert(id.clone(), client);
                    }
                    Err(e) => errors.push(
                        ConfigError::new(file, org_at("tls"), e)
                            .hint("paths are relative to this file; PEM files expected"),
                    ),
                }
            }
        }
        clients
    }

    /// Partner credentials and the admin token: hashes, never secrets; OINs for certificates.
    fn credentials(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, tree, gw, .. } = *self;
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
            if p.client_cert_oin.is_some() && gw.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
            {
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
                    self.at(&["admin", "token_sha256"]),
                    "`admin.token_sha256` must be 64 hex digits (a SHA-256)",
                )
                .hint("`ketenportaal credential new` prints a token and its hash"),
            );
        }
    }

    /// The address to listen on.
    fn listen(&self, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
        let GatewayFile { file, gw, .. } = *self;
        match gw.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(
                    ConfigError::new(
                        file,
                        self.at(&["listen"]),
                        format!("`listen: {}` is not an address", gw.listen),
                    )
                    .hint("write `host:port`, e.g. `127.0.0.1:8080` or `0.0.0.0:8443`"),
                );
                None
            }
        }
    }

    /// The dossier deadline, and each organisation's OIN.
    fn deadline_and_oins(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, gw, .. } = *self;
        if gw.deadline.0.is_zero() {
            errors.push(ConfigError::new(
                file,
                self.at(&["deadline"]),
                "deadline must be above 0",
            ));
        }
        for (id, org) in &gw.organisations {
            if org.oin.len() != 20 || !org.oin.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(
                    ConfigError::new(
                        file,
                        self.at(&["organisations", id, "oin"]),
                        format!("OIN of `{id}` must be 20 digits"),
                    )
                    .hint("quote it to keep leading zeros: `oin: \"00000001003214345000\"`"),
                );
            }
        }
    }

    /// The audit pseudonymisation key and the store's bounds.
    fn audit_and_store(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, gw, .. } = *self;
        match &gw.audit.pseudonym_key {
            None => errors.push(
                ConfigError::new(file, self.at(&["audit"]), "`audit.pseudonym_key` is not set")
                    .hint("processing records pseudonymise the BSN with it: `audit: {pseudonym_key: ${KETENPORTAAL_PSEUDONYM_KEY}}`, 32+ bytes"),
            ),
            // A `${VAR}` that did not expand is reported already, where it is.
            Some(k) if k.expose().len() < 32 && !k.expose().contains("${") => errors.push(
                ConfigError::new(file, self.at(&["audit", "pseudonym_key"]), "`audit.pseudonym_key` needs at least 32 bytes")
                    .hint("generate one with `openssl rand -base64 48` and pass it via `${ENV}`"),
            ),
            _ => {}
        }
        if gw.store.zaken_limit == 0 {
            errors.push(
                ConfigError::new(file, self.at(&["store", "zaken_limit"]), "`store.zaken_limit` must be at least 1")
                    .hint("it bounds the applications the `zaken` section lists; to show none, leave `zaken` out of the view"),
            );
        }
        let store = &gw.store;
        match (store.backend, &store.url) {
            (crate::model::StoreBackend::Postgres, None) => errors.push(
                ConfigError::new(file, self.at(&["store"]), "`store.backend: postgres` needs `store.url`")
                    .hint("`store: {backend: postgres, url: ${KETENPORTAAL_DATABASE_URL}}`, with postgres://user:password@host:port/db"),
            ),
            (_, Some(u))
                if !u.expose().contains("${")
                    && !u.expose().starts_with("postgres://")
                    && !u.expose().starts_with("postgresql://") =>
            {
                errors.push(
                    ConfigError::new(file, self.at(&["store", "url"]), "`store.url` must be a postgres:// URL")
                        .hint("postgres://user:password@host:port/db"),
                )
            }
            (crate::model::StoreBackend::Sqlite, Some(_)) => errors.push(
                ConfigError::new(file, self.at(&["store", "url"]), "`store.url` is set but `store.backend` is `sqlite`")
                    .hint("set `backend: postgres` to use it, or remove `url`"),
            ),
            _ => {}
        }
        if store.pool_size == 0 || store.pool_size > 256 {
            errors.push(ConfigError::new(
                file,
                self.at(&["store", "pool_size"]),
                "`store.pool_size` must be between 1 and 256",
            ));
        }
        if store.commit_delay.0 > std::time::Duration::from_millis(10) {
            errors.push(
                ConfigError::new(
                    file,
                    self.at(&["store", "commit_delay"]),
                    "`store.commit_delay` must be at most 10ms",
                )
                .hint("it is the longest an audit record may wait for others to share its sync; 1ms is the default, 0s never waits"),
            );
        }
        if store.lease.0 < std::time::Duration::from_secs(1) {
            errors.push(ConfigError::new(
                file,
                self.at(&["store", "lease"]),
                "`store.lease` must be at least 1s",
            ));
        }
        if store.timeout.0 < std::time::Duration::from_millis(50) {
            errors.push(ConfigError::new(
                file,
                self.at(&["store", "timeout"]),
                "`store.timeout` must be at least 50ms",
            ));
        }
    }

    /// `cache.shared`: a 32-byte hex key, a `redis://` URL, a budget within the deadline and a
    /// usable key prefix. No message repeats the key or the URL (it may carry a password).
    fn shared_cache(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, gw, .. } = *self;
        let Some(sh) = &gw.cache.shared else {
            return;
        };
        let at = |key: &str| self.at(&["cache", "shared", key]);
        // A `${VAR}` that did not expand is reported already, where it is.
        let unexpanded = |s: &crate::model::Secret| s.expose().contains("${");
        if !unexpanded(&sh.key)
            && let Err(e) = sh.key_bytes()
        {
            errors.push(ConfigError::new(file, at("key"), e.to_string()).hint(
                "generate one with `openssl rand -hex 32`, give every instance the same one, and pass it via `${ENV}`",
            ));
        }
        if !unexpanded(&sh.url) {
            let url = sh.url.expose().trim();
            let problem = if !url.starts_with("redis://") {
                Some("`cache.shared.url` must be a `redis://` URL (TLS and unix sockets are not supported)".to_string())
            } else {
                redis::Client::open(url)
                    .err()
                    .map(|e| format!("`cache.shared.url` is not a Redis URL ({e})"))
            };
            if let Some(p) = problem {
                errors.push(ConfigError::new(file, at("url"), p).hint(
                    "e.g. `redis://redis.internal:6379/0`, or `redis://:password@host:6379`",
                ));
            }
        }
        let budget = sh.budget.0;
        if budget.is_zero() || budget >= gw.deadline.0 {
            errors.push(
                ConfigError::new(
                    file,
                    at("budget"),
                    format!(
                        "`cache.shared.budget` ({}) must be above 0 and below the deadline ({})",
                        sh.budget, gw.deadline
                    ),
                )
                .hint("it bounds how long Redis may delay a request; a few milliseconds on a local network: `25ms`"),
            );
        }
        if sh.prefix.is_empty()
            || sh
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(
                ConfigError::new(
                    file,
                    at("prefix"),
                    "`cache.shared.prefix` must be a non-empty word without spaces",
                )
                .hint("e.g. `prefix: ketenportaal`"),
            );
        }
    }

    /// `audit.auditor_organisations` names declared organisations.
    fn auditor_organisations(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, gw, .. } = *self;
        for org in super::undeclared(gw, &gw.audit.auditor_organisations) {
            errors.push(
                ConfigError::new(
                    file,
                    self.at(&["audit", "auditor_organisations"]),
                    format!("`audit.auditor_organisations` names `{org}`, which is not declared"),
                )
                .hint(super::UNDECLARED_HINT),
            );
        }
    }

    /// Token keys: an HS256 secret long enough, a public key for RS256 and ES256, each readable,
    /// and only declared organisations to vouch for.
    fn auth_keys(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, tree, gw, .. } = *self;
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
                (KeyAlg::HS256, Some(s), _)
                    if s.expose().len() < 32 && !s.expose().contains("${") =>
                {
                    errors.push(
                        ConfigError::new(
                            file,
                            pos,
                            format!("key `{}`: an HS256 secret needs at least 32 bytes", k.kid),
                        )
                        .hint(
                            "generate one with `openssl rand -base64 48` and pass it via `${ENV}`",
                        ),
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
            if let Err(e) = crate::auth::decoding_key(k, self.base())
                && (k.secret.is_some() || k.public_key.is_some())
            {
                errors.push(ConfigError::new(file, pos, format!("key `{}`: {e}", k.kid)));
            }
            for org in super::undeclared(gw, &k.organisations) {
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!(
                            "key `{}` vouches for organisation `{org}`, which is not declared",
                            k.kid
                        ),
                    )
                    .hint(super::UNDECLARED_HINT),
                );
            }
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
