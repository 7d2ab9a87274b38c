//! The stored answers: every `fixtures/agencies/<org>/<bsn>.<ext>`, read once at start, with
//! `{{today+Nd}}` dates made relative to the day the server starts.
//!
//! **Owns**: walking the folder, file names (nine-digit BSNs, the organisation's extension), and
//! turning any problem into a startup error naming the file. What an organisation's file must
//! hold is checked by that organisation's module (`brp::fixture`, ...).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use serde_json::Value;

use super::{Org, brp, is_bsn_shaped, stuf_bg, svb, toeslagen, uwv};

/// The stored answers, by BSN, loaded once at start.
#[derive(Debug, Default)]
pub(super) struct Fixtures {
    /// One Haal Centraal `Persoon` object per BSN.
    pub(super) brp: HashMap<String, Value>,
    /// The `BG:npsLa01` element, as text, ready to go inside a SOAP Body.
    pub(super) stuf_bg: HashMap<String, String>,
    /// The `GeefUitkeringenResponse` element.
    pub(super) uwv: HashMap<String, String>,
    /// The `svb:RegelingenAntwoord` element.
    pub(super) svb: HashMap<String, String>,
    /// The whole toeslagen answer document.
    pub(super) toeslagen: HashMap<String, Value>,
}

/// Fixture dates that must stay "soon" whenever the demo runs are written `{{today+48d}}` (or
/// `-Nd`) and become ISO dates relative to `today`, so "your WW ends within three months" stays
/// true for the demo citizen next year too.
pub fn relative_dates(text: &str, today: chrono::NaiveDate) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{today") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let spec = &after[..j];
        let days: Option<i64> = spec
            .strip_suffix('d')
            .and_then(|n| n.strip_prefix('+').unwrap_or(n).parse().ok());
        match days.and_then(|d| today.checked_add_signed(chrono::Duration::days(d))) {
            Some(d) => out.push_str(&d.format("%Y-%m-%d").to_string()),
            None => out.push_str(&rest[i..i + 7 + j + 2]),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

fn fixture_error(path: &Path, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("fixture {}: {msg}", path.display()),
    )
}

impl Fixtures {
    /// Reads every `<org>/<bsn>.<ext>` below `dir`. A missing org folder means that
    /// organisation knows nobody; anything unreadable or malformed is an error naming the file.
    pub(super) fn load(dir: &Path) -> io::Result<Fixtures> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fixture folder {} does not exist", dir.display()),
            ));
        }
        let mut fx = Fixtures::default();
        for org in Org::ALL {
            let org_dir = dir.join(org.key());
            if !org_dir.exists() {
                continue;
            }
            let mut entries: Vec<_> = std::fs::read_dir(&org_dir)
                .map_err(|e| fixture_error(&org_dir, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fixture_error(&org_dir, e))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let Some(bsn) = name
                    .strip_suffix(org.extension())
                    .and_then(|s| s.strip_suffix('.'))
                    .filter(|s| is_bsn_shaped(s))
                    .map(str::to_owned)
                else {
                    return Err(fixture_error(
                        &path,
                        format!(
                            "unexpected file name; fixtures are named <bsn>.{} (nine digits)",
                            org.extension()
                        ),
                    ));
                };
                let text = std::fs::read_to_string(&path).map_err(|e| fixture_error(&path, e))?;
                let text = relative_dates(&text, chrono::Utc::now().date_naive());
                fx.add(org, bsn, &text)
                    .map_err(|e| fixture_error(&path, e))?;
            }
        }
        Ok(fx)
    }

    fn add(&mut self, org: Org, bsn: String, text: &str) -> Result<(), String> {
        let (xml, into) = match org {
            Org::Brp => {
                let persoon = brp::fixture(text, &bsn)?;
                self.brp.insert(bsn, persoon);
                return Ok(());
            }
            Org::Toeslagen => {
                let doc = toeslagen::fixture(text, &bsn)?;
                self.toeslagen.insert(bsn, doc);
                return Ok(());
            }
            Org::StufBg => (stuf_bg::fixture(text, &bsn)?, &mut self.stuf_bg),
            Org::Uwv => (uwv::fixture(text, &bsn)?, &mut self.uwv),
            Org::Svb => (svb::fixture(text, &bsn)?, &mut self.svb),
        };
        into.insert(bsn, xml);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::AgencyServer;
    use super::super::soap::scan_xml;
    use super::super::stuf_bg::BG_NS;
    use super::super::testing::{FIXTURES, text_at};
    use super::*;

    const BSNS: [&str; 6] = crate::bsn::TEST_BSNS;

    #[test]
    fn every_fixture_loads_and_every_person_is_at_brp_and_stuf_bg() {
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for bsn in BSNS {
            assert!(fx.brp.contains_key(bsn), "{bsn} at brp");
            assert!(fx.stuf_bg.contains_key(bsn), "{bsn} at stuf-bg");
        }
        assert_eq!(fx.brp.len(), 6);
        assert_eq!(fx.uwv.len(), 2);
        assert_eq!(fx.svb.len(), 4);
        assert_eq!(fx.toeslagen.len(), 5);
    }

    /// BRP `leeftijd` is stored, so it must agree with `geboorte.datum` on the demo's "today".
    #[test]
    fn brp_ages_match_birth_dates_on_the_reference_date() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for (bsn, p) in &fx.brp {
            let born = p
                .pointer("/geboorte/datum/datum")
                .and_then(Value::as_str)
                .unwrap();
            let born = chrono::NaiveDate::parse_from_str(born, "%Y-%m-%d").unwrap();
            let age = today.years_since(born).unwrap();
            assert_eq!(p["leeftijd"], json!(age), "{bsn}");
        }
    }

    /// The gemeente's StUF-BG copy agrees with the BRP (the planted conflict lives at UWV).
    #[test]
    fn stuf_bg_agrees_with_brp() {
        let fx = Fixtures::load(Path::new(FIXTURES)).unwrap();
        for bsn in BSNS {
            let p = &fx.brp[bsn];
            let elems = scan_xml(&fx.stuf_bg[bsn]).unwrap();
            let obj = [(BG_NS, "npsLa01"), (BG_NS, "antwoord"), (BG_NS, "object")];
            let at = |rest: &[(&'static str, &'static str)]| {
                let path: Vec<_> = obj.iter().chain(rest).copied().collect();
                text_at(&elems, &path).map(str::to_owned)
            };
            assert_eq!(
                at(&[(BG_NS, "geslachtsnaam")]).as_deref(),
                p.pointer("/naam/geslachtsnaam").and_then(Value::as_str),
                "{bsn}"
            );
            let born = p
                .pointer("/geboorte/datum/datum")
                .and_then(Value::as_str)
                .unwrap();
            assert_eq!(
                at(&[(BG_NS, "geboortedatum")]).unwrap(),
                born.replace('-', "")
            );
            let adres = [(BG_NS, "verblijfsadres")];
            let pc: Vec<_> = adres
                .iter()
                .copied()
                .chain([(BG_NS, "aoa.postcode")])
                .collect();
            assert_eq!(
                at(&pc).as_deref(),
                p.pointer("/verblijfplaats/verblijfadres/postcode")
                    .and_then(Value::as_str)
            );
            let nr: Vec<_> = adres
                .iter()
                .copied()
                .chain([(BG_NS, "aoa.huisnummer")])
                .collect();
            assert_eq!(
                at(&nr).unwrap(),
                p.pointer("/verblijfplaats/verblijfadres/huisnummer")
                    .unwrap()
                    .to_string()
            );
        }
    }
    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ketenportaal-agencies-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("uwv")).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_malformed_fixture_is_a_startup_error_naming_the_file() {
        let dir = scratch_dir("bad");
        std::fs::write(
            dir.join("uwv/999993653.xml"),
            "<GeefUitkeringenResponse xmlns=\"urn:nl:uwv:uitkeringen:v1\"><klant>",
        )
        .unwrap();
        let err = AgencyServer::start(&dir, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("999993653.xml"), "{err}");
    }

    #[tokio::test]
    async fn a_fixture_whose_bsn_differs_from_its_name_is_refused() {
        let dir = scratch_dir("mismatch");
        std::fs::write(
            dir.join("uwv/999990019.xml"),
            "<GeefUitkeringenResponse xmlns=\"urn:nl:uwv:uitkeringen:v1\"><klant><bsn>999993653</bsn></klant></GeefUitkeringenResponse>",
        )
        .unwrap();
        let err = Fixtures::load(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.to_string().contains("999990019.xml"), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn relative_dates_follow_today() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(
            relative_dates("<e>{{today+48d}}</e>", today),
            "<e>2027-01-15</e>"
        );
        assert_eq!(
            relative_dates("{{today-1d}} {{today+0d}}", today),
            "2026-11-27 2026-11-28"
        );
        assert_eq!(relative_dates("{{today+xd}}", today), "{{today+xd}}");
    }
}
