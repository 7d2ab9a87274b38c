//! Sections and views: a list section's key is a field its adapters fill, authorities are
//! loaded adapters, `key` and `sort` fit the kind; a view shows only declared sections and
//! fields some adapter maps, with the roles and purposes its audience needs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::gateway::GatewayFile;
use super::{AdapterSpec, ZAKEN, ZAKEN_FIELDS};
use crate::config::load::{ConfigError, did_you_mean};
use crate::config::yaml::Step;
use crate::model::{Audience, SectionKind, ViewDef};

impl GatewayFile<'_> {
    /// A list section's key must be a field its sources fill: a key nobody fills makes every
    /// record look alike (all `null`), and de-duplication would merge records that differ.
    /// Checked when every adapter file loaded.
    pub(super) fn list_keys(&self, errors: &mut Vec<ConfigError>) {
        if !self.all_loaded {
            return;
        }
        let GatewayFile { file, tree, gw, .. } = *self;
        for (name, def) in &gw.sections {
            if def.kind != SectionKind::List || name == ZAKEN {
                continue;
            }
            let sources: Vec<&Arc<AdapterSpec>> = self
                .adapters
                .values()
                .filter(|a| a.def.map.contains_key(name))
                .collect();
            if sources.is_empty() {
                continue;
            }
            for (i, k) in def.key.iter().enumerate() {
                if !sources
                    .iter()
                    .any(|a| a.def.map[name].fields.contains_key(k))
                {
                    let filled: BTreeSet<&str> = sources
                        .iter()
                        .flat_map(|a| a.def.map[name].fields.keys().map(String::as_str))
                        .collect();
                    let filled: Vec<String> = filled.into_iter().map(String::from).collect();
                    errors.push(
                        ConfigError::new(
                            file,
                            tree.pos_at(&[
                                Step::Key("sections".into()),
                                Step::Key(name.clone()),
                                Step::Key("key".into()),
                                Step::Index(i),
                            ]),
                            format!("key field `{k}` of section `{name}` is filled by no adapter"),
                        )
                        .hint(
                            did_you_mean(k, &filled).unwrap_or_else(|| {
                                format!("its adapters fill: {}", filled.join(", "))
                            }),
                        ),
                    );
                }
            }
        }
    }

    /// Sections: authorities are loaded adapters; `key` and `sort` fit the kind.
    pub(super) fn sections(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, tree, gw, .. } = *self;
        let adapter_ids: Vec<String> = self.adapters.keys().cloned().collect();
        // Only complain about unknown self.adapters when every adapter file loaded; otherwise the
        // real problem is already reported.
        for (name, s) in &gw.sections {
            for (i, a) in s.authority.iter().enumerate() {
                if self.all_loaded && !self.adapters.contains_key(a) {
                    let pos = tree
                        .walk(&[
                            Step::Key("sections".into()),
                            Step::Key(name.clone()),
                            Step::Key("authority".into()),
                            Step::Index(i),
                        ])
                        .0
                        .pos;
                    errors.push(
                        ConfigError::new(
                            file,
                            pos,
                            format!("section `{name}`: authority `{a}` is not a loaded adapter"),
                        )
                        .hint(
                            did_you_mean(a, &adapter_ids).unwrap_or_else(|| {
                                format!("loaded adapters: {}", adapter_ids.join(", "))
                            }),
                        ),
                    );
                }
            }
            if s.kind == SectionKind::Single && (!s.key.is_empty() || s.sort.is_some()) {
                errors.push(
                    ConfigError::new(file, self.at(&["sections", name]), format!("section `{name}` is `single`: `key` and `sort` apply to `list` sections only"))
                        .hint("remove `key`/`sort`, or set `kind: list`"),
                );
            }
            if s.kind == SectionKind::List && s.key.is_empty() {
                errors.push(
                    ConfigError::new(
                        file,
                        self.at(&["sections", name]),
                        format!("list section `{name}` needs `key` fields to de-duplicate records"),
                    )
                    .hint("e.g. `key: [soort, ingangsdatum]`"),
                );
            }
        }
    }

    /// Views: their sections are declared and their fields mapped; roles and purposes fit the
    /// audience.
    pub(super) fn views(&self, errors: &mut Vec<ConfigError>) {
        let fields = self.mapped_fields();
        let known_sections: Vec<String> = self.gw.sections.keys().cloned().collect();
        for (vname, v) in &self.gw.views {
            self.view_sections(vname, v, &fields, &known_sections, errors);
            self.view_audience(vname, v, errors);
        }
    }

    /// Fields that some adapter maps into each section (and the gateway's own `zaken`).
    fn mapped_fields(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut fields: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        fields.entry(ZAKEN).or_default().extend(ZAKEN_FIELDS);
        for a in self.adapters.values() {
            for (sec, m) in &a.def.map {
                fields
                    .entry(sec)
                    .or_default()
                    .extend(m.fields.keys().map(String::as_str));
            }
        }
        fields
    }

    /// A view's sections are declared, and (when every adapter loaded) each field it shows is
    /// one some adapter maps.
    fn view_sections(
        &self,
        vname: &str,
        v: &ViewDef,
        fields: &BTreeMap<&str, BTreeSet<&str>>,
        known_sections: &[String],
        errors: &mut Vec<ConfigError>,
    ) {
        let GatewayFile { file, tree, gw, .. } = *self;
        for (sec, allowed) in &v.sections {
            let pos = tree
                .walk(&[
                    Step::Key("views".into()),
                    Step::Key(vname.to_string()),
                    Step::Key("sections".into()),
                ])
                .0
                .key_pos(sec)
                .unwrap_or_else(|| self.at(&["views", vname]));
            if !gw.sections.contains_key(sec) {
                errors.push(
                    ConfigError::new(
                        file,
                        pos,
                        format!("view `{vname}`: section `{sec}` is not declared"),
                    )
                    .hint_opt(did_you_mean(sec, known_sections)),
                );
                continue;
            }
            if !self.all_loaded {
                continue;
            }
            let have = fields.get(sec.as_str());
            for f in allowed {
                if f == "*" {
                    continue;
                }
                if !have.is_some_and(|h| h.contains(f.as_str())) {
                    let known: Vec<String> = have
                        .map(|h| h.iter().map(|s| s.to_string()).collect())
                        .unwrap_or_default();
                    errors.push(
                        ConfigError::new(
                            file,
                            pos,
                            format!(
                                "view `{vname}`: no adapter maps field `{f}` into section `{sec}`"
                            ),
                        )
                        .hint(did_you_mean(f, &known).unwrap_or_else(
                            || format!("fields mapped into `{sec}`: {}", known.join(", ")),
                        )),
                    );
                }
            }
        }
    }

    /// An employee view names roles and purposes (doelbinding); a citizen view has neither.
    fn view_audience(&self, vname: &str, v: &ViewDef, errors: &mut Vec<ConfigError>) {
        let file = self.file;
        match v.audience {
            Audience::Employee => {
                if v.roles.is_empty() {
                    errors.push(
                        ConfigError::new(
                            file,
                            self.at(&["views", vname]),
                            format!("employee view `{vname}` names no `roles`"),
                        )
                        .hint(
                            "list the token roles that may use it, e.g. `roles: [uwv-werkcoach]`",
                        ),
                    );
                }
                for org in super::undeclared(self.gw, &v.organisations) {
                    errors.push(
                        ConfigError::new(
                            file,
                            self.at(&["views", vname, "organisations"]),
                            format!("employee view `{vname}` names organisation `{org}`, which is not declared"),
                        )
                        .hint(super::UNDECLARED_HINT),
                    );
                }
                if v.purposes.is_empty() {
                    errors.push(
                        ConfigError::new(file, self.at(&["views", vname]), format!("employee view `{vname}` allows no `purposes` (doelbinding)"))
                            .hint("e.g. `purposes: {re-integratie: {processing_activity: \"https://...\"}}`"),
                    );
                }
            }
            Audience::Citizen => {
                if !v.roles.is_empty() || !v.purposes.is_empty() || !v.organisations.is_empty() {
                    errors.push(
                        ConfigError::new(
                            file,
                            self.at(&["views", vname]),
                            format!("citizen view `{vname}` cannot have roles, purposes or organisations"),
                        )
                        .hint("a citizen reads their own dossier; remove `roles`/`purposes`/`organisations`"),
                    );
                }
            }
        }
    }
}
