//! Any text as a gateway config and as an adapter descriptor: parse, expand `${ENV}`, collect
//! every problem with its position. Never a panic, whatever the YAML.
#![no_main]

use std::path::Path;

use ketenportaal::config::load::{parse_tree, typed};
use ketenportaal::model::{AdapterDef, GatewayConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("fuzz.yaml");
    let mut errors = Vec::new();
    let env = |k: &str| (k.len() < 8).then(|| "waarde".to_string());
    if let Some(tree) = parse_tree(file, text, &env, &mut errors) {
        let _: Option<GatewayConfig> = typed(file, &tree, &mut errors);
        let _: Option<AdapterDef> = typed(file, &tree, &mut errors);
    }
    for e in &errors {
        let _ = e.to_string();
    }
});
