//! Bearer token verification: who is calling.
//!
//! Tokens are JWTs verified with keys from config (HS256 for the demo, RS256/ES256 public keys
//! in production), selected by `kid`. Each key is bound to one algorithm, so a token cannot
//! choose its own (no `alg: none`, no HS/RS confusion). `exp`, `nbf`, `iss` and `aud` are
//! checked with the configured clock skew; a header with `crit` is refused (RFC 7515
//! §4.1.11: this gateway understands no extension). A citizen token carries the BSN (as
//! DigiD would); an employee token carries the organisation and roles. A refusal tells the
//! client a fixed reason ([`Refusal`]); the library's own words go to the log only.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::bsn::Bsn;
use crate::model::{AuthConfig, KeyAlg, KeyDef};

/// Who is calling, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Citizen {
        sub: String,
        bsn: Bsn,
    },
    Employee {
        sub: String,
        organisation: String,
        roles: Vec<String>,
    },
}

impl Actor {
    pub fn subject(&self) -> &str {
        match self {
            Actor::Citizen { sub, .. } | Actor::Employee { sub, .. } => sub,
        }
    }
}

/// The claims ketenportaal reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iat: i64,
    /// `citizen` or `employee`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// The claims read from a token being verified: every one optional, so that a missing claim
/// reaches the check that names it ([`Refusal::MissingClaim`]) instead of failing as a
/// parser's "missing field" with a line and column. The types are [`Claims`]'s.
#[derive(Deserialize)]
struct TokenClaims {
    // Checked by the library's validation, not read here. `aud` may be one string or a list
    // (RFC 7519 §4.1.3; identity providers often send a list): the library accepts the token
    // when the list holds this gateway's audience.
    #[serde(rename = "iss")]
    _iss: Option<String>,
    #[serde(rename = "aud")]
    _aud: Option<Audience>,
    #[serde(rename = "nbf")]
    _nbf: Option<i64>,
    #[serde(rename = "iat")]
    _iat: Option<i64>,
    sub: Option<String>,
    exp: Option<i64>,
    actor: Option<String>,
    bsn: Option<String>,
    org: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// A token's `aud`: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(#[allow(dead_code)] String),
    Several(#[allow(dead_code)] Vec<String>),
}

/// Why a token is refused, in fixed words: this is what the client is told. A parser's own
/// message ("missing field `exp` at line 1 column 142") shows internals and goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is not a JWT (three base64url parts holding JSON)")]
    Malformed,
    #[error("its header is not one this gateway accepts (`alg`, `kid`, `typ`)")]
    Header,
    #[error(
        "its header lists critical extensions (`crit`), which this gateway does not understand"
    )]
    Critical,
    #[error("it is not signed with its key's algorithm")]
    Algorithm,
    #[error("its signature does not verify")]
    Signature,
    #[error("it has expired")]
    Expired,
    #[error("it is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("its issuer (`iss`) is not accepted")]
    Issuer,
    #[error("its audience (`aud`) is not this gateway")]
    Audience,
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("a claim has the wrong type")]
    ClaimType,
    #[error("its `bsn` claim is not a valid BSN")]
    Bsn,
    #[error("its key may not vouch for this caller (the key is bound to other organisations)")]
    Vouch,
    #[error("its `actor` claim is neither `citizen` nor `employee`")]
    Actor,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    /// `detail` is for the log: it may quote the library or the token's values.
    #[error("the token is not valid: {reason}")]
    Invalid { reason: Refusal, detail: String },
    #[error("the token names an unknown key")]
    UnknownKey,
}

impl AuthError {
    fn invalid(reason: Refusal, detail: impl Into<String>) -> AuthError {
        AuthError::Invalid {
            reason,
            detail: detail.into(),
        }
    }

    /// What the log gets beside the client's reason (empty when there is nothing more).
    pub fn detail(&self) -> &str {
        match self {
            AuthError::Invalid { detail, .. } => detail,
            _ => "",
        }
    }
}

/// The fixed reason for an error of the JWT library, and its own words for the log.
fn refused(e: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let reason = match e.kind() {
        K::InvalidSignature => Refusal::Signature,
        K::ExpiredSignature => Refusal::Expired,
        K::ImmatureSignature => Refusal::NotYetValid,
        K::InvalidIssuer => Refusal::Issuer,
        K::InvalidAudience => Refusal::Audience,
        K::InvalidAlgorithm
        | K::MissingAlgorithm
        | K::InvalidAlgorithmName
        | K::UnsupportedAlgorithm => Refusal::Algorithm,
        K::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => Refusal::MissingClaim("exp"),
            "iss" => Refusal::MissingClaim("iss"),
            "aud" => Refusal::MissingClaim("aud"),
            "sub" => Refusal::MissingClaim("sub"),
            "nbf" => Refusal::MissingClaim("nbf"),
            _ => Refusal::ClaimType,
        },
        K::InvalidClaimFormat(_) => Refusal::ClaimType,
        K::Json(j) if j.classify() == serde_json::error::Category::Data => Refusal::ClaimType,
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => Refusal::Malformed,
        // Key material and provider failures: the token could not be verified.
        _ => Refusal::Signature,
    };
    AuthError::invalid(reason, e.to_string())
}

/// Whether the token's header has a `crit` member. RFC 7515 §4.1.11: a recipient that does
/// not understand every extension it lists must refuse the token, and this gateway
/// understands none. Read from the header's JSON itself, so that `"crit": null` (which the
/// library reads as no `crit`) is refused too.
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
        .is_some_and(|h| h.contains_key("crit"))
}

/// How many verified tokens [`Verifier`] remembers; when full it starts over.
const VERIFIED_CAP: usize = 16_384;

/// A verified token, remembered under the SHA-256 of its text.
#[derive(Clone)]
struct Verified {
    actor: Actor,
    /// The token's `exp` claim (seconds since the epoch).
    exp: i64,
}

/// Verifies tokens against the configured keys.
///
/// Tokens that verified are remembered (keyed by the SHA-256 of the token, so the cache holds
/// no bearer secret) until their `exp` (plus the configured leeway) passes: a portal sends
/// the same token with every request of a session, and a signature check costs more than the
/// rest of a cached dossier's gateway work. The verifier is part of the runtime snapshot, so
/// a reload (new keys, issuer, audience) starts with an empty cache. Refused tokens are not
/// remembered.
pub struct Verifier {
    /// By `kid`: the key, its validation, and the organisations it may vouch for (empty: any).
    keys: HashMap<String, (DecodingKey, Validation, Vec<String>)>,
    verified: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
    leeway: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn alg(a: KeyAlg) -> Algorithm {
    match a {
        KeyAlg::HS256 => Algorithm::HS256,
        KeyAlg::RS256 => Algorithm::RS256,
        KeyAlg::ES256 => Algorithm::ES256,
    }
}

/// Builds the decoding key for one configured key (reads PEM files relative to `base`).
pub fn decoding_key(k: &KeyDef, base: &Path) -> Result<DecodingKey, String> {
    match (k.alg, &k.secret, &k.public_key) {
        (KeyAlg::HS256, Some(s), _) => Ok(DecodingKey::from_secret(s.expose().as_bytes())),
        (KeyAlg::RS256 | KeyAlg::ES256, _, Some(p)) => {
            let path = base.join(p);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read public key {}: {e}", path.display()))?;
            let key = if k.alg == KeyAlg::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            key.map_err(|e| format!("{} is not a valid PEM public key: {e}", path.display()))
        }
        _ => Err("no key material".into()),
    }
}

impl Verifier {
    pub fn new(cfg: &AuthConfig, base: &Path) -> Result<Verifier, String> {
        let mut keys = HashMap::new();
        for k in &cfg.keys {
            let key = decoding_key(k, base).map_err(|e| format!("key `{}`: {e}", k.kid))?;
            let mut v = Validation::new(alg(k.alg));
            v.set_issuer(&[&cfg.issuer]);
            v.set_audience(&[&cfg.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = cfg.leeway.0.as_secs();
            v.validate_nbf = true;
            keys.insert(k.kid.clone(), (key, v, k.organisations.clone()));
        }
        Ok(Verifier {
            keys,
            verified: std::sync::Mutex::new(HashMap::new()),
            leeway: i64::try_from(cfg.leeway.0.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// Verifies a token and returns who is calling.
    pub fn verify(&self, token: &str) -> Result<Actor, AuthError> {
        use sha2::Digest;
        let id: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        // Same rule as the full check: expired once `exp` lies more than the leeway behind.
        let live = |v: &Verified| now <= v.exp.saturating_add(self.leeway);
        {
            let mut seen = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            match seen.get(&id) {
                Some(v) if live(v) => return Ok(v.actor.clone()),
                Some(_) => {
                    seen.remove(&id);
                }
                None => {}
            }
        }
        let (actor, exp) = self.verify_signature(token)?;
        let v = Verified { actor, exp };
        if live(&v) {
            let mut seen = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= VERIFIED_CAP {
                seen.retain(|_, v| live(v));
                if seen.len() >= VERIFIED_CAP {
                    seen.clear();
                }
            }
            seen.insert(id, v.clone());
        }
        Ok(v.actor)
    }

    /// The full check: signature, algorithm, `exp`/`nbf`/`iss`/`aud`, actor claims. Returns
    /// the actor and the token's `exp`.
    fn verify_signature(&self, token: &str) -> Result<(Actor, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let reason = match e.kind() {
                K::InvalidToken | K::Base64(_) | K::Utf8(_) => Refusal::Malformed,
                K::Json(j) if j.classify() != serde_json::error::Category::Data => {
                    Refusal::Malformed
                }
                // JSON, but not a header we take (`alg: none`, a `kid` that is no string).
                _ => Refusal::Header,
            };
            AuthError::invalid(reason, e.to_string())
        })?;
        if has_crit(token) {
            return Err(AuthError::invalid(
                Refusal::Critical,
                format!("header `crit`: {:?}", header.crit),
            ));
        }
        let (key, validation, vouches_for) = match &header.kid {
            Some(kid) => self.keys.get(kid).ok_or(AuthError::UnknownKey)?,
            None if self.keys.len() == 1 => {
                self.keys.values().next().ok_or(AuthError::UnknownKey)?
            }
            None => return Err(AuthError::UnknownKey),
        };
        let data =
            jsonwebtoken::decode::<TokenClaims>(token, key, validation).map_err(|e| refused(&e))?;
        let c = data.claims;
        let missing = |claim: &'static str| {
            AuthError::invalid(Refusal::MissingClaim(claim), format!("no `{claim}` claim"))
        };
        // Both required by the validation; asked again so that no `unwrap` is needed.
        let exp = c.exp.ok_or_else(|| missing("exp"))?;
        let sub = c.sub.ok_or_else(|| missing("sub"))?;
        let actor = match c.actor.as_deref() {
            Some("citizen") => {
                let b = c.bsn.ok_or_else(|| missing("bsn"))?;
                let bsn = Bsn::parse(&b)
                    .map_err(|e| AuthError::invalid(Refusal::Bsn, format!("bsn claim: {e}")))?;
                Actor::Citizen { sub, bsn }
            }
            Some("employee") => Actor::Employee {
                sub,
                organisation: c.org.ok_or_else(|| missing("org"))?,
                roles: c.roles,
            },
            Some(other) => {
                return Err(AuthError::invalid(
                    Refusal::Actor,
                    format!("unknown actor `{other}`"),
                ));
            }
            None => return Err(missing("actor")),
        };
        // An organisation's identity provider speaks for its own employees only.
        if !vouches_for.is_empty() {
            let (ok, detail) = match &actor {
                Actor::Employee { organisation, .. } => (
                    vouches_for.contains(organisation),
                    format!("employee of `{organisation}`"),
                ),
                Actor::Citizen { .. } => (false, "a citizen token".to_string()),
            };
            if !ok {
                return Err(AuthError::invalid(
                    Refusal::Vouch,
                    format!("{detail}, signed by a key for {}", vouches_for.join(", ")),
                ));
            }
        }
        Ok((actor, exp))
    }
}

/// Mints an HS256 token (demo and the `token` command).
pub fn mint_hs256(
    cfg: &AuthConfig,
    kid: &str,
    secret: &str,
    claims: &Claims,
) -> Result<String, String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let _ = cfg;
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// Claims for a demo or test token valid for `ttl_secs`.
pub fn claims_for(cfg: &AuthConfig, actor: &Actor, ttl_secs: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    let mut c = Claims {
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone(),
        sub: actor.subject().to_string(),
        exp: now + ttl_secs,
        nbf: Some(now - 1),
        iat: now,
        actor: String::new(),
        bsn: None,
        org: None,
        roles: Vec::new(),
    };
    match actor {
        Actor::Citizen { bsn, .. } => {
            c.actor = "citizen".into();
            c.bsn = Some(bsn.as_str().to_string());
        }
        Actor::Employee {
            organisation,
            roles,
            ..
        } => {
            c.actor = "employee".into();
            c.org = Some(organisation.clone());
            c.roles = roles.clone();
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dur, Secret};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn cfg() -> AuthConfig {
        AuthConfig {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway: Dur(std::time::Duration::from_secs(5)),
            keys: vec![KeyDef {
                kid: "k1".into(),
                alg: KeyAlg::HS256,
                secret: Some(Secret::new(SECRET)),
                public_key: None,
                organisations: Vec::new(),
            }],
        }
    }

    fn citizen() -> Actor {
        Actor::Citizen {
            sub: "c1".into(),
            bsn: Bsn::parse("999993653").unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let t = mint_hs256(&c, "k1", SECRET, &claims_for(&c, &citizen(), 60)).unwrap();
        assert_eq!(v.verify(&t).unwrap(), citizen());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_refused_one_is_not_remembered() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let t = mint_hs256(&c, "k1", SECRET, &claims_for(&c, &citizen(), 60)).unwrap();
        assert_eq!(v.verify(&t).unwrap(), citizen());
        assert_eq!(v.verify(&t).unwrap(), citizen());
        assert_eq!(v.verified.lock().unwrap().len(), 1);
        // A token remembered while valid is not served from memory once exp + leeway passed.
        let expired = mint_hs256(&c, "k1", SECRET, &claims_for(&c, &citizen(), -60)).unwrap();
        let id: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(expired.as_bytes()).into();
        let exp = chrono::Utc::now().timestamp() - 60;
        v.verified.lock().unwrap().insert(
            id,
            Verified {
                actor: citizen(),
                exp,
            },
        );
        assert!(v.verify(&expired).is_err());
        // A bad signature is refused every time and never remembered.
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(v.verify(&forged).is_err());
        assert!(v.verify(&forged).is_err());
        assert_eq!(v.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn refusals() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        // expired
        let t = mint_hs256(&c, "k1", SECRET, &claims_for(&c, &citizen(), -60)).unwrap();
        assert!(v.verify(&t).is_err());
        // wrong secret
        let t = mint_hs256(
            &c,
            "k1",
            "another-secret-another-secret-xx",
            &claims_for(&c, &citizen(), 60),
        )
        .unwrap();
        assert!(v.verify(&t).is_err());
        // wrong audience
        let mut cl = claims_for(&c, &citizen(), 60);
        cl.aud = "other".into();
        assert!(
            v.verify(&mint_hs256(&c, "k1", SECRET, &cl).unwrap())
                .is_err()
        );
        // an audience list: taken when it holds this gateway's audience, refused otherwise
        let mut listed = serde_json::to_value(claims_for(&c, &citizen(), 60)).unwrap();
        listed["aud"] = serde_json::json!(["portaal", "aud"]);
        assert_eq!(
            v.verify(&sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &listed)),
            Ok(citizen())
        );
        listed["aud"] = serde_json::json!(["portaal", "other"]);
        assert_eq!(
            reason(v.verify(&sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &listed))),
            Refusal::Audience
        );
        listed["aud"] = serde_json::json!(7);
        assert!(
            v.verify(&sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &listed))
                .is_err()
        );
        // unknown kid
        let t = mint_hs256(&c, "k2", SECRET, &claims_for(&c, &citizen(), 60)).unwrap();
        assert_eq!(v.verify(&t), Err(AuthError::UnknownKey));
        // alg none
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none","kid":"k1"}"#),
            e.encode(serde_json::to_vec(&claims_for(&c, &citizen(), 60)).unwrap())
        );
        assert!(v.verify(&none).is_err());
        assert!(v.verify("garbage").is_err());
    }

    /// A token with this header and these claims, signed with `SECRET` (HS256), whatever the
    /// library would have written.
    fn sign_raw(header: &str, claims: &serde_json::Value) -> String {
        use base64::Engine;
        use hmac::Mac;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let msg = format!(
            "{}.{}",
            e.encode(header),
            e.encode(serde_json::to_vec(claims).unwrap())
        );
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(msg.as_bytes());
        format!("{msg}.{}", e.encode(m.finalize().into_bytes()))
    }

    fn reason(r: Result<Actor, AuthError>) -> Refusal {
        match r {
            Err(AuthError::Invalid { reason, .. }) => reason,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn a_header_with_crit_is_refused_however_it_is_written() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let claims = serde_json::to_value(claims_for(&c, &citizen(), 60)).unwrap();
        // The raw signer makes tokens the verifier takes, so the refusals below are `crit`'s.
        assert_eq!(
            v.verify(&sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &claims))
                .unwrap(),
            citizen()
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        header.crit = Some(vec!["exp".into()]);
        let listed = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(reason(v.verify(&listed)), Refusal::Critical);
        for h in [
            r#"{"alg":"HS256","kid":"k1","crit":["x-unknown"],"x-unknown":1}"#,
            r#"{"alg":"HS256","kid":"k1","crit":[]}"#,
            r#"{"alg":"HS256","kid":"k1","crit":null}"#,
        ] {
            assert_eq!(
                reason(v.verify(&sign_raw(h, &claims))),
                Refusal::Critical,
                "{h}"
            );
        }
        assert!(
            v.verified.lock().unwrap().len() == 1,
            "refusals are not remembered"
        );
    }

    #[test]
    fn a_refusal_tells_a_fixed_reason_and_leaves_the_parser_to_the_log() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let header = r#"{"alg":"HS256","kid":"k1"}"#;
        let full = serde_json::to_value(claims_for(&c, &citizen(), 60)).unwrap();
        let without = |claim: &str| {
            let mut cl = full.clone();
            cl.as_object_mut().unwrap().remove(claim);
            sign_raw(header, &cl)
        };
        let e = v.verify(&without("exp")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the token is not valid: the token has no `exp` claim"
        );
        assert!(!e.detail().is_empty());
        assert_eq!(
            reason(v.verify(&without("sub"))),
            Refusal::MissingClaim("sub")
        );
        assert_eq!(
            reason(v.verify(&without("actor"))),
            Refusal::MissingClaim("actor")
        );
        assert_eq!(
            reason(v.verify(&without("bsn"))),
            Refusal::MissingClaim("bsn")
        );
        let mut wrong = full.clone();
        wrong["exp"] = serde_json::json!("soon");
        let e = v.verify(&sign_raw(header, &wrong)).unwrap_err();
        assert_eq!(reason(Err(e.clone())), Refusal::ClaimType);
        // The library's words (with a position) are the log's, never the client's.
        assert!(e.detail().contains("line"), "{}", e.detail());
        assert!(!e.to_string().contains("line"), "{e}");
        let mut actor = full.clone();
        actor["actor"] = serde_json::json!("admin");
        assert_eq!(reason(v.verify(&sign_raw(header, &actor))), Refusal::Actor);
        assert_eq!(reason(v.verify("garbage")), Refusal::Malformed);
        assert_eq!(
            reason(v.verify(&sign_raw(r#"{"alg":"none","kid":"k1"}"#, &full))),
            Refusal::Header
        );
        let expired = mint_hs256(&c, "k1", SECRET, &claims_for(&c, &citizen(), -60)).unwrap();
        assert_eq!(reason(v.verify(&expired)), Refusal::Expired);
    }

    #[test]
    fn a_key_bound_to_organisations_vouches_for_their_employees_only() {
        let mut c = cfg();
        c.keys[0].organisations = vec!["uwv".into()];
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let employee = |org: &str| Actor::Employee {
            sub: "e1".into(),
            organisation: org.into(),
            roles: vec!["uwv-werkcoach".into()],
        };
        let signed = |a: &Actor| mint_hs256(&c, "k1", SECRET, &claims_for(&c, a, 60)).unwrap();
        assert_eq!(v.verify(&signed(&employee("uwv"))), Ok(employee("uwv")));
        assert_eq!(reason(v.verify(&signed(&employee("svb")))), Refusal::Vouch);
        assert_eq!(reason(v.verify(&signed(&citizen()))), Refusal::Vouch);
        // Unbound, the same key signs anyone.
        let open = Verifier::new(&cfg(), Path::new(".")).unwrap();
        assert!(open.verify(&signed(&employee("svb"))).is_ok());
        assert!(open.verify(&signed(&citizen())).is_ok());
    }

    #[test]
    fn hs_rs_confusion_is_refused() {
        // The verifier expects ES256 for kid `idp`; an attacker signs HS256 with the public key
        // PEM as the HMAC secret.
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let c = AuthConfig {
            keys: vec![KeyDef {
                kid: "idp".into(),
                alg: KeyAlg::ES256,
                secret: None,
                public_key: Some("keys/idp-es256.pub.pem".into()),
                organisations: Vec::new(),
            }],
            ..cfg()
        };
        let v = Verifier::new(&c, &base).unwrap();
        let pem = std::fs::read_to_string(base.join("keys/idp-es256.pub.pem")).unwrap();
        let forged = mint_hs256(&c, "idp", &pem, &claims_for(&c, &citizen(), 60)).unwrap();
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid { .. })));
    }

    #[test]
    fn nbf_and_clock_skew() {
        let c = cfg();
        let v = Verifier::new(&c, Path::new(".")).unwrap();
        let mut cl = claims_for(&c, &citizen(), 600);
        cl.nbf = Some(chrono::Utc::now().timestamp() + 120);
        assert!(
            v.verify(&mint_hs256(&c, "k1", SECRET, &cl).unwrap())
                .is_err(),
            "not yet valid"
        );
        cl.nbf = Some(chrono::Utc::now().timestamp() + 3);
        assert!(
            v.verify(&mint_hs256(&c, "k1", SECRET, &cl).unwrap())
                .is_ok(),
            "within the 5 s leeway"
        );
        let mut cl = claims_for(&c, &citizen(), -3);
        cl.nbf = None;
        assert!(
            v.verify(&mint_hs256(&c, "k1", SECRET, &cl).unwrap())
                .is_ok(),
            "expired within the leeway"
        );
        let mut cl = claims_for(&c, &citizen(), 60);
        cl.iss = "someone-else".into();
        assert!(
            v.verify(&mint_hs256(&c, "k1", SECRET, &cl).unwrap())
                .is_err(),
            "wrong issuer"
        );
    }
}
