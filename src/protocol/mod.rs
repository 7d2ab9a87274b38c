//! Speaking to organisations: the SOAP envelope and the REST request (one builder each, used by
//! source calls and by delivery alike), request templates, and the construction of HTTP and
//! TLS clients and of the gateway's server TLS. No mapping and no workflow: callers hand in
//! what to send and get a request back.

pub mod certs;
pub mod client;
pub mod rest;
pub mod soap;
pub mod template;
pub mod tls;
