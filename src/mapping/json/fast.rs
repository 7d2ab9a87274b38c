//! The pointer-only fast path of the JSON mapper.
//!
//! When every path of a mapping is an RFC 6901 pointer, the parts of an answer a pointer can
//! reach are known before the answer arrives. The answer is then parsed once into a [`Node`]
//! tree that keeps only those parts (objects as key/value lists, strings borrowed from the
//! answer where they hold no escapes), instead of a full `serde_json::Value` with a map and an
//! owned string for every key. The rest is parsed all the same (syntax errors, the depth cap
//! and serde_json's recursion limit apply to the whole answer) but not kept.
//!
//! The result must equal the reference path (`Value` + pointers) for every answer: the tests
//! compare both. Where serde_json's `Value` does something special (its private raw-value key),
//! the fast path gives up and the caller takes the reference path.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// One pointer token, with its array index (RFC 6901: digits without a leading zero) worked
/// out once.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) key: String,
    pub(super) index: Option<usize>,
}

impl Token {
    pub(super) fn new(key: String) -> Token {
        // The same rule as the reference walk: no empty token, no leading zero, then whatever
        // `usize::from_str` accepts.
        let index = if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
            None
        } else {
            key.parse::<usize>().ok()
        };
        Token { key, index }
    }
}

/// Which parts of an answer the pointers of a mapping can reach.
#[derive(Debug, Clone, Default)]
pub(super) struct Keep {
    /// The whole subtree is kept (a field's value, which may be converted or quoted as a whole).
    all: bool,
    /// Object members and array elements on the way to a kept part.
    children: Vec<(Token, Keep)>,
    /// Applies to every element of an array (the records of an `each`).
    items: Option<Box<Keep>>,
    /// A number here is kept as the answer's text (a `decimal` field keeps its digits).
    raw: bool,
}

static KEEP_ALL: Keep = Keep {
    all: true,
    children: Vec::new(),
    items: None,
    raw: false,
};

impl Keep {
    /// The node at `tokens`, created on the way.
    pub(super) fn at(&mut self, tokens: &[Token]) -> &mut Keep {
        let mut k = self;
        for t in tokens {
            let i = match k.children.iter().position(|(c, _)| c.key == t.key) {
                Some(i) => i,
                None => {
                    k.children.push((t.clone(), Keep::default()));
                    k.children.len() - 1
                }
            };
            k = &mut k.children[i].1;
        }
        k
    }

    /// Keeps the whole value at `tokens` (a field).
    pub(super) fn field(&mut self, tokens: &[Token]) {
        self.at(tokens).all = true;
    }

    /// Keeps the whole value at `tokens`, a number as its text (a `decimal` field).
    pub(super) fn decimal(&mut self, tokens: &[Token]) {
        let k = self.at(tokens);
        k.all = true;
        k.raw = true;
    }

    /// Keeps at `tokens` what `record` keeps, for the node itself (an object is one record)
    /// and for each of its elements (an array is a list of records).
    pub(super) fn each(&mut self, tokens: &[Token], record: &Keep) {
        let k = self.at(tokens);
        k.merge(record);
        match &mut k.items {
            Some(items) => items.merge(record),
            None => k.items = Some(Box::new(record.clone())),
        }
    }

    /// Keeps also what `other` keeps.
    pub(super) fn merge(&mut self, other: &Keep) {
        self.all |= other.all;
        self.raw |= other.raw;
        for (t, o) in &other.children {
            self.at(std::slice::from_ref(t)).merge(o);
        }
        if let Some(o) = &other.items {
            match &mut self.items {
                Some(items) => items.merge(o),
                None => self.items = Some(o.clone()),
            }
        }
    }

    fn member(&self, key: &str) -> Option<&Keep> {
        if self.all {
            return Some(self);
        }
        self.children
            .iter()
            .find(|(t, _)| t.key == key)
            .map(|(_, k)| k)
    }

    fn element(&self, i: usize) -> Option<&Keep> {
        if self.all {
            return Some(self);
        }
        let named = self
            .children
            .iter()
            .find(|(t, _)| t.index == Some(i))
            .map(|(_, k)| k);
        match (named, self.items.as_deref()) {
            // Both an explicit index and the records reach it: keep it whole (rare).
            (Some(_), Some(_)) => Some(&KEEP_ALL),
            (Some(k), None) | (None, Some(k)) => Some(k),
            (None, None) => None,
        }
    }
}

/// A parsed answer, pruned to what the pointers can reach.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    /// A number as the answer's text, where a `decimal` field reaches it.
    RawNumber(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Members in document order; a repeated key is looked up from the end, so the last one
    /// wins as in `serde_json::Map`.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    /// A part no pointer reaches.
    Skipped,
}

impl Node<'_> {
    /// Follows pre-split pointer tokens (the same rules as the reference walk on `Value`).
    pub(super) fn walk(&self, tokens: &[Token]) -> Option<&Self> {
        let mut v = self;
        for t in tokens {
            v = match v {
                Node::Object(members) => {
                    &members.iter().rev().find(|(k, _)| k.as_ref() == t.key)?.1
                }
                Node::Array(items) => items.get(t.index?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The same value as `serde_json::Value` (for the rare field whose value is not text).
    pub(super) fn to_value(&self) -> Value {
        match self {
            Node::Null | Node::Skipped => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            // Checked to be a JSON number of float range when it was parsed.
            Node::RawNumber(t) => t.parse().map_or(Value::Null, Value::Number),
            Node::String(s) => Value::String(s.as_ref().to_owned()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => {
                let mut m = Map::new();
                for (k, v) in members {
                    m.insert(k.as_ref().to_owned(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }
}

/// What a parse found besides the tree.
pub(super) struct Parse {
    max_depth: u32,
    pub(super) too_deep: bool,
    /// The answer uses serde_json's private raw-value key; the caller must take the reference
    /// path, which gives that key its special meaning.
    pub(super) fallback: bool,
}

/// serde_json's `Value` treats an object whose first key is this token as an embedded raw
/// value (feature `raw_value`, enabled in this crate).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Parses `body`, keeping what `keep` reaches. `Err` is serde_json's error (with `fallback` or
/// without).
pub(super) fn parse<'a>(
    body: &'a [u8],
    keep: &Keep,
    max_depth: u32,
) -> (Result<Node<'a>, serde_json::Error>, Parse) {
    let mut state = Parse {
        max_depth,
        too_deep: false,
        fallback: false,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = Seed {
        keep: Some(keep),
        depth: 1,
        state: &mut state,
    }
    .deserialize(&mut de)
    .and_then(|node| de.end().map(|()| node));
    (result, state)
}

/// Parses one value at `depth`; `keep: None` parses it without keeping it.
struct Seed<'k, 's> {
    keep: Option<&'k Keep>,
    depth: u32,
    state: &'s mut Parse,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        // Every node counts for the depth cap, kept or not (as `depth_exceeds` counts them).
        if self.depth > self.state.max_depth {
            self.state.too_deep = true;
        }
        if self.keep.is_some_and(|k| k.raw) {
            return self.deserialize_raw(d);
        }
        d.deserialize_any(self)
    }
}

impl<'s> Seed<'_, 's> {
    /// A value where a `decimal` field points: a number is kept as its text, anything else is
    /// parsed from its text as a kept value would be.
    fn deserialize_raw<'de, D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        let text = <&'de RawValue>::deserialize(d)?.get();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            // As `Value` does: a number beyond a float's range is an error, not a value.
            return match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Node::RawNumber(text)),
                _ => Err(D::Error::custom("number out of range")),
            };
        }
        let mut de = serde_json::Deserializer::from_str(text);
        Seed {
            keep: Some(&KEEP_ALL),
            depth: self.depth,
            state: self.state,
        }
        .deserialize(&mut de)
        .map_err(D::Error::custom)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(self.keep.map_or(Node::Skipped, |_| Node::Bool(b)))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Node<'de>, E> {
        Ok(self.keep.map_or(Node::Skipped, |_| Node::Number(i.into())))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Node<'de>, E> {
        Ok(self.keep.map_or(Node::Skipped, |_| Node::Number(u.into())))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Node<'de>, E> {
        // As `Value`: a float JSON cannot carry (none can be parsed) would be null.
        Ok(self.keep.map_or(Node::Skipped, |_| {
            Number::from_f64(f).map_or(Node::Null, Node::Number)
        }))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(self
            .keep
            .map_or(Node::Skipped, |_| Node::String(Cow::Borrowed(s))))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(self
            .keep
            .map_or(Node::Skipped, |_| Node::String(Cow::Owned(s.to_owned()))))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(self.keep.map_or(Node::Skipped, |_| Node::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let Seed { keep, depth, state } = self;
        let mut items = Vec::new();
        let mut i = 0;
        loop {
            let seed = Seed {
                keep: keep.and_then(|k| k.element(i)),
                depth: depth + 1,
                state: &mut *state,
            };
            match seq.next_element_seed(seed)? {
                Some(node) => {
                    if keep.is_some() {
                        items.push(node);
                    }
                }
                None => break,
            }
            i += 1;
        }
        Ok(keep.map_or(Node::Skipped, |_| Node::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let Seed { keep, depth, state } = self;
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == RAW_VALUE_TOKEN {
                state.fallback = true;
                return Err(A::Error::custom("serde_json raw value key"));
            }
            let child = keep.and_then(|k| k.member(&key));
            let seed = Seed {
                keep: child,
                depth: depth + 1,
                state: &mut *state,
            };
            let node = map.next_value_seed(seed)?;
            if child.is_some() {
                members.push((key, node));
            }
        }
        Ok(keep.map_or(Node::Skipped, |_| Node::Object(members)))
    }
}

/// An object key, borrowed from the answer when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        // `deserialize_str`, as serde_json's own key classifier asks for keys.
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}
