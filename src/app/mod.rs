//! The application: one wiring of store, gateway, reload and delivery, and the workflows that
//! span them.
//!
//! [`App::build`] is the only way the gateway is put together: `serve` and `demo`, the test
//! harness and the load bench all call it, so what the tests exercise is what production
//! runs (registrations layered over the files, reload triggers armed, the delivery worker
//! started). The HTTP layer (`server`) sits on top and maps [`AppError`]s to problem+json;
//! nothing here knows about HTTP.

pub mod access_log;
pub mod delivery;
pub mod dossier;
pub mod registrations;
pub mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::store::AuditStore;
use reload::{EnvFn, Reloader};

/// What a running gateway is made of.
pub struct App {
    pub gateway: Gateway,
    /// The durable store, when the gateway runs with one (always, except in tools).
    pub store: Option<AuditStore>,
    /// Reloads and registrations; absent when the config did not come from a file.
    pub reloader: Option<Arc<Reloader>>,
}

/// How [`App::build`] starts the gateway.
pub struct Launch {
    /// The validated config (its file is what reloads read again).
    pub config: Config,
    /// `${VAR}` values for the config, on every reload as at the start.
    pub env: Arc<EnvFn>,
    /// The store file; `None`: `store.path` from the config.
    pub store: Option<PathBuf>,
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
    #[error("opening the store {path}: {source}")]
    Store {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("reading adapter registrations: {0}")]
    Registrations(crate::store::StoreError),
    #[error("building the gateway: {0}")]
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
        let path = store.unwrap_or_else(|| config.store_path());
        let store = AuditStore::open(&path, config.pseudonym_key())
            .map_err(|source| AppError::Store { path, source })?;
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
        });
        if watch {
            reload::spawn_triggers(reloader, app.clone());
        }
        delivery::spawn(app.clone());
        Ok(app)
    }
}
