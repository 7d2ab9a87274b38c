//! Partners' registrations layered over the operator's files: each one validated as a
//! descriptor under [`Trust::Partner`], the result validated as a whole with the same rules and
//! messages as files. Which registrations a change may add or push out is decided here; storing
//! them is the store's, and the workflow around a `PUT` is [`crate::app::registrations`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::adapter::{Trust, compile_adapter};
use super::gateway::validate_gateway;
use super::{AdapterSpec, Config, PublicDescriptor, Registration};
use crate::config::load::{ConfigError, ConfigErrors, parse_untrusted_tree};
use crate::config::yaml::Pos;

impl Config {
    /// This config with partner registrations layered over the file adapters (a registration
    /// replaces a file adapter with the same id). The result is validated as a whole, with the
    /// same rules and messages as files.
    pub fn with_registrations(&self, regs: &[Registration]) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut out = self.clone();
        let mut hasher = Sha256::new();
        hasher.update(self.version.as_bytes());
        for r in regs {
            match self.parse_adapter_text(&format!("registration:{}", r.id), &r.descriptor) {
                Ok(spec) if spec.def.id == r.id => {
                    hasher.update(r.sha256.as_bytes());
                    out.adapters.insert(r.id.clone(), Arc::new(spec));
                }
                Ok(spec) => errors.push(ConfigError::new(
                    Path::new(&format!("registration:{}", r.id)),
                    Pos::default(),
                    format!(
                        "registration `{}` describes adapter `{}`",
                        r.id, spec.def.id
                    ),
                )),
                Err(e) => errors.extend(e.0),
            }
        }
        let compiled = validate_gateway(
            &self.file,
            &self.tree,
            &out.gateway,
            &out.adapters,
            true,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if let Some((listen, compiled)) = compiled {
            out.listen = listen;
            out.compiled = compiled;
        }
        if !regs.is_empty() {
            out.version = hex::encode(&hasher.finalize()[..6]);
        }
        Ok(out)
    }

    /// Like [`Config::with_registrations`], but a registration that does not fit (the operator
    /// tightened `allowed_endpoints` or `registrations:`, a section it maps into was removed)
    /// is left out instead of refusing everything: the operator's files win, and the other
    /// partners' adapters keep serving. Returns the config and each left-out registration's
    /// id with its problems. For start-up and reloads; a partner's own `PUT` is checked with
    /// `with_registrations` and refused whole.
    pub fn with_fitting_registrations(
        &self,
        regs: &[Registration],
    ) -> (Config, Vec<(String, ConfigErrors)>) {
        if let Ok(c) = self.with_registrations(regs) {
            return (c, Vec::new());
        }
        let mut kept: Vec<Registration> = Vec::new();
        let mut left_out = Vec::new();
        for r in regs {
            kept.push(r.clone());
            if let Err(e) = self.with_registrations(&kept) {
                kept.pop();
                left_out.push((r.id.clone(), e));
            }
        }
        let config = self
            .with_registrations(&kept)
            .unwrap_or_else(|_| self.clone());
        (config, left_out)
    }

    /// Checks a partner's change of the registrations (`before` → `after`, touching
    /// `changed`): the changed registration must fit (when it is still in `after`), and the
    /// change may not push any other registration out. Registrations that already did not
    /// fit before the change do not block it.
    pub fn check_registration_change(
        &self,
        before: &[Registration],
        after: &[Registration],
        changed: &str,
    ) -> Result<(), ConfigErrors> {
        let (_, now_out) = self.with_fitting_registrations(after);
        if now_out.is_empty() {
            return Ok(());
        }
        if let Some((_, e)) = now_out.iter().find(|(id, _)| id == changed) {
            return Err(e.clone());
        }
        let (_, was_out) = self.with_fitting_registrations(before);
        let pushed: Vec<ConfigError> = now_out
            .into_iter()
            .filter(|(id, _)| !was_out.iter().any(|(w, _)| w == id))
            .flat_map(|(_, e)| e.0)
            .collect();
        if pushed.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(pushed))
        }
    }

    /// Validates a descriptor sent over the API (YAML or JSON text) against this config, with
    /// the same messages as files get, under the rules for untrusted text: no `${ENV}`
    /// expansion, no files, an endpoint only under the organisation's declared URLs, and the
    /// bounds of `registrations:` (see [`Trust::Partner`]).
    pub fn parse_adapter_text(&self, label: &str, text: &str) -> Result<AdapterSpec, ConfigErrors> {
        let mut errors = Vec::new();
        let origin = PathBuf::from(label);
        let max = self.gateway.registrations.max_descriptor_bytes.0;
        if text.len() as u64 > max {
            errors.push(
                ConfigError::new(
                    &origin,
                    Pos::default(),
                    format!(
                        "the descriptor is {} bytes; at most {max} are accepted",
                        text.len()
                    ),
                )
                .hint("remove comments and unused fields, or ask the operator to raise `registrations.max_descriptor_bytes`"),
            );
            return Err(ConfigErrors(errors));
        }
        let tree = parse_untrusted_tree(&origin, text, &mut errors);
        let spec = tree.and_then(|t| {
            compile_adapter(
                &origin,
                &t,
                &self.gateway,
                &self.base_dir,
                Trust::Partner,
                &mut errors,
            )
        });
        match spec {
            Some(mut s) if errors.is_empty() => {
                s.public = PublicDescriptor::Registration(Arc::from(text));
                Ok(s)
            }
            _ => Err(ConfigErrors(errors)),
        }
    }
}
