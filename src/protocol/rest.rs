//! The REST request: one builder for source calls and for delivery.

use crate::model::RestDef;

/// The request for `rest` to `url`: its method (parsed when the config loaded), `accept:
/// application/json`, the headers as `header` renders them, and `body` (the rendered JSON
/// body) when the definition has one.
pub fn request(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    rest: &RestDef,
    header: impl Fn(&str) -> String,
    body: Option<String>,
) -> reqwest::RequestBuilder {
    let mut req = http
        .request(rest.method.0.clone(), url)
        .header("accept", "application/json");
    for (k, v) in &rest.headers {
        req = req.header(k.as_str(), header(v));
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    req
}
