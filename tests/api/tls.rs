//! rustls everywhere: TLS termination on the gateway, mTLS towards a source, with certificates
//! generated at test time (a PKIoverheid-style client certificate with the OIN in the subject
//! serialNumber).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use ketenportaal::adapter::{AdapterClient, SourceError};
use ketenportaal::bsn::Bsn;
use ketenportaal::config::Config;
use ketenportaal::gateway::Gateway;
use ketenportaal::server::listen::{self, ListenOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const OIN: &str = "00000001234567890000";
const TOESLAGEN_PATH: &str = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (cert PEM, key PEM) signed by `ca`.
fn leaf(ca: &Ca, cn: &str, server: bool, oin: Option<&str>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(if server {
        vec!["localhost".to_string()]
    } else {
        vec![]
    })
    .unwrap();
    if server {
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Ketenportaal Testorganisatie");
    if let Some(oin) = oin {
        // X.520 serialNumber (2.5.4.5), where PKIoverheid puts the OIN.
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 5]), oin);
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

/// An agency that requires a client certificate issued by `client_ca`.
async fn mtls_agency(server: &(String, String), client_ca: &Ca) -> String {
    let body = std::fs::read_to_string(
        crate::helpers::root().join("fixtures/agencies/toeslagen/999993653.json"),
    )
    .unwrap();
    let app = Router::new().route(
        TOESLAGEN_PATH,
        post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    mtls_server(server, client_ca, app, &[]).await
}

/// Serves `app` over TLS with `server`'s certificate, to clients with a certificate issued by
/// `client_ca` only, offering the `alpn` protocols (none: HTTP/1.1); returns its base URL.
async fn mtls_server(
    server: &(String, String),
    client_ca: &Ca,
    app: Router,
    alpn: &[&[u8]],
) -> String {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&client_ca.pem) {
        roots.add(c).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&server.0),
            PrivateKeyDer::from_pem_slice(server.1.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let opts = ListenOptions {
        tls: Some(Arc::new(cfg)),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        max_headers: 64,
        drain_timeout: Duration::from_secs(1),
    };
    tokio::spawn(listen::serve(listener, app, opts, std::future::pending()));
    url
}

fn gateway_yaml(base_url: &str, tls: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
adapters: [adapters]
{tls}
organisations:
  belastingdienst: {{name: Belastingdienst, oin: "00000001003214369000", base_url: "{base_url}"}}
sections:
  toeslagen: {{kind: list, key: [soort, jaar]}}
  inkomen: {{kind: list, key: [jaar, soort]}}
views:
  klant: {{audience: citizen, sections: {{toeslagen: ["*"], inkomen: ["*"]}}}}
audit: {{pseudonym_key: "test-only-pseudonym-key-0123456789abcdef"}}
"#
    )
}

/// Writes a config whose `toeslagen` adapter uses `adapter_tls`, and loads it.
fn config(dir: &Path, base_url: &str, adapter_tls: &str) -> Result<Config, String> {
    std::fs::create_dir_all(dir.join("adapters")).unwrap();
    write(dir, "gateway.yaml", &gateway_yaml(base_url, ""));
    let adapter =
        std::fs::read_to_string(crate::helpers::root().join("adapters/toeslagen.yaml")).unwrap();
    write(
        &dir.join("adapters"),
        "toeslagen.yaml",
        &format!("{adapter}\n{adapter_tls}"),
    );
    Config::load(&dir.join("gateway.yaml")).map_err(|e| e.to_string())
}

async fn run(c: &Config) -> Result<ketenportaal::adapter::SourceAnswer, SourceError> {
    let spec = c.adapters["toeslagen"].clone();
    let shared = ketenportaal::protocol::client::Outbound::shared().unwrap();
    let client = AdapterClient::new(spec, &shared);
    Gateway::run_adapter(&client, Bsn::parse("999993653").unwrap())
        .await
        .0
}

#[tokio::test]
async fn mtls_to_a_source_works_with_the_right_certificate_and_fails_clearly_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ca("Test PKIoverheid Private Services CA");
    let server = leaf(
        &pki,
        "toeslagen.belastingdienst.test",
        true,
        Some("00000001003214369000"),
    );
    let client = leaf(&pki, "ketenportaal.test", false, Some(OIN));
    write(d, "ca.pem", &pki.pem);
    write(d, "gw.pem", &client.0);
    write(d, "gw.key", &client.1);
    let other = ca("Some Other CA");
    write(d, "other-ca.pem", &other.pem);
    let url = mtls_agency(&server, &pki).await;

    // The right CA and client certificate.
    let tls = "tls: {ca: ca.pem, client_cert: gw.pem, client_key: gw.key}";
    let c = config(d, &url, tls).unwrap();
    let a = run(&c).await.unwrap();
    assert_eq!(a.sections["toeslagen"].len(), 2);

    // A CA that did not issue the source's certificate.
    let c = config(
        d,
        &url,
        "tls: {ca: other-ca.pem, client_cert: gw.pem, client_key: gw.key}",
    )
    .unwrap();
    match run(&c).await {
        Err(e @ SourceError::Tls(_)) => assert_eq!(
            e.to_string(),
            "TLS: the source's certificate is not issued by a CA this adapter trusts (`tls.ca`)"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // No client certificate: the source refuses the handshake, and says so.
    let c = config(d, &url, "tls: {ca: ca.pem}").unwrap();
    match run(&c).await {
        Err(e @ SourceError::Tls(_)) => assert_eq!(
            e.to_string(),
            "TLS: the server refused our client certificate (no client certificate sent)"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // A client certificate from another CA is refused too.
    let stranger = leaf(&other, "indringer.test", false, Some(OIN));
    write(d, "stranger.pem", &stranger.0);
    write(d, "stranger.key", &stranger.1);
    let c = config(
        d,
        &url,
        "tls: {ca: ca.pem, client_cert: stranger.pem, client_key: stranger.key}",
    )
    .unwrap();
    match run(&c).await {
        Err(SourceError::Tls(m)) => {
            assert!(
                m.starts_with("the server refused our client certificate"),
                "{m}"
            )
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // Bad TLS settings are config errors, not runtime surprises.
    let e = config(d, &url, "tls: {ca: ontbreekt.pem}").unwrap_err();
    assert!(
        e.contains("cannot read") && e.contains("ontbreekt.pem"),
        "{e}"
    );
    // A certificate without its key names the file and says how to give the key.
    let e = config(d, &url, "tls: {ca: ca.pem, client_cert: gw.pem}").unwrap_err();
    assert!(e.contains("gw.pem") && e.contains("no private key"), "{e}");
    let e = config(d, &url, "tls: {ca: ca.pem, client_key: gw.key}").unwrap_err();
    assert!(e.contains("without `tls.client_cert`"), "{e}");
    // Certificate and key in one file work as well as two files.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(d.join("gw.pem")).unwrap(),
        std::fs::read_to_string(d.join("gw.key")).unwrap()
    );
    write(d, "gw-both.pem", &both);
    let c = config(d, &url, "tls: {ca: ca.pem, client_cert: gw-both.pem}").unwrap();
    assert!(run(&c).await.is_ok());
    // A key that is not the certificate's.
    let e = config(
        d,
        &url,
        "tls: {ca: ca.pem, client_cert: gw.pem, client_key: stranger.key}",
    )
    .unwrap_err();
    assert!(e.contains("does not belong"), "{e}");
    write(d, "junk.pem", "not a certificate");
    let e = config(d, &url, "tls: {ca: junk.pem}").unwrap_err();
    assert!(e.contains("junk.pem"), "{e}");
}

#[tokio::test]
async fn the_gateway_terminates_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ca("Test CA");
    let server = leaf(&pki, "ketenportaal.test", true, Some(OIN));
    write(d, "server.pem", &server.0);
    write(d, "server.key", &server.1);
    std::fs::create_dir_all(d.join("adapters")).unwrap();
    let adapter =
        std::fs::read_to_string(crate::helpers::root().join("adapters/toeslagen.yaml")).unwrap();
    write(&d.join("adapters"), "toeslagen.yaml", &adapter);
    write(
        d,
        "gateway.yaml",
        &gateway_yaml(
            "http://127.0.0.1:9",
            "tls: {cert: server.pem, key: server.key}",
        ),
    );
    let state = built(d).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(ketenportaal::server::serve(
        listener,
        state,
        std::future::pending(),
    ));

    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(pki.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["api-version"], "1.0.0");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );
    // A client that does not trust the CA refuses the server.
    assert!(
        reqwest::get(format!("https://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );

    // A bad server certificate is a config error.
    write(
        d,
        "gateway.yaml",
        &gateway_yaml(
            "http://127.0.0.1:9",
            "tls: {cert: server.pem, key: ontbreekt.key}",
        ),
    );
    let e = Config::load(&d.join("gateway.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ontbreekt.key"), "{e}");
}

#[tokio::test]
async fn a_partner_authenticates_with_the_oin_in_its_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ca("Test PKIoverheid CA");
    let server = leaf(&pki, "ketenportaal.test", true, None);
    write(d, "server.pem", &server.0);
    write(d, "server.key", &server.1);
    write(d, "partners-ca.pem", &pki.pem);
    std::fs::create_dir_all(d.join("adapters")).unwrap();
    let adapter =
        std::fs::read_to_string(crate::helpers::root().join("adapters/toeslagen.yaml")).unwrap();
    write(&d.join("adapters"), "toeslagen.yaml", &adapter);
    let belastingdienst_oin = "00000001003214369000";
    let yaml = gateway_yaml(
        "http://127.0.0.1:9",
        &format!(
            "tls: {{cert: server.pem, key: server.key, client_ca: partners-ca.pem}}\npartners:\n  - {{organisation: belastingdienst, client_cert_oin: \"{belastingdienst_oin}\"}}"
        ),
    );
    write(d, "gateway.yaml", &yaml);
    let state = built(d).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(ketenportaal::server::serve(
        listener,
        state,
        std::future::pending(),
    ));

    let client_with = |cert: Option<(String, String)>| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(pki.pem.as_bytes()).unwrap());
        if let Some((c, k)) = cert {
            b = b.identity(reqwest::Identity::from_pem(format!("{c}\n{k}").as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let partner = client_with(Some(leaf(
        &pki,
        "toeslagen-beheer",
        false,
        Some(belastingdienst_oin),
    )));
    let r = partner
        .get(format!("{url}/v1/adapters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["organisation"], "belastingdienst");
    assert_eq!(v["adapters"][0]["id"], "toeslagen");

    let stranger = client_with(Some(leaf(&pki, "iemand-anders", false, Some(OIN))));
    assert_eq!(
        stranger
            .get(format!("{url}/v1/adapters"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Clients without a certificate (portals, browsers) are still served.
    let anonymous = client_with(None);
    assert_eq!(
        anonymous
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anonymous
            .get(format!("{url}/v1/adapters"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// The app for `d/gateway.yaml`, built as `serve` builds it (a store in `d`).
async fn built(d: &std::path::Path) -> Arc<ketenportaal::app::App> {
    let config = Config::load(&d.join("gateway.yaml")).unwrap();
    ketenportaal::app::App::build(ketenportaal::app::Launch {
        config,
        env: Arc::new(|k: &str| std::env::var(k).ok()),
        store: Some(ketenportaal::store::StoreLocation::Sqlite(
            d.join("store.sqlite"),
        )),
        watch: true,
        audit: ketenportaal::app::AuditMode::Durable,
    })
    .await
    .unwrap()
}

/// A delivery goes out with its organisation's `tls:`: only its CAs trusted, the gateway's
/// client certificate presented. The municipality here accepts only clients with a certificate
/// from its own CA, under a server certificate from a CA the system does not trust, so the
/// application arrives only over the organisation's own client; it offers HTTP/2, and gets it.
#[tokio::test]
async fn a_delivery_uses_its_organisations_tls_and_client_certificate() {
    use crate::helpers::{CITIZEN, Options, spawn_app_with};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let pki = ca("Test PKIoverheid Private Services CA");
    let server_ca = ca("Test Gemeente Server CA");
    let server = leaf(&server_ca, "zaken.gemeente.test", true, None);
    let (cert, key) = leaf(&pki, "ketenportaal-test", false, Some(OIN));
    write(&d, "server-ca.pem", &server_ca.pem);
    write(&d, "client.pem", &cert);
    write(&d, "client.key", &key);
    let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrived.clone();
    let zaken = Router::new().route(
        "/zaken",
        post(
            move |version: axum::http::Version, axum::Json(v): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((version, v));
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({"identificatie": "ZAAK-MTLS-1"})),
                    )
                }
            },
        ),
    );
    let url = mtls_server(&server, &pki, zaken, &[b"h2", b"http/1.1"]).await;
    let at = |f: &str| Some(d.join(f).to_string_lossy().into_owned());
    let tls = ketenportaal::model::AdapterTls {
        ca: at("server-ca.pem"),
        client_cert: at("client.pem"),
        client_key: at("client.key"),
    };
    let (client, _) = ketenportaal::protocol::client::source_client(Some(&tls), &d, None).unwrap();
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(move |c| {
            let svc = c.gateway.services.get_mut("bijstand-aanvragen").unwrap();
            let org = svc.organisation.clone();
            svc.application.as_mut().unwrap().delivery.endpoint = format!("{url}/zaken");
            // As `organisations.<id>.tls` in the file: compiled into its client (the app
            // compiles its config again when it layers registrations over it).
            c.gateway.organisations.get_mut(&org).unwrap().tls = Some(tls.clone());
            std::sync::Arc::make_mut(&mut c.compiled.organisation_clients)
                .insert(org, client.clone());
        })),
        ..Options::default()
    })
    .await;
    let token = app.citizen_token(CITIZEN);
    let body = serde_json::json!({"service": "bijstand-aanvragen", "data": {"gewenste_ingangsdatum": "2027-01-16", "woonsituatie": "alleenstaand"}});
    let r = app.apply(&token, Some("mtls-1"), body).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v = app.settled(&token, &location).await;
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(v["reference"], "ZAAK-MTLS-1");
    let arrived = arrived.lock().unwrap();
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].0, axum::http::Version::HTTP_2);
    assert_eq!(arrived[0].1["rollen"][0]["inpBsn"], CITIZEN);
}

/// A TCP relay in front of `to` (`host:port`) that counts the connections made through it;
/// returns its address and the count.
async fn counting_relay(to: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = made.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (at, made)
}

/// Two adapters of one organisation on one host, with the organisation's `tls:`, share one
/// client: the second call goes over the connection (and TLS session) the first one opened.
/// An adapter with a client certificate of its own keeps a client, and connections, apart.
#[tokio::test]
async fn an_organisations_adapters_on_one_host_share_their_connections() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ca("Test PKIoverheid Private Services CA");
    let server = leaf(&pki, "toeslagen.belastingdienst.test", true, None);
    for (name, cn) in [
        ("gw", "ketenportaal.test"),
        ("other", "ketenportaal-2.test"),
    ] {
        let (cert, key) = leaf(&pki, cn, false, Some(OIN));
        write(d, &format!("{name}.pem"), &cert);
        write(d, &format!("{name}.key"), &key);
    }
    write(d, "ca.pem", &pki.pem);
    let agency = mtls_agency(&server, &pki).await;
    let (relay, connections) = counting_relay(agency.trim_start_matches("https://").into()).await;
    let base_url = format!("https://{relay}");
    let org_tls = "tls: {ca: ca.pem, client_cert: gw.pem, client_key: gw.key}";
    let adapter =
        std::fs::read_to_string(crate::helpers::root().join("adapters/toeslagen.yaml")).unwrap();
    let load = |second_tls: &str| {
        std::fs::create_dir_all(d.join("adapters")).unwrap();
        let gateway = gateway_yaml(&base_url, "").replace(
            &format!("base_url: \"{base_url}\"}}"),
            &format!("base_url: \"{base_url}\", {org_tls}}}"),
        );
        write(d, "gateway.yaml", &gateway);
        write(&d.join("adapters"), "toeslagen.yaml", &adapter);
        let second = adapter.replace("id: toeslagen\n", "id: toeslagen-2\n");
        write(
            &d.join("adapters"),
            "toeslagen-2.yaml",
            &format!("{second}\n{second_tls}"),
        );
        Config::load(&d.join("gateway.yaml")).unwrap()
    };
    let shared = ketenportaal::protocol::client::Outbound::shared().unwrap();
    let call_both = |c: Config| {
        let shared = shared.clone();
        async move {
            for id in ["toeslagen", "toeslagen-2"] {
                let client = AdapterClient::new(c.adapters[id].clone(), &shared);
                let a = Gateway::run_adapter(&client, Bsn::parse("999993653").unwrap())
                    .await
                    .0
                    .unwrap();
                assert_eq!(a.sections["toeslagen"].len(), 2, "{id}");
            }
        }
    };

    // The organisation's TLS, and the same files named again by the adapter itself: one client.
    for second_tls in ["", org_tls] {
        let before = connections.load(Ordering::SeqCst);
        call_both(load(second_tls)).await;
        assert_eq!(
            connections.load(Ordering::SeqCst) - before,
            1,
            "one connection for both adapters (second adapter's tls: {second_tls:?})"
        );
    }
    // Another client certificate: a client of its own.
    let before = connections.load(Ordering::SeqCst);
    call_both(load(
        "tls: {ca: ca.pem, client_cert: other.pem, client_key: other.key}",
    ))
    .await;
    assert_eq!(connections.load(Ordering::SeqCst) - before, 2);
}
