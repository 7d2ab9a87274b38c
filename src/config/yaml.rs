//! YAML documents as a tree that remembers where every node came from.
//!
//! serde-saphyr parses the text (pure Rust, no unsafe, duplicate keys and alias bombs refused);
//! we keep the result as a [`Node`] tree with line/column per node, expand `${ENV}` references in
//! string scalars, and then deserialise typed config structs out of it. Keeping the tree lets
//! the loader report *every* problem in a file (see [`super::load`]) and lets semantic checks point
//! at the exact key they complain about.
//!
//! This module must not know the config schema.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Where a node starts: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

/// A parsed YAML value with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
    /// Set when the scalar was produced by `${VAR}` expansion: its text is a secret or at least
    /// environment-specific, and error messages must not repeat it.
    pub from_env: Option<String>,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own position so "unknown key" errors point at the key.
    Map(Vec<(Pos, String, Node)>),
}

/// One step into a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(_, k, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The position of `key` itself inside this map node.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(_, k, _)| k == key)
                .map(|(p, _, _)| *p),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Pos, String, Node)] {
        match &self.kind {
            NodeKind::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq(items) => items,
            _ => &[],
        }
    }

    /// Follows `path`; returns the deepest node reached and whether the whole path resolved.
    pub fn walk<'a>(&'a self, path: &[Step]) -> (&'a Node, bool) {
        let mut cur = self;
        for step in path {
            let next = match step {
                Step::Key(k) => cur.get(k),
                Step::Index(i) => cur.items().get(*i),
            };
            match next {
                Some(n) => cur = n,
                None => return (cur, false),
            }
        }
        (cur, true)
    }

    /// [`Node::pos_at`] for a path of map keys only.
    pub fn pos_at_keys(&self, keys: &[&str]) -> Pos {
        let steps: Vec<Step> = keys.iter().map(|k| Step::Key((*k).to_string())).collect();
        self.pos_at(&steps)
    }

    /// Position of the node at `path`, or of the deepest existing ancestor.
    pub fn pos_at(&self, path: &[Step]) -> Pos {
        self.walk(path).0.pos
    }

    /// Removes the node at `path` (a map entry or sequence item). Returns false when absent.
    pub fn remove(&mut self, path: &[Step]) -> bool {
        let Some((last, parent_path)) = path.split_last() else {
            return false;
        };
        let mut cur = self;
        for step in parent_path {
            let next = match (step, &mut cur.kind) {
                (Step::Key(k), NodeKind::Map(entries)) => entries
                    .iter_mut()
                    .find(|(_, key, _)| key == k)
                    .map(|(_, _, v)| v),
                (Step::Index(i), NodeKind::Seq(items)) => items.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => return false,
            }
        }
        match (last, &mut cur.kind) {
            (Step::Key(k), NodeKind::Map(entries)) => {
                let before = entries.len();
                entries.retain(|(_, key, _)| key != k);
                before != entries.len()
            }
            (Step::Index(i), NodeKind::Seq(items)) if *i < items.len() => {
                items[*i] = Node {
                    pos: items[*i].pos,
                    kind: NodeKind::Null,
                    from_env: None,
                };
                true
            }
            _ => false,
        }
    }

    /// Converts to JSON for typed deserialisation (positions are kept in `self`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(_, k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Positions of the string scalars that hold `${`: in text that gets no expansion (a
    /// partner's descriptor) such a value is refused rather than taken literally, so nobody
    /// mistakes it for a working reference and no value ever depends on the environment.
    pub fn env_references(&self) -> Vec<Pos> {
        let mut out = Vec::new();
        self.env_references_into(&mut out);
        out
    }

    fn env_references_into(&self, out: &mut Vec<Pos>) {
        match &self.kind {
            NodeKind::Str(s) if s.contains("${") => out.push(self.pos),
            NodeKind::Seq(items) => items.iter().for_each(|n| n.env_references_into(out)),
            NodeKind::Map(entries) => entries.iter().for_each(|(kpos, k, n)| {
                if k.contains("${") {
                    out.push(*kpos);
                }
                n.env_references_into(out);
            }),
            _ => {}
        }
    }

    /// Like [`Node::to_json`], but every scalar that came from the environment shows the
    /// reference it came from (`${VAR}`) instead of its value: what may be shown to anyone
    /// who is not the operator.
    pub fn to_json_redacted(&self) -> serde_json::Value {
        use serde_json::Value;
        if let Some(vars) = &self.from_env {
            return Value::String(vars.clone());
        }
        match &self.kind {
            NodeKind::Seq(items) => {
                Value::Array(items.iter().map(Node::to_json_redacted).collect())
            }
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(_, k, v)| (k.clone(), v.to_json_redacted()))
                    .collect(),
            ),
            _ => self.to_json(),
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}` in every string scalar; `$${` is a literal `${`.
    /// Problems (unset variables, unclosed references) are returned with their positions.
    pub fn interpolate(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<(Pos, String)> {
        let mut problems = Vec::new();
        self.interpolate_into(lookup, &mut problems);
        problems
    }

    fn interpolate_into(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<(Pos, String)>,
    ) {
        match &mut self.kind {
            NodeKind::Str(s) if s.contains('$') => match expand(s, lookup) {
                Ok((expanded, vars)) => {
                    if !vars.is_empty() {
                        self.from_env = Some(vars.join(", "));
                    }
                    *s = expanded;
                }
                Err(msg) => problems.push((self.pos, msg)),
            },
            NodeKind::Seq(items) => items
                .iter_mut()
                .for_each(|n| n.interpolate_into(lookup, problems)),
            NodeKind::Map(entries) => entries
                .iter_mut()
                .for_each(|(_, _, n)| n.interpolate_into(lookup, problems)),
            _ => {}
        }
    }
}

/// Expands one string. Returns the text and the names of the variables used.
fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(s.len());
    let mut vars = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(inner_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = inner_start.find('}') else {
            return Err("unclosed `${`: write `${NAME}`, or `$${` for a literal".into());
        };
        let inner = &inner_start[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let name = name.strip_prefix("env.").unwrap_or(name);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{inner}}}` is not a valid reference: use `${{NAME}}` or `${{NAME:-default}}` with NAME of letters, digits and _"
            ));
        }
        match lookup(name).or_else(|| default.map(str::to_owned)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable `{name}` is not set: export it, or give a default with `${{{name}:-...}}`"
                ));
            }
        }
        vars.push(format!("${{{name}}}"));
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    Ok((out, vars))
}

/// Deepest nesting of mappings and sequences accepted in a config file or descriptor.
pub const MAX_DEPTH: usize = 32;

/// Parses YAML text into a positioned tree. The error is serde-saphyr's, which carries a
/// location and a source excerpt.
pub fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    // YAML 1.2 booleans only (`no` stays the string "no"), and numbers with a leading zero
    // (an OIN such as 00000001003214345000) stay strings.
    // Nesting is capped well below what the parser's recursion can take on a 2 MiB thread
    // stack (a debug build overflows near 65 levels; the config schema needs about 12, JSON
    // Schemas in `services:` a few more): a descriptor of `[[[[...` from a partner must be an
    // error, never a crashed gateway.
    let opts = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        budget: serde_saphyr::budget! { max_depth: MAX_DEPTH },
    };
    let root: Spanned<Raw> = serde_saphyr::from_str_with_options(text, opts)?;
    Ok(convert(root))
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn convert(s: Spanned<Raw>) -> Node {
    let pos = pos_of(&s);
    let kind = match s.value {
        Raw::Null => NodeKind::Null,
        Raw::Bool(b) => NodeKind::Bool(b),
        Raw::Int(i) => NodeKind::Int(i),
        Raw::Float(f) => NodeKind::Float(f),
        Raw::Str(s) => NodeKind::Str(s),
        Raw::Seq(items) => NodeKind::Seq(items.into_iter().map(convert).collect()),
        Raw::Map(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (pos_of(&k), k.value, convert(v)))
                .collect(),
        ),
    };
    Node {
        pos,
        kind,
        from_env: None,
    }
}

/// The shape serde-saphyr fills; converted to [`Node`] right away.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept() {
        let n = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
        assert_eq!(n.key_pos("b"), Some(Pos { line: 2, column: 1 }));
        let c = n.get("b").unwrap().get("c").unwrap();
        assert_eq!(c.items()[1].pos.line, 3);
        assert_eq!(c.items()[1].as_str(), Some("y"));
    }

    #[test]
    fn interpolation_marks_nodes_and_never_leaks() {
        let mut n = parse("s: \"pre-${SECRET}\"\nd: ${MISSING:-fallback}\nl: $${X}\n").unwrap();
        let problems = n.interpolate(&|k| (k == "SECRET").then(|| "hunter2".to_string()));
        assert!(problems.is_empty());
        assert_eq!(n.get("s").unwrap().as_str(), Some("pre-hunter2"));
        assert_eq!(n.get("s").unwrap().from_env.as_deref(), Some("${SECRET}"));
        assert_eq!(n.get("d").unwrap().as_str(), Some("fallback"));
        assert_eq!(n.get("l").unwrap().as_str(), Some("${X}"));
    }

    #[test]
    fn unset_variable_is_reported_with_position() {
        let mut n = parse("a: ok\nb: ${NOPE}\n").unwrap();
        let problems = n.interpolate(&|_| None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0.line, 2);
        assert!(problems[0].1.contains("NOPE"));
    }

    #[test]
    fn yaml_11_surprises_stay_strings() {
        let n = parse("a: no\nb: 00000001003214345000\nc: y\n").unwrap();
        assert_eq!(n.get("a").unwrap().as_str(), Some("no"));
        assert_eq!(n.get("b").unwrap().as_str(), Some("00000001003214345000"));
        assert_eq!(n.get("c").unwrap().as_str(), Some("y"));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(parse("a: 1\na: 2\n").is_err());
    }
}

#[cfg(test)]
mod depth_tests {
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for n in [33usize, 100, 1000, 16_000] {
            let flow = format!("id: x\nmap: {}{}\n", "[".repeat(n), "]".repeat(n));
            let e = super::parse(&flow).expect_err("too deep").to_string();
            assert!(e.contains("Depth") || e.contains("recursion"), "{e}");
            let block: String = (0..n.min(200))
                .map(|i| format!("{}k{i}:\n", " ".repeat(2 * i)))
                .collect();
            assert!(super::parse(&block).is_err(), "block nesting {n}");
        }
        let ok = format!("a: {}{}\n", "[".repeat(20), "]".repeat(20));
        assert!(super::parse(&ok).is_ok());
    }
}
