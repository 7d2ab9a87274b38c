//! A partner maintains its own adapters: the registration workflow.
//!
//! One change at a time (the reloader's lock): the partner's right to the id, validation as a
//! registered descriptor (`Trust::Partner`), the organisation's quota, the whole configuration
//! with the change validated before anything is written, then the audit record (fail closed),
//! the store, and the atomic swap.

use super::App;
use crate::audit::AccessRecord;
use crate::config::ConfigErrors;
use crate::config::compile::Registration;
use crate::store::StoreError;
use crate::trace::TraceContext;

/// Why a registration change is refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    NotYours(String),
    #[error("no adapter `{0}`")]
    NotFound(String),
    #[error("`{0}` comes from a file; ask the operator to remove it there")]
    FileAdapter(String),
    #[error(
        "`{organisation}` has {max} registered adapters, the most allowed (`registrations.max_per_organisation`); remove one first, or ask the operator"
    )]
    Quota { organisation: String, max: u32 },
    #[error("the descriptor's id `{sent}` differs from `{path}` in the path")]
    IdMismatch { sent: String, path: String },
    /// The descriptor, or the configuration with the change, is not valid.
    #[error("{title}: {errors}")]
    Invalid {
        title: &'static str,
        errors: ConfigErrors,
    },
    #[error("the store: {0}")]
    Store(StoreError),
    /// The change could not be recorded, so it is not made.
    #[error("the change could not be recorded: {0}")]
    Audit(crate::audit::AuditError),
    #[error("this gateway runs without a store")]
    NoStore,
    #[error("only the configured test persons (`partner_test_bsns`) may be used for adapter tests")]
    NotATestPerson,
    #[error("at most {0} adapter tests run at a time; try again in a moment")]
    Busy(usize),
    #[error("this gateway cannot change its configuration at run time")]
    NoReload,
}

/// A registration that took effect.
#[derive(Debug)]
pub struct Change {
    /// It replaced an adapter of the same id.
    pub replaced: bool,
    pub version: String,
    pub sha256: String,
}

const INVALID: &str = "The adapter descriptor is not valid";
const DOES_NOT_FIT: &str = "The adapter does not fit the configuration";
const WOULD_BREAK: &str = "Removing the adapter would break the configuration";

fn invalid(title: &'static str) -> impl FnOnce(ConfigErrors) -> RegistrationError {
    move |errors| RegistrationError::Invalid { title, errors }
}

fn not_yours(id: &str) -> RegistrationError {
    RegistrationError::NotYours(format!("adapter `{id}` belongs to another organisation"))
}

fn foreign(org: &str, declared: &str) -> RegistrationError {
    RegistrationError::NotYours(format!(
        "you act for `{org}`; an adapter of `{declared}` is not yours to register"
    ))
}

/// Refuses, before any validation, a descriptor that names another organisation than the one
/// the partner acts for: whether it would be valid is not the caller's business (its
/// endpoints, sections and bounds are that organisation's).
pub fn refuse_foreign(text: &str, org: &str) -> Result<(), RegistrationError> {
    let declared = crate::config::yaml::parse(text)
        .ok()
        .and_then(|t| t.get("organisation")?.as_str().map(str::to_owned));
    match declared {
        Some(d) if d != org => Err(foreign(org, &d)),
        _ => Ok(()),
    }
}

/// Refuses an id that another organisation's adapter has: a partner may neither replace nor
/// try out (under that id) what is not theirs.
fn refuse_others_id(
    rt: &crate::gateway::Runtime,
    org: &str,
    id: &str,
) -> Result<(), RegistrationError> {
    match rt.adapters.get(id) {
        Some(existing) if existing.client.spec.def.organisation != org => Err(not_yours(id)),
        _ => Ok(()),
    }
}

/// A parsed descriptor must describe adapter `id` (the path's) of `org`.
fn check_parsed(
    spec: &crate::config::compile::AdapterSpec,
    org: &str,
    id: &str,
) -> Result<(), RegistrationError> {
    if spec.def.id != id {
        return Err(RegistrationError::IdMismatch {
            sent: spec.def.id.clone(),
            path: id.to_string(),
        });
    }
    if spec.def.organisation != org {
        return Err(foreign(org, &spec.def.organisation));
    }
    Ok(())
}

/// Registers or replaces adapter `id` of `org` from the descriptor `text` (YAML or JSON).
pub async fn put(
    app: &App,
    org: &str,
    id: &str,
    text: String,
    trace: &TraceContext,
) -> Result<Change, RegistrationError> {
    let reloader = app.reloader.as_ref().ok_or(RegistrationError::NoReload)?;
    let store = app.store.as_ref().ok_or(RegistrationError::NoStore)?;
    let _guard = reloader.lock().await;
    let rt = app.gateway.runtime();
    refuse_others_id(&rt, org, id)?;
    refuse_foreign(&text, org)?;
    let base = reloader.base();
    let spec = base
        .parse_adapter_text(&format!("registration:{id}"), &text)
        .map_err(invalid(INVALID))?;
    check_parsed(&spec, org, id)?;
    let sha256 = crate::credentials::sha256_hex(&text);
    let reg = Registration {
        id: id.to_string(),
        organisation: org.to_string(),
        descriptor: text,
        sha256: sha256.clone(),
        updated_at: chrono::Utc::now().to_rfc3339(),
        updated_by: format!("partner:{org}"),
    };
    let mut regs = store
        .registrations()
        .await
        .map_err(RegistrationError::Store)?;
    let before = regs.clone();
    let replaced = rt.adapters.contains_key(id);
    regs.retain(|r| r.id != id);
    let max = rt.config.gateway.registrations.max_per_organisation;
    if regs.iter().filter(|r| r.organisation == org).count() >= max as usize {
        return Err(RegistrationError::Quota {
            organisation: org.to_string(),
            max,
        });
    }
    regs.push(reg.clone());
    // The whole result is validated before anything is written or swapped.
    base.check_registration_change(&before, &regs, id)
        .map_err(invalid(DOES_NOT_FIT))?;
    let details = serde_json::json!({"adapter": id, "action": "put", "sha256": sha256});
    audit_change(app, org, trace, details).await?;
    // The store decides, atomically across a cluster's instances, whose id it is.
    if !store
        .put_registration(reg)
        .await
        .map_err(RegistrationError::Store)?
    {
        return Err(not_yours(id));
    }
    let version = reloader
        .apply(&app.gateway, &regs)
        .map_err(invalid(DOES_NOT_FIT))?;
    tracing::info!(adapter = %id, organisation = %org, sha256 = %sha256, version = %version, "Adapter registered.");
    Ok(Change {
        replaced,
        version,
        sha256,
    })
}

/// Removes registration `id` of `org`.
pub async fn delete(
    app: &App,
    org: &str,
    id: &str,
    trace: &TraceContext,
) -> Result<(), RegistrationError> {
    let reloader = app.reloader.as_ref().ok_or(RegistrationError::NoReload)?;
    let store = app.store.as_ref().ok_or(RegistrationError::NoStore)?;
    let _guard = reloader.lock().await;
    let mut regs = store
        .registrations()
        .await
        .map_err(RegistrationError::Store)?;
    let Some(reg) = regs.iter().find(|r| r.id == id).cloned() else {
        let rt = app.gateway.runtime();
        return Err(match rt.adapters.get(id) {
            Some(a) if a.client.spec.def.organisation != org => not_yours(id),
            Some(_) => RegistrationError::FileAdapter(id.to_string()),
            None => RegistrationError::NotFound(id.to_string()),
        });
    };
    if reg.organisation != org {
        return Err(not_yours(id));
    }
    let before = regs.clone();
    regs.retain(|r| r.id != id);
    reloader
        .base()
        .check_registration_change(&before, &regs, id)
        .map_err(invalid(WOULD_BREAK))?;
    let details = serde_json::json!({"adapter": id, "action": "delete", "sha256": reg.sha256});
    audit_change(app, org, trace, details).await?;
    if !store
        .delete_registration(id.to_string(), org.to_string())
        .await
        .map_err(RegistrationError::Store)?
    {
        return Err(RegistrationError::NotFound(id.to_string()));
    }
    reloader
        .apply(&app.gateway, &regs)
        .map_err(invalid(WOULD_BREAK))?;
    tracing::info!(adapter = %id, organisation = %org, "Adapter registration removed.");
    Ok(())
}

/// Adapter test calls in flight at once, per process.
pub const MAX_TEST_CALLS: usize = 16;
static TEST_CALLS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_TEST_CALLS);

/// One test call: what the source gave (mapped) or why not, and how long it took.
pub type TestCall = (
    Result<crate::adapter::SourceAnswer, crate::adapter::SourceError>,
    std::time::Duration,
);

/// Runs adapter `id` of `org` (or the `descriptor` sent instead, as a dry run: nothing is
/// stored) once, alone, for one of the configured test persons.
pub async fn test(
    app: &App,
    org: &str,
    id: &str,
    bsn: crate::bsn::Bsn,
    descriptor: Option<&str>,
) -> Result<TestCall, RegistrationError> {
    let rt = app.gateway.runtime();
    if !rt
        .config
        .gateway
        .partner_test_bsns
        .iter()
        .any(|t| t == bsn.as_str())
    {
        return Err(RegistrationError::NotATestPerson);
    }
    // The same rules as `put`: a dry run is what a `PUT` of the draft would register, so it
    // may not run under another organisation's id, nor under an id its draft does not have.
    refuse_others_id(&rt, org, id)?;
    let spec = match descriptor {
        Some(text) => {
            refuse_foreign(text, org)?;
            let spec = rt
                .config
                .parse_adapter_text(&format!("registration:{id}"), text)
                .map_err(invalid(INVALID))?;
            check_parsed(&spec, org, id)?;
            std::sync::Arc::new(spec)
        }
        None => rt
            .adapters
            .get(id)
            .map(|a| a.client.spec.clone())
            .ok_or_else(|| RegistrationError::NotFound(id.to_string()))?,
    };
    // Test calls bypass the breaker and the adapter's concurrency limit (they must work while
    // a circuit is open), so they are capped here: a partner cannot make the gateway hold
    // dozens of large answers at once.
    let Ok(_slot) = TEST_CALLS.try_acquire() else {
        return Err(RegistrationError::Busy(MAX_TEST_CALLS));
    };
    // Test answers count against the same in-flight budget as dossier reads.
    let client = crate::adapter::AdapterClient::new(spec, app.gateway.outbound())
        .with_budget(app.gateway.inflight.clone());
    Ok(crate::gateway::Gateway::run_adapter(&client, bsn).await)
}

/// Records a change made by a partner; fail closed.
async fn audit_change(
    app: &App,
    org: &str,
    trace: &TraceContext,
    details: serde_json::Value,
) -> Result<(), RegistrationError> {
    let Some(store) = &app.store else {
        return Ok(());
    };
    let mut rec = AccessRecord::new("adapter.change", None, trace, None);
    rec.actor = format!("partner:{org}");
    rec.actor_organisation = Some(org.to_string());
    rec.outcome = "accepted".into();
    rec.details = Some(details);
    crate::audit::AuditSink::record(store, rec)
        .await
        .map_err(RegistrationError::Audit)
}
