//! What is valid but needs the operator's attention soon: client certificates that expired or
//! are about to, plain HTTP reachable from the network, `tls:` towards an endpoint that is
//! plain HTTP, and a shared cache that is not used. `check` prints these, `serve` logs
//! them; none of them refuses a configuration.

use std::net::SocketAddr;
use std::path::Path;

use super::{AdapterTrees, Adapters};
use crate::config::load::ConfigError;
use crate::config::yaml::{Node, Step};
use crate::model::GatewayConfig;

/// What the warnings look at: the gateway file (its path and tree) and the adapters loaded.
#[derive(Clone, Copy)]
struct Loaded<'a> {
    file: &'a Path,
    tree: &'a Node,
    gw: &'a GatewayConfig,
    adapters: &'a Adapters,
    adapter_trees: &'a AdapterTrees,
}

/// Every warning for a configuration that loaded, in the order `check` prints them.
pub(super) fn warnings(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    listen: SocketAddr,
    adapters: &Adapters,
    adapter_trees: &AdapterTrees,
) -> Vec<ConfigError> {
    let loaded = Loaded {
        file,
        tree,
        gw,
        adapters,
        adapter_trees,
    };
    let mut warnings = certificate_warnings(&loaded);
    warnings.extend(tls_over_plain_http(&loaded));
    if gw.tls.is_none() && !listen.ip().is_loopback() {
        warnings.push(
            ConfigError::new(
                file,
                tree.pos_at(&[Step::Key("listen".into())]),
                format!("plain HTTP on {listen}, reachable from the network: tokens and personal data travel unencrypted"),
            )
            .hint("add `tls: {cert, key}`, or listen on 127.0.0.1 behind a TLS-terminating proxy"),
        );
    }
    if gw.cache.shared.is_some() && !gw.cache.enabled {
        warnings.push(
            ConfigError::new(
                file,
                tree.pos_at_keys(&["cache", "shared"]),
                "`cache.shared` is set but `cache.enabled` is false: the shared cache is not used",
            )
            .hint("set `cache.enabled: true`, or leave `cache.shared` out"),
        );
    }
    warnings
}

/// Client certificates (each organisation's, each file adapter's own) that expired or expire
/// within [`crate::protocol::certs::EXPIRY_WARNING_DAYS`], pointing at their `tls` key.
fn certificate_warnings(loaded: &Loaded<'_>) -> Vec<ConfigError> {
    let Loaded {
        file,
        tree,
        gw,
        adapters,
        adapter_trees,
    } = *loaded;
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

/// `tls:` (a client certificate, trusted CAs) that applies to an endpoint on plain `http://`:
/// a file adapter's (its own or its organisation's) and a delivery to an organisation with
/// `tls:`. The certificate is never presented and the traffic is not encrypted.
fn tls_over_plain_http(loaded: &Loaded<'_>) -> Vec<ConfigError> {
    let gw = loaded.gw;
    let message = |url: &str| {
        format!(
            "`{url}` is plain HTTP, but `tls:` applies to it: the client certificate is never presented and the traffic is not encrypted"
        )
    };
    let hint = "use an `https://` endpoint (or `base_url`), or leave `tls:` out";
    let org_tls = |org: &str| gw.organisations.get(org).is_some_and(|o| o.tls.is_some());
    let mut out = Vec::new();
    for (id, a) in loaded.adapters {
        if let Some((path, t)) = loaded.adapter_trees.get(id)
            && a.url.starts_with("http://")
            && (a.def.tls.is_some() || org_tls(&a.def.organisation))
        {
            let pos = t.pos_at_keys(&["endpoint"]);
            out.push(ConfigError::new(path, pos, message(&a.url)).hint(hint));
        }
    }
    for (id, svc) in &gw.services {
        let Some(app) = &svc.application else {
            continue;
        };
        let base = gw
            .organisations
            .get(&svc.organisation)
            .and_then(|o| o.base_url.as_deref());
        let url = app.delivery.url(base);
        if url.starts_with("http://") && org_tls(&svc.organisation) {
            let pos =
                loaded
                    .tree
                    .pos_at_keys(&["services", id, "application", "delivery", "endpoint"]);
            out.push(ConfigError::new(loaded.file, pos, message(&url)).hint(hint));
        }
    }
    out
}
