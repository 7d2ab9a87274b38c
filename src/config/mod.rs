//! Configuration: loading, validating and compiling `config/*.yaml` and `adapters/*.yaml`.

pub mod compile;
pub mod endpoint;
pub mod load;
pub mod yaml;

pub use compile::Config;
pub use load::{ConfigError, ConfigErrors};
