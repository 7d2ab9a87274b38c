//! The demo organisations' intake of applications: a ZGW Zaken API-style `POST /zaken` (REST)
//! and a UWV-style `DienAanvraagIn` (SOAP 1.1). Each recognises a repeated delivery by its
//! `Idempotency-Key` and answers with the case it already made, so counting distinct keys shows
//! whether every application arrived exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const ZAKEN_PATH: &str = "/gemeente/zgw/zaken/api/v1/zaken";
pub const TOESLAG_AANVRAAG_PATH: &str = "/belastingdienst/toeslagen/api/v1/aanvragen";
pub const UWV_AANVRAAG_PATH: &str = "/uwv/AanvraagService";

/// What the intake has received.
#[derive(Default)]
pub struct Intake {
    /// Idempotency key -> (path, reference).
    cases: Mutex<BTreeMap<String, (String, String)>>,
    requests: AtomicU64,
    next: AtomicU64,
    down: AtomicBool,
}

impl Intake {
    /// Distinct applications received on `path`.
    pub fn distinct(&self, path: &str) -> usize {
        self.lock().values().filter(|(p, _)| p == path).count()
    }

    /// The idempotency keys (application ids) of every distinct application received.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Delivery requests received in all (repeats included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// While down, every intake answers 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, String)>> {
        self.cases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reference for `key`, made now when new. `true` when it was new.
    fn case(&self, key: &str, path: &str, prefix: &str) -> (String, bool) {
        let mut cases = self.lock();
        if let Some((_, r)) = cases.get(key) {
            return (r.clone(), false);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let r = format!("{prefix}-2026-{n:06}");
        cases.insert(key.to_string(), (path.to_string(), r.clone()));
        (r, true)
    }
}

pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route(
            ZAKEN_PATH,
            post(|s, h, b| rest(s, h, b, ZAKEN_PATH, "ZAAK")),
        )
        .route(
            TOESLAG_AANVRAAG_PATH,
            post(|s, h, b| rest(s, h, b, TOESLAG_AANVRAAG_PATH, "TSL")),
        )
        .route(UWV_AANVRAAG_PATH, post(soap))
        .route(INTAKE_REPORT_PATH, get(report))
        .with_state(intake)
}

/// What the intake received, for scripts that check nothing was lost or doubled.
pub const INTAKE_REPORT_PATH: &str = "/_intake";

/// `GET /_intake`: the delivery requests received (repeats included) and each distinct
/// application (its idempotency key) with the case made for it.
async fn report(State(i): State<Arc<Intake>>) -> Response {
    let cases: serde_json::Map<String, Value> = i
        .lock()
        .iter()
        .map(|(key, (path, reference))| {
            (key.clone(), json!({"path": path, "reference": reference}))
        })
        .collect();
    axum::Json(json!({"requests": i.requests(), "distinct": cases.len(), "cases": cases}))
        .into_response()
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail})
            .to_string(),
    )
        .into_response()
}

async fn rest(
    State(i): State<Arc<Intake>>,
    h: HeaderMap,
    body: Bytes,
    path: &'static str,
    prefix: &'static str,
) -> Response {
    i.requests.fetch_add(1, Ordering::Relaxed);
    if i.down.load(Ordering::Relaxed) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "onderhoud",
        );
    }
    let Some(key) = h.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Idempotency-Key ontbreekt",
        );
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "Bad Request", "geen geldige JSON");
    };
    if v.get("omschrijving")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "omschrijving is verplicht",
        );
    }
    if v.to_string().contains("WEIGER") {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Entity",
            "De aanvraag voldoet niet aan de voorwaarden.",
        );
    }
    let (reference, new) = i.case(key, path, prefix);
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let zaak = json!({
        "url": format!("https://zaken.example.nl{path}/{reference}"),
        "identificatie": reference,
        "omschrijving": v["omschrijving"],
        "status": "ontvangen",
    });
    (
        status,
        [("content-type", "application/json")],
        zaak.to_string(),
    )
        .into_response()
}

fn soap_fault(code: &str, reason: &str) -> Response {
    let body = format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>soapenv:{code}</faultcode><faultstring>{reason}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn soap(State(i): State<Arc<Intake>>, h: HeaderMap, body: Bytes) -> Response {
    i.requests.fetch_add(1, Ordering::Relaxed);
    if i.down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "onderhoud").into_response();
    }
    let text = String::from_utf8_lossy(&body);
    if !text.contains("urn:nl:uwv:aanvragen:v1") || !text.contains("DienAanvraagIn") {
        return soap_fault("Client", "Onbekend bericht");
    }
    if text.contains("WEIGER") {
        return soap_fault("Client", "De aanvraag is niet ontvankelijk.");
    }
    let Some(key) = h.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return soap_fault("Client", "Idempotency-Key ontbreekt");
    };
    let (reference, _) = i.case(key, UWV_AANVRAAG_PATH, "UWV-AANV");
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><a:DienAanvraagInResponse xmlns:a="urn:nl:uwv:aanvragen:v1"><a:aanvraagnummer>{reference}</a:aanvraagnummer><a:status>ontvangen</a:status></a:DienAanvraagInResponse></soapenv:Body></soapenv:Envelope>"#
    );
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}
