//! UWV: uitkeringen over SOAP 1.1 with Digikoppeling WUS WS-Addressing (`wsa:Action` checked
//! against `SOAPAction`, `wsa:MessageID` echoed as `wsa:RelatesTo`).

use axum::http::HeaderMap;
use axum::response::Response;
use quick_xml::escape::escape;

use super::Shared;
use super::soap::{Fault, SOAP11_NS, Service, SoapVersion, checked_xml_fixture};

const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const UWV_NS: &str = "urn:nl:uwv:uitkeringen:v1";

/// The action UWV's service accepts, in `SOAPAction` and in `wsa:Action`.
const UWV_ACTION: &str = "urn:nl:uwv:uitkeringen:v1/GeefUitkeringen";

/// A UWV fixture: the `GeefUitkeringenResponse` of the person the file is named after.
pub(super) fn fixture(text: &str, bsn: &str) -> Result<String, String> {
    checked_xml_fixture(
        text,
        bsn,
        (UWV_NS, "GeefUitkeringenResponse"),
        &[
            (UWV_NS, "GeefUitkeringenResponse"),
            (UWV_NS, "klant"),
            (UWV_NS, "bsn"),
        ],
    )
}

const PREFIX: &str = "soapenv";

const SERVICE: Service = Service {
    version: SoapVersion::V11,
    prefix: PREFIX,
    operation: (UWV_NS, "GeefUitkeringen"),
};

/// What UWV's uitkeringen service answers to one request.
pub(super) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let soap_action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    SERVICE.respond(headers, body, |req| {
        // Digikoppeling WUS: SOAPAction is empty or equal to wsa:Action.
        let wsa_action = req.header(WSA_NS, "Action");
        if let Some(action) = wsa_action
            && action != UWV_ACTION
        {
            return Err(Fault::sender(format!(
                "wsa:Action {action} wordt niet ondersteund; verwacht {UWV_ACTION}"
            )));
        }
        if !soap_action.is_empty() && soap_action != wsa_action.unwrap_or(UWV_ACTION) {
            return Err(Fault::sender(format!(
                "SOAPAction {soap_action} komt niet overeen met wsa:Action {}",
                wsa_action.unwrap_or(UWV_ACTION)
            )));
        }
        let bsn = req.bsn(&[(UWV_NS, "bsn")], "GeefUitkeringen/bsn")?;
        let inner = match shared.fixtures.uwv.get(bsn) {
            Some(xml) => xml.clone(),
            None => format!(
                "<GeefUitkeringenResponse xmlns=\"{UWV_NS}\">\n  <uitkeringen/>\n</GeefUitkeringenResponse>"
            ),
        };
        let relates_to = req
            .header(WSA_NS, "MessageID")
            .filter(|id| !id.is_empty())
            .map(|id| format!("    <wsa:RelatesTo>{}</wsa:RelatesTo>\n", escape(id)))
            .unwrap_or_default();
        let message_id = uuid::Uuid::new_v4();
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <{PREFIX}:Envelope xmlns:{PREFIX}=\"{SOAP11_NS}\" xmlns:wsa=\"{WSA_NS}\">\n\
             \x20 <{PREFIX}:Header>\n\
             \x20   <wsa:Action>{UWV_ACTION}Response</wsa:Action>\n\
             \x20   <wsa:MessageID>urn:uuid:{message_id}</wsa:MessageID>\n\
             {relates_to}\
             \x20   <wsa:To>http://www.w3.org/2005/08/addressing/anonymous</wsa:To>\n\
             \x20 </{PREFIX}:Header>\n\
             \x20 <{PREFIX}:Body>\n{inner}\n  </{PREFIX}:Body>\n</{PREFIX}:Envelope>\n"
        ))
    })
}

/// A `GeefUitkeringen` request, with WS-Addressing headers when `message_id` is given.
#[cfg(test)]
pub(super) fn geef_uitkeringen(bsn: &str, message_id: Option<&str>) -> String {
    let header = message_id
        .map(|id| {
            format!(
                "<soap:Header>\
                 <wsa:To>http://127.0.0.1/uwv/UitkeringenService</wsa:To>\
                 <wsa:Action>{UWV_ACTION}</wsa:Action>\
                 <wsa:MessageID>{id}</wsa:MessageID>\
                 <wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>\
                 </soap:Header>"
            )
        })
        .unwrap_or_default();
    format!(
        "<soap:Envelope xmlns:soap=\"{SOAP11_NS}\" xmlns:wsa=\"{WSA_NS}\">{header}\
         <soap:Body><u:GeefUitkeringen xmlns:u=\"{UWV_NS}\"><u:bsn>{bsn}</u:bsn></u:GeefUitkeringen></soap:Body>\
         </soap:Envelope>"
    )
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::UWV_PATH;
    use super::super::soap::{find, scan_xml};
    use super::super::testing::{ask, post, start, text_at};
    use super::*;

    #[tokio::test]
    async fn uwv_echoes_the_message_id_and_answers_the_fixture() {
        let server = start().await;
        let id = "urn:uuid:6f1e2d3c-0000-4000-8000-00000000abcd";
        let (status, ct, body) = post(
            &server,
            UWV_PATH,
            "text/xml; charset=utf-8",
            &[("SOAPAction", &format!("\"{UWV_ACTION}\""))],
            geef_uitkeringen("999993653", Some(id)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ct, "text/xml; charset=utf-8");
        assert!(body.contains("<soapenv:Envelope"));
        let elems = scan_xml(&body).unwrap();
        let relates = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Header"),
            (WSA_NS, "RelatesTo"),
        ];
        assert_eq!(text_at(&elems, &relates), Some(id));
        let soorten: Vec<&str> = elems
            .iter()
            .filter(|e| e.path.last().is_some_and(|n| n.is(UWV_NS, "soort")))
            .map(|e| e.text.trim())
            .collect();
        assert_eq!(soorten, ["WW", "ZW"]);
        // The planted conflict: UWV still has the old house number.
        let nr = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (UWV_NS, "GeefUitkeringenResponse"),
            (UWV_NS, "klant"),
            (UWV_NS, "adres"),
            (UWV_NS, "huisnummer"),
        ];
        assert_eq!(text_at(&elems, &nr), Some("412"));

        // Unknown person, no addressing headers: empty list, no RelatesTo.
        let (status, _, body) = ask(
            &server,
            UWV_PATH,
            "text/xml",
            geef_uitkeringen("999991772", None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let elems = scan_xml(&body).unwrap();
        assert!(find(&elems, &relates).is_none());
        let list = [
            (SOAP11_NS, "Envelope"),
            (SOAP11_NS, "Body"),
            (UWV_NS, "GeefUitkeringenResponse"),
            (UWV_NS, "uitkeringen"),
        ];
        assert!(find(&elems, &list).is_some());
        assert!(
            !elems
                .iter()
                .any(|e| e.path.last().is_some_and(|n| n.local == "Uitkering"))
        );
    }

    #[tokio::test]
    async fn uwv_faults_on_bad_requests() {
        let server = start().await;
        let wrong_op = geef_uitkeringen("999993653", None).replace("GeefUitkeringen", "GeefAlles");
        let (status, _, body) = ask(&server, UWV_PATH, "text/xml", wrong_op).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("<faultcode>soapenv:Client</faultcode>"),
            "{body}"
        );
        assert!(body.contains("Onbekende operatie"));

        let (status, _, body) = post(
            &server,
            UWV_PATH,
            "text/xml",
            &[("SOAPAction", "urn:iets-anders")],
            geef_uitkeringen("999993653", Some("urn:uuid:1")),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("SOAPAction"), "{body}");

        let (status, _, body) = ask(
            &server,
            UWV_PATH,
            "application/soap+xml",
            geef_uitkeringen("999993653", None),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body.contains("<faultcode>soapenv:Client</faultcode>"));
    }
}
