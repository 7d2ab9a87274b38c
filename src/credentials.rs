//! Partner and operator credentials.
//!
//! A partner proves who it is with an API key (we keep only its SHA-256) or with a client
//! certificate whose subject serialNumber holds its OIN (PKIoverheid style, over mTLS). Either
//! way the credential is scoped to one organisation: a partner can only touch that
//! organisation's adapters. Operators use a separate admin token for `/admin/*`.

use axum::http::HeaderMap;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::model::GatewayConfig;

/// The OIN from a client certificate, put on each request of a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub oin: Option<String>,
}

/// The subject serialNumber (2.5.4.5) of a DER certificate: where PKIoverheid puts the OIN.
pub fn oin_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("no partner credential: send `X-Api-Key`, or a client certificate with your OIN")]
    Missing,
    #[error("no admin token: send `Authorization: Bearer <admin token>`")]
    MissingAdmin,
    #[error("the credential is not known")]
    Unknown,
    #[error("`/admin` is closed: no admin token is configured")]
    AdminClosed,
}

/// SHA-256 in hex.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn same(a: &str, b: &str) -> bool {
    // Constant time over equal lengths; hashes always have the same length.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
            == 0
}

/// Which organisation a partner request acts for.
pub fn partner(
    cfg: &GatewayConfig,
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
) -> Result<String, CredentialError> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let h = sha256_hex(key.trim());
        return cfg
            .partners
            .iter()
            .find(|p| p.api_key_sha256.as_deref().is_some_and(|k| same(&h, k)))
            .map(|p| p.organisation.clone())
            .ok_or(CredentialError::Unknown);
    }
    if let Some(oin) = cert.and_then(|c| c.oin.as_deref()) {
        return cfg
            .partners
            .iter()
            .find(|p| p.client_cert_oin.as_deref() == Some(oin))
            .map(|p| p.organisation.clone())
            .ok_or(CredentialError::Unknown);
    }
    Err(CredentialError::Missing)
}

/// Checks the operator's admin token.
pub fn admin(cfg: &GatewayConfig, headers: &HeaderMap) -> Result<(), CredentialError> {
    let expected = cfg
        .admin
        .token_sha256
        .as_deref()
        .ok_or(CredentialError::AdminClosed)?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(CredentialError::MissingAdmin)?;
    if same(&sha256_hex(token.trim()), expected) {
        Ok(())
    } else {
        Err(CredentialError::Unknown)
    }
}

/// A new random secret (48 bytes, URL-safe base64) and its SHA-256 for the config.
pub fn new_secret() -> (String, String) {
    use base64::Engine;
    let mut b = [0u8; 48];
    rand_core::OsRng.fill_bytes(&mut b);
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let hash = sha256_hex(&key);
    (key, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PartnerCredential;

    fn cfg() -> (GatewayConfig, String) {
        let (key, hash) = new_secret();
        let mut c = GatewayConfig::default();
        c.partners.push(PartnerCredential {
            organisation: "uwv".into(),
            description: String::new(),
            api_key_sha256: Some(hash),
            client_cert_oin: None,
        });
        c.partners.push(PartnerCredential {
            organisation: "svb".into(),
            description: String::new(),
            api_key_sha256: None,
            client_cert_oin: Some("00000001002312467000".into()),
        });
        (c, key)
    }

    #[test]
    fn keys_and_certificates_map_to_one_organisation() {
        let (c, key) = cfg();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", key.parse().unwrap());
        assert_eq!(partner(&c, &h, None).unwrap(), "uwv");
        h.insert("x-api-key", "wrong".parse().unwrap());
        assert_eq!(partner(&c, &h, None), Err(CredentialError::Unknown));
        let cert = ClientCert {
            oin: Some("00000001002312467000".into()),
        };
        assert_eq!(partner(&c, &HeaderMap::new(), Some(&cert)).unwrap(), "svb");
        assert_eq!(
            partner(&c, &HeaderMap::new(), None),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn admin_token() {
        let (mut c, _) = cfg();
        assert_eq!(
            admin(&c, &HeaderMap::new()),
            Err(CredentialError::AdminClosed)
        );
        let (token, hash) = new_secret();
        c.admin.token_sha256 = Some(hash);
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(admin(&c, &h).is_ok());
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(admin(&c, &h), Err(CredentialError::Unknown));
        let missing = admin(&c, &HeaderMap::new()).unwrap_err();
        assert_eq!(missing, CredentialError::MissingAdmin);
        assert!(
            missing.to_string().contains("Authorization: Bearer"),
            "{missing}"
        );
    }
}
