//! Merging source answers into one Digitaal Klant Dossier, and filtering it through a view.
//!
//! Both are pure functions. [`merge`] is deterministic: the answers are ranked by the
//! section's authority order (then adapter id) before anything else happens, so the same
//! answers give byte-identical output whatever order they arrived in. [`render`] applies a
//! view's field allow-lists to a merged dossier; the cache sits before it, so one cached
//! answer serves every view without leaking fields. The gateway serves [`Rendered::render`]:
//! the same rendering serialised straight from the answers, without building values first.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::mapping::{Record, Sections};
use crate::model::{SectionDef, SectionKind, SortOrder, ViewDef};

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
    /// mapped records as they sit in memory (field slots, text and its allocation rounding;
    /// field names are shared with the mapping), plus the entry's fixed costs. It errs high
    /// rather than low, so the budget bounds real memory (calibrated with mimalloc by scenario
    /// (c) of `benches/load.sh`: 100 000 citizens through a 64 MiB budget grow the process by
    /// 0.99× the budget for the caches).
    pub fn heap_size(&self) -> usize {
        fn value(v: &serde_json::Value) -> usize {
            match v {
                // The text and its allocation's rounding to a size class.
                serde_json::Value::String(s) if !s.is_empty() => 16 + s.len(),
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
                            size_of::<Record>()
                                + r.slots_size()
                                + r.fields()
                                    .iter()
                                    .map(|(k, x)| {
                                        // A name only this record holds (read back from the
                                        // shared cache) is its own allocation; one shared with
                                        // the mapping costs nothing here.
                                        let own = if Arc::strong_count(k) == 1 {
                                            32 + k.len()
                                        } else {
                                            0
                                        };
                                        own + value(x)
                                    })
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum();
        // Entry, key, Arcs and moka's own bookkeeping.
        704 + records
    }
}

/// `(adapter, value)` pairs.
type SourcedValues = Vec<(Arc<str>, Value)>;

/// The `decimal` fields of each section (those an adapter maps with `type: decimal`): their
/// values are exact text (see `crate::decimal`) and compare by value, so `131` and `131.00`
/// from two sources agree and `9.50` sorts before `10.00`.
pub type DecimalFields = BTreeMap<String, BTreeSet<String>>;

/// Equal field values; decimals by value.
fn same(decimal: bool, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if decimal => {
            crate::decimal::cmp(x, y).map_or(x == y, Ordering::is_eq)
        }
        _ => a == b,
    }
}

/// A list key's part: the value's JSON text, a decimal in its shortest form.
fn key_part(decimal: bool, v: &Value) -> String {
    match v {
        Value::String(s) if decimal => crate::decimal::canonical(s)
            .map_or_else(|| v.to_string(), |c| Value::String(c).to_string()),
        _ => v.to_string(),
    }
}

/// A merged section, before any view. It borrows the answers: merging copies no values.
#[derive(Debug, Clone, PartialEq)]
pub enum MergedSection<'a> {
    /// `(field, value, adapter it came from)`, in field order.
    Single(Vec<(&'a str, &'a Value, &'a Arc<str>)>),
    /// Records with the adapter each came from, de-duplicated and sorted.
    List(Vec<(&'a Record, &'a Arc<str>)>),
}

/// Different non-null values for one field of a `single` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub section: String,
    pub field: String,
    /// For `list` sections: the key values of the record the sources disagree on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<Value>>,
    /// `[adapter, value]` pairs, the chosen (most authoritative) one first.
    pub values: Vec<(Arc<str>, Value)>,
}

/// The merged dossier, before any view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged<'a> {
    pub sections: BTreeMap<&'a str, MergedSection<'a>>,
    pub conflicts: Vec<Conflict>,
}

/// The answer's place in the section's authority order (unlisted adapters last).
fn rank(def: &SectionDef, adapter: &str) -> usize {
    def.authority
        .iter()
        .position(|a| a == adapter)
        .unwrap_or(def.authority.len())
}

/// Merges the answers into the `wanted` sections.
pub fn merge<'a>(
    defs: &'a BTreeMap<String, SectionDef>,
    decimals: &DecimalFields,
    wanted: &BTreeSet<&str>,
    answers: &[&'a SourceAnswer],
) -> Merged<'a> {
    let mut out = Merged::default();
    for (name, def) in defs {
        if !wanted.contains(name.as_str()) {
            continue;
        }
        let dec = decimals.get(name);
        let is_decimal = |f: &str| dec.is_some_and(|d| d.contains(f));
        let mut ranked: Vec<(&'a SourceAnswer, &'a Vec<Record>)> = answers
            .iter()
            .filter_map(|a| a.sections.get(name).map(|recs| (*a, recs)))
            .collect();
        if ranked.is_empty() {
            continue;
        }
        ranked.sort_by(|(a, _), (b, _)| {
            rank(def, &a.adapter)
                .cmp(&rank(def, &b.adapter))
                .then_with(|| a.adapter.cmp(&b.adapter))
        });
        match def.kind {
            SectionKind::Single => {
                // Every non-null field of each source's record, most authoritative source
                // first. Each record is in name order, so with one source this is the
                // section; with more, a stable sort by name merges the sorted runs and lines
                // up each field's values in authority order. No map is built or searched.
                let mut all: Vec<(&'a str, &'a Value, &'a Arc<str>)> = ranked
                    .iter()
                    .filter_map(|(a, recs)| Some((&a.adapter, recs.first()?)))
                    .flat_map(|(src, rec)| {
                        rec.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(move |(f, v)| (f, v, src))
                    })
                    .collect();
                if ranked.len() > 1 {
                    all.sort_by(|x, y| x.0.cmp(y.0));
                }
                let mut fields = Vec::with_capacity(all.len());
                for group in all.chunk_by(|x, y| x.0 == y.0) {
                    let (field, chosen, src) = group[0];
                    fields.push((field, chosen, src));
                    if group.len() == 1 {
                        continue;
                    }
                    // The field's distinct values, the chosen one first; only a field with more
                    // than one becomes a conflict (and only its values are copied).
                    let decimal = is_decimal(field);
                    let mut distinct: Vec<(&'a Arc<str>, &'a Value)> = vec![(src, chosen)];
                    for &(_, v, s) in &group[1..] {
                        if !distinct.iter().any(|(_, x)| same(decimal, x, v)) {
                            distinct.push((s, v));
                        }
                    }
                    if distinct.len() > 1 {
                        out.conflicts.push(Conflict {
                            section: name.clone(),
                            field: field.to_string(),
                            key: None,
                            values: distinct
                                .into_iter()
                                .map(|(a, v)| (a.clone(), v.clone()))
                                .collect(),
                        });
                    }
                }
                out.sections
                    .insert(name.as_str(), MergedSection::Single(fields));
            }
            SectionKind::List => {
                // key -> (index in `records`, the source that contributed it)
                let mut seen: BTreeMap<Vec<String>, (usize, &'a Arc<str>)> = BTreeMap::new();
                let mut records: Vec<(&'a Record, &'a Arc<str>)> = Vec::new();
                let mut differ: BTreeMap<(Vec<String>, String), SourcedValues> = BTreeMap::new();
                if let [(a, recs)] = ranked.as_slice() {
                    // One source: only another source's record can be a duplicate, so every
                    // record stays and no key is needed.
                    let a: &'a SourceAnswer = a;
                    records.extend(recs.iter().map(|r| (r, &a.adapter)));
                } else {
                    for (a, recs) in &ranked {
                        for r in recs.iter() {
                            let key: Option<Vec<String>> = def
                                .key
                                .iter()
                                .map(|k| {
                                    r.get(k)
                                        .filter(|v| !v.is_null())
                                        .map(|v| key_part(is_decimal(k), v))
                                })
                                .collect();
                            // A record with an incomplete key, or a second record with the same
                            // key from the same source, is its own record: only the same record
                            // reported by *another* source is a duplicate.
                            let Some(key) = key else {
                                records.push((r, &a.adapter));
                                continue;
                            };
                            match seen.get(&key) {
                                Some((i, src)) if **src != a.adapter => {
                                    // Keep the more authoritative record; note what it disagrees on.
                                    let (kept, kept_src) = records[*i];
                                    for (f, v) in r {
                                        let k = kept.get(f).unwrap_or(&Value::Null);
                                        if !v.is_null()
                                            && !k.is_null()
                                            && !same(is_decimal(f), v, k)
                                        {
                                            let e = differ
                                                .entry((key.clone(), f.to_owned()))
                                                .or_default();
                                            if e.is_empty() {
                                                e.push((kept_src.clone(), k.clone()));
                                            }
                                            e.push((a.adapter.clone(), v.clone()));
                                        }
                                    }
                                }
                                Some(_) => records.push((r, &a.adapter)),
                                None => {
                                    seen.insert(key, (records.len(), &a.adapter));
                                    records.push((r, &a.adapter));
                                }
                            }
                        }
                    }
                }
                for ((key, field), values) in differ {
                    out.conflicts.push(Conflict {
                        section: name.clone(),
                        field,
                        key: Some(
                            key.iter()
                                .map(|k| serde_json::from_str(k).unwrap_or(Value::Null))
                                .collect(),
                        ),
                        values,
                    });
                }
                records.sort_by(|(a, sa), (b, sb)| {
                    let by_sort = match &def.sort {
                        Some(s) => {
                            let (x, y) = (a.get(&s.field), b.get(&s.field));
                            let missing = |v: Option<&Value>| v.is_none_or(Value::is_null);
                            match (missing(x), missing(y)) {
                                // Records without the sort field go last in either order.
                                (true, true) => Ordering::Equal,
                                (true, false) => Ordering::Greater,
                                (false, true) => Ordering::Less,
                                (false, false) if s.order == SortOrder::Desc => {
                                    cmp_values(is_decimal(&s.field), x, y).reverse()
                                }
                                (false, false) => cmp_values(is_decimal(&s.field), x, y),
                            }
                        }
                        None => Ordering::Equal,
                    };
                    by_sort
                        .then_with(|| {
                            def.key
                                .iter()
                                .map(|k| cmp_values(is_decimal(k), a.get(k), b.get(k)))
                                .find(|o| o.is_ne())
                                .unwrap_or(Ordering::Equal)
                        })
                        .then_with(|| sa.cmp(sb))
                });
                out.sections
                    .insert(name.as_str(), MergedSection::List(records));
            }
        }
    }
    out
}

/// A total order on field values: numbers numerically, strings (and ISO dates) textually,
/// decimals by value, nulls last.
fn cmp_values(decimal: bool, a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn class(v: Option<&Value>) -> u8 {
        match v {
            Some(Value::Bool(_)) => 0,
            Some(Value::Number(_)) => 1,
            Some(Value::String(_)) => 2,
            Some(Value::Array(_) | Value::Object(_)) => 3,
            None | Some(Value::Null) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Some(Value::String(x)), Some(Value::String(y))) if decimal => {
            crate::decimal::cmp(x, y).unwrap_or_else(|| x.cmp(y))
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// The fields a view shows of a section: `None` when the view does not have the section.
fn allowed<'a>(view: &'a ViewDef, section: &str) -> Option<Allowed<'a>> {
    let fields = view.sections.get(section)?;
    Some(if fields.iter().any(|f| f == "*") {
        Allowed::All
    } else {
        Allowed::Only(fields)
    })
}

/// A view's field allow-list for one section (a handful of names: a linear search beats
/// building a set per section per request).
enum Allowed<'a> {
    All,
    Only(&'a [String]),
}

impl Allowed<'_> {
    fn shows(&self, field: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(fields) => fields.iter().any(|f| f == field),
        }
    }
}

/// Applies a view: only its sections, only their allowed fields, with provenance.
/// Returns the `sections` object and the conflicts on visible fields.
pub fn render(merged: &Merged, view: &ViewDef) -> (Map<String, Value>, Vec<Conflict>) {
    let mut sections = Map::new();
    for (name, sec) in &merged.sections {
        let Some(filter) = allowed(view, name) else {
            continue;
        };
        let visible = |f: &str| filter.shows(f);
        match sec {
            MergedSection::Single(fields) => {
                let mut obj = Map::new();
                let mut prov = Map::new();
                for (f, v, src) in fields {
                    if visible(f) {
                        obj.insert(f.to_string(), (*v).clone());
                        prov.insert(f.to_string(), Value::String(src.to_string()));
                    }
                }
                obj.insert(PROVENANCE.into(), Value::Object(prov));
                sections.insert(name.to_string(), Value::Object(obj));
            }
            MergedSection::List(records) => {
                let list = records
                    .iter()
                    .map(|(r, src)| {
                        let mut obj: Map<String, Value> = r
                            .iter()
                            .filter(|(f, _)| visible(f))
                            .map(|(f, v)| (f.to_owned(), v.clone()))
                            .collect();
                        obj.insert(SOURCE.into(), Value::String(src.to_string()));
                        Value::Object(obj)
                    })
                    .collect();
                sections.insert(name.to_string(), Value::Array(list));
            }
        }
    }
    (sections, visible_conflicts(merged, view))
}

/// The conflicts on fields the view shows.
fn visible_conflicts(merged: &Merged, view: &ViewDef) -> Vec<Conflict> {
    merged
        .conflicts
        .iter()
        .filter(|c| allowed(view, &c.section).is_some_and(|f| f.shows(&c.field)))
        .cloned()
        .collect()
}

const PROVENANCE: &str = "_provenance";
const SOURCE: &str = "_source";

/// Serialises a `single` section as [`render`] builds it (fields and `_provenance` in key
/// order, as a `Map` serialises), straight from the merged fields: no value is copied.
struct SingleOut<'a> {
    fields: Vec<(&'a str, &'a Value, &'a Arc<str>)>,
}

impl Serialize for SingleOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Provenance<'x, 'a>(&'x [(&'a str, &'a Value, &'a Arc<str>)]);
        impl Serialize for Provenance<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (f, _, src) in self.0 {
                    m.serialize_entry(f, &**src)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(self.fields.len() + 1))?;
        entries_with(
            &mut m,
            self.fields.iter().map(|(f, v, _)| (*f, *v)),
            PROVENANCE,
            &Provenance(&self.fields),
        )?;
        m.end()
    }
}

/// Writes `entries` (in key order) with `(key, extra)` at its sorted place, as a `Map` holding
/// both would serialise: an entry named `key` is replaced by `extra`.
fn entries_with<'v, M: serde::ser::SerializeMap>(
    m: &mut M,
    entries: impl Iterator<Item = (&'v str, &'v Value)>,
    key: &str,
    extra: &(impl Serialize + ?Sized),
) -> Result<(), M::Error> {
    let mut extra_done = false;
    for (f, v) in entries {
        if !extra_done && f > key {
            m.serialize_entry(key, extra)?;
            extra_done = true;
        }
        if f != key {
            m.serialize_entry(f, v)?;
        }
    }
    if !extra_done {
        m.serialize_entry(key, extra)?;
    }
    Ok(())
}

/// Serialises a `list` section's records with their visible fields and `_source`.
struct ListOut<'m, 'a, F: Fn(&str) -> bool> {
    records: &'m [(&'a Record, &'a Arc<str>)],
    visible: F,
}

impl<F: Fn(&str) -> bool> Serialize for ListOut<'_, '_, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct RecordOut<'x, 'a, F: Fn(&str) -> bool>(&'a Record, &'a Arc<str>, &'x F);
        impl<F: Fn(&str) -> bool> Serialize for RecordOut<'_, '_, F> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                let visible = self.0.iter().filter(|(f, _)| (self.2)(f));
                entries_with(&mut m, visible, SOURCE, &**self.1)?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.records.len()))?;
        for (r, src) in self.records {
            seq.serialize_element(&RecordOut(r, src, &self.visible))?;
        }
        seq.end()
    }
}

/// [`render`], serialised directly: each visible section's JSON text, in key order.
fn render_json(merged: &Merged, view: &ViewDef) -> Vec<(String, Box<RawValue>)> {
    let mut out = Vec::with_capacity(merged.sections.len());
    for (name, sec) in &merged.sections {
        let Some(filter) = allowed(view, name) else {
            continue;
        };
        let visible = |f: &str| filter.shows(f);
        let json = match sec {
            MergedSection::Single(fields) => serde_json::value::to_raw_value(&SingleOut {
                fields: fields
                    .iter()
                    .filter(|(f, _, _)| visible(f))
                    .copied()
                    .collect(),
            }),
            MergedSection::List(records) => {
                serde_json::value::to_raw_value(&ListOut { records, visible })
            }
        };
        // Serialising values that came from JSON cannot fail; a section that did is left out
        // rather than failing the dossier.
        if let Ok(json) = json {
            out.push((name.to_string(), json));
        }
    }
    out
}

/// A view's rendering of one set of answers: the `sections` object and the visible conflicts,
/// each also serialised once. It is a pure function of (answers, view, requested sections,
/// config), so the gateway keeps it in a render cache and a repeated read only splices it into
/// the response (whose per-request parts — source statuses, ages, times, trace id — are never
/// cached).
#[derive(Debug)]
pub struct Rendered {
    /// Each visible section's JSON, in key order.
    sections: Vec<(String, Box<RawValue>)>,
    pub conflicts: Vec<Conflict>,
    /// The conflicts' JSON; `None` when they could not be serialised (then they are serialised
    /// again when needed).
    conflicts_json: Option<Box<RawValue>>,
}

impl Rendered {
    /// A rendering of sections already built as values (see [`render`]); the gateway renders
    /// with [`Rendered::render`], tests build arbitrary sections with this.
    #[cfg(test)]
    pub fn new(sections: Map<String, Value>, conflicts: Vec<Conflict>) -> Rendered {
        let sections = sections
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::value::to_raw_value(&v).ok()?)))
            .collect();
        Rendered::with_sections(sections, conflicts)
    }

    fn with_sections(sections: Vec<(String, Box<RawValue>)>, conflicts: Vec<Conflict>) -> Self {
        let conflicts_json = serde_json::value::to_raw_value(&conflicts).ok();
        Rendered {
            sections,
            conflicts,
            conflicts_json,
        }
    }

    /// Merges and renders `answers` for `view`, serialising each section straight from the
    /// answers' values (the same text as the values [`render`] builds, serialised, without
    /// building and dropping a copy of every value).
    pub fn render(
        defs: &BTreeMap<String, SectionDef>,
        decimals: &DecimalFields,
        wanted: &BTreeSet<&str>,
        answers: &[&SourceAnswer],
        view: &ViewDef,
    ) -> Rendered {
        let merged = merge(defs, decimals, wanted, answers);
        let sections = render_json(&merged, view);
        Rendered::with_sections(sections, visible_conflicts(&merged, view))
    }

    /// The `sections` object as values (parsed from the text: for rules and themes, which
    /// read fields; the dossier itself is sent as the text).
    pub fn sections(&self) -> Map<String, Value> {
        self.sections
            .iter()
            .filter_map(|(k, raw)| Some((k.clone(), serde_json::from_str(raw.get()).ok()?)))
            .collect()
    }

    /// An estimate of the bytes it holds: the JSON text with its allocations, twice over to
    /// err high.
    pub fn weight(&self) -> u32 {
        let text = self.text_len() + 64 * self.sections.len();
        u32::try_from(text.saturating_mul(2).saturating_add(256)).unwrap_or(u32::MAX)
    }

    /// The length of its JSON text (section names, sections and conflicts).
    pub fn text_len(&self) -> usize {
        self.sections
            .iter()
            .map(|(k, r)| k.len() + r.get().len())
            .chain(self.conflicts_json.iter().map(|r| r.get().len()))
            .sum()
    }

    /// Serialises the `sections` object with `own` (sections the gateway adds itself) in key
    /// order; a section in `own` replaces a rendered one of the same name.
    pub fn sections_with<'a>(&'a self, own: &'a Map<String, Value>) -> impl Serialize + 'a {
        SectionsOut { r: self, own }
    }

    /// Writes the `sections` object as [`Rendered::sections_with`] serialises it, into `out`:
    /// the rendered sections are copied as they are, `own` goes through serde_json.
    pub fn write_sections(&self, own: &Map<String, Value>, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut rendered = self
            .sections
            .iter()
            .filter(|(k, _)| !own.contains_key(k))
            .peekable();
        let mut own = own.iter().peekable();
        let mut first = true;
        // Both are in key order: merged, so the object is too, as a `Map` would serialise.
        loop {
            let take_rendered = match (rendered.peek(), own.peek()) {
                (Some((a, _)), Some((b, _))) => a.as_str() < b.as_str(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            if take_rendered {
                if let Some((k, raw)) = rendered.next() {
                    crate::jsonout::str(out, k);
                    out.push(b':');
                    out.extend_from_slice(raw.get().as_bytes());
                }
            } else if let Some((k, v)) = own.next() {
                crate::jsonout::str(out, k);
                out.push(b':');
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, v);
            }
        }
        out.push(b'}');
    }

    /// Serialises the conflicts.
    pub fn conflicts_out(&self) -> impl Serialize + '_ {
        match &self.conflicts_json {
            Some(raw) => Json::Raw(raw),
            None => Json::Conflicts(&self.conflicts),
        }
    }
}

enum Json<'a> {
    Raw(&'a RawValue),
    Value(&'a Value),
    Conflicts(&'a [Conflict]),
}

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(r) => r.serialize(s),
            Json::Value(v) => v.serialize(s),
            Json::Conflicts(c) => c.serialize(s),
        }
    }
}

struct SectionsOut<'a> {
    r: &'a Rendered,
    own: &'a Map<String, Value>,
}

impl Serialize for SectionsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let rendered = self
            .r
            .sections
            .iter()
            .filter(|(k, _)| !self.own.contains_key(k))
            .map(|(k, raw)| (k, Json::Raw(raw)));
        let own = self.own.iter().map(|(k, v)| (k, Json::Value(v)));
        // Both are in key order; merge them so the output is too, as a `Map` would serialise.
        let mut all: Vec<(&String, Json<'_>)> = rendered.chain(own).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut m = s.serialize_map(Some(all.len()))?;
        for (k, v) in &all {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SortSpec;
    use serde_json::json;

    fn answer(adapter: &str, recs: Vec<Value>) -> SourceAnswer {
        let mut sections = crate::mapping::Sections::new();
        sections.insert(
            "l".into(),
            recs.into_iter()
                .map(|v| v.as_object().cloned().unwrap_or_default().into())
                .collect(),
        );
        SourceAnswer {
            adapter: Arc::from(adapter),
            organisation: Arc::from("org"),
            fetched_at: chrono::DateTime::UNIX_EPOCH,
            sections,
            bytes: 0,
        }
    }

    fn defs() -> BTreeMap<String, SectionDef> {
        let mut d = BTreeMap::new();
        d.insert(
            "l".into(),
            SectionDef {
                kind: SectionKind::List,
                description: String::new(),
                authority: vec!["a".into()],
                key: vec!["soort".into(), "start".into()],
                sort: Some(SortSpec {
                    field: "start".into(),
                    order: SortOrder::Desc,
                }),
            },
        );
        d
    }

    #[test]
    fn a_rendering_serialises_like_the_map_with_own_sections_in_key_order() {
        let mut sections = Map::new();
        sections.insert("a".into(), json!({"x": 1}));
        sections.insert("persoon".into(), json!({"naam": "Jansen"}));
        sections.insert("zaken".into(), json!(["from a source"]));
        sections.insert("zz".into(), json!([1, 2]));
        let r = Rendered::new(sections.clone(), Vec::new());
        let mut own = Map::new();
        own.insert("zaken".into(), json!(["from the store"]));
        own.insert("b".into(), json!(null));
        let mut expected = sections;
        expected.extend(own.clone());
        assert_eq!(
            serde_json::to_string(&r.sections_with(&own)).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&r.sections_with(&Map::new())).unwrap(),
            serde_json::to_string(&r.sections()).unwrap()
        );
        assert_eq!(serde_json::to_string(&r.conflicts_out()).unwrap(), "[]");
        // Written by hand, the same bytes: with own sections before, between, after and
        // replacing rendered ones, with none, and with nothing rendered.
        let mut more = own.clone();
        more.insert("\"q\"".into(), json!("escaped key"));
        more.insert("zzz".into(), json!({"last": true}));
        for own in [own, more, Map::new()] {
            for r in [&r, &Rendered::new(Map::new(), Vec::new())] {
                let mut out = Vec::new();
                r.write_sections(&own, &mut out);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&r.sections_with(&own)).unwrap()
                );
            }
        }
    }

    #[test]
    fn the_cache_weighs_the_mapped_records() {
        let small = answer("a", vec![json!({"soort": "WW"})]);
        let big = answer(
            "a",
            (0..100)
                .map(|i| json!({"soort": format!("soort-{i}"), "start": "2026-01-01", "bedrag": 10.5}))
                .collect(),
        );
        assert!(small.heap_size() >= 512);
        // 100 records of 3 fields: at least the fields' own overhead each.
        assert!(big.heap_size() > 100 * 3 * 96, "{}", big.heap_size());
        assert!(big.heap_size() > small.heap_size() * 20);
    }

    #[test]
    fn decimals_agree_and_sort_by_value_not_by_text() {
        let a = answer(
            "a",
            vec![
                json!({"soort": "WW", "start": "9.50", "bedrag": "131.00"}),
                json!({"soort": "ZW", "start": "10.00", "bedrag": "1.5"}),
            ],
        );
        let b = answer(
            "b",
            vec![
                // The same records in another scale: no conflict, no second record.
                json!({"soort": "WW", "start": "9.5", "bedrag": "131"}),
                json!({"soort": "ZW", "start": "10", "bedrag": "1.50"}),
                json!({"soort": "AOW", "start": "100.0", "bedrag": "2"}),
            ],
        );
        let wanted: BTreeSet<&str> = ["l"].into();
        let defs = defs();
        let decimals: DecimalFields = [(
            "l".to_string(),
            ["start", "bedrag"].map(String::from).into(),
        )]
        .into();
        let m = merge(&defs, &decimals, &wanted, &[&b, &a]);
        let MergedSection::List(recs) = &m.sections["l"] else {
            panic!()
        };
        let order: Vec<(&str, &str)> = recs
            .iter()
            .map(|(r, _)| (r["start"].as_str().unwrap(), r["bedrag"].as_str().unwrap()))
            .collect();
        // Descending by value (as text "9.50" would sort first); the authority's digits.
        assert_eq!(
            order,
            [("100.0", "2"), ("10.00", "1.5"), ("9.50", "131.00")]
        );
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        // Without the decimal fields the same answers differ as text.
        let m = merge(&defs, &DecimalFields::new(), &wanted, &[&b, &a]);
        let MergedSection::List(recs) = &m.sections["l"] else {
            panic!()
        };
        assert_eq!(recs.len(), 5);
    }

    #[test]
    fn duplicates_only_across_sources_and_nulls_sort_last() {
        let a = answer(
            "a",
            vec![
                json!({"soort": "WW", "start": "2026-01-01", "bedrag": 10}),
                // Same key from the same source: a separate record, kept.
                json!({"soort": "WW", "start": "2026-01-01", "bedrag": 11}),
                // Incomplete key: never merged.
                json!({"soort": "ZW", "start": null}),
                json!({"soort": "ZW", "start": null}),
            ],
        );
        let b = answer(
            "b",
            vec![
                json!({"soort": "WW", "start": "2026-01-01", "bedrag": 12}),
                json!({"soort": "AOW", "start": "2020-01-01"}),
            ],
        );
        let wanted: BTreeSet<&str> = ["l"].into();
        let defs = defs();
        let m = merge(&defs, &DecimalFields::new(), &wanted, &[&b, &a]);
        let MergedSection::List(recs) = &m.sections["l"] else {
            panic!()
        };
        let summary: Vec<(String, String)> = recs
            .iter()
            .map(|(r, s)| (r["soort"].as_str().unwrap().to_string(), s.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                ("WW", "a"),
                ("WW", "a"),
                ("AOW", "b"),
                ("ZW", "a"),
                ("ZW", "a")
            ]
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .to_vec()
        );
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(
            m.conflicts[0].key,
            Some(vec![json!("WW"), json!("2026-01-01")])
        );
        assert_eq!(m.conflicts[0].values[1], (Arc::from("b"), json!(12)));
    }
}
