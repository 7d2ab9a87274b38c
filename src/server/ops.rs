//! Operations: Prometheus metrics, liveness and readiness, the OpenAPI document, and the
//! operator's status page and reload (admin token). Reloading itself is
//! [`crate::app::reload`]'s; this module only asks for it and reports the outcome.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::adapters::adapter_summary;
use super::errors::{config_problem, credential_problem, no_reload};
use super::{Problem, Shared, api_doc, json, openapi};
use crate::app::App;

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (public, CORS open)", content_type = "application/json")))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        openapi(),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition (OpenMetrics)", content_type = "application/openmetrics-text")))]
pub(super) async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let g = &s.gateway;
    let rt = g.runtime();
    for a in rt.adapters.values() {
        let v = match a.circuit() {
            crate::resilience::CircuitState::Closed => 0,
            crate::resilience::CircuitState::HalfOpen => 1,
            crate::resilience::CircuitState::Open => 2,
        };
        g.metrics
            .circuit_state
            .get_or_create(&crate::metrics::AdapterLabel {
                adapter: a.client.id().clone(),
            })
            .set(v);
    }
    let (entries, bytes) = g.cache.stats();
    g.metrics.cache_entries.set(entries as i64);
    g.metrics.cache_bytes.set(bytes as i64);
    g.metrics.inflight_bytes.set(g.inflight.used() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        g.metrics.encode(),
    )
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = api_doc::HealthDoc)))]
pub(super) async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "A config is loaded and the store is writable", body = api_doc::ReadyDoc),
               (status = 503, description = "The store is not writable", body = api_doc::ReadyDoc)))]
pub(super) async fn readyz(State(s): State<Shared>) -> Response {
    let rt = s.gateway.runtime();
    let store_ok = match &s.store {
        Some(st) => st.writable().await,
        None => true,
    };
    let body = serde_json::json!({
        "status": if store_ok { "ready" } else { "store-unavailable" },
        "config_version": rt.config.version,
        "adapters": rt.adapters.len(),
        "store": store_ok,
    });
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body.to_string().into_bytes())
}

/// `GET /admin/status`: what is loaded and how each adapter is doing (admin token).
#[utoipa::path(get, path = "/admin/status", tag = "operations", security(("admin_token" = [])),
    responses((status = 200, description = "Loaded config, adapters, cache, store, reloads", body = api_doc::StatusDoc),
               (status = 403, description = "The operator pages are closed (no `admin.token_sha256`)")))]
pub(super) async fn admin_status(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    crate::credentials::admin(&rt.config.gateway, &headers).map_err(credential_problem)?;
    // Settle the cache's pending bookkeeping so the figures are current (cheap: it is done
    // in the background anyway).
    s.gateway.cache.sync().await;
    let (entries, bytes) = s.gateway.cache.stats();
    let store = match &s.store {
        Some(st) => Some(serde_json::json!({
            "path": st.location(),
            "writable": st.writable().await,
            "writer": st.stats(),
        })),
        None => None,
    };
    // Every instance on this store, as each last said (a store of one instance lists none).
    let cluster = match &s.store {
        Some(st) => match st.instances().await {
            Ok(list) => serde_json::json!(list),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        },
        None => serde_json::json!([]),
    };
    let body = serde_json::json!({
        "instance": s.instance,
        "cluster": cluster,
        "config": {"file": rt.config.file, "version": rt.config.version},
        "adapters": rt.adapters.values().map(|a| {
            let mut v = adapter_summary(a);
            let (hits, misses, joined, stale) = s.gateway.metrics.cache_counts(a.client.id());
            let lookups = hits + misses + joined + stale;
            v["organisation_name"] = serde_json::json!(a.client.spec.organisation_name);
            v["cache"] = serde_json::json!({
                "ttl_ms": a.client.spec.def.cache.ttl.0.as_millis() as u64,
                "hits": hits, "misses": misses, "joined": joined, "stale": stale,
                "hit_ratio": (lookups > 0).then(|| hits as f64 / lookups as f64),
            });
            v
        }).collect::<Vec<_>>(),
        "cache": {
            "entries": entries, "bytes": bytes, "max_bytes": rt.config.gateway.cache.max_bytes.0,
            "shared": s.gateway.cache.shared().map_or_else(|| serde_json::json!({"configured": false}), |sh| sh.status()),
        },
        "store": store,
        "reload": s.reloader.as_ref().map(|r| r.status()),
        "registrations": rt.adapters.keys().filter(|id| !rt.config.file_adapters.contains_key(*id)).collect::<Vec<_>>(),
    });
    Ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

/// `POST /admin/reload`: re-read the configuration files; refused with every problem when the
/// new configuration is not valid (the running one keeps serving).
#[utoipa::path(post, path = "/admin/reload", tag = "operations", security(("admin_token" = [])),
    responses((status = 200, description = "Reloaded", body = api_doc::ReloadDoc),
               (status = 403, description = "The operator pages are closed (no `admin.token_sha256`)"),
               (status = 422, description = "The new configuration is invalid; the running one stays"),
               (status = 503, description = "This gateway cannot change its configuration at run time")))]
pub(super) async fn admin_reload(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    crate::credentials::admin(&rt.config.gateway, &headers).map_err(credential_problem)?;
    let reloader = reloader(&s)?;
    match reloader
        .reload(&s.gateway, s.store.as_ref(), "POST /admin/reload")
        .await
    {
        Ok(version) => {
            // The other instances of a cluster read their files again too.
            if let Some(st) = &s.store
                && let Err(e) = st.publish(crate::store::Signal::Reload).await
            {
                tracing::warn!(error = %e, "Reloaded here; cannot tell the other instances.");
            }
            Ok(json(
                StatusCode::OK,
                serde_json::json!({"status": "reloaded", "config_version": version})
                    .to_string()
                    .into_bytes(),
            ))
        }
        Err(e) => Err(config_problem(
            "The new configuration is not valid; the running one stays",
            &e,
        )),
    }
}

/// The reloader, on a gateway that can change its configuration at run time.
fn reloader(s: &App) -> Result<&Arc<crate::app::reload::Reloader>, Problem> {
    s.reloader.as_ref().ok_or_else(no_reload)
}

/// `POST /admin/cache/purge`: drops every cached source answer about one citizen, on this
/// instance and (through the store) on every other instance of the cluster.
#[utoipa::path(post, path = "/admin/cache/purge", tag = "operations", security(("admin_token" = [])),
    request_body = api_doc::PurgeRequest,
    responses((status = 200, description = "Purged here; `cluster_told` says whether the other instances heard", body = api_doc::PurgeDoc),
               (status = 400, description = "The body is not `{\"bsn\": ...}` with a BSN of 8 or 9 digits"),
               (status = 403, description = "The operator pages are closed (no `admin.token_sha256`)"),
               (status = 422, description = "The BSN fails the 11-proef")))]
pub(super) async fn admin_cache_purge(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let rt = s.gateway.runtime();
    crate::credentials::admin(&rt.config.gateway, &headers).map_err(credential_problem)?;
    let req: api_doc::PurgeRequest = super::extract::parse_body(&body)?;
    let bsn = super::extract::parse_bsn("bsn", &req.bsn)?;
    let cluster_told = crate::app::cluster::forget_subject(&s, bsn).await;
    tracing::info!(
        cluster_told,
        "Cached answers about one citizen purged by the operator."
    );
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"status": "purged", "cluster_told": cluster_told})
            .to_string()
            .into_bytes(),
    ))
}
