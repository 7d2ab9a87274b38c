//! Integration tests: the real gateway on a loopback port, real agency servers on loopback.

mod applications;
mod audit;
mod check;
mod coalescing;
mod demo;
mod docs;
mod dossier;
mod durability;
mod helpers;
mod hostile;
mod inflight;
mod on_postgres;
mod openapi;
mod partners;
mod portal;
mod registrations;
mod reload_load;
mod resilience;
mod sealed;
// A real PostgreSQL and a real Redis (plain files other test binaries include too).
#[path = "../support/postgres.rs"]
mod postgres;
#[path = "../support/redis.rs"]
mod redis;
mod shared_cache;
mod store;
mod themes;
mod tls;
mod yaml_files;
