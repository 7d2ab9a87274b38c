//! Delivering applications to the owning organisation, durably and at least once.
//!
//! An application is stored (status `received`) before the citizen hears `202 Accepted`. This
//! worker picks up due applications from the store, sends each to its service's delivery
//! endpoint (REST or SOAP) with the application id as `Idempotency-Key` (and as the WS-Addressing
//! MessageID), so the organisation can recognise a repeat and see each application once. A
//! failure of the organisation (5xx, a Server fault, no connection) is retried with growing
//! backoff until `max_attempts`; a refusal (4xx, a Client fault) is final. Because state lives
//! in the store, a restart (even kill -9) resumes where it stopped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::App;
use crate::model::{Call, DeliveryDef, Protocol};
use crate::protocol::client::{Outbound, ReadError, describe, read_capped};
use crate::protocol::template::{self, Vars};
use crate::protocol::{rest, soap};
use crate::store::Application;

/// The largest answer to a delivery that is read.
const MAX_ANSWER: u64 = 1 << 20;

/// How a delivery attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered(Option<String>),
    Rejected(String),
    /// Worth another attempt.
    Retry(String),
}

/// Starts the worker; it runs until the process ends.
pub fn spawn(state: Arc<App>) {
    tokio::spawn(async move {
        let http = state.gateway.outbound().clone();
        loop {
            let Some(store) = state.store.clone() else {
                return;
            };
            match store.due_applications(16).await {
                Ok(due) if !due.is_empty() => {
                    let runs = due.into_iter().map(|a| deliver_one(&state, &http, a));
                    futures::future::join_all(runs).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "Cannot read due applications."),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn deliver_one(state: &App, http: &Outbound, mut app: Application) {
    let rt = state.gateway.runtime();
    let g = &rt.config.gateway;
    let Some((svc, d)) = g
        .services
        .get(&app.service)
        .and_then(|s| s.application.as_ref().map(|a| (s, &a.delivery)))
    else {
        app.status = "failed".into();
        app.reason = Some(format!(
            "service `{}` no longer exists in the configuration",
            app.service
        ));
        if let Some(s) = &state.store {
            let _ = s.update_application(app).await;
        }
        return;
    };
    let base = g
        .organisations
        .get(&svc.organisation)
        .and_then(|o| o.base_url.as_deref());
    let url = d.url(base);
    // The organisation's own TLS (its CAs, the gateway's client certificate) when it has any.
    let http = rt
        .config
        .compiled
        .organisation_clients
        .get(&svc.organisation)
        .unwrap_or(http);
    app.attempts += 1;
    let outcome = attempt(http, &url, d, &app).await;
    match outcome {
        Outcome::Delivered(reference) => {
            app.status = "delivered".into();
            app.reference = reference;
            app.reason = None;
            // Its organisation's answers about the citizen change: forgotten here and on
            // every other instance.
            if let Ok(bsn) = crate::bsn::Bsn::parse(&app.bsn) {
                super::cluster::forget_subject(state, bsn).await;
            }
            tracing::info!(application = %app.id, service = %app.service, attempts = app.attempts, "Application delivered.");
        }
        Outcome::Rejected(reason) => {
            app.status = "rejected".into();
            app.reason = Some(reason);
            tracing::info!(application = %app.id, service = %app.service, "Application rejected by the organisation.");
        }
        Outcome::Retry(cause) if app.attempts >= d.max_attempts => {
            app.status = "failed".into();
            app.reason = Some(format!(
                "not delivered after {} attempts: {cause}",
                app.attempts
            ));
            tracing::warn!(application = %app.id, service = %app.service, %cause, "Application delivery failed for good.");
        }
        Outcome::Retry(cause) => {
            // 0.5 s, 1 s, 2 s, ... capped at 60 s.
            let wait = Duration::from_millis(500u64.saturating_mul(1 << app.attempts.min(7)))
                .min(Duration::from_secs(60));
            app.next_attempt_at =
                (Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()).to_rfc3339();
            app.reason = Some(cause.clone());
            tracing::info!(application = %app.id, attempt = app.attempts, %cause, "Delivery failed; will retry.");
        }
    }
    if let Some(store) = &state.store
        && let Err(e) = store.update_application(app).await
    {
        tracing::error!(error = %e, "Cannot record a delivery outcome; it will be retried.");
    }
}

/// One delivery attempt.
pub async fn attempt(http: &Outbound, url: &str, d: &DeliveryDef, app: &Application) -> Outcome {
    let empty = serde_json::Map::new();
    let data = app.data.as_object().unwrap_or(&empty);
    let scalars = [
        ("bsn", app.bsn.as_str()),
        ("application_id", app.id.as_str()),
        ("service", app.service.as_str()),
    ];
    let vars = Vars {
        scalars: &scalars,
        data,
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        // Not named: the reason is shown to the citizen, and the endpoint may hold a value
        // from the operator's environment.
        return Outcome::Retry("the delivery endpoint is not a URL".into());
    };
    let req = match d.call() {
        Some(Call::Rest(r)) => rest::request(
            uri,
            r,
            |h| template::render_plain(h, &scalars),
            r.body
                .as_ref()
                .map(|b| template::render_json_vars(b, &vars)),
        ),
        // The application id is the WS-Addressing MessageID: a repeat is recognisable.
        Some(Call::Soap(s)) => soap::request(
            url,
            uri,
            s,
            &app.id,
            &template::render_xml_vars(&s.body, &vars),
        ),
        None => return Outcome::Rejected("the delivery has no soap/rest block".into()),
    };
    let mut req = match req {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("the request cannot be built: {e}")),
    };
    if let Ok(key) = http::HeaderValue::from_str(&app.id) {
        req.headers_mut().insert("idempotency-key", key);
    }
    let resp = match tokio::time::timeout(d.timeout.0, http.send(req)).await {
        Err(_) => {
            return Outcome::Retry(format!("no answer within {} ms", d.timeout.0.as_millis()));
        }
        Ok(Err(e)) => {
            return Outcome::Retry(format!("cannot reach the organisation: {}", describe(&e)));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    // An answer larger than this is not read: it is no acknowledgement of ours.
    let read = read_capped(resp.into_body(), MAX_ANSWER, |_| Ok::<_, Infallible>(()));
    let body = match tokio::time::timeout(d.timeout.0, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(ReadError::TooLarge)) => {
            return Outcome::Retry(format!(
                "the answer is larger than {MAX_ANSWER} bytes, and was not read"
            ));
        }
        _ => return Outcome::Retry("the answer could not be read".into()),
    };
    match d.protocol {
        Protocol::Rest => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status.is_success() {
                let reference = d
                    .reference
                    .as_deref()
                    .and_then(|p| v.pointer(p))
                    .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_string));
                Outcome::Delivered(reference)
            } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                let reason = v
                    .get("detail")
                    .or_else(|| v.get("title"))
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("HTTP {status}"), str::to_string);
                Outcome::Rejected(reason)
            } else {
                Outcome::Retry(format!("HTTP {status}"))
            }
        }
        Protocol::Soap => soap_outcome(status, &body, d),
    }
}

fn soap_outcome(status: http::StatusCode, body: &[u8], d: &DeliveryDef) -> Outcome {
    use std::collections::BTreeMap;
    let prefixes = d
        .soap
        .as_ref()
        .map(|s| s.namespaces.clone())
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    if let Some(p) = &d.reference {
        fields.insert(
            "reference".to_string(),
            crate::model::FieldSpec {
                path: p.clone(),
                r#type: crate::model::FieldType::String,
                required: false,
            },
        );
    }
    let mut map = BTreeMap::new();
    map.insert(
        "r".to_string(),
        crate::model::SectionMap { each: None, fields },
    );
    let Ok(m) = crate::mapping::xml::XmlMapping::compile(&map, &prefixes) else {
        return Outcome::Rejected("the delivery's reference path does not compile".into());
    };
    match m.map_envelope(body, &crate::mapping::MapLimits::default()) {
        Ok(s) if status.is_success() => Outcome::Delivered(
            s.get("r")
                .and_then(|r| r.first())
                .and_then(|r| r.get("reference"))
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        Err(crate::mapping::MapError::Fault { code, reason }) => {
            let local = code
                .rsplit(':')
                .next()
                .unwrap_or(&code)
                .to_ascii_lowercase();
            if local == "client" || local == "sender" {
                Outcome::Rejected(reason)
            } else {
                Outcome::Retry(format!("SOAP Fault {code}: {reason}"))
            }
        }
        _ => Outcome::Retry(format!("HTTP {status} without a usable SOAP answer")),
    }
}
