//! Mapping JSON answers (REST sources) into sections.
//!
//! Paths are RFC 6901 JSON pointers (`/naam/geslachtsnaam`) or RFC 9535 JSONPath queries
//! (`$.personen[*]`), compiled once. `each` selects the records; field paths are relative to a
//! record. A pointer is the fast path; JSONPath is there for answers that need filtering.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json_path::JsonPath;

use super::{CompileError, MapError, MapLimits, Record, Sections, convert_json, type_name};
use crate::config::model::{FieldType, SectionMap};

#[derive(Debug, Clone)]
enum Selector {
    /// An RFC 6901 pointer, split and unescaped once when the mapping compiles.
    Pointer(Vec<String>),
    Path(JsonPath),
}

/// Follows pre-split pointer tokens.
fn walk<'a>(mut v: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    for t in tokens {
        v = match v {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => {
                // RFC 6901: an index is digits without a leading zero.
                if t.is_empty() || (t.len() > 1 && t.starts_with('0')) {
                    return None;
                }
                a.get(t.parse::<usize>().ok()?)?
            }
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
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
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
    name: String,
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
                        name: fname.clone(),
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
            Ok(JsonMapping { sections })
        } else {
            Err(errors)
        }
    }

    /// Parses and maps a JSON answer.
    pub fn map_bytes(&self, body: &[u8], limits: &MapLimits) -> Result<Sections, MapError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| MapError::NotJson(e.to_string()))?;
        if depth_exceeds(&v, limits.max_depth) {
            return Err(MapError::TooDeep(limits.max_depth));
        }
        self.map_value(&v)
    }

    /// Maps an already parsed answer.
    pub fn map_value(&self, root: &Value) -> Result<Sections, MapError> {
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
                mapped.push(self.map_record(s, rec)?);
            }
            out.insert(s.name.clone(), mapped);
        }
        Ok(out)
    }

    fn map_record(&self, s: &JsonSection, rec: &Value) -> Result<Record, MapError> {
        let mut r = Record::new();
        for f in &s.fields {
            let value = match f.sel.first(rec) {
                Some(v) => convert_json(f.ty, v).map_err(|excerpt| MapError::BadValue {
                    section: s.name.clone(),
                    field: f.name.clone(),
                    ty: type_name(f.ty),
                    excerpt,
                })?,
                None => Value::Null,
            };
            if f.required && value.is_null() {
                return Err(MapError::MissingField {
                    section: s.name.clone(),
                    field: f.name.clone(),
                    path: f.path.clone(),
                });
            }
            r.insert(f.name.clone(), value);
        }
        Ok(r)
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
    use crate::config::model::FieldSpec;

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
            m.map_bytes(deep.as_bytes(), &MapLimits { max_depth: 16 }),
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
