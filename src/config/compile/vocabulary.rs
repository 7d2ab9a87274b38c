//! What rules may refer to ([`vocabulary`]): the sections and the fields adapters map into
//! them, and the section the gateway fills itself ([`ZAKEN`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AdapterSpec;
use crate::model::{GatewayConfig, SectionKind};

/// The section the gateway fills itself, from its store: the citizen's applications.
pub const ZAKEN: &str = "zaken";
/// Its fields.
pub const ZAKEN_FIELDS: &[&str] = &[
    "id",
    "service",
    "title",
    "organisation",
    "status",
    "open",
    "reference",
    "submitted",
    "updated",
];

/// What rules may refer to: sections and the fields adapters map into them.
pub fn vocabulary(
    gw: &GatewayConfig,
    adapters: &BTreeMap<String, Arc<AdapterSpec>>,
) -> crate::rules::Vocabulary {
    let mut v = crate::rules::Vocabulary::default();
    for (name, def) in &gw.sections {
        v.fields.entry(name.clone()).or_default();
        if def.kind == SectionKind::List {
            v.lists.insert(name.clone());
        }
    }
    if gw.sections.contains_key(ZAKEN) {
        v.fields
            .entry(ZAKEN.to_string())
            .or_default()
            .extend(ZAKEN_FIELDS.iter().map(|f| f.to_string()));
    }
    for a in adapters.values() {
        for (sec, m) in &a.def.map {
            for (f, spec) in &m.fields {
                v.fields.entry(sec.clone()).or_default().insert(f.clone());
                match spec.r#type {
                    crate::model::FieldType::Date => {
                        v.dates.insert((sec.clone(), f.clone()));
                    }
                    crate::model::FieldType::Decimal => {
                        v.decimals.entry(sec.clone()).or_default().insert(f.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    v
}
