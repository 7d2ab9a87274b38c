//! Outbound HTTP clients: the shared client, a source's own TLS client (only its CAs trusted,
//! mTLS with the gateway's certificate), and the resolver that keeps registered adapters off
//! the gateway's own network.

use std::time::Duration;

/// Builds a client with one source's TLS settings: only the given CAs are trusted, and the
/// gateway presents its client certificate (mTLS). TLS 1.2 is the minimum. Returns the client
/// and the bytes of the files read (for the adapter's fingerprint).
pub fn tls_client(
    t: &crate::model::AdapterTls,
    base: &std::path::Path,
) -> Result<(reqwest::Client, Vec<u8>), String> {
    source_client(Some(t), base, None)
}

/// A client for one source: its TLS settings, when it has any, and for a registered adapter
/// the [`PublicAddresses`] resolver. Returns the client and the bytes of the files read.
pub fn source_client(
    tls: Option<&crate::model::AdapterTls>,
    base: &std::path::Path,
    guard: Option<PublicAddresses>,
) -> Result<(reqwest::Client, Vec<u8>), String> {
    let mut b = client_builder().tls_version_min(reqwest::tls::Version::TLS_1_2);
    if let Some(g) = guard {
        b = b.dns_resolver(g);
    }
    let Some(t) = tls else {
        let client = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        return Ok((client, Vec::new()));
    };
    let mut material = Vec::new();
    if let Some(ca) = &t.ca {
        let path = base.join(ca);
        let certs =
            crate::protocol::certs::ca_bundle(&path).map_err(|e| format!("`tls.ca`: {e}"))?;
        let mut trusted = Vec::with_capacity(certs.len());
        for c in certs {
            material.extend_from_slice(c.as_ref());
            trusted.push(
                reqwest::Certificate::from_der(c.as_ref())
                    .map_err(|e| format!("`tls.ca`: {}: {e}", path.display()))?,
            );
        }
        b = b.tls_certs_only(trusted);
    }
    match (&t.client_cert, &t.client_key) {
        (Some(cert), key) => {
            let cert = base.join(cert);
            let key = key.as_ref().map(|k| base.join(k));
            let id = crate::protocol::certs::client_identity(&cert, key.as_deref())
                .map_err(|e| format!("`tls.client_cert`: {e}"))?;
            let identity = reqwest::Identity::from_pem(&id.pem).map_err(|e| {
                format!(
                    "`tls.client_cert`: {} and its key do not form a client identity ({e})",
                    cert.display()
                )
            })?;
            material.extend_from_slice(&id.pem);
            b = b.identity(identity);
        }
        (None, Some(_)) => {
            return Err(
                "`tls.client_key` without `tls.client_cert`: name the certificate too".into(),
            );
        }
        (None, None) => {}
    }
    let client = b
        .build()
        .map_err(|e| format!("cannot build the TLS client: {e}"))?;
    Ok((client, material))
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        // Under load, a host's connections come back to the pool all at once, and those past
        // this bound are closed, to be opened again for the next wave. Several adapters on one
        // host (a broker or an ESB in front of the agencies) share one bound: at 128, an
        // uncached 3-adapter fan-out on one host from 64 connections opened 0.31 new
        // connections per request with the durable audit (the answers wait for a batch to be
        // synced, so all 192 connections were idle at once), at about 120 µs of gateway CPU
        // each (load bench (f): 150 -> 113 µs per request at 1024). The idle connections are
        // never more than were in use at once; each keeps the read buffer its largest answer
        // grew (up to ~800 KiB) until it idles out (60 s).
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .user_agent(concat!("ketenportaal/", env!("CARGO_PKG_VERSION")))
}

/// The shared outbound HTTP client: rustls, no redirects (a source that redirects is
/// misconfigured, and following could leak a request elsewhere), bounded connect time.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .build()
}

/// The resolver of registered adapters: a partner controls the DNS of its own names, and could
/// point one at the gateway's loopback, a cloud metadata address (169.254.169.254) or the
/// internal network. Only addresses [`address_allowed`] accepts are connected to; a name with
/// none of them fails the call with a message that says so. IP literals never reach a
/// resolver: the endpoint policy already pins them to what the operator declared.
#[derive(Debug, Clone, Copy)]
pub struct PublicAddresses {
    /// The operator's `allow_private_addresses` for the organisation.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for PublicAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| address_allowed(a.ip(), allow_private))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "`{host}` resolves to no address a registered adapter may connect to (loopback, link-local, private or reserved addresses are refused)"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
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
    use super::{PublicAddresses, address_allowed};
    use reqwest::dns::Resolve;

    #[tokio::test]
    async fn the_resolver_of_registered_adapters_refuses_a_name_that_points_at_loopback() {
        // `localhost` stands in for a partner's own name pointed at 127.0.0.1 (the endpoint
        // policy exempts the literal `localhost` itself; the resolver does not).
        for allow_private in [false, true] {
            let guard = PublicAddresses { allow_private };
            let name = "localhost".parse().unwrap();
            let err = match guard.resolve(name).await {
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
        let client = super::http_client().unwrap();
        let wave = || {
            futures::future::join_all((0..300).map(|_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.bytes().await.unwrap().as_ref(), b"ok");
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
