//! Fixture-driven tests of the pure core: raw upstream answer → mapped sections → merged,
//! view-filtered dossier.
//!
//! Every folder under `fixtures/cases/` is one case. It holds
//! - `case.yaml`: the view of `config/demo.yaml` to render (optionally only some of its
//!   `sections`), and for each source answer the adapter id and the file with the raw answer;
//!   optionally `same_as: <other case>` when the dossier must equal another case's byte for byte;
//! - the raw answers, exactly as a source sends them (a SOAP envelope or a REST JSON body);
//! - `expected.json`: the rendered `{"sections": ..., "conflicts": ...}`.
//!
//! Each answer is mapped with the adapter's compiled mapping and limits from the demo config,
//! then merged and rendered. The merge must be deterministic: the answers are merged in every
//! order they could arrive in and each result must serialise to the same bytes.
//!
//! To (re)write the `expected.json` files after an intended change, run
//! `UPDATE_FIXTURES=1 cargo test --test fixture_cases`, then review every changed file by eye:
//! the expected output is a statement of what is right, not a recording of what the code does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use ketenportaal::adapter::SourceAnswer;
use ketenportaal::config::compile::{Config, Mapping, vocabulary};
use ketenportaal::demo::demo_env;
use ketenportaal::dossier::{self, Rendered};

/// `case.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// A view of `config/demo.yaml`.
    view: String,
    /// Only these sections of the view (as a portal's `sections` query does); all by default.
    #[serde(default)]
    sections: Option<Vec<String>>,
    /// Another case whose `expected.json` this case's dossier must equal byte for byte.
    #[serde(default)]
    same_as: Option<String>,
    /// The source answers, in the order they are first merged.
    answers: Vec<AnswerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFile {
    adapter: String,
    file: String,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The demo config, with the variables the demo supplies at start (agencies URL, token secret,
/// pseudonym key) given through the lookup closure, never by setting the process environment.
fn demo_config() -> Config {
    let env = demo_env(
        "http://127.0.0.1:9".to_string(),
        "fixture-cases-secret-not-used-for-any-token".to_string(),
    );
    Config::load_with_env(&root().join("config/demo.yaml"), &env)
        .unwrap_or_else(|e| panic!("config/demo.yaml does not load:\n{e}"))
}

/// A fixed fetch time: the merge must not depend on it, and the output must not change with
/// the clock.
fn fetched_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 9, 15, 0).unwrap()
}

/// Maps one raw answer as the adapter would after fetching it.
fn map_answer(config: &Config, dir: &Path, a: &AnswerFile) -> Result<SourceAnswer, String> {
    let spec = config
        .adapters
        .get(&a.adapter)
        .ok_or_else(|| format!("unknown adapter `{}`", a.adapter))?;
    let path = dir.join(&a.file);
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sections = match &spec.mapping {
        Mapping::Xml(m) => m.map_envelope(&raw, &spec.limits),
        Mapping::Json(m) => m.map_bytes(&raw, &spec.limits),
    }
    .map_err(|e| format!("{}: the {} answer does not map: {e}", a.file, a.adapter))?;
    Ok(SourceAnswer {
        adapter: Arc::from(spec.id()),
        organisation: Arc::from(spec.def.organisation.as_str()),
        fetched_at: fetched_at(),
        sections,
        bytes: raw.len(),
    })
}

/// Merges and renders the answers in the given order; returns the pretty JSON document.
fn render(
    config: &Config,
    view: &str,
    wanted: &BTreeSet<&str>,
    answers: &[&SourceAnswer],
) -> String {
    let view = &config.gateway.views[view];
    let decimals = vocabulary(&config.gateway, &config.adapters).decimals;
    let merged = dossier::merge(&config.gateway.sections, &decimals, wanted, answers);
    let (sections, conflicts) = dossier::render(&merged, view);
    let doc: Value = json!({"sections": sections, "conflicts": conflicts});
    let mut text = serde_json::to_string_pretty(&doc).expect("a dossier serialises");
    text.push('\n');
    text
}

/// Every ordering of `0..n` (n! of them; cases have at most a handful of answers).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn go(v: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k == v.len() {
            out.push(v.clone());
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            go(v, k + 1, out);
            v.swap(k, i);
        }
    }
    let mut out = Vec::new();
    go(&mut (0..n).collect(), 0, &mut out);
    out
}

/// Runs one case; returns what is wrong with it.
fn run_case(config: &Config, dir: &Path, update: bool) -> Result<(), String> {
    let text =
        std::fs::read_to_string(dir.join("case.yaml")).map_err(|e| format!("case.yaml: {e}"))?;
    let case: Case =
        serde_saphyr::from_str(&text).map_err(|e| format!("case.yaml does not parse: {e}"))?;
    let view = config
        .gateway
        .views
        .get(&case.view)
        .ok_or_else(|| format!("view `{}` is not in config/demo.yaml", case.view))?;
    if let Some(only) = &case.sections
        && let Some(bad) = only.iter().find(|s| !view.sections.contains_key(*s))
    {
        return Err(format!("section `{bad}` is not in view `{}`", case.view));
    }
    let wanted: BTreeSet<&str> = view
        .sections
        .keys()
        .map(String::as_str)
        .filter(|s| {
            case.sections
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == s))
        })
        .collect();

    let answers = case
        .answers
        .iter()
        .map(|a| map_answer(config, dir, a))
        .collect::<Result<Vec<_>, _>>()?;

    // Determinism: every arrival order gives the same bytes.
    let in_order: Vec<&SourceAnswer> = answers.iter().collect();
    let first = render(config, &case.view, &wanted, &in_order);
    for order in permutations(answers.len()) {
        let shuffled: Vec<&SourceAnswer> = order.iter().map(|&i| &answers[i]).collect();
        let out = render(config, &case.view, &wanted, &shuffled);
        if out != first {
            let ids: Vec<&str> = shuffled.iter().map(|a| &*a.adapter).collect();
            return Err(format!(
                "not deterministic: answers in order {ids:?} give\n{out}\ninstead of\n{first}"
            ));
        }
    }

    served_text_matches_the_values(config, &in_order)?;

    let expected_path = dir.join("expected.json");
    if update {
        std::fs::write(&expected_path, &first).map_err(|e| format!("expected.json: {e}"))?;
    } else {
        let expected = std::fs::read_to_string(&expected_path).map_err(|e| {
            format!("expected.json: {e} (run with UPDATE_FIXTURES=1 to write it, then review it)")
        })?;
        if expected != first {
            return Err(format!(
                "the dossier differs from expected.json:\n--- got\n{first}--- expected\n{expected}"
            ));
        }
    }

    if let Some(other) = &case.same_as {
        let path = dir.with_file_name(other).join("expected.json");
        let other_expected =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if other_expected != first {
            return Err(format!(
                "the dossier differs from that of `{other}`, which it must equal:\n\
                 --- got\n{first}--- {other}\n{other_expected}"
            ));
        }
    }
    Ok(())
}

/// What the gateway sends ([`Rendered::render`], serialised straight from the answers) is the
/// text of the values [`dossier::render`] builds, byte for byte, in every view of the config.
fn served_text_matches_the_values(
    config: &Config,
    answers: &[&SourceAnswer],
) -> Result<(), String> {
    let decimals = vocabulary(&config.gateway, &config.adapters).decimals;
    for (name, view) in &config.gateway.views {
        let wanted: BTreeSet<&str> = view.sections.keys().map(String::as_str).collect();
        let merged = dossier::merge(&config.gateway.sections, &decimals, &wanted, answers);
        let (sections, conflicts) = dossier::render(&merged, view);
        let served = Rendered::render(&config.gateway.sections, &decimals, &wanted, answers, view);
        let (want, got) = (
            text(&sections),
            text(&served.sections_with(&serde_json::Map::new())),
        );
        if want != got {
            return Err(format!(
                "view `{name}`: the served sections differ from the rendered values:\n--- served\n{got}\n--- values\n{want}"
            ));
        }
        if text(&conflicts) != text(&served.conflicts_out()) {
            return Err(format!("view `{name}`: the served conflicts differ"));
        }
        if served.sections() != sections {
            return Err(format!("view `{name}`: the sections parsed back differ"));
        }
    }
    Ok(())
}

fn text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("<{e}>"))
}

fn case_dirs() -> Vec<PathBuf> {
    let base = root().join("fixtures/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.join("case.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn fixture_cases() {
    let update = std::env::var_os("UPDATE_FIXTURES").is_some_and(|v| v == "1");
    let config = demo_config();
    let dirs = case_dirs();
    assert!(
        dirs.len() >= 6,
        "expected at least 6 cases under fixtures/cases, found {}",
        dirs.len()
    );
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = run_case(&config, dir, update) {
            failures.insert(name, e);
        }
    }
    if !failures.is_empty() {
        let report: Vec<String> = failures
            .iter()
            .map(|(name, e)| format!("case {name}: {e}"))
            .collect();
        panic!(
            "{} of {} fixture cases failed:\n\n{}",
            failures.len(),
            dirs.len(),
            report.join("\n\n")
        );
    }
}

#[test]
fn permutations_cover_every_order() {
    let all = permutations(4);
    assert_eq!(all.len(), 24);
    let distinct: BTreeSet<Vec<usize>> = all.into_iter().collect();
    assert_eq!(distinct.len(), 24);
}
