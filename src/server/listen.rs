//! Accepting connections: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, with the caps that
//! keep hostile or slow clients from holding resources, and graceful shutdown.
//!
//! Our own accept loop (rather than `axum::serve`) so that TLS termination, header size and
//! count caps, the header read timeout (slowloris), the first-byte and body deadlines
//! ([`super::deadline`]) and the handshake timeout are all set here, in one place, for both
//! listeners.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::deadline::{BodyDeadline, FirstBytes};

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    pub tls: Option<Arc<ServerConfig>>,
    pub header_timeout: Duration,
    /// A request's body must have arrived this long after the request did.
    pub body_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
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
                let service = with_body_deadline(app.clone(), opts.body_timeout);
                let stream = FirstBytes::new(stream, opts.header_timeout);
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
                let (first_byte, body_timeout) = (opts.header_timeout, opts.body_timeout);
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
                    let service = with_body_deadline(
                        app.layer(axum::Extension(crate::credentials::ClientCert { oin })),
                        body_timeout,
                    );
                    let tls = FirstBytes::new(tls, first_byte);
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

/// `app` as hyper calls it, each request's body given `within` to arrive. The router boxes the
/// body it is given either way, so wrapping it first costs no allocation.
fn with_body_deadline(
    app: Router,
    within: Duration,
) -> TowerToHyperService<
    tower::util::MapRequest<
        Router,
        impl FnMut(hyper::Request<hyper::body::Incoming>) -> hyper::Request<BodyDeadline> + Clone,
    >,
> {
    TowerToHyperService::new(
        app.map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            req.map(|body| BodyDeadline::new(body, within))
        }),
    )
}
