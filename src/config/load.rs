//! Reading config files into typed structs while collecting *every* problem with its position.
//!
//! A file is parsed once into a positioned [`Node`] tree. Typed deserialisation then runs in
//! passes: each pass reports the first serde error with its exact path, removes the offending
//! node, and tries again, so one run finds all unknown keys and wrongly typed values in a file
//! (a required key that is wrong stops the passes for that file, since nothing can stand in).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::yaml::{self, Node, Pos, Step};

/// One configuration problem, pointing at a file position, with a hint on how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration, in file and position order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads a file into a positioned, `${ENV}`-expanded tree.
pub fn read_tree(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Node> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(
                ConfigError::new(
                    file,
                    Pos { line: 0, column: 0 },
                    format!("cannot read: {e}"),
                )
                .hint("check the path; relative paths are resolved from the config file's folder"),
            );
            return None;
        }
    };
    parse_tree(file, &text, env, errors)
}

/// Parses YAML text written by the operator (a file's) into an expanded tree.
pub fn parse_tree(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Node> {
    let mut tree = parse_yaml(file, text, errors)?;
    for (pos, msg) in tree.interpolate(env) {
        errors.push(ConfigError::new(file, pos, msg));
    }
    Some(tree)
}

/// Parses text that arrives over the API (a partner's descriptor) into a tree *without* any
/// `${ENV}` expansion: the gateway's environment holds its secrets, and a partner's text must
/// never reach it. A value holding `${` is refused with its position, so nobody takes it for
/// a working reference.
pub fn parse_untrusted_tree(
    file: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Node> {
    let tree = parse_yaml(file, text, errors)?;
    for pos in tree.env_references() {
        errors.push(
            ConfigError::new(
                file,
                pos,
                "`${` in a descriptor sent over the API: registered descriptors get no environment expansion",
            )
            .hint("write the value itself; what differs per environment, and every secret, belongs in the operator's configuration of your organisation"),
        );
    }
    Some(tree)
}

fn parse_yaml(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<Node> {
    match yaml::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid YAML").to_string();
            errors.push(
                ConfigError::new(file, Pos { line, column }, format!("invalid YAML: {first}"))
                    .hint("check indentation and quoting around this position"),
            );
            None
        }
    }
}

/// Deserialises `T` from `tree`, pushing every problem found. `None` when there was any.
pub fn typed<T: DeserializeOwned>(
    file: &Path,
    tree: &Node,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut work = tree.clone();
    let mut reported: Vec<Vec<Step>> = Vec::new();
    let before = errors.len();
    let result = typed_passes(file, tree, &mut work, &mut reported, errors, before);
    errors[before..].sort_by_key(|e| (e.line, e.column));
    result
}

fn typed_passes<T: DeserializeOwned>(
    file: &Path,
    tree: &Node,
    work: &mut Node,
    reported: &mut Vec<Vec<Step>>,
    errors: &mut Vec<ConfigError>,
    before: usize,
) -> Option<T> {
    for _ in 0..200 {
        let result: Result<T, _> = serde_path_to_error::deserialize(work.to_json());
        let err = match result {
            Ok(v) => return (errors.len() == before).then_some(v),
            Err(e) => e,
        };
        let path: Vec<Step> = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                _ => None,
            })
            .collect();
        let msg = err.inner().to_string();

        if let Some(missing) = between(&msg, "missing field `", "`") {
            let mut full = path.clone();
            full.push(Step::Key(missing.to_string()));
            if reported.contains(&full) {
                // We removed a wrong value of a required key: already reported, and nothing
                // can stand in for it, so this file's typed passes end here.
                break;
            }
            errors.push(
                ConfigError::new(file, tree.pos_at(&path), format!("missing key `{missing}`"))
                    .hint(format!("add `{missing}:` to this mapping")),
            );
            break;
        }

        let (node, exact) = tree.walk(&path);
        if let Some(unknown) = between(&msg, "unknown field `", "`") {
            let parent = &path[..path.len().saturating_sub(1)];
            let pos = tree.walk(parent).0.key_pos(unknown).unwrap_or(node.pos);
            let allowed = backticked(msg.split_once("expected").map_or("", |(_, r)| r));
            let hint = match closest(unknown, &allowed) {
                Some(c) => format!("did you mean `{c}`?"),
                None if allowed.is_empty() => "remove this key".to_string(),
                None => format!("remove it; allowed keys here: {}", allowed.join(", ")),
            };
            errors.push(ConfigError::new(file, pos, format!("unknown key `{unknown}`")).hint(hint));
        } else {
            let message = match (&node.from_env, exact) {
                // Never repeat a value that came from the environment: it may be a secret.
                (Some(vars), true) => {
                    let expected = msg.split_once(", expected").map_or("", |(_, r)| r);
                    format!(
                        "the value from {vars} is not valid here (value not shown); expected{expected}"
                    )
                }
                _ => msg.clone(),
            };
            let key = path.iter().rev().find_map(|s| match s {
                Step::Key(k) => Some(k.as_str()),
                Step::Index(_) => None,
            });
            let hint = type_hint(&msg);
            let message = match key {
                Some(k) => format!("`{k}`: {message}"),
                None => message,
            };
            errors.push(ConfigError::new(file, node.pos, message).hint_opt(hint));
        }
        reported.push(path.clone());
        if !work.remove(&path) {
            break;
        }
    }
    None
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, t)| t.to_string())
        .collect()
}

fn type_hint(msg: &str) -> Option<String> {
    if msg.contains("expected a string")
        && (msg.contains("floating point") || msg.contains("integer"))
    {
        Some("quote the value, e.g. \"1.1\"".into())
    } else if [
        "expected u8",
        "expected u16",
        "expected u32",
        "expected u64",
        "expected i64",
    ]
    .iter()
    .any(|t| msg.contains(t))
    {
        Some("write a whole number without quotes, e.g. `64`".into())
    } else if msg.contains("unknown variant") {
        let allowed = backticked(msg.split_once("expected").map_or("", |(_, r)| r));
        Some(format!("use one of: {}", allowed.join(", ")))
    } else if msg.contains("expected a sequence") {
        Some("write a list: `[a, b]` or one `- item` per line".into())
    } else if msg.contains("expected a map") || msg.contains("expected struct") {
        Some("write a mapping of `key: value` lines".into())
    } else {
        None
    }
}

/// The hint for a name that is not allowed: "did you mean" the allowed one closest to `word`,
/// if one is close enough to be a typo.
pub fn did_you_mean(word: &str, candidates: &[String]) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The allowed name closest to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GatewayConfig;

    fn check(text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let f = Path::new("gw.yaml");
        let tree = parse_tree(
            f,
            text,
            &|k| (k == "S").then(|| "topsecret".into()),
            &mut errors,
        )
        .unwrap();
        let r: Option<GatewayConfig> = typed(f, &tree, &mut errors);
        assert!(r.is_none() || errors.is_empty());
        errors
    }

    #[test]
    fn collects_several_problems_in_one_file() {
        let errs = check("listn: x\ndeadline: 5\ncache:\n  max_bytez: 1\n  enabled: true\n");
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!((errs[0].line, errs[0].column), (1, 1));
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `listen`?"));
        assert_eq!(errs[1].line, 2);
        assert_eq!((errs[2].line, errs[2].column), (4, 3));
    }

    #[test]
    fn secrets_are_never_echoed() {
        let errs = check("deadline: ${S}\n");
        assert_eq!(errs.len(), 1);
        assert!(!errs[0].to_string().contains("topsecret"), "{}", errs[0]);
        assert!(errs[0].message.contains("${S}"));
    }
}
