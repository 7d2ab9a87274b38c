//! What rules may refer to ([`vocabulary`]): the sections and the fields adapters map into
//! them, the section the gateway fills itself ([`ZAKEN`]), and the names adapters may not
//! take because the gateway uses them itself ([`RESERVED_ADAPTER_IDS`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AdapterSpec;
use crate::model::{GatewayConfig, SectionKind};

/// The source name of what the gateway gives from its own store (the `zaken` records'
/// `_source`, and its entry in a dossier's `sources`).
pub const GATEWAY_SOURCE: &str = "ketenportaal";

/// Ids no adapter may have, with why: an adapter under one of them would pass for the gateway
/// itself in a dossier's `sources` and `_source`/`_provenance`, or read as one of its route
/// words in logs, metrics and URLs.
pub const RESERVED_ADAPTER_IDS: &[(&str, &str)] = &[
    (
        GATEWAY_SOURCE,
        "the gateway's own source name (its `zaken` records carry `_source: ketenportaal`)",
    ),
    (ZAKEN, "the section the gateway fills itself"),
    ("admin", "the gateway's operator routes (`/admin/`)"),
];

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
