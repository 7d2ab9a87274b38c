//! Configuration: loading, validating and compiling `config/*.yaml` and `adapters/*.yaml`.

pub mod model;
pub mod yaml;
