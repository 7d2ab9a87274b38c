//! SVB: regelingen over SOAP 1.2 (faults as `env:Sender` with 400, a version mismatch with 500).

use axum::http::HeaderMap;
use axum::response::Response;

use super::Shared;
use super::soap::{Service, SoapVersion, checked_xml_fixture};

const SVB_NS: &str = "http://svb.nl/schemas/regelingen/v2";

/// An SVB fixture: the `svb:RegelingenAntwoord` of the person the file is named after.
pub(super) fn fixture(text: &str, bsn: &str) -> Result<String, String> {
    checked_xml_fixture(
        text,
        bsn,
        (SVB_NS, "RegelingenAntwoord"),
        &[(SVB_NS, "RegelingenAntwoord"), (SVB_NS, "bsn")],
    )
}

const SERVICE: Service = Service {
    version: SoapVersion::V12,
    prefix: "env",
    operation: (SVB_NS, "RegelingenVraag"),
};

/// What SVB's regelingen service answers to one request.
pub(super) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    SERVICE.respond(headers, body, |req| {
        let bsn = req.bsn(&[(SVB_NS, "bsn")], "RegelingenVraag/bsn")?;
        Ok(match shared.fixtures.svb.get(bsn) {
            Some(xml) => SERVICE.envelope(xml),
            None => SERVICE.envelope(&format!(
                "<svb:RegelingenAntwoord xmlns:svb=\"{SVB_NS}\">\n  <svb:bsn>{bsn}</svb:bsn>\n</svb:RegelingenAntwoord>"
            )),
        })
    })
}

/// A `RegelingenVraag` request in a SOAP 1.2 envelope.
#[cfg(test)]
pub(super) fn regelingen_vraag(bsn: &str) -> String {
    use super::soap::SOAP12_NS;
    format!(
        "<e:Envelope xmlns:e=\"{SOAP12_NS}\"><e:Body>\
         <RegelingenVraag xmlns=\"{SVB_NS}\"><bsn>{bsn}</bsn></RegelingenVraag>\
         </e:Body></e:Envelope>"
    )
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::SVB_PATH;
    use super::super::soap::{SOAP11_NS, SOAP12_NS, find, scan_xml};
    use super::super::testing::{ask, start, text_at};
    use super::*;

    #[tokio::test]
    async fn svb_answers_in_soap_12() {
        let server = start().await;
        let (status, ct, body) = ask(
            &server,
            SVB_PATH,
            "application/soap+xml; charset=utf-8; action=\"RegelingenVraag\"",
            regelingen_vraag("999990421"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "application/soap+xml; charset=utf-8");
        assert!(body.contains("<env:Envelope"));
        let elems = scan_xml(&body).unwrap();
        let antwoord = [
            (SOAP12_NS, "Envelope"),
            (SOAP12_NS, "Body"),
            (SVB_NS, "RegelingenAntwoord"),
        ];
        let aow: Vec<_> = antwoord
            .iter()
            .copied()
            .chain([(SVB_NS, "aowDatum")])
            .collect();
        assert_eq!(text_at(&elems, &aow), Some("2022-09-14"));
        let regelingen = elems
            .iter()
            .filter(|e| e.path.last().is_some_and(|n| n.is(SVB_NS, "Regeling")))
            .count();
        assert_eq!(regelingen, 2);

        let (status, _, body) = ask(
            &server,
            SVB_PATH,
            "application/soap+xml",
            regelingen_vraag("999993847"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        let bsn: Vec<_> = antwoord.iter().copied().chain([(SVB_NS, "bsn")]).collect();
        assert_eq!(text_at(&elems, &bsn), Some("999993847"));
        assert!(find(&elems, &aow).is_none());
    }

    #[tokio::test]
    async fn svb_faults_in_soap_12_form() {
        let server = start().await;
        let (status, ct, body) = ask(
            &server,
            SVB_PATH,
            "application/soap+xml",
            regelingen_vraag("x"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(ct.starts_with("application/soap+xml"));
        let elems = scan_xml(&body).unwrap();
        let fault = [
            (SOAP12_NS, "Envelope"),
            (SOAP12_NS, "Body"),
            (SOAP12_NS, "Fault"),
        ];
        let value: Vec<_> = fault
            .iter()
            .copied()
            .chain([(SOAP12_NS, "Code"), (SOAP12_NS, "Value")])
            .collect();
        assert_eq!(text_at(&elems, &value), Some("env:Sender"));
        assert!(body.contains("<env:Text xml:lang=\"nl\">"));

        // A SOAP 1.1 envelope at the SOAP 1.2 service.
        let v11 = regelingen_vraag("999990421").replace(SOAP12_NS, SOAP11_NS);
        let (status, _, body) = ask(&server, SVB_PATH, "application/soap+xml", v11).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("<env:Value>env:VersionMismatch</env:Value>"),
            "{body}"
        );

        let (status, _, _) =
            ask(&server, SVB_PATH, "text/xml", regelingen_vraag("999990421")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
