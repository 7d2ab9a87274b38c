//! Any bytes as a REST answer, through a pointer mapping and a JSONPath mapping.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ketenportaal::model::{FieldSpec, FieldType, SectionMap};
use ketenportaal::mapping::MapLimits;
use ketenportaal::mapping::json::JsonMapping;
use libfuzzer_sys::fuzz_target;

fn mappings() -> &'static [JsonMapping; 2] {
    static M: OnceLock<[JsonMapping; 2]> = OnceLock::new();
    M.get_or_init(|| {
        let build = |each: &str, naam: &str| {
            let mut fields = BTreeMap::new();
            for (k, p, t) in [
                ("naam", naam, FieldType::String),
                ("leeftijd", "/leeftijd", FieldType::Integer),
                ("datum", "/geboorte/datum/datum", FieldType::Date),
                ("bedrag", "/bedrag", FieldType::Decimal),
                ("actief", "/actief", FieldType::Boolean),
            ] {
                fields.insert(
                    k.to_string(),
                    FieldSpec {
                        path: p.into(),
                        r#type: t,
                        required: false,
                    },
                );
            }
            let mut map = BTreeMap::new();
            map.insert(
                "s".to_string(),
                SectionMap {
                    each: Some(each.into()),
                    fields,
                },
            );
            JsonMapping::compile(&map).unwrap_or_else(|_| unreachable!())
        };
        [
            build("/personen", "/naam/geslachtsnaam"),
            build("$.personen[?@.leeftijd > 17]", "$.naam.geslachtsnaam"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for m in mappings() {
        let _ = m.map_bytes(data, &MapLimits { max_depth: 64 });
    }
});
