//! Following the cluster: what other instances change, this one takes up, and it says who it
//! is and what it serves.
//!
//! On a store several instances share (PostgreSQL), the store hands out [`Signal`]s as other
//! instances commit changes: registrations (read them again and swap, so every instance serves
//! the same adapters with the same config version), a reload of the files, a subject whose
//! cached answers are out of date. When the store's listener was cut off it says
//! [`Signal::Resync`], and everything a missed signal could have said is read again. Each
//! instance records a heartbeat with its config version once a second, for `/admin/status`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;

use super::App;
use crate::bsn::Bsn;
use crate::store::{Instance, Signal};

/// How often an instance says it is alive (and what it serves).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Starts following the store's signals and the heartbeat; both run until the process ends.
/// Nothing to do on a store only this instance writes.
pub fn spawn(app: Arc<App>, instance: String) {
    let Some(store) = app.store.clone() else {
        return;
    };
    let Some(mut signals) = store.signals() else {
        return;
    };
    let follower = app.clone();
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Ok(signal) => follow(&follower, signal).await,
                // More signals came than were read: any of them may have been missed.
                Err(RecvError::Lagged(_)) => follow(&follower, Signal::Resync).await,
                Err(RecvError::Closed) => return,
            }
        }
    });
    let started_at = Utc::now();
    tokio::spawn(async move {
        let gate = crate::lograte::LogGate::default();
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = whoami(&app, &instance, started_at);
            if let Err(e) = store.heartbeat(me).await
                && let Some(left_out) = gate.admit()
            {
                tracing::warn!(error = %e, left_out, "Cannot record this instance's heartbeat.");
            }
        }
    });
}

fn whoami(app: &App, instance: &str, started_at: DateTime<Utc>) -> Instance {
    Instance {
        id: instance.to_string(),
        started_at,
        seen_at: Utc::now(),
        config_version: app.gateway.runtime().config.version.clone(),
    }
}

/// How long forgetting a subject waits for Redis before it tells the other instances (the
/// delete goes on in the background when Redis is slower).
const FORGET_WAIT: Duration = Duration::from_millis(250);

/// Drops every cached answer about `bsn` here and in the shared cache, then tells every other
/// instance to drop theirs (Redis first, so that none reads the old answers back from it).
/// Whether the others were told (always, on a store of one instance).
pub async fn forget_subject(app: &App, bsn: Bsn) -> bool {
    app.gateway.cache.purge_subject(bsn, FORGET_WAIT).await;
    let Some(store) = &app.store else {
        return true;
    };
    match store.publish(Signal::Subject(bsn)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "Cached answers about a citizen dropped here; cannot tell the other instances.");
            false
        }
    }
}

/// Takes up one change another instance made.
async fn follow(app: &App, signal: Signal) {
    match signal {
        Signal::Subject(bsn) => app.gateway.cache.invalidate_subject(bsn),
        Signal::Registrations | Signal::Resync => refresh_registrations(app, &signal).await,
        Signal::Reload => {
            if let Some(reloader) = &app.reloader
                && let Err(e) = reloader
                    .reload(
                        &app.gateway,
                        app.store.as_ref(),
                        "another instance reloaded",
                    )
                    .await
            {
                tracing::error!(error = %e, "Another instance reloaded its configuration; this one's files do not load, so it keeps serving what it has.");
            }
        }
    }
}

/// Reads the registrations again and swaps them in over this instance's files.
async fn refresh_registrations(app: &App, why: &Signal) {
    let (Some(reloader), Some(store)) = (&app.reloader, &app.store) else {
        return;
    };
    let _guard = reloader.lock().await;
    match store.registrations().await {
        Ok(regs) => match reloader.apply(&app.gateway, &regs) {
            Ok(version) => {
                tracing::info!(version = %version, signal = ?why, "Registrations changed on another instance; now serving them.");
            }
            Err(e) => {
                tracing::error!(error = %e, "Registrations changed on another instance and do not fit this one's configuration.")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "Registrations changed on another instance; cannot read them.")
        }
    }
}

/// This instance's name: `KETENPORTAAL_INSTANCE`, or the host's name with the process id; a
/// second gateway built in the same process (tests, tools) gets `-2`, and so on.
pub fn instance_name() -> String {
    static BUILT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let name = base_name();
    if n == 1 { name } else { format!("{name}-{n}") }
}

fn base_name() -> String {
    if let Ok(name) = std::env::var("KETENPORTAAL_INSTANCE")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ketenportaal".into());
    format!("{host}-{}", std::process::id())
}
