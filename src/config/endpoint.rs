//! Where a registered adapter may point: the endpoint policy for descriptors sent over the API.
//!
//! A partner's descriptor is untrusted. Its endpoint must lie under one of the URL prefixes the
//! operator declared for the partner's organisation (`allowed_endpoints`, else `base_url`),
//! compared after the URL has been normalised the way the HTTP client will send it (WHATWG
//! parsing: lower-case host, IPv4 and IPv6 forms canonical, default port made explicit, `.`
//! and `..` segments resolved). What a normaliser could still read two ways is refused
//! outright: user info, fragments, backslashes, control characters, and percent-encoded dots,
//! slashes and backslashes (a server may decode `%2e%2e%2f` after we compared), and in the
//! path a `;` or an encoded percent sign (Java servers read `..;` as `..`, and a server that
//! decodes twice reads `%252e` as `.`). Nothing here
//! does I/O; the resolver that keeps DNS names on public addresses lives with the transport.

use url::Url;

/// Why an endpoint was refused; the text is shown to the partner and names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefusal {
    #[error("endpoint `{0}` is not a URL")]
    NotUrl(String),
    #[error("endpoint must use http or https")]
    Scheme,
    #[error("endpoint may not carry user info (`user@` or `user:password@`)")]
    UserInfo,
    #[error("endpoint may not carry a fragment (`#...`)")]
    Fragment,
    #[error("endpoint holds {0}, which a server may read differently from the gateway")]
    Ambiguous(&'static str),
    #[error("endpoint `{0}` lies outside the URLs declared for this organisation")]
    Outside(String),
    #[error("no endpoint URLs are declared for this organisation, so it cannot register adapters")]
    NothingDeclared,
}

/// Resolves `endpoint` (absolute, or a path under `base_url`) and checks that it lies under
/// one of `prefixes`. Returns the normalised URL, which is what the gateway then calls.
pub fn check_registered(
    endpoint: &str,
    base_url: Option<&str>,
    prefixes: &[&str],
) -> Result<Url, EndpointRefusal> {
    if prefixes.is_empty() {
        return Err(EndpointRefusal::NothingDeclared);
    }
    refuse_ambiguous(endpoint)?;
    let text = match (endpoint.starts_with('/'), base_url) {
        (true, Some(base)) => format!("{}{endpoint}", base.trim_end_matches('/')),
        _ => endpoint.to_string(),
    };
    let url = Url::parse(&text).map_err(|_| EndpointRefusal::NotUrl(endpoint.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointRefusal::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointRefusal::UserInfo);
    }
    if url.fragment().is_some() {
        return Err(EndpointRefusal::Fragment);
    }
    refuse_ambiguous_path(url.path())?;
    let inside = prefixes
        .iter()
        .filter_map(|p| Url::parse(p).ok())
        .any(|p| under(&url, &p));
    if inside {
        Ok(url)
    } else {
        // The endpoint as sent: the resolved URL would show the operator's base URL.
        Err(EndpointRefusal::Outside(endpoint.to_string()))
    }
}

/// Whether `url` lies under `prefix`: same scheme, host and port, and a path at or below the
/// prefix's path on a segment boundary (`/uwv` covers `/uwv` and `/uwv/x`, not `/uwvx`).
pub fn under(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host() != prefix.host()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let base = prefix.path().trim_end_matches('/');
    let path = url.path();
    path == base || path.starts_with(&format!("{base}/"))
}

/// Refuses what normalisers disagree on. Checked on the text as sent, before parsing.
fn refuse_ambiguous(endpoint: &str) -> Result<(), EndpointRefusal> {
    if endpoint
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(EndpointRefusal::Ambiguous("a control or space character"));
    }
    if endpoint.contains('\\') {
        return Err(EndpointRefusal::Ambiguous("a backslash"));
    }
    let lower = endpoint.to_ascii_lowercase();
    for (enc, what) in [
        ("%2e", "a percent-encoded dot"),
        ("%2f", "a percent-encoded slash"),
        ("%5c", "a percent-encoded backslash"),
        ("%00", "a percent-encoded NUL"),
        ("%40", "a percent-encoded `@`"),
    ] {
        if lower.contains(enc) {
            return Err(EndpointRefusal::Ambiguous(what));
        }
    }
    Ok(())
}

/// Refuses path segments a server may resolve after we compared, checked on the parsed path
/// (the query may hold both characters harmlessly): a `;` starts a path parameter, which
/// Tomcat, Jetty and Spring strip, so `/uwv/..;/svb/` stays under `/uwv/` for us and is
/// `/svb/` for them; an encoded percent sign lets a server that decodes twice turn
/// `%252e%252e` into `..`, and an encoded `;` becomes the first after one decoding.
fn refuse_ambiguous_path(path: &str) -> Result<(), EndpointRefusal> {
    if path.contains(';') {
        return Err(EndpointRefusal::Ambiguous(
            "a `;` in its path (Java servers read `..;/` as `../`)",
        ));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%25") {
        return Err(EndpointRefusal::Ambiguous(
            "an encoded percent sign (`%25`) in its path (a double-encoded `%252e` is a dot to a server that decodes twice)",
        ));
    }
    if lower.contains("%3b") {
        return Err(EndpointRefusal::Ambiguous(
            "a percent-encoded `;` in its path",
        ));
    }
    // IIS reads `%u002e` as `.`; servers that normalise Unicode fold a fullwidth `；` or `．`
    // (sent as UTF-8, percent-encoded) into its ASCII twin.
    if lower.contains("%u") {
        return Err(EndpointRefusal::Ambiguous(
            "a `%u` escape in its path (IIS reads `%u002e` as `.`)",
        ));
    }
    let bytes = lower.as_bytes();
    if bytes
        .windows(2)
        .any(|w| w[0] == b'%' && matches!(w[1], b'8'..=b'9' | b'a'..=b'f'))
    {
        return Err(EndpointRefusal::Ambiguous(
            "a non-ASCII character in its path (a server may fold a fullwidth `；` into `;`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://services.uwv.example.nl";
    const PREFIX: &str = "https://services.uwv.example.nl/uwv/";

    fn check(endpoint: &str) -> Result<String, EndpointRefusal> {
        check_registered(endpoint, Some(BASE), &[PREFIX]).map(|u| u.to_string())
    }

    #[test]
    fn endpoints_under_the_prefix_are_accepted_in_their_normal_form() {
        assert_eq!(
            check("/uwv/WiaService").unwrap(),
            "https://services.uwv.example.nl/uwv/WiaService"
        );
        assert_eq!(
            check("https://SERVICES.uwv.example.nl:443/uwv/a/./b/../c?x=1").unwrap(),
            "https://services.uwv.example.nl/uwv/a/c?x=1"
        );
        assert!(check("/uwv").is_ok());
        // In the query, `;` and `%25` are data, not path segments.
        assert!(check("/uwv/x?a=1;b=100%25").is_ok());
    }

    #[test]
    fn path_parameters_and_double_encoding_are_refused_with_a_reason() {
        for (e, why) in [
            ("/uwv/..;/svb/RegelingenService", "a `;` in its path"),
            ("/uwv/x;jsessionid=1", "a `;` in its path"),
            (
                "https://services.uwv.example.nl/uwv/..;/svb/",
                "a `;` in its path",
            ),
            ("/uwv/%252e%252e/svb/", "an encoded percent sign"),
            ("/uwv/%252E%252E%252Fsvb", "an encoded percent sign"),
            ("/uwv/100%25", "an encoded percent sign"),
            ("/uwv/..%3b/svb/", "a percent-encoded `;`"),
            ("/uwv/%u002e%u002e/svb/", "a `%u` escape"),
            ("/uwv/..%EF%BC%9B/svb/", "a non-ASCII character"),
            ("/uwv/..\u{FF1B}/svb/", "a non-ASCII character"),
        ] {
            match check(e) {
                Err(r @ EndpointRefusal::Ambiguous(_)) => {
                    assert!(r.to_string().contains(why), "{e}: {r}")
                }
                other => panic!("{e} gave {other:?}"),
            }
        }
    }

    #[test]
    fn every_escape_is_refused() {
        for e in [
            // other host, loopback in every spelling, other port, other scheme
            "https://evil.example.org/uwv/x",
            "https://127.0.0.1/uwv/x",
            "http://127.0.0.1:9090/metrics",
            "https://[::1]/uwv/x",
            "https://[::ffff:127.0.0.1]/uwv/x",
            "https://localhost/uwv/x",
            "https://2130706433/uwv/x",
            "https://0x7f.1/uwv/x",
            "http://169.254.169.254/latest/meta-data/",
            "https://services.uwv.example.nl:8443/uwv/x",
            "http://services.uwv.example.nl/uwv/x",
            "ftp://services.uwv.example.nl/uwv/x",
            "file:///etc/passwd",
            // past the base path
            "/uwv/../svb/RegelingenService",
            "/uwv/%2e%2e/svb/RegelingenService",
            "/uwv/%2E%2E%2Fsvb",
            "/uwv/..%2fsvb",
            "/uwv\\..\\svb",
            "/uwvx/Service",
            "/svb/RegelingenService",
            // user info: the host is what follows the `@`
            "https://services.uwv.example.nl@evil.example.org/uwv/x",
            "https://user:pw@services.uwv.example.nl/uwv/x",
            "https://services.uwv.example.nl%40evil.example.org/uwv/x",
            // a path glued onto the base's host
            "@evil.example.org/uwv",
            "//evil.example.org/uwv/x",
            "/uwv/x#frag",
            "/uwv/x\r\nHost: evil",
            "not a url",
        ] {
            assert!(check(e).is_err(), "{e} was accepted as {:?}", check(e));
        }
    }

    #[test]
    fn a_path_prefix_without_slash_covers_segments_only() {
        let p = ["https://h.example/api/v1"];
        let ok = |e: &str| check_registered(e, None, &p).is_ok();
        assert!(ok("https://h.example/api/v1"));
        assert!(ok("https://h.example/api/v1/zaken"));
        assert!(!ok("https://h.example/api/v10"));
        assert!(!ok("https://h.example/api"));
    }

    #[test]
    fn nothing_declared_means_nothing_registered() {
        assert_eq!(
            check_registered("https://h.example/x", None, &[]),
            Err(EndpointRefusal::NothingDeclared)
        );
    }
}
