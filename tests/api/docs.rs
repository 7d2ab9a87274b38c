//! The docs stay true: the operators' configuration reference names every key the code has, and
//! the complete adapter examples in the partners' guide load and run.

use std::collections::BTreeSet;

use ketenportaal::adapter::AdapterClient;
use ketenportaal::bsn::Bsn;
use ketenportaal::config::Config;
use ketenportaal::gateway::Gateway;
use serde_json::Value;

use crate::helpers::{SECRET, root};

/// Maps whose keys are names chosen by the operator, and values documented as a whole.
const NAMED: &[&str] = &[
    "organisations",
    "sections",
    "views",
    "views.<*>.purposes",
    "views.<*>.sections",
];
const LEAVES: &[&str] = &[
    "views.<*>.purposes.<*>",
    "views.<*>.sections.<*>",
    "sections.<*>.sort",
];

fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) if !LEAVES.contains(&prefix) => {
            for (k, child) in map {
                let name = if NAMED.contains(&prefix) {
                    "<*>"
                } else {
                    k.as_str()
                };
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                out.insert(path.clone());
                key_paths(child, &path, out);
            }
        }
        // Lists of records are documented as `key[]` with their fields in one row.
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            out.remove(prefix);
            out.insert(format!("{prefix}[]"));
        }
        _ => {}
    }
}

#[test]
fn the_configuration_reference_names_every_key() {
    let env = |k: &str| match k {
        k if k.ends_with("_SHA256") => Some(ketenportaal::credentials::sha256_hex(k)),
        _ => Some(format!("test-value-for-{k}-0123456789abcdef")),
    };
    let c = Config::load_with_env(&root().join("config/gateway.yaml"), &env).unwrap();
    let mut paths = BTreeSet::new();
    key_paths(&serde_json::to_value(&c.gateway).unwrap(), "", &mut paths);
    // Intermediate objects are documented through their keys.
    let docs = std::fs::read_to_string(root().join("docs/operators.md")).unwrap();
    let normalised = regex_lite_placeholders(&docs);
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}."))))
        .filter(|p| {
            !normalised.contains(&format!("`{p}`")) && !normalised.contains(&format!("`{p}."))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operators.md does not describe: {missing:?}"
    );
}

/// `<id>`, `<name>`, `<section>` → `<*>`.
fn regex_lite_placeholders(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('>') {
            Some(j) if after[..j].chars().all(|c| c.is_ascii_lowercase()) && j > 0 => {
                out.push_str("<*>");
                rest = &after[j + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_partner_guide_examples_load_and_run() {
    let agencies = ketenportaal::demo::agencies::AgencyServer::start(
        &root().join("fixtures/agencies"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let env = ketenportaal::demo::demo_env(agencies.base_url(), SECRET.into());
    let config = Config::load_with_env(&root().join("config/demo.yaml"), &env).unwrap();
    let guide = std::fs::read_to_string(root().join("docs/partners.md")).unwrap();
    let examples: Vec<&str> = guide
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("id:"))
        .collect();
    assert_eq!(examples.len(), 2, "the guide has two complete examples");
    for text in examples {
        let spec = config
            .parse_adapter_text("docs/partners.md", text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let client = AdapterClient::new(
            std::sync::Arc::new(spec),
            &ketenportaal::protocol::client::Outbound::shared().unwrap(),
        );
        let (r, _) = Gateway::run_adapter(&client, Bsn::parse("999993653").unwrap()).await;
        let a = r.unwrap_or_else(|e| panic!("{}: {e}", client.id()));
        assert!(
            a.sections.values().any(|recs| !recs.is_empty()),
            "{}: no records",
            client.id()
        );
    }
}
