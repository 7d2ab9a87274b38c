//! Mapping source answers into dossier sections: pure functions, no I/O.
//!
//! An adapter's `map:` is compiled once, when the config loads, into a [`json::JsonMapping`]
//! (REST answers; RFC 6901 pointers or RFC 9535 JSONPath) or an [`xml::XmlMapping`] (SOAP
//! answers; streaming, elements matched by namespace URI + local name). Both produce
//! [`Sections`]: section name -> records, each record a JSON object with typed field values.
//!
//! This module must not perform I/O or know about HTTP.

pub mod json;
mod record;
pub mod xml;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::FieldType;

pub use record::{FieldName, Record};

/// Section name -> records, as mapped from one source answer.
pub type Sections = BTreeMap<String, Vec<Record>>;

/// Why an answer could not be mapped. Messages name the section and field, never the value of
/// personal data beyond a short excerpt.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MapError {
    #[error("the answer is not valid JSON: {0}")]
    NotJson(String),
    #[error("the answer is not well-formed XML: {0}")]
    NotXml(String),
    #[error("the answer carries a DOCTYPE or entity declaration, which is refused")]
    Doctype,
    #[error(
        "section `{section}`: {records} records, more than the {max} an answer may hold (limits.max_records)"
    )]
    TooManyRecords {
        section: String,
        records: usize,
        max: u32,
    },
    #[error("the answer nests deeper than {0} levels")]
    TooDeep(u32),
    #[error("the answer has no SOAP Envelope/Body")]
    NoSoapBody,
    #[error("SOAP Fault {code}: {reason}")]
    Fault { code: String, reason: String },
    #[error("section `{section}`: required field `{field}` is missing (path `{path}`)")]
    MissingField {
        section: String,
        field: String,
        path: String,
    },
    #[error("section `{section}`: field `{field}` is not a valid {ty}: {excerpt:?}")]
    BadValue {
        section: String,
        field: String,
        ty: &'static str,
        excerpt: String,
    },
    #[error("section `{section}`: `each` path `{path}` does not lead to a list")]
    NotAList { section: String, path: String },
}

/// Caps applied while mapping a source answer.
#[derive(Clone, Copy, Debug)]
pub struct MapLimits {
    pub max_depth: u32,
    /// Most records one answer may put in one section ([`check_records`]).
    pub max_records: u32,
}

impl Default for MapLimits {
    fn default() -> Self {
        MapLimits {
            max_depth: 64,
            max_records: 1000,
        }
    }
}

/// Refuses an answer that puts more than `limits.max_records` records in one section: every
/// read of the dossier pays for each record (merge, view filter, rules of themes and life
/// events, the answer's size), so one source with a huge list would slow every citizen's read.
pub fn check_records(sections: &Sections, limits: &MapLimits) -> Result<(), MapError> {
    match sections
        .iter()
        .find(|(_, records)| records.len() > limits.max_records as usize)
    {
        Some((section, records)) => Err(MapError::TooManyRecords {
            section: section.clone(),
            records: records.len(),
            max: limits.max_records,
        }),
        None => Ok(()),
    }
}

pub(crate) fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Integer => "integer",
        FieldType::Decimal => "decimal",
        FieldType::Date => "date",
        FieldType::Boolean => "boolean",
    }
}

/// The error for a value that does not convert to its field's type (`excerpt` from the
/// conversion), shared by both mappers.
pub(crate) fn bad_value(
    section: &str,
    field: &str,
    ty: FieldType,
) -> impl FnOnce(String) -> MapError {
    move |excerpt| MapError::BadValue {
        section: section.to_owned(),
        field: field.to_owned(),
        ty: type_name(ty),
        excerpt,
    }
}

/// A mapped field as a record entry; a required field without a value is an error.
pub(crate) fn field_entry(
    section: &str,
    field: &FieldName,
    path: &str,
    required: bool,
    value: Value,
) -> Result<(FieldName, Value), MapError> {
    if required && value.is_null() {
        return Err(MapError::MissingField {
            section: section.to_owned(),
            field: field.to_string(),
            path: path.to_owned(),
        });
    }
    Ok((field.clone(), value))
}

fn excerpt(s: &str) -> String {
    untrusted_text(s, 24)
}

/// Text a source wrote (a fault's reason, a problem's detail, a value that did not convert), as
/// it may be shown and logged: control characters and line breaks as spaces, characters that
/// hide or reorder text (zero-width, bidirectional overrides, soft hyphen) dropped, every run
/// of 8 or more digits masked (`*`), also when the digits are not ASCII or are spaced by single
/// spaces, dashes, dots or slashes, and at most `max` characters (then `…`). So an answer that
/// echoes a BSN does not put it in the log, `/admin/status` or a dossier, and a hostile source
/// can neither flood them nor dress its text up.
pub fn untrusted_text(s: &str, max: usize) -> String {
    let hidden = |c: &char| {
        matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    // What can be shown, and a margin past it: a digit run that the cut splits is judged
    // within the margin (a run that fills it is long enough to be masked anyway).
    let mut shown = s
        .chars()
        .filter(|c| !hidden(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .skip_while(|c| c.is_whitespace());
    let mut chars: Vec<char> = shown.by_ref().take(max.saturating_add(64)).collect();
    let more = shown.next().is_some();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        if !chars[i].is_numeric() {
            i += 1;
            continue;
        }
        let (mut j, mut digits) = (i, 0);
        while j < n {
            if chars[j].is_numeric() {
                digits += 1;
                j += 1;
            } else if matches!(chars[j], ' ' | '-' | '.' | '/')
                && chars.get(j + 1).is_some_and(|c| c.is_numeric())
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 8 {
            chars[i..j]
                .iter_mut()
                .filter(|c| c.is_numeric())
                .for_each(|c| *c = '*');
        }
        i = j;
    }
    let mut out: String = chars.iter().take(max).collect();
    out.truncate(out.trim_end().len());
    if n > max || more {
        out.push('…');
    }
    out
}

/// Converts source text into a typed value. `Err` carries an excerpt for the message.
pub fn convert_text(ty: FieldType, raw: &str) -> Result<Value, String> {
    let s = raw.trim();
    match ty {
        FieldType::String => Ok(Value::String(s.to_owned())),
        FieldType::Integer => s.parse::<i64>().map(Value::from).map_err(|_| excerpt(s)),
        FieldType::Decimal => parse_decimal(s).ok_or_else(|| excerpt(s)),
        FieldType::Date => parse_date(s).map(Value::String).ok_or_else(|| excerpt(s)),
        FieldType::Boolean => match s {
            "true" | "1" | "J" | "j" => Ok(Value::Bool(true)),
            "false" | "0" | "N" | "n" => Ok(Value::Bool(false)),
            _ => Err(excerpt(s)),
        },
    }
}

/// Converts a JSON value from a REST answer into the field's type.
pub fn convert_json(ty: FieldType, v: &Value) -> Result<Value, String> {
    match (ty, v) {
        (_, Value::Null) => Ok(Value::Null),
        // Text is trimmed whatever the protocol, so "Utrecht " and "Utrecht" agree.
        (FieldType::String, Value::String(s)) => Ok(Value::String(s.trim().to_owned())),
        (FieldType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (FieldType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (FieldType::Integer, Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .ok_or_else(|| excerpt(&n.to_string())),
        // The number's own digits: `1520.00` stays `1520.00` (see `crate::decimal`). A `Number`
        // that was parsed keeps only its float; the mappers hand the answer's text to
        // `convert_json_number` where they have it.
        (FieldType::Decimal, Value::Number(n)) => convert_json_number(ty, &n.to_string()),
        (FieldType::Boolean, Value::Bool(_)) => Ok(v.clone()),
        (_, Value::String(s)) => convert_text(ty, s),
        (_, other) => Err(excerpt(&other.to_string())),
    }
}

/// A decimal in plain notation (`-12.50`), as its exact text (a JSON string).
fn parse_decimal(s: &str) -> Option<Value> {
    crate::decimal::parse_plain(s).map(Value::String)
}

/// Converts a JSON number given as the answer's own text (`1520.00`): a `decimal` keeps every
/// digit; any other type converts the number as parsed.
pub(crate) fn convert_json_number(ty: FieldType, text: &str) -> Result<Value, String> {
    match ty {
        FieldType::Decimal => crate::decimal::from_json_number(text)
            .map(Value::String)
            .ok_or_else(|| excerpt(text)),
        _ => match text.parse::<serde_json::Number>() {
            Ok(n) => convert_json(ty, &Value::Number(n)),
            Err(_) => Err(excerpt(text)),
        },
    }
}

/// `YYYY-MM-DD`, or StUF's `YYYYMMDD`, to `YYYY-MM-DD` (checked as a calendar date).
/// StUF's incomplete dates (`StUF:indOnvolledigeDatum`) keep what is known: `19810600`
/// becomes `1981-06` and `19810000` becomes `1981`, rather than failing the whole answer.
fn parse_date(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r.clone())?
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| s[r].parse().ok())
            .flatten()
    };
    let (y, m, d) = match b.len() {
        10 if b[4] == b'-' && b[7] == b'-' => (digits(0..4)?, digits(5..7)?, digits(8..10)?),
        8 => (digits(0..4)?, digits(4..6)?, digits(6..8)?),
        _ => return None,
    };
    // The digits were checked above, so the output is cut from the input (no formatting).
    let (year, month, day) = if b.len() == 10 {
        (&s[0..4], &s[5..7], &s[8..10])
    } else {
        (&s[0..4], &s[4..6], &s[6..8])
    };
    match (m, d) {
        (0, 0) if b.len() == 8 => Some(year.to_owned()),
        (1..=12, 0) if b.len() == 8 => Some([year, month].join("-")),
        _ => chrono::NaiveDate::from_ymd_opt(y as i32, m, d).map(|_| {
            if b.len() == 10 {
                s.to_owned()
            } else {
                [year, month, day].join("-")
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_conversion() {
        assert_eq!(
            convert_text(FieldType::Date, "20260301").unwrap(),
            "2026-03-01"
        );
        assert_eq!(
            convert_text(FieldType::Date, "2026-03-01").unwrap(),
            "2026-03-01"
        );
        assert!(convert_text(FieldType::Date, "2026-02-30").is_err());
        assert!(convert_text(FieldType::Date, "2026/02/03").is_err());
        assert_eq!(
            convert_text(FieldType::Date, "19810600").unwrap(),
            "1981-06"
        );
        assert_eq!(convert_text(FieldType::Date, "19810000").unwrap(), "1981");
        assert!(convert_text(FieldType::Date, "19811300").is_err());
        assert_eq!(
            convert_json(FieldType::Decimal, &serde_json::json!(131)).unwrap(),
            "131"
        );
        assert_eq!(
            convert_text(FieldType::Decimal, "131.00").unwrap(),
            "131.00"
        );
        assert_eq!(
            convert_json_number(FieldType::Decimal, "1520.00").unwrap(),
            "1520.00"
        );
        assert_eq!(convert_json_number(FieldType::Integer, "12").unwrap(), 12);
        assert_eq!(
            convert_json(FieldType::String, &serde_json::json!(" Utrecht ")).unwrap(),
            "Utrecht"
        );
        assert_eq!(
            convert_text(FieldType::Decimal, "1843.27").unwrap(),
            "1843.27"
        );
        assert!(convert_text(FieldType::Decimal, "1.843,27").is_err());
        assert!(convert_text(FieldType::Decimal, "1e5").is_err());
        assert_eq!(convert_text(FieldType::Integer, " 42 ").unwrap(), 42);
        assert_eq!(convert_text(FieldType::Boolean, "J").unwrap(), true);
        assert_eq!(
            convert_json(FieldType::String, &serde_json::json!(12)).unwrap(),
            "12"
        );
        assert!(convert_json(FieldType::Integer, &serde_json::json!(1.5)).is_err());
    }

    #[test]
    fn text_from_a_source_is_cut_short_flattened_and_its_numbers_masked() {
        assert_eq!(
            untrusted_text("Persoon met BSN 999993653 niet gevonden", 200),
            "Persoon met BSN ********* niet gevonden"
        );
        // Spaced, split by invisible characters, or in other scripts' digits.
        for bsn in [
            "999-993-653",
            "9 9 9 9 9 3 6 5 3",
            "99999\u{200B}3653",
            "\u{FF19}\u{FF19}\u{FF19}\u{FF19}\u{FF19}\u{FF13}\u{FF16}\u{FF15}\u{FF13}",
            "\u{0669}\u{0669}\u{0669}\u{0669}\u{0669}\u{0663}\u{0666}\u{0665}\u{0663}",
        ] {
            let t = untrusted_text(&format!("BSN {bsn}."), 200);
            assert_eq!(t.chars().filter(|c| *c == '*').count(), 9, "{bsn}: {t}");
        }
        // A date is eight digits too (and may be a birth date).
        assert_eq!(
            untrusted_text("op 12-03-2026 om 14.00", 200),
            "op **-**-**** om 14.00"
        );
        assert_eq!(untrusted_text("Bel 0900 12", 200), "Bel 0900 12");
        assert_eq!(
            untrusted_text("regel 1\nregel\t2\u{7}", 200),
            "regel 1 regel 2"
        );
        assert_eq!(untrusted_text("abc\u{202E}fed", 200), "abcfed");
        assert_eq!(untrusted_text(&"x".repeat(300), 5), "xxxxx…");
        // A run the cut splits is masked as the whole run would be.
        assert_eq!(untrusted_text("bsn 999993653", 8), "bsn ****…");
        assert_eq!(untrusted_text("nr 1234567", 5), "nr 12…");
        assert_eq!(untrusted_text("  ", 10), "");
        assert_eq!(untrusted_text("é€😀", 2), "é€…");
        assert_eq!(untrusted_text("ab", 2), "ab");
    }
}

/// A mapping that does not compile: names the section and (where it applies) the field, so the
/// config loader can point at the YAML key.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub section: String,
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}
