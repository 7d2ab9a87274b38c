//! The SOAP toolkit of the fixture services: a namespace-aware scan of small XML documents,
//! SOAP 1.1 and 1.2 envelopes (a request's media type, envelope and operation checked; an answer
//! wrapped), Faults in each version's form with the status its HTTP binding prescribes, and the
//! check of a stored answer that goes inside a Body.
//!
//! **Must not**: know an organisation's messages (those are in `stuf_bg`, `uwv` and `svb`), or
//! serve as a general XML parser: it holds whole documents of a few KiB in memory.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::{is_bsn_shaped, media_type, text_response};

pub(super) const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(super) const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

/// Deepest XML nesting accepted in a request or fixture.
const MAX_XML_DEPTH: usize = 32;

/// A name resolved to namespace URI + local name (empty URI: no namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct XName {
    pub(super) ns: String,
    pub(super) local: String,
}

impl XName {
    pub(super) fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }
}

/// One element of a scanned XML document: its full path from the root, and its own text.
#[derive(Debug)]
pub(super) struct XElem {
    pub(super) path: Vec<XName>,
    pub(super) text: String,
}

// ---------------------------------------------------------------------------------------------
// XML scanning (requests and fixtures)
// ---------------------------------------------------------------------------------------------

fn resolved_ns(res: ResolveResult<'_>) -> Result<String, String> {
    match res {
        ResolveResult::Bound(ns) => Ok(ns.0.to_owned()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => Err(format!("prefix `{prefix}` is not declared")),
    }
}

/// Streams a document with the namespace-aware reader and lists every element in document
/// order with its resolved path and text. Refuses a DOCTYPE, unknown entities, undeclared
/// prefixes, several roots and nesting deeper than [`MAX_XML_DEPTH`]. Fine for the small
/// requests and fixtures this server handles; the gateway's own mapping streams instead.
pub(super) fn scan_xml(xml: &str) -> Result<Vec<XElem>, String> {
    let mut reader = NsReader::from_str(xml);
    let mut out: Vec<XElem> = Vec::new();
    // (path so far, index into `out` of the open element)
    let mut stack: Vec<usize> = Vec::new();
    let mut seen_root = false;
    loop {
        let (res, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        let ns = resolved_ns(res)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if stack.is_empty() && seen_root {
                    return Err("more than one root element".into());
                }
                seen_root = true;
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(format!("nested deeper than {MAX_XML_DEPTH} levels"));
                }
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| e.to_string())?;
                    if attr.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (res, _) = reader.resolver().resolve_attribute(attr.key);
                    resolved_ns(res)?;
                }
                let mut path = match stack.last() {
                    Some(&parent) => out[parent].path.clone(),
                    None => Vec::new(),
                };
                path.push(XName {
                    ns,
                    local: e.local_name().as_ref().to_owned(),
                });
                out.push(XElem {
                    path,
                    text: String::new(),
                });
                if matches!(event, Event::Start(_)) {
                    stack.push(out.len() - 1);
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) => {
                if let Some(&top) = stack.last() {
                    out[top].text.push_str(&t.xml10_content());
                }
            }
            Event::CData(c) => {
                if let Some(&top) = stack.last() {
                    out[top].text.push_str(&c.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = r.xml10_content();
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity `&{name};`"))?
                            .to_owned()
                    }
                };
                if let Some(&top) = stack.last() {
                    out[top].text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE is not allowed".into()),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    if out.is_empty() {
        return Err("no element found".into());
    }
    Ok(out)
}

/// The element at exactly this path from the root.
pub(super) fn find<'a>(elems: &'a [XElem], path: &[(&str, &str)]) -> Option<&'a XElem> {
    elems.iter().find(|e| {
        e.path.len() == path.len() && e.path.iter().zip(path).all(|(n, (ns, l))| n.is(ns, l))
    })
}

/// Checks an XML fixture (well-formed, no DTD, expected root, BSN equal to the file name) and
/// returns it without XML declaration, ready to be placed inside a SOAP Body.
pub(super) fn checked_xml_fixture(
    text: &str,
    bsn: &str,
    root: (&str, &str),
    bsn_path: &[(&str, &str)],
) -> Result<String, String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let body = if text.starts_with("<?xml") {
        match text.find("?>") {
            Some(end) => text[end + 2..].trim(),
            None => return Err("unterminated XML declaration".into()),
        }
    } else {
        text
    };
    let elems = scan_xml(body).map_err(|e| format!("not well-formed XML: {e}"))?;
    let found_root = elems.first().and_then(|e| e.path.first());
    if !found_root.is_some_and(|r| r.is(root.0, root.1)) {
        return Err(format!(
            "root element must be {{{}}}{}, found {:?}",
            root.0, root.1, found_root
        ));
    }
    let stored = find(&elems, bsn_path).map(|e| e.text.trim());
    if stored != Some(bsn) {
        return Err(format!("BSN {stored:?} does not match the file name"));
    }
    Ok(body.to_owned())
}

// ---------------------------------------------------------------------------------------------
// SOAP
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    fn envelope_ns(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_NS,
            SoapVersion::V12 => SOAP12_NS,
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml",
            SoapVersion::V12 => "application/soap+xml",
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// Who is to blame for a fault. SOAP 1.1 says `Client`/`Server`, SOAP 1.2 `Sender`/`Receiver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    VersionMismatch,
    Sender,
}

#[derive(Debug)]
pub(super) struct Fault {
    kind: FaultKind,
    /// Dutch, for the `faultstring` / `env:Text xml:lang="nl"`.
    reason: String,
    /// HTTP status; `None`: what the SOAP version's HTTP binding prescribes.
    status: Option<StatusCode>,
}

impl Fault {
    pub(super) fn sender(reason: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Sender,
            reason: reason.into(),
            status: None,
        }
    }

    /// Renders the fault in the given SOAP version, with the envelope prefix the service uses.
    pub(super) fn into_response(self, version: SoapVersion, prefix: &str) -> Response {
        let reason = escape(self.reason.as_str());
        let (body, status) = match version {
            SoapVersion::V11 => {
                let code = match self.kind {
                    FaultKind::VersionMismatch => "VersionMismatch",
                    FaultKind::Sender => "Client",
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                     <{prefix}:Envelope xmlns:{prefix}=\"{SOAP11_NS}\">\
                     <{prefix}:Body><{prefix}:Fault>\
                     <faultcode>{prefix}:{code}</faultcode>\
                     <faultstring>{reason}</faultstring>\
                     </{prefix}:Fault></{prefix}:Body></{prefix}:Envelope>\n"
                );
                // SOAP 1.1 over HTTP: every fault is a 500.
                (body, StatusCode::INTERNAL_SERVER_ERROR)
            }
            SoapVersion::V12 => {
                let (code, status) = match self.kind {
                    FaultKind::VersionMismatch => {
                        ("VersionMismatch", StatusCode::INTERNAL_SERVER_ERROR)
                    }
                    // SOAP 1.2 HTTP binding: env:Sender faults go out as 400.
                    FaultKind::Sender => ("Sender", StatusCode::BAD_REQUEST),
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                     <{prefix}:Envelope xmlns:{prefix}=\"{SOAP12_NS}\">\
                     <{prefix}:Body><{prefix}:Fault>\
                     <{prefix}:Code><{prefix}:Value>{prefix}:{code}</{prefix}:Value></{prefix}:Code>\
                     <{prefix}:Reason><{prefix}:Text xml:lang=\"nl\">{reason}</{prefix}:Text></{prefix}:Reason>\
                     </{prefix}:Fault></{prefix}:Body></{prefix}:Envelope>\n"
                );
                (body, status)
            }
        };
        text_response(self.status.unwrap_or(status), version.content_type(), body)
    }
}

/// One SOAP service: the SOAP version it speaks, the envelope prefix it answers with, and the
/// one operation it knows (namespace URI, local name).
pub(super) struct Service {
    pub(super) version: SoapVersion,
    pub(super) prefix: &'static str,
    pub(super) operation: (&'static str, &'static str),
}

impl Service {
    /// The service's answer to one request: a Fault for a request whose media type, envelope or
    /// operation is wrong, or that `answer` refuses; else the envelope `answer` writes.
    pub(super) fn respond(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        answer: impl FnOnce(&SoapRequest) -> Result<String, Fault>,
    ) -> Response {
        let envelope = parse_soap(self.version, headers, body).and_then(|req| {
            check_operation(&req, self.operation)?;
            answer(&req)
        });
        match envelope {
            Ok(envelope) => text_response(StatusCode::OK, self.version.content_type(), envelope),
            Err(fault) => fault.into_response(self.version, self.prefix),
        }
    }

    /// An envelope that holds a Body only, with `inner` (the operation's answer) in it.
    pub(super) fn envelope(&self, inner: &str) -> String {
        let (prefix, ns) = (self.prefix, self.version.envelope_ns());
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <{prefix}:Envelope xmlns:{prefix}=\"{ns}\">\n<{prefix}:Body>\n{inner}\n</{prefix}:Body>\n</{prefix}:Envelope>\n"
        )
    }
}

/// What a SOAP service that is down answers: 503 in plain text, as a load balancer would.
pub(super) fn unavailable() -> Response {
    let mut resp = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "Service tijdelijk niet beschikbaar\n".to_owned(),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// A parsed SOAP request: every element, plus the first child of the Body (the operation).
pub(super) struct SoapRequest {
    version: SoapVersion,
    elems: Vec<XElem>,
    operation: XName,
}

impl SoapRequest {
    /// Text of the element at `rest` below the operation element (found by URI + local name).
    fn text_below_operation(&self, rest: &[(&str, &str)]) -> Option<&str> {
        let env = self.version.envelope_ns();
        self.elems
            .iter()
            .find(|e| {
                e.path.len() == 3 + rest.len()
                    && e.path[0].is(env, "Envelope")
                    && e.path[1].is(env, "Body")
                    && e.path[2] == self.operation
                    && e.path[3..].iter().zip(rest).all(|(n, (ns, l))| n.is(ns, l))
            })
            .map(|e| e.text.trim())
    }

    /// The BSN at `rest` below the operation element; a Fault naming it as `element` when it is
    /// missing or not nine digits.
    pub(super) fn bsn(&self, rest: &[(&str, &str)], element: &str) -> Result<&str, Fault> {
        match self.text_below_operation(rest) {
            None | Some("") => Err(Fault::sender(format!(
                "Element {element} ontbreekt in het verzoek"
            ))),
            Some(v) if is_bsn_shaped(v) => Ok(v),
            Some(_) => Err(Fault::sender(format!(
                "Element {element} bevat geen geldig burgerservicenummer (negen cijfers)"
            ))),
        }
    }

    /// Text of a SOAP header block, e.g. `wsa:MessageID`.
    pub(super) fn header(&self, ns: &str, local: &str) -> Option<&str> {
        let env = self.version.envelope_ns();
        find(
            &self.elems,
            &[(env, "Envelope"), (env, "Header"), (ns, local)],
        )
        .map(|e| e.text.trim())
    }
}

/// Checks the media type and envelope of a SOAP request and finds its operation.
fn parse_soap(
    version: SoapVersion,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SoapRequest, Fault> {
    let got = media_type(headers);
    if got.as_deref() != Some(version.media_type()) {
        return Err(Fault {
            kind: FaultKind::Sender,
            reason: format!(
                "Content-Type {} wordt niet ondersteund; deze dienst verwacht {}",
                got.as_deref().unwrap_or("(ontbreekt)"),
                version.media_type()
            ),
            status: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| Fault::sender("Het bericht is niet in UTF-8 gecodeerd"))?;
    let elems = scan_xml(text)
        .map_err(|e| Fault::sender(format!("Het bericht is geen geldige XML: {e}")))?;
    let root = &elems[0].path[0];
    if root.local != "Envelope" || !(root.ns == SOAP11_NS || root.ns == SOAP12_NS) {
        return Err(Fault::sender("Het bericht is geen SOAP-envelop"));
    }
    if root.ns != version.envelope_ns() {
        let expected = match version {
            SoapVersion::V11 => "SOAP 1.1",
            SoapVersion::V12 => "SOAP 1.2",
        };
        return Err(Fault {
            kind: FaultKind::VersionMismatch,
            reason: format!("Verkeerde SOAP-versie: deze dienst spreekt {expected}"),
            status: None,
        });
    }
    let env = version.envelope_ns();
    let operation = elems
        .iter()
        .find(|e| e.path.len() == 3 && e.path[1].is(env, "Body"))
        .map(|e| e.path[2].clone())
        .ok_or_else(|| Fault::sender("De SOAP Body is leeg of ontbreekt"))?;
    Ok(SoapRequest {
        version,
        elems,
        operation,
    })
}

fn check_operation(req: &SoapRequest, (ns, local): (&str, &str)) -> Result<(), Fault> {
    if req.operation.is(ns, local) {
        Ok(())
    } else {
        Err(Fault::sender(format!(
            "Onbekende operatie {{{}}}{}; deze dienst kent alleen {{{ns}}}{local}",
            req.operation.ns, req.operation.local
        )))
    }
}
