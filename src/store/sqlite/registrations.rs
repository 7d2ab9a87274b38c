//! Partner adapter registrations in SQLite: the `registrations` table, one row per adapter id.

use futures::future::BoxFuture;
use rusqlite::params;
use tokio::sync::oneshot;

use super::SqliteStore;
use super::writer::Work;
use crate::config::compile::Registration;
use crate::store::StoreError;
use crate::store::registrations::Registrations;

/// Stores `r`, or replaces the registration of the same id and organisation; false (nothing
/// written) when the id is another organisation's.
pub(super) fn put(tx: &rusqlite::Transaction<'_>, r: &Registration) -> rusqlite::Result<bool> {
    tx.execute(
        "INSERT INTO registrations (id, organisation, descriptor, sha256, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET descriptor = ?3, sha256 = ?4,
             updated_at = ?5, updated_by = ?6
         WHERE registrations.organisation = ?2",
        params![
            r.id,
            r.organisation,
            r.descriptor,
            r.sha256,
            r.updated_at,
            r.updated_by
        ],
    )
    .map(|n| n > 0)
}

/// Removes registration `id` of `organisation`; true when there was one.
pub(super) fn delete(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    organisation: &str,
) -> rusqlite::Result<bool> {
    tx.execute(
        "DELETE FROM registrations WHERE id = ?1 AND organisation = ?2",
        [id, organisation],
    )
    .map(|n| n > 0)
}

impl Registrations for SqliteStore {
    fn registrations(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, organisation, descriptor, sha256, updated_at, updated_by FROM registrations ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Registration {
                    id: r.get(0)?,
                    organisation: r.get(1)?,
                    descriptor: r.get(2)?,
                    sha256: r.get(3)?,
                    updated_at: r.get(4)?,
                    updated_by: r.get(5)?,
                })
            })?;
            rows.collect()
        }))
    }

    fn put_registration(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (done, wait) = oneshot::channel();
        Box::pin(self.write(Work::PutRegistration(Box::new(r), done), wait))
    }

    fn delete_registration(
        &self,
        id: String,
        organisation: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (done, wait) = oneshot::channel();
        Box::pin(self.write(Work::DeleteRegistration(id, organisation, done), wait))
    }
}
