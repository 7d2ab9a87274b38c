//! PEM files named by the configuration: read with a message that names the file and what is
//! wrong with it, and the client certificates' validity for `check`'s warnings.
//!
//! A client certificate and its key may sit in one file (`client_cert` only) or in two.

use std::path::Path;

use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How long before expiry `check` starts warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A client certificate chain and its private key, checked to belong together.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Certificate chain followed by the key, as read (for the adapter's fingerprint).
    pub pem: Vec<u8>,
    /// `notAfter` of the leaf certificate.
    pub not_after: Option<DateTime<Utc>>,
}

/// Reads the client certificate (and its key, from `key` or else from the same file).
pub fn client_identity(cert: &Path, key: Option<&Path>) -> Result<ClientIdentity, String> {
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not valid PEM ({e})", cert.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "{}: holds no certificate (expected a `-----BEGIN CERTIFICATE-----` block)",
            cert.display()
        ));
    };
    let not_after = not_after(leaf.as_ref()).ok_or_else(|| {
        format!(
            "{}: the first certificate is not valid X.509",
            cert.display()
        )
    })?;
    let (key_pem, key_file) = match key {
        Some(k) => (read(k)?, k),
        None => (cert_pem.clone(), cert),
    };
    let parsed = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(match key {
                Some(_) => format!(
                    "{}: holds no private key (expected PKCS#8, PKCS#1 or SEC1 PEM: `-----BEGIN PRIVATE KEY-----`)",
                    key_file.display()
                ),
                None => format!(
                    "{}: holds the certificate but no private key; add the key to the file, or name it with `client_key`",
                    cert.display()
                ),
            });
        }
        Err(e) => {
            return Err(format!(
                "{}: not a valid private key ({e})",
                key_file.display()
            ));
        }
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    match rustls::sign::CertifiedKey::from_der(certs.clone(), parsed.clone_key(), &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(format!(
                "{}: the private key does not belong to the certificate in {}",
                key_file.display(),
                cert.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "{}: the private key cannot be used ({e})",
                key_file.display()
            ));
        }
    }
    let mut pem = cert_pem;
    if key.is_some() {
        pem.push(b'\n');
        pem.extend_from_slice(&key_pem);
    }
    Ok(ClientIdentity {
        chain: certs,
        key: parsed,
        pem,
        not_after: Some(not_after),
    })
}

/// Reads a CA bundle: every certificate in it, or an error naming the file.
pub fn ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not valid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A warning for a certificate that expired or expires within [`EXPIRY_WARNING_DAYS`].
pub fn expiry_warning(not_after: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let left = not_after - now;
    if left <= chrono::Duration::zero() {
        Some(format!(
            "the client certificate expired on {}; sources will refuse it",
            not_after.format("%Y-%m-%d")
        ))
    } else if left < chrono::Duration::days(EXPIRY_WARNING_DAYS) {
        Some(format!(
            "the client certificate expires on {} ({} days from now)",
            not_after.format("%Y-%m-%d"),
            left.num_days()
        ))
    } else {
        None
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_and_key(days: i64) -> (String, String) {
        use chrono::Datelike;
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".into()]).unwrap();
        let ymd = |d: DateTime<Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
        params.not_before = ymd(Utc::now() - chrono::Duration::days(400));
        params.not_after = ymd(Utc::now() + chrono::Duration::days(days));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_key_in_one_file_or_two() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_and_key(200);
        std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), &key).unwrap();
        std::fs::write(dir.path().join("both.pem"), format!("{cert}{key}")).unwrap();
        let two = client_identity(&dir.path().join("c.pem"), Some(&dir.path().join("k.pem")));
        assert!(two.is_ok(), "{two:?}");
        let one = client_identity(&dir.path().join("both.pem"), None);
        assert!(one.is_ok(), "{one:?}");
        let one = one.unwrap();
        assert_eq!(one.chain.len(), 1);
        let expected = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        assert_eq!(one.key.secret_der(), expected.secret_der());
        let e = client_identity(&dir.path().join("c.pem"), None).unwrap_err();
        assert!(e.contains("c.pem") && e.contains("no private key"), "{e}");
    }

    #[test]
    fn bad_pem_names_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = cert_and_key(200);
        std::fs::write(dir.path().join("leeg.pem"), "niets hier\n").unwrap();
        std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
        std::fs::write(
            dir.path().join("kapot.pem"),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = ca_bundle(&dir.path().join("leeg.pem")).unwrap_err();
        assert!(
            e.contains("leeg.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = ca_bundle(&dir.path().join("kapot.pem")).unwrap_err();
        assert!(
            e.contains("kapot.pem") && e.contains("not valid PEM"),
            "{e}"
        );
        let e = client_identity(
            &dir.path().join("c.pem"),
            Some(&dir.path().join("leeg.pem")),
        )
        .unwrap_err();
        assert!(
            e.contains("leeg.pem") && e.contains("no private key"),
            "{e}"
        );
        let (_, other_key) = cert_and_key(200);
        std::fs::write(dir.path().join("ander.pem"), other_key).unwrap();
        let e = client_identity(
            &dir.path().join("c.pem"),
            Some(&dir.path().join("ander.pem")),
        )
        .unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = client_identity(&dir.path().join("weg.pem"), None).unwrap_err();
        assert!(e.contains("weg.pem") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn expiry_is_warned_about_30_days_ahead() {
        let now = Utc::now();
        assert!(expiry_warning(now + chrono::Duration::days(31), now).is_none());
        let w = expiry_warning(now + chrono::Duration::days(10), now).unwrap();
        assert!(
            w.contains("expires on") && w.contains("days from now"),
            "{w}"
        );
        let w = expiry_warning(now - chrono::Duration::days(1), now).unwrap();
        assert!(w.contains("expired on"), "{w}");
        let (cert, key) = cert_and_key(5);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("both.pem"), format!("{cert}{key}")).unwrap();
        let id = client_identity(&dir.path().join("both.pem"), None).unwrap();
        assert!(expiry_warning(id.not_after.unwrap(), now).is_some());
    }
}
