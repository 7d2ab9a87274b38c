//! The organisations upstream: the demo's fixture agencies, REST sources that answer after a
//! delay (fan-out; at once with `--delay-ms 0`, the saturation part), and a source that answers
//! any BSN with a ~2 KB or a ~4 MiB document (memory, bursts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};

use ketenportaal::demo::agencies::AgencyServer;

use super::{announce_and_wait, bind_loopback, json_response, serve_http1, serve_http1_counting};
use crate::{ServeOut, SourceKind, root};

/// Calls the slow sources answered, and connections they accepted, since the start: the
/// control port reports both, so the generator can tell how many source calls a request made
/// (no cache in between: one per source) and whether the caller kept its connections.
pub static CALLS: AtomicU64 = AtomicU64::new(0);
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub async fn serve_sources(
    kind: SourceKind,
    delay: Duration,
    out: &ServeOut,
) -> Result<(), String> {
    match kind {
        SourceKind::Fixtures => {
            let agencies = AgencyServer::start(
                &root().join("fixtures/agencies"),
                "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            )
            .await
            .map_err(|e| format!("fixture agencies: {e}"))?;
            let api: SocketAddr = agencies
                .base_url()
                .trim_start_matches("http://")
                .parse()
                .map_err(|e| format!("agencies address: {e}"))?;
            let r = announce_and_wait(api, None, out).await;
            drop(agencies);
            r
        }
        SourceKind::Slow => {
            let (l, api) = bind_loopback().await?;
            // Each source's answer is made once: at saturation the sources share the
            // generator's core, and should spend it on HTTP, not on building the same JSON.
            let bodies: Arc<Mutex<HashMap<String, Bytes>>> = Arc::default();
            serve_http1_counting(l, Some(&CONNECTIONS), move |req: Request<Incoming>| {
                let bodies = bodies.clone();
                async move {
                    CALLS.fetch_add(1, Relaxed);
                    let source = req
                        .uri()
                        .path()
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or("bron")
                        .to_string();
                    // Read the request as a real server would, then take the source's time
                    // (none at all with delay 0: not even a timer).
                    let _ = req.into_body().collect().await;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let body = match bodies.lock() {
                        Ok(mut b) => b
                            .entry(source)
                            .or_insert_with_key(|s| zaken_body(s))
                            .clone(),
                        Err(_) => zaken_body(&source),
                    };
                    json_response(body)
                }
            });
            announce_and_wait(api, None, out).await
        }
        SourceKind::Synthetic | SourceKind::Huge => {
            let huge = matches!(kind, SourceKind::Huge);
            let (l, api) = bind_loopback().await?;
            serve_http1(l, move |req: Request<Incoming>| async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let bsn = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["bsn"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "000000000".into());
                if huge {
                    json_response(huge_body(&bsn))
                } else {
                    json_response(person_body(&bsn))
                }
            });
            announce_and_wait(api, None, out).await
        }
    }
}

/// A slow source's answer: three cases ("zaken") of one organisation, ZGW-like.
fn zaken_body(source: &str) -> Bytes {
    let zaken: Vec<Value> = [
        (
            "2026-02-11",
            "Aanvraag bijzondere bijstand",
            "in behandeling",
        ),
        ("2025-11-03", "Melding wijziging inkomen", "afgehandeld"),
        ("2025-06-20", "Bezwaar tegen beschikking", "afgehandeld"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (datum, omschrijving, status))| {
        json!({
            "identificatie": format!("ZAAK-{source}-{:04}", i + 1),
            "bron": source,
            "omschrijving": omschrijving,
            "status": status,
            "registratiedatum": datum,
        })
    })
    .collect();
    Bytes::from(json!({ "zaken": zaken }).to_string())
}

/// The synthetic source's answer for one BSN: a person with address, three benefits, jobs and
/// children, about 2 KB, varied a little by the BSN so entries are not identical.
pub fn person_body(bsn: &str) -> Bytes {
    let n: u64 = bsn.parse().unwrap_or(0);
    let names = [
        "Jansen",
        "de Vries",
        "van den Berg",
        "Bakker",
        "Visser",
        "Smit",
    ];
    let first = [
        "Anna Maria",
        "Pieter",
        "Fatima",
        "Johannes Cornelis",
        "Sanne",
        "Mohamed",
    ];
    let streets = [
        "Oudegracht",
        "Biltstraat",
        "Amsterdamsestraatweg",
        "Kanaalweg",
    ];
    let soorten = ["WW", "ZW", "WIA", "Wajong", "AOW", "ANW"];
    let uitkeringen: Vec<Value> = (0..3u64)
        .map(|i| {
            json!({
                "soort": soorten[((n + i) % 6) as usize],
                "ingangsdatum": format!("20{:02}-{:02}-01", 15 + (n + i) % 11, 1 + (n + 3 * i) % 12),
                "einddatum": if i == 0 { Value::Null } else { json!(format!("2025-{:02}-28", 1 + i)) },
                "bedragPerMaand": format!("{}.{:02}", 900 + (n * (i + 7)) % 1400, n % 100),
                "status": if i == 0 { "lopend" } else { "beeindigd" },
                "beschikkingsnummer": format!("BS-{}-{:06}", 2020 + i, (n / (i + 1)) % 1_000_000),
                "uitvoerder": {"naam": "Uitvoeringsinstituut Werknemersverzekeringen", "vestiging": "Utrecht"},
            })
        })
        .collect();
    let doc = json!({
        "persoon": {
            "burgerservicenummer": bsn,
            "naam": {
                "voornamen": first[(n % 6) as usize],
                "voorvoegsel": "",
                "geslachtsnaam": names[((n / 7) % 6) as usize],
                "aanschrijfwijze": "mevrouw/meneer",
            },
            "geboorte": {"datum": format!("19{:02}-{:02}-{:02}", 40 + n % 60, 1 + n % 12, 1 + n % 28), "plaats": "Utrecht", "land": "Nederland"},
            "geslacht": if n.is_multiple_of(2) { json!({"code": "V", "omschrijving": "vrouw"}) } else { json!({"code": "M", "omschrijving": "man"}) },
            "nationaliteit": {"code": "0001", "omschrijving": "Nederlandse"},
            "verblijfplaats": {
                "straat": streets[(n % 4) as usize],
                "huisnummer": 1 + n % 250,
                "huisletter": "",
                "postcode": format!("35{:02}{}", n % 100, ["AB", "CD", "KL", "XZ"][(n % 4) as usize]),
                "woonplaats": "Utrecht",
                "gemeente": {"code": "0344", "omschrijving": "Utrecht"},
                "datumAanvangAdreshouding": "2019-05-01",
            },
            "telefoon": format!("06-{:08}", n % 100_000_000),
            "email": format!("burger{}@example.nl", n % 100_000),
        },
        "uitkeringen": uitkeringen,
        "dienstverbanden": [
            {"werkgever": "Gemeente Utrecht", "loonheffingennummer": format!("{:09}L01", n % 1_000_000_000), "begindatum": "2012-09-01", "einddatum": "2024-12-31", "uurPerWeek": 32},
            {"werkgever": "Zorggroep Midden-Nederland", "loonheffingennummer": format!("{:09}L02", (n / 3) % 1_000_000_000), "begindatum": "2025-02-01", "einddatum": null, "uurPerWeek": 24},
        ],
        "kinderen": [
            {"voornamen": "Noor", "geboortedatum": format!("20{:02}-03-14", 5 + n % 15)},
            {"voornamen": "Daan", "geboortedatum": format!("20{:02}-11-02", 8 + n % 12)},
        ],
        "_links": {"self": {"href": "/api/v2/klanten/_zoek"}},
        "_meta": {"bron": "synthetisch", "versie": "2.3.1", "gegenereerd": "2026-03-01T10:00:00Z", "kenmerk": format!("{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))},
    });
    Bytes::from(doc.to_string())
}

/// The huge source's answer: the synthetic one with a base64 "scan" attachment that makes it
/// 4 MiB less 16 KiB, so it passes the default 4 MiB cap. Only the person and benefits are
/// mapped.
pub fn huge_body(bsn: &str) -> Bytes {
    const SIZE: usize = 4 * 1024 * 1024 - 16 * 1024;
    let person = person_body(bsn);
    let head = br#","bijlagen":[{"naam":"scan.pdf","inhoud":""#;
    let mut out = Vec::with_capacity(SIZE);
    out.extend_from_slice(&person[..person.len() - 1]);
    out.extend_from_slice(head);
    out.resize(SIZE - 3, b'A');
    out.extend_from_slice(br#""}]}"#);
    Bytes::from(out)
}
