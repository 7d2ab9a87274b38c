//! The request an adapter sends: a valid HTTP method, header names and values and SOAP action
//! for every adapter (a bad one would only fail at the first call), and for a registration
//! only GET or POST and none of the headers the gateway sets itself.

use super::adapter::{Descriptor, Trust};
use crate::config::load::ConfigError;

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

/// HTTP method and headers: valid for every adapter (a bad one would only fail at the first
/// call); for a registration, only GET or POST, and none of [`RESERVED_HEADERS`].
pub(super) fn check_request_parts(d: &Descriptor, trust: Trust, errors: &mut Vec<ConfigError>) {
    let (file, def) = (d.file, d.def);
    let at = |path: &[&str]| d.at(path);
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
