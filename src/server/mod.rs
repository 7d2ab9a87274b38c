//! The HTTP API (axum): the router with its layers, the OpenAPI document built from the same
//! route lists, the API-Version header, and [`serve`].
//!
//! Handlers are thin: authenticate, parse (into types that can only hold valid values, such as
//! [`Bsn`](crate::bsn::Bsn)), authorise, call the application ([`App`]: its workflows and the
//! [`Gateway`](crate::gateway::Gateway)), serialise. The BSN never travels in a URL: the
//! citizen's comes from the token, an employee sends it in a POST body. Workflow logic belongs
//! in [`crate::app`], not here.
//!
//! The routes, by what they serve:
//! - `dossier`: a citizen's own dossier and an employee's read of a client's.
//! - `themes`, `catalogue`, `applications`: themes and life events, what a portal shows
//!   of the configuration, and applications for services.
//! - `access_log`: inzage for citizens, the full record for auditors.
//! - `adapters`: partners' own adapters (list, read, register, remove, test).
//! - `ops`: metrics, health, readiness, this document, the operator's status and reload.
//! - `portal`: the reference portals and the operator page (static files).
//!
//! Shared by the routes: `extract` (the caller, the trace context, a JSON body, a BSN) and
//! `errors` (which problem each refusal of the application becomes).

mod access_log;
mod adapters;
pub mod api_doc;
mod applications;
mod catalogue;
mod deadline;
mod dossier;
mod errors;
mod extract;
pub mod listen;
mod ops;
mod portal;
pub mod problem;
mod themes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::App;
pub use extract::{parse_body, parse_bsn};
pub use problem::Problem;

/// The major API version is in the path; the full version is in every response.
pub const API_VERSION: &str = "1.0.0";

pub type Shared = Arc<App>;

/// Builds the router with its layers.
pub fn router(state: Shared, max_body: usize) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(api_doc::ApiDoc::openapi())
        .routes(routes!(dossier::me_dossier))
        .routes(routes!(dossier::employee_dossier))
        .routes(routes!(access_log::me_access_log))
        .routes(routes!(access_log::auditor_access_log))
        .routes(routes!(adapters::list_adapters))
        .routes(routes!(
            adapters::get_adapter,
            adapters::put_adapter,
            adapters::delete_adapter
        ))
        .routes(routes!(adapters::test_adapter))
        .routes(routes!(ops::admin_status))
        .routes(routes!(ops::admin_reload))
        .routes(routes!(ops::admin_cache_purge))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(applications::me_apply))
        .routes(routes!(applications::employee_apply))
        .routes(routes!(applications::get_application))
        .routes(routes!(themes::list_themes))
        .routes(routes!(themes::get_theme))
        .routes(routes!(themes::me_theme))
        .routes(routes!(themes::me_life_events))
        .routes(routes!(themes::employee_theme))
        .routes(routes!(themes::employee_life_events))
        .routes(routes!(catalogue::list_organisations))
        .routes(routes!(catalogue::list_views))
        .routes(routes!(catalogue::get_service))
        .split_for_parts();
    let _ = OPENAPI.set(api_doc::finish(&api));
    router
        // The reference portals and the operator page (not part of the API document).
        .route("/portaal", get(portal::portal_root))
        .route("/portaal/", get(portal::portal_index))
        .route("/portaal/demo/accounts", get(portal::demo_accounts))
        .route("/portaal/demo/sign-in", post(portal::demo_sign_in))
        .route("/portaal/{file}", get(portal::portal_file))
        .route("/admin/", get(portal::admin_page))
        .route("/admin/admin.js", get(portal::admin_script))
        .route("/admin/shared/{file}", get(portal::admin_shared))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        // Every response on its way out (one layer: each costs a boxed future per request).
        .layer(axum::middleware::map_response(outgoing))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The OpenAPI document, generated once from the same route lists as the router.
static OPENAPI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The OpenAPI document as built by [`router`].
pub fn openapi() -> &'static str {
    OPENAPI.get().map(String::as_str).unwrap_or("{}")
}

/// The framework's own refusals (body limit, path decoding, method) become problem+json, and
/// every response, errors included, carries the API version and, unless it set its own,
/// `Cache-Control: no-store`.
async fn outgoing(r: Response) -> Response {
    let mut r = problem::framework_errors(r).await;
    let h = r.headers_mut();
    h.insert("api-version", HeaderValue::from_static(API_VERSION));
    // Dossiers, the access log, applications and everything under `/v1/me/` carry personal
    // data, and every other answer is made for its caller: no browser or proxy may keep one
    // (a shared computer's back button, a caching proxy). Set here, once, so a new route
    // cannot forget it; the portal's static files set their own (`no-cache`: they hold no
    // personal data, and revalidate).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// How many connections may wait to be accepted (the kernel caps it at `net.core.somaxconn`).
/// `TcpListener::bind` takes std's 128: a wave of more connects at once than that (portals or a
/// load balancer reconnecting after a restart) had its surplus SYNs dropped, each retried by
/// its client only after a second.
pub const BACKLOG: u32 = 4096;

/// A listening socket as `TcpListener::bind` makes it (address reuse on), with `backlog`.
pub fn listen(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
/// Terminates TLS when the config has `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rt = state.gateway.runtime();
    let g = &rt.config.gateway;
    let tls = rt.config.compiled.server_tls.clone();
    let opts = listen::ListenOptions {
        tls,
        header_timeout: g.limits.header_timeout.0,
        body_timeout: g.limits.body_timeout.0,
        handshake_timeout: g.limits.handshake_timeout.0,
        max_header_bytes: g.limits.max_header_bytes.0 as usize,
        max_headers: g.limits.max_headers as usize,
        drain_timeout: std::time::Duration::from_secs(30),
    };
    let app = router(state.clone(), g.limits.max_request_body.0 as usize);
    drop(rt);
    listen::serve(listener, app, opts, shutdown).await
}
