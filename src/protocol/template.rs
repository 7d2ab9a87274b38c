//! Request templates: `{{name}}` placeholders substituted with escaping for the target format.
//!
//! XML templates get XML-escaped values, JSON string templates get JSON-escaped values, and
//! structured JSON bodies get substitution inside string leaves (serialisation escapes them).
//! An unknown placeholder is a config error, found when the config loads.

use serde_json::Value;

/// Placeholders a template may use.
pub const KNOWN: &[&str] = &["bsn"];

/// The names used in `{{...}}` placeholders of `t`.
pub fn placeholders(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                out.push(after[..j].trim().to_string());
                rest = &after[j + 2..];
            }
            None => break,
        }
    }
    out
}

fn render(t: &str, vars: &[(&str, &str)], escape: fn(&str, &mut String)) -> String {
    render_with(
        t,
        &|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        },
        escape,
    )
}

/// Replaces every `{{name}}` with `lookup(name)`, escaped; unknown names become empty.
fn render_with(
    t: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: fn(&str, &mut String),
) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        if let Some(v) = lookup(after[..j].trim()) {
            escape(&v, &mut out);
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// `v` XML-escaped (for text and attribute values).
pub fn escape_xml(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    xml_escape(v, &mut out);
    out
}

fn xml_escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn json_escape(v: &str, out: &mut String) {
    let quoted = Value::String(v.to_string()).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

fn verbatim(v: &str, out: &mut String) {
    out.push_str(v);
}

/// Renders an XML template.
pub fn render_xml(t: &str, vars: &[(&str, &str)]) -> String {
    render(t, vars, xml_escape)
}

/// Renders a JSON body: a string template (JSON-escaped substitution) or a structured value
/// (substitution inside string leaves).
pub fn render_json(body: &Value, vars: &[(&str, &str)]) -> String {
    match body {
        Value::String(t) => render(t, vars, json_escape),
        v => substitute(v, vars).to_string(),
    }
}

/// Renders a header value or URL part without escaping (values are checked by the caller).
pub fn render_plain(t: &str, vars: &[(&str, &str)]) -> String {
    render(t, vars, verbatim)
}

fn substitute(v: &Value, vars: &[(&str, &str)]) -> Value {
    match v {
        Value::String(s) if s.contains("{{") => Value::String(render(s, vars, verbatim)),
        Value::Array(a) => Value::Array(a.iter().map(|i| substitute(i, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Looks up a placeholder's value for delivery templates: `bsn`, `application_id`, `service`,
/// and `data.<property>` from the application's data.
pub struct Vars<'a> {
    pub scalars: &'a [(&'a str, &'a str)],
    pub data: &'a serde_json::Map<String, Value>,
}

impl Vars<'_> {
    fn text(&self, name: &str) -> Option<String> {
        if let Some(p) = name.strip_prefix("data.") {
            return self.data.get(p).map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            });
        }
        self.scalars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn render_vars(t: &str, vars: &Vars<'_>, escape: fn(&str, &mut String)) -> String {
    render_with(t, &|name| vars.text(name), escape)
}

/// An XML delivery template with XML-escaped values.
pub fn render_xml_vars(t: &str, vars: &Vars<'_>) -> String {
    render_vars(t, vars, xml_escape)
}

/// A JSON delivery body. A string leaf that is exactly `{{data.x}}` takes the value with its
/// JSON type; other placeholders are substituted as text.
pub fn render_json_vars(body: &Value, vars: &Vars<'_>) -> String {
    fn sub(v: &Value, vars: &Vars<'_>) -> Value {
        match v {
            Value::String(s) => {
                let t = s.trim();
                if let Some(name) = t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
                    && !name.contains("{{")
                    && let Some(p) = name.trim().strip_prefix("data.")
                {
                    return vars.data.get(p).cloned().unwrap_or(Value::Null);
                }
                Value::String(render_vars(s, vars, verbatim))
            }
            Value::Array(a) => Value::Array(a.iter().map(|i| sub(i, vars)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), sub(v, vars))).collect())
            }
            other => other.clone(),
        }
    }
    match body {
        Value::String(t) => render_vars(t, vars, json_escape),
        v => sub(v, vars).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_per_format() {
        let vars = [("bsn", "<a&\"b>")];
        assert_eq!(
            render_xml("<x>{{bsn}}</x>", &vars),
            "<x>&lt;a&amp;&quot;b&gt;</x>"
        );
        assert_eq!(
            render_json(&Value::String(r#"{"b":"{{ bsn }}"}"#.into()), &vars),
            r#"{"b":"<a&\"b>"}"#
        );
        let body = serde_json::json!({"burgerservicenummer": ["{{bsn}}"], "n": 1});
        let out: Value = serde_json::from_str(&render_json(&body, &vars)).unwrap();
        assert_eq!(out["burgerservicenummer"][0], "<a&\"b>");
        assert_eq!(placeholders("a {{bsn}} b {{ x }}"), vec!["bsn", "x"]);
    }
}
