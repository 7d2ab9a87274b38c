//! The applications outbox, whatever keeps it: [`Application`] as stored, and [`Outbox`], the
//! operations a backend implements. An application is stored once per actor and
//! `Idempotency-Key`, together with its `application.submit` record (one transaction: both or
//! neither); the delivery worker claims the due ones and records each outcome; the dossier's
//! `zaken` section lists a citizen's latest.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use super::StoreError;
use super::record::AccessRecord;
use crate::bsn::Bsn;

/// A citizen's application for a service, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Application {
    pub id: String,
    pub service: String,
    pub organisation: String,
    #[serde(skip)]
    pub bsn: String,
    #[serde(skip)]
    pub actor: String,
    #[serde(skip)]
    pub idempotency_key: String,
    pub data: serde_json::Value,
    /// `received`, then `delivered`, `rejected` or `failed`.
    pub status: String,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub attempts: u32,
    #[serde(skip)]
    pub next_attempt_at: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The applications outbox. Every write is durable before it returns.
pub trait Outbox: Send + Sync {
    /// Stores a new application together with its `application.submit` record `submit` (one
    /// transaction: both or neither), or returns the one already stored under the same actor
    /// and idempotency key (`false`), writing its record now when it has none. The backend
    /// fills in the record's subject and details from the stored application (with
    /// `submit_details`, this module's, so every backend writes the same record).
    fn insert_application(
        &self,
        a: Application,
        submit: AccessRecord,
    ) -> BoxFuture<'_, Result<(Application, bool), StoreError>>;

    fn application(&self, id: String) -> BoxFuture<'_, Result<Option<Application>, StoreError>>;

    /// A citizen's applications for the dossier's `zaken` section: the open ones (`received`)
    /// first, newest first, then the latest others; at most `limit` in all, however many
    /// applications the citizen has.
    fn applications_of(
        &self,
        bsn: Bsn,
        limit: u32,
    ) -> BoxFuture<'_, Result<Arc<[Application]>, StoreError>>;

    /// Applications waiting for (another) delivery attempt now, the longest waiting first.
    ///
    /// On a store several instances share, this *claims* them: each one returned is this
    /// instance's for the store's `lease` (no other instance is given it meanwhile, and two
    /// instances asking at once are given different ones), until
    /// [`Outbox::update_application`] records its outcome and gives the lease up. An instance
    /// that dies holding one only delays it: once the lease has run out, any instance is given
    /// it again (delivery is at least once; the application id is the idempotency key). A
    /// store of one process (SQLite) needs no lease: its one delivery worker asks again only
    /// after the outcomes of what it was given.
    fn due_applications(&self, limit: u32) -> BoxFuture<'_, Result<Vec<Application>, StoreError>>;

    /// Records a delivery outcome (status, reference or reason, attempts, next attempt), and
    /// gives up the claim. An application that is no longer `received` (another instance
    /// finished it after this one's lease ran out) is left as it is.
    fn update_application(&self, a: Application) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The `application.submit` record of `stored`, as the chain keeps it: `submit` with the
/// application's subject, and its id and service as details. `resent` marks a record written
/// when the citizen sent an application again whose first submission left none (a store from
/// before the two were one transaction).
pub(super) fn submit_details(
    mut submit: AccessRecord,
    stored: &Application,
    resent: bool,
) -> AccessRecord {
    submit.bsn = Bsn::parse(&stored.bsn).ok();
    let mut details = serde_json::json!({"application": stored.id, "service": stored.service});
    if resent {
        details["resent"] = serde_json::Value::Bool(true);
    }
    submit.details = Some(details);
    submit
}

/// Merges a citizen's newest open applications and their latest ones (each newest first, each
/// at most `limit`) into the `zaken` list: the open ones first, then the others, `limit` in
/// all.
pub(super) fn zaken(
    mut open: Vec<Application>,
    latest: Vec<Application>,
    limit: u32,
) -> Arc<[Application]> {
    // The open ones among the latest are already listed (they are among the newest open ones).
    open.extend(latest.into_iter().filter(|a| a.status != "received"));
    open.truncate(limit as usize);
    open.into()
}
