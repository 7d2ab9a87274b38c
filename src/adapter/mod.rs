//! Adapters at run time: speaking SOAP and REST to one organisation's service.
//!
//! [`AdapterClient::fetch`] builds the request from the adapter's templates, sends it over the
//! shared HTTP client, reads the answer up to the size cap (streaming, never buffering more)
//! within the gateway's budget for answers in flight ([`budget`]), and maps it into sections. Everything that can go wrong becomes a [`SourceError`] naming
//! what happened; nothing here panics or fails the whole dossier. What makes one organisation
//! differ from another is data in its [`AdapterSpec`], never code.

pub mod budget;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bsn::Bsn;
use crate::config::compile::{AdapterSpec, Mapping};
use crate::model::{Protocol, SoapVersion};
use crate::mapping::{MapError, Sections};
use budget::{InflightBudget, Reservation};

/// One source's mapped answer: what is cached, before any view filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceAnswer {
    pub adapter: Arc<str>,
    pub organisation: Arc<str>,
    pub fetched_at: DateTime<Utc>,
    pub sections: Sections,
    /// Size of the raw answer (reported by `adapter test`; the cache weighs the mapped
    /// records instead, see [`SourceAnswer::heap_size`]).
    pub bytes: usize,
}

impl SourceAnswer {
    /// An estimate of the memory this answer holds (what the cache's byte budget counts): the
    /// mapped records as they sit in memory, with their map and string overheads, plus the
    /// entry's fixed costs. It errs high rather than low, so the budget bounds real memory
    /// (calibrated with mimalloc on a person with three benefits: 3 % above the RSS it
    /// adds).
    pub fn heap_size(&self) -> usize {
        fn value(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::String(s) => s.len(),
                serde_json::Value::Array(a) => a.iter().map(|x| 32 + value(x)).sum(),
                serde_json::Value::Object(o) => {
                    o.iter().map(|(k, x)| 64 + k.len() + value(x)).sum()
                }
                _ => 0,
            }
        }
        let records: usize = self
            .sections
            .iter()
            .map(|(name, recs)| {
                96 + name.len()
                    + recs
                        .iter()
                        .map(|r| {
                            80 + r
                                .iter()
                                .map(|(k, x)| 112 + k.len() + value(x))
                                .sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum();
        // Entry, key, Arcs and moka's own bookkeeping.
        704 + records
    }
}

/// Why a source gave no usable answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("HTTP {status} from the source{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http { status: u16, detail: Option<String> },
    #[error("SOAP Fault {code}: {reason}")]
    Fault { code: String, reason: String },
    #[error("the answer could not be mapped: {0}")]
    Map(MapError),
    #[error("the answer is larger than the cap of {0} bytes")]
    TooLarge(u64),
    /// Our own limit, not the source's fault: not a source failure, never retried.
    #[error(
        "not read: answers in flight already fill the gateway's budget of {0} bytes (limits.max_inflight_response_bytes)"
    )]
    OverBudget(u64),
    #[error("cannot reach the source: {0}")]
    Transport(String),
    /// The TLS handshake failed: it fails the same way every time, so it is not retried.
    #[error("TLS: {0}")]
    Tls(String),
    /// A success status with something that is not the answer: no body, or the wrong kind.
    #[error("the source answered {0}")]
    Unexpected(String),
    #[error("the source is unavailable (circuit open)")]
    Unavailable,
}

impl SourceError {
    /// The source status reported in a dossier.
    pub fn status(&self) -> &'static str {
        match self {
            SourceError::Timeout(_) => "timeout",
            SourceError::Unavailable => "unavailable",
            _ => "error",
        }
    }
}

/// Per-call context handed to an adapter.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub bsn: Bsn,
    /// W3C trace context for the outgoing call.
    pub traceparent: Option<String>,
}

/// Sends requests for one adapter.
#[derive(Debug, Clone)]
pub struct AdapterClient {
    pub spec: Arc<AdapterSpec>,
    http: reqwest::Client,
    /// The gateway's budget for answers in flight; `None` outside the gateway (`adapter test`).
    budget: Option<Arc<InflightBudget>>,
    id: Arc<str>,
    organisation: Arc<str>,
}

const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

impl AdapterClient {
    /// A client for `spec`; it uses the adapter's own TLS client when it has one, else `http`.
    pub fn new(spec: Arc<AdapterSpec>, http: reqwest::Client) -> Self {
        let http = spec.http.clone().unwrap_or(http);
        AdapterClient {
            id: Arc::from(spec.def.id.as_str()),
            organisation: Arc::from(spec.def.organisation.as_str()),
            spec,
            http,
            budget: None,
        }
    }

    /// This client, reading its answers within `budget`.
    pub fn with_budget(mut self, budget: Arc<InflightBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn timeout(&self) -> Duration {
        self.spec.def.timeout.0
    }

    /// Calls the source once and maps its answer. The caller applies the timeout.
    pub async fn fetch(&self, ctx: &CallContext) -> Result<SourceAnswer, SourceError> {
        let vars = [("bsn", ctx.bsn.as_str())];
        let req = match self.spec.def.protocol {
            Protocol::Soap => self.soap_request(&vars),
            Protocol::Rest => self.rest_request(&vars),
        }?;
        let req = match &ctx.traceparent {
            Some(tp) => req.header("traceparent", tp),
            None => req,
        };
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        // The media type without parameters, when the source named one.
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
                    .chars()
                    .take(80)
                    .collect::<String>()
            });
        let mut held = match &self.budget {
            Some(b) => b.reservation(),
            None => Reservation::unbounded(),
        };
        if status.is_redirection() {
            return Err(SourceError::Http {
                status: status.as_u16(),
                detail: Some("redirects are not followed; fix the adapter's endpoint".into()),
            });
        }
        let body = read_capped(resp, self.spec.max_response_body, &mut held).await?;
        let bytes = body.len();
        let sections = match (&self.spec.mapping, self.spec.def.protocol) {
            (Mapping::Xml(m), _) => {
                // A Fault is a Fault whatever the HTTP status (SOAP 1.1 sends them with 500).
                match m.map_envelope(&body, &self.spec.limits) {
                    Ok(s) if status.is_success() => s,
                    Ok(_) | Err(MapError::NoSoapBody | MapError::NotXml(_))
                        if !status.is_success() =>
                    {
                        return Err(SourceError::Http {
                            status: status.as_u16(),
                            detail: None,
                        });
                    }
                    Err(MapError::NoSoapBody | MapError::NotXml(_))
                        if body.iter().all(u8::is_ascii_whitespace) =>
                    {
                        return Err(SourceError::Unexpected(format!(
                            "HTTP {} without a body, where a SOAP envelope was expected",
                            status.as_u16()
                        )));
                    }
                    Err(MapError::NoSoapBody | MapError::NotXml(_))
                        if content_type.as_deref().is_some_and(|ct| !is_xml_type(ct)) =>
                    {
                        return Err(SourceError::Unexpected(format!(
                            "HTTP {} with `{}`, not a SOAP envelope",
                            status.as_u16(),
                            content_type.as_deref().unwrap_or_default()
                        )));
                    }
                    Ok(s) => s,
                    Err(MapError::Fault { code, reason }) => {
                        return Err(SourceError::Fault { code, reason });
                    }
                    Err(e) => return Err(SourceError::Map(e)),
                }
            }
            (Mapping::Json(m), _) => {
                if !status.is_success() {
                    return Err(SourceError::Http {
                        status: status.as_u16(),
                        detail: problem_detail(&body),
                    });
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Err(SourceError::Unexpected(format!(
                        "HTTP {} without a body, where a JSON answer was expected",
                        status.as_u16()
                    )));
                }
                if let Some(ct) = &content_type
                    && !is_json_type(ct)
                {
                    return Err(SourceError::Unexpected(format!(
                        "HTTP {} with `{ct}`, not JSON",
                        status.as_u16()
                    )));
                }
                m.map_bytes(&body, &self.spec.limits)
                    .map_err(SourceError::Map)?
            }
        };
        Ok(SourceAnswer {
            adapter: self.id.clone(),
            organisation: self.organisation.clone(),
            fetched_at: Utc::now(),
            sections,
            bytes,
        })
    }

    fn soap_request(&self, vars: &[(&str, &str)]) -> Result<reqwest::RequestBuilder, SourceError> {
        let soap = self
            .spec
            .def
            .soap
            .as_ref()
            .ok_or_else(|| SourceError::Transport("soap adapter without soap block".into()))?;
        let (env_ns, content_type) = match soap.version {
            SoapVersion::V11 => (
                crate::mapping::xml::SOAP11_NS,
                "text/xml; charset=utf-8".to_string(),
            ),
            SoapVersion::V12 => (
                crate::mapping::xml::SOAP12_NS,
                match &soap.action {
                    Some(a) => format!("application/soap+xml; charset=utf-8; action=\"{a}\""),
                    None => "application/soap+xml; charset=utf-8".to_string(),
                },
            ),
        };
        let mut x = String::with_capacity(512 + soap.body.len());
        x.push_str(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"",
        );
        x.push_str(env_ns);
        x.push('"');
        if soap.addressing {
            x.push_str(" xmlns:wsa=\"");
            x.push_str(WSA_NS);
            x.push('"');
        }
        x.push('>');
        if soap.addressing {
            let mut esc = String::new();
            x.push_str("<soapenv:Header><wsa:To>");
            esc.push_str(&template::render_xml("{{v}}", &[("v", &self.spec.url)]));
            x.push_str(&esc);
            x.push_str("</wsa:To>");
            if let Some(a) = &soap.action {
                x.push_str("<wsa:Action>");
                x.push_str(&template::render_xml("{{v}}", &[("v", a)]));
                x.push_str("</wsa:Action>");
            }
            x.push_str("<wsa:MessageID>urn:uuid:");
            x.push_str(&uuid::Uuid::new_v4().to_string());
            x.push_str("</wsa:MessageID><wsa:ReplyTo><wsa:Address>");
            x.push_str(WSA_ANONYMOUS);
            x.push_str("</wsa:Address></wsa:ReplyTo></soapenv:Header>");
        }
        x.push_str("<soapenv:Body");
        for (p, uri) in &soap.namespaces {
            x.push_str(" xmlns:");
            x.push_str(p);
            x.push_str("=\"");
            x.push_str(&template::render_xml("{{v}}", &[("v", uri)]));
            x.push('"');
        }
        x.push('>');
        x.push_str(&template::render_xml(&soap.body, vars));
        x.push_str("</soapenv:Body></soapenv:Envelope>");

        let mut req = self
            .http
            .post(&self.spec.url)
            .header("content-type", content_type)
            .header("accept", "text/xml, application/soap+xml");
        if soap.version == SoapVersion::V11 {
            req = req.header(
                "soapaction",
                format!("\"{}\"", soap.action.as_deref().unwrap_or("")),
            );
        }
        Ok(req.body(x))
    }

    fn rest_request(&self, vars: &[(&str, &str)]) -> Result<reqwest::RequestBuilder, SourceError> {
        let rest = self
            .spec
            .def
            .rest
            .as_ref()
            .ok_or_else(|| SourceError::Transport("rest adapter without rest block".into()))?;
        let method = reqwest::Method::from_bytes(rest.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| SourceError::Transport(format!("invalid method {}", rest.method)))?;
        let mut req = self
            .http
            .request(method, &self.spec.url)
            .header("accept", "application/json");
        for (k, v) in &rest.headers {
            req = req.header(k.as_str(), template::render_plain(v, vars));
        }
        if let Some(body) = &rest.body {
            req = req
                .header("content-type", "application/json")
                .body(template::render_json(body, vars));
        }
        Ok(req)
    }
}

fn transport_error(e: reqwest::Error) -> SourceError {
    if let Some(t) = tls_failure(&e) {
        return SourceError::Tls(t);
    }
    // The chain of causes says what really happened (refused, reset). The URL is left out:
    // the status already names the adapter, and an operator's URL may hold a value from the
    // environment that a partner testing its adapter must not see.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    SourceError::Transport(msg)
}

/// What a TLS failure in `e`'s causes means, in the operator's words.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // `io::Error::source` skips the error it wraps, and TLS errors come wrapped in an
        // io::Error inside another: unwrap those by hand.
        let mut found = err.downcast_ref::<R>();
        let mut io = err.downcast_ref::<std::io::Error>();
        while found.is_none()
            && let Some(inner) = io.and_then(|e| e.get_ref())
        {
            found = inner.downcast_ref::<R>();
            io = inner.downcast_ref::<std::io::Error>();
        }
        if let Some(r) = found {
            return Some(match r {
                R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "the source's certificate has expired".into()
                }
                R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
                    "the source's certificate is not valid yet".into()
                }
                R::InvalidCertificate(C::UnknownIssuer) => {
                    "the source's certificate is not issued by a CA this adapter trusts (`tls.ca`)"
                        .into()
                }
                R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    "the source's certificate is not valid for its host name".into()
                }
                R::InvalidCertificate(c) => {
                    format!("the source's certificate is not accepted ({c:?})")
                }
                R::AlertReceived(a) => {
                    let why = match a {
                        A::CertificateExpired => "certificate expired",
                        A::CertificateRevoked => "certificate revoked",
                        A::UnknownCA => "certificate from a CA it does not trust",
                        A::CertificateRequired => "no client certificate sent",
                        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
                            "certificate not accepted"
                        }
                        A::AccessDenied => "access denied",
                        A::HandshakeFailure => {
                            return Some(
                                "the server ended the handshake (no common protocol version or cipher suite, or it wants a client certificate)"
                                    .into(),
                            );
                        }
                        other => return Some(format!("the server sent the TLS alert {other:?}")),
                    };
                    format!("the server refused our client certificate ({why})")
                }
                other => other.to_string(),
            });
        }
        cur = err.source();
    }
    None
}

/// Reads the body up to `cap` bytes; a larger answer is cut off, not buffered. Twice the
/// buffer's capacity is held in `held` before it is allocated (the bytes, and an allowance for
/// the records mapped from them): for a declared Content-Length all of it up front, so a
/// refused answer is not read at all; else at each growth.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
    held: &mut Reservation,
) -> Result<Vec<u8>, SourceError> {
    if resp.content_length().is_some_and(|l| l > cap) {
        return Err(SourceError::TooLarge(cap));
    }
    let first = resp.content_length().unwrap_or(8192).min(cap);
    held.hold(2 * first)?;
    let mut buf = Vec::with_capacity(first as usize);
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        let needed = buf.len() + chunk.len();
        if needed as u64 > cap {
            return Err(SourceError::TooLarge(cap));
        }
        if needed > buf.capacity() {
            // Doubling, as `Vec` would, but never past the cap.
            let grown = needed.max(2 * buf.capacity()).min(cap as usize);
            held.hold(2 * grown as u64)?;
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// `application/json`, `application/problem+json`, `application/hal+json`, `text/json`, ...
fn is_json_type(ct: &str) -> bool {
    ct == "application/json" || ct == "text/json" || ct.ends_with("+json")
}

/// `text/xml`, `application/soap+xml`, `application/xml`, ...
fn is_xml_type(ct: &str) -> bool {
    ct == "text/xml" || ct == "application/xml" || ct.ends_with("+xml")
}

/// `title`/`detail` of a problem+json error body, for the source status message.
fn problem_detail(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let t = v.get("detail").or_else(|| v.get("title"))?.as_str()?;
    Some(t.chars().take(200).collect())
}

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
        let certs = crate::config::certs::ca_bundle(&path).map_err(|e| format!("`tls.ca`: {e}"))?;
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
            let id = crate::config::certs::client_identity(&cert, key.as_deref())
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
        // An idle connection keeps the read buffer its largest answer grew (up to ~800 KiB):
        // after a burst of 60 answers of 4 MiB, 60 kept connections held 45 MiB. Sixteen idle
        // per host is plenty for steady load (busy connections do not count) and bounds that.
        .pool_max_idle_per_host(16)
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
