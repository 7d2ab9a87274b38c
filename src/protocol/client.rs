//! The outbound HTTP client, one for every call the gateway makes (source reads, adapter test
//! calls, deliveries): hyper's pooled client over rustls, with a source's own TLS where it has
//! any (only its CAs trusted, mTLS with the gateway's certificate) and, for registered
//! adapters, the resolver that keeps them off the gateway's own network.
//!
//! hyper directly rather than reqwest: a source call is one request whose URI, headers and
//! body the adapter already holds, and the layers reqwest adds per request (URL conversion,
//! its own header map and body types, redirect and timeout wrappers) cost about 5 µs of
//! gateway CPU per call, 15 µs of an uncached 3-way dossier (load bench (f), the same naive
//! fan-out on both clients in one run: 73.4 against 57.9 µs per request). No redirects are
//! followed (a source that redirects is misconfigured, and following could leak a request
//! elsewhere), no proxy from the environment is used, and connecting is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// The body of every outbound request: rendered in full before it is sent.
pub type OutBody = Full<Bytes>;

/// An outbound request.
pub type OutRequest = http::Request<OutBody>;

/// An answer, its body still to be read (with [`read_capped`]).
pub type OutResponse = http::Response<Incoming>;

/// Why an outbound call failed: connecting, TLS, or the exchange itself. Its chain of causes
/// says what really happened ([`describe`]).
pub type OutError = hyper_util::client::legacy::Error;

/// Connecting (TCP, and the TLS handshake is bounded by the call's own deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Under load, a host's connections come back to the pool all at once, and those past this
/// bound are closed, to be opened again for the next wave. Several adapters on one host (a
/// broker or an ESB in front of the agencies) share one bound: at 128, an uncached 3-adapter
/// fan-out on one host from 64 connections opened 0.31 new connections per request with the
/// durable audit (the answers wait for a batch to be synced, so all 192 connections were idle
/// at once), at about 120 µs of gateway CPU each (load bench (f): 150 -> 113 µs per request at
/// 1024). The idle connections are never more than were in use at once; each keeps the read
/// buffer its largest answer grew until it idles out.
const MAX_IDLE_PER_HOST: usize = 1024;

const AGENT: &str = concat!("ketenportaal/", env!("CARGO_PKG_VERSION"));

type Connector = hyper_rustls::HttpsConnector<HttpConnector<Resolver>>;

type Client = hyper_util::client::legacy::Client<Connector, OutBody>;

/// A pooled HTTP/1.1 and HTTP/2 (over TLS, by ALPN) client. Cloning shares the pool, and so
/// does every client made from the same TLS material and guard (see [`Recipe`]).
#[derive(Clone)]
pub struct Outbound {
    client: Arc<Client>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbound")
    }
}

impl Outbound {
    /// The shared client: the system's trusted roots (as the platform verifier reads them),
    /// no client certificate.
    pub fn shared() -> Result<Outbound, String> {
        source_client(None, std::path::Path::new("."), None).map(|(client, _)| client)
    }

    /// The client of `recipe`: the one made already while any holder of it lives, else one
    /// made now from the settings `tls` gives.
    fn made(
        recipe: Recipe,
        guard: Option<PublicAddresses>,
        tls: impl FnOnce() -> Result<ClientConfig, String>,
    ) -> Result<Outbound, String> {
        let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = made.get(&recipe).and_then(Weak::upgrade) {
            return Ok(Outbound { client });
        }
        made.retain(|_, held| held.strong_count() > 0);
        let client = Arc::new(Outbound::build(tls()?, guard));
        made.insert(recipe, Arc::downgrade(&client));
        Ok(Outbound { client })
    }

    fn build(tls: ClientConfig, guard: Option<PublicAddresses>) -> Client {
        let mut http = HttpConnector::new_with_resolver(Resolver { guard });
        // The TLS connector around it takes `https`.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https)
    }

    /// Sends `req` (with the gateway's `User-Agent` unless it has one). The caller bounds the
    /// whole call with its deadline.
    pub fn send(&self, mut req: OutRequest) -> impl Future<Output = Result<OutResponse, OutError>> {
        req.headers_mut()
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(AGENT));
        self.client.request(req)
    }
}

/// What a client is made of, as a digest: the CAs it trusts (or the system's), the client
/// certificate and key it presents, and its resolver's guard. Clients of one recipe are one
/// client, so one pool per host: an organisation's adapters on one host and its deliveries
/// share their connections (and TLS sessions) instead of one pool each, as do a partner's
/// registrations, and a reload that keeps the certificates keeps the connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Recipe([u8; 32]);

impl Recipe {
    fn of(
        roots: Option<&[CertificateDer<'_>]>,
        identity: Option<&[u8]>,
        guard: Option<PublicAddresses>,
    ) -> Recipe {
        let mut digest = Sha256::new();
        let mut part = |tag: u8, bytes: &[u8]| {
            digest.update([tag]);
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        match roots {
            None => part(0, b"system"),
            Some(certs) => certs.iter().for_each(|c| part(1, c.as_ref())),
        }
        if let Some(pem) = identity {
            part(2, pem);
        }
        if let Some(g) = guard {
            part(3, &[u8::from(g.allow_private)]);
        }
        Recipe(digest.finalize().into())
    }
}

/// The clients made, by recipe, while any holder of one lives (an adapter, an organisation's
/// deliveries, the gateway's shared client).
static MADE: LazyLock<Mutex<HashMap<Recipe, Weak<Client>>>> = LazyLock::new(Default::default);

/// The rustls client settings: TLS 1.2 and 1.3 on the gateway's crypto provider; `roots` as the
/// only trusted CAs when given, else the system's; `identity` as the client certificate.
fn tls_config(
    roots: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match roots {
        Some(certs) => {
            let mut store = rustls::RootCertStore::empty();
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| format!("`tls.ca`: not a usable CA certificate ({e})"))?;
            }
            builder.with_root_certificates(store)
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("cannot load the system's trusted roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("`tls.client_cert`: the certificate cannot be used ({e})")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Builds a client for one source: with `tls`, only its CAs are trusted (the system's when it
/// names none) and the gateway presents its client certificate (mTLS); for a registered
/// adapter, the [`PublicAddresses`] resolver. Returns the client and the bytes of the files
/// read (for the adapter's fingerprint).
pub fn source_client(
    tls: Option<&crate::model::AdapterTls>,
    base: &std::path::Path,
    guard: Option<PublicAddresses>,
) -> Result<(Outbound, Vec<u8>), String> {
    let Some(t) = tls else {
        let recipe = Recipe::of(None, None, guard);
        return Ok((
            Outbound::made(recipe, guard, || tls_config(None, None))?,
            Vec::new(),
        ));
    };
    let mut material = Vec::new();
    let roots = match &t.ca {
        Some(ca) => {
            let path = base.join(ca);
            let certs =
                crate::protocol::certs::ca_bundle(&path).map_err(|e| format!("`tls.ca`: {e}"))?;
            for c in &certs {
                material.extend_from_slice(c.as_ref());
            }
            Some(certs)
        }
        None => None,
    };
    let identity = match (&t.client_cert, &t.client_key) {
        (Some(cert), key) => {
            let cert = base.join(cert);
            let key = key.as_ref().map(|k| base.join(k));
            let id = crate::protocol::certs::client_identity(&cert, key.as_deref())
                .map_err(|e| format!("`tls.client_cert`: {e}"))?;
            material.extend_from_slice(&id.pem);
            Some(id)
        }
        (None, Some(_)) => {
            return Err(
                "`tls.client_key` without `tls.client_cert`: name the certificate too".into(),
            );
        }
        (None, None) => None,
    };
    let recipe = Recipe::of(
        roots.as_deref(),
        identity.as_ref().map(|id| id.pem.as_slice()),
        guard,
    );
    let client = Outbound::made(recipe, guard, || {
        tls_config(roots, identity.map(|id| (id.chain, id.key)))
    })?;
    Ok((client, material))
}

/// What went wrong, with its chain of causes (refused, reset, the TLS alert): the outer
/// errors alone say only "client error (Connect)".
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let next = s.to_string();
        // Some layers repeat their cause in their own message.
        if !msg.ends_with(&next) {
            msg = format!("{msg}: {next}");
        }
        src = s.source();
    }
    msg
}

/// Why [`read_capped`] stopped.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The answer is larger than the cap (declared, or as it arrived).
    TooLarge,
    /// The connection failed while the body was read.
    Transport(hyper::Error),
    /// `hold` refused the memory for the next part.
    Held(E),
}

/// Reads a body up to `cap` bytes; a larger answer is cut off, not buffered. Before the buffer
/// grows, `hold` is asked for its new capacity. The buffer grows with what has arrived (doubling,
/// up to the declared length or the cap): a source that announces a large answer and sends it
/// slowly holds no more than it has sent, and an answer declared above the cap is not read.
pub async fn read_capped<E>(
    mut body: Incoming,
    cap: u64,
    mut hold: impl FnMut(u64) -> Result<(), E>,
) -> Result<Vec<u8>, ReadError<E>> {
    /// What is held before the first byte: most answers fit in it.
    const FIRST: u64 = 64 * 1024;
    let declared = body.size_hint().exact();
    if declared.is_some_and(|l| l > cap) {
        return Err(ReadError::TooLarge);
    }
    let most = declared.unwrap_or(cap);
    let first = declared.map_or(8192, |l| l.min(FIRST)).min(cap);
    hold(first).map_err(ReadError::Held)?;
    let mut buf = Vec::with_capacity(first as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Transport)?;
        let Ok(chunk) = frame.into_data() else {
            // Trailers: nothing to keep.
            continue;
        };
        let needed = buf.len() + chunk.len();
        if needed as u64 > cap {
            return Err(ReadError::TooLarge);
        }
        if needed > buf.capacity() {
            // Doubling, as `Vec` would, but never past the declared length or the cap.
            let grown = needed
                .max(2 * buf.capacity())
                .min(most as usize)
                .max(needed);
            hold(grown as u64).map_err(ReadError::Held)?;
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The connector's name resolution: the system's, and for a registered adapter only the
/// addresses [`PublicAddresses`] allows. IP literals never reach it (the connector takes them
/// as they are): the endpoint policy already pins them to what the operator declared.
#[derive(Debug, Clone, Copy)]
struct Resolver {
    guard: Option<PublicAddresses>,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard;
        Box::pin(async move {
            let host = name.as_str();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            match guard {
                None => Ok(found.into_iter()),
                Some(g) => g.allowed(host, found).map(Vec::into_iter),
            }
        })
    }
}

/// The resolver of registered adapters: a partner controls the DNS of its own names, and could
/// point one at the gateway's loopback, a cloud metadata address (169.254.169.254) or the
/// internal network. Only addresses [`address_allowed`] accepts are connected to; a name with
/// none of them fails the call with a message that says so.
#[derive(Debug, Clone, Copy)]
pub struct PublicAddresses {
    /// The operator's `allow_private_addresses` for the organisation.
    pub allow_private: bool,
}

impl PublicAddresses {
    /// Of the addresses `host` resolved to, those a registered adapter may connect to; an
    /// error when there are none.
    fn allowed(
        self,
        host: &str,
        found: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, std::io::Error> {
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| address_allowed(a.ip(), self.allow_private))
            .collect();
        if allowed.is_empty() {
            return Err(std::io::Error::other(format!(
                "`{host}` resolves to no address a registered adapter may connect to (loopback, link-local, private or reserved addresses are refused)"
            )));
        }
        Ok(allowed)
    }
}

/// Whether a registered adapter may connect to `ip`. Never: unspecified, loopback, link-local
/// (which holds the cloud metadata services), multicast, broadcast and reserved ranges.
/// Private ranges (RFC 1918, shared 100.64/10, IPv6 unique-local) only with `allow_private`.
/// IPv4-mapped and NAT64 IPv6 forms are judged by the IPv4 address inside.
pub fn address_allowed(ip: std::net::IpAddr, allow_private: bool) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let never = v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || o[0] >= 240;
            let private = v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64);
            !never && (allow_private || !private)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_allowed(IpAddr::V4(v4), allow_private);
            }
            let seg = v6.segments();
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
                return address_allowed(IpAddr::V4(v4), allow_private);
            }
            let never = v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                || seg[..6] == [0, 0, 0, 0, 0, 0];
            let private = (seg[0] & 0xfe00) == 0xfc00;
            !never && (allow_private || !private)
        }
    }
}

#[cfg(test)]
mod address_tests {
    use super::{PublicAddresses, Resolver, address_allowed};
    use tower::Service;

    #[tokio::test]
    async fn the_resolver_of_registered_adapters_refuses_a_name_that_points_at_loopback() {
        // `localhost` stands in for a partner's own name pointed at 127.0.0.1 (the endpoint
        // policy exempts the literal `localhost` itself; the resolver does not).
        for allow_private in [false, true] {
            let mut resolver = Resolver {
                guard: Some(PublicAddresses { allow_private }),
            };
            let name = "localhost".parse().unwrap();
            let err = match resolver.call(name).await {
                Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("resolves to no address"), "{err}");
        }
    }

    #[test]
    fn registered_adapters_reach_public_addresses_only() {
        for (ip, public, private_ok) in [
            ("93.184.215.14", true, true),
            ("2a00:1450:4001::1", true, true),
            ("127.0.0.1", false, false),
            ("127.8.9.10", false, false),
            ("0.0.0.0", false, false),
            ("169.254.169.254", false, false),
            ("224.0.0.1", false, false),
            ("255.255.255.255", false, false),
            ("240.0.0.1", false, false),
            ("::1", false, false),
            ("::", false, false),
            ("fe80::1", false, false),
            ("::ffff:127.0.0.1", false, false),
            ("::ffff:169.254.169.254", false, false),
            ("64:ff9b::7f00:1", false, false),
            ("::127.0.0.1", false, false),
            ("10.1.2.3", false, true),
            ("172.16.0.1", false, true),
            ("192.168.1.1", false, true),
            ("100.64.0.1", false, true),
            ("fd00:ec2::254", false, true),
            ("::ffff:10.0.0.1", false, true),
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(address_allowed(ip, false), public, "{ip}");
            assert_eq!(
                address_allowed(ip, true),
                private_ok,
                "{ip} with private allowed"
            );
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive HTTP/1.1 server that answers every GET after `delay`; counts connections.
    async fn slow_server(delay: Duration) -> (String, Arc<AtomicUsize>) {
        // A backlog for the whole wave (std's 128 would hold back the rest of its connects).
        let listener = crate::server::listen("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            tokio::time::sleep(delay).await;
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if sock.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    /// Several adapters on one host (a broker, an ESB) share one pool key: a wave of requests
    /// that needed 300 connections at once finds all of them again the next time, instead of
    /// opening anew those past a small idle bound (load bench (f): 0.31 new connections per
    /// request at a bound of 128, each costing the gateway about 120 µs of CPU).
    #[tokio::test]
    async fn a_wave_of_calls_to_one_host_keeps_its_connections_for_the_next() {
        let (url, accepted) = slow_server(Duration::from_millis(200)).await;
        let client = super::Outbound::shared().unwrap();
        let wave = || {
            futures::future::join_all((0..300).map(|_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let req = http::Request::get(url.as_str())
                        .body(super::OutBody::default())
                        .unwrap();
                    let r = client.send(req).await.unwrap();
                    let body = super::read_capped(r.into_body(), 1024, |_| Ok::<_, ()>(()))
                        .await
                        .unwrap();
                    assert_eq!(body, b"ok");
                }
            }))
        };
        wave().await;
        let first = accepted.load(Ordering::SeqCst);
        assert!(
            first >= 250,
            "the first wave ran at once: {first} connections"
        );
        // The connections go back to the pool as their answers end.
        tokio::time::sleep(Duration::from_millis(100)).await;
        wave().await;
        let second = accepted.load(Ordering::SeqCst) - first;
        assert!(
            second <= 5,
            "{second} new connections for the second wave ({first} in the first)"
        );
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::{OutBody, Outbound, ReadError, describe, read_capped};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request on a fresh listener with `answer`; returns its URL and the request
    /// as the server read it.
    async fn one_answer(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pad", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            let _ = sock.write_all(answer).await;
            let _ = sock.shutdown().await;
            got
        });
        (url, task)
    }

    fn get(url: &str) -> super::OutRequest {
        http::Request::get(url).body(OutBody::default()).unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_down_to_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let e = Outbound::shared()
            .unwrap()
            .send(get(&url))
            .await
            .unwrap_err();
        let msg = describe(&e);
        assert!(msg.contains("refused"), "{msg}");
        assert!(
            !msg.contains("127.0.0.1"),
            "no address in the message: {msg}"
        );
    }

    #[tokio::test]
    async fn requests_carry_the_gateway_agent_and_redirects_are_not_followed() {
        let (url, server) = one_answer(
            b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let r = Outbound::shared().unwrap().send(get(&url)).await.unwrap();
        assert_eq!(r.status(), 302);
        let seen = String::from_utf8(server.await.unwrap())
            .unwrap()
            .to_ascii_lowercase();
        assert!(seen.starts_with("get /pad http/1.1\r\n"), "{seen}");
        assert!(
            seen.contains(&format!(
                "user-agent: ketenportaal/{}",
                env!("CARGO_PKG_VERSION")
            )),
            "{seen}"
        );
    }

    /// Serves `answer` once, reads its body with a cap of 64 bytes; what came of it, and each
    /// amount of memory asked for before it was allocated.
    async fn read_64(answer: &'static [u8]) -> (Result<Vec<u8>, ReadError<()>>, Vec<u64>) {
        let (url, _server) = one_answer(answer).await;
        let r = Outbound::shared().unwrap().send(get(&url)).await.unwrap();
        let mut asked = Vec::new();
        let got = read_capped(r.into_body(), 64, |n| {
            asked.push(n);
            Ok(())
        })
        .await;
        (got, asked)
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_declared_or_as_it_arrives() {
        // Declared: refused before a byte of the body is asked for.
        let (got, asked) = read_64(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await;
        assert!(matches!(got, Err(ReadError::TooLarge)), "{got:?}");
        assert!(
            asked.is_empty(),
            "nothing held for a refused answer: {asked:?}"
        );
        // Chunked: cut off where it passes the cap.
        let (got, _) = read_64(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n28\r\n0123456789012345678901234567890123456789\r\n28\r\n0123456789012345678901234567890123456789\r\n0\r\n\r\n",
        )
        .await;
        assert!(matches!(got, Err(ReadError::TooLarge)), "{got:?}");
        // Within the cap: all of it, and the memory asked for before it was allocated.
        let (got, asked) = read_64(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhallo").await;
        assert_eq!(got.unwrap(), b"hallo");
        assert_eq!(asked, [5]);
    }
}
