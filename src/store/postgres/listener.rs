//! Hearing the other instances: one connection of its own, `LISTEN ketenportaal`, whose
//! notifications become [`Signal`]s on the store's broadcast channel. A notification is a small
//! JSON object ([`Note`]) naming the store that sent it; a store skips its own (it already did
//! what the signal says). Every application change notifies too (`applications`, with the
//! citizen's BSN): every instance, this one included, drops that citizen's remembered list.
//!
//! When the connection is lost (PostgreSQL restarted, the connection killed, or silent for
//! longer than the timeout on a ping), nothing is remembered until it is back, it is made
//! again (100 ms, doubling to 2 s, between attempts), and subscribers get [`Signal::Resync`]:
//! notifications sent meanwhile were missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, Notification};

use super::{CHANNEL, Shared, describe, tls};
use crate::bsn::Bsn;
use crate::store::{Signal, StoreError};

pub(super) const REGISTRATIONS: &str = "registrations";
pub(super) const RELOAD: &str = "reload";
pub(super) const SUBJECT: &str = "subject";
pub(super) const RESYNC: &str = "resync";
/// Internal: a citizen's applications changed (not a [`Signal`]).
pub(super) const APPLICATIONS: &str = "applications";

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How often the listener checks that its connection still answers.
const PING: Duration = Duration::from_secs(5);

/// What a notification says.
#[derive(Serialize, Deserialize)]
struct Note {
    /// The store that sent it (see `Shared::origin`).
    origin: String,
    /// Its instance, for the log.
    instance: String,
    signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bsn: Option<String>,
}

/// The payload telling the other instances of `signal` (about `bsn`).
pub(super) fn note(shared: &Shared, signal: &str, bsn: Option<String>) -> String {
    serde_json::to_string(&Note {
        origin: shared.origin.clone(),
        instance: shared.instance.clone(),
        signal: signal.to_string(),
        bsn,
    })
    .unwrap_or_default()
}

/// A listening connection.
struct Listening {
    client: Client,
    notes: mpsc::UnboundedReceiver<Notification>,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects and listens (an error when it cannot: the store does not start deaf), then keeps
/// listening in a task of its own, until the handle is aborted.
pub(super) async fn start(
    config: Config,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, StoreError> {
    let first = listen(&config, &shared).await?;
    shared.lists.listening(true);
    Ok(tokio::spawn(run(config, shared, first)))
}

async fn run(config: Config, shared: Arc<Shared>, mut live: Listening) {
    loop {
        follow(&shared, &mut live).await;
        shared.lists.listening(false);
        tracing::warn!(store = %shared.location, "Lost the connection that hears the other instances; connecting again.");
        let mut pause = FIRST_PAUSE;
        live = loop {
            tokio::time::sleep(pause).await;
            match listen(&config, &shared).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::debug!(store = %shared.location, error = %e, "Cannot listen yet.");
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        };
        shared.lists.listening(true);
        tracing::info!(store = %shared.location, "Hearing the other instances again; reading everything again.");
        // Nobody subscribed yet is fine.
        let _ = shared.signals.send(Signal::Resync);
    }
}

/// Connects and sends `LISTEN`, within the timeout.
async fn listen(config: &Config, shared: &Shared) -> Result<Listening, StoreError> {
    let (client, mut connection) = tokio::time::timeout(shared.timeout, config.connect(tls()))
        .await
        .map_err(|_| shared.timed_out())?
        .map_err(|e| shared.error(&e))?;
    let (tx, notes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "The listening connection ended.");
                    return;
                }
            }
        }
    });
    let live = Listening {
        client,
        notes,
        task,
    };
    match tokio::time::timeout(
        shared.timeout,
        live.client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    {
        Ok(Ok(())) => Ok(live),
        Ok(Err(e)) => Err(shared.error(&e)),
        Err(_) => Err(shared.timed_out()),
    }
}

/// Hands on what is heard until the connection is lost.
async fn follow(shared: &Shared, live: &mut Listening) {
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    loop {
        tokio::select! {
            n = live.notes.recv() => match n {
                Some(n) => heard(shared, n.payload()).await,
                None => return,
            },
            _ = ping.tick() => {
                let answer = tokio::time::timeout(shared.timeout, live.client.batch_execute("SELECT 1"));
                if !matches!(answer.await, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

async fn heard(shared: &Shared, payload: &str) {
    let Ok(note) = serde_json::from_str::<Note>(payload) else {
        tracing::debug!(payload, "A notification the store does not know; ignored.");
        return;
    };
    let bsn = note.bsn.as_deref().and_then(|b| Bsn::parse(b).ok());
    if note.signal == APPLICATIONS {
        match bsn {
            Some(bsn) => shared.lists.forget(&bsn).await,
            None => shared.lists.forget_all(),
        }
        return;
    }
    if note.origin == shared.origin {
        return;
    }
    let signal = match (note.signal.as_str(), bsn) {
        (REGISTRATIONS, _) => Signal::Registrations,
        (RELOAD, _) => Signal::Reload,
        (SUBJECT, Some(bsn)) => Signal::Subject(bsn),
        (RESYNC, _) => Signal::Resync,
        _ => {
            tracing::debug!(signal = %note.signal, from = %note.instance, "A signal the store does not know; ignored.");
            return;
        }
    };
    tracing::debug!(signal = ?signal, from = %note.instance, "Heard another instance.");
    // Nobody subscribed is fine.
    let _ = shared.signals.send(signal);
}
