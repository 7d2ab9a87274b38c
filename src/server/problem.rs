//! RFC 9457 problem details: every API error is `application/problem+json`, the framework's
//! own refusals included ([`framework_errors`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One request field that is wrong, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvalidParam {
    /// The field, header or parameter (for a descriptor: `file:line:column`).
    pub name: String,
    /// What kind of problem: `bsn`, `unknown`, `required`, a JSON Schema keyword, ...
    pub code: String,
    pub reason: String,
}

/// A problem response. Boxed so `Result<T, Problem>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct Problem(pub Box<ProblemBody>);

/// RFC 9457 problem details, with `invalidParams` (as the Haal Centraal APIs) when fields of
/// the request are wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// `https://ketenportaal.example/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Present only when fields of the request are wrong.
    #[serde(rename = "invalidParams", skip_serializing_if = "Vec::is_empty")]
    #[schema(min_items = 1)]
    pub invalid_params: Vec<InvalidParam>,
    #[serde(skip)]
    pub www_authenticate: bool,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: &str) -> Self {
        Problem(Box::new(ProblemBody {
            type_uri: format!("https://ketenportaal.example/problems/{code}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            invalid_params: Vec::new(),
            www_authenticate: false,
        }))
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.0.detail = Some(d.into());
        self
    }

    pub fn param(mut self, name: &str, code: &str, reason: impl Into<String>) -> Self {
        self.0.invalid_params.push(InvalidParam {
            name: name.into(),
            code: code.into(),
            reason: reason.into(),
        });
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is not valid",
        )
        .detail(detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
        )
        .detail(detail);
        p.0.www_authenticate = true;
        p
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Access denied").detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.0.www_authenticate {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ketenportaal\""),
            );
        }
        r
    }
}

/// Turns the framework's own refusals (an oversized body, a path that is not UTF-8, a method the
/// route does not have: plain text or empty) into problem details, keeping their headers
/// (`Allow`). Answers that already carry a body type of their own (problem+json, or the JSON
/// of `/readyz`) pass unchanged.
pub async fn framework_errors(r: Response) -> Response {
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain {
        return r;
    }
    let (parts, body) = r.into_parts();
    // The framework's messages are one short line; a longer body is left out, not buffered.
    let text = axum::body::to_bytes(body, 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    // A body that did not arrive in time fails its extractor like any unreadable body (400):
    // it is the client's lateness, and the connection cannot be used again.
    let late = status == StatusCode::BAD_REQUEST && text.contains("(limits.body_timeout)");
    let status = if late {
        StatusCode::REQUEST_TIMEOUT
    } else {
        status
    };
    let (code, title) = match status {
        StatusCode::REQUEST_TIMEOUT => ("request-timeout", "The request did not arrive in time"),
        StatusCode::BAD_REQUEST => ("bad-request", "The request is not valid"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "The request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "This method is not allowed here"),
        _ => ("error", status.canonical_reason().unwrap_or("Error")),
    };
    let mut p = Problem::new(status, code, title);
    if !text.is_empty() {
        p = p.detail(text);
    }
    let mut out = p.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    if late {
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}
