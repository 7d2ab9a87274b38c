//! BRP: Haal Centraal BRP Personen 2.x, `RaadpleegMetBurgerservicenummer` (REST/JSON). A query is
//! validated the way the real API does (every problem once, in `invalidParams`), and the answer
//! holds only the requested `fields`, plus the properties the API always delivers.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::rest::{self, invalid_param, json_response};
use super::{BRP_PATH, Shared, is_bsn_shaped};

/// Haal Centraal: at most 130 `fields`, 1 to 20 BSNs.
const BRP_MAX_FIELDS: usize = 130;
const BRP_MAX_BSNS: usize = 20;

/// Top-level properties of a Haal Centraal `Persoon` that may be asked for in `fields`.
const BRP_PERSOON_FIELDS: &[&str] = &[
    "aNummer",
    "burgerservicenummer",
    "datumEersteInschrijvingGBA",
    "datumInschrijvingInGemeente",
    "europeesKiesrecht",
    "geboorte",
    "gemeenteVanInschrijving",
    "geslacht",
    "gezag",
    "immigratie",
    "indicatieCurateleRegister",
    "indicatieGezagMinderjarige",
    "kinderen",
    "leeftijd",
    "naam",
    "nationaliteiten",
    "ouders",
    "overlijden",
    "partners",
    "uitsluitingKiesrecht",
    "verblijfplaats",
    "verblijfstitel",
    "adressering",
];

/// Properties the BRP API always delivers when present, and refuses in `fields`.
const BRP_AUTO_FIELDS: &[&str] = &[
    "geheimhoudingPersoonsgegevens",
    "inOnderzoek",
    "opschortingBijhouding",
    "rni",
    "verificatie",
];

/// A BRP fixture: a Haal Centraal answer holding exactly the one person the file is named after.
pub(super) fn fixture(text: &str, bsn: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let personen = doc
        .get("personen")
        .and_then(Value::as_array)
        .ok_or("no `personen` array")?;
    let [persoon] = personen.as_slice() else {
        return Err("`personen` must hold exactly one person".into());
    };
    if !persoon.is_object() {
        return Err("the person is not a JSON object".into());
    }
    let stored = persoon.get("burgerservicenummer").and_then(Value::as_str);
    if stored != Some(bsn) {
        return Err(format!(
            "burgerservicenummer {stored:?} does not match the file name"
        ));
    }
    Ok(persoon.clone())
}

/// The requested `fields` as a tree: a node marked `all` is delivered whole.
#[derive(Debug, Default)]
struct FieldTree {
    all: bool,
    children: BTreeMap<String, FieldTree>,
}

impl FieldTree {
    fn insert(&mut self, dotted: &str) {
        let mut node = self;
        for segment in dotted.split('.') {
            node = node.children.entry(segment.to_owned()).or_default();
        }
        node.all = true;
    }

    /// Keeps only the requested paths; arrays are filtered element by element, and a partial
    /// object keeps its `type` discriminator, as the real API does.
    fn project(&self, value: &Value) -> Option<Value> {
        if self.all {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, sub) in &self.children {
                    if let Some(v) = map.get(key).and_then(|v| sub.project(v)) {
                        out.insert(key.clone(), v);
                    }
                }
                if out.is_empty() {
                    return None;
                }
                if let Some(t) = map.get("type") {
                    out.entry("type").or_insert_with(|| t.clone());
                }
                Some(Value::Object(out))
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter_map(|i| self.project(i)).collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            _ => None,
        }
    }
}

fn is_field_shaped(s: &str) -> bool {
    (1..=200).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

/// A validated Haal Centraal "RaadpleegMetBurgerservicenummer" query.
struct BrpQuery {
    bsns: Vec<String>,
    fields: FieldTree,
    gemeente: Option<String>,
}

/// The items of the array parameter `name`, which must hold 1 to `max` of them; none, with the
/// problem noted in `errors`, when it is missing, not an array, empty or too long.
fn array_param<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    max: usize,
    errors: &mut Vec<Value>,
) -> &'a [Value] {
    let (code, reason) = match obj.get(name) {
        None => ("required", "Parameter is verplicht.".to_owned()),
        Some(Value::Array(items)) if items.is_empty() => {
            ("minItems", "Array bevat minder dan 1 items.".to_owned())
        }
        Some(Value::Array(items)) if items.len() > max => {
            ("maxItems", format!("Array bevat meer dan {max} items."))
        }
        Some(Value::Array(items)) => return items,
        Some(_) => ("array", "Parameter is geen array.".to_owned()),
    };
    errors.push(invalid_param(name, code, &reason));
    &[]
}

/// Validates like the real API: every problem is reported once, in `invalidParams`.
fn parse_brp_query(doc: &Value) -> Result<BrpQuery, Vec<Value>> {
    let Some(obj) = doc.as_object() else {
        return Err(vec![invalid_param(
            "body",
            "object",
            "De request body is geen JSON-object.",
        )]);
    };
    let mut errors = Vec::new();
    match obj.get("type") {
        None => errors.push(invalid_param("type", "required", "Parameter is verplicht.")),
        Some(Value::String(t)) if t == "RaadpleegMetBurgerservicenummer" => {}
        Some(_) => errors.push(invalid_param(
            "type",
            "value",
            "Waarde is geen geldig zoektype.",
        )),
    }
    for key in obj.keys() {
        if ![
            "type",
            "fields",
            "burgerservicenummer",
            "gemeenteVanInschrijving",
            "inclusiefOverledenPersonen",
        ]
        .contains(&key.as_str())
        {
            errors.push(invalid_param(
                key.as_str(),
                "unknownParam",
                "Parameter is niet verwacht.",
            ));
        }
    }

    let mut fields = FieldTree::default();
    for (i, item) in array_param(obj, "fields", BRP_MAX_FIELDS, &mut errors)
        .iter()
        .enumerate()
    {
        let name = format!("fields[{i}]");
        match item.as_str() {
            Some(f) if is_field_shaped(f) => {
                let top = f.split('.').next().unwrap_or(f);
                if BRP_AUTO_FIELDS.contains(&top) {
                    errors.push(invalid_param(
                        name,
                        "field",
                        "Dit veld wordt automatisch geleverd en mag niet in fields staan.",
                    ));
                } else if !BRP_PERSOON_FIELDS.contains(&top) {
                    errors.push(invalid_param(
                        name,
                        "field",
                        "Parameter bevat een niet bestaande veldnaam.",
                    ));
                } else {
                    fields.insert(f);
                }
            }
            _ => errors.push(invalid_param(
                name,
                "pattern",
                "Waarde voldoet niet aan patroon ^[a-zA-Z0-9\\._]{1,200}$.",
            )),
        }
    }

    let mut bsns: Vec<String> = Vec::new();
    for (i, item) in array_param(obj, "burgerservicenummer", BRP_MAX_BSNS, &mut errors)
        .iter()
        .enumerate()
    {
        match item.as_str() {
            Some(b) if is_bsn_shaped(b) => {
                if !bsns.iter().any(|x| x == b) {
                    bsns.push(b.to_owned());
                }
            }
            _ => errors.push(invalid_param(
                format!("burgerservicenummer[{i}]"),
                "pattern",
                "Waarde voldoet niet aan patroon ^[0-9]{9}$.",
            )),
        }
    }

    let gemeente = match obj.get("gemeenteVanInschrijving") {
        None => None,
        Some(Value::String(g)) if g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()) => {
            Some(g.clone())
        }
        Some(_) => {
            errors.push(invalid_param(
                "gemeenteVanInschrijving",
                "pattern",
                "Waarde voldoet niet aan patroon ^[0-9]{4}$.",
            ));
            None
        }
    };
    if let Some(v) = obj.get("inclusiefOverledenPersonen")
        && !v.is_boolean()
    {
        errors.push(invalid_param(
            "inclusiefOverledenPersonen",
            "boolean",
            "Waarde is geen boolean.",
        ));
    }

    if errors.is_empty() {
        Ok(BrpQuery {
            bsns,
            fields,
            gemeente,
        })
    } else {
        Err(errors)
    }
}

pub(super) const SERVICE: rest::Service = rest::Service {
    path: BRP_PATH,
    unavailable: "De BRP-bevragingsdienst is tijdelijk niet beschikbaar.",
    invalid: (
        "Een of meerdere parameters zijn niet correct.",
        "De foutieve parameter(s) zijn: zie invalidParams.",
    ),
};

/// What the Haal Centraal BRP Personen API answers to one request.
pub(super) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    SERVICE.respond(headers, body, |doc| {
        let query = parse_brp_query(doc)?;
        let personen: Vec<Value> = query
            .bsns
            .iter()
            .filter_map(|bsn| shared.fixtures.brp.get(bsn))
            .filter(|p| match &query.gemeente {
                None => true,
                Some(code) => {
                    p.pointer("/gemeenteVanInschrijving/code")
                        .and_then(Value::as_str)
                        == Some(code.as_str())
                }
            })
            .map(|p| {
                let mut out = match query.fields.project(p) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                for auto in BRP_AUTO_FIELDS {
                    if let Some(v) = p.get(*auto) {
                        out.insert((*auto).to_owned(), v.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        let mut resp = json_response(
            StatusCode::OK,
            &json!({"type": "RaadpleegMetBurgerservicenummer", "personen": personen}),
        );
        resp.headers_mut()
            .insert("api-version", HeaderValue::from_static("2.7.0"));
        Ok(resp)
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::super::testing::{post, post_json, start};
    use super::*;

    #[tokio::test]
    async fn brp_answers_with_only_the_requested_fields() {
        let server = start().await;
        let (status, ct, body) = post_json(
            &server,
            BRP_PATH,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": ["999993653", "999999999"],
                "fields": ["burgerservicenummer", "naam.geslachtsnaam", "leeftijd",
                           "verblijfplaats.verblijfadres.huisnummer"]
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "application/json");
        assert_eq!(
            body,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "personen": [{
                    "burgerservicenummer": "999993653",
                    "leeftijd": 45,
                    "naam": {"geslachtsnaam": "Vries"},
                    "verblijfplaats": {"type": "Adres", "verblijfadres": {"huisnummer": 418}}
                }]
            })
        );
    }

    #[tokio::test]
    async fn brp_whole_objects_and_unknown_persons() {
        let server = start().await;
        let (_, _, body) = post_json(
            &server,
            BRP_PATH,
            json!({
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": ["999990421"],
                "fields": ["geboorte.datum", "naam"]
            }),
        )
        .await;
        let p = &body["personen"][0];
        assert_eq!(
            p["geboorte"],
            json!({"datum": {"type": "Datum", "datum": "1956-02-14", "langFormaat": "14 februari 1956"}})
        );
        assert_eq!(p["naam"]["volledigeNaam"], "Fatma Yilmaz");
        assert!(p.get("burgerservicenummer").is_none());

        let (status, _, body) = post_json(
            &server,
            BRP_PATH,
            json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999999990"], "fields": ["naam"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["personen"], json!([]));
    }

    #[tokio::test]
    async fn brp_refuses_bad_queries_with_invalid_params() {
        let server = start().await;
        let cases = [
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"]}),
                "fields",
                "required",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": []}),
                "fields",
                "minItems",
            ),
            (
                json!({"type": "ZoekMetIets", "burgerservicenummer": ["999993653"], "fields": ["naam"]}),
                "type",
                "value",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["12345"], "fields": ["naam"]}),
                "burgerservicenummer[0]",
                "pattern",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": ["schoenmaat"]}),
                "fields[0]",
                "field",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": ["inOnderzoek"]}),
                "fields[0]",
                "field",
            ),
        ];
        for (query, name, code) in cases {
            let (status, ct, body) = post_json(&server, BRP_PATH, query.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(ct, "application/problem+json");
            assert_eq!(body["status"], 400);
            let params = body["invalidParams"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["code"] == code),
                "{query} -> {body}"
            );
            assert!(params.iter().all(|p| p["reason"].is_string()));
        }
        let (status, _, body) = post(&server, BRP_PATH, "application/json", &[], "{nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalidParams"));
        let (status, ct, _) = post(&server, BRP_PATH, "text/plain", &[], "{}").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(ct, "application/problem+json");
    }
}
