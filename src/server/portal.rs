//! The reference portals under `/portaal/` (klantportaal, medewerkersportaal, themaportaal),
//! the demo sign-in, and the operator status page under `/admin/`.
//!
//! The pages are static files compiled into the binary (`src/server/portal/`); they call only
//! the public API with a bearer token kept in the tab's `sessionStorage`. Whether they are
//! served is read from the live config at every request, so a reload turns them on or off.
//! Every page is sent with a strict Content-Security-Policy: scripts and styles from this
//! origin only, no inline script, no framing.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::extract::parse_body;
use super::{Problem, Shared, json as json_response};
use crate::model::DemoAccount;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:expr) => {
        Asset {
            name: $name,
            content_type: $ct,
            body: include_bytes!(concat!("portal/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("aanmelden.html", HTML),
    asset!("klant.html", HTML),
    asset!("medewerker.html", HTML),
    asset!("thema.html", HTML),
    asset!("admin.html", HTML),
    asset!("portaal.css", "text/css; charset=utf-8"),
    asset!("portaal.js", JS),
    asset!("index.js", JS),
    asset!("aanmelden.js", JS),
    asset!("klant.js", JS),
    asset!("medewerker.js", JS),
    asset!("thema.js", JS),
    asset!("admin.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Strong validators per asset, computed once.
fn etags() -> &'static Vec<String> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..20]))
            .collect()
    })
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn serve_asset(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return Problem::not_found(format!("no portal page `{name}`")).into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, asset.content_type)],
            Bytes::from_static(asset.body),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a new binary brings new pages.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn portal_enabled(s: &Shared) -> Result<(), Problem> {
    if s.gateway.runtime().config.gateway.portal.enabled {
        Ok(())
    } else {
        Err(Problem::not_found(
            "the portals are not enabled (`portal.enabled` in the config)",
        ))
    }
}

/// `GET /portaal`: to the folder, so relative links work.
pub(super) async fn portal_root() -> Redirect {
    Redirect::permanent("/portaal/")
}

/// `GET /portaal/`: the landing page.
pub(super) async fn portal_index(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    portal_enabled(&s)?;
    Ok(serve_asset("index.html", &headers))
}

/// `GET /portaal/{file}`: a page, script or style sheet. The admin page is not here.
pub(super) async fn portal_file(
    State(s): State<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    portal_enabled(&s)?;
    if file == "admin.html" || file == "admin.js" {
        return Err(Problem::not_found("the status page is at /admin/"));
    }
    if file == "aanmelden.html" && !s.gateway.runtime().config.gateway.portal.demo_sign_in {
        return Err(Problem::not_found(
            "there is no demo sign-in here; sign in through your identity provider",
        ));
    }
    Ok(serve_asset(&file, &headers))
}

/// `GET /admin/` and its script: the operator status page. The page holds no data; it asks
/// for the admin token and calls `/admin/status` with it. Closed when no admin token is set.
pub(super) async fn admin_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    admin_asset(&s, "admin.html", &headers)
}

pub(super) async fn admin_script(State(s): State<Shared>, headers: HeaderMap) -> Response {
    admin_asset(&s, "admin.js", &headers)
}

/// The shared style sheet and script, for the admin page (which works without the portals).
pub(super) async fn admin_shared(
    State(s): State<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    match file.as_str() {
        "portaal.css" | "portaal.js" | "favicon.svg" => admin_asset(&s, &file, &headers),
        _ => Problem::not_found("no such file").into_response(),
    }
}

fn admin_asset(s: &Shared, name: &str, headers: &HeaderMap) -> Response {
    if s.gateway
        .runtime()
        .config
        .gateway
        .admin
        .token_sha256
        .is_none()
    {
        return Problem::not_found("the operator pages are closed (no `admin.token_sha256`)")
            .into_response();
    }
    serve_asset(name, headers)
}

fn demo_sign_in_enabled(s: &Shared) -> Result<(), Problem> {
    let p = &s.gateway.runtime().config.gateway.portal;
    if p.enabled && p.demo_sign_in {
        Ok(())
    } else {
        Err(Problem::not_found("there is no demo sign-in here"))
    }
}

fn account_json(a: &DemoAccount) -> serde_json::Value {
    match &a.bsn {
        Some(_) => json!({"id": a.id, "label": a.label, "actor": "citizen"}),
        None => json!({
            "id": a.id, "label": a.label, "actor": "employee",
            "organisation": a.organisation, "roles": a.roles,
        }),
    }
}

/// `GET /portaal/demo/accounts`: who the demo sign-in offers.
pub(super) async fn demo_accounts(State(s): State<Shared>) -> Result<Response, Problem> {
    demo_sign_in_enabled(&s)?;
    let rt = s.gateway.runtime();
    let list: Vec<_> = rt
        .config
        .gateway
        .portal
        .demo_accounts
        .iter()
        .map(account_json)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"accounts": list}).to_string().into_bytes(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    account: String,
}

/// How long a demo token lives.
const DEMO_TOKEN_SECS: i64 = 3600;

/// `POST /portaal/demo/sign-in` `{"account": id}`: a token for that demo account, minted with
/// the config's first HS256 key. Demo only (`portal.demo_sign_in`).
pub(super) async fn demo_sign_in(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Response, Problem> {
    demo_sign_in_enabled(&s)?;
    let req: SignIn = parse_body(&body)?;
    let rt = s.gateway.runtime();
    let g = &rt.config.gateway;
    let account = g
        .portal
        .demo_accounts
        .iter()
        .find(|a| a.id == req.account)
        .ok_or_else(|| Problem::not_found(format!("no demo account `{}`", req.account)))?;
    let actor = match (&account.bsn, &account.organisation) {
        (Some(bsn), _) => crate::demo::citizen(bsn).map_err(Problem::bad_request)?,
        (None, Some(org)) => {
            let roles: Vec<&str> = account.roles.iter().map(String::as_str).collect();
            crate::demo::employee(&account.id, org, &roles)
        }
        (None, None) => return Err(Problem::bad_request("this demo account is incomplete")),
    };
    // `check` refuses a demo sign-in without an HS256 key, so this fails only on a bug.
    let token = crate::demo::mint(&rt.config, &actor, DEMO_TOKEN_SECS).map_err(|e| {
        tracing::error!(error = %e, "Demo sign-in could not mint a token.");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Could not sign in",
        )
    })?;
    tracing::info!(account = %account.id, "Demo sign-in.");
    let mut body = account_json(account);
    body["token"] = json!(token);
    body["expires_in"] = json!(DEMO_TOKEN_SECS);
    if let Some(org) = &account.organisation {
        body["organisation_name"] = json!(g.organisations.get(org).map(|o| o.name.clone()));
    }
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_every_page_links_only_embedded_files() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            if a.content_type == HTML {
                let text = std::str::from_utf8(a.body).unwrap_or_default();
                assert!(text.contains("<html lang=\"nl\""), "{}: Dutch page", a.name);
                assert!(!text.contains("<script>"), "{}: inline script", a.name);
                for part in text.split(['"', '\'']) {
                    let local = part.strip_prefix("/portaal/").or_else(|| {
                        (!part.contains('/') && (part.ends_with(".js") || part.ends_with(".css")))
                            .then_some(part)
                    });
                    if let Some(f) = local.filter(|f| f.contains('.')) {
                        assert!(
                            ASSETS.iter().any(|x| x.name == f),
                            "{} links {f}, which is not embedded",
                            a.name
                        );
                    }
                }
            }
            if a.content_type == JS {
                let text = std::str::from_utf8(a.body).unwrap_or_default();
                assert!(
                    !text.contains(".innerHTML"),
                    "{}: build DOM nodes, never innerHTML",
                    a.name
                );
            }
        }
    }
}
