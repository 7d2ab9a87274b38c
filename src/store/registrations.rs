//! Partner adapter registrations, whatever keeps them: [`Registrations`], the operations a
//! backend implements. A registration ([`Registration`]: the descriptor a partner sent, its
//! hash, who changed it and when) is validated and compiled by [`crate::config`]; the store only
//! keeps it, so that a restart (or a reload) serves the same adapters.

use futures::future::BoxFuture;

use super::StoreError;
use crate::config::compile::Registration;

/// The stored registrations. Every write is durable before it returns.
pub trait Registrations: Send + Sync {
    /// Partner adapter registrations, by id.
    fn registrations(&self) -> BoxFuture<'_, Result<Vec<Registration>, StoreError>>;

    /// Stores a registration, or replaces the one with its id *of the same organisation*:
    /// false, and nothing written, when the id is another organisation's (two instances of a
    /// cluster may be asked for the same id at once; the store decides, atomically).
    fn put_registration(&self, r: Registration) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Removes registration `id` of `organisation`; true when there was one (a backend that
    /// asks again after losing its connection counts a row already gone as removed: its first
    /// try may have committed with only the answer lost).
    fn delete_registration(
        &self,
        id: String,
        organisation: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
}
