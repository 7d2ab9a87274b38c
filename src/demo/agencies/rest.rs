//! The REST toolkit of the fixture services: RFC 9457 problems shaped like the Haal Centraal
//! `Foutbericht` (with `invalidParams`), JSON answers, and what every REST service checks before
//! its own work (503 while down, 415 for anything but JSON, 400 for a body that is not JSON).
//!
//! **Must not**: know an organisation's queries or answers (those are in `brp` and `toeslagen`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{media_type, text_response};

/// One REST/JSON service: its path (a problem's `instance`), and how it words its refusals.
pub(super) struct Service {
    pub(super) path: &'static str,
    /// Title of the 503 while the organisation is down.
    pub(super) unavailable: &'static str,
    /// Title and detail of a 400, whose `invalidParams` say what is wrong.
    pub(super) invalid: (&'static str, &'static str),
}

impl Service {
    /// The service's answer while its organisation is down.
    pub(super) fn unavailable(&self) -> Response {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            self.unavailable,
            "Probeer het later opnieuw.",
            self.path,
            "notAvailable",
            Vec::new(),
        )
    }

    /// The service's answer to one request: 415 for anything but JSON, 400 with `invalidParams`
    /// for a body that is not JSON or that `answer` refuses; else what `answer` makes of the body.
    pub(super) fn respond(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        answer: impl FnOnce(&Value) -> Result<Response, Vec<Value>>,
    ) -> Response {
        if media_type(headers).as_deref() != Some("application/json") {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Media Type wordt niet ondersteund.",
                "Stuur de vraag als application/json.",
                self.path,
                "unsupported",
                Vec::new(),
            );
        }
        let doc = serde_json::from_slice::<Value>(body).map_err(|_| {
            vec![invalid_param(
                "body",
                "json",
                "De request body is geen geldige JSON.",
            )]
        });
        match doc.and_then(|doc| answer(&doc)) {
            Ok(resp) => resp,
            Err(params) => problem(
                StatusCode::BAD_REQUEST,
                self.invalid.0,
                self.invalid.1,
                self.path,
                "paramsValidation",
                params,
            ),
        }
    }
}

/// A JSON answer.
pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    text_response(status, "application/json", body.to_string())
}

/// An RFC 9457 problem, shaped like the Haal Centraal `Foutbericht`.
pub(super) fn problem(
    status: StatusCode,
    title: &str,
    detail: &str,
    instance: &str,
    code: &str,
    invalid_params: Vec<Value>,
) -> Response {
    let section = match status.as_u16() {
        400 => "15.5.1",
        404 => "15.5.5",
        415 => "15.5.16",
        503 => "15.6.4",
        _ => "15.6.1",
    };
    let mut body = json!({
        "type": format!("https://datatracker.ietf.org/doc/html/rfc9110#section-{section}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
        "code": code,
    });
    if !invalid_params.is_empty() {
        body["invalidParams"] = Value::Array(invalid_params);
    }
    let mut resp = text_response(status, "application/problem+json", body.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// One entry of a problem's `invalidParams`.
pub(super) fn invalid_param(name: impl Into<String>, code: &str, reason: &str) -> Value {
    json!({"name": name.into(), "code": code, "reason": reason})
}
