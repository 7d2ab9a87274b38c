//! The SOAP envelope: one builder for source calls and for delivery.
//!
//! SOAP 1.1 (`text/xml`, the `SOAPAction` header) or 1.2 (`application/soap+xml` with the
//! `action` parameter). With `addressing`, the Digikoppeling WUS headers: `wsa:To`,
//! `wsa:Action` (the config requires an action then: WS-Addressing makes it mandatory),
//! `wsa:MessageID` and an anonymous `wsa:ReplyTo`. The Body's namespace prefixes are declared
//! on the Body element.

use super::client::{OutBody, OutRequest};
use super::template::escape_xml;
use crate::mapping::xml::{SOAP11_NS, SOAP12_NS};
use crate::model::{SoapDef, SoapVersion};

const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// The envelope around `body` (the rendered Body content) for `soap`, addressed to `to`, with
/// `message_id` (a UUID) as `wsa:MessageID` when `soap.addressing` is on.
pub fn envelope(soap: &SoapDef, to: &str, message_id: &str, body: &str) -> String {
    let ns = match soap.version {
        SoapVersion::V11 => SOAP11_NS,
        SoapVersion::V12 => SOAP12_NS,
    };
    let mut x = String::with_capacity(512 + body.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"");
    x.push_str(ns);
    x.push('"');
    if soap.addressing {
        x.push_str(" xmlns:wsa=\"");
        x.push_str(WSA_NS);
        x.push('"');
    }
    x.push('>');
    if soap.addressing {
        x.push_str("<soapenv:Header><wsa:To>");
        x.push_str(&escape_xml(to));
        x.push_str("</wsa:To>");
        if let Some(a) = &soap.action {
            x.push_str("<wsa:Action>");
            x.push_str(&escape_xml(a));
            x.push_str("</wsa:Action>");
        }
        x.push_str("<wsa:MessageID>urn:uuid:");
        x.push_str(&escape_xml(message_id));
        x.push_str("</wsa:MessageID><wsa:ReplyTo><wsa:Address>");
        x.push_str(WSA_ANONYMOUS);
        x.push_str("</wsa:Address></wsa:ReplyTo></soapenv:Header>");
    }
    x.push_str("<soapenv:Body");
    for (p, uri) in &soap.namespaces {
        x.push_str(" xmlns:");
        x.push_str(p);
        x.push_str("=\"");
        x.push_str(&escape_xml(uri));
        x.push('"');
    }
    x.push('>');
    x.push_str(body);
    x.push_str("</soapenv:Body></soapenv:Envelope>");
    x
}

/// The request: the envelope POSTed to `uri` with the version's content type and action;
/// `to` is the endpoint as configured (the envelope's WS-Addressing `To`), `uri` the same
/// endpoint parsed. Fails only when the action is not a valid header value (checked when the
/// config loaded).
pub fn request(
    to: &str,
    uri: http::Uri,
    soap: &SoapDef,
    message_id: &str,
    body: &str,
) -> Result<OutRequest, http::Error> {
    let content_type = match (soap.version, &soap.action) {
        (SoapVersion::V11, _) => "text/xml; charset=utf-8".to_string(),
        (SoapVersion::V12, Some(a)) => {
            format!("application/soap+xml; charset=utf-8; action=\"{a}\"")
        }
        (SoapVersion::V12, None) => "application/soap+xml; charset=utf-8".to_string(),
    };
    let mut req = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "text/xml, application/soap+xml");
    if soap.version == SoapVersion::V11 {
        req = req.header(
            "soapaction",
            format!("\"{}\"", soap.action.as_deref().unwrap_or("")),
        );
    }
    req.body(OutBody::from(envelope(soap, to, message_id, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(version: SoapVersion, action: Option<&str>, addressing: bool) -> SoapDef {
        SoapDef {
            version,
            action: action.map(str::to_owned),
            addressing,
            namespaces: [("u".to_string(), "urn:x&y".to_string())].into(),
            body: String::new(),
        }
    }

    #[test]
    fn the_envelope_carries_addressing_and_escapes_what_it_inserts() {
        let soap = def(SoapVersion::V11, Some("urn:geef&neem"), true);
        let x = envelope(&soap, "https://uwv.example/a?b=1&c=2", "42", "<u:vraag/>");
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:wsa="));
        assert!(
            x.contains("<wsa:To>https://uwv.example/a?b=1&amp;c=2</wsa:To>"),
            "{x}"
        );
        assert!(
            x.contains("<wsa:Action>urn:geef&amp;neem</wsa:Action>"),
            "{x}"
        );
        assert!(
            x.contains("<wsa:MessageID>urn:uuid:42</wsa:MessageID>"),
            "{x}"
        );
        assert!(
            x.contains("<soapenv:Body xmlns:u=\"urn:x&amp;y\"><u:vraag/></soapenv:Body>"),
            "{x}"
        );
        let plain = envelope(&def(SoapVersion::V12, None, false), "u", "1", "");
        assert!(plain.contains(SOAP12_NS), "{plain}");
        assert!(!plain.contains("wsa"), "{plain}");
    }
}
