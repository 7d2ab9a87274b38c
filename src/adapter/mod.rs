//! Adapters at run time: speaking SOAP and REST to one organisation's service.
//!
//! [`AdapterClient::fetch`] builds the request from the adapter's templates, sends it over the
//! shared HTTP client, reads the answer up to the size cap (streaming, never buffering more)
//! within the gateway's budget for answers in flight ([`budget`]), and maps it into sections. Everything that can go wrong becomes a [`SourceError`] naming
//! what happened; nothing here panics or fails the whole dossier. What makes one organisation
//! differ from another is data in its [`AdapterSpec`], never code.

pub mod budget;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

pub use crate::dossier::SourceAnswer;

use crate::bsn::Bsn;
use crate::config::compile::{AdapterSpec, Mapping};
use crate::mapping::MapError;
use crate::model::Call;
use crate::protocol::client::{OutResponse, Outbound, ReadError};
use crate::protocol::{rest, soap, template};
use budget::{InflightBudget, Reservation, Share};

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
    /// Our own limit too: this organisation's answers in flight already hold its share.
    #[error(
        "not read: answers in flight from `{organisation}` already fill its share of the gateway's budget, {bytes} bytes (limits.max_inflight_percent_per_organisation of limits.max_inflight_response_bytes)"
    )]
    OverShare { organisation: String, bytes: u64 },
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
    http: Outbound,
    /// The gateway's budget for answers in flight, and this organisation's share of it;
    /// `None` outside the gateway (`adapter test`).
    budget: Option<(Arc<InflightBudget>, Arc<Share>)>,
    id: Arc<str>,
    organisation: Arc<str>,
}

impl AdapterClient {
    /// A client for `spec`; it uses the adapter's own TLS client when it has one, else
    /// `shared`.
    pub fn new(spec: Arc<AdapterSpec>, shared: &Outbound) -> Self {
        let http = spec.http.clone().unwrap_or_else(|| shared.clone());
        AdapterClient {
            id: Arc::from(spec.def.id.as_str()),
            organisation: Arc::from(spec.def.organisation.as_str()),
            spec,
            http,
            budget: None,
        }
    }

    /// This client, reading its answers within `budget` and its organisation's share of it.
    pub fn with_budget(mut self, budget: Arc<InflightBudget>) -> Self {
        let share = budget.share(&self.organisation);
        self.budget = Some((budget, share));
        self
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The organisation's id, shared by every report of this source.
    pub fn organisation(&self) -> &Arc<str> {
        &self.organisation
    }

    pub fn timeout(&self) -> Duration {
        self.spec.def.timeout.0
    }

    /// Calls the source once and maps its answer. The caller applies the timeout.
    pub async fn fetch(&self, ctx: &CallContext) -> Result<SourceAnswer, SourceError> {
        let vars = [("bsn", ctx.bsn.as_str())];
        let Some(url) = self.spec.endpoint.clone() else {
            return Err(SourceError::Transport(format!(
                "the adapter's endpoint `{}` is not a URL",
                self.spec.url
            )));
        };
        let req = match self.spec.def.call() {
            Some(Call::Soap(soap)) => {
                let id = uuid::Uuid::new_v4().to_string();
                soap::request(
                    &self.spec.url,
                    url,
                    soap,
                    &id,
                    &template::render_xml(&soap.body, &vars),
                )
            }
            Some(Call::Rest(r)) => rest::request(
                url,
                r,
                |h| template::render_plain(h, &vars),
                r.body.as_ref().map(|b| template::render_json(b, &vars)),
            ),
            None => {
                return Err(SourceError::Transport(
                    "the adapter's protocol has no request block".into(),
                ));
            }
        };
        let mut req =
            req.map_err(|e| SourceError::Transport(format!("the request cannot be built: {e}")))?;
        if let Some(tp) = &ctx.traceparent
            && let Ok(v) = http::HeaderValue::from_str(tp)
        {
            req.headers_mut().insert("traceparent", v);
        }
        let resp = self.http.send(req).await.map_err(|e| transport_error(&e))?;
        let status = resp.status();
        // The media type without parameters, when the source named one.
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
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
            Some((budget, share)) => budget.reservation(Some(share)),
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
        crate::mapping::check_records(&sections, &self.spec.limits).map_err(SourceError::Map)?;
        Ok(SourceAnswer {
            adapter: self.id.clone(),
            organisation: self.organisation.clone(),
            fetched_at: Utc::now(),
            sections,
            bytes,
        })
    }
}

fn transport_error(e: &(dyn std::error::Error + 'static)) -> SourceError {
    if let Some(t) = tls_failure(e) {
        return SourceError::Tls(t);
    }
    // The chain of causes says what really happened (refused, reset). No error here names the
    // URL: the status already names the adapter, and an operator's URL may hold a value from
    // the environment that a partner testing its adapter must not see.
    SourceError::Transport(crate::protocol::client::describe(e))
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

/// Reads the body up to `cap` bytes ([`crate::protocol::client::read_capped`]). Twice the
/// buffer's capacity is held in `held` before it is allocated: the bytes, and an allowance for
/// the records mapped from them.
async fn read_capped(
    resp: OutResponse,
    cap: u64,
    held: &mut Reservation,
) -> Result<Vec<u8>, SourceError> {
    crate::protocol::client::read_capped(resp.into_body(), cap, |n| held.hold(2 * n))
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => SourceError::TooLarge(cap),
            ReadError::Transport(e) => transport_error(&e),
            ReadError::Held(e) => e,
        })
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
    Some(crate::mapping::untrusted_text(t, 200))
}
