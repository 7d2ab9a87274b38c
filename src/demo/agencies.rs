//! The fixture agency server: the chain partners' services, played on loopback from files.
//!
//! [`AgencyServer`] is one real HTTP server (axum) that answers, under path prefixes of one
//! port, the way the real services of the demo organisations answer:
//!
//! | org key     | path                                                | speaks                                  |
//! |-------------|-----------------------------------------------------|-----------------------------------------|
//! | `brp`       | `POST /brp/haalcentraal/api/brp/personen`           | Haal Centraal BRP Personen 2.x (JSON)   |
//! | `stuf-bg`   | `POST /gemeente/stuf-bg/BGService`                  | StUF-BG 0310 `npsLv01`/`npsLa01`, SOAP 1.1 |
//! | `uwv`       | `POST /uwv/UitkeringenService`                      | SOAP 1.1 with WUS WS-Addressing         |
//! | `svb`       | `POST /svb/RegelingenService`                       | SOAP 1.2                                |
//! | `toeslagen` | `POST /belastingdienst/toeslagen/api/v1/toeslagen/_zoek` | REST/JSON                          |
//!
//! The BSN never appears in a URL: it travels in the request body, as with the real services.
//!
//! **Owns**: loading `fixtures/agencies/<org>/<bsn>.<ext>` once at start (a malformed file is a
//! startup error naming the file), validating requests the way the real services do (400
//! `application/problem+json` with `invalidParams`, SOAP 1.1 / 1.2 Faults), wrapping the stored
//! answers in the right envelope, and two test hooks: [`AgencyServer::hits`] (requests per path)
//! and [`AgencyServer::set_down`] (an organisation answering 503).
//!
//! **Must not**: know anything about the gateway (its config, adapters or mapping). It is the
//! other side of the wire; tests and `ketenportaal demo` use it as a stand-in for the partners.
//! Requests are parsed with quick-xml's namespace-aware reader, so elements are found by
//! namespace URI + local name, whatever prefixes the caller chose.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Path of the Haal Centraal BRP Personen endpoint.
pub const BRP_PATH: &str = "/brp/haalcentraal/api/brp/personen";
/// Path of the gemeente's StUF-BG service.
pub const STUF_BG_PATH: &str = "/gemeente/stuf-bg/BGService";
/// Path of UWV's uitkeringen service.
pub const UWV_PATH: &str = "/uwv/UitkeringenService";
/// Path of SVB's regelingen service.
pub const SVB_PATH: &str = "/svb/RegelingenService";
/// Path of the Belastingdienst toeslagen search.
pub const TOESLAGEN_PATH: &str = "/belastingdienst/toeslagen/api/v1/toeslagen/_zoek";

const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const BG_NS: &str = "http://www.egem.nl/StUF/sector/bg/0310";
const STUF_NS: &str = "http://www.egem.nl/StUF/StUF0301";
const UWV_NS: &str = "urn:nl:uwv:uitkeringen:v1";
const SVB_NS: &str = "http://svb.nl/schemas/regelingen/v2";

/// The action UWV's service accepts, in `SOAPAction` and in `wsa:Action`.
const UWV_ACTION: &str = "urn:nl:uwv:uitkeringen:v1/GeefUitkeringen";

/// Largest request body any fixture service accepts; real services cap requests as well.
const MAX_REQUEST_BODY: usize = 256 * 1024;
/// Deepest XML nesting accepted in a request or fixture.
const MAX_XML_DEPTH: usize = 32;
/// Haal Centraal: at most 130 `fields`, 1 to 20 BSNs.
const BRP_MAX_FIELDS: usize = 130;
const BRP_MAX_BSNS: usize = 20;

/// Top-level properties of a Haal Centraal `Persoon` that may be asked for in `fields`.
const BRP_PERSOON_FIELDS: &[&str] = &[
    "aNummer",
    "burgerservicenummer",
    "datumEersteInschrijvingGBA",
    "datumInschrijvingInGemeente",
    "europeesKiesrecht",
    "geboorte",
    "gemeenteVanInschrijving",
    "geslacht",
    "gezag",
    "immigratie",
    "indicatieCurateleRegister",
    "indicatieGezagMinderjarige",
    "kinderen",
    "leeftijd",
    "naam",
    "nationaliteiten",
    "ouders",
    "overlijden",
    "partners",
    "uitsluitingKiesrecht",
    "verblijfplaats",
    "verblijfstitel",
    "adressering",
];

/// Properties the BRP API always delivers when present, and refuses in `fields`.
const BRP_AUTO_FIELDS: &[&str] = &[
    "geheimhoudingPersoonsgegevens",
    "inOnderzoek",
    "opschortingBijhouding",
    "rni",
    "verificatie",
];

// ---------------------------------------------------------------------------------------------
// Organisations and fixtures
// ---------------------------------------------------------------------------------------------

/// One simulated organisation service; its key is the fixture folder name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Org {
    Brp,
    StufBg,
    Uwv,
    Svb,
    Toeslagen,
}

impl Org {
    const ALL: [Org; 5] = [Org::Brp, Org::StufBg, Org::Uwv, Org::Svb, Org::Toeslagen];

    fn key(self) -> &'static str {
        match self {
            Org::Brp => "brp",
            Org::StufBg => "stuf-bg",
            Org::Uwv => "uwv",
            Org::Svb => "svb",
            Org::Toeslagen => "toeslagen",
        }
    }

    fn from_key(key: &str) -> Option<Org> {
        Org::ALL.into_iter().find(|o| o.key() == key)
    }

    fn extension(self) -> &'static str {
        match self {
            Org::Brp | Org::Toeslagen => "json",
            Org::StufBg | Org::Uwv | Org::Svb => "xml",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A name resolved to namespace URI + local name (empty URI: no namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
struct XName {
    ns: String,
    local: String,
}

impl XName {
    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }
}

/// One element of a scanned XML document: its full path from the root, and its own text.
#[derive(Debug)]
struct XElem {
    path: Vec<XName>,
    text: String,
}

/// The stored answers, by BSN, loaded once at start.
#[derive(Debug, Default)]
struct Fixtures {
    /// One Haal Centraal `Persoon` object per BSN.
    brp: HashMap<String, Value>,
    /// The `BG:npsLa01` element, as text, ready to go inside a SOAP Body.
    stuf_bg: HashMap<String, String>,
    /// The `GeefUitkeringenResponse` element.
    uwv: HashMap<String, String>,
    /// The `svb:RegelingenAntwoord` element.
    svb: HashMap<String, String>,
    /// The whole toeslagen answer document.
    toeslagen: HashMap<String, Value>,
}

/// Fixture dates that must stay "soon" whenever the demo runs are written `{{today+48d}}` (or
/// `-Nd`) and become ISO dates relative to `today`, so "your WW ends within three months" stays
/// true for the demo citizen next year too.
pub fn relative_dates(text: &str, today: chrono::NaiveDate) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{today") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let spec = &after[..j];
        let days: Option<i64> = spec
            .strip_suffix('d')
            .and_then(|n| n.strip_prefix('+').unwrap_or(n).parse().ok());
        match days.and_then(|d| today.checked_add_signed(chrono::Duration::days(d))) {
            Some(d) => out.push_str(&d.format("%Y-%m-%d").to_string()),
            None => out.push_str(&rest[i..i + 7 + j + 2]),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

fn fixture_error(path: &Path, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("fixture {}: {msg}", path.display()),
    )
}

fn is_bsn_shaped(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit())
}

impl Fixtures {
    /// Reads every `<org>/<bsn>.<ext>` below `dir`. A missing org folder means that
    /// organisation knows nobody; anything unreadable or malformed is an error naming the file.
    fn load(dir: &Path) -> io::Result<Fixtures> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fixture folder {} does not exist", dir.display()),
            ));
        }
        let mut fx = Fixtures::default();
        for org in Org::ALL {
            let org_dir = dir.join(org.key());
            if !org_dir.exists() {
                continue;
            }
            let mut entries: Vec<_> = std::fs::read_dir(&org_dir)
                .map_err(|e| fixture_error(&org_dir, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fixture_error(&org_dir, e))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let Some(bsn) = name
                    .strip_suffix(org.extension())
                    .and_then(|s| s.strip_suffix('.'))
                    .filter(|s| is_bsn_shaped(s))
                    .map(str::to_owned)
                else {
                    return Err(fixture_error(
                        &path,
                        format!(
                            "unexpected file name; fixtures are named <bsn>.{} (nine digits)",
                            org.extension()
                        ),
                    ));
                };
                let text = std::fs::read_to_string(&path).map_err(|e| fixture_error(&path, e))?;
                let text = relative_dates(&text, chrono::Utc::now().date_naive());
                fx.add(org, bsn, &text)
                    .map_err(|e| fixture_error(&path, e))?;
            }
        }
        Ok(fx)
    }

    fn add(&mut self, org: Org, bsn: String, text: &str) -> Result<(), String> {
        match org {
            Org::Brp => {
                let doc: Value =
                    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                let personen = doc
                    .get("personen")
                    .and_then(Value::as_array)
                    .ok_or("no `personen` array")?;
                let [persoon] = personen.as_slice() else {
                    return Err("`personen` must hold exactly one person".into());
                };
                if !persoon.is_object() {
                    return Err("the person is not a JSON object".into());
                }
                let stored = persoon.get("burgerservicenummer").and_then(Value::as_str);
                if stored != Some(bsn.as_str()) {
                    return Err(format!(
                        "burgerservicenummer {stored:?} does not match the file name"
                    ));
                }
                self.brp.insert(bsn, persoon.clone());
            }
            Org::Toeslagen => {
                let doc: Value =
                    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                let stored = doc.get("bsn").and_then(Value::as_str);
                if stored != Some(bsn.as_str()) {
                    return Err(format!("bsn {stored:?} does not match the file name"));
                }
                for key in ["toeslagen", "inkomen"] {
                    if !doc.get(key).is_some_and(Value::is_array) {
                        return Err(format!("`{key}` must be an array"));
                    }
                }
                self.toeslagen.insert(bsn, doc);
            }
            Org::StufBg => {
                let xml = checked_xml_fixture(
                    text,
                    &bsn,
                    (BG_NS, "npsLa01"),
                    &[
                        (BG_NS, "npsLa01"),
                        (BG_NS, "antwoord"),
                        (BG_NS, "object"),
                        (BG_NS, "inp.bsn"),
                    ],
                )?;
                self.stuf_bg.insert(bsn, xml);
            }
            Org::Uwv => {
                let xml = checked_xml_fixture(
                    text,
                    &bsn,
                    (UWV_NS, "GeefUitkeringenResponse"),
                    &[
                        (UWV_NS, "GeefUitkeringenResponse"),
                        (UWV_NS, "klant"),
                        (UWV_NS, "bsn"),
                    ],
                )?;
                self.uwv.insert(bsn, xml);
            }
            Org::Svb => {
                let xml = checked_xml_fixture(
                    text,
                    &bsn,
                    (SVB_NS, "RegelingenAntwoord"),
                    &[(SVB_NS, "RegelingenAntwoord"), (SVB_NS, "bsn")],
                )?;
                self.svb.insert(bsn, xml);
            }
        }
        Ok(())
    }
}

/// Checks an XML fixture (well-formed, no DTD, expected root, BSN equal to the file name) and
/// returns it without XML declaration, ready to be placed inside a SOAP Body.
fn checked_xml_fixture(
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
fn scan_xml(xml: &str) -> Result<Vec<XElem>, String> {
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
fn find<'a>(elems: &'a [XElem], path: &[(&str, &str)]) -> Option<&'a XElem> {
    elems.iter().find(|e| {
        e.path.len() == path.len() && e.path.iter().zip(path).all(|(n, (ns, l))| n.is(ns, l))
    })
}

// ---------------------------------------------------------------------------------------------
// SOAP
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SoapVersion {
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

    fn content_type(self) -> &'static str {
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
struct Fault {
    kind: FaultKind,
    /// Dutch, for the `faultstring` / `env:Text xml:lang="nl"`.
    reason: String,
    /// HTTP status; `None`: what the SOAP version's HTTP binding prescribes.
    status: Option<StatusCode>,
}

impl Fault {
    fn sender(reason: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Sender,
            reason: reason.into(),
            status: None,
        }
    }

    /// Renders the fault in the given SOAP version, with the envelope prefix the service uses.
    fn into_response(self, version: SoapVersion, prefix: &str) -> Response {
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

/// A parsed SOAP request: every element, plus the first child of the Body (the operation).
struct SoapRequest {
    elems: Vec<XElem>,
    operation: XName,
}

impl SoapRequest {
    /// Text of the element at `rest` below the operation element (found by URI + local name).
    fn text_below_operation(&self, version: SoapVersion, rest: &[(&str, &str)]) -> Option<&str> {
        let env = version.envelope_ns();
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

    /// Text of a SOAP header block, e.g. `wsa:MessageID`.
    fn header(&self, version: SoapVersion, ns: &str, local: &str) -> Option<&str> {
        let env = version.envelope_ns();
        find(
            &self.elems,
            &[(env, "Envelope"), (env, "Header"), (ns, local)],
        )
        .map(|e| e.text.trim())
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
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
    Ok(SoapRequest { elems, operation })
}

fn check_operation(req: &SoapRequest, ns: &str, local: &str) -> Result<(), Fault> {
    if req.operation.is(ns, local) {
        Ok(())
    } else {
        Err(Fault::sender(format!(
            "Onbekende operatie {{{}}}{}; deze dienst kent alleen {{{ns}}}{local}",
            req.operation.ns, req.operation.local
        )))
    }
}

fn required_bsn<'a>(value: Option<&'a str>, element: &str) -> Result<&'a str, Fault> {
    match value {
        None | Some("") => Err(Fault::sender(format!(
            "Element {element} ontbreekt in het verzoek"
        ))),
        Some(v) if is_bsn_shaped(v) => Ok(v),
        Some(_) => Err(Fault::sender(format!(
            "Element {element} bevat geen geldig burgerservicenummer (negen cijfers)"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// State shared by all handlers.
struct Shared {
    fixtures: Fixtures,
    /// Requests received per exact path.
    hits: Mutex<HashMap<String, u64>>,
    /// Per [`Org::index`]: answer 503 when set.
    down: [AtomicBool; 5],
    /// The organisations' intake of applications.
    intake: Arc<super::intake::Intake>,
}

impl Shared {
    fn hits(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        // A panic elsewhere while counting cannot leave the map inconsistent.
        self.hits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_down(&self, org: Org) -> bool {
        self.down[org.index()].load(Ordering::Relaxed)
    }
}

/// The fixture agencies, served on one loopback port. Dropping it stops the server.
pub struct AgencyServer {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for AgencyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AgencyServer {
    /// Binds `addr` (use 127.0.0.1:0 in tests) and serves the fixtures found under
    /// `fixtures_dir` (the `fixtures/agencies` folder).
    pub async fn start(fixtures_dir: &Path, addr: SocketAddr) -> io::Result<AgencyServer> {
        let fixtures = Fixtures::load(fixtures_dir)?;
        let shared = Arc::new(Shared {
            fixtures,
            hits: Mutex::new(HashMap::new()),
            down: Default::default(),
            intake: Arc::default(),
        });
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender means the same as a sent signal: stop.
                    let _ = rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "The fixture agency server stopped with an error.");
            }
        });
        Ok(AgencyServer {
            base_url: format!("http://{local}"),
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The intake of applications (ZGW zaken, toeslagen, UWV DienAanvraagIn).
    pub fn intake(&self) -> &super::intake::Intake {
        &self.shared.intake
    }

    /// Requests received on exactly this path (any method, any outcome).
    pub fn hits(&self, path: &str) -> u64 {
        self.shared.hits().get(path).copied().unwrap_or(0)
    }

    /// Makes organisation `org` (`brp`, `stuf-bg`, `uwv`, `svb`, `toeslagen`) answer 503 while
    /// `down` is true. An unknown key is logged and ignored.
    pub fn set_down(&self, org: &str, down: bool) {
        match Org::from_key(org) {
            Some(o) => self.shared.down[o.index()].store(down, Ordering::Relaxed),
            None => tracing::warn!(
                org,
                "Unknown fixture organisation; use brp, stuf-bg, uwv, svb or toeslagen."
            ),
        }
    }
}

impl Drop for AgencyServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let intake = super::intake::router(shared.intake.clone());
    Router::new()
        .route(BRP_PATH, post(brp_personen))
        .route(STUF_BG_PATH, post(stuf_bg))
        .route(UWV_PATH, post(uwv_uitkeringen))
        .route(SVB_PATH, post(svb_regelingen))
        .route(TOESLAGEN_PATH, post(toeslagen_zoek))
        .with_state(shared.clone())
        .merge(intake)
        .fallback(not_found)
        // Outermost: every request is counted, whatever its outcome (404 and 503 included).
        .layer(middleware::from_fn_with_state(shared.clone(), count_hit))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
}

async fn count_hit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    *shared
        .hits()
        .entry(req.uri().path().to_owned())
        .or_insert(0) += 1;
    next.run(req).await
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    text_response(status, "application/json", body.to_string())
}

/// An RFC 9457 problem, shaped like the Haal Centraal `Foutbericht`.
fn problem(
    status: StatusCode,
    title: &str,
    detail: &str,
    instance: &str,
    code: &str,
    invalid_params: Vec<Value>,
) -> Response {
    let section = match status.as_u16() {
        400 => "15.5.1",
        404 => "15.5.5",
        415 => "15.5.16",
        503 => "15.6.4",
        _ => "15.6.1",
    };
    let mut body = json!({
        "type": format!("https://datatracker.ietf.org/doc/html/rfc9110#section-{section}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
        "code": code,
    });
    if !invalid_params.is_empty() {
        body["invalidParams"] = Value::Array(invalid_params);
    }
    let mut resp = text_response(status, "application/problem+json", body.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

fn invalid_param(name: impl Into<String>, code: &str, reason: &str) -> Value {
    json!({"name": name.into(), "code": code, "reason": reason})
}

fn soap_unavailable() -> Response {
    let mut resp = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "Service tijdelijk niet beschikbaar\n".to_owned(),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

async fn not_found(req: Request) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Opgevraagde resource bestaat niet.",
        "Op dit pad draait geen fixture-dienst.",
        req.uri().path(),
        "notFound",
        Vec::new(),
    )
}

// ---------------------------------------------------------------------------------------------
// BRP: Haal Centraal BRP Personen
// ---------------------------------------------------------------------------------------------

/// The requested `fields` as a tree: a node marked `all` is delivered whole.
#[derive(Debug, Default)]
struct FieldTree {
    all: bool,
    children: BTreeMap<String, FieldTree>,
}

impl FieldTree {
    fn insert(&mut self, dotted: &str) {
        let mut node = self;
        for segment in dotted.split('.') {
            node = node.children.entry(segment.to_owned()).or_default();
        }
        node.all = true;
    }

    /// Keeps only the requested paths; arrays are filtered element by element, and a partial
    /// object keeps its `type` discriminator, as the real API does.
    fn project(&self, value: &Value) -> Option<Value> {
        if self.all {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, sub) in &self.children {
                    if let Some(v) = map.get(key).and_then(|v| sub.project(v)) {
                        out.insert(key.clone(), v);
                    }
                }
                if out.is_empty() {
                    return None;
                }
                if let Some(t) = map.get("type") {
                    out.entry("type").or_insert_with(|| t.clone());
                }
                Some(Value::Object(out))
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter_map(|i| self.project(i)).collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            _ => None,
        }
    }
}

fn is_field_shaped(s: &str) -> bool {
    (1..=200).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

/// A validated Haal Centraal "RaadpleegMetBurgerservicenummer" query.
struct BrpQuery {
    bsns: Vec<String>,
    fields: FieldTree,
    gemeente: Option<String>,
}

/// Validates like the real API: every problem is reported once, in `invalidParams`.
fn parse_brp_query(doc: &Value) -> Result<BrpQuery, Vec<Value>> {
    let Some(obj) = doc.as_object() else {
        return Err(vec![invalid_param(
            "body",
            "object",
            "De request body is geen JSON-object.",
        )]);
    };
    let mut errors = Vec::new();
    match obj.get("type") {
        None => errors.push(invalid_param("type", "required", "Parameter is verplicht.")),
        Some(Value::String(t)) if t == "RaadpleegMetBurgerservicenummer" => {}
        Some(_) => errors.push(invalid_param(
            "type",
            "value",
            "Waarde is geen geldig zoektype.",
        )),
    }
    for key in obj.keys() {
        if ![
            "type",
            "fields",
            "burgerservicenummer",
            "gemeenteVanInschrijving",
            "inclusiefOverledenPersonen",
        ]
        .contains(&key.as_str())
        {
            errors.push(invalid_param(
                key.as_str(),
                "unknownParam",
                "Parameter is niet verwacht.",
            ));
        }
    }

    let mut fields = FieldTree::default();
    match obj.get("fields") {
        None => errors.push(invalid_param(
            "fields",
            "required",
            "Parameter is verplicht.",
        )),
        Some(Value::Array(items)) if items.is_empty() => errors.push(invalid_param(
            "fields",
            "minItems",
            "Array bevat minder dan 1 items.",
        )),
        Some(Value::Array(items)) if items.len() > BRP_MAX_FIELDS => errors.push(invalid_param(
            "fields",
            "maxItems",
            "Array bevat meer dan 130 items.",
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let name = format!("fields[{i}]");
                match item.as_str() {
                    Some(f) if is_field_shaped(f) => {
                        let top = f.split('.').next().unwrap_or(f);
                        if BRP_AUTO_FIELDS.contains(&top) {
                            errors.push(invalid_param(
                                name,
                                "field",
                                "Dit veld wordt automatisch geleverd en mag niet in fields staan.",
                            ));
                        } else if !BRP_PERSOON_FIELDS.contains(&top) {
                            errors.push(invalid_param(
                                name,
                                "field",
                                "Parameter bevat een niet bestaande veldnaam.",
                            ));
                        } else {
                            fields.insert(f);
                        }
                    }
                    _ => errors.push(invalid_param(
                        name,
                        "pattern",
                        "Waarde voldoet niet aan patroon ^[a-zA-Z0-9\\._]{1,200}$.",
                    )),
                }
            }
        }
        Some(_) => errors.push(invalid_param("fields", "array", "Parameter is geen array.")),
    }

    let mut bsns: Vec<String> = Vec::new();
    match obj.get("burgerservicenummer") {
        None => errors.push(invalid_param(
            "burgerservicenummer",
            "required",
            "Parameter is verplicht.",
        )),
        Some(Value::Array(items)) if items.is_empty() => errors.push(invalid_param(
            "burgerservicenummer",
            "minItems",
            "Array bevat minder dan 1 items.",
        )),
        Some(Value::Array(items)) if items.len() > BRP_MAX_BSNS => errors.push(invalid_param(
            "burgerservicenummer",
            "maxItems",
            "Array bevat meer dan 20 items.",
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(b) if is_bsn_shaped(b) => {
                        if !bsns.iter().any(|x| x == b) {
                            bsns.push(b.to_owned());
                        }
                    }
                    _ => errors.push(invalid_param(
                        format!("burgerservicenummer[{i}]"),
                        "pattern",
                        "Waarde voldoet niet aan patroon ^[0-9]{9}$.",
                    )),
                }
            }
        }
        Some(_) => errors.push(invalid_param(
            "burgerservicenummer",
            "array",
            "Parameter is geen array.",
        )),
    }

    let gemeente = match obj.get("gemeenteVanInschrijving") {
        None => None,
        Some(Value::String(g)) if g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()) => {
            Some(g.clone())
        }
        Some(_) => {
            errors.push(invalid_param(
                "gemeenteVanInschrijving",
                "pattern",
                "Waarde voldoet niet aan patroon ^[0-9]{4}$.",
            ));
            None
        }
    };
    if let Some(v) = obj.get("inclusiefOverledenPersonen")
        && !v.is_boolean()
    {
        errors.push(invalid_param(
            "inclusiefOverledenPersonen",
            "boolean",
            "Waarde is geen boolean.",
        ));
    }

    if errors.is_empty() {
        Ok(BrpQuery {
            bsns,
            fields,
            gemeente,
        })
    } else {
        Err(errors)
    }
}

async fn brp_personen(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.is_down(Org::Brp) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "De BRP-bevragingsdienst is tijdelijk niet beschikbaar.",
            "Probeer het later opnieuw.",
            BRP_PATH,
            "notAvailable",
            Vec::new(),
        );
    }
    if media_type(&headers).as_deref() != Some("application/json") {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Media Type wordt niet ondersteund.",
            "Stuur de vraag als application/json.",
            BRP_PATH,
            "unsupported",
            Vec::new(),
        );
    }
    let bad_request = |params: Vec<Value>| {
        problem(
            StatusCode::BAD_REQUEST,
            "Een of meerdere parameters zijn niet correct.",
            "De foutieve parameter(s) zijn: zie invalidParams.",
            BRP_PATH,
            "paramsValidation",
            params,
        )
    };
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(doc) => doc,
        Err(_) => {
            return bad_request(vec![invalid_param(
                "body",
                "json",
                "De request body is geen geldige JSON.",
            )]);
        }
    };
    let query = match parse_brp_query(&doc) {
        Ok(q) => q,
        Err(params) => return bad_request(params),
    };
    let personen: Vec<Value> = query
        .bsns
        .iter()
        .filter_map(|bsn| shared.fixtures.brp.get(bsn))
        .filter(|p| match &query.gemeente {
            None => true,
            Some(code) => {
                p.pointer("/gemeenteVanInschrijving/code")
                    .and_then(Value::as_str)
                    == Some(code.as_str())
            }
        })
        .map(|p| {
            let mut out = match query.fields.project(p) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for auto in BRP_AUTO_FIELDS {
                if let Some(v) = p.get(*auto) {
                    out.insert((*auto).to_owned(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect();
    let mut resp = json_response(
        StatusCode::OK,
        &json!({"type": "RaadpleegMetBurgerservicenummer", "personen": personen}),
    );
    resp.headers_mut()
        .insert("api-version", HeaderValue::from_static("2.7.0"));
    resp
}

// ---------------------------------------------------------------------------------------------
// Gemeente: StUF-BG 0310
// ---------------------------------------------------------------------------------------------

/// An `npsLa01` without objects: the gemeente does not know this person.
fn empty_nps_la01() -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    let reference = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "<BG:npsLa01 xmlns:BG=\"{BG_NS}\" xmlns:StUF=\"{STUF_NS}\">\n\
         \x20 <BG:stuurgegevens>\n\
         \x20   <StUF:berichtcode>La01</StUF:berichtcode>\n\
         \x20   <StUF:zender><StUF:organisatie>0344</StUF:organisatie><StUF:applicatie>BGKoppelvlak</StUF:applicatie></StUF:zender>\n\
         \x20   <StUF:ontvanger><StUF:organisatie>ketenportaal</StUF:organisatie><StUF:applicatie>ketenportaal</StUF:applicatie></StUF:ontvanger>\n\
         \x20   <StUF:referentienummer>{reference}</StUF:referentienummer>\n\
         \x20   <StUF:tijdstipBericht>{now}</StUF:tijdstipBericht>\n\
         \x20   <StUF:entiteittype>NPS</StUF:entiteittype>\n\
         \x20 </BG:stuurgegevens>\n\
         \x20 <BG:parameters><StUF:indicatorVervolgvraag>false</StUF:indicatorVervolgvraag></BG:parameters>\n\
         \x20 <BG:antwoord/>\n\
         </BG:npsLa01>"
    )
}

async fn stuf_bg(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    const V: SoapVersion = SoapVersion::V11;
    const PREFIX: &str = "SOAP-ENV";
    if shared.is_down(Org::StufBg) {
        return soap_unavailable();
    }
    let answer = parse_soap(V, &headers, &body).and_then(|req| {
        check_operation(&req, BG_NS, "npsLv01")?;
        let bsn = required_bsn(
            req.text_below_operation(V, &[(BG_NS, "gelijk"), (BG_NS, "inp.bsn")]),
            "BG:gelijk/BG:inp.bsn",
        )?;
        Ok(match shared.fixtures.stuf_bg.get(bsn) {
            Some(xml) => xml.clone(),
            None => empty_nps_la01(),
        })
    });
    match answer {
        Ok(inner) => text_response(
            StatusCode::OK,
            V.content_type(),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <{PREFIX}:Envelope xmlns:{PREFIX}=\"{SOAP11_NS}\">\n<{PREFIX}:Body>\n{inner}\n</{PREFIX}:Body>\n</{PREFIX}:Envelope>\n"
            ),
        ),
        Err(fault) => fault.into_response(V, PREFIX),
    }
}

// ---------------------------------------------------------------------------------------------
// UWV: SOAP 1.1 with WUS WS-Addressing
// ---------------------------------------------------------------------------------------------

async fn uwv_uitkeringen(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const V: SoapVersion = SoapVersion::V11;
    const PREFIX: &str = "soapenv";
    if shared.is_down(Org::Uwv) {
        return soap_unavailable();
    }
    let soap_action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let answer = parse_soap(V, &headers, &body).and_then(|req| {
        check_operation(&req, UWV_NS, "GeefUitkeringen")?;
        // Digikoppeling WUS: SOAPAction is empty or equal to wsa:Action.
        let wsa_action = req.header(V, WSA_NS, "Action");
        if let Some(action) = wsa_action
            && action != UWV_ACTION
        {
            return Err(Fault::sender(format!(
                "wsa:Action {action} wordt niet ondersteund; verwacht {UWV_ACTION}"
            )));
        }
        if !soap_action.is_empty() && soap_action != wsa_action.unwrap_or(UWV_ACTION) {
            return Err(Fault::sender(format!(
                "SOAPAction {soap_action} komt niet overeen met wsa:Action {}",
                wsa_action.unwrap_or(UWV_ACTION)
            )));
        }
        let bsn = required_bsn(
            req.text_below_operation(V, &[(UWV_NS, "bsn")]),
            "GeefUitkeringen/bsn",
        )?;
        let inner = match shared.fixtures.uwv.get(bsn) {
            Some(xml) => xml.clone(),
            None => format!(
                "<GeefUitkeringenResponse xmlns=\"{UWV_NS}\">\n  <uitkeringen/>\n</GeefUitkeringenResponse>"
            ),
        };
        let relates_to = req
            .header(V, WSA_NS, "MessageID")
            .filter(|id| !id.is_empty())
            .map(|id| format!("    <wsa:RelatesTo>{}</wsa:RelatesTo>\n", escape(id)))
            .unwrap_or_default();
        Ok((inner, relates_to))
    });
    match answer {
        Ok((inner, relates_to)) => {
            let message_id = uuid::Uuid::new_v4();
            text_response(
                StatusCode::OK,
                V.content_type(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                     <{PREFIX}:Envelope xmlns:{PREFIX}=\"{SOAP11_NS}\" xmlns:wsa=\"{WSA_NS}\">\n\
                     \x20 <{PREFIX}:Header>\n\
                     \x20   <wsa:Action>{UWV_ACTION}Response</wsa:Action>\n\
                     \x20   <wsa:MessageID>urn:uuid:{message_id}</wsa:MessageID>\n\
                     {relates_to}\
                     \x20   <wsa:To>http://www.w3.org/2005/08/addressing/anonymous</wsa:To>\n\
                     \x20 </{PREFIX}:Header>\n\
                     \x20 <{PREFIX}:Body>\n{inner}\n  </{PREFIX}:Body>\n</{PREFIX}:Envelope>\n"
                ),
            )
        }
        Err(fault) => fault.into_response(V, PREFIX),
    }
}

// ---------------------------------------------------------------------------------------------
// SVB: SOAP 1.2
// ---------------------------------------------------------------------------------------------

async fn svb_regelingen(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const V: SoapVersion = SoapVersion::V12;
    const PREFIX: &str = "env";
    if shared.is_down(Org::Svb) {
        return soap_unavailable();
    }
    let answer = parse_soap(V, &headers, &body).and_then(|req| {
        check_operation(&req, SVB_NS, "RegelingenVraag")?;
        let bsn = required_bsn(
            req.text_below_operation(V, &[(SVB_NS, "bsn")]),
            "RegelingenVraag/bsn",
        )?;
        Ok(match shared.fixtures.svb.get(bsn) {
            Some(xml) => xml.clone(),
            None => format!(
                "<svb:RegelingenAntwoord xmlns:svb=\"{SVB_NS}\">\n  <svb:bsn>{bsn}</svb:bsn>\n</svb:RegelingenAntwoord>"
            ),
        })
    });
    match answer {
        Ok(inner) => text_response(
            StatusCode::OK,
            V.content_type(),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <{PREFIX}:Envelope xmlns:{PREFIX}=\"{SOAP12_NS}\">\n<{PREFIX}:Body>\n{inner}\n</{PREFIX}:Body>\n</{PREFIX}:Envelope>\n"
            ),
        ),
        Err(fault) => fault.into_response(V, PREFIX),
    }
}

// ---------------------------------------------------------------------------------------------
// Belastingdienst: toeslagen (REST)
// ---------------------------------------------------------------------------------------------

async fn toeslagen_zoek(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.is_down(Org::Toeslagen) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Toeslagen is tijdelijk niet beschikbaar.",
            "Probeer het later opnieuw.",
            TOESLAGEN_PATH,
            "notAvailable",
            Vec::new(),
        );
    }
    if media_type(&headers).as_deref() != Some("application/json") {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Media Type wordt niet ondersteund.",
            "Stuur de vraag als application/json.",
            TOESLAGEN_PATH,
            "unsupported",
            Vec::new(),
        );
    }
    let bad_request = |param: Value| {
        problem(
            StatusCode::BAD_REQUEST,
            "Ongeldige vraag.",
            "De vraag bevat een of meer fouten; zie invalidParams.",
            TOESLAGEN_PATH,
            "paramsValidation",
            vec![param],
        )
    };
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(doc) => doc,
        Err(_) => {
            return bad_request(invalid_param(
                "body",
                "json",
                "De request body is geen geldige JSON.",
            ));
        }
    };
    let bsn = match doc.get("bsn") {
        None => return bad_request(invalid_param("bsn", "required", "Parameter is verplicht.")),
        Some(Value::String(b)) if is_bsn_shaped(b) => b.as_str(),
        Some(_) => {
            return bad_request(invalid_param(
                "bsn",
                "pattern",
                "Waarde voldoet niet aan patroon ^[0-9]{9}$.",
            ));
        }
    };
    let answer = match shared.fixtures.toeslagen.get(bsn) {
        Some(doc) => doc.clone(),
        None => json!({"bsn": bsn, "toeslagen": [], "inkomen": []}),
    };
    json_response(StatusCode::OK, &answer)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/agencies");
    const BSNS: [&str; 6] = crate::bsn::TEST_BSNS;

    async fn start() -> AgencyServer {
        AgencyServer::start(Path::new(FIXTURES), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("fixture server starts")
    }

    async fn post(
        server: &AgencyServer,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, String, String) {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", server.base_url()))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request is sent");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    async fn post_json(
        server: &AgencyServer,
        path: &str,
        body: Value,
    ) -> (StatusCode, String, Value) {
        let (status, ct, text) =
            post(server, path, "application/json", &[], body.to_string()).await;
        (
            status,
            ct,
            serde_json::from_str(&text).expect("JSON answer"),
        )
    }

    fn text_at<'a>(elems: &'a [XElem], path: &[(&str, &str)]) -> Option<&'a str> {
        find(elems, path).map(|e| e.text.trim())
    }

    // ---- fixtures ---------------------------------------------------------------------------

    #[test]
    fn every_fixture_loads_and_every_person_is_at_brp_and_stuf_bg() {
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for bsn in BSNS {
            assert!(fx.brp.contains_key(bsn), "{bsn} at brp");
            assert!(fx.stuf_bg.contains_key(bsn), "{bsn} at stuf-bg");
        }
        assert_eq!(fx.brp.len(), 6);
        assert_eq!(fx.uwv.len(), 2);
        assert_eq!(fx.svb.len(), 4);
        assert_eq!(fx.toeslagen.len(), 5);
    }

    /// BRP `leeftijd` is stored, so it must agree with `geboorte.datum` on the demo's "today".
    #[test]
    fn brp_ages_match_birth_dates_on_the_reference_date() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for (bsn, p) in &fx.brp {
            let born = p
                .pointer("/geboorte/datum/datum")
                .and_then(Value::as_str)
                .unwrap();
            let born = chrono::NaiveDate::parse_from_str(born, "%Y-%m-%d").unwrap();
            let age = today.years_since(born).unwrap();
            assert_eq!(p["leeftijd"], json!(age), "{bsn}");
        }
    }

    /// The gemeente's StUF-BG copy agrees with the BRP (the planted conflict lives at UWV).
    #[test]
    fn stuf_bg_agrees_with_brp() {
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for bsn in BSNS {
            let p = &fx.brp[bsn];
            let elems = scan_xml(&fx.stuf_bg[bsn]).unwrap();
            let obj = [(BG_NS, "npsLa01"), (BG_NS, "antwoord"), (BG_NS, "object")];
            let at = |rest: &[(&'static str, &'static str)]| {
                let path: Vec<_> = obj.iter().chain(rest).copied().collect();
                text_at(&elems, &path).map(str::to_owned)
            };
            assert_eq!(
                at(&[(BG_NS, "geslachtsnaam")]).as_deref(),
                p.pointer("/naam/geslachtsnaam").and_then(Value::as_str),
                "{bsn}"
            );
            let born = p
                .pointer("/geboorte/datum/datum")
                .and_then(Value::as_str)
                .unwrap();
            assert_eq!(
                at(&[(BG_NS, "geboortedatum")]).unwrap(),
                born.replace('-', "")
            );
            let adres = [(BG_NS, "verblijfsadres")];
            let pc: Vec<_> = adres
                .iter()
                .copied()
                .chain([(BG_NS, "aoa.postcode")])
                .collect();
            assert_eq!(
                at(&pc).as_deref(),
                p.pointer("/verblijfplaats/verblijfadres/postcode")
                    .and_then(Value::as_str)
            );
            let nr: Vec<_> = adres
                .iter()
                .copied()
                .chain([(BG_NS, "aoa.huisnummer")])
                .collect();
            assert_eq!(
                at(&nr).unwrap(),
                p.pointer("/verblijfplaats/verblijfadres/huisnummer")
                    .unwrap()
                    .to_string()
            );
        }
    }

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ketenportaal-agencies-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("uwv")).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_malformed_fixture_is_a_startup_error_naming_the_file() {
        let dir = scratch_dir("bad");
        std::fs::write(
            dir.join("uwv/999993653.xml"),
            "<GeefUitkeringenResponse xmlns=\"urn:nl:uwv:uitkeringen:v1\"><klant>",
        )
        .unwrap();
        let err = AgencyServer::start(&dir, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("999993653.xml"), "{err}");
    }

    #[tokio::test]
    async fn a_fixture_whose_bsn_differs_from_its_name_is_refused() {
        let dir = scratch_dir("mismatch");
        std::fs::write(
            dir.join("uwv/999990019.xml"),
            "<GeefUitkeringenResponse xmlns=\"urn:nl:uwv:uitkeringen:v1\"><klant><bsn>999993653</bsn></klant></GeefUitkeringenResponse>",
        )
        .unwrap();
        let err = Fixtures::load(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.to_string().contains("999990019.xml"), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    // ---- BRP --------------------------------------------------------------------------------

    #[tokio::test]
    async fn brp_answers_with_only_the_requested_fields() {
        let server = start().await;
        let (status, ct, body) = post_json(
            &server,
            BRP_PATH,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": ["999993653", "999999999"],
                "fields": ["burgerservicenummer", "naam.geslachtsnaam", "leeftijd",
                           "verblijfplaats.verblijfadres.huisnummer"]
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "application/json");
        assert_eq!(
            body,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "personen": [{
                    "burgerservicenummer": "999993653",
                    "leeftijd": 45,
                    "naam": {"geslachtsnaam": "Vries"},
                    "verblijfplaats": {"type": "Adres", "verblijfadres": {"huisnummer": 418}}
                }]
            })
        );
    }

    #[tokio::test]
    async fn brp_whole_objects_and_unknown_persons() {
        let server = start().await;
        let (_, _, body) = post_json(
            &server,
            BRP_PATH,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": ["999990421"],
                "fields": ["geboorte.datum", "naam"]
            }),
        )
        .await;
        let p = &body["personen"][0];
        assert_eq!(
            p["geboorte"],
            json!({"datum": {"type": "Datum", "datum": "1956-02-14", "langFormaat": "14 februari 1956"}})
        );
        assert_eq!(p["naam"]["volledigeNaam"], "Fatma Yilmaz");
        assert!(p.get("burgerservicenummer").is_none());

        let (status, _, body) = post_json(
            &server,
            BRP_PATH,
            json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999999990"], "fields": ["naam"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["personen"], json!([]));
    }

    #[tokio::test]
    async fn brp_refuses_bad_queries_with_invalid_params() {
        let server = start().await;
        let cases = [
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"]}),
                "fields",
                "required",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": []}),
                "fields",
                "minItems",
            ),
            (
                json!({"type": "ZoekMetIets", "burgerservicenummer": ["999993653"], "fields": ["naam"]}),
                "type",
                "value",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["12345"], "fields": ["naam"]}),
                "burgerservicenummer[0]",
                "pattern",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": ["schoenmaat"]}),
                "fields[0]",
                "field",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": ["inOnderzoek"]}),
                "fields[0]",
                "field",
            ),
        ];
        for (query, name, code) in cases {
            let (status, ct, body) = post_json(&server, BRP_PATH, query.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(ct, "application/problem+json");
            assert_eq!(body["status"], 400);
            let params = body["invalidParams"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["code"] == code),
                "{query} -> {body}"
            );
            assert!(params.iter().all(|p| p["reason"].is_string()));
        }
        let (status, _, body) = post(&server, BRP_PATH, "application/json", &[], "{nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalidParams"));
        let (status, ct, _) = post(&server, BRP_PATH, "text/plain", &[], "{}").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(ct, "application/problem+json");
    }

    // ---- StUF-BG ----------------------------------------------------------------------------

    fn nps_lv01(bsn: &str) -> String {
        // Deliberately other prefixes than the fixture uses: matching is by namespace URI.
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Body>
    <q:npsLv01 xmlns:q="http://www.egem.nl/StUF/sector/bg/0310" xmlns:st="http://www.egem.nl/StUF/StUF0301">
      <q:stuurgegevens><st:berichtcode>Lv01</st:berichtcode><st:entiteittype>NPS</st:entiteittype></q:stuurgegevens>
      <q:parameters><st:sortering>0</st:sortering><st:indicatorVervolgvraag>false</st:indicatorVervolgvraag></q:parameters>
      <q:gelijk st:entiteittype="NPS"><q:inp.bsn>{bsn}</q:inp.bsn></q:gelijk>
    </q:npsLv01>
  </s:Body>
</s:Envelope>"#
        )
    }

    #[tokio::test]
    async fn stuf_bg_answers_an_nps_la01_in_a_soap_11_envelope() {
        let server = start().await;
        let (status, ct, body) = post(
            &server,
            STUF_BG_PATH,
            "text/xml; charset=utf-8",
            &[],
            nps_lv01("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "text/xml; charset=utf-8");
        let elems = scan_xml(&body).unwrap();
        let object = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (BG_NS, "npsLa01"),
            (BG_NS, "antwoord"),
            (BG_NS, "object"),
        ];
        let bsn: Vec<_> = object.iter().copied().chain([(BG_NS, "inp.bsn")]).collect();
        assert_eq!(text_at(&elems, &bsn), Some("999990421"));
        assert!(
            body.contains(r#"<BG:sub.telefoonnummer StUF:noValue="geenWaarde" xsi:nil="true"/>"#)
        );

        // Unknown person: a valid La01 whose antwoord is empty.
        let (status, _, body) = post(
            &server,
            STUF_BG_PATH,
            "text/xml",
            &[],
            nps_lv01("999999990"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        let antwoord = &object[..4];
        assert!(find(&elems, antwoord).is_some());
        assert!(find(&elems, &object).is_none());
    }

    #[tokio::test]
    async fn stuf_bg_faults_on_bad_requests() {
        let server = start().await;
        let no_bsn = nps_lv01("").replace("<q:inp.bsn></q:inp.bsn>", "");
        for (body, needle) in [
            (no_bsn, "ontbreekt"),
            (nps_lv01("12ab"), "burgerservicenummer"),
            ("<niet-af".to_owned(), "geen geldige XML"),
            (
                format!(
                    "<!DOCTYPE x [<!ENTITY e \"x\">]>{}",
                    nps_lv01("999993653").replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")
                ),
                "DOCTYPE",
            ),
        ] {
            let (status, ct, text) = post(&server, STUF_BG_PATH, "text/xml", &[], body).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
            assert!(ct.starts_with("text/xml"));
            let elems = scan_xml(&text).unwrap();
            let fault = [
                (SOAP11_NS, "Envelope"),
                (SOAP11_NS, "Body"),
                (SOAP11_NS, "Fault"),
            ];
            let code: Vec<_> = fault.iter().copied().chain([("", "faultcode")]).collect();
            assert_eq!(text_at(&elems, &code), Some("SOAP-ENV:Client"));
            let reason: Vec<_> = fault.iter().copied().chain([("", "faultstring")]).collect();
            assert!(text_at(&elems, &reason).unwrap().contains(needle), "{text}");
        }
        // A SOAP 1.2 envelope at a SOAP 1.1 service.
        let v12 = nps_lv01("999993653").replace(SOAP11_NS, SOAP12_NS);
        let (status, _, text) = post(&server, STUF_BG_PATH, "text/xml", &[], v12).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            text.contains("<faultcode>SOAP-ENV:VersionMismatch</faultcode>"),
            "{text}"
        );
    }

    // ---- UWV --------------------------------------------------------------------------------

    fn geef_uitkeringen(bsn: &str, message_id: Option<&str>) -> String {
        let header = message_id
            .map(|id| {
                format!(
                    "<soap:Header>\
                     <wsa:To>http://127.0.0.1/uwv/UitkeringenService</wsa:To>\
                     <wsa:Action>{UWV_ACTION}</wsa:Action>\
                     <wsa:MessageID>{id}</wsa:MessageID>\
                     <wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>\
                     </soap:Header>"
                )
            })
            .unwrap_or_default();
        format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11_NS}\" xmlns:wsa=\"{WSA_NS}\">{header}\
             <soap:Body><u:GeefUitkeringen xmlns:u=\"{UWV_NS}\"><u:bsn>{bsn}</u:bsn></u:GeefUitkeringen></soap:Body>\
             </soap:Envelope>"
        )
    }

    #[tokio::test]
    async fn uwv_echoes_the_message_id_and_answers_the_fixture() {
        let server = start().await;
        let id = "urn:uuid:6f1e2d3c-0000-4000-8000-00000000abcd";
        let (status, ct, body) = post(
            &server,
            UWV_PATH,
            "text/xml; charset=utf-8",
            &[("SOAPAction", &format!("\"{UWV_ACTION}\""))],
            geef_uitkeringen("999993653", Some(id)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "text/xml; charset=utf-8");
        assert!(body.contains("<soapenv:Envelope"));
        let elems = scan_xml(&body).unwrap();
        let relates = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Header"),
            (WSA_NS, "RelatesTo"),
        ];
        assert_eq!(text_at(&elems, &relates), Some(id));
        let soorten: Vec<&str> = elems
            .iter()
            .filter(|e| e.path.last().is_some_and(|n| n.is(UWV_NS, "soort")))
            .map(|e| e.text.trim())
            .collect();
        assert_eq!(soorten, ["WW", "ZW"]);
        // The planted conflict: UWV still has the old house number.
        let nr = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (UWV_NS, "GeefUitkeringenResponse"),
            (UWV_NS, "klant"),
            (UWV_NS, "adres"),
            (UWV_NS, "huisnummer"),
        ];
        assert_eq!(text_at(&elems, &nr), Some("412"));

        // Unknown person, no addressing headers: empty list, no RelatesTo.
        let (status, _, body) = post(
            &server,
            UWV_PATH,
            "text/xml",
            &[],
            geef_uitkeringen("999991772", None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        assert!(find(&elems, &relates).is_none());
        let list = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (UWV_NS, "GeefUitkeringenResponse"),
            (UWV_NS, "uitkeringen"),
        ];
        assert!(find(&elems, &list).is_some());
        assert!(
            !elems
                .iter()
                .any(|e| e.path.last().is_some_and(|n| n.local == "Uitkering"))
        );
    }

    #[tokio::test]
    async fn uwv_faults_on_bad_requests() {
        let server = start().await;
        let wrong_op = geef_uitkeringen("999993653", None).replace("GeefUitkeringen", "GeefAlles");
        let (status, _, body) = post(&server, UWV_PATH, "text/xml", &[], wrong_op).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("<faultcode>soapenv:Client</faultcode>"),
            "{body}"
        );
        assert!(body.contains("Onbekende operatie"));

        let (status, _, body) = post(
            &server,
            UWV_PATH,
            "text/xml",
            &[("SOAPAction", "urn:iets-anders")],
            geef_uitkeringen("999993653", Some("urn:uuid:1")),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("SOAPAction"), "{body}");

        let (status, _, body) = post(
            &server,
            UWV_PATH,
            "application/soap+xml",
            &[],
            geef_uitkeringen("999993653", None),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body.contains("<faultcode>soapenv:Client</faultcode>"));
    }

    // ---- SVB --------------------------------------------------------------------------------

    fn regelingen_vraag(bsn: &str) -> String {
        format!(
            "<e:Envelope xmlns:e=\"{SOAP12_NS}\"><e:Body>\
             <RegelingenVraag xmlns=\"{SVB_NS}\"><bsn>{bsn}</bsn></RegelingenVraag>\
             </e:Body></e:Envelope>"
        )
    }

    #[tokio::test]
    async fn svb_answers_in_soap_12() {
        let server = start().await;
        let (status, ct, body) = post(
            &server,
            SVB_PATH,
            "application/soap+xml; charset=utf-8; action=\"RegelingenVraag\"",
            &[],
            regelingen_vraag("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "application/soap+xml; charset=utf-8");
        assert!(body.contains("<env:Envelope"));
        let elems = scan_xml(&body).unwrap();
        let antwoord = [
            (SOAP12_NS, "Envelope"),
            (SOAP12_NS, "Body"),
            (SVB_NS, "RegelingenAntwoord"),
        ];
        let aow: Vec<_> = antwoord
            .iter()
            .copied()
            .chain([(SVB_NS, "aowDatum")])
            .collect();
        assert_eq!(text_at(&elems, &aow), Some("2022-09-14"));
        let regelingen = elems
            .iter()
            .filter(|e| e.path.last().is_some_and(|n| n.is(SVB_NS, "Regeling")))
            .count();
        assert_eq!(regelingen, 2);

        let (status, _, body) = post(
            &server,
            SVB_PATH,
            "application/soap+xml",
            &[],
            regelingen_vraag("999993847"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        let bsn: Vec<_> = antwoord.iter().copied().chain([(SVB_NS, "bsn")]).collect();
        assert_eq!(text_at(&elems, &bsn), Some("999993847"));
        assert!(find(&elems, &aow).is_none());
    }

    #[tokio::test]
    async fn svb_faults_in_soap_12_form() {
        let server = start().await;
        let (status, ct, body) = post(
            &server,
            SVB_PATH,
            "application/soap+xml",
            &[],
            regelingen_vraag("x"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(ct.starts_with("application/soap+xml"));
        let elems = scan_xml(&body).unwrap();
        let fault = [
            (SOAP12_NS, "Envelope"),
            (SOAP12_NS, "Body"),
            (SOAP12_NS, "Fault"),
        ];
        let value: Vec<_> = fault
            .iter()
            .copied()
            .chain([(SOAP12_NS, "Code"), (SOAP12_NS, "Value")])
            .collect();
        assert_eq!(text_at(&elems, &value), Some("env:Sender"));
        assert!(body.contains("<env:Text xml:lang=\"nl\">"));

        // A SOAP 1.1 envelope at the SOAP 1.2 service.
        let v11 = regelingen_vraag("999990421").replace(SOAP12_NS, SOAP11_NS);
        let (status, _, body) = post(&server, SVB_PATH, "application/soap+xml", &[], v11).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("<env:Value>env:VersionMismatch</env:Value>"),
            "{body}"
        );

        let (status, _, _) = post(
            &server,
            SVB_PATH,
            "text/xml",
            &[],
            regelingen_vraag("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    // ---- Toeslagen --------------------------------------------------------------------------

    #[tokio::test]
    async fn toeslagen_answers_known_and_unknown_persons() {
        let server = start().await;
        let (status, ct, body) =
            post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "application/json");
        let soorten: Vec<&str> = body["toeslagen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["soort"].as_str().unwrap())
            .collect();
        assert_eq!(soorten, ["zorgtoeslag", "huurtoeslag"]);
        assert_eq!(body["inkomen"][0]["bedrag"], "38500.00");

        let (_, _, body) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999992958"})).await;
        assert_eq!(
            body,
            json!({"bsn": "999992958", "toeslagen": [], "inkomen": []})
        );
    }

    #[tokio::test]
    async fn toeslagen_refuses_bad_json() {
        let server = start().await;
        let (status, ct, body) = post(
            &server,
            TOESLAGEN_PATH,
            "application/json",
            &[],
            "{\"bsn\": ",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ct, "application/problem+json");
        assert!(body.contains("invalidParams"));
        let (status, _, body) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": 999993653})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["invalidParams"][0]["name"], "bsn");
    }

    // ---- Hooks ------------------------------------------------------------------------------

    #[tokio::test]
    async fn hits_count_requests_per_path() {
        let server = start().await;
        assert_eq!(server.hits(TOESLAGEN_PATH), 0);
        for _ in 0..3 {
            post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        }
        post(&server, "/nergens", "application/json", &[], "{}").await;
        assert_eq!(server.hits(TOESLAGEN_PATH), 3);
        assert_eq!(server.hits("/nergens"), 1);
        assert_eq!(server.hits(BRP_PATH), 0);
    }

    #[tokio::test]
    async fn a_down_organisation_answers_503_until_it_is_back() {
        let server = start().await;
        server.set_down("uwv", true);
        server.set_down("toeslagen", true);
        let (status, _, _) = post(
            &server,
            UWV_PATH,
            "text/xml",
            &[],
            geef_uitkeringen("999993653", None),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, ct, _) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct, "application/problem+json");
        // Others are unaffected.
        let (status, _, _) = post(
            &server,
            SVB_PATH,
            "application/soap+xml",
            &[],
            regelingen_vraag("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        server.set_down("uwv", false);
        let (status, _, _) = post(
            &server,
            UWV_PATH,
            "text/xml",
            &[],
            geef_uitkeringen("999993653", None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.hits(UWV_PATH), 2);
        server.set_down("onbekend", true); // ignored, logged
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let server = start().await;
        let url = format!("{}{TOESLAGEN_PATH}", server.base_url());
        drop(server);
        let mut refused = false;
        for _ in 0..50 {
            let client = reqwest::Client::new();
            if client
                .post(&url)
                .json(&json!({"bsn": "999993653"}))
                .send()
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "the port still answers after drop");
    }
}

#[cfg(test)]
mod relative_date_tests {
    use super::relative_dates;

    #[test]
    fn relative_dates_follow_today() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(
            relative_dates("<e>{{today+48d}}</e>", today),
            "<e>2027-01-15</e>"
        );
        assert_eq!(
            relative_dates("{{today-1d}} {{today+0d}}", today),
            "2026-11-27 2026-11-28"
        );
        assert_eq!(relative_dates("{{today+xd}}", today), "{{today+xd}}");
    }
}
