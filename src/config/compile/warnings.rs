//! What is valid but needs the operator's attention soon: client certificates that expired or
//! are about to, plain HTTP reachable from the network, and a shared cache that is not used. `check` prints these, `serve` logs
//! them; none of them refuses a configuration.

use std::net::SocketAddr;
use std::path::Path;

use super::{AdapterTrees, Adapters};
use crate::config::load::ConfigError;
use crate::config::yaml::{Node, Step};
use crate::model::GatewayConfig;

/// Every warning for a configuration that loaded, in the order `check` prints them.
pub(super) fn warnings(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    listen: SocketAddr,
    adapters: &Adapters,
    adapter_trees: &AdapterTrees,
) -> Vec<ConfigError> {
    let mut warnings = certificate_warnings(file, tree, gw, adapters, adapter_trees);
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
fn certificate_warnings(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    adapters: &Adapters,
    adapter_trees: &AdapterTrees,
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
