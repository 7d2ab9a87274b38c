#![forbid(unsafe_code)]
//! ketenportaal: an integration gateway for Dutch government chain portals.

pub mod bsn;
pub mod config;
pub mod mapping;
