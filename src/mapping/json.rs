//! Mapping JSON answers (REST sources) into sections.
//!
//! Paths are RFC 6901 JSON pointers (`/naam/geslachtsnaam`) or RFC 9535 JSONPath queries
//! (`$.personen[*]`), compiled once. `each` selects the records; field paths are relative to a
//! record. A pointer is the fast path; JSONPath is there for answers that need filtering.
//!
//! A mapping of pointers only is served by `fast`: the answer is parsed into a tree pruned to
//! what the pointers reach. A mapping with any JSONPath parses the whole answer into a
//! `serde_json::Value` (the reference path, which the tests hold the fast path to).

mod fast;

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json_path::JsonPath;

use self::fast::{Keep, Node, Token};
use super::{
    CompileError, FieldName, MapError, MapLimits, Record, Sections, bad_value, convert_json,
    convert_json_number, convert_text, field_entry,
};
use crate::model::{FieldType, SectionMap};

#[derive(Debug, Clone)]
enum Selector {
    /// An RFC 6901 pointer, split and unescaped once when the mapping compiles.
    Pointer(Vec<Token>),
    Path(JsonPath),
}

/// Follows pre-split pointer tokens.
fn walk<'a>(mut v: &'a Value, tokens: &[Token]) -> Option<&'a Value> {
    for t in tokens {
        v = match v {
            Value::Object(m) => m.get(&t.key)?,
            // RFC 6901: an index is digits without a leading zero (worked out in `Token`).
            Value::Array(a) => a.get(t.index?)?,
            _ => return None,
        };
    }
    Some(v)
}

impl Selector {
    fn compile(text: &str) -> Result<Selector, (String, String)> {
        if text.is_empty() || text.starts_with('/') {
            let tokens = text
                .split('/')
                .skip(1)
                .map(|t| Token::new(t.replace("~1", "/").replace("~0", "~")))
                .collect();
            Ok(Selector::Pointer(tokens))
        } else if text.starts_with('$') {
            JsonPath::parse(text).map(Selector::Path).map_err(|e| {
                (
                    format!("invalid JSONPath `{text}`: {e}"),
                    "see RFC 9535, e.g. `$.personen[*]`".to_owned(),
                )
            })
        } else {
            Err((
                format!("path `{text}` is neither a JSON pointer nor a JSONPath"),
                format!(
                    "write a pointer starting with `/` (e.g. `/{text}`) or a JSONPath starting with `$`"
                ),
            ))
        }
    }

    /// All nodes selected; a pointer selects at most one.
    fn select<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match self {
            Selector::Pointer(p) => walk(v, p).into_iter().collect(),
            Selector::Path(p) => p.query(v).all(),
        }
    }

    fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        match self {
            Selector::Pointer(p) => walk(v, p),
            Selector::Path(p) => p.query(v).first(),
        }
    }
}

#[derive(Debug, Clone)]
struct JsonField {
    /// Shared by every record this field fills.
    name: FieldName,
    path: String,
    sel: Selector,
    ty: FieldType,
    required: bool,
}

#[derive(Debug, Clone)]
struct JsonSection {
    name: String,
    each: Option<(String, Selector)>,
    fields: Vec<JsonField>,
}

/// A compiled REST mapping.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    sections: Vec<JsonSection>,
    /// What the pointers reach, when every path is a pointer (the fast path); `None` when a
    /// JSONPath needs the whole answer.
    keep: Option<Keep>,
    /// Some field is a `decimal` (the reference path then looks up floats' text).
    has_decimals: bool,
}

/// The parts of an answer the mapping's pointers reach; `None` if any path is a JSONPath.
fn keep_of(sections: &[JsonSection]) -> Option<Keep> {
    let tokens = |sel: &Selector| match sel {
        Selector::Pointer(t) => Some(t.clone()),
        Selector::Path(_) => None,
    };
    let mut keep = Keep::default();
    for s in sections {
        let mut fields = Keep::default();
        for f in &s.fields {
            if f.ty == FieldType::Decimal {
                fields.decimal(&tokens(&f.sel)?);
            } else {
                fields.field(&tokens(&f.sel)?);
            }
        }
        match &s.each {
            None => keep.merge(&fields),
            Some((_, sel)) => keep.each(&tokens(sel)?, &fields),
        }
    }
    Some(keep)
}

impl JsonMapping {
    /// Compiles an adapter's `map:`; every problem is returned, not just the first.
    pub fn compile(map: &BTreeMap<String, SectionMap>) -> Result<JsonMapping, Vec<CompileError>> {
        let mut errors = Vec::new();
        let mut sections = Vec::new();
        for (name, sm) in map {
            let each = match &sm.each {
                None => None,
                Some(text) => match Selector::compile(text) {
                    Ok(s) => Some((text.clone(), s)),
                    Err((message, hint)) => {
                        errors.push(CompileError {
                            section: name.clone(),
                            field: None,
                            message,
                            hint: Some(hint),
                        });
                        None
                    }
                },
            };
            let mut fields = Vec::new();
            for (fname, spec) in &sm.fields {
                match Selector::compile(&spec.path) {
                    Ok(sel) => fields.push(JsonField {
                        name: FieldName::from(fname.as_str()),
                        path: spec.path.clone(),
                        sel,
                        ty: spec.r#type,
                        required: spec.required,
                    }),
                    Err((message, hint)) => errors.push(CompileError {
                        section: name.clone(),
                        field: Some(fname.clone()),
                        message,
                        hint: Some(hint),
                    }),
                }
            }
            sections.push(JsonSection {
                name: name.clone(),
                each,
                fields,
            });
        }
        if errors.is_empty() {
            let keep = keep_of(&sections);
            let has_decimals = sections
                .iter()
                .any(|s| s.fields.iter().any(|f| f.ty == FieldType::Decimal));
            Ok(JsonMapping {
                sections,
                keep,
                has_decimals,
            })
        } else {
            Err(errors)
        }
    }

    /// Parses and maps a JSON answer.
    pub fn map_bytes(&self, body: &[u8], limits: &MapLimits) -> Result<Sections, MapError> {
        if let Some(keep) = &self.keep {
            let (parsed, state) = fast::parse(body, keep, limits.max_depth);
            // An answer using serde_json's private raw-value key goes the reference way.
            if !state.fallback {
                let root = parsed.map_err(|e| MapError::NotJson(e.to_string()))?;
                if state.too_deep {
                    return Err(MapError::TooDeep(limits.max_depth));
                }
                return self.map_node(&root);
            }
        }
        self.map_bytes_reference(body, limits)
    }

    /// The reference path: the whole answer as a `Value`, then the selectors.
    fn map_bytes_reference(&self, body: &[u8], limits: &MapLimits) -> Result<Sections, MapError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| MapError::NotJson(e.to_string()))?;
        if depth_exceeds(&v, limits.max_depth) {
            return Err(MapError::TooDeep(limits.max_depth));
        }
        if !self.has_decimals {
            return self.map_value(&v);
        }
        // A parsed float has lost its digits (`1520.00` is `1520.0`): where a decimal field may
        // reach one, the answer's own text for every float is looked up in a second, pruned
        // parse, by where the float sits.
        let floats = floats_of(&v);
        if floats.is_empty() {
            return self.map_value(&v);
        }
        let mut keep = Keep::default();
        for (_, tokens) in &floats {
            keep.decimal(tokens);
        }
        let (parsed, _) = fast::parse(body, &keep, limits.max_depth);
        let tree = parsed.map_err(|e| MapError::NotJson(e.to_string()))?;
        let texts: FloatTexts<'_> = floats
            .iter()
            .filter_map(|(at, tokens)| match tree.walk(tokens) {
                Some(Node::RawNumber(t)) => Some((*at, *t)),
                _ => None,
            })
            .collect();
        self.map_value_with(&v, &texts)
    }

    /// Maps an already parsed answer.
    pub fn map_value(&self, root: &Value) -> Result<Sections, MapError> {
        self.map_value_with(root, &FloatTexts::new())
    }

    /// [`Self::map_value`], a decimal field that reaches a float taking its text from `texts`.
    fn map_value_with(&self, root: &Value, texts: &FloatTexts<'_>) -> Result<Sections, MapError> {
        let mut out = Sections::new();
        for s in &self.sections {
            let records: Vec<&Value> = match &s.each {
                None => vec![root],
                Some((path, sel)) => {
                    let nodes = sel.select(root);
                    match (sel, nodes.as_slice()) {
                        (_, []) => Vec::new(),
                        (Selector::Pointer(_), [Value::Array(items)]) => items.iter().collect(),
                        (Selector::Pointer(_), [obj @ Value::Object(_)]) => vec![*obj],
                        (Selector::Pointer(_), [Value::Null]) => Vec::new(),
                        (Selector::Pointer(_), _) => {
                            return Err(MapError::NotAList {
                                section: s.name.clone(),
                                path: path.clone(),
                            });
                        }
                        (Selector::Path(_), [Value::Array(items)]) => items.iter().collect(),
                        (Selector::Path(_), many) => many.to_vec(),
                    }
                }
            };
            let mut mapped = Vec::with_capacity(records.len());
            for rec in records {
                mapped.push(self.map_record(s, rec, texts)?);
            }
            out.insert(s.name.clone(), mapped);
        }
        Ok(out)
    }

    /// [`Self::map_value`] over a pruned tree; only called when every selector is a pointer.
    fn map_node(&self, root: &Node<'_>) -> Result<Sections, MapError> {
        let mut out = Sections::new();
        for s in &self.sections {
            let records: Vec<&Node<'_>> = match &s.each {
                None => vec![root],
                Some((path, sel)) => match sel_walk(sel, root) {
                    None | Some(Node::Null) => Vec::new(),
                    Some(Node::Array(items)) => items.iter().collect(),
                    Some(obj @ Node::Object(_)) => vec![obj],
                    Some(_) => {
                        return Err(MapError::NotAList {
                            section: s.name.clone(),
                            path: path.clone(),
                        });
                    }
                },
            };
            let mut mapped = Vec::with_capacity(records.len());
            for rec in records {
                // Fields are sorted by name (they come from a map): the record is built in one
                // go rather than by one search-and-insert per field.
                let r =
                    s.fields
                        .iter()
                        .map(|f| {
                            let value = match sel_walk(&f.sel, rec) {
                                Some(v) => convert_node(f.ty, v)
                                    .map_err(bad_value(&s.name, &f.name, f.ty))?,
                                None => Value::Null,
                            };
                            field_entry(&s.name, &f.name, &f.path, f.required, value)
                        })
                        .collect::<Result<Vec<_>, MapError>>()?;
                mapped.push(Record::from_sorted(r));
            }
            out.insert(s.name.clone(), mapped);
        }
        Ok(out)
    }

    fn map_record(
        &self,
        s: &JsonSection,
        rec: &Value,
        texts: &FloatTexts<'_>,
    ) -> Result<Record, MapError> {
        let mut r = Vec::with_capacity(s.fields.len());
        for f in &s.fields {
            let value = match f.sel.first(rec) {
                Some(v) => match texts.get(&std::ptr::from_ref(v)) {
                    Some(text) if f.ty == FieldType::Decimal => convert_json_number(f.ty, text),
                    _ => convert_json(f.ty, v),
                }
                .map_err(bad_value(&s.name, &f.name, f.ty))?,
                None => Value::Null,
            };
            r.push(field_entry(&s.name, &f.name, &f.path, f.required, value)?);
        }
        // In name order: the fields are.
        Ok(Record::from_sorted(r))
    }
}

/// The answer's text of a parsed float, by the float's place in the parsed answer.
type FloatTexts<'a> = std::collections::HashMap<*const Value, &'a str>;

/// Every float of a parsed answer (integers keep their digits as parsed), with its pointer.
fn floats_of<'v>(root: &'v Value) -> Vec<(*const Value, Vec<Token>)> {
    let mut out = Vec::new();
    let mut stack: Vec<(&'v Value, Vec<Token>)> = vec![(root, Vec::new())];
    while let Some((v, at)) = stack.pop() {
        // Only containers and floats get a path of their own.
        let mut push = |x: &'v Value, key: String| {
            let wanted = match x {
                Value::Number(n) => n.is_f64(),
                Value::Array(_) | Value::Object(_) => true,
                _ => false,
            };
            if wanted {
                let mut t = at.clone();
                t.push(Token::new(key));
                stack.push((x, t));
            }
        };
        match v {
            Value::Number(n) if n.is_f64() => out.push((std::ptr::from_ref(v), at)),
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    push(x, i.to_string());
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    push(x, k.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// A pointer on the pruned tree (a JSONPath never gets here: such a mapping has no `keep`).
fn sel_walk<'n, 'a>(sel: &Selector, node: &'n Node<'a>) -> Option<&'n Node<'a>> {
    match sel {
        Selector::Pointer(tokens) => node.walk(tokens),
        Selector::Path(_) => None,
    }
}

/// [`convert_json`] for a node of the pruned tree, without copying text twice.
fn convert_node(ty: FieldType, v: &Node<'_>) -> Result<Value, String> {
    match (ty, v) {
        (FieldType::String, Node::String(s)) => Ok(Value::String(s.trim().to_owned())),
        (_, Node::String(s)) => convert_text(ty, s),
        (_, Node::RawNumber(t)) => convert_json_number(ty, t),
        (_, other) => convert_json(ty, &other.to_value()),
    }
}

/// True when `v` nests deeper than `max` (iterative: a hostile answer cannot blow the stack).
fn depth_exceeds(v: &Value, max: u32) -> bool {
    let mut stack: Vec<(&Value, u32)> = vec![(v, 1)];
    while let Some((node, d)) = stack.pop() {
        if d > max {
            return true;
        }
        match node {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldSpec;

    fn spec(
        each: Option<&str>,
        fields: &[(&str, &str, FieldType, bool)],
    ) -> BTreeMap<String, SectionMap> {
        let mut m = BTreeMap::new();
        m.insert(
            "s".to_string(),
            SectionMap {
                each: each.map(str::to_owned),
                fields: fields
                    .iter()
                    .map(|(n, p, t, r)| {
                        (
                            n.to_string(),
                            FieldSpec {
                                path: p.to_string(),
                                r#type: *t,
                                required: *r,
                            },
                        )
                    })
                    .collect(),
            },
        );
        m
    }

    #[test]
    fn pointer_and_jsonpath_map_the_same() {
        let body = br#"{"personen":[{"naam":{"geslachtsnaam":"Vries"},"leeftijd":45}]}"#;
        for (each, naam) in [
            ("/personen", "/naam/geslachtsnaam"),
            ("$.personen[*]", "$.naam.geslachtsnaam"),
        ] {
            let m = JsonMapping::compile(&spec(
                Some(each),
                &[
                    ("naam", naam, FieldType::String, true),
                    ("leeftijd", "/leeftijd", FieldType::Integer, false),
                ],
            ))
            .unwrap();
            let out = m.map_bytes(body, &MapLimits::default()).unwrap();
            assert_eq!(out["s"][0]["naam"], "Vries");
            assert_eq!(out["s"][0]["leeftijd"], 45);
        }
    }

    #[test]
    fn decimals_keep_the_answers_digits_on_every_path() {
        // Numbers and strings, a repeated key (the last wins), an exponent, more digits than a
        // float holds, and a float elsewhere in the answer that no field reaches.
        let body = br#"{"noise":0.10,"rijen":[
            {"soort":"a","bedrag":1520.00,"n":1.50},
            {"soort":"b","bedrag":"342.50"},
            {"soort":"c","bedrag":9.99,"bedrag":12.10},
            {"soort":"d","bedrag":1.50e3},
            {"soort":"e","bedrag":12345678901234567.891},
            {"soort":"f","bedrag":-0.00}]}"#;
        for (each, bedrag) in [
            ("/rijen", "/bedrag"),
            ("$.rijen[*]", "/bedrag"),
            ("/rijen", "$.bedrag"),
            ("$.rijen[?@.soort]", "$['bedrag']"),
        ] {
            let m = JsonMapping::compile(&spec(
                Some(each),
                &[
                    ("soort", "/soort", FieldType::String, true),
                    ("bedrag", bedrag, FieldType::Decimal, false),
                    ("n", "/n", FieldType::String, false),
                ],
            ))
            .unwrap();
            let out = m.map_bytes(body, &MapLimits::default()).unwrap();
            let got: Vec<&Value> = out["s"].iter().map(|r| &r["bedrag"]).collect();
            assert_eq!(
                got,
                [
                    "1520.00",
                    "342.50",
                    "12.10",
                    "1500",
                    "12345678901234567.891",
                    "-0.00"
                ],
                "{each} {bedrag}"
            );
            // A float in a string field is still the parsed number's text.
            assert_eq!(out["s"][0]["n"], "1.5");
        }
        let m =
            JsonMapping::compile(&spec(None, &[("x", "/x", FieldType::Decimal, false)])).unwrap();
        for bad in [
            r#"{"x":1e400}"#,
            r#"{"x":1e99}"#,
            r#"{"x":"1,5"}"#,
            r#"{"x":true}"#,
        ] {
            assert!(
                m.map_bytes(bad.as_bytes(), &MapLimits::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn required_missing_and_bad_values_are_errors() {
        let m =
            JsonMapping::compile(&spec(None, &[("x", "/x", FieldType::Integer, true)])).unwrap();
        assert!(matches!(
            m.map_bytes(br#"{"y":1}"#, &MapLimits::default()),
            Err(MapError::MissingField { .. })
        ));
        assert!(matches!(
            m.map_bytes(br#"{"x":"abc"}"#, &MapLimits::default()),
            Err(MapError::BadValue { .. })
        ));
        assert!(matches!(
            m.map_bytes(b"<html>", &MapLimits::default()),
            Err(MapError::NotJson(_))
        ));
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let v: Value = serde_json::from_str(r#"{"a/b": {"m~n": [10, 20]}, "": 1}"#).unwrap();
        let sel = |p: &str| match Selector::compile(p).unwrap() {
            Selector::Pointer(t) => walk(&v, &t).cloned(),
            Selector::Path(_) => None,
        };
        assert_eq!(sel("/a~1b/m~0n/1"), Some(serde_json::json!(20)));
        assert_eq!(sel("/a~1b/m~0n/01"), None);
        assert_eq!(sel("/"), Some(serde_json::json!(1)));
        assert_eq!(sel(""), Some(v.clone()));
        assert_eq!(sel("/nope"), None);
    }

    #[test]
    fn depth_is_capped() {
        let m =
            JsonMapping::compile(&spec(None, &[("x", "/x", FieldType::String, false)])).unwrap();
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(
            m.map_bytes(
                deep.as_bytes(),
                &MapLimits {
                    max_depth: 16,
                    ..MapLimits::default()
                }
            ),
            Err(MapError::TooDeep(16))
        ));
    }

    #[test]
    fn bad_paths_do_not_compile() {
        let errs = JsonMapping::compile(&spec(
            Some("personen"),
            &[("x", "$[", FieldType::String, false)],
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}

/// The fast path (pruned tree) against the reference path (`Value`): same sections, same
/// errors, on the fixtures and on odd answers.
#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use crate::model::FieldSpec;

    fn field(path: &str, ty: FieldType, required: bool) -> FieldSpec {
        FieldSpec {
            path: path.to_string(),
            r#type: ty,
            required,
        }
    }

    fn section(each: Option<&str>, fields: &[(&str, FieldSpec)]) -> SectionMap {
        SectionMap {
            each: each.map(str::to_owned),
            fields: fields
                .iter()
                .map(|(n, f)| (n.to_string(), f.clone()))
                .collect(),
        }
    }

    fn assert_same(m: &JsonMapping, body: &str, limits: &MapLimits) -> Result<Sections, MapError> {
        assert!(
            m.keep.is_some(),
            "a mapping of pointers takes the fast path"
        );
        let fast = m.map_bytes(body.as_bytes(), limits);
        let reference = m.map_bytes_reference(body.as_bytes(), limits);
        assert_eq!(fast, reference, "answer: {body}");
        fast
    }

    #[test]
    fn fixtures_map_the_same_both_ways() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let env = crate::demo::demo_env(
            "http://127.0.0.1:9".into(),
            "a-test-secret-of-at-least-thirty-two-bytes".into(),
        );
        let config =
            crate::config::compile::Config::load_with_env(&root.join("config/demo.yaml"), &env)
                .unwrap();
        let mut compared = 0;
        for case in std::fs::read_dir(root.join("fixtures/cases")).unwrap() {
            let case = case.unwrap().path();
            for (id, spec) in &config.adapters {
                let crate::config::compile::Mapping::Json(m) = &spec.mapping else {
                    continue;
                };
                let Ok(body) = std::fs::read_to_string(case.join(format!("{id}.json"))) else {
                    continue;
                };
                let out = assert_same(m, &body, &spec.limits);
                assert!(out.is_ok(), "{}: {out:?}", case.display());
                compared += 1;
            }
        }
        assert!(compared >= 10, "only {compared} fixture answers compared");
    }

    #[test]
    fn odd_answers_map_the_same_both_ways() {
        let mut map = BTreeMap::new();
        map.insert(
            "persoon".to_string(),
            section(
                None,
                &[
                    ("naam", field("/personen/0/naam", FieldType::String, false)),
                    (
                        "leeftijd",
                        field("/personen/0/leeftijd", FieldType::Integer, false),
                    ),
                    (
                        "bedrag",
                        field("/personen/0/bedrag", FieldType::Decimal, false),
                    ),
                    ("datum", field("/personen/0/datum", FieldType::Date, false)),
                    (
                        "actief",
                        field("/personen/0/actief", FieldType::Boolean, false),
                    ),
                    ("plus", field("/personen/+1/naam", FieldType::String, false)),
                    ("tilde", field("/a~1b/m~0n", FieldType::String, false)),
                    ("leeg", field("/", FieldType::String, false)),
                ],
            ),
        );
        map.insert(
            "rijen".to_string(),
            section(
                Some("/rijen"),
                &[("x", field("/1/x", FieldType::Decimal, false))],
            ),
        );
        let m = JsonMapping::compile(&map).unwrap();
        // Records of a list with a required field, an index into a nested list and the whole
        // record as a field.
        let mut lists = BTreeMap::new();
        lists.insert(
            "lijst".to_string(),
            section(
                Some("/personen"),
                &[
                    ("naam", field("/naam", FieldType::String, true)),
                    ("eerste", field("/0", FieldType::Integer, false)),
                ],
            ),
        );
        lists.insert(
            "geheel".to_string(),
            section(
                Some("/personen"),
                &[("waarde", field("", FieldType::String, false))],
            ),
        );
        let lists = JsonMapping::compile(&lists).unwrap();
        let limits = MapLimits {
            max_depth: 16,
            ..MapLimits::default()
        };
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let answers = [
            // Plain, with escapes in values and keys, numbers as text, nulls and absences.
            r#"{"personen":[{"naam":" Vries ","leeftijd":"45","bedrag":"131.00","datum":"19810614","actief":"J"}]}"#,
            r#"{"personen":[{"n\u0061am":"d\u00e9 Vri\"es\n","leeftijd":45,"bedrag":131,"datum":null}],"a/b":{"m~n":"x"},"":"leeg"}"#,
            r#"{"personen":[{"naam":"A"},{"naam":"B","leeftijd":-3}],"rijen":[[{"x":1},{"x":"2.50"}],[{"x":3}],[],null,7]}"#,
            r#"{"personen":[{"naam":12,"bedrag":1.5e3,"actief":true}]}"#,
            r#"{"personen":[{"naam":true,"leeftijd":18446744073709551615}]}"#,
            r#"{"personen":[[5,6]]}"#,
            r#"{"personen":{"naam":"alleen"}}"#,
            r#"{"personen":null}"#,
            r#"{"personen":[]}"#,
            r#"{}"#,
            r#"[]"#,
            r#""tekst""#,
            // Repeated keys: the last wins, also for a whole subtree.
            r#"{"personen":[{"naam":"eerst","naam":"laatst"}],"personen":[{"naam":"tweede lijst"}]}"#,
            r#"{"personen":[{"naam":"X","leeftijd":1}],"personen":[{"naam":"Y"}]}"#,
            // Values that are not what the field wants.
            r#"{"personen":[{"naam":"X","leeftijd":"vijf"}]}"#,
            r#"{"personen":[{"naam":"X","leeftijd":1.5}]}"#,
            r#"{"personen":[{"naam":{"b":1,"a":[1,{"c":null}]}}]}"#,
            r#"{"personen":[{"naam":"X","datum":"2026-02-30"}]}"#,
            r#"{"personen":[{"naam":"X","actief":"misschien"}]}"#,
            r#"{"personen":[{"leeftijd":1}]}"#,
            r#"{"personen":[{"naam":null}]}"#,
            r#"{"personen":"geen lijst"}"#,
            r#"{"personen":[{"naam":"X"}],"rijen":5}"#,
            // Depth: in a part no pointer reaches, in a kept part, past serde_json's limit.
            &format!(r#"{{"personen":[{{"naam":"X"}}],"overig":{}}}"#, deep(20)),
            &format!(r#"{{"personen":[{{"naam":{}}}]}}"#, deep(20)),
            &format!(r#"{{"overig":{}}}"#, deep(200)),
            &format!(r#"{{"overig":{},"kapot"}}"#, deep(20)),
            r#"{"personen":[{"naam":"X"}],"overig":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}"#,
            r#"{"personen":[{"naam":"X"}],"overig":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}"#,
            // Not JSON.
            "<html>",
            r#"{"personen":[{"naam":"X"}]} extra"#,
            r#"{"personen":[{"naam":"X"}"#,
            r#"{"personen":[{"naam":"X\q"}]}"#,
            "",
            // serde_json's private raw-value key (the fast path hands over to the reference).
            r#"{"$serde_json::private::RawValue":"{\"personen\":[{\"naam\":\"R\"}]}"}"#,
            r#"{"personen":[{"naam":"X"}],"b":{"$serde_json::private::RawValue":12}}"#,
        ];
        for body in answers {
            let _ = assert_same(&m, body, &limits);
            let _ = assert_same(&lists, body, &limits);
        }
        // A few outcomes spelled out, so "the same" is not "the same mistake".
        let out = assert_same(&m, answers[1], &limits).unwrap();
        assert_eq!(out["persoon"][0]["naam"], "dé Vri\"es");
        assert_eq!(out["persoon"][0]["tilde"], "x");
        assert_eq!(out["persoon"][0]["leeg"], "leeg");
        let out = assert_same(&m, answers[2], &limits).unwrap();
        assert_eq!(out["persoon"][0]["plus"], "B");
        assert_eq!(out["rijen"].len(), 5);
        // A decimal keeps the answer's digits, on both paths.
        assert_eq!(out["rijen"][0]["x"], "2.50");
        let out = assert_same(&m, answers[12], &limits).unwrap();
        assert_eq!(out["persoon"][0]["naam"], "tweede lijst");
        assert_eq!(
            assert_same(&lists, answers[12], &limits),
            Err(MapError::BadValue {
                section: "geheel".into(),
                field: "waarde".into(),
                ty: "string",
                excerpt: r#"{"naam":"tweede lijst"}"#.into(),
            })
        );
        assert_eq!(
            assert_same(&m, answers[23], &limits),
            Err(MapError::TooDeep(16))
        );
    }
}
