//! The bounds of `registrations:` on a partner's descriptor: it names no files on the gateway,
//! and asks for no more time, memory, retries or concurrency than the operator allows.

use super::adapter::Descriptor;
use crate::config::load::ConfigError;
use crate::model::GatewayConfig;

/// The bounds of `registrations:`: no files, and nothing that makes the gateway hold more or
/// wait longer for a partner than the operator allows.
pub(super) fn check_registration_bounds(
    d: &Descriptor,
    gw: &GatewayConfig,
    errors: &mut Vec<ConfigError>,
) {
    let (file, def) = (d.file, d.def);
    let at = |path: &[&str]| d.at(path);
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
