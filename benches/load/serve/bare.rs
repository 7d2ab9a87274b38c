//! The baseline: bare hyper answering the gateway's own dossier bytes, fetched once from a
//! running gateway, with nothing else to do per request.

use std::path::Path;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};

use ketenportaal::demo;
use ketenportaal::server::API_VERSION;

use super::{announce_and_wait, bind_loopback, json_response, serve_http1};
use crate::ServeOut;
use crate::generator::{Endpoint, citizen_token, dossier_request, once, token_auth};

/// Serves the dossier the gateway of `from_gateway` (its address file) answers.
pub async fn serve_bare(from_gateway: &Path, out: &ServeOut) -> Result<(), String> {
    let gw = Endpoint::read(from_gateway)?;
    let token = citizen_token(&token_auth(), demo::DEMO_CITIZEN)?;
    // The first request fills the cache; the second is what the measured requests get.
    let mut body = Bytes::new();
    for _ in 0..2 {
        let (status, _, b) = once(gw.api, dossier_request(gw.api, &token)?).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "the gateway answered {status}: {}",
                String::from_utf8_lossy(&b)
            ));
        }
        body = b;
    }
    let (l, api) = bind_loopback().await?;
    serve_http1(l, move |_req: Request<Incoming>| {
        let body = body.clone();
        async move {
            let mut r = json_response(body);
            // The headers the gateway's answer carries besides the body's own.
            r.headers_mut()
                .insert("api-version", HeaderValue::from_static(API_VERSION));
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            r
        }
    });
    announce_and_wait(api, None, out).await
}
