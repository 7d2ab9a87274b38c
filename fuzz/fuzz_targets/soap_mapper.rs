//! Any bytes as a SOAP answer, through the streaming mapper of the shipped UWV adapter: it must
//! return a mapping or an error, never panic, loop or blow the stack.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ketenportaal::model::{FieldSpec, FieldType, SectionMap};
use ketenportaal::mapping::MapLimits;
use ketenportaal::mapping::xml::XmlMapping;
use libfuzzer_sys::fuzz_target;

fn mapping() -> &'static XmlMapping {
    static M: OnceLock<XmlMapping> = OnceLock::new();
    M.get_or_init(|| {
        let f = |p: &str, t, r| FieldSpec {
            path: p.into(),
            r#type: t,
            required: r,
        };
        let mut fields = BTreeMap::new();
        fields.insert("soort".into(), f("u:soort", FieldType::String, true));
        fields.insert("ingangsdatum".into(), f("u:ingangsdatum", FieldType::Date, false));
        fields.insert("bedrag".into(), f("u:bedragPerMaand", FieldType::Decimal, false));
        fields.insert("code".into(), f("u:soort/@code", FieldType::String, false));
        let mut map = BTreeMap::new();
        map.insert(
            "uitkeringen".to_string(),
            SectionMap {
                each: Some("u:GeefUitkeringenResponse/u:uitkeringen/u:Uitkering".into()),
                fields,
            },
        );
        let mut persoon = BTreeMap::new();
        persoon.insert(
            "naam".into(),
            f("u:GeefUitkeringenResponse/u:klant/u:naam", FieldType::String, false),
        );
        map.insert(
            "persoon".to_string(),
            SectionMap {
                each: None,
                fields: persoon,
            },
        );
        let mut ns = BTreeMap::new();
        ns.insert("u".to_string(), "urn:nl:uwv:uitkeringen:v1".to_string());
        XmlMapping::compile(&map, &ns).unwrap_or_else(|_| unreachable!())
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = mapping().map_envelope(data, &MapLimits { max_depth: 64 });
});
