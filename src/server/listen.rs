//! Accepting connections: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, with the caps that
//! keep hostile or slow clients from holding resources, and graceful shutdown.
//!
//! Our own accept loop (rather than `axum::serve`) so that TLS termination, header size and
//! count caps, the header read timeout (slowloris) and the handshake timeout are all set here,
//! in one place, for both listeners.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    pub tls: Option<Arc<ServerConfig>>,
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
}

/// Loads a rustls server config (TLS 1.2 and 1.3, forward-secret suites only, as the
/// Digikoppeling REST profile asks) from PEM files.
///
/// With `client_ca`, clients *may* present a certificate issued by one of those CAs (partners
/// authenticating with their PKIoverheid certificate); clients without one are still served.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read client CA {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| {
                    format!("{} is not a PEM certificate bundle: {e}", ca.display())
                })?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `app` until `shutdown` resolves, then waits for in-flight requests (bounded).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .max_headers(opts.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    static GATE: std::sync::LazyLock<crate::lograte::LogGate> =
                        std::sync::LazyLock::new(crate::lograte::LogGate::default);
                    if let Some(suppressed) = GATE.admit() {
                        tracing::warn!(error = %e, suppressed, "Accept failed (`suppressed` more since the last line).");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match &acceptor {
            None => {
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let app = app.clone();
                let handshake = opts.handshake_timeout;
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out.");
                            return;
                        }
                    };
                    // A client certificate's OIN travels with every request on this connection.
                    let oin = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::credentials::oin_of(c));
                    let service = TowerToHyperService::new(
                        app.layer(axum::Extension(crate::credentials::ClientCert { oin })),
                    );
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!("In-flight requests did not finish in time; closing.");
        }
    }
    Ok(())
}
