//! What handlers take from a request: the caller (a bearer token, verified), the trace
//! context, a JSON body, a BSN. Each refusal is a [`Problem`] that names what is wrong.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use super::Problem;
use super::errors::unprocessable;
use crate::app::App;
use crate::auth::{Actor, AuthError};
use crate::bsn::Bsn;
use crate::trace::TraceContext;

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

/// Refuses a request that sends a header which must be one (a credential, a purpose) more
/// than once: which one counts would be up to each hop between the client and us.
pub(super) fn single(headers: &HeaderMap, names: &[&str]) -> Result<(), Problem> {
    match names
        .iter()
        .find(|n| headers.get_all(**n).iter().nth(1).is_some())
    {
        Some(n) => Err(Problem::bad_request(format!(
            "`{n}` is sent more than once; send it once"
        ))),
        None => Ok(()),
    }
}

/// The caller, from a bearer token the live config's verifier accepts; otherwise a 401.
pub(super) fn authenticate(s: &App, headers: &HeaderMap) -> Result<Actor, Problem> {
    single(headers, &["authorization", "x-purpose"])?;
    let rt = s.gateway.runtime();
    let token = bearer(headers).map_err(|e| Problem::unauthorized(e.to_string()))?;
    rt.verifier.verify(token).map_err(|e| {
        // The client hears the fixed reason; what the library said goes to the log.
        tracing::info!(error = %e, detail = e.detail(), "Token refused.");
        Problem::unauthorized(e.to_string())
    })
}

/// The purpose the caller states (`X-Purpose`, doelbinding), trimmed; `None` when absent or
/// blank.
pub(super) fn purpose(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-purpose")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The W3C trace context of the request (`traceparent`), or a new one.
pub(super) fn trace_of(headers: &HeaderMap) -> TraceContext {
    TraceContext::from_header(headers.get("traceparent").and_then(|v| v.to_str().ok()))
}

/// Parses a JSON body into `T`, with a problem that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!("the body is not valid: {e}")).param(
            "body",
            "invalid",
            e.to_string(),
        )
    })
}

/// Parses a BSN from a request, naming the field: 8 or 9 digits and nothing else (the API
/// document's pattern), or a 400; one that fails the 11-proef is a 422 (no pattern can say it).
pub fn parse_bsn(field: &str, s: &str) -> Result<Bsn, Problem> {
    let e = match Bsn::parse(s) {
        Ok(_) if s.trim() != s => crate::bsn::BsnError::NotDigits,
        Ok(bsn) => return Ok(bsn),
        Err(e) => e,
    };
    let detail = format!("`{field}` is not a valid BSN: {e}");
    let p = match e {
        crate::bsn::BsnError::Checksum => unprocessable(detail),
        _ => Problem::bad_request(detail),
    };
    Err(p.param(field, "bsn", e.to_string()))
}
