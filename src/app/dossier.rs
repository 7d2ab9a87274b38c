//! The dossier read, the one workflow every dossier, theme and life-event answer goes through:
//! authorise the caller for the view (and purpose), fan out through the gateway with the view
//! found there, and add the gateway's own `zaken` section from the store.

use std::sync::Arc;

use serde_json::{Value, json};

use super::App;
use crate::auth::Actor;
use crate::bsn::Bsn;
use crate::config::compile::{GATEWAY_SOURCE, ZAKEN};
use crate::gateway::{
    AccessError, DossierError, DossierRequest, DossierResponse, Runtime, SourceReport, authorize,
};
use crate::model::{Audience, ViewDef};
use crate::store::Application;
use crate::trace::TraceContext;

/// A dossier answer with the runtime snapshot it was made with (its views and catalogue).
pub type Dossier = (DossierResponse, Arc<Runtime>);

/// Why a dossier is not given.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("this endpoint is for citizens; employees use POST /v1/dossiers")]
    NotACitizen,
    #[error("citizens read their own dossier at GET /v1/me/dossier")]
    NotAnEmployee,
    #[error("no citizen view is configured")]
    NoCitizenView,
    /// Not allowed, or a view or section the configuration does not have.
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Dossier(#[from] DossierError),
}

/// What an employee asks for.
pub struct EmployeeAsk {
    pub bsn: Bsn,
    pub view: String,
    pub sections: Option<Vec<String>>,
    pub purpose: Option<String>,
    /// `Cache-Control: no-cache`: fetch fresh answers.
    pub no_cache: bool,
}

/// A citizen's own dossier through the citizen view.
pub async fn citizen(
    app: &App,
    actor: Actor,
    sections: Option<Vec<String>>,
    trace: TraceContext,
) -> Result<Dossier, ReadError> {
    let Actor::Citizen { bsn, .. } = &actor else {
        return Err(ReadError::NotACitizen);
    };
    let bsn = *bsn;
    let rt = app.gateway.runtime();
    let view = citizen_view(&rt.config).ok_or(ReadError::NoCitizenView)?;
    let req = DossierRequest {
        actor,
        bsn,
        view,
        sections,
        purpose: None,
        no_cache: false,
        trace,
        started_at: chrono::Utc::now(),
    };
    run(app, rt, req).await
}

/// A client's dossier through an employee view, for a stated purpose.
pub async fn employee(
    app: &App,
    actor: Actor,
    ask: EmployeeAsk,
    trace: TraceContext,
) -> Result<Dossier, ReadError> {
    if matches!(actor, Actor::Citizen { .. }) {
        return Err(ReadError::NotAnEmployee);
    }
    let req = DossierRequest {
        actor,
        bsn: ask.bsn,
        view: ask.view,
        sections: ask.sections,
        purpose: ask.purpose,
        no_cache: ask.no_cache,
        trace,
        started_at: chrono::Utc::now(),
    };
    run(app, app.gateway.runtime(), req).await
}

/// Authorises `req` on `rt`, runs it with the view authorisation found, and adds `zaken`.
async fn run(app: &App, rt: Arc<Runtime>, req: DossierRequest) -> Result<Dossier, ReadError> {
    let view = authorize(
        &rt.config,
        &req.actor,
        &req.bsn,
        &req.view,
        req.purpose.as_deref(),
    )?;
    known_sections(view, req.sections.as_deref())?;
    let wants_zaken = req
        .sections
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x == ZAKEN));
    let mut resp = app.gateway.dossier(&rt, view, req).await?;
    if wants_zaken && let Some(allowed) = view.sections.get(ZAKEN) {
        add_zaken(app, &rt, allowed, &mut resp).await;
    }
    Ok((resp, rt))
}

/// The citizen view: `klant` when it exists, otherwise the first citizen view.
fn citizen_view(c: &crate::config::Config) -> Option<String> {
    let views = &c.gateway.views;
    if views
        .get("klant")
        .is_some_and(|v| v.audience == Audience::Citizen)
    {
        return Some("klant".into());
    }
    views
        .iter()
        .find(|(_, v)| v.audience == Audience::Citizen)
        .map(|(k, _)| k.clone())
}

/// Refuses sections the view does not have (like an unknown view).
fn known_sections(view: &ViewDef, only: Option<&[String]>) -> Result<(), AccessError> {
    match only.and_then(|o| o.iter().find(|x| !view.sections.contains_key(*x))) {
        Some(bad) => Err(AccessError::UnknownSection(bad.clone())),
        None => Ok(()),
    }
}

/// The `zaken` section: the citizen's applications from the store, open ones first, then the
/// latest, at most `store.zaken_limit`, when the view shows that section. The store is the
/// source, named [`GATEWAY_SOURCE`].
async fn add_zaken(s: &App, rt: &Runtime, allowed: &[String], resp: &mut DossierResponse) {
    let Some(store) = &s.store else { return };
    let started = std::time::Instant::now();
    let apps = store
        .applications_of(resp.subject.bsn, rt.config.gateway.store.zaken_limit)
        .await;
    let (status, error) = match &apps {
        Ok(_) => ("ok", None),
        Err(e) => ("error", Some(e.to_string())),
    };
    let all = allowed.iter().any(|f| f == "*");
    let shown = |field: &str| all || allowed.iter().any(|f| f == field);
    let list: Vec<Value> = apps
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| zaak(rt, a, &shown))
        .collect();
    resp.own_sections.insert(ZAKEN.into(), Value::Array(list));
    resp.sources.push(SourceReport {
        adapter: std::sync::Arc::from(GATEWAY_SOURCE),
        organisation: Arc::from(GATEWAY_SOURCE),
        status,
        latency_ms: started.elapsed().as_millis() as u64,
        age_ms: None,
        fetched_at: Some(chrono::Utc::now()),
        error,
    });
}

/// One application as a `zaken` record, with the fields the view shows (built only for them).
fn zaak(rt: &Runtime, a: &Application, shown: &dyn Fn(&str) -> bool) -> Value {
    let mut obj = serde_json::Map::new();
    let mut put = |field: &str, value: &dyn Fn() -> Value| {
        if shown(field) {
            obj.insert(field.to_string(), value());
        }
    };
    put("id", &|| json!(a.id));
    put("service", &|| json!(a.service));
    put("title", &|| {
        json!(rt.config.gateway.services.get(&a.service).map(|x| &x.title))
    });
    put("organisation", &|| json!(a.organisation));
    put("status", &|| json!(a.status));
    put("open", &|| json!(a.status == "received"));
    put("reference", &|| json!(a.reference));
    put("submitted", &|| json!(a.created_at));
    put("updated", &|| json!(a.updated_at));
    obj.insert("_source".into(), json!(GATEWAY_SOURCE));
    Value::Object(obj)
}
