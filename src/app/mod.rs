//! The application: one wiring of store, gateway, reload and delivery, and the workflows that
//! span them.
//!
//! [`App::build`] is the only way the gateway is put together: `serve` and `demo`, the test
//! harness and the load bench all call it, so what the tests exercise is what production
//! runs (registrations layered over the files, reload triggers armed, the delivery worker
//! started). The HTTP layer (`server`) sits on top and maps [`AppError`]s to problem+json;
//! nothing here knows about HTTP.

pub mod access_log;
pub mod cluster;
pub mod delivery;
pub mod dossier;
pub mod registrations;
pub mod reload;

use std::sync::Arc;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::model::StoreBackend;
use crate::store::{AuditStore, StoreLocation, StoreOptions};
use reload::{EnvFn, Reloader};

/// What a running gateway is made of.
pub struct App {
    pub gateway: Gateway,
    /// The durable store, when the gateway runs with one (always, except in tools).
    pub store: Option<AuditStore>,
    /// Reloads and registrations; absent when the config did not come from a file.
    pub reloader: Option<Arc<Reloader>>,
    /// This instance's name in a cluster (`KETENPORTAAL_INSTANCE`, or host and process id).
    pub instance: String,
}

/// How [`App::build`] starts the gateway.
pub struct Launch {
    /// The validated config (its file is what reloads read again).
    pub config: Config,
    /// `${VAR}` values for the config, on every reload as at the start.
    pub env: Arc<EnvFn>,
    /// The store (a file, or a `postgres://` URL); `None`: `store` from the config.
    pub store: Option<StoreLocation>,
    /// Reload on file changes, symlink swaps and SIGHUP (off only for tools that run no
    /// gateway for long).
    pub watch: bool,
    pub audit: AuditMode,
}

/// Where access records go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditMode {
    /// Into the store's hash chain, durably, before an answer leaves: what `serve` runs.
    #[default]
    Durable,
    /// To the log only (the store still holds registrations and applications): for the load
    /// bench, to show what durability costs. Not conformant; never in production.
    LogOnly,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    // The cause is the error's source (shown after it by `{:#}`), not repeated here.
    #[error("opening the store {location}")]
    Store {
        location: StoreLocation,
        source: crate::store::StoreError,
    },
    #[error("reading adapter registrations: {0}")]
    Registrations(crate::store::StoreError),
    #[error("building the gateway")]
    Gateway(#[from] crate::gateway::GatewayError),
}

impl App {
    /// Opens the store, layers the stored partner registrations over the files (one that no
    /// longer fits is left out and logged), builds the gateway, and starts the reload triggers
    /// and the delivery worker. Call inside a Tokio runtime.
    pub async fn build(launch: Launch) -> Result<Arc<App>, AppError> {
        let Launch {
            config,
            env,
            store,
            watch,
            audit,
        } = launch;
        let location = store.unwrap_or_else(|| store_location(&config));
        let instance = cluster::instance_name();
        let options = store_options(&config, instance.clone());
        let store = AuditStore::connect(&location, config.pseudonym_key(), options)
            .await
            .map_err(|source| AppError::Store { location, source })?;
        let regs = store
            .registrations()
            .await
            .map_err(AppError::Registrations)?;
        let reloader = Arc::new(Reloader::new(config.file.clone(), env, config.clone()));
        let (config, left_out) = config.with_fitting_registrations(&regs);
        for (id, e) in &left_out {
            tracing::error!(adapter = %id, error = %e, "A stored adapter registration does not fit the configuration; starting without it.");
        }
        let sink: Arc<dyn crate::audit::AuditSink> = match audit {
            AuditMode::Durable => Arc::new(store.clone()),
            AuditMode::LogOnly => Arc::new(crate::audit::LogAudit),
        };
        let gateway = Gateway::new(config, sink).map_err(AppError::Gateway)?;
        let app = Arc::new(App {
            gateway,
            store: Some(store),
            reloader: Some(reloader.clone()),
            instance: instance.clone(),
        });
        if watch {
            reload::spawn_triggers(reloader, app.clone());
        }
        delivery::spawn(app.clone());
        cluster::spawn(app.clone(), instance);
        Ok(app)
    }
}

/// The store the config names: its file, or its database.
pub fn store_location(config: &Config) -> StoreLocation {
    let store = &config.gateway.store;
    match (store.backend, &store.url) {
        (StoreBackend::Postgres, Some(url)) => StoreLocation::Postgres(url.expose().to_string()),
        _ => StoreLocation::Sqlite(config.store_path()),
    }
}

/// How the config says the store is run.
fn store_options(config: &Config, instance: String) -> StoreOptions {
    let store = &config.gateway.store;
    StoreOptions {
        pool_size: store.pool_size,
        lease: store.lease.0,
        timeout: store.timeout.0,
        instance,
        commit_delay: store.commit_delay.0,
    }
}
