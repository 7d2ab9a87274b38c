//! The REST request: one builder for source calls and for delivery.

use http::header::{ACCEPT, CONTENT_TYPE};

use crate::model::RestDef;
use crate::protocol::client::{OutBody, OutRequest};

/// The request for `rest` to `uri`: its method (parsed when the config loaded), `accept:
/// application/json`, the headers as `header` renders them, and `body` (the rendered JSON
/// body) when the definition has one. Fails only when a rendered header is not a valid value.
pub fn request(
    uri: http::Uri,
    rest: &RestDef,
    header: impl Fn(&str) -> String,
    body: Option<String>,
) -> Result<OutRequest, http::Error> {
    let mut req = http::Request::builder()
        .method(rest.method.0.clone())
        .uri(uri)
        .header(ACCEPT, "application/json");
    for (k, v) in &rest.headers {
        req = req.header(k.as_str(), header(v));
    }
    match body {
        Some(b) => req
            .header(CONTENT_TYPE, "application/json")
            .body(OutBody::from(b)),
        None => req.body(OutBody::default()),
    }
}
