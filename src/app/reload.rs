//! Configuration changes at run time: reloads (SIGHUP, a changed file, `POST /admin/reload`) and
//! partner registrations.
//!
//! Every change builds a complete new [`Config`] (files, then registrations from the store on
//! top), validates it as a whole, and only then swaps it in. A bad change is refused with every
//! problem listed and the running config keeps serving. Requests in flight finish on the
//! snapshot they started with; adapters whose definition did not change keep their state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError, ConfigErrors, compile::Registration};
use crate::gateway::Gateway;
use crate::store::AuditStore;

/// `${ENV}` lookup used for every (re)load.
pub type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub refused: u64,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_trigger: Option<String>,
    /// The problems of the last refused change, until a later one succeeds.
    pub last_error: Option<String>,
    /// Stored registrations left out of the running config because they no longer fit it
    /// (id and problems); their partners must fix and re-send them.
    pub registrations_left_out: Vec<String>,
}

pub struct Reloader {
    file: PathBuf,
    env: Arc<EnvFn>,
    /// The config as loaded from files, without registrations.
    base: ArcSwap<Config>,
    /// One change at a time.
    lock: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
}

impl Reloader {
    pub fn new(file: PathBuf, env: Arc<EnvFn>, base: Config) -> Reloader {
        Reloader {
            file,
            env,
            base: ArcSwap::from_pointee(base),
            lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(ReloadStatus::default()),
        }
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn base(&self) -> Arc<Config> {
        self.base.load_full()
    }

    /// Takes the change lock; hold it across read-validate-write-swap.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    fn note(&self, trigger: &str, result: &Result<String, ConfigErrors>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.last_trigger = Some(trigger.to_string());
        match result {
            Ok(_) => {
                s.reloads += 1;
                s.last_ok = Some(Utc::now());
                s.last_error = None;
            }
            Err(e) => {
                s.refused += 1;
                s.last_error = Some(e.to_string());
            }
        }
    }

    /// Builds base + `regs`, validates, swaps. Call with the lock held. A stored registration
    /// that no longer fits the files is left out (logged, and shown in the status) rather than
    /// blocking the operator's change.
    pub fn apply(&self, gateway: &Gateway, regs: &[Registration]) -> Result<String, ConfigErrors> {
        let (cfg, left_out) = self.base.load().with_fitting_registrations(regs);
        for (id, e) in &left_out {
            tracing::error!(adapter = %id, error = %e, "A stored adapter registration no longer fits the configuration; it is left out until its partner sends a valid one.");
        }
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registrations_left_out = left_out
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect();
        let version = cfg.version.clone();
        gateway.swap(cfg);
        Ok(version)
    }

    /// Re-reads the files (and the registrations) and swaps when everything is valid.
    pub async fn reload(
        &self,
        gateway: &Gateway,
        store: Option<&AuditStore>,
        trigger: &str,
    ) -> Result<String, ConfigErrors> {
        let _g = self.lock().await;
        let file = self.file.clone();
        let env = self.env.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load_with_env(&file, &*env))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors(vec![ConfigError::new(
                    &self.file,
                    Default::default(),
                    format!("reload task failed: {e}"),
                )]))
            });
        let result = match loaded {
            Ok(base) => {
                let regs = match store {
                    Some(s) => s.registrations().await.map_err(|e| {
                        ConfigErrors(vec![ConfigError::new(
                            &self.file,
                            Default::default(),
                            e.to_string(),
                        )])
                    }),
                    None => Ok(Vec::new()),
                };
                match regs {
                    Ok(regs) => {
                        let previous = self.base.swap(Arc::new(base));
                        let r = self.apply(gateway, &regs);
                        if r.is_err() {
                            // The new files do not work with the registrations: keep the old base.
                            self.base.store(previous);
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(v) => tracing::info!(trigger, version = %v, "Configuration reloaded."),
            Err(e) => {
                tracing::error!(trigger, problems = e.0.len(), error = %e, "Reload refused; the running configuration stays.")
            }
        }
        self.note(trigger, &result);
        result
    }

    /// Where the config file and the adapter paths lead after every symlink is followed: when
    /// this changes, the configuration was swapped underneath.
    pub fn resolved_targets(&self) -> Vec<PathBuf> {
        let base = self.base.load();
        std::iter::once(self.file.clone())
            .chain(base.gateway.adapters.iter().map(|a| base.base_dir.join(a)))
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect()
    }

    /// Files and folders whose changes trigger a reload.
    pub fn watched(&self) -> Vec<PathBuf> {
        let base = self.base.load();
        let mut dirs: Vec<PathBuf> =
            vec![self.file.parent().unwrap_or(Path::new(".")).to_path_buf()];
        for a in &base.gateway.adapters {
            let p = base.base_dir.join(a);
            let d = if p.is_dir() {
                p
            } else {
                p.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }
}

/// Reloads on SIGHUP and on changes to YAML files in the watched folders, until the process
/// ends. Bursts of file events (editors write several) become one reload.
pub fn spawn_triggers(reloader: Arc<Reloader>, gateway_state: Arc<super::App>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let file_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // A Kubernetes ConfigMap or Secret volume swaps its `..data` symlink (and creates
            // `..2026_...` folders): nothing with a YAML name changes there.
            let relevant = !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "pem")
                        || p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(".."))
                });
            if relevant {
                let _ = file_tx.try_send("file change");
            }
        }
    });
    match watcher {
        Ok(mut w) => {
            for d in reloader.watched() {
                if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                    tracing::warn!(folder = %d.display(), error = %e, "Cannot watch for config changes.");
                }
            }
            // The watcher lives as long as the process.
            std::mem::forget(w);
        }
        Err(e) => {
            tracing::warn!(error = %e, "File watching unavailable; reload with SIGHUP or POST /admin/reload.")
        }
    }
    // Any other symlink swap (`ln -sfn config-v2 config`, a link anywhere on the path) sends
    // no event to the folders watched above, which inotify resolved when they were added. So
    // the resolved targets are compared every second as well: a few `realpath` calls.
    {
        let tx = tx.clone();
        let reloader = reloader.clone();
        // Taken now, not when the task first runs: a swap in between must count.
        let mut last = reloader.resolved_targets();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = reloader.resolved_targets();
                if now != last {
                    last = now;
                    if tx.send("symlink swap").await.is_err() {
                        break;
                    }
                }
            }
        });
    }
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                while hup.recv().await.is_some() {
                    let _ = tx.send("SIGHUP").await;
                }
            }
        });
    }
    tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            // Let a burst of events settle, then reload once.
            tokio::time::sleep(Duration::from_millis(250)).await;
            while rx.try_recv().is_ok() {}
            let _ = reloader
                .reload(
                    &gateway_state.gateway,
                    gateway_state.store.as_ref(),
                    trigger,
                )
                .await;
        }
    });
}
