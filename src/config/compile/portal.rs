//! The `portal:` block: the demo sign-in only with an HS256 key to mint tokens with, and demo
//! accounts that are each a well-formed citizen or employee.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::load::ConfigError;
use crate::config::yaml::{Node, Step};
use crate::model::{GatewayConfig, KeyAlg};

/// The portal block: demo sign-in only with an HS256 key to mint with and well-formed accounts.
pub(super) fn validate_portal(
    file: &Path,
    tree: &Node,
    gw: &GatewayConfig,
    errors: &mut Vec<ConfigError>,
) {
    let p = &gw.portal;
    let at = |path: &[Step]| tree.pos_at(path);
    let key = |k: &str| Step::Key(k.to_string());
    if p.demo_sign_in && !p.enabled {
        errors.push(
            ConfigError::new(
                file,
                at(&[key("portal"), key("demo_sign_in")]),
                "`portal.demo_sign_in` needs `portal.enabled: true`",
            )
            .hint("the sign-in page is one of the portal pages"),
        );
    }
    if p.demo_sign_in
        && !gw
            .auth
            .keys
            .iter()
            .any(|k| k.alg == KeyAlg::HS256 && k.secret.is_some())
    {
        errors.push(
            ConfigError::new(
                file,
                at(&[key("portal"), key("demo_sign_in")]),
                "`portal.demo_sign_in` mints tokens and needs an HS256 key under `auth.keys`",
            )
            .hint("add `{kid: demo, alg: HS256, secret: ${DEMO_SECRET}}`, or turn the demo sign-in off"),
        );
    }
    if p.demo_sign_in && p.demo_accounts.is_empty() {
        errors.push(ConfigError::new(
            file,
            at(&[key("portal"), key("demo_sign_in")]),
            "`portal.demo_sign_in` is on but `portal.demo_accounts` is empty",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, a) in p.demo_accounts.iter().enumerate() {
        let pos = at(&[key("portal"), key("demo_accounts"), Step::Index(i)]);
        let mut problem = |msg: String| errors.push(ConfigError::new(file, pos, msg));
        if a.id.is_empty() || !seen.insert(a.id.as_str()) {
            problem(format!(
                "demo account `{}`: needs an `id`, unique in the list",
                a.id
            ));
        }
        match (&a.bsn, &a.organisation) {
            (Some(bsn), None) => {
                if let Err(e) = crate::bsn::Bsn::parse(bsn) {
                    problem(format!("demo account `{}`: {e}", a.id));
                }
                if !a.roles.is_empty() {
                    problem(format!("demo account `{}`: a citizen has no `roles`", a.id));
                }
            }
            (None, Some(org)) => {
                if !gw.organisations.contains_key(org) {
                    problem(format!(
                        "demo account `{}`: no organisation `{org}` under `organisations`",
                        a.id
                    ));
                }
                if a.roles.is_empty() {
                    problem(format!(
                        "demo account `{}`: an employee needs `roles`",
                        a.id
                    ));
                }
            }
            _ => problem(format!(
                "demo account `{}`: give either `bsn` (a citizen) or `organisation` and `roles` (an employee)",
                a.id
            )),
        }
    }
}
