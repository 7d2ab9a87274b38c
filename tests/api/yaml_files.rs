//! Every YAML file in the repository is valid: configs load completely (with their adapters),
//! every other YAML file at least parses.

use std::path::{Path, PathBuf};

use ketenportaal::config::Config;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if !["target", ".git", "node_modules"].contains(&name) {
                yaml_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_yaml_file_in_the_repository_is_valid() {
    let root = crate::helpers::root();
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(files.len() >= 7, "found {files:?}");
    let env = |k: &str| match k {
        "KETENPORTAAL_AGENCIES" => Some("http://127.0.0.1:9".to_string()),
        "KETENPORTAAL_DEMO_SECRET" => Some(crate::helpers::SECRET.to_string()),
        k if k.ends_with("_SHA256") => Some(ketenportaal::credentials::sha256_hex(k)),
        // Knobs with a default (`${VAR:-default}`): unset, the default holds.
        "KETENPORTAAL_STORE_LEASE" | "KETENPORTAAL_REDIS_URL" => None,
        k if k.ends_with("_CACHE_KEY") => Some("0f".repeat(32)),
        _ => Some(format!("test-value-for-{k}-0123456789abcdef")),
    };
    let mut adapters_seen = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        if rel.starts_with("config") && !rel.starts_with("config/keys") {
            let c = Config::load_with_env(f, &env)
                .unwrap_or_else(|e| panic!("{}:\n{e}", rel.display()));
            adapters_seen.extend(c.adapters.values().map(|a| a.origin.clone()));
        } else {
            let text = std::fs::read_to_string(f).unwrap();
            let mut errors = Vec::new();
            ketenportaal::config::load::parse_tree(f, &text, &env, &mut errors)
                .unwrap_or_else(|| panic!("{}: {errors:?}", rel.display()));
        }
    }
    // Every adapter file is loaded (and so fully validated) by some config.
    for f in files
        .iter()
        .filter(|f| f.strip_prefix(&root).unwrap().starts_with("adapters"))
    {
        let canon = f.canonicalize().unwrap();
        assert!(
            adapters_seen
                .iter()
                .any(|a| a.canonicalize().ok().as_ref() == Some(&canon)),
            "{} is not loaded by any config",
            f.display()
        );
    }
}
