//! The fixture agency server: the chain partners' services, played on loopback from files.
//!
//! [`AgencyServer`] is one real HTTP server (axum) that answers, under path prefixes of one
//! port, the way the real services of the demo organisations answer:
//!
//! | org key     | path                                                | speaks                                  |
//! |-------------|-----------------------------------------------------|-----------------------------------------|
//! | `brp`       | `POST /brp/haalcentraal/api/brp/personen`           | Haal Centraal BRP Personen 2.x (JSON)   |
//! | `stuf-bg`   | `POST /gemeente/stuf-bg/BGService`                  | StUF-BG 0310 `npsLv01`/`npsLa01`, SOAP 1.1 |
//! | `uwv`       | `POST /uwv/UitkeringenService`                      | SOAP 1.1 with WUS WS-Addressing         |
//! | `svb`       | `POST /svb/RegelingenService`                       | SOAP 1.2                                |
//! | `toeslagen` | `POST /belastingdienst/toeslagen/api/v1/toeslagen/_zoek` | REST/JSON                          |
//!
//! The BSN never appears in a URL: it travels in the request body, as with the real services.
//!
//! **Owns**: loading `fixtures/agencies/<org>/<bsn>.<ext>` once at start (a malformed file is a
//! startup error naming the file), validating requests the way the real services do (400
//! `application/problem+json` with `invalidParams`, SOAP 1.1 / 1.2 Faults), wrapping the stored
//! answers in the right envelope, and two test hooks: [`AgencyServer::hits`] (requests per path)
//! and [`AgencyServer::set_down`] (an organisation answering 503).
//!
//! **Must not**: know anything about the gateway (its config, adapters or mapping). It is the
//! other side of the wire; tests and `ketenportaal demo` use it as a stand-in for the partners.
//! Requests are parsed with quick-xml's namespace-aware reader, so elements are found by
//! namespace URI + local name, whatever prefixes the caller chose.
//!
//! # Layout
//! - this module: the server, its routes and shared state, and the test hooks (requests counted
//!   per path, an organisation down);
//! - `fixtures`: reading `fixtures/agencies` at start, and `{{today+Nd}}` dates;
//! - `soap`: the SOAP toolkit of the three SOAP services (a namespace-aware scan of small XML
//!   documents, envelopes in and out, SOAP 1.1 / 1.2 Faults);
//! - `rest`: the REST toolkit of the two REST services (problem+json with `invalidParams`, the
//!   checks before a service's own work);
//! - one module per organisation, with what its fixture must hold and how its service answers:
//!   `brp` (Haal Centraal, REST), `stuf_bg` (the gemeente, StUF-BG over SOAP 1.1), `uwv` (SOAP 1.1
//!   with WS-Addressing), `svb` (SOAP 1.2), `toeslagen` (Belastingdienst, REST).

mod brp;
mod fixtures;
mod rest;
mod soap;
mod stuf_bg;
mod svb;
mod toeslagen;
mod uwv;

pub use fixtures::relative_dates;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use fixtures::Fixtures;

/// Path of the Haal Centraal BRP Personen endpoint.
pub const BRP_PATH: &str = "/brp/haalcentraal/api/brp/personen";
/// Path of the gemeente's StUF-BG service.
pub const STUF_BG_PATH: &str = "/gemeente/stuf-bg/BGService";
/// Path of UWV's uitkeringen service.
pub const UWV_PATH: &str = "/uwv/UitkeringenService";
/// Path of SVB's regelingen service.
pub const SVB_PATH: &str = "/svb/RegelingenService";
/// Path of the Belastingdienst toeslagen search.
pub const TOESLAGEN_PATH: &str = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";

/// Largest request body any fixture service accepts; real services cap requests as well.
const MAX_REQUEST_BODY: usize = 256 * 1024;

/// One simulated organisation service; its key is the fixture folder name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Org {
    Brp,
    StufBg,
    Uwv,
    Svb,
    Toeslagen,
}

impl Org {
    const ALL: [Org; 5] = [Org::Brp, Org::StufBg, Org::Uwv, Org::Svb, Org::Toeslagen];

    fn key(self) -> &'static str {
        match self {
            Org::Brp => "brp",
            Org::StufBg => "stuf-bg",
            Org::Uwv => "uwv",
            Org::Svb => "svb",
            Org::Toeslagen => "toeslagen",
        }
    }

    fn from_key(key: &str) -> Option<Org> {
        Org::ALL.into_iter().find(|o| o.key() == key)
    }

    fn extension(self) -> &'static str {
        match self {
            Org::Brp | Org::Toeslagen => "json",
            Org::StufBg | Org::Uwv | Org::Svb => "xml",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// What its service answers while it is down.
    fn unavailable(self) -> Response {
        match self {
            Org::Brp => brp::SERVICE.unavailable(),
            Org::Toeslagen => toeslagen::SERVICE.unavailable(),
            Org::StufBg | Org::Uwv | Org::Svb => soap::unavailable(),
        }
    }
}

fn is_bsn_shaped(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// State shared by all handlers.
struct Shared {
    fixtures: Fixtures,
    /// Requests received per exact path.
    hits: Mutex<HashMap<String, u64>>,
    /// Per [`Org::index`]: answer 503 when set.
    down: [AtomicBool; 5],
    /// The organisations' intake of applications.
    intake: Arc<super::intake::Intake>,
}

impl Shared {
    fn hits(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        // A panic elsewhere while counting cannot leave the map inconsistent.
        self.hits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_down(&self, org: Org) -> bool {
        self.down[org.index()].load(Ordering::Relaxed)
    }
}

/// The fixture agencies, served on one loopback port. Dropping it stops the server.
pub struct AgencyServer {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for AgencyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AgencyServer {
    /// Binds `addr` (use 127.0.0.1:0 in tests) and serves the fixtures found under
    /// `fixtures_dir` (the `fixtures/agencies` folder).
    pub async fn start(fixtures_dir: &Path, addr: SocketAddr) -> io::Result<AgencyServer> {
        let fixtures = Fixtures::load(fixtures_dir)?;
        let shared = Arc::new(Shared {
            fixtures,
            hits: Mutex::new(HashMap::new()),
            down: Default::default(),
            intake: Arc::default(),
        });
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender means the same as a sent signal: stop.
                    let _ = rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "The fixture agency server stopped with an error.");
            }
        });
        Ok(AgencyServer {
            base_url: format!("http://{local}"),
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The intake of applications (ZGW zaken, toeslagen, UWV DienAanvraagIn).
    pub fn intake(&self) -> &super::intake::Intake {
        &self.shared.intake
    }

    /// Requests received on exactly this path (any method, any outcome).
    pub fn hits(&self, path: &str) -> u64 {
        self.shared.hits().get(path).copied().unwrap_or(0)
    }

    /// Makes organisation `org` (`brp`, `stuf-bg`, `uwv`, `svb`, `toeslagen`) answer 503 while
    /// `down` is true. An unknown key is logged and ignored.
    pub fn set_down(&self, org: &str, down: bool) {
        match Org::from_key(org) {
            Some(o) => self.shared.down[o.index()].store(down, Ordering::Relaxed),
            None => tracing::warn!(
                org,
                "Unknown fixture organisation; use brp, stuf-bg, uwv, svb or toeslagen."
            ),
        }
    }
}

impl Drop for AgencyServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How an organisation's service answers one request, from its headers and body.
type Answer = fn(&Shared, &HeaderMap, &[u8]) -> Response;

fn router(shared: Arc<Shared>) -> Router {
    let intake = super::intake::router(shared.intake.clone());
    Router::new()
        .route(BRP_PATH, service(Org::Brp, brp::answer))
        .route(STUF_BG_PATH, service(Org::StufBg, stuf_bg::answer))
        .route(UWV_PATH, service(Org::Uwv, uwv::answer))
        .route(SVB_PATH, service(Org::Svb, svb::answer))
        .route(TOESLAGEN_PATH, service(Org::Toeslagen, toeslagen::answer))
        .with_state(shared.clone())
        .merge(intake)
        .fallback(not_found)
        // Outermost: every request is counted, whatever its outcome (404 and 503 included).
        .layer(middleware::from_fn_with_state(shared.clone(), count_hit))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
}

/// The POST route of `org`'s service: while the organisation is down, the 503 its protocol
/// gives; else `answer`.
fn service(org: Org, answer: Answer) -> MethodRouter<Arc<Shared>> {
    post(
        move |State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes| async move {
            if shared.is_down(org) {
                return org.unavailable();
            }
            answer(&shared, &headers, &body)
        },
    )
}

async fn count_hit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    *shared
        .hits()
        .entry(req.uri().path().to_owned())
        .or_insert(0) += 1;
    next.run(req).await
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    rest::problem(
        StatusCode::NOT_FOUND,
        "Opgevraagde resource bestaat niet.",
        "Op dit pad draait geen fixture-dienst.",
        req.uri().path(),
        "notFound",
        Vec::new(),
    )
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// What the organisations' tests share: a server on the real fixtures and a client for it.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use axum::http::StatusCode;
    use serde_json::Value;

    use super::AgencyServer;
    use super::soap::{XElem, find};

    pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/agencies");

    pub(super) async fn start() -> AgencyServer {
        AgencyServer::start(Path::new(FIXTURES), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("fixture server starts")
    }

    pub(super) async fn post(
        server: &AgencyServer,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, String, String) {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", server.base_url()))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request is sent");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    /// A request without extra headers.
    pub(super) async fn ask(
        server: &AgencyServer,
        path: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, String, String) {
        post(server, path, content_type, &[], body).await
    }

    pub(super) async fn post_json(
        server: &AgencyServer,
        path: &str,
        body: Value,
    ) -> (StatusCode, String, Value) {
        let (status, ct, text) =
            post(server, path, "application/json", &[], body.to_string()).await;
        (
            status,
            ct,
            serde_json::from_str(&text).expect("JSON answer"),
        )
    }

    pub(super) fn text_at<'a>(elems: &'a [XElem], path: &[(&str, &str)]) -> Option<&'a str> {
        find(elems, path).map(|e| e.text.trim())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::svb::regelingen_vraag;
    use super::testing::{ask, post, post_json, start};
    use super::uwv::geef_uitkeringen;
    use super::*;

    #[tokio::test]
    async fn hits_count_requests_per_path() {
        let server = start().await;
        assert_eq!(server.hits(TOESLAGEN_PATH), 0);
        for _ in 0..3 {
            post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        }
        post(&server, "/nergens", "application/json", &[], "{}").await;
        assert_eq!(server.hits(TOESLAGEN_PATH), 3);
        assert_eq!(server.hits("/nergens"), 1);
        assert_eq!(server.hits(BRP_PATH), 0);
    }

    #[tokio::test]
    async fn a_down_organisation_answers_503_until_it_is_back() {
        let server = start().await;
        server.set_down("uwv", true);
        server.set_down("toeslagen", true);
        let ask_uwv = || {
            let body = geef_uitkeringen("999993653", None);
            ask(&server, UWV_PATH, "text/xml", body)
        };
        let (status, _, _) = ask_uwv().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, ct, _) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct, "application/problem+json");
        // Others are unaffected.
        let (status, _, _) = ask(
            &server,
            SVB_PATH,
            "application/soap+xml",
            regelingen_vraag("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        server.set_down("uwv", false);
        let (status, _, _) = ask_uwv().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.hits(UWV_PATH), 2);
        server.set_down("onbekend", true); // ignored, logged
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let server = start().await;
        let url = format!("{}{TOESLAGEN_PATH}", server.base_url());
        drop(server);
        let mut refused = false;
        for _ in 0..50 {
            let client = reqwest::Client::new();
            if client
                .post(&url)
                .json(&json!({"bsn": "999993653"}))
                .send()
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "the port still answers after drop");
    }
}
