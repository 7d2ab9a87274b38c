//! [`Record`]: one mapped record, its fields in name order behind names interned when the
//! mapping compiles.
//!
//! A compiled mapping holds each field's name once, as an `Arc<str>`, with its fields sorted by
//! name (they come from a YAML map). A record is then a plain vector of `(name, value)` in that
//! order: building one copies no name and sorts nothing, and a field is found by a binary search
//! over a handful of entries instead of a walk down B-tree nodes. It serialises as the JSON
//! object a `serde_json::Map` would (keys in order), so the shared cache's format and every
//! rendered byte are unchanged.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A field's name, shared by the compiled mapping and every record it builds.
pub type FieldName = Arc<str>;

/// One record of a section: field name -> typed value (`null` when the source has no value),
/// in name order, each name once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    fields: Vec<(FieldName, Value)>,
}

static NULL: Value = Value::Null;

impl Record {
    /// An empty record.
    pub fn new() -> Record {
        Record::default()
    }

    /// A record of fields already in name order without repeats, as the compiled mappings
    /// produce them (checked in debug builds).
    pub(crate) fn from_sorted(fields: Vec<(FieldName, Value)>) -> Record {
        debug_assert!(
            fields.windows(2).all(|w| w[0].0 < w[1].0),
            "record fields out of order"
        );
        Record { fields }
    }

    /// The value of `name`, if the record has the field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .binary_search_by(|(f, _)| (**f).cmp(name))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// Sets `name` to `value` (keeping the name order); returns the value it replaces.
    pub fn insert(
        &mut self,
        name: impl Into<FieldName> + AsRef<str>,
        value: Value,
    ) -> Option<Value> {
        match self
            .fields
            .binary_search_by(|(f, _)| (**f).cmp(name.as_ref()))
        {
            Ok(i) => Some(std::mem::replace(&mut self.fields[i].1, value)),
            Err(i) => {
                self.fields.insert(i, (name.into(), value));
                None
            }
        }
    }

    /// The fields in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + DoubleEndedIterator {
        self.into_iter()
    }

    /// The fields in name order, with their shared names.
    pub fn fields(&self) -> &[(FieldName, Value)] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The bytes this record holds on the heap beside its values' own: the field slots. The
    /// names are shared with the mapping (or, read back from the shared cache, one copy per
    /// record: counted too, so the estimate errs high).
    pub(crate) fn slots_size(&self) -> usize {
        self.fields.capacity() * std::mem::size_of::<(FieldName, Value)>()
    }
}

/// Fields in any order; a repeated name keeps its last value (as a map would).
impl<K: Into<FieldName>> FromIterator<(K, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Record {
        let mut fields: Vec<(FieldName, Value)> =
            iter.into_iter().map(|(k, v)| (k.into(), v)).collect();
        sort_unique(&mut fields);
        Record { fields }
    }
}

/// Sorts by name (stable) and keeps the last value of a repeated name.
fn sort_unique(fields: &mut Vec<(FieldName, Value)>) {
    if fields.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    // `dedup_by` keeps the first of a run; the last one is the one a map would keep.
    fields.reverse();
    fields.dedup_by(|later, earlier| later.0 == earlier.0);
    fields.reverse();
}

impl From<serde_json::Map<String, Value>> for Record {
    fn from(map: serde_json::Map<String, Value>) -> Record {
        // A `Map` iterates in key order without repeats.
        Record::from_sorted(map.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<Record> for serde_json::Map<String, Value> {
    fn from(r: Record) -> serde_json::Map<String, Value> {
        r.fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

/// `record["field"]`: the value, or `null` for a field the record does not have (as with a
/// `serde_json::Map` behind a `Value`).
impl Index<&str> for Record {
    type Output = Value;
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or(&NULL)
    }
}

impl<'a> IntoIterator for &'a Record {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (FieldName, Value)>,
        fn(&'a (FieldName, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter().map(|(f, v)| (&**f, v))
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len()))?;
        for (f, v) in &self.fields {
            m.serialize_entry(&**f, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        struct RecordVisitor;
        impl<'de> Visitor<'de> for RecordVisitor {
            type Value = Record;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a record (a JSON object of fields)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut fields: Vec<(FieldName, Value)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    fields.push((Arc::from(k), v));
                }
                sort_unique(&mut fields);
                Ok(Record { fields })
            }
        }
        d.deserialize_map(RecordVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_stay_in_name_order_and_a_repeated_name_keeps_its_last_value() {
        let r: Record = [
            ("soort", json!("WW")),
            ("bedrag", json!("1")),
            ("soort", json!("ZW")),
            ("aanvang", json!(null)),
        ]
        .into_iter()
        .collect();
        let names: Vec<&str> = r.iter().map(|(f, _)| f).collect();
        assert_eq!(names, ["aanvang", "bedrag", "soort"]);
        assert_eq!(r["soort"], "ZW");
        assert_eq!(r.get("aanvang"), Some(&Value::Null));
        assert_eq!(r.get("missing"), None);
        assert_eq!(r["missing"], Value::Null);
    }

    #[test]
    fn insert_keeps_the_order_and_replaces() {
        let mut r = Record::new();
        assert_eq!(r.insert("b", json!(2)), None);
        assert_eq!(r.insert("a", json!(1)), None);
        assert_eq!(r.insert("c", json!(3)), None);
        assert_eq!(r.insert("b", json!(20)), Some(json!(2)));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"a":1,"b":20,"c":3}"#
        );
    }

    #[test]
    fn serialises_as_the_map_would_and_reads_back_in_any_order() {
        let map = json!({"z": 1, "a": {"x": [1, 2]}, "m": null});
        let Value::Object(obj) = map.clone() else {
            unreachable!()
        };
        let r = Record::from(obj.clone());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&obj).unwrap()
        );
        // The shared cache reads records back from JSON text in whatever order it holds.
        let back: Record =
            serde_json::from_str(r#"{"z":1,"m":null,"a":{"x":[1,2]},"z":2}"#).unwrap();
        assert_eq!(back["z"], 2);
        assert_eq!(
            back.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            ["a", "m", "z"]
        );
        assert!(serde_json::from_str::<Record>("[1]").is_err());
        assert_eq!(serde_json::Map::from(r), obj);
    }
}
