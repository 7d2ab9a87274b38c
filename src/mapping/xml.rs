//! Mapping SOAP answers into sections, streaming with quick-xml (no DOM).
//!
//! Elements are matched by **namespace URI + local name**. Prefixes in an answer are chosen by
//! whoever wrote it and carry no meaning: the paths in an adapter use the adapter's own
//! `namespaces:` prefixes, which are resolved to URIs when the mapping compiles. One pass over
//! the events fills every section; memory is the element stack plus the values being built.
//!
//! Refused while streaming: a DOCTYPE (no DTDs, so no XXE and no entity bombs), undeclared
//! entity references, nesting deeper than the cap, text that is not UTF-8.
//! `xsi:nil="true"` and StUF's `StUF:noValue` make a field `null`. A SOAP Fault (1.1
//! faultcode/faultstring or 1.2 Code/Reason) becomes [`MapError::Fault`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::Value;

use super::{
    CompileError, FieldName, MapError, MapLimits, Record, Sections, bad_value, convert_text,
    field_entry,
};
use crate::model::{FieldType, SectionMap};

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const STUF_NS: &str = "http://www.egem.nl/StUF/StUF0301";

const NS_SOAP11: u32 = 0;
const NS_SOAP12: u32 = 1;
const NS_XSI: u32 = 2;
const NS_STUF: u32 = 3;
/// An element in no namespace.
const NS_NONE: u32 = u32::MAX - 1;
/// An element in a namespace the mapping does not know: it can never match.
const NS_OTHER: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
struct XName {
    ns: u32,
    local: Box<str>,
}

#[derive(Debug, Clone)]
struct XField {
    /// Shared by every record this field fills.
    name: FieldName,
    path: String,
    attr: Option<XName>,
    ty: FieldType,
    required: bool,
}

#[derive(Debug, Clone)]
struct XSection {
    name: String,
    /// `true` when the section has an `each` path; `false`: the Body itself is the one record.
    each: bool,
    /// For a section with `each`: the trie node its field paths hang from, active below each
    /// record element.
    record_root: Option<usize>,
    fields: Vec<XField>,
}

/// What a matched element does, in the order the sections and fields are declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Action {
    section: u32,
    /// A field index, or [`OPEN`]: the element starts a record of the section.
    field: u32,
}

const OPEN: u32 = u32::MAX;

/// One step of the compiled paths. Every path (an `each` below the Body, a field below the
/// Body or below a record) is a walk from a root down this trie, so an element is matched by
/// comparing its name with the children of the nodes its parent matched, once, instead of
/// comparing the whole element stack with every path of every section.
#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// `None` for a root.
    name: Option<XName>,
    children: Vec<usize>,
    actions: Vec<Action>,
}

/// The trie node of the paths that start below the Body.
const BODY_ROOT: usize = 0;

fn trie_insert(trie: &mut Vec<TrieNode>, root: usize, steps: &[XName], action: Action) {
    let mut node = root;
    for step in steps {
        let found = trie[node]
            .children
            .iter()
            .copied()
            .find(|&c| trie[c].name.as_ref() == Some(step));
        node = match found {
            Some(c) => c,
            None => {
                trie.push(TrieNode {
                    name: Some(step.clone()),
                    ..TrieNode::default()
                });
                let c = trie.len() - 1;
                trie[node].children.push(c);
                c
            }
        };
    }
    trie[node].actions.push(action);
}

/// A compiled SOAP mapping.
#[derive(Debug, Clone)]
pub struct XmlMapping {
    namespaces: Vec<String>,
    sections: Vec<XSection>,
    trie: Vec<TrieNode>,
}

impl XmlMapping {
    /// Compiles an adapter's `map:` against its `namespaces:`; returns every problem.
    pub fn compile(
        map: &BTreeMap<String, SectionMap>,
        prefixes: &BTreeMap<String, String>,
    ) -> Result<XmlMapping, Vec<CompileError>> {
        let mut namespaces: Vec<String> = [SOAP11_NS, SOAP12_NS, XSI_NS, STUF_NS]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut prefix_ids = BTreeMap::new();
        for (p, uri) in prefixes {
            let id = match namespaces.iter().position(|n| n == uri) {
                Some(i) => i,
                None => {
                    namespaces.push(uri.clone());
                    namespaces.len() - 1
                }
            };
            prefix_ids.insert(p.as_str(), id as u32);
        }
        let known = || {
            if prefixes.is_empty() {
                "no prefixes are declared; add them under `soap.namespaces`".to_string()
            } else {
                format!(
                    "declared prefixes: {}",
                    prefixes.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        };
        let step = |s: &str| -> Result<XName, String> {
            let (ns, local) = match s.split_once(':') {
                Some((p, l)) => match prefix_ids.get(p) {
                    Some(id) => (*id, l),
                    None => return Err(format!("prefix `{p}` in step `{s}` is not declared")),
                },
                None => (NS_NONE, s),
            };
            if local.is_empty() || local.contains(['/', '@', ' ', ':']) {
                return Err(format!("`{s}` is not a valid element name"));
            }
            Ok(XName {
                ns,
                local: local.into(),
            })
        };
        let mut errors = Vec::new();
        let mut sections = Vec::new();
        let mut trie = vec![TrieNode::default()];
        for (si, (name, sm)) in map.iter().enumerate() {
            let si = si as u32;
            let each = match &sm.each {
                None => None,
                Some(text) => match text.split('/').map(&step).collect::<Result<Vec<_>, _>>() {
                    Ok(steps) if !steps.is_empty() => Some(steps),
                    Ok(_) => None,
                    Err(message) => {
                        errors.push(CompileError {
                            section: name.clone(),
                            field: None,
                            message: format!("`each: {text}`: {message}"),
                            hint: Some(known()),
                        });
                        None
                    }
                },
            };
            let record_root = each.as_ref().map(|steps: &Vec<XName>| {
                trie_insert(
                    &mut trie,
                    BODY_ROOT,
                    steps,
                    Action {
                        section: si,
                        field: OPEN,
                    },
                );
                trie.push(TrieNode::default());
                trie.len() - 1
            });
            let mut fields = Vec::new();
            for (fname, spec) in &sm.fields {
                let mut parts: Vec<&str> = spec.path.split('/').collect();
                let attr = match parts.last() {
                    Some(last) if last.starts_with('@') => {
                        let a = parts.pop().unwrap_or_default();
                        let a = &a[1..];
                        // Unprefixed attributes are in no namespace (XML Namespaces §6.2).
                        Some(step(a))
                    }
                    _ => None,
                };
                let steps: Result<Vec<XName>, String> = parts
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| step(p))
                    .collect();
                match (steps, attr.transpose()) {
                    (Ok(steps), Ok(attr)) => {
                        // A field without element steps never matches (it stays null).
                        if !steps.is_empty() {
                            let action = Action {
                                section: si,
                                field: fields.len() as u32,
                            };
                            trie_insert(
                                &mut trie,
                                record_root.unwrap_or(BODY_ROOT),
                                &steps,
                                action,
                            );
                        }
                        fields.push(XField {
                            name: FieldName::from(fname.as_str()),
                            path: spec.path.clone(),
                            attr,
                            ty: spec.r#type,
                            required: spec.required,
                        });
                    }
                    (Err(message), _) | (_, Err(message)) => errors.push(CompileError {
                        section: name.clone(),
                        field: Some(fname.clone()),
                        message: format!("path `{}`: {message}", spec.path),
                        hint: Some(known()),
                    }),
                }
            }
            sections.push(XSection {
                name: name.clone(),
                each: each.is_some(),
                record_root,
                fields,
            });
        }
        if errors.is_empty() {
            Ok(XmlMapping {
                namespaces,
                sections,
                trie,
            })
        } else {
            Err(errors)
        }
    }

    fn ns_id(&self, r: &ResolveResult<'_>) -> u32 {
        match r {
            ResolveResult::Bound(ns) => self
                .namespaces
                .iter()
                .position(|n| n.as_str() == ns.as_ref())
                .map_or(NS_OTHER, |i| i as u32),
            ResolveResult::Unbound => NS_NONE,
            ResolveResult::Unknown(_) => NS_OTHER,
        }
    }

    /// Maps one SOAP envelope.
    pub fn map_envelope(&self, body: &[u8], limits: &MapLimits) -> Result<Sections, MapError> {
        let text =
            std::str::from_utf8(body).map_err(|e| MapError::NotXml(format!("not UTF-8: {e}")))?;
        let mut run = Run::new(self);
        let mut reader = NsReader::from_str(text);
        loop {
            // Namespace declarations are tracked by the reader on every event; names are only
            // resolved for start tags, the one place they are matched.
            let event = reader
                .read_event()
                .map_err(|e| MapError::NotXml(e.to_string()))?;
            match event {
                Event::Start(e) => {
                    let ns = self.ns_id(&reader.resolver().resolve_element(e.name()).0);
                    run.start(ns, &e, &reader, limits)?;
                }
                Event::Empty(e) => {
                    let ns = self.ns_id(&reader.resolver().resolve_element(e.name()).0);
                    run.start(ns, &e, &reader, limits)?;
                    run.end()?;
                }
                Event::End(_) => run.end()?,
                // Text is only decoded when a field (or a fault) is being read.
                Event::Text(t) if run.wants_text() => run.text(t.xml10_content()),
                Event::CData(t) if run.wants_text() => run.text(t.xml10_content()),
                Event::Text(_) | Event::CData(_) => {}
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => match &*r.xml10_content() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "apos" => '\'',
                            "quot" => '"',
                            other => {
                                return Err(MapError::NotXml(format!(
                                    "undeclared entity `&{other};`"
                                )));
                            }
                        },
                        Err(e) => return Err(MapError::NotXml(e.to_string())),
                    };
                    run.text(Cow::Owned(String::from(c)));
                }
                Event::DocType(_) => return Err(MapError::Doctype),
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
        run.finish()
    }
}

/// A value being captured for one field of one open record.
struct Capture<'i> {
    section: usize,
    field: usize,
    depth: usize,
    /// Borrowed from the answer while the element has one text node (the usual case).
    text: Cow<'i, str>,
    nil: bool,
}

impl<'i> Capture<'i> {
    fn push(&mut self, t: Cow<'i, str>) {
        if self.text.is_empty() {
            self.text = t;
        } else {
            self.text.to_mut().push_str(&t);
        }
    }
}

struct Open {
    depth: usize,
    values: Vec<Option<Value>>,
}

#[derive(Default)]
struct FaultState {
    depth: usize,
    code: Option<String>,
    reason: Option<String>,
    /// Which fault part the text currently read belongs to.
    reading: Option<(usize, bool)>,
    buf: String,
}

struct Run<'m, 'i> {
    m: &'m XmlMapping,
    /// Element stack: for each open element, where its matched trie nodes start in `active`.
    stack: Vec<usize>,
    /// The trie nodes matched by the open elements, level after level (a record element adds
    /// its section's record root to its own level).
    active: Vec<usize>,
    /// The actions of the element being started (scratch, reused).
    actions: Vec<Action>,
    body_depth: Option<usize>,
    saw_body: bool,
    open: Vec<Option<Open>>,
    captures: Vec<Capture<'i>>,
    fault: Option<FaultState>,
    out: Vec<Vec<Record>>,
}

impl<'m, 'i> Run<'m, 'i> {
    fn new(m: &'m XmlMapping) -> Self {
        Run {
            m,
            stack: Vec::with_capacity(16),
            active: Vec::with_capacity(16),
            actions: Vec::new(),
            body_depth: None,
            saw_body: false,
            open: (0..m.sections.len()).map(|_| None).collect(),
            captures: Vec::new(),
            fault: None,
            out: (0..m.sections.len()).map(|_| Vec::new()).collect(),
        }
    }

    fn start(
        &mut self,
        ns: u32,
        e: &BytesStart<'_>,
        reader: &NsReader<&[u8]>,
        limits: &MapLimits,
    ) -> Result<(), MapError> {
        if self.stack.len() >= limits.max_depth as usize {
            return Err(MapError::TooDeep(limits.max_depth));
        }
        let local = e.local_name();
        let local: &str = local.as_ref();
        // The parent's matched nodes are the last entries of `active`.
        let parent_from = self.stack.last().copied().unwrap_or(0);
        let parent_to = self.active.len();
        self.stack.push(parent_to);
        let depth = self.stack.len() - 1;
        let is_env = ns == NS_SOAP11 || ns == NS_SOAP12;

        match depth {
            0 if !(is_env && local == "Envelope") => return Err(MapError::NoSoapBody),
            1 if is_env && local == "Body" => {
                self.body_depth = Some(1);
                self.saw_body = true;
                self.active.push(BODY_ROOT);
                for (i, s) in self.m.sections.iter().enumerate() {
                    if !s.each {
                        self.open[i] = Some(Open {
                            depth: 1,
                            values: vec![None; s.fields.len()],
                        });
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        let Some(body) = self.body_depth else {
            return Ok(());
        };

        if let Some(f) = &mut self.fault {
            // Inside a Fault: 1.1 has unqualified faultcode/faultstring; 1.2 has
            // Code/Value and Reason/Text.
            let rel = depth - f.depth;
            let part = match (rel, local) {
                (1, "faultcode") => Some(true),
                (1, "faultstring") => Some(false),
                (2, "Value") => Some(true),
                (2, "Text") => Some(false),
                _ => None,
            };
            if let Some(is_code) = part {
                f.reading = Some((depth, is_code));
                f.buf.clear();
            }
            return Ok(());
        }
        if depth == body + 1 && is_env && local == "Fault" {
            self.fault = Some(FaultState {
                depth,
                ..FaultState::default()
            });
            return Ok(());
        }

        // Match the element against the children of its parent's nodes.
        let m = self.m;
        let trie = &m.trie;
        self.actions.clear();
        let mut sources = 0;
        for i in parent_from..parent_to {
            for &c in &trie[self.active[i]].children {
                if let Some(n) = &trie[c].name
                    && n.ns == ns
                    && &*n.local == local
                {
                    self.active.push(c);
                    self.actions.extend_from_slice(&trie[c].actions);
                    sources += 1;
                }
            }
        }
        if self.actions.is_empty() {
            return Ok(());
        }
        if sources > 1 {
            // Sections, then fields, in declaration order, whichever path matched them.
            self.actions.sort_unstable();
        }
        for ai in 0..self.actions.len() {
            let Action { section, field } = self.actions[ai];
            let (si, s) = (section as usize, &m.sections[section as usize]);
            if field == OPEN {
                if self.open[si].is_none() {
                    self.open[si] = Some(Open {
                        depth,
                        values: vec![None; s.fields.len()],
                    });
                    if let Some(root) = s.record_root {
                        self.active.push(root);
                    }
                }
                continue;
            }
            let fi = field as usize;
            let taken = match &self.open[si] {
                Some(o) => o.depth >= depth || o.values[fi].is_some(),
                None => true,
            };
            if taken {
                continue;
            }
            if let Some(attr) = &s.fields[fi].attr {
                let v = match attr_value(m, e, reader, attr)? {
                    None => Value::Null,
                    Some(text) => self.typed(si, fi, &text)?,
                };
                if let Some(o) = &mut self.open[si] {
                    o.values[fi] = Some(v);
                }
            } else {
                let nil = is_nil(e, reader, m)?;
                self.captures.push(Capture {
                    section: si,
                    field: fi,
                    depth,
                    text: Cow::Borrowed(""),
                    nil,
                });
            }
        }
        Ok(())
    }

    fn typed(&self, si: usize, fi: usize, text: &str) -> Result<Value, MapError> {
        let s = &self.m.sections[si];
        let f = &s.fields[fi];
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        convert_text(f.ty, text).map_err(bad_value(&s.name, &f.name, f.ty))
    }

    fn wants_text(&self) -> bool {
        !self.captures.is_empty() || self.fault.as_ref().is_some_and(|f| f.reading.is_some())
    }

    fn text(&mut self, t: Cow<'i, str>) {
        if let Some(f) = &mut self.fault {
            if f.reading.is_some() {
                f.buf.push_str(&t);
            }
            return;
        }
        for c in &mut self.captures {
            c.push(t.clone());
        }
    }

    fn end(&mut self) -> Result<(), MapError> {
        let Some(depth) = self.stack.len().checked_sub(1) else {
            return Err(MapError::NotXml("unbalanced end tag".into()));
        };

        if let Some(f) = &mut self.fault {
            if let Some((d, is_code)) = f.reading
                && d == depth
            {
                let text = f.buf.trim().to_owned();
                let slot = if is_code { &mut f.code } else { &mut f.reason };
                if slot.is_none() {
                    *slot = Some(text);
                }
                f.reading = None;
            }
            if depth == f.depth {
                // The source's own words: shown in the dossier and logged, so kept short and
                // without numbers that could be a BSN.
                return Err(MapError::Fault {
                    code: f
                        .code
                        .as_deref()
                        .map_or_else(|| "(geen code)".into(), |c| super::untrusted_text(c, 80)),
                    reason: f
                        .reason
                        .as_deref()
                        .map_or_else(|| "(geen reden)".into(), |r| super::untrusted_text(r, 200)),
                });
            }
        }

        // Finish the captures of this element.
        let mut i = 0;
        while i < self.captures.len() {
            if self.captures[i].depth == depth {
                let c = self.captures.swap_remove(i);
                let v = if c.nil {
                    Value::Null
                } else {
                    self.typed(c.section, c.field, &c.text)?
                };
                if let Some(o) = &mut self.open[c.section]
                    && o.values[c.field].is_none()
                {
                    o.values[c.field] = Some(v);
                }
            } else {
                i += 1;
            }
        }

        // Close the records that end here.
        for si in 0..self.open.len() {
            if self.open[si].as_ref().is_some_and(|o| o.depth == depth)
                && let Some(o) = self.open[si].take()
            {
                let rec = self.record(si, o)?;
                self.out[si].push(rec);
            }
        }

        if Some(depth) == self.body_depth {
            self.body_depth = None;
        }
        if let Some(from) = self.stack.pop() {
            self.active.truncate(from);
        }
        Ok(())
    }

    fn record(&self, si: usize, o: Open) -> Result<Record, MapError> {
        let s = &self.m.sections[si];
        // The fields are sorted by name (they come from a map), so the record is built in one
        // go rather than by one search-and-insert per field.
        s.fields
            .iter()
            .zip(o.values)
            .map(|(f, v)| {
                field_entry(
                    &s.name,
                    &f.name,
                    &f.path,
                    f.required,
                    v.unwrap_or(Value::Null),
                )
            })
            .collect::<Result<Vec<_>, MapError>>()
            .map(Record::from_sorted)
    }

    fn finish(self) -> Result<Sections, MapError> {
        if !self.saw_body {
            return Err(MapError::NoSoapBody);
        }
        if !self.stack.is_empty() {
            return Err(MapError::NotXml(
                "the document ends inside an element".into(),
            ));
        }
        Ok(self
            .m
            .sections
            .iter()
            .zip(self.out)
            .map(|(s, records)| (s.name.clone(), records))
            .collect())
    }
}

/// The value of the attribute `want` on `e`, if it has one.
fn attr_value(
    m: &XmlMapping,
    e: &BytesStart<'_>,
    reader: &NsReader<&[u8]>,
    want: &XName,
) -> Result<Option<String>, MapError> {
    for a in e.attributes() {
        let a = a.map_err(|e| MapError::NotXml(e.to_string()))?;
        let (r, local) = reader.resolver().resolve_attribute(a.key);
        if m.ns_id(&r) == want.ns && local.as_ref() == &*want.local {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| MapError::NotXml(e.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// `xsi:nil="true"` or any `StUF:noValue` makes the element's value null.
fn is_nil(e: &BytesStart<'_>, reader: &NsReader<&[u8]>, m: &XmlMapping) -> Result<bool, MapError> {
    for a in e.attributes() {
        let a = a.map_err(|e| MapError::NotXml(e.to_string()))?;
        let (r, local) = reader.resolver().resolve_attribute(a.key);
        match (m.ns_id(&r), local.as_ref()) {
            (NS_XSI, "nil") => {
                let v: &str = a.value.as_ref();
                if v == "true" || v == "1" {
                    return Ok(true);
                }
            }
            (NS_STUF, "noValue") => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldSpec;

    fn mapping() -> XmlMapping {
        let mut fields = BTreeMap::new();
        fields.insert(
            "soort".to_string(),
            FieldSpec {
                path: "u:soort".into(),
                r#type: FieldType::String,
                required: true,
            },
        );
        fields.insert(
            "bedrag".to_string(),
            FieldSpec {
                path: "u:bedrag".into(),
                r#type: FieldType::Decimal,
                required: false,
            },
        );
        fields.insert(
            "code".to_string(),
            FieldSpec {
                path: "u:soort/@code".into(),
                r#type: FieldType::String,
                required: false,
            },
        );
        let mut map = BTreeMap::new();
        map.insert(
            "uitkeringen".to_string(),
            SectionMap {
                each: Some("u:Antwoord/u:Uitkering".into()),
                fields,
            },
        );
        let mut ns = BTreeMap::new();
        ns.insert("u".to_string(), "urn:test:v1".to_string());
        XmlMapping::compile(&map, &ns).unwrap()
    }

    const PREFIXED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="urn:test:v1">
 <soap11env:Body><tns:Antwoord>
  <tns:Uitkering><tns:soort code="W">WW</tns:soort><tns:bedrag>1843.27</tns:bedrag></tns:Uitkering>
  <tns:Uitkering><tns:soort>WIA</tns:soort><tns:bedrag xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></tns:Uitkering>
 </tns:Antwoord></soap11env:Body></soap11env:Envelope>"#;

    const DEFAULT_NS: &str = r#"<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body>
  <Antwoord xmlns="urn:test:v1"><Uitkering><soort code="W">WW</soort><bedrag>1843.27</bedrag></Uitkering>
  <Uitkering><soort>WIA</soort><bedrag xmlns:i="http://www.w3.org/2001/XMLSchema-instance" i:nil="true"></bedrag></Uitkering></Antwoord>
</Body></Envelope>"#;

    const REDECLARED: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="urn:other"><s:Body>
  <a:Antwoord xmlns:a="urn:test:v1"><a:Uitkering><x:soort xmlns:x="urn:test:v1" code="W">WW</x:soort><a:bedrag>1843.27</a:bedrag></a:Uitkering>
  <a:Uitkering><a:soort>WIA</a:soort><a:bedrag StUF:noValue="geenWaarde" xmlns:StUF="http://www.egem.nl/StUF/StUF0301"/></a:Uitkering></a:Antwoord>
</s:Body></s:Envelope>"#;

    #[test]
    fn prefixes_carry_no_meaning() {
        let m = mapping();
        let a = m
            .map_envelope(PREFIXED.as_bytes(), &MapLimits::default())
            .unwrap();
        let b = m
            .map_envelope(DEFAULT_NS.as_bytes(), &MapLimits::default())
            .unwrap();
        let c = m
            .map_envelope(REDECLARED.as_bytes(), &MapLimits::default())
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let list = &a["uitkeringen"];
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["soort"], "WW");
        assert_eq!(list[0]["code"], "W");
        assert_eq!(list[0]["bedrag"], "1843.27");
        assert_eq!(list[1]["bedrag"], Value::Null);
    }

    #[test]
    fn wrong_namespace_does_not_match() {
        let m = mapping();
        let doc = PREFIXED.replace("urn:test:v1", "urn:test:v2");
        let out = m
            .map_envelope(doc.as_bytes(), &MapLimits::default())
            .unwrap();
        assert!(out["uitkeringen"].is_empty());
    }

    #[test]
    fn faults_11_and_12() {
        let m = mapping();
        let f11 = r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><e:Fault><faultcode>e:Server</faultcode><faultstring>Policy Falsified</faultstring></e:Fault></e:Body></e:Envelope>"#;
        assert_eq!(
            m.map_envelope(f11.as_bytes(), &MapLimits::default()),
            Err(MapError::Fault {
                code: "e:Server".into(),
                reason: "Policy Falsified".into()
            })
        );
        let f12 = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>x:Bad</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="nl">Onbekend BSN</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        assert_eq!(
            m.map_envelope(f12.as_bytes(), &MapLimits::default()),
            Err(MapError::Fault {
                code: "env:Sender".into(),
                reason: "Onbekend BSN".into()
            })
        );
    }

    #[test]
    fn hostile_documents_are_refused() {
        let m = mapping();
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>&lol2;</e:Body></e:Envelope>"#;
        assert_eq!(
            m.map_envelope(bomb.as_bytes(), &MapLimits::default()),
            Err(MapError::Doctype)
        );
        let undeclared = r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>&xxe;</e:Body></e:Envelope>"#;
        assert!(matches!(
            m.map_envelope(undeclared.as_bytes(), &MapLimits::default()),
            Err(MapError::NotXml(_))
        ));
        let deep = format!(
            r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>{}{}</e:Body></e:Envelope>"#,
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            m.map_envelope(
                deep.as_bytes(),
                &MapLimits {
                    max_depth: 32,
                    ..MapLimits::default()
                }
            ),
            Err(MapError::TooDeep(32))
        );
        assert!(
            m.map_envelope(b"not xml at all", &MapLimits::default())
                .is_err()
        );
        assert!(
            m.map_envelope(b"<html><body/></html>", &MapLimits::default())
                .is_err()
        );
        assert!(
            m.map_envelope(&[0xff, 0xfe, 0x00], &MapLimits::default())
                .is_err()
        );
    }

    #[test]
    fn required_field_missing() {
        let m = mapping();
        let doc = PREFIXED.replace("<tns:soort>WIA</tns:soort>", "");
        assert!(matches!(
            m.map_envelope(doc.as_bytes(), &MapLimits::default()),
            Err(MapError::MissingField { .. })
        ));
    }

    #[test]
    fn undeclared_prefix_does_not_compile() {
        let mut map = BTreeMap::new();
        map.insert(
            "x".to_string(),
            SectionMap {
                each: Some("q:Foo".into()),
                fields: BTreeMap::new(),
            },
        );
        let errs = XmlMapping::compile(&map, &BTreeMap::new()).unwrap_err();
        assert!(errs[0].message.contains("prefix `q`"));
    }
}
