#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
//! ketenportaal: an integration gateway for Dutch government chain portals.
//!
//! # Layout
//! A request flows one way: [`server`] → [`app`] → [`gateway`] → [`adapter`]/[`cache`] → the
//! core. The reasons are in `docs/design.md`.
//!
//! HTTP and workflows:
//! - [`server`]: the HTTP API (axum): routes, extractors, problem+json, TLS accept; the
//!   reference portals under `/portaal/` and the operator page under `/admin/`.
//! - [`app`]: [`app::App::build`], the one wiring of store, gateway, reload and delivery; the
//!   dossier read, the partner registration workflow, config reload, application delivery.
//!
//! Fan-out:
//! - [`gateway`]: fan-out within the deadline, authorisation, audit hook; the swappable runtime.
//! - [`cache`]: the moka source-answer cache (coalescing, stale-if-error); [`cache::shared`]:
//!   the optional second level in Redis shared by every instance (sealed values, a budget per
//!   call, skipped while it fails).
//! - [`resilience`]: the per-adapter tower stack: breaker, concurrency limit, read retries.
//! - [`audit`]: the sink an access record must reach before an answer leaves.
//! - `metrics`: Prometheus metrics (bounded labels). `lograte`: repeated log lines once
//!   per interval, with a count.
//! - [`auth`]: JWT verification and the caller's identity. [`credentials`]: partner
//!   credentials (hashed API key, client-certificate OIN), the admin token.
//!
//! Organisations:
//! - [`adapter`]: one call to one organisation's service, read within the in-flight budget and
//!   mapped; what can go wrong as a [`adapter::SourceError`].
//! - [`protocol`]: the SOAP envelope and the REST request (one builder each, for source calls
//!   and delivery), templates, HTTP/TLS clients, certificates, the server TLS config.
//!
//! State and configuration:
//! - [`store`]: the durable store: a trait per kind of data (hash-chained audit log,
//!   applications outbox, registrations) with two backends, a SQLite file (one instance) and
//!   PostgreSQL (a cluster's shared database); verify and reports.
//! - [`config`]: YAML → a validated [`config::Config`] with everything compiled once; every
//!   problem with file:line:column and a hint. [`model`]: the YAML schema types.
//!
//! Core (no I/O):
//! - [`mapping`]: source answers (SOAP streaming, JSON) into dossier sections.
//! - [`dossier`]: merging answers into a dossier with provenance, and view filtering.
//! - `rules`: CEL rules for services and life events. `decimal`: decimals as exact text.
//! - [`bsn`]: the BSN (11-proef). `timefmt`: timestamps. `jsonout`: JSON written by hand on hot paths. [`trace`]: W3C trace context.
//!
//! And [`demo`]: the built-in fixture agencies and the one-command demo.

pub mod adapter;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bsn;
pub mod cache;
pub mod config;
pub mod credentials;
pub(crate) mod decimal;
pub mod demo;
pub mod dossier;
pub mod gateway;
pub(crate) mod jsonout;
pub(crate) mod lograte;
pub mod mapping;
pub(crate) mod metrics;
pub mod model;
pub mod protocol;
pub mod resilience;
pub(crate) mod rules;
pub mod server;
pub mod store;
pub(crate) mod timefmt;
pub mod trace;

/// Lower-case hex of `bytes`, written straight into the string's buffer (`hex::encode` pushes
/// char by char): for ids and hashes made on every request.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    // Twice the input's length is exactly the room hex needs: cannot fail.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::lower_hex(&[]), "");
    }
}
