//! Rules over the dossier in CEL (the Common Expression Language, as used by Kubernetes and
//! Envoy): service relevance and life events.
//!
//! Rules are compiled and checked when the config loads: a rule that does not parse, or that
//! names a section or field no adapter fills, is a config error at the rule's position. At
//! run time a rule sees the caller's view of the dossier: one variable per section (`persoon`
//! a map, list sections a list of maps), date fields as timestamps, and `now`. A rule that
//! cannot be evaluated (a missing value) counts as "does not apply", with that as the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr};
use cel::{Context, Program, Value as CelValue};
use chrono::{FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::{Map, Value};

/// Sections and the fields adapters map into them; `dates` are the date-typed ones.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub fields: BTreeMap<String, BTreeSet<String>>,
    pub dates: BTreeSet<(String, String)>,
    /// The `decimal` fields by section: exact text in the dossier, floats in rules.
    pub decimals: crate::dossier::DecimalFields,
    pub lists: BTreeSet<String>,
}

/// A compiled rule.
#[derive(Clone)]
pub struct Rule {
    pub source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rule({:?})", self.source)
    }
}

/// Names a rule may use besides the sections.
const BUILTIN: &[&str] = &["now"];

impl Rule {
    /// Parses and checks a rule; every problem is returned.
    pub fn compile(source: &str, vocab: &Vocabulary) -> Result<Rule, Vec<String>> {
        let program = Program::compile(source).map_err(|e| {
            vec![format!(
                "the rule does not parse: {}",
                e.to_string().lines().next().unwrap_or("syntax error")
            )]
        })?;
        let mut errors = Vec::new();
        check(program.expression(), &HashMap::new(), vocab, &mut errors);
        errors.dedup();
        if errors.is_empty() {
            Ok(Rule {
                source: source.to_string(),
                program: Arc::new(program),
            })
        } else {
            Err(errors)
        }
    }

    /// Evaluates the rule on `facts`. `Err` says why it could not be decided.
    pub fn evaluate(&self, facts: &Facts) -> Result<bool, String> {
        let mut ctx = Context::default();
        for (name, v) in &facts.vars {
            ctx.add_variable_from_value(name.clone(), v.clone());
        }
        match self.program.execute(&ctx) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the rule gave {other:?}, not true or false")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a name in scope stands for while checking.
#[derive(Clone, Debug)]
enum Bound {
    /// A record of this section (a comprehension variable over a list section).
    Record(String),
    /// Something we do not check further (an accumulator, a builtin).
    Opaque,
}

fn check(
    e: &IdedExpr,
    scope: &HashMap<String, Bound>,
    vocab: &Vocabulary,
    errors: &mut Vec<String>,
) {
    match &e.expr {
        Expr::Ident(name) => {
            if !scope.contains_key(name)
                && !vocab.fields.contains_key(name)
                && !BUILTIN.contains(&name.as_str())
            {
                errors.push(format!(
                    "unknown name `{name}`: use a section ({}) or `now`",
                    vocab.fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Expr::Select(s) => {
            // section.field, or record.field inside a comprehension.
            let section = match &s.operand.expr {
                Expr::Ident(name) => match scope.get(name) {
                    Some(Bound::Record(sec)) => Some(sec.clone()),
                    Some(Bound::Opaque) => None,
                    None if vocab.fields.contains_key(name) && !vocab.lists.contains(name) => {
                        Some(name.clone())
                    }
                    None => None,
                },
                _ => None,
            };
            match section {
                Some(sec) => {
                    let known = vocab.fields.get(&sec);
                    if !known.is_some_and(|f| f.contains(&s.field)) {
                        let list: Vec<String> = known
                            .map(|f| f.iter().cloned().collect())
                            .unwrap_or_default();
                        errors.push(format!(
                            "no adapter maps field `{}` into section `{sec}`; known: {}",
                            s.field,
                            list.join(", ")
                        ));
                    }
                }
                None => check(&s.operand, scope, vocab, errors),
            }
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                check(t, scope, vocab, errors);
            }
            for a in &c.args {
                check(a, scope, vocab, errors);
            }
        }
        Expr::Comprehension(c) => {
            check(&c.iter_range, scope, vocab, errors);
            let mut inner = scope.clone();
            let bound = match &c.iter_range.expr {
                Expr::Ident(name) if vocab.lists.contains(name) => Bound::Record(name.clone()),
                _ => Bound::Opaque,
            };
            inner.insert(c.iter_var.clone(), bound);
            if let Some(v2) = &c.iter_var2 {
                inner.insert(v2.clone(), Bound::Opaque);
            }
            inner.insert(c.accu_var.clone(), Bound::Opaque);
            for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                check(part, &inner, vocab, errors);
            }
        }
        Expr::List(l) => l
            .elements
            .iter()
            .for_each(|x| check(x, scope, vocab, errors)),
        Expr::Map(m) => {
            for en in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &en.expr {
                    check(&me.key, scope, vocab, errors);
                    check(&me.value, scope, vocab, errors);
                }
            }
        }
        Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// The dossier as CEL variables.
pub struct Facts {
    vars: Vec<(String, CelValue)>,
}

fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(CelValue::Int)
            .unwrap_or_else(|| CelValue::Float(n.as_f64().unwrap_or_default())),
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let m: HashMap<String, CelValue> =
                o.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            CelValue::from(m)
        }
    }
}

fn date_value(v: &Value) -> CelValue {
    match v
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    {
        Some(d) => d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| FixedOffset::east_opt(0).and_then(|z| z.from_local_datetime(&t).single()))
            .map(CelValue::Timestamp)
            .unwrap_or(CelValue::Null),
        None => to_cel(v),
    }
}

/// A decimal field's value for CEL (which has no decimal type): its float; a value that is not
/// a decimal's text as it is.
fn decimal_value(v: &Value) -> CelValue {
    match v.as_str().and_then(crate::decimal::to_f64) {
        Some(f) => CelValue::Float(f),
        None => to_cel(v),
    }
}

impl Facts {
    /// Builds the variables from a rendered dossier `sections` object (a view's output).
    /// Every field the vocabulary knows is present (null when the view or the sources have no
    /// value), so rules can test `x != null`.
    pub fn from_sections(sections: &Map<String, Value>, vocab: &Vocabulary) -> Facts {
        Self::from_shown(sections, vocab, |_| true)
    }

    /// The facts of a dossier read through a view: a section the view does not show is not
    /// a fact at all (not an empty list), so a rule that reads it cannot be decided, rather
    /// than deciding on records the reader was never shown.
    pub fn from_shown(
        sections: &Map<String, Value>,
        vocab: &Vocabulary,
        shown: impl Fn(&str) -> bool,
    ) -> Facts {
        let record = |sec: &str, obj: Option<&Map<String, Value>>| -> CelValue {
            let mut m: HashMap<String, CelValue> = HashMap::new();
            for f in vocab.fields.get(sec).into_iter().flatten() {
                let v = obj.and_then(|o| o.get(f)).unwrap_or(&Value::Null);
                let cv = if vocab.dates.contains(&(sec.to_string(), f.clone())) {
                    date_value(v)
                } else if vocab.decimals.get(sec).is_some_and(|d| d.contains(f)) {
                    decimal_value(v)
                } else {
                    to_cel(v)
                };
                m.insert(f.clone(), cv);
            }
            CelValue::from(m)
        };
        let mut vars = Vec::new();
        for sec in vocab.fields.keys().filter(|s| shown(s)) {
            let v = if vocab.lists.contains(sec) {
                let items: Vec<CelValue> = sections
                    .get(sec)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|r| record(sec, r.as_object())).collect())
                    .unwrap_or_default();
                CelValue::List(Arc::new(items))
            } else {
                record(sec, sections.get(sec).and_then(Value::as_object))
            };
            vars.push((sec.clone(), v));
        }
        vars.push(("now".into(), CelValue::Timestamp(Utc::now().fixed_offset())));
        Facts { vars }
    }
}

/// Fills `{section.field}` in a reason text from a rendered `single` section.
pub fn fill(text: &str, sections: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = &after[..j];
        let value = name
            .split_once('.')
            .and_then(|(s, f)| sections.get(s).and_then(|o| o.get(f)));
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) if !v.is_null() => out.push_str(&v.to_string()),
            _ => out.push('?'),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vocab() -> Vocabulary {
        let mut v = Vocabulary::default();
        v.fields.insert(
            "persoon".into(),
            ["leeftijd", "geboortedatum"].map(String::from).into(),
        );
        v.fields.insert(
            "uitkeringen".into(),
            ["soort", "einddatum"].map(String::from).into(),
        );
        v.lists.insert("uitkeringen".into());
        v.dates.insert(("uitkeringen".into(), "einddatum".into()));
        v
    }

    #[test]
    fn a_decimal_is_a_number_to_rules() {
        let mut v = vocab();
        v.fields.insert(
            "inkomen".into(),
            ["bedrag", "soort"].map(String::from).into(),
        );
        v.lists.insert("inkomen".into());
        v.decimals
            .insert("inkomen".into(), ["bedrag".to_string()].into());
        let r = Rule::compile("inkomen.exists(i, i.bedrag < 21000.0)", &v).unwrap();
        let facts = |bedrag: &str| {
            let s = json!({"inkomen": [{"bedrag": bedrag, "soort": "x"}]})
                .as_object()
                .cloned()
                .unwrap();
            Facts::from_sections(&s, &v)
        };
        assert_eq!(r.evaluate(&facts("20999.99")), Ok(true));
        assert_eq!(r.evaluate(&facts("21000.00")), Ok(false));
        // Only the decimal field: the same text in a string field stays text.
        let text = Rule::compile("inkomen.exists(i, i.soort == 'x')", &v).unwrap();
        assert_eq!(text.evaluate(&facts("1")), Ok(true));
    }

    #[test]
    fn rules_compile_check_and_evaluate() {
        let v = vocab();
        let r = Rule::compile("persoon.leeftijd >= 66", &v).unwrap();
        let facts = |age: i64| {
            let s = json!({"persoon": {"leeftijd": age}})
                .as_object()
                .cloned()
                .unwrap();
            Facts::from_sections(&s, &v)
        };
        assert_eq!(r.evaluate(&facts(66)), Ok(true));
        assert_eq!(r.evaluate(&facts(30)), Ok(false));

        let ww = Rule::compile(
            "uitkeringen.exists(u, u.soort == 'WW' && u.einddatum != null && u.einddatum < now + duration('2160h'))",
            &v,
        )
        .unwrap();
        let soon = (Utc::now() + chrono::Duration::days(30))
            .format("%Y-%m-%d")
            .to_string();
        let s = json!({"uitkeringen": [{"soort": "WW", "einddatum": soon}]})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(ww.evaluate(&Facts::from_sections(&s, &v)), Ok(true));
        let s = json!({"uitkeringen": [{"soort": "WW", "einddatum": null}]})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(ww.evaluate(&Facts::from_sections(&s, &v)), Ok(false));
        // A missing value cannot be compared: not decided, with the reason.
        let s = json!({}).as_object().cloned().unwrap();
        assert!(r.evaluate(&Facts::from_sections(&s, &v)).is_err());
        // A list the view does not show is no fact, not an empty list: not decided either way.
        let none = Rule::compile("!uitkeringen.exists(u, u.soort == 'WW')", &v).unwrap();
        assert_eq!(none.evaluate(&Facts::from_sections(&s, &v)), Ok(true));
        let hidden = Facts::from_shown(&s, &v, |sec| sec != "uitkeringen");
        assert!(none.evaluate(&hidden).is_err());
    }

    #[test]
    fn typos_are_caught_when_the_config_loads() {
        let v = vocab();
        let e = Rule::compile("persoon.leeftjid >= 66", &v).unwrap_err();
        assert!(e[0].contains("`leeftjid`"), "{e:?}");
        let e = Rule::compile("uitkeringen.exists(u, u.sort == 'WW')", &v).unwrap_err();
        assert!(e[0].contains("`sort`"), "{e:?}");
        let e = Rule::compile("persoon.leeftijd >= ", &v).unwrap_err();
        assert!(e[0].contains("does not parse"), "{e:?}");
        let e = Rule::compile("persn.leeftijd > 1", &v).unwrap_err();
        assert!(e[0].contains("unknown name `persn`"), "{e:?}");
    }

    #[test]
    fn reasons_are_filled_from_the_dossier() {
        let s = json!({"persoon": {"leeftijd": 66}})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            fill("U bent {persoon.leeftijd} jaar.", &s),
            "U bent 66 jaar."
        );
        assert_eq!(fill("{persoon.naam}", &s), "?");
    }
}

/// The compiled rules of a config: service relevance and life events.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub vocab: Vocabulary,
    pub services: BTreeMap<String, Rule>,
    pub life_events: BTreeMap<String, Rule>,
}
