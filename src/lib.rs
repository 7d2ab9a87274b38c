#![forbid(unsafe_code)]
//! ketenportaal: an integration gateway for Dutch government chain portals.
//!
//! # Layout
//! - [`config`]: YAML config and adapter descriptors → a validated, compiled [`config::Config`]
//!   snapshot; every problem reported with file:line:column and a hint.
//! - [`mapping`]: pure mapping of source answers (SOAP streaming, JSON) into dossier sections.
//! - [`adapter`]: speaking SOAP and REST to one organisation's service; templates; the
//!   gateway-wide budget for answers in flight.
//! - [`cache`]: the moka source-answer cache on the adapter path (coalescing, stale-if-error).
//! - [`dossier`]: pure merge of answers into a dossier, and view filtering.
//! - [`resilience`]: the per-adapter tower stack: breaker, concurrency limit, read retries.
//! - [`metrics`]: Prometheus metrics (per gateway instance, bounded labels).
//! - [`gateway`]: fan-out, deadline, authorisation, audit hook; the swappable runtime.
//! - [`lograte`]: repeated per-request log lines let through once per interval, with a count.
//! - [`auth`]: JWT verification and the caller's identity.
//! - [`credentials`]: partner credentials (hashed API key, client-certificate OIN), admin token.
//! - [`store`]: the durable store behind one façade, a trait per kind of data (the hash-chained
//!   audit log, applications with their submit records, registrations) and SQLite as its
//!   backend (one writer, group commit); verification and reports.
//! - [`audit`]: the sink an access record must reach before an answer leaves (depends on
//!   [`store`], which owns the record types).
//! - [`server`]: the HTTP API (axum), problem+json errors; the reference portals under
//!   `/portaal/` and the operator page under `/admin/` (static files in `src/server/portal/`).
//! - [`demo`]: built-in fixture agencies and the one-command demo.
//! - [`bsn`], [`trace`], [`decimal`]: the BSN type (11-proef), W3C trace context, decimals
//!   as exact text.

pub mod adapter;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bsn;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod decimal;
pub mod demo;
pub mod dossier;
pub mod gateway;
pub mod lograte;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod resilience;
pub mod rules;
pub mod server;
pub mod store;
pub mod timefmt;
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
