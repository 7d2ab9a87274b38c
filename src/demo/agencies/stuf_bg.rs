//! The gemeente: StUF-BG 0310, a person asked with `npsLv01` and answered with an `npsLa01`, in
//! SOAP 1.1. A person the gemeente does not know gets an `npsLa01` with an empty `antwoord`.

use axum::http::HeaderMap;
use axum::response::Response;

use super::Shared;
use super::soap::{Service, SoapVersion, checked_xml_fixture};

pub(super) const BG_NS: &str = "http://www.egem.nl/StUF/sector/bg/0310";
const STUF_NS: &str = "http://www.egem.nl/StUF/StUF0301";

/// A StUF-BG fixture: the `BG:npsLa01` of the person the file is named after.
pub(super) fn fixture(text: &str, bsn: &str) -> Result<String, String> {
    checked_xml_fixture(
        text,
        bsn,
        (BG_NS, "npsLa01"),
        &[
            (BG_NS, "npsLa01"),
            (BG_NS, "antwoord"),
            (BG_NS, "object"),
            (BG_NS, "inp.bsn"),
        ],
    )
}

/// An `npsLa01` without objects: the gemeente does not know this person.
fn empty_nps_la01() -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    let reference = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "<BG:npsLa01 xmlns:BG=\"{BG_NS}\" xmlns:StUF=\"{STUF_NS}\">\n\
         \x20 <BG:stuurgegevens>\n\
         \x20   <StUF:berichtcode>La01</StUF:berichtcode>\n\
         \x20   <StUF:zender><StUF:organisatie>0344</StUF:organisatie><StUF:applicatie>BGKoppelvlak</StUF:applicatie></StUF:zender>\n\
         \x20   <StUF:ontvanger><StUF:organisatie>ketenportaal</StUF:organisatie><StUF:applicatie>ketenportaal</StUF:applicatie></StUF:ontvanger>\n\
         \x20   <StUF:referentienummer>{reference}</StUF:referentienummer>\n\
         \x20   <StUF:tijdstipBericht>{now}</StUF:tijdstipBericht>\n\
         \x20   <StUF:entiteittype>NPS</StUF:entiteittype>\n\
         \x20 </BG:stuurgegevens>\n\
         \x20 <BG:parameters><StUF:indicatorVervolgvraag>false</StUF:indicatorVervolgvraag></BG:parameters>\n\
         \x20 <BG:antwoord/>\n\
         </BG:npsLa01>"
    )
}

const SERVICE: Service = Service {
    version: SoapVersion::V11,
    prefix: "SOAP-ENV",
    operation: (BG_NS, "npsLv01"),
};

/// What the gemeente's StUF-BG service answers to one request.
pub(super) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    SERVICE.respond(headers, body, |req| {
        let bsn = req.bsn(
            &[(BG_NS, "gelijk"), (BG_NS, "inp.bsn")],
            "BG:gelijk/BG:inp.bsn",
        )?;
        Ok(match shared.fixtures.stuf_bg.get(bsn) {
            Some(xml) => SERVICE.envelope(xml),
            None => SERVICE.envelope(&empty_nps_la01()),
        })
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::STUF_BG_PATH;
    use super::super::soap::{SOAP11_NS, SOAP12_NS, find, scan_xml};
    use super::super::testing::{ask, start, text_at};
    use super::*;

    fn nps_lv01(bsn: &str) -> String {
        // Deliberately other prefixes than the fixture uses: matching is by namespace URI.
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Body>
    <q:npsLv01 xmlns:q="http://www.egem.nl/StUF/sector/bg/0310" xmlns:st="http://www.egem.nl/StUF/StUF0301">
      <q:stuurgegevens><st:berichtcode>Lv01</st:berichtcode><st:entiteittype>NPS</st:entiteittype></q:stuurgegevens>
      <q:parameters><st:sortering>0</st:sortering><st:indicatorVervolgvraag>false</st:indicatorVervolgvraag></q:parameters>
      <q:gelijk st:entiteittype="NPS"><q:inp.bsn>{bsn}</q:inp.bsn></q:gelijk>
    </q:npsLv01>
  </s:Body>
</s:Envelope>"#
        )
    }

    #[tokio::test]
    async fn stuf_bg_answers_an_nps_la01_in_a_soap_11_envelope() {
        let server = start().await;
        let (status, ct, body) = ask(
            &server,
            STUF_BG_PATH,
            "text/xml; charset=utf-8",
            nps_lv01("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "text/xml; charset=utf-8");
        let elems = scan_xml(&body).unwrap();
        let object = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (BG_NS, "npsLa01"),
            (BG_NS, "antwoord"),
            (BG_NS, "object"),
        ];
        let bsn: Vec<_> = object.iter().copied().chain([(BG_NS, "inp.bsn")]).collect();
        assert_eq!(text_at(&elems, &bsn), Some("999990421"));
        assert!(
            body.contains(r#"<BG:sub.telefoonnummer StUF:noValue="geenWaarde" xsi:nil="true"/>"#)
        );

        // Unknown person: a valid La01 whose antwoord is empty.
        let (status, _, body) = ask(&server, STUF_BG_PATH, "text/xml", nps_lv01("999999990")).await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        let antwoord = &object[..4];
        assert!(find(&elems, antwoord).is_some());
        assert!(find(&elems, &object).is_none());
    }

    #[tokio::test]
    async fn stuf_bg_faults_on_bad_requests() {
        let server = start().await;
        let no_bsn = nps_lv01("").replace("<q:inp.bsn></q:inp.bsn>", "");
        for (body, needle) in [
            (no_bsn, "ontbreekt"),
            (nps_lv01("12ab"), "burgerservicenummer"),
            ("<niet-af".to_owned(), "geen geldige XML"),
            (
                format!(
                    "<!DOCTYPE x [<!ENTITY e \"x\">]>{}",
                    nps_lv01("999993653").replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")
                ),
                "DOCTYPE",
            ),
        ] {
            let (status, ct, text) = ask(&server, STUF_BG_PATH, "text/xml", body).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
            assert!(ct.starts_with("text/xml"));
            let elems = scan_xml(&text).unwrap();
            let fault = [
                (SOAP11_NS, "Envelope"),
                (SOAP11_NS, "Body"),
                (SOAP11_NS, "Fault"),
            ];
            let code: Vec<_> = fault.iter().copied().chain([("", "faultcode")]).collect();
            assert_eq!(text_at(&elems, &code), Some("SOAP-ENV:Client"));
            let reason: Vec<_> = fault.iter().copied().chain([("", "faultstring")]).collect();
            assert!(text_at(&elems, &reason).unwrap().contains(needle), "{text}");
        }
        // A SOAP 1.2 envelope at a SOAP 1.1 service.
        let v12 = nps_lv01("999993653").replace(SOAP11_NS, SOAP12_NS);
        let (status, _, text) = ask(&server, STUF_BG_PATH, "text/xml", v12).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            text.contains("<faultcode>SOAP-ENV:VersionMismatch</faultcode>"),
            "{text}"
        );
    }
}
