//! Belastingdienst: the toeslagen search (REST/JSON), a person's allowances and income by BSN.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::rest::{self, invalid_param, json_response};
use super::{Shared, TOESLAGEN_PATH, is_bsn_shaped};

/// A toeslagen fixture: the whole answer for the person the file is named after.
pub(super) fn fixture(text: &str, bsn: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let stored = doc.get("bsn").and_then(Value::as_str);
    if stored != Some(bsn) {
        return Err(format!("bsn {stored:?} does not match the file name"));
    }
    for key in ["toeslagen", "inkomen"] {
        if !doc.get(key).is_some_and(Value::is_array) {
            return Err(format!("`{key}` must be an array"));
        }
    }
    Ok(doc)
}

pub(super) const SERVICE: rest::Service = rest::Service {
    path: TOESLAGEN_PATH,
    unavailable: "Toeslagen is tijdelijk niet beschikbaar.",
    invalid: (
        "Ongeldige vraag.",
        "De vraag bevat een of meer fouten; zie invalidParams.",
    ),
};

/// What the toeslagen search answers to one request.
pub(super) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    SERVICE.respond(headers, body, |doc| {
        let bsn = match doc.get("bsn") {
            None => {
                return Err(vec![invalid_param(
                    "bsn",
                    "required",
                    "Parameter is verplicht.",
                )]);
            }
            Some(Value::String(b)) if is_bsn_shaped(b) => b.as_str(),
            Some(_) => {
                return Err(vec![invalid_param(
                    "bsn",
                    "pattern",
                    "Waarde voldoet niet aan patroon ^[0-9]{9}$.",
                )]);
            }
        };
        let answer = match shared.fixtures.toeslagen.get(bsn) {
            Some(doc) => doc.clone(),
            None => json!({"bsn": bsn, "toeslagen": [], "inkomen": []}),
        };
        Ok(json_response(StatusCode::OK, &answer))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{post, post_json, start};
    use super::*;

    #[tokio::test]
    async fn toeslagen_answers_known_and_unknown_persons() {
        let server = start().await;
        let (status, ct, body) =
            post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999993653"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "application/json");
        let soorten: Vec<&str> = body["toeslagen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["soort"].as_str().unwrap())
            .collect();
        assert_eq!(soorten, ["zorgtoeslag", "huurtoeslag"]);
        assert_eq!(body["inkomen"][0]["bedrag"], "38500.00");

        let (_, _, body) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": "999992958"})).await;
        assert_eq!(
            body,
            json!({"bsn": "999992958", "toeslagen": [], "inkomen": []})
        );
    }

    #[tokio::test]
    async fn toeslagen_refuses_bad_json() {
        let server = start().await;
        let (status, ct, body) = post(
            &server,
            TOESLAGEN_PATH,
            "application/json",
            &[],
            "{\"bsn\": ",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ct, "application/problem+json");
        assert!(body.contains("invalidParams"));
        let (status, _, body) = post_json(&server, TOESLAGEN_PATH, json!({"bsn": 999993653})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["invalidParams"][0]["name"], "bsn");
    }
}
