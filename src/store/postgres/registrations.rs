//! Partner adapter registrations in PostgreSQL: the `registrations` table, one row per adapter
//! id. Each change tells every instance in its own transaction (the notification is delivered
//! on commit, and only if it commits), so that all of them serve the same adapters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;

use super::{CHANNEL, PgStore, listener};
use crate::config::compile::Registration;
use crate::store::StoreError;
use crate::store::registrations::Registrations;

/// Stores a registration, or replaces the one of the same id *and organisation*: no row (and no
/// notification) when the id is another organisation's.
const PUT: &str = "WITH put AS (
         INSERT INTO registrations (id, organisation, descriptor, sha256, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET descriptor = EXCLUDED.descriptor,
             sha256 = EXCLUDED.sha256, updated_at = EXCLUDED.updated_at,
             updated_by = EXCLUDED.updated_by
         WHERE registrations.organisation = EXCLUDED.organisation
         RETURNING id)
     SELECT pg_notify($7, $8) FROM put";

/// Removes registration `$1` of organisation `$2`.
const DELETE: &str = "WITH gone AS (
         DELETE FROM registrations WHERE id = $1 AND organisation = $2 RETURNING id)
     SELECT pg_notify($3, $4) FROM gone";

impl Registrations for PgStore {
    fn registrations(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(self.with_client(|c| {
            Box::pin(async move {
                c.query(
                    &c.prepare_cached(
                        "SELECT id, organisation, descriptor, sha256, updated_at, updated_by
                     FROM registrations ORDER BY id",
                    )
                    .await?,
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Registration {
                        id: r.try_get(0)?,
                        organisation: r.try_get(1)?,
                        descriptor: r.try_get(2)?,
                        sha256: r.try_get(3)?,
                        updated_at: r.try_get(4)?,
                        updated_by: r.try_get(5)?,
                    })
                })
                .collect()
            })
        }))
    }

    /// Asked again on a new connection when the one it had was lost (PostgreSQL restarting):
    /// the row it writes is the same each time, so a first try that did commit makes the
    /// repeat an update to the same values, and the same answer.
    fn put_registration(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>> {
        let note = listener::note(self.shared(), listener::REGISTRATIONS, None);
        let values = Arc::new((r, note));
        Box::pin(self.counted(self.repeatable(move |c| {
            let v = values.clone();
            Box::pin(async move {
                let (r, note) = &*v;
                let rows = c
                    .query(
                        &c.prepare_cached(PUT).await?,
                        &[
                            &r.id,
                            &r.organisation,
                            &r.descriptor,
                            &r.sha256,
                            &r.updated_at,
                            &r.updated_by,
                            &CHANNEL,
                            note,
                        ],
                    )
                    .await?;
                Ok(!rows.is_empty())
            })
        })))
    }

    /// Asked again on a new connection when the one it had was lost. A first try may have
    /// committed and lost only its answer, so a repeat that finds no row counts as removed:
    /// the registration is gone either way (the caller found it before it asked).
    fn delete_registration(
        &self,
        id: String,
        organisation: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let note = listener::note(self.shared(), listener::REGISTRATIONS, None);
        let values = Arc::new((id, organisation, note));
        let tried = Arc::new(AtomicBool::new(false));
        Box::pin(self.counted(self.repeatable(move |c| {
            let v = values.clone();
            let repeat = tried.swap(true, Ordering::Relaxed);
            Box::pin(async move {
                let (id, organisation, note) = &*v;
                let rows = c
                    .query(
                        &c.prepare_cached(DELETE).await?,
                        &[id, organisation, &CHANNEL, note],
                    )
                    .await?;
                Ok(repeat || !rows.is_empty())
            })
        })))
    }
}
